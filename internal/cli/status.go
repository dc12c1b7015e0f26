package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mptunnel/mptunnel/internal/control"
	"github.com/mptunnel/mptunnel/internal/status"
)

// runStatus prints the status of one daemon (--control PATH, or NAME) or of
// every daemon found in the user's status directories (docs/STATUS.md).
func runStatus(args []string, env Env) error {
	fs := newFlagSet("mptunnel status", env, "[--json | --watch] [--control PATH | NAME]")
	asJSON := fs.Bool("json", false, "print JSON (the stable format of docs/STATUS.md): one object with --control or NAME, else an array of every daemon found")
	path := fs.String("control", "", "status socket to read (default: every daemon's found in the status directories)")
	watch := fs.Bool("watch", false, "refresh every second, with sparklines of each path's RTT and loss, until interrupted")
	count := fs.Int("count", 0, "with --watch: stop after this many refreshes (0: never)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *watch && *asJSON {
		return usagef("--watch and --json do not go together")
	}
	switch {
	case fs.NArg() > 1:
		fs.Usage()
		return usagef("status takes no arguments but an optional daemon NAME")
	case fs.NArg() == 1 && *path != "":
		return usagef("give --control PATH or a daemon NAME, not both")
	}
	uid := os.Getuid()
	dirs := control.SearchDirs(env.Getenv, uid)
	if fs.NArg() == 1 {
		p, err := findNamed(env.Context, dirs, uid, fs.Arg(0))
		if err != nil {
			return err
		}
		*path = p
	}
	if *path != "" {
		return statusOne(env, *path, *asJSON, *watch, *count)
	}
	ds, err := findAll(env.Context, dirs, uid)
	if len(ds) == 0 && err == nil {
		err = noDaemons(dirs)
	}
	if len(ds) == 0 {
		return err
	}
	if *asJSON {
		return errors.Join(status.WriteJSONList(env.Stdout, ds), err)
	}
	if *watch {
		return watchStatus(env, ds, err, *count, func() ([]status.Daemon, error, error) {
			ds, err := findAll(env.Context, dirs, uid)
			if len(ds) == 0 && err == nil {
				err = noDaemons(dirs)
			}
			return ds, err, nil
		})
	}
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte('\n')
		}
		if werr := status.WriteTable(&b, d.Status, time.Now()); werr != nil {
			return werr
		}
	}
	_, werr := io.WriteString(env.Stdout, b.String())
	return errors.Join(werr, err)
}

// statusOne prints the status served at path, the form of --control: one
// JSON object, one table, or the watch view of that daemon.
func statusOne(env Env, path string, asJSON, watch bool, count int) error {
	st, err := control.Fetch(env.Context, path)
	if err != nil {
		return err
	}
	if asJSON {
		return status.WriteJSON(env.Stdout, st)
	}
	if !watch {
		return status.WriteTable(env.Stdout, st, time.Now())
	}
	one := func(st status.Status) []status.Daemon {
		return []status.Daemon{{Name: st.Name, Socket: path, Status: st}}
	}
	return watchStatus(env, one(st), nil, count, func() ([]status.Daemon, error, error) {
		st, err := control.Fetch(env.Context, path)
		if err != nil {
			return nil, nil, err
		}
		return one(st), nil, nil
	})
}

// findAll fetches the status of every daemon whose socket is in dirs (at
// once, see control.FetchAll). Stale sockets, which no process answers on,
// are skipped and left in place (a daemon starting under that name replaces
// its own); the other failures are returned together, beside the daemons
// that answered.
func findAll(ctx context.Context, dirs []string, uid int) ([]status.Daemon, error) {
	var ds []status.Daemon
	var errs []error
	for _, r := range control.FetchAll(ctx, control.Sockets(dirs, uid)) {
		switch {
		case r.Err == nil:
			name := r.Status.Name
			if name == "" { // a daemon from before names
				name = strings.TrimSuffix(filepath.Base(r.Path), ".sock")
			}
			ds = append(ds, status.Daemon{Name: name, Socket: r.Path, Status: r.Status})
		case errors.Is(r.Err, control.ErrNotRunning):
		default:
			errs = append(errs, r.Err)
		}
	}
	return ds, errors.Join(errs...)
}

// findNamed returns the socket of the daemon named name among those found in
// dirs.
func findNamed(ctx context.Context, dirs []string, uid int, name string) (string, error) {
	ds, err := findAll(ctx, dirs, uid)
	var paths []string
	for _, d := range ds {
		if d.Name == name {
			paths = append(paths, d.Socket)
		}
	}
	switch len(paths) {
	case 0:
		return "", errors.Join(fmt.Errorf("%w under the name %q in %s (mptunnel status lists the daemons it finds)", control.ErrNotRunning, name, strings.Join(dirs, ", ")), err)
	case 1:
		return paths[0], nil
	}
	return "", fmt.Errorf("%d daemons are named %q (%s): pick one with --control PATH", len(paths), name, strings.Join(paths, ", "))
}

// noDaemons is the error of a search that found no daemon in dirs.
func noDaemons(dirs []string) error {
	return fmt.Errorf("%w in %s (is one running, as this user? one given --control PATH is read with --control PATH)", control.ErrNotRunning, strings.Join(dirs, ", "))
}

// watchStatus redraws the status of the daemons ds every second, each with
// its sparklines: in place on a terminal, one snapshot after another
// otherwise. note, shown under them, is a problem that does not end the
// view (a daemon that did not answer). Each refresh calls next for the
// daemons, a note and an error that ends the view.
func watchStatus(env Env, ds []status.Daemon, note error, count int, next func() ([]status.Daemon, error, error)) error {
	tty := IsTerminal(env.Stdout)
	hist := make(map[string]*status.History)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for n := 1; ; n++ {
		var b strings.Builder
		if tty {
			b.WriteString("\x1b[H\x1b[2J") // home, clear
		} else if n > 1 {
			b.WriteString("\n")
		}
		seen := make(map[string]*status.History, len(ds))
		for i, d := range ds {
			h := hist[d.Socket]
			if h == nil {
				h = status.NewHistory(20)
			}
			seen[d.Socket] = h
			h.Add(d.Status)
			if i > 0 {
				b.WriteString("\n")
			}
			if err := status.WriteWatch(&b, d.Status, h, time.Now()); err != nil {
				return err
			}
		}
		hist = seen // forget the daemons that went away
		if note != nil {
			fmt.Fprintf(&b, "%v\n", note)
		}
		if _, err := io.WriteString(env.Stdout, b.String()); err != nil {
			return err
		}
		if count > 0 && n >= count {
			return nil
		}
		select {
		case <-env.Context.Done():
			return nil
		case <-tick.C:
		}
		var err error
		ds, note, err = next()
		if err != nil {
			if env.Context.Err() != nil {
				return nil
			}
			return err
		}
	}
}
