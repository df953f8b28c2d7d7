//go:build !race

package broker

// raceStack scales the stack bounds of the tests.
const raceStack = 1
