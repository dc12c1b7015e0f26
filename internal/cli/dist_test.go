package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits: the unit files under dist/ pass systemd-analyze verify
// with the binary where they expect it, and a unit pointing at a missing
// binary does not (so the check can fail).
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; install systemd to check dist/*.service")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mptunnel")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/mptunnel").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	verify := func(name, text string) (string, error) {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--man=no", f).CombinedOutput()
		return string(out), err
	}
	for _, role := range []string{"server", "client"} {
		b, err := os.ReadFile("../../dist/mptunnel-" + role + "@.service")
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		if !strings.Contains(unit, "Type=notify") || !strings.Contains(unit, "mptunnel "+role+" -c /etc/mptunnel/%i.toml") {
			t.Fatalf("%s unit does not run '%s -c' with readiness notification", role, role)
		}
		// Named after the instance, its status socket where 'mptunnel
		// status' run as root looks (control.SearchDirs: /run/mptunnel-*).
		if !strings.Contains(unit, "--name %i --control ${RUNTIME_DIRECTORY}/control.sock") || !strings.Contains(unit, "RuntimeDirectory=mptunnel-"+role+"-%i\n") {
			t.Fatalf("%s unit does not name the daemon after the instance with its status socket in /run/mptunnel-%s-%%i", role, role)
		}
		if out, err := verify("mptunnel-"+role+"@test.service", strings.ReplaceAll(unit, "/usr/local/bin/mptunnel", bin)); err != nil {
			t.Fatalf("systemd-analyze verify %s unit: %v\n%s", role, err, out)
		}
		if _, err := verify("broken-"+role+"@test.service", strings.ReplaceAll(unit, "/usr/local/bin/mptunnel", filepath.Join(dir, "missing"))); err == nil {
			t.Fatalf("systemd-analyze accepted a %s unit whose binary is missing", role)
		}
	}
}
