// Package testlock keeps the tests that measure loss or throughput under
// load from running beside each other. `go test ./...` runs packages in
// parallel, and a test whose bound depends on the machine keeping up (a
// flood that must cost a stream nothing, a lossy stream with a loss bound, a
// lab measuring TCP throughput) fails when another such test takes the CPU.
// Each takes the machine-wide lock Heavy holds for the test's duration.
package testlock

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Heavy holds the machine-wide lock for heavy tests until t ends, waiting
// for it when another test has it.
func Heavy(t testing.TB) {
	t.Helper()
	// One lock a user: another user's file could not be opened (0600).
	name := fmt.Sprintf("mptunnel-heavy-test-%d.lock", os.Getuid())
	f, err := os.OpenFile(filepath.Join(os.TempDir(), name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("heavy-test lock: %v", err)
	}
	if err := lock(f); err != nil {
		f.Close()
		t.Fatalf("heavy-test lock: %v", err)
	}
	t.Cleanup(func() {
		unlock(f)
		f.Close()
	})
}
