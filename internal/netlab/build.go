//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// buildDirPrefix starts the names of build directories: the owning pid follows the
	// first dash so leftovers of dead processes can be recognised.
	buildDirPrefix = "mptnetlab-"
	// buildTimeout bounds one `go build`.
	buildTimeout = 10 * time.Minute
)

// builds is the per-process build cache used by BuildBinaries.
var builds builder

// builder builds main packages once each into one temporary directory.
type builder struct {
	mu    sync.Mutex
	dir   string            // created on first use
	paths map[string]string // module root + "\x00" + package -> binary
}

// BuildBinaries builds the named main packages of the module (import paths
// or paths relative to the module root, such as "./cmd/mpserver") with
// `go build`, once per test binary, and returns the binaries' paths keyed
// by the package's base name ("mpserver"). The module root is found by
// walking up from the working directory to go.mod. The binaries live in a
// temporary directory that RemoveBuilds deletes; directories left by dead
// test processes are removed on first use.
func BuildBinaries(t testing.TB, pkgs ...string) map[string]string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("netlab: build: %v", err)
	}
	root, err := moduleRoot(wd)
	if err != nil {
		t.Fatalf("netlab: build: %v", err)
	}
	paths, err := builds.build(root, pkgs)
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	return paths
}

// RemoveBuilds deletes the binaries built by BuildBinaries. Call it after
// the tests have run, for example from TestMain (Main does so).
func RemoveBuilds() {
	builds.remove()
}

// moduleRoot walks up from dir to the nearest directory holding go.mod.
func moduleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %s or any parent directory", dir)
		}
		d = parent
	}
}

// build builds each package not built yet from root and returns the
// binaries of all of pkgs by base name.
func (b *builder) build(root string, pkgs []string) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("build: the go command is not on PATH: %w", err)
	}
	if b.dir == "" {
		sweepBuildDirs(os.TempDir(), time.Now())
		dir, err := os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
		if err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		b.dir = dir
		b.paths = map[string]string{}
	}
	result := make(map[string]string, len(pkgs))
	byBase := make(map[string]string, len(pkgs))
	for _, pkg := range pkgs {
		base := pkgBase(root, pkg)
		if prev, ok := byBase[base]; ok {
			return nil, fmt.Errorf("build: packages %q and %q have the same base name %q", prev, pkg, base)
		}
		byBase[base] = pkg
		key := root + "\x00" + pkg
		if bin, ok := b.paths[key]; ok {
			result[base] = bin
			continue
		}
		sub := filepath.Join(b.dir, strconv.Itoa(len(b.paths)))
		if err := os.Mkdir(sub, 0o755); err != nil {
			return nil, fmt.Errorf("build %s: %w", pkg, err)
		}
		bin := filepath.Join(sub, base)
		if out, err := goBuild(goTool, root, bin, pkg); err != nil {
			return nil, fmt.Errorf("build %s in %s: %w\n%s", pkg, root, err, out)
		}
		b.paths[key] = bin
		result[base] = bin
	}
	return result, nil
}

// goBuild runs `go build -o bin pkg` in root with a bounded time.
func goBuild(goTool, root, bin, pkg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, pkg)
	cmd.Dir = root
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pkgBase returns the base name of a package path, or of the module root
// for ".".
func pkgBase(root, pkg string) string {
	p := strings.TrimRight(filepath.ToSlash(pkg), "/")
	if p == "" || p == "." {
		return filepath.Base(root)
	}
	return path.Base(p)
}

// remove deletes the build directory and forgets the cache.
func (b *builder) remove() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
	b.dir = ""
	b.paths = nil
}

// sweepBuildDirs removes build directories under tmp whose owning process
// no longer exists and that are at least a minute old.
func sweepBuildDirs(tmp string, now time.Time) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, buildDirPrefix) {
			continue
		}
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(name, buildDirPrefix), "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // alive, or not ours to judge
		}
		if info, err := e.Info(); err != nil || now.Sub(info.ModTime()) < time.Minute {
			continue
		}
		_ = os.RemoveAll(filepath.Join(tmp, name))
	}
}
