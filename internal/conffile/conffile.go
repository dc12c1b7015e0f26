// Package conffile reads mptunnel's TOML configuration files: one file per
// daemon, a client's or a server's, every option of the command line under
// the same name (docs/CONFIG.md). Unknown keys and bad values are errors that
// name the file, the line and the key. Values are checked here as far as
// they can be without the network; host names are not resolved.
package conffile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/mptunnel/mptunnel/internal/aead"
	"github.com/mptunnel/mptunnel/internal/allow"
	"github.com/mptunnel/mptunnel/internal/control"
	"github.com/mptunnel/mptunnel/internal/fec"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/sched"
	"github.com/mptunnel/mptunnel/internal/wire"
)

// MaxSize is the largest configuration file read.
const MaxSize = 1 << 20

// Duration is a TOML string such as "1.5s" or "250ms".
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"5s\" or \"250ms\": %w", err)
	}
	if v < 0 {
		return errors.New("a duration must not be negative")
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Common holds the options both daemons have. Zero values mean the
// defaults of the command line.
type Common struct {
	KeyFile     string   `toml:"key_file"`
	Cipher      string   `toml:"cipher"`
	MTU         int      `toml:"mtu"`
	Window      int      `toml:"window"`
	MaxFlows    int      `toml:"max_flows"`
	FlowTimeout Duration `toml:"flow_timeout"`
	Reorder     Duration `toml:"reorder"`
	NoRepair    bool     `toml:"no_repair"`
	NoParity    bool     `toml:"no_parity"`
	Name        string   `toml:"name"`
	Control     string   `toml:"control"`
	Metrics     string   `toml:"metrics"`
	Log         Log      `toml:"log"`
	IO          IO       `toml:"io"`
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// IO is the [io] table: kernel offloads, all on unless turned off.
type IO struct {
	NoGSO   bool `toml:"no_gso"`
	NoGRO   bool `toml:"no_gro"`
	NoBatch bool `toml:"no_batch"`
	// SendBuffer is the bytes a path socket may hold unsent.
	SendBuffer int `toml:"send_buffer"`
}

// Client is a client's file.
type Client struct {
	Common
	Listen     string    `toml:"listen"`
	Mode       string    `toml:"mode"`
	TargetLoss float64   `toml:"target_loss"`
	FEC        FEC       `toml:"fec"`
	Rekey      Rekey     `toml:"rekey"`
	Forwards   []Forward `toml:"forward"`
	Socks      Socks     `toml:"socks"`
	Paths      []Path    `toml:"path"`
	// PrivateKeyFile and ServerPublicKey make the handshake an identity
	// one (key pairs): this client's private key, the server's public key.
	PrivateKeyFile  string `toml:"private_key_file"`
	ServerPublicKey string `toml:"server_public_key"`
}

// Socks is the client's [socks] table.
type Socks struct {
	Listen   string `toml:"listen"`    // where the SOCKS5 front listens
	AuthFile string `toml:"auth_file"` // file holding USER:PASSWORD
}

// Forward is one [[forward]] of a client.
type Forward struct {
	Listen   string `toml:"listen"`   // local address
	Target   string `toml:"target"`   // host:port on the server's side
	Protocol string `toml:"protocol"` // "udp" (the default) or "tcp"
}

// Rekey is the client's [rekey] table.
type Rekey struct {
	After   Duration `toml:"after"`   // replace the session's keys this often
	Packets uint64   `toml:"packets"` // or once either end sealed this many packets
}

// FEC is the client's [fec] table.
type FEC struct {
	Shape      string   `toml:"shape"` // K/M
	Interleave int      `toml:"interleave"`
	Flush      Duration `toml:"flush"`
}

// Path is one [[path]] of a client.
type Path struct {
	Remote   string `toml:"remote"`   // host:port
	Dev      string `toml:"dev"`      // interface to bind to
	From     string `toml:"from"`     // local source address
	Priority int    `toml:"priority"` // failover order: lower first
}

// Server is a server's file.
type Server struct {
	Common
	Listen         string   `toml:"listen"`
	Target         string   `toml:"target"`
	Allow          []string `toml:"allow"`
	MaxSessions    int      `toml:"max_sessions"`
	SessionTimeout Duration `toml:"session_timeout"`
	MaxStreams     int      `toml:"max_streams"`
	DialTimeout    Duration `toml:"dial_timeout"`
	// Identities: the server's private key, its clients (in the file and
	// in a directory of files, one a client), and whether shared-key
	// clients are still taken beside them.
	PrivateKeyFile string        `toml:"private_key_file"`
	Clients        []ClientEntry `toml:"client"`
	ClientsDir     string        `toml:"clients_dir"`
	AllowShared    bool          `toml:"allow_shared"`
}

// ClientEntry is one named client of a server with identities: a [[client]]
// of the server's file, or a file of its clients_dir.
type ClientEntry struct {
	Name        string   `toml:"name"` // a clients_dir file's name (less .toml) when left out
	PublicKey   string   `toml:"public_key"`
	Allow       []string `toml:"allow"` // replaces the server's allow for this client
	MaxSessions int      `toml:"max_sessions"`
	RekeyMin    Duration `toml:"rekey_min"` // rekeys of one session closer together are refused
	Disabled    bool     `toml:"disabled"`
}

// check checks one client; key is its table's dotted name ("client.2"),
// "" for a file of its own.
func (e *ClientEntry) check(k *checker, key string) {
	at := func(sub string) string {
		if key == "" {
			return sub
		}
		return key + "." + sub
	}
	if e.Name == "" {
		k.fail(key, "a client needs name = \"...\"")
	} else if err := control.CheckName(e.Name); err != nil {
		k.fail(at("name"), "%v", err)
	}
	if _, err := handshake.ParsePublicKey(e.PublicKey); err != nil {
		k.fail(at("public_key"), "%v", err)
	}
	for i, r := range e.Allow {
		if _, err := allow.Parse(r); err != nil {
			k.fail(at("allow"), "rule %d: %v", i+1, err)
		}
	}
	if e.MaxSessions < 0 || e.MaxSessions > 1<<20 {
		k.fail(at("max_sessions"), "%d: want 1 to %d", e.MaxSessions, 1<<20)
	}
}

// checkClients checks a server's client list: each entry, and that no name
// or public key is listed twice.
func checkClients(k *checker, key string, cs []ClientEntry) {
	names := make(map[string]bool, len(cs))
	keys := make(map[string]string, len(cs))
	for i := range cs {
		e := &cs[i]
		ek := fmt.Sprintf("%s.%d", key, i)
		e.check(k, ek)
		if names[e.Name] {
			k.fail(ek+".name", "client %q is listed twice", e.Name)
		}
		if other, dup := keys[e.PublicKey]; dup {
			k.fail(ek+".public_key", "clients %q and %q have the same public key", other, e.Name)
		}
		names[e.Name], keys[e.PublicKey] = true, e.Name
	}
}

// LoadClientsDir reads a clients_dir: every file ending in .toml is one
// client (a ClientEntry, named after the file unless it says name = ...);
// other files are left alone. The entries come sorted by file name.
func LoadClientsDir(dir string) ([]ClientEntry, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config: clients_dir: %w", err)
	}
	var out []ClientEntry
	for _, de := range ents {
		name, ok := strings.CutSuffix(de.Name(), ".toml")
		if !ok || de.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		file := filepath.Join(dir, de.Name())
		b, err := readFile(file)
		if err != nil {
			return nil, err
		}
		var e ClientEntry
		lines, err := decode(file, b, &e)
		if err != nil {
			return nil, err
		}
		if e.Name == "" {
			e.Name = name
		}
		k := &checker{file: file, lines: lines}
		e.check(k, "")
		if k.err != nil {
			return nil, k.err
		}
		out = append(out, e)
	}
	return out, nil
}

// AllClients returns the server's clients: those of its file, then those
// of its clients_dir, checked together (no name or key twice).
func (s *Server) AllClients(file string) ([]ClientEntry, error) {
	all := append([]ClientEntry(nil), s.Clients...)
	if s.ClientsDir != "" {
		more, err := LoadClientsDir(s.ClientsDir)
		if err != nil {
			return nil, err
		}
		all = append(all, more...)
	}
	k := &checker{file: file, lines: map[string]int{}}
	checkClients(k, "client", all)
	return all, k.err
}

// Error is a problem with a file, at a line when known.
type Error struct {
	File string
	Line int    // 0 when the problem is not at one line
	Key  string // the key, dotted, when known
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadClient reads and checks a client's file.
func LoadClient(file string) (Client, error) { return load[Client](file) }

// ParseClient checks a client's configuration read from the file name.
func ParseClient(name string, b []byte) (Client, error) { return parse[Client](name, b) }

// LoadServer reads and checks a server's file.
func LoadServer(file string) (Server, error) { return load[Server](file) }

// ParseServer checks a server's configuration read from the file name.
func ParseServer(name string, b []byte) (Server, error) { return parse[Server](name, b) }

// checkable is a pointer to a configuration T, which checks it once decoded.
type checkable[T any] interface {
	*T
	check(file string, lines map[string]int) error
}

// load reads and checks a file of configuration T.
func load[T any, P checkable[T]](file string) (T, error) {
	b, err := readFile(file)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse[T, P](file, b)
}

// parse checks a configuration T read from the file name.
func parse[T any, P checkable[T]](name string, b []byte) (T, error) {
	var v T
	lines, err := decode(name, b, &v)
	if err != nil {
		return v, err
	}
	return v, P(&v).check(name, lines)
}

// decode reads b, the file's contents, strictly into v and returns the line
// each key and table starts on, for errors found after decoding.
func decode(file string, b []byte, v any) (map[string]int, error) {
	if len(b) > MaxSize {
		return nil, &Error{File: file, Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	d := toml.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			msg := strings.TrimPrefix(de.Error(), "toml: ")
			if msg == "unknown field" {
				msg = "unknown key (docs/CONFIG.md lists them)"
			}
			return nil, &Error{File: file, Line: row, Key: strings.Join(de.Key(), "."), Msg: msg}
		}
		return nil, &Error{File: file, Msg: err.Error()}
	}
	return keyLines(b), nil
}

func readFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", file, err)
	}
	if len(b) > MaxSize {
		return nil, &Error{File: file, Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	return b, nil
}

// keyLines finds, roughly, the line each key of the file starts on: "key ="
// at the start of a line, keyed by the table it is in ("fec.shape",
// "path.2.remote" for the third [[path]]). Good enough to point at a value
// the decoder accepted but the checks refuse.
func keyLines(b []byte) map[string]int {
	m := make(map[string]int)
	table := ""
	count := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "[["):
			name := strings.TrimSpace(strings.Trim(l, "[] \t"))
			table = fmt.Sprintf("%s.%d", name, count[name])
			count[name]++
			m[table] = i + 1
		case strings.HasPrefix(l, "["):
			table = strings.TrimSpace(strings.Trim(l, "[] \t"))
			m[table] = i + 1
		default:
			if k, _, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
				k = strings.TrimSpace(k)
				if table != "" {
					k = table + "." + k
				}
				if _, seen := m[k]; !seen {
					m[k] = i + 1
				}
			}
		}
	}
	return m
}

// checker collects the first error of a file's checks.
type checker struct {
	file  string
	lines map[string]int
	err   error
}

func (c *checker) fail(key, format string, a ...any) {
	if c.err == nil {
		c.err = &Error{File: c.file, Line: c.lines[key], Key: key, Msg: fmt.Sprintf(format, a...)}
	}
}

func (c *Common) check(k *checker) {
	if c.Cipher != "" {
		if _, err := aead.Parse(c.Cipher); err != nil {
			k.fail("cipher", "%v", err)
		}
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		k.fail("mtu", "%d: want 576 to 65535", c.MTU)
	}
	if c.Window < 0 || c.Window > 1<<20 {
		k.fail("window", "%d: want 0 (the default) to %d", c.Window, 1<<20)
	}
	if c.MaxFlows < 0 || c.MaxFlows > 65536 {
		k.fail("max_flows", "%d: want 1 to 65536", c.MaxFlows)
	}
	if c.Name != "" {
		if err := control.CheckName(c.Name); err != nil {
			k.fail("name", "%v", err)
		}
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		k.fail("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		k.fail("log.format", "%q: want text or json", c.Log.Format)
	}
	if c.Metrics != "" {
		if _, err := netip.ParseAddrPort(c.Metrics); err != nil && !strings.HasPrefix(c.Metrics, ":") {
			k.fail("metrics", "%q: want an address and port such as \"127.0.0.1:9150\" or \":9150\"", c.Metrics)
		}
	}
}

func (c *Client) check(file string, lines map[string]int) error {
	k := &checker{file: file, lines: lines}
	c.Common.check(k)
	if c.Mode != "" {
		if _, err := sched.ParseMode(c.Mode); err != nil {
			k.fail("mode", "%v", err)
		}
	}
	if c.TargetLoss != 0 && (c.TargetLoss <= 0 || c.TargetLoss >= 1) {
		k.fail("target_loss", "%v: want a fraction between 0 and 1, such as 0.001", c.TargetLoss)
	}
	if c.FEC.Shape != "" {
		if _, err := fec.ParseParams(c.FEC.Shape); err != nil {
			k.fail("fec.shape", "%v", err)
		}
	}
	if c.FEC.Interleave < 0 || c.FEC.Interleave > 15 {
		k.fail("fec.interleave", "%d: want 1 to 15", c.FEC.Interleave)
	}
	if len(c.Paths) > wire.MaxPaths {
		k.fail("path", "%d paths: at most %d", len(c.Paths), wire.MaxPaths)
	}
	for i, f := range c.Forwards {
		key := fmt.Sprintf("forward.%d", i)
		if _, port, ok := cutPort(f.Listen); !ok || port == "" {
			k.fail(key+".listen", "%q: want a local address such as \"127.0.0.1:5353\"", f.Listen)
		}
		if f.Target == "" {
			k.fail(key, "a [[forward]] needs target = \"host:port\"")
		} else if _, err := wire.ParseTargetString(f.Target); err != nil {
			k.fail(key+".target", "%q: want host:port on the server's side, such as \"10.0.0.53:53\"", f.Target)
		}
		if f.Protocol != "" && f.Protocol != "udp" && f.Protocol != "tcp" {
			k.fail(key+".protocol", "%q: want \"udp\" or \"tcp\"", f.Protocol)
		}
	}
	if c.Socks.Listen != "" {
		if _, port, ok := cutPort(c.Socks.Listen); !ok || port == "" {
			k.fail("socks.listen", "%q: want an address such as \"127.0.0.1:1080\" or \":1080\"", c.Socks.Listen)
		}
	}
	if c.ServerPublicKey != "" {
		if _, err := handshake.ParsePublicKey(c.ServerPublicKey); err != nil {
			k.fail("server_public_key", "%v", err)
		}
	}
	if (c.PrivateKeyFile == "") != (c.ServerPublicKey == "") {
		k.fail("private_key_file", "private_key_file and server_public_key go together")
	}
	for i, p := range c.Paths {
		key := fmt.Sprintf("path.%d", i)
		if p.Remote == "" {
			k.fail(key, "a [[path]] needs remote = \"host:port\"")
			continue
		}
		if _, port, ok := cutPort(p.Remote); !ok || port == "" {
			k.fail(key+".remote", "%q: want host:port (IPv6 in brackets)", p.Remote)
		}
		if p.From != "" {
			if _, err := netip.ParseAddr(p.From); err != nil {
				k.fail(key+".from", "%q: want an IP address", p.From)
			}
		}
	}
	return k.err
}

func (s *Server) check(file string, lines map[string]int) error {
	k := &checker{file: file, lines: lines}
	s.Common.check(k)
	if s.Target != "" {
		if _, port, ok := cutPort(s.Target); !ok || port == "" {
			k.fail("target", "%q: want host:port (IPv6 in brackets)", s.Target)
		}
	}
	for i, r := range s.Allow {
		if _, err := allow.Parse(r); err != nil {
			k.fail("allow", "rule %d: %v", i+1, err)
		}
	}
	if s.MaxSessions < 0 || s.MaxSessions > 1<<20 {
		k.fail("max_sessions", "%d: want 1 to %d", s.MaxSessions, 1<<20)
	}
	if s.MaxStreams < 0 || s.MaxStreams > 1<<20 {
		k.fail("max_streams", "%d: want 1 to %d", s.MaxStreams, 1<<20)
	}
	if s.DialTimeout < 0 {
		k.fail("dial_timeout", "%v: want a positive duration", s.DialTimeout.D())
	}
	checkClients(k, "client", s.Clients)
	if (len(s.Clients) > 0 || s.ClientsDir != "") && s.PrivateKeyFile == "" {
		k.fail("client", "a client list needs the server's private_key_file")
	}
	return k.err
}

// cutPort splits host:port, brackets allowed around an IPv6 host.
func cutPort(s string) (host, port string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", false
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
		return "", "", false
	}
	for _, r := range port {
		if r < '0' || r > '9' {
			return "", "", false
		}
	}
	return host, port, port != ""
}

// Role guesses whose file this is: "server" when it sets a target, else
// "client".
func Role(file string) (string, error) {
	b, err := readFile(file)
	if err != nil {
		return "", err
	}
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			return "", &Error{File: file, Line: row, Msg: strings.TrimPrefix(de.Error(), "toml: ")}
		}
		return "", &Error{File: file, Msg: err.Error()}
	}
	if _, ok := m["target"]; ok {
		return "server", nil
	}
	return "client", nil
}

// Changed returns the keys whose values differ between a and b, two values of
// the same configuration type, dotted as in the file ("fec.shape", "log.level").
func Changed(a, b any) []string {
	var out []string
	changed("", reflect.ValueOf(a), reflect.ValueOf(b), &out)
	return out
}

func changed(prefix string, a, b reflect.Value, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		fa, fb := a.Field(i), b.Field(i)
		name := f.Tag.Get("toml")
		if f.Anonymous {
			changed(prefix, fa, fb, out)
			continue
		}
		if prefix != "" {
			name = prefix + "." + name
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]() {
			changed(name, fa, fb, out)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			*out = append(*out, name)
		}
	}
}
