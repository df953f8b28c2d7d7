//go:build race

package broker

// raceStack scales the stack bounds of the tests: the race detector doubles
// the runtime's stack guard and no-split reserve.
const raceStack = 2
