// Package e2e is the kuryr-rs test stack's build of the upstream Kubernetes
// end-to-end suite: upstream's suite setup and Ginkgo runner
// (k8s.io/kubernetes/test/e2e.RunE2ETests) with only the network tests
// linked in. `stack build-e2e` compiles it with `go test -c` into e2e.test;
// run it with the usual e2e.test flags (--kubeconfig, --provider=local,
// -ginkgo.focus=..., --list-tests, ...).
//
// Which tests are in the binary:
//   - test/e2e/network: Services, DNS, EndpointSlices, ... and, through its
//     own import of test/e2e/network/netpol, the NetworkPolicy tests
//   - test/e2e/common/network: "Networking Granular Checks: Pods"
//   - test/e2e/common/node and test/e2e/common/storage come along: the
//     upstream package test/e2e, which holds RunE2ETests and the suite setup,
//     imports test/e2e/common, which imports all three
package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/onsi/ginkgo/v2"

	"k8s.io/component-base/version"
	conformancetestdata "k8s.io/kubernetes/test/conformance/testdata"
	upstream "k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	testfixtures "k8s.io/kubernetes/test/fixtures"

	// the feature and label constants the tests use, defined and frozen
	_ "k8s.io/kubernetes/test/e2e/feature"

	// the tests (see the package comment)
	_ "k8s.io/kubernetes/test/e2e/common/network"
	_ "k8s.io/kubernetes/test/e2e/network"
	_ "k8s.io/kubernetes/test/e2e/network/netpol"

	// framework behaviour upstream's e2e.test switches on: dumps on failure,
	// metrics grabbing, node checks, object formatting in failure messages
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/utils/format"
)

// conformanceList is where upstream keeps the conformance test list, inside
// the embedded conformance test data
const conformanceList = "test/conformance/testdata/conformance.yaml"

func TestMain(m *testing.M) {
	showVersion := flag.Bool("version", false, "Print the Kubernetes version these tests were built from and exit.")
	listConformance := flag.Bool("list-conformance-tests", false,
		"Print upstream's list of conformance tests (all of them, also those not linked into this binary) and exit.")
	// the framework's flags: --kubeconfig, --provider, --list-tests, ...,
	// then the -ginkgo.* and -test.* flags already on the command line
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()

	if *showVersion {
		fmt.Println(version.Get())
		os.Exit(0)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "e2e.test: unexpected arguments %q (all options are flags)\n", flag.Args())
		os.Exit(1)
	}

	// manifests, fixtures and test data some tests read, embedded in the
	// binary, so that no Kubernetes checkout is needed (--repo-root adds one)
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(testfixtures.GetTestFixturesFS())
	testfiles.AddFileSource(conformancetestdata.GetConformanceTestdataFS())

	if *listConformance {
		data, err := testfiles.Read(conformanceList)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e.test: %v\n", err)
			os.Exit(1)
		}
		os.Stdout.Write(data)
		os.Exit(0)
	}

	// validates the flags; --list-tests and --list-labels print and exit here
	framework.AfterReadingAllFlags(&framework.TestContext)
	if root := framework.TestContext.RepoRoot; root != "" {
		testfiles.AddFileSource(testfiles.RootFileSource{Root: root})
	}
	os.Exit(m.Run())
}

// TestE2E runs the Ginkgo suite: upstream's runner, suite setup (waiting for
// the nodes and system pods, the cluster's IP family) and teardown.
func TestE2E(t *testing.T) {
	upstream.RunE2ETests(t)
}

// --spec-dump FILE: every spec's report as one JSON object per line
var _ = ginkgo.ReportAfterSuite("spec dump (--spec-dump)", func(report ginkgo.Report) {
	path := framework.TestContext.SpecSummaryOutput
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		ginkgo.Fail(fmt.Sprintf("--spec-dump: %v", err))
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, spec := range report.SpecReports {
		if err := enc.Encode(spec); err != nil {
			ginkgo.Fail(fmt.Sprintf("--spec-dump %s: %v", path, err))
		}
	}
})
