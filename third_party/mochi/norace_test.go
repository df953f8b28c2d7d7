// SPDX-License-Identifier: MIT

//go:build !race

package mqtt

// raceStack scales the stack bounds of the tests (EdgeID).
const raceStack = 1
