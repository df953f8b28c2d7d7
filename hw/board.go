package hw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config and the button loop.
const (
	// DefaultLongPress is how long the pair button must be held to count as
	// a long press when Config.LongPress is zero.
	DefaultLongPress = 3 * time.Second
	// debounce is how long contacts are left to settle after an edge before
	// the level is sampled.
	debounce = 30 * time.Millisecond
	// pollInterval bounds every wait for an edge, so cancellation is seen
	// even though a GPIO edge wait itself cannot be interrupted.
	pollInterval = time.Second
)

// Config names the pins as periph knows them (e.g. "GPIO17"); an empty name
// means the part is not fitted.
type Config struct {
	LEDPin    string
	ButtonPin string
	// LongPress is the hold time for a long press; 0 means DefaultLongPress.
	LongPress time.Duration
}

// LED is the status LED. It is an interface so the daemon runs unchanged
// on machines without one.
type LED interface {
	Set(on bool) error
}

// Button is the pair button, reported as a level plus edge notifications so
// the caller can debounce and time presses itself.
type Button interface {
	// Wait blocks until the button's level may have changed, timeout
	// passes, or ctx ends. edge is false on timeout; err is ctx.Err() when
	// ctx ended. An edge is only a hint (it may be bounce): read Pressed.
	Wait(ctx context.Context, timeout time.Duration) (edge bool, err error)
	// Pressed reports whether the button is held down now.
	Pressed() (bool, error)
}

// Board is the opened hardware: the status LED and pair button, or no-op
// stand-ins when the machine has no GPIO.
type Board struct {
	log       *slog.Logger
	led       LED
	button    Button
	longPress time.Duration
	enabled   bool
	halt      []func() error
	closeOnce sync.Once
	closeErr  error

	pattern atomic.Int32
	mu      sync.Mutex
	wake    context.CancelFunc // ends the pattern RunLED is playing

	// Injected for tests: the clock used for long presses, the sleeper used
	// for blink steps and debounce (false when ctx ended first), and the
	// bound on one edge wait.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool
	poll  time.Duration
}

func newBoard(led LED, button Button, longPress time.Duration, log *slog.Logger) *Board {
	if longPress <= 0 {
		longPress = DefaultLongPress
	}
	return &Board{
		log:       log,
		led:       led,
		button:    button,
		longPress: longPress,
		now:       time.Now,
		sleep:     sleepCtx,
		poll:      pollInterval,
	}
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether the full
// sleep happened.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Open initialises periph and configures the pins in cfg: the LED as an
// output driven low, the button as an input with pull-up (pressed pulls it
// low) and edge detection on both edges. If the machine has no GPIO or a
// named pin does not exist, Open logs one info line and returns a Board with
// no-op devices, because a gateway without a button or LED is still useful.
// It fails only when a pin exists but cannot be configured (e.g. no
// permission), which is a fault worth stopping for.
func Open(cfg Config, log *slog.Logger) (*Board, error) {
	return openWith(periph, cfg, log)
}

func openWith(drv driver, cfg Config, log *slog.Logger) (*Board, error) {
	if log == nil {
		log = slog.Default()
	}
	off := func(reason string) (*Board, error) {
		log.Info("hardware: no GPIO ("+reason+"); pair button and status LED are off",
			"led_pin", cfg.LEDPin, "button_pin", cfg.ButtonPin)
		return newBoard(noLED{}, noButton{}, cfg.LongPress, log), nil
	}
	if cfg.LEDPin == "" && cfg.ButtonPin == "" {
		return off("no pins configured")
	}
	if err := drv.init(); err != nil {
		return off("periph init failed: " + err.Error())
	}
	var ledPin, btnPin gpioPin
	for _, p := range []struct {
		name string
		dst  *gpioPin
	}{{cfg.LEDPin, &ledPin}, {cfg.ButtonPin, &btnPin}} {
		if p.name == "" {
			continue
		}
		pin := drv.byName(p.name)
		if pin == nil {
			if drv.count() == 0 {
				return off("this machine has none")
			}
			return off(fmt.Sprintf("pin %q not found", p.name))
		}
		*p.dst = pin
	}

	b := newBoard(noLED{}, noButton{}, cfg.LongPress, log)
	b.enabled = true
	if ledPin != nil {
		if err := ledPin.Out(levelLow); err != nil {
			return nil, fmt.Errorf("hw: configure status LED %s: %w", cfg.LEDPin, err)
		}
		b.led = gpioLED{ledPin}
		b.halt = append(b.halt, ledPin.Halt)
	}
	if btnPin != nil {
		if err := btnPin.In(pullUp, bothEdges); err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("hw: configure pair button %s: %w", cfg.ButtonPin, err)
		}
		b.button = gpioButton{btnPin}
		b.halt = append(b.halt, btnPin.Halt)
	}
	log.Info("hardware: GPIO ready", "led_pin", orNone(cfg.LEDPin), "button_pin", orNone(cfg.ButtonPin))
	return b, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Enabled reports whether any GPIO device is live, so the daemon can say
// whether pairing by button is possible.
func (b *Board) Enabled() bool { return b.enabled }

// LED returns the status LED (a no-op one when not fitted).
func (b *Board) LED() LED { return b.led }

// Button returns the pair button (a no-op one when not fitted).
func (b *Board) Button() Button { return b.button }

// Close turns the LED off and releases the pins; halting the button pin also
// unblocks a pending edge wait. Stop RunLED first or it may light the LED
// again. Safe to call more than once.
func (b *Board) Close() error {
	b.closeOnce.Do(func() {
		errs := []error{b.led.Set(false)}
		for _, h := range b.halt {
			errs = append(errs, h())
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// noLED is the LED of a board without one.
type noLED struct{}

func (noLED) Set(bool) error { return nil }

// noButton is the button of a board without one: never pressed.
type noButton struct{}

func (noButton) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	sleepCtx(ctx, timeout)
	return false, ctx.Err()
}

func (noButton) Pressed() (bool, error) { return false, nil }
