package hw

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// logRecorder is a slog.Handler that keeps every record, to count lines.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

func newLog() (*slog.Logger, *logRecorder) {
	h := &logRecorder{}
	return slog.New(h), h
}

// trace records LED writes and sleeps in the order they happen.
type trace struct {
	mu     sync.Mutex
	events []string
	onSet  func(on bool)
	err    error
}

func (t *trace) add(s string) {
	t.mu.Lock()
	t.events = append(t.events, s)
	t.mu.Unlock()
}

func (t *trace) Set(on bool) error {
	if on {
		t.add("on")
	} else {
		t.add("off")
	}
	if t.onSet != nil {
		t.onSet(on)
	}
	return t.err
}

func (t *trace) list() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.events...)
}

// simEvent is the button's settled contact level changing at a virtual time.
type simEvent struct {
	at      time.Duration
	pressed bool
}

// simButton is a Button on a virtual clock: Wait and the injected sleeper
// advance time instead of sleeping, applying scripted level changes on the
// way. An edge that happens while nobody waits stays pending, as periph's
// drivers keep it. When the script is over and time passes end, it cancels
// the run so RunButton returns.
type simButton struct {
	t        time.Duration
	level    bool
	pending  bool
	events   []simEvent
	end      time.Duration
	cancel   context.CancelFunc
	timeouts []time.Duration
	waits    int
}

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *simButton) now() time.Time { return epoch.Add(s.t) }

func (s *simButton) advance(to time.Duration) {
	for len(s.events) > 0 && s.events[0].at <= to {
		e := s.events[0]
		s.events = s.events[1:]
		s.t = e.at
		if e.pressed != s.level {
			s.level, s.pending = e.pressed, true
		}
	}
	s.t = to
}

func (s *simButton) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	s.timeouts = append(s.timeouts, timeout)
	if s.waits++; s.waits > 100000 {
		s.cancel() // runaway loop: fail rather than hang
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	deadline := s.t + timeout
	for !s.pending && len(s.events) > 0 && s.events[0].at <= deadline {
		s.advance(s.events[0].at)
	}
	if s.pending {
		s.pending = false
		return true, nil
	}
	s.advance(deadline)
	if len(s.events) == 0 && s.t >= s.end {
		s.cancel()
		return false, ctx.Err()
	}
	return false, nil
}

func (s *simButton) Pressed() (bool, error) { return s.level, nil }

func (s *simButton) sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	s.advance(s.t + d)
	return true
}

// fakePin stands in for a periph pin.
type fakePin struct {
	mu       sync.Mutex
	outs     []gpio.Level
	inPull   gpio.Pull
	inEdge   gpio.Edge
	inCalls  int
	level    gpio.Level
	halted   int
	outErr   error
	inErr    error
	timeouts []time.Duration
	edges    chan struct{}
}

func (p *fakePin) Out(l gpio.Level) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outs = append(p.outs, l)
	return p.outErr
}

func (p *fakePin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inPull, p.inEdge = pull, edge
	p.inCalls++
	return p.inErr
}

func (p *fakePin) Read() gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level
}

// WaitForEdge blocks for up to timeout of real time, like the drivers do,
// which is why callers must keep timeouts short and positive.
func (p *fakePin) WaitForEdge(timeout time.Duration) bool {
	p.mu.Lock()
	p.timeouts = append(p.timeouts, timeout)
	p.mu.Unlock()
	if timeout <= 0 {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.edges:
		return true
	case <-t.C:
		return false
	}
}

func (p *fakePin) Halt() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.halted++
	return nil
}

func (p *fakePin) snapshot() fakePin {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fakePin{
		outs: append([]gpio.Level(nil), p.outs...), inPull: p.inPull, inEdge: p.inEdge,
		inCalls: p.inCalls, halted: p.halted, timeouts: append([]time.Duration(nil), p.timeouts...),
	}
}

// fakeDriver builds a driver over a fixed set of fake pins.
func fakeDriver(initErr error, pins map[string]*fakePin, count int) driver {
	return driver{
		init: func() error { return initErr },
		byName: func(name string) gpioPin {
			if p, ok := pins[name]; ok {
				return p
			}
			return nil
		},
		count: func() int { return count },
	}
}
