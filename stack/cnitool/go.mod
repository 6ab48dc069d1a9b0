// cnitool, the reference CNI runtime of containernetworking/cni (libcni), for
// the conformance checks of kuryr-cni. Built by `stack/stack build-cnitool`
// into $KURYR_STACK_HOME/cache/cnitool.
module kuryr-rs.invalid/stack/cnitool

go 1.24.0

require github.com/containernetworking/cni v1.3.1

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/cobra v1.9.1 // indirect
	github.com/spf13/pflag v1.0.6 // indirect
	go.opentelemetry.io/otel v1.29.0 // indirect
	go.opentelemetry.io/otel/trace v1.29.0 // indirect
)
