package hw

import (
	"context"
	"time"
)

// Pattern is what the status LED tells someone standing next to the board.
type Pattern int

// Patterns, each distinguishable by eye without a legend.
const (
	// Starting is a fast blink while the daemon comes up.
	Starting Pattern = iota
	// Online is solid on: uplink up and the store fresh.
	Online
	// Offline is a slow blink: uplink down or the store stale.
	Offline
	// Pairing is a double blink while the pairing window is open.
	Pairing
	// Error is a very fast blink: the daemon needs attention.
	Error
)

func (p Pattern) String() string {
	switch p {
	case Starting:
		return "starting"
	case Online:
		return "online"
	case Offline:
		return "offline"
	case Pairing:
		return "pairing"
	case Error:
		return "error"
	}
	return "unknown"
}

// step is one LED state and how long to hold it; 0 holds it until the
// pattern changes.
type step struct {
	on  bool
	dur time.Duration
}

// patterns is the timing of each Pattern, one cycle each, repeated by RunLED.
// It is a table so tests can compare the played sequence against it.
var patterns = map[Pattern][]step{
	Starting: {{true, 100 * time.Millisecond}, {false, 100 * time.Millisecond}},
	Online:   {{true, 0}},
	Offline:  {{true, time.Second}, {false, time.Second}},
	Pairing: {
		{true, 150 * time.Millisecond}, {false, 150 * time.Millisecond},
		{true, 150 * time.Millisecond}, {false, 800 * time.Millisecond},
	},
	Error: {{true, 50 * time.Millisecond}, {false, 50 * time.Millisecond}},
}

// Pattern returns the pattern the LED is showing.
func (b *Board) Pattern() Pattern { return Pattern(b.pattern.Load()) }

// SetPattern switches the LED pattern. The change shows at once rather than
// after the current cycle, so a press of the pair button gets immediate
// feedback. Setting the pattern already shown does not restart it. Unknown
// values show as Error.
func (b *Board) SetPattern(p Pattern) {
	if _, ok := patterns[p]; !ok {
		p = Error
	}
	if Pattern(b.pattern.Swap(int32(p))) == p {
		return
	}
	b.mu.Lock()
	if b.wake != nil {
		b.wake()
	}
	b.mu.Unlock()
}

// RunLED plays the current pattern on the LED until ctx ends, then turns the
// LED off. Run it once, in its own goroutine.
func (b *Board) RunLED(ctx context.Context) {
	if _, ok := b.led.(noLED); ok {
		<-ctx.Done()
		return
	}
	failed := false
	set := func(on bool) {
		if err := b.led.Set(on); err != nil && !failed {
			// Once is enough: a broken LED would otherwise log every blink.
			failed = true
			b.log.Warn("hardware: status LED write failed", "err", err)
		}
	}
	defer set(false)
	for ctx.Err() == nil {
		// Install the wake before reading the pattern, so a SetPattern
		// racing with this either is read here or cancels pctx.
		pctx, cancel := context.WithCancel(ctx)
		b.mu.Lock()
		b.wake = cancel
		b.mu.Unlock()
		b.play(pctx, patterns[b.Pattern()], set)
		cancel()
	}
	b.mu.Lock()
	b.wake = nil
	b.mu.Unlock()
}

// play repeats one pattern's cycle until ctx ends.
func (b *Board) play(ctx context.Context, steps []step, set func(bool)) {
	for {
		for _, s := range steps {
			if ctx.Err() != nil {
				return
			}
			set(s.on)
			if s.dur == 0 {
				<-ctx.Done()
				return
			}
			if !b.sleep(ctx, s.dur) {
				return
			}
		}
	}
}
