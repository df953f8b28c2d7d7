package hw

import (
	"context"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

const (
	levelLow  = gpio.Low
	pullUp    = gpio.PullUp
	bothEdges = gpio.BothEdges
	// minEdgeWait keeps every WaitForEdge timeout positive: periph's
	// drivers disagree on what 0 and negative values mean (the character
	// device treats 0 as "forever").
	minEdgeWait = time.Millisecond
)

// gpioPin is the part of periph's gpio.PinIO this package uses; tests fake it.
type gpioPin interface {
	Out(l gpio.Level) error
	In(pull gpio.Pull, edge gpio.Edge) error
	Read() gpio.Level
	WaitForEdge(timeout time.Duration) bool
	Halt() error
}

// driver is the periph entry points Open needs, swapped out in tests.
type driver struct {
	init   func() error
	byName func(name string) gpioPin
	count  func() int
}

var periph = driver{
	init: func() error {
		_, err := host.Init()
		return err
	},
	byName: func(name string) gpioPin {
		// gpioreg.ByName returns nil when the name is unknown, which is
		// also what happens on every pin of a machine without GPIO.
		p := gpioreg.ByName(name)
		if p == nil {
			return nil
		}
		return p
	},
	count: func() int { return len(gpioreg.All()) },
}

// gpioLED drives an LED wired from the pin to ground (high = lit).
type gpioLED struct{ pin gpioPin }

func (l gpioLED) Set(on bool) error { return l.pin.Out(gpio.Level(on)) }

// gpioButton reads a button wired from the pin to ground with the internal
// pull-up on, so pressed reads low.
type gpioButton struct{ pin gpioPin }

func (b gpioButton) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	edge := b.pin.WaitForEdge(max(timeout, minEdgeWait))
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return edge, nil
}

func (b gpioButton) Pressed() (bool, error) { return b.pin.Read() == gpio.Low, nil }
