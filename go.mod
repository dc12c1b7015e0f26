module github.com/mptunnel/mptunnel

go 1.26.8

require (
	github.com/flynn/noise v1.1.0
	go.uber.org/goleak v1.3.0
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/klauspost/reedsolomon v1.14.2
	golang.org/x/net v0.62.0
)

require github.com/klauspost/cpuid/v2 v2.3.0 // indirect
