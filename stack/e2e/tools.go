//go:build tools

// This file pins agnhost, the one binary of the e2e tests' agnhost image,
// which `stack build-e2e` builds from this module; it is never compiled
// itself (build tag "tools"), it only keeps agnhost's dependencies
// (github.com/ishidawataru/sctp, ...) in go.mod and go.sum.
package e2e

import (
	_ "k8s.io/kubernetes/test/images/agnhost"
)
