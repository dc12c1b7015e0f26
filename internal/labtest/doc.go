// Package labtest holds the root-only end-to-end tests: the real mpclient,
// mpserver and mptunnel binaries, real socat bridges and UDP echo targets in
// network namespaces built by internal/netlab. Without root the tests skip.
package labtest
