package stream

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ALPN is the application protocol QUIC's handshake agrees on.
const ALPN = "mptunnel-stream/1"

// Secret derives what both ends of a session share for its streams' TLS
// from the session's transport keys: the client's sending key first, then
// the server's. Each end computes it from its own keys, in that order.
func Secret(clientToServer, serverToClient [32]byte) [32]byte {
	ikm := append(clientToServer[:], serverToClient[:]...)
	k, err := hkdf.Key(sha256.New, ikm, nil, "mptunnel stream tls v1", 32)
	if err != nil {
		panic(err) // only for lengths hkdf cannot give; 32 it can
	}
	return [32]byte(k)
}

// serverKey is the Ed25519 key the server's certificate carries, derived
// from secret: the client derives the same public key to pin.
func serverKey(secret [32]byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(secret[:])
}

// ServerTLS returns the server's TLS configuration for a session's QUIC
// connection: a self-signed certificate for the key derived from secret.
func ServerTLS(secret [32]byte) (*tls.Config, error) {
	key := serverKey(secret)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour),
		DNSNames:     []string{"mptunnel"},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("stream: certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{ALPN},
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// ClientTLS returns the client's TLS configuration for a session's QUIC
// connection: it accepts the server's certificate only for the key derived
// from secret (no names, no authorities: the key is the identity).
func ClientTLS(secret [32]byte) *tls.Config {
	want := serverKey(secret).Public().(ed25519.PublicKey)
	return &tls.Config{
		// The chain is not checked against authorities: VerifyPeerCertificate
		// pins the one key instead.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("stream: the server sent no certificate")
			}
			cert, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return fmt.Errorf("stream: server certificate: %w", err)
			}
			got, ok := cert.PublicKey.(ed25519.PublicKey)
			if !ok || !got.Equal(want) {
				return errors.New("stream: the server's certificate is not this session's")
			}
			return nil
		},
		NextProtos: []string{ALPN},
		MinVersion: tls.VersionTLS13,
		ServerName: "mptunnel",
	}
}
