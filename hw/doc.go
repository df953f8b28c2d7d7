// Package hw is EdgeID's contact with the board it runs on: the hardware
// serial that anchors the gateway's identity, the pair button and the
// status LED.
//
// GPIO goes through periph.io so the same binary drives a Raspberry Pi and
// other boards periph knows. Machines without GPIO (a laptop, a VM, CI) are
// normal, not an error: Open then logs one line and hands back no-op
// devices, so the daemon runs the same code with hardware features off.
//
// Timing (blink patterns, debounce, long press) is driven by an injectable
// clock so it can be tested without real sleeps or real pins.
package hw
