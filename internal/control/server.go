package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

// ConnTimeout bounds one status exchange, on the serving and the fetching
// side alike.
const ConnTimeout = 2 * time.Second

const (
	// maxConcurrent bounds the connections answered at once.
	maxConcurrent = 8
	// probeTimeout bounds the connection attempt that tells a live server
	// from a stale socket file.
	probeTimeout = 500 * time.Millisecond
	// dirMode and socketMode keep the status owner-only.
	dirMode    = 0o700
	socketMode = 0o600
)

var (
	// ErrNotRunning is wrapped by Fetch errors when nothing is serving
	// status at the path.
	ErrNotRunning = errors.New("no mptunnel daemon is serving status")
	// ErrAlreadyServing is wrapped by Listen and Serve errors when a live
	// process already serves status at the path.
	ErrAlreadyServing = errors.New("another process is already serving status")
)

// Server is a listening status socket. Create it with Listen, run it with
// Serve, and Close it if Serve is never called.
type Server struct {
	path    string
	ln      *net.UnixListener
	ident   os.FileInfo // the socket file this server created
	serving atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// Serve listens on the Unix socket at path and answers each connection with
// the JSON of snapshot() followed by a newline until ctx ends. It is Listen
// followed by (*Server).Serve; see those for the details.
func Serve(ctx context.Context, path string, snapshot func() status.Status) error {
	s, err := Listen(path)
	if err != nil {
		return err
	}
	return s.Serve(ctx, snapshot)
}

// Listen creates the status socket at path, so that problems with the path
// surface before the daemon starts its work.
//
// A missing parent directory is created with mode 0700; an existing one must
// be a real directory (not a symbolic link), belong to this user or to root
// and not be writable by group or others. A socket file left by a dead
// process is replaced, but if a live process answers on it Listen fails with
// an error wrapping ErrAlreadyServing. Anything at path that is not a socket
// is left alone and Listen fails. The socket is created with mode 0600: it is
// bound in a private directory, restricted and then renamed into place, so it
// is never reachable with wider permissions.
func Listen(path string) (*Server, error) {
	if path == "" {
		return nil, errors.New("status socket path is empty")
	}
	if err := checkPathLen(path); err != nil {
		return nil, err
	}
	if err := prepareDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	stale, err := checkExisting(path)
	if err != nil {
		return nil, err
	}
	ln, err := bind(path, stale)
	if err != nil {
		return nil, err
	}
	ident, err := os.Lstat(path)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("checking new status socket %s: %w", path, err)
	}
	return &Server{path: path, ln: ln, ident: ident}, nil
}

// Path returns the path of the socket file.
func (s *Server) Path() string { return s.path }

// Serve answers each connection with the JSON of snapshot() followed by a
// newline, then closes it; each exchange has ConnTimeout to complete. Calls
// of snapshot never overlap. Serve runs until ctx ends or Close is called;
// then it closes the listener, removes the socket file (if it is still the
// one Listen created) and returns once every goroutine it started has
// stopped. A stop by ctx or Close returns nil. Serve may be called once.
func (s *Server) Serve(ctx context.Context, snapshot func() status.Status) error {
	if snapshot == nil {
		_ = s.Close()
		return errors.New("serving status: snapshot function is nil")
	}
	if !s.serving.CompareAndSwap(false, true) {
		return fmt.Errorf("serving status at %s: Serve called twice", s.path)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.ln.Close() })
	defer stop()

	var mu sync.Mutex
	take := func() ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		return status.Marshal(snapshot())
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrent)
	var delay time.Duration
loop:
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				break
			}
			// Transient failure such as running out of file
			// descriptors: back off rather than spin or give up.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				break loop
			case <-t.C:
			}
			continue
		}
		delay = 0
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			_ = conn.Close()
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			answer(ctx, conn, take)
		}()
	}
	wg.Wait()
	return s.Close()
}

// answer writes one snapshot to conn and closes it.
func answer(ctx context.Context, conn *net.UnixConn, take func() ([]byte, error)) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if err := conn.SetDeadline(time.Now().Add(ConnTimeout)); err != nil {
		return
	}
	b, err := take()
	if err != nil {
		return
	}
	// A reader that went away is its own problem; nothing to report.
	_, _ = conn.Write(b)
}

// Close stops the listener and removes the socket file if it is still the
// one Listen created. It is safe to call more than once and while Serve runs,
// which then returns.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("closing status socket %s: %w", s.path, err))
		}
		if err := s.removeSocket(); err != nil {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// removeSocket removes the socket file unless something else has taken its
// place since Listen.
func (s *Server) removeSocket() error {
	fi, err := os.Lstat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing status socket %s: %w", s.path, err)
	}
	if !os.SameFile(fi, s.ident) {
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing status socket %s: %w", s.path, err)
	}
	return nil
}

// maxSocketPath is the longest path a Unix socket address can hold.
func maxSocketPath() int {
	if runtime.GOOS == "linux" {
		return 107 // sizeof(sun_path) - 1
	}
	return 103
}

func checkPathLen(path string) error {
	if n, limit := len(path), maxSocketPath(); n > limit {
		return fmt.Errorf("status socket path %s is too long (%d bytes; Unix sockets allow at most %d): choose a shorter --control path", path, n, limit)
	}
	return nil
}

// prepareDir makes sure dir, the directory that holds the socket, is one that
// no other unprivileged user can change, so that none can swap the socket out
// from under the daemon or put their own in its place. A missing dir is
// created with mode 0700 (its missing parents too) and checked again once
// made. An existing one is looked at without following a symbolic link: a
// link is refused, as is anything not a directory, a directory that belongs
// to another user than this one or root, and one that group or others may
// write to.
func prepareDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return createDir(dir)
	}
	if err != nil {
		return fmt.Errorf("checking status socket directory %s: %w", dir, err)
	}
	return checkDir(dir, fi)
}

// createDir makes dir with mode 0700 and checks that what is there afterwards
// is that directory: a real directory of this user's, owner-only.
func createDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), dirMode); err != nil {
		return fmt.Errorf("creating the parent of status socket directory %s: %w", dir, err)
	}
	err := os.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrExist) {
		// Something appeared there since the Lstat: judge it like any
		// existing directory.
		fi, err := os.Lstat(dir)
		if err != nil {
			return fmt.Errorf("checking status socket directory %s: %w", dir, err)
		}
		return checkDir(dir, fi)
	}
	if err != nil {
		return fmt.Errorf("creating status socket directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("checking new status socket directory %s: %w", dir, err)
	}
	if err := checkCreated(dir, fi); err != nil {
		return err
	}
	if owner, ok := ownerOf(fi); ok && fi.Mode().Perm() != dirMode {
		// The umask took bits away; put them back, then look again.
		if err := os.Chmod(dir, dirMode); err != nil {
			return fmt.Errorf("restricting new status socket directory %s to mode %#o: %w", dir, dirMode, err)
		}
		if fi, err = os.Lstat(dir); err != nil {
			return fmt.Errorf("checking new status socket directory %s: %w", dir, err)
		}
		if err := checkCreated(dir, fi); err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm != dirMode {
			return fmt.Errorf("new status socket directory %s has mode %#o, not %#o (owner uid %d); refusing to serve status there", dir, perm, dirMode, owner)
		}
	}
	return nil
}

// checkCreated checks that what Lstat found at dir right after this process
// made it is a real directory owned by this user.
func checkCreated(dir string, fi os.FileInfo) error {
	if !fi.Mode().IsDir() {
		return fmt.Errorf("status socket directory %s was replaced by %v right after it was created; refusing to serve status there", dir, fi.Mode().Type())
	}
	if owner, ok := ownerOf(fi); ok && owner != os.Getuid() {
		return fmt.Errorf("status socket directory %s was replaced by one of uid %d right after it was created; refusing to serve status there", dir, owner)
	}
	return nil
}

// checkDir checks an existing status socket directory, described by fi from
// Lstat. See prepareDir.
func checkDir(dir string, fi os.FileInfo) error {
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(dir)
		return fmt.Errorf("status socket directory %s is a symbolic link (to %q); refusing to follow it, since whoever owns the link decides where the socket goes: remove the link, or give --control a path in a real directory", dir, target)
	}
	if !fi.IsDir() {
		return fmt.Errorf("status socket directory %s is not a directory: choose another --control path", dir)
	}
	owner, ok := ownerOf(fi)
	if !ok {
		return nil // no Unix owners or modes to check on this platform
	}
	if uid := os.Getuid(); owner != uid && owner != 0 {
		return fmt.Errorf("status socket directory %s belongs to uid %d, not to this user (uid %d); refusing to serve status there: remove it or choose another --control path", dir, owner, uid)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("status socket directory %s can be written by group or others (mode %#o), who could replace the socket; refusing to serve status there: make it owner-only (chmod 700), or choose another --control path", dir, perm)
	}
	return nil
}

// checkExisting looks at what is at path. It reports stale when a socket file
// is there that no process answers on, and fails if a live process answers or
// the file is not a socket.
func checkExisting(path string) (stale bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking status socket %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return false, fmt.Errorf("%s exists and is not a socket; refusing to replace it: remove it or choose another --control path", path)
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		_ = c.Close()
		return false, fmt.Errorf("%w at %s: is another mptunnel daemon with the same name running? Stop it, or give this one another --name or --control path", ErrAlreadyServing, path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	return false, fmt.Errorf("checking whether a process is serving status at %s: %w", path, err)
}

// bind creates the listening socket at path with mode 0600, replacing the
// stale socket file there if stale is set.
func bind(path string, stale bool) (*net.UnixListener, error) {
	// Bind in a fresh private directory, restrict, then rename into
	// place: the socket never exists at path with looser permissions, and
	// the rename replaces a stale file atomically.
	if tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".mpt"); err == nil {
		tmp := filepath.Join(tmpDir, "s")
		if len(tmp) <= maxSocketPath() {
			ln, err := listenAt(tmp)
			if err == nil {
				err = os.Rename(tmp, path)
				if err == nil {
					_ = os.Remove(tmpDir)
					return ln, nil
				}
				_ = ln.Close()
				_ = os.Remove(tmp)
			}
			_ = os.Remove(tmpDir)
			return nil, fmt.Errorf("creating status socket %s: %w", path, err)
		}
		_ = os.Remove(tmpDir)
	}
	// The private directory did not work out (its path would be too long
	// for a socket address): bind at path directly and restrict at once.
	if stale {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing stale status socket %s: %w", path, err)
		}
	}
	ln, err := listenAt(path)
	if err != nil {
		return nil, fmt.Errorf("creating status socket %s: %w", path, err)
	}
	return ln, nil
}

// listenAt binds a listening socket at p and makes it owner-only. The socket
// file is left in place when the listener closes; Server removes it.
func listenAt(p string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(p, socketMode); err != nil {
		_ = ln.Close()
		_ = os.Remove(p)
		return nil, err
	}
	return ln, nil
}
