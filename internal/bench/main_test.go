package bench_test

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mptunnel/mptunnel/internal/bench"
	"github.com/mptunnel/mptunnel/internal/cli"
)

// childEnv, when set, makes the test binary run the mptunnel command line
// instead of the tests: the memory scenario runs it as its server child.
const childEnv = "MPTUNNEL_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(cli.Main("mptunnel", os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

func TestMemoryScenario(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot find the test binary to run as the server: %v", err)
	}
	t.Setenv(childEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, bench.Config{Short: true, Measure: bench.MeasureMemory, Sessions: 4, Flows: 3, Paths: 2, ServerExe: exe})
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Memory
	if m == nil {
		t.Fatal("no memory figures")
	}
	if m.SessionsUp != 4 || m.Sent == 0 || m.Echoed == 0 || m.RSSMiB <= 0 || m.HWMMiB < m.RSSMiB {
		t.Errorf("%+v", *m)
	}
	if len(rep.Throughput) != 0 || len(rep.Latency) != 0 {
		t.Error("measure memory measured throughput or latency")
	}
}
