// CoreDNS for the cluster DNS of the kuryr-rs test stack, built from Go
// modules by `stack build-coredns`: the CoreDNS release pinned in go.mod with
// only the plugins a Kubernetes cluster DNS needs. Upstream's main imports
// core/plugin, every plugin of plugin.cfg (route53, azure, clouddns, etcd,
// ... with their cloud SDKs); this one imports just the plugins below and
// selects their directives, in plugin.cfg's order, before coremain.Run.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives: the execution order of the plugins above, as in CoreDNS's
// plugin.cfg (a request passes them top to bottom); "prometheus" is the
// directive of package metrics. The order in a Corefile does not matter.
// Plugins without a directive here cannot be used in a Corefile, even those
// the packages above import for their types and so register too (dnstap,
// debug, metadata, transfer: `coredns -plugins` lists them).
var directives = []string{
	"reload",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"hosts",
	"kubernetes",
	"loop",
	"forward",
}

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		panic(err)
	}
	coremain.Run()
}
