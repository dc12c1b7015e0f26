//go:build !linux

package udpio

import "syscall"

func bindToDevice(syscall.RawConn, string) error { return ErrNoDevice }
