// Package e2e holds the tunnel's in-process end-to-end tests: real clients and
// servers on loopback, joined by internal/impair paths, carrying traffic to
// UDP echo targets. It has no code of its own outside its tests.
package e2e
