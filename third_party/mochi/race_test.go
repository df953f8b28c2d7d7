// SPDX-License-Identifier: MIT

//go:build race

package mqtt

// raceStack scales the stack bounds of the tests (EdgeID): the race detector
// doubles the runtime's stack guard and no-split reserve.
const raceStack = 2
