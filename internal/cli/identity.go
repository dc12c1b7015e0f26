package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mptunnel/mptunnel/internal/conffile"
	"github.com/mptunnel/mptunnel/internal/handshake"
	"github.com/mptunnel/mptunnel/internal/server"
)

// identity holds the key pair options (docs/CONFIG.md, "Identities").
type identity struct {
	privateKeyFile  string
	serverPublicKey string // client
	clientsDir      string // server
	allowShared     bool   // server
}

func (id *identity) registerCommon(fs *flag.FlagSet) {
	fs.StringVar(&id.privateKeyFile, "private-key-file", "", "file holding this end's private key ('mptunnel genkey --pair -o FILE'), readable by its owner only: identity handshakes, each client known by its public key")
}

func (id *identity) registerServer(fs *flag.FlagSet) {
	id.registerCommon(fs)
	fs.StringVar(&id.clientsDir, "clients-dir", "", "directory of client files, one NAME.toml a client (public_key, allow, max_sessions, disabled), besides the file's [[client]] tables")
	fs.BoolVar(&id.allowShared, "allow-shared", false, "with a client list, still take shared-key clients (any holder of the shared key) while they move to key pairs")
}

func (id *identity) registerClient(fs *flag.FlagSet) {
	id.registerCommon(fs)
	fs.StringVar(&id.serverPublicKey, "server-public-key", "", "the server's public key ('mptunnel pubkey' of its private key): a server that cannot prove it holds the private key gets nothing")
}

// applyServerFile takes the identity options the command line did not set
// from a server's file.
func (id *identity) applyServerFile(set map[string]bool, f conffile.Server) {
	setFromFile(&id.privateKeyFile, set["private-key-file"], f.PrivateKeyFile)
	setFromFile(&id.clientsDir, set["clients-dir"], f.ClientsDir)
	setFromFile(&id.allowShared, set["allow-shared"], f.AllowShared)
}

// applyClientFile is applyServerFile for a client's file.
func (id *identity) applyClientFile(set map[string]bool, f conffile.Client) {
	setFromFile(&id.privateKeyFile, set["private-key-file"], f.PrivateKeyFile)
	setFromFile(&id.serverPublicKey, set["server-public-key"], f.ServerPublicKey)
}

// private reads the private key file, or returns nil when none is given.
func (id *identity) private() (*handshake.PrivateKey, error) {
	if id.privateKeyFile == "" {
		return nil, nil
	}
	b, err := readSecret("private key file", id.privateKeyFile)
	if err != nil {
		return nil, err
	}
	k, err := handshake.ParsePrivateKey(string(b))
	if err != nil {
		return nil, usagef("%s: %w", id.privateKeyFile, err)
	}
	return &k, nil
}

// clientKeys reads a client's key pair options: both or neither.
func (id *identity) clientKeys() (*handshake.PrivateKey, *handshake.PublicKey, error) {
	if (id.privateKeyFile == "") != (id.serverPublicKey == "") {
		return nil, nil, usagef("--private-key-file and --server-public-key go together: the client's own key and the server's it trusts")
	}
	priv, err := id.private()
	if err != nil || priv == nil {
		return nil, nil, err
	}
	pub, err := handshake.ParsePublicKey(id.serverPublicKey)
	if err != nil {
		return nil, nil, usagef("bad --server-public-key: %w", err)
	}
	return priv, &pub, nil
}

// serverClients reads a server's client list: the file's [[client]] tables
// and the clients directory's files.
func (id *identity) serverClients(f conffile.Server, file string) ([]server.Client, error) {
	f.ClientsDir = id.clientsDir
	entries, err := f.AllClients(file)
	if err != nil {
		return nil, usageError{err}
	}
	var out []server.Client
	for _, e := range entries {
		pub, err := handshake.ParsePublicKey(e.PublicKey)
		if err != nil {
			return nil, usagef("client %q: %w", e.Name, err) // checked already; kept for safety
		}
		out = append(out, server.Client{Name: e.Name, Public: pub, Allow: e.Allow, MaxSessions: e.MaxSessions, RekeyMin: e.RekeyMin.D(), Disabled: e.Disabled})
	}
	return out, nil
}

// runPubkey prints the public key of a private key read from stdin or
// --key-file.
func runPubkey(args []string, env Env) error {
	fs := newFlagSet("mptunnel pubkey", env, "[--key-file FILE] < PRIVATE_KEY")
	var file string
	fs.StringVar(&file, "key-file", "", "read the private key from this file instead of stdin")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("pubkey takes no arguments: the private key comes on stdin or from --key-file")
	}
	var text []byte
	var err error
	if file != "" {
		text, err = readSecret("private key file", file)
	} else {
		in := env.Stdin
		if in == nil {
			in = strings.NewReader("")
		}
		text, err = io.ReadAll(io.LimitReader(in, 4096))
	}
	if err != nil {
		return err
	}
	k, err := handshake.ParsePrivateKey(string(text))
	if err != nil {
		return usageError{err}
	}
	fmt.Fprintln(env.Stdout, k.Public().String())
	return nil
}

// genPair writes a new private key to the new owner-only file out and
// prints its public key.
func genPair(out string, env Env) error {
	if out == "" {
		return usagef("genkey --pair needs -o FILE: the private key goes to the new file, its public key to stdout")
	}
	priv, pub, err := handshake.GeneratePair()
	if err != nil {
		return err
	}
	if err := writeNewSecret(out, priv.String()); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, pub.String())
	return nil
}

// clientNames lists the names of cs, for logs.
func clientNames(cs []server.Client) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return strings.Join(names, ",")
}
