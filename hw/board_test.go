package hw

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// wantOffLine checks the board fell back to no-op devices and said so in
// exactly one info line.
func wantOffLine(t *testing.T, b *Board, err error, rec *logRecorder, reason string) {
	t.Helper()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, ok := b.LED().(noLED); !ok {
		t.Errorf("LED is %T, want no-op", b.LED())
	}
	if _, ok := b.Button().(noButton); !ok {
		t.Errorf("Button is %T, want no-op", b.Button())
	}
	if b.Enabled() {
		t.Error("Enabled() on a board without GPIO")
	}
	recs := rec.records()
	if len(recs) != 1 {
		t.Fatalf("%d log lines, want 1", len(recs))
	}
	r := recs[0]
	if r.Level != slog.LevelInfo || !strings.HasPrefix(r.Message, "hardware: no GPIO") ||
		!strings.HasSuffix(r.Message, "pair button and status LED are off") || !strings.Contains(r.Message, reason) {
		t.Errorf("log line %v %q, want info about no GPIO (%s)", r.Level, r.Message, reason)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestOpenNoGPIO uses the real periph drivers: this machine (and CI) has no
// GPIO, so Open must fall back rather than fail.
func TestOpenNoGPIO(t *testing.T) {
	if _, err := host.Init(); err == nil && len(gpioreg.All()) > 0 {
		t.Skip("this machine has GPIO")
	}
	log, rec := newLog()
	b, err := Open(Config{LEDPin: "GPIO17", ButtonPin: "GPIO27"}, log)
	wantOffLine(t, b, err, rec, "")

	// The no-op devices do not block shutdown.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.RunLED(ctx)
	b.RunButton(ctx, nil, nil)
	if edge, err := b.Button().Wait(ctx, pollInterval); edge || !errors.Is(err, context.Canceled) {
		t.Errorf("no-op Wait = %v, %v", edge, err)
	}
	if p, err := b.Button().Pressed(); p || err != nil {
		t.Errorf("no-op Pressed = %v, %v", p, err)
	}
}

func TestOpenFallbacks(t *testing.T) {
	pins := map[string]*fakePin{"GPIO17": {}, "GPIO27": {}}
	cases := []struct {
		name   string
		drv    driver
		cfg    Config
		reason string
	}{
		{"no pins configured", fakeDriver(nil, pins, 2), Config{}, "no pins configured"},
		{"init fails", fakeDriver(errors.New("boom"), pins, 2), Config{LEDPin: "GPIO17"}, "boom"},
		{"no GPIO at all", fakeDriver(nil, nil, 0), Config{LEDPin: "GPIO17", ButtonPin: "GPIO27"}, "none"},
		{"LED pin unknown", fakeDriver(nil, pins, 2), Config{LEDPin: "GPIO99", ButtonPin: "GPIO27"}, `"GPIO99" not found`},
		{"button pin unknown", fakeDriver(nil, pins, 2), Config{LEDPin: "GPIO17", ButtonPin: "GPIO99"}, `"GPIO99" not found`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log, rec := newLog()
			b, err := openWith(c.drv, c.cfg, log)
			wantOffLine(t, b, err, rec, c.reason)
		})
	}
}

func TestOpenConfiguresPins(t *testing.T) {
	led, btn := &fakePin{}, &fakePin{}
	drv := fakeDriver(nil, map[string]*fakePin{"GPIO17": led, "GPIO27": btn}, 2)
	log, rec := newLog()
	b, err := openWith(drv, Config{LEDPin: "GPIO17", ButtonPin: "GPIO27"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Enabled() {
		t.Error("not Enabled")
	}
	if _, ok := b.LED().(gpioLED); !ok {
		t.Errorf("LED is %T", b.LED())
	}
	if _, ok := b.Button().(gpioButton); !ok {
		t.Errorf("Button is %T", b.Button())
	}
	if got := led.snapshot().outs; len(got) != 1 || got[0] != gpio.Low {
		t.Errorf("LED Out calls %v, want [Low]", got)
	}
	if s := btn.snapshot(); s.inCalls != 1 || s.inPull != gpio.PullUp || s.inEdge != gpio.BothEdges {
		t.Errorf("button In(%v, %v) x%d, want In(PullUp, BothEdges) once", s.inPull, s.inEdge, s.inCalls)
	}
	if b.longPress != DefaultLongPress {
		t.Errorf("long press %v, want default %v", b.longPress, DefaultLongPress)
	}
	if recs := rec.records(); len(recs) != 1 || recs[0].Message != "hardware: GPIO ready" {
		t.Errorf("log %v, want one ready line", recs)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_ = b.Close() // idempotent
	ls, bs := led.snapshot(), btn.snapshot()
	if len(ls.outs) != 2 || ls.outs[1] != gpio.Low || ls.halted != 1 || bs.halted != 1 {
		t.Errorf("after Close: LED outs %v halted %d, button halted %d", ls.outs, ls.halted, bs.halted)
	}
}

func TestOpenLEDOnly(t *testing.T) {
	led := &fakePin{}
	drv := fakeDriver(nil, map[string]*fakePin{"GPIO17": led}, 1)
	log, rec := newLog()
	b, err := openWith(drv, Config{LEDPin: "GPIO17", LongPress: 5 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.LED().(gpioLED); !ok {
		t.Errorf("LED is %T", b.LED())
	}
	if _, ok := b.Button().(noButton); !ok {
		t.Errorf("Button is %T, want no-op (not fitted)", b.Button())
	}
	if b.longPress != 5*time.Second {
		t.Errorf("long press %v", b.longPress)
	}
	if n := len(rec.records()); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
}

func TestOpenConfigureErrors(t *testing.T) {
	t.Run("LED", func(t *testing.T) {
		led := &fakePin{outErr: errors.New("permission denied")}
		drv := fakeDriver(nil, map[string]*fakePin{"GPIO17": led}, 1)
		log, _ := newLog()
		if b, err := openWith(drv, Config{LEDPin: "GPIO17"}, log); err == nil || b != nil ||
			!strings.Contains(err.Error(), "GPIO17") {
			t.Errorf("Open = %v, %v; want error naming GPIO17", b, err)
		}
	})
	t.Run("button", func(t *testing.T) {
		led, btn := &fakePin{}, &fakePin{inErr: errors.New("busy")}
		drv := fakeDriver(nil, map[string]*fakePin{"GPIO17": led, "GPIO27": btn}, 2)
		log, _ := newLog()
		if b, err := openWith(drv, Config{LEDPin: "GPIO17", ButtonPin: "GPIO27"}, log); err == nil || b != nil ||
			!strings.Contains(err.Error(), "GPIO27") {
			t.Errorf("Open = %v, %v; want error naming GPIO27", b, err)
		}
		if s := led.snapshot(); s.halted != 1 {
			t.Errorf("LED pin not released after failure (halted %d)", s.halted)
		}
	})
}

func TestOpenNilLogger(t *testing.T) {
	b, err := openWith(fakeDriver(nil, nil, 0), Config{}, nil)
	if err != nil || b == nil {
		t.Fatalf("Open = %v, %v", b, err)
	}
}
