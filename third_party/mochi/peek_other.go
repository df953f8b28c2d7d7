// SPDX-License-Identifier: MIT

//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package mqtt

// peekReadable is nil where sockets are not peeked: every connection keeps
// its read buffer and waits in its read, as upstream (EdgeID).
var peekReadable func(fd uintptr) bool
