package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/mptunnel/mptunnel/internal/status"
)

// maxReply bounds the size of a status document a client accepts.
const maxReply = 16 << 20

// Fetch connects to the status socket at path and decodes the daemon's
// status. The exchange must complete within ConnTimeout (or ctx's deadline,
// if sooner). When nothing serves at path the error wraps ErrNotRunning and
// says what to check. Fields unknown to this version are ignored.
func Fetch(ctx context.Context, path string) (status.Status, error) {
	if path == "" {
		return status.Status{}, errors.New("status socket path is empty")
	}
	if err := checkPathLen(path); err != nil {
		return status.Status{}, err
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, ConnTimeout)
	defer cancel()

	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return status.Status{}, fetchError(parent, path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return status.Status{}, fmt.Errorf("reading status from %s: %w", path, err)
		}
	}
	// Cancellation interrupts a blocked read by moving the deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	b, err := io.ReadAll(io.LimitReader(c, maxReply+1))
	if err != nil {
		return status.Status{}, fetchError(parent, path, err)
	}
	if len(b) > maxReply {
		return status.Status{}, fmt.Errorf("status from %s is larger than %d bytes; refusing it", path, maxReply)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return status.Status{}, fmt.Errorf("the process at %s closed the connection without sending status (is it an mptunnel daemon?)", path)
	}
	var s status.Status
	if err := json.Unmarshal(b, &s); err != nil {
		return status.Status{}, fmt.Errorf("status from %s is not valid (is it an mptunnel daemon?): %w", path, err)
	}
	return s, nil
}

// fetchError turns a failure to connect to or read from path into an error
// that says what to do.
func fetchError(parent context.Context, path string, err error) error {
	switch {
	case parent.Err() != nil:
		return fmt.Errorf("fetching status from %s: %w", path, parent.Err())
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w at %s (is it running? is --control the same on both?): %w", ErrNotRunning, path, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("not allowed to connect to status socket %s: it is owner-only, so run this as the user the daemon runs as: %w", path, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("no status from %s within %v (is the daemon stuck?): %w", path, ConnTimeout, err)
	default:
		return fmt.Errorf("fetching status from %s: %w", path, err)
	}
}
