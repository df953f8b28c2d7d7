// SPDX-License-Identifier: MIT

//go:build (linux && 386) || darwin || freebsd || netbsd || openbsd

package mqtt

import "syscall"

// peekReadable is a syscall.RawConn.Read callback (EdgeID): it reports
// whether the socket fd has something to read (data, end of stream or an
// error), without taking any of it; false makes the runtime wait for the
// socket to become readable and ask again.
var peekReadable = func(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
}
