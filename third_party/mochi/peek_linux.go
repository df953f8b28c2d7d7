// SPDX-License-Identifier: MIT

//go:build linux && !386

package mqtt

import (
	"syscall"
	"unsafe"
)

// peekReadable is a syscall.RawConn.Read callback (EdgeID): it reports
// whether the socket fd has something to read (data, end of stream or an
// error), without taking any of it; false makes the runtime wait for the
// socket to become readable and ask again.
//
// A raw system call, which cannot block here (MSG_DONTWAIT, on a socket
// that is non-blocking anyway): syscall.Recvfrom's way through the
// scheduler's system call bookkeeping is some 300 bytes deeper, under an
// idle read loop's wait, which must fit in its first 2 KiB of stack
// (TestIdleReadLoopStackIsSmall). linux/386 has no recvfrom system call of
// its own (peek_unix.go).
var peekReadable = func(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK
}
