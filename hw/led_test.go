package hw

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// ledBoard returns a board whose LED is a trace and whose sleeper records
// each sleep into the same trace, calling hook with the 1-based sleep count.
// Nothing sleeps for real, so RunLED can run on the test goroutine.
func ledBoard(t *testing.T, hook func(n int)) (*Board, *trace) {
	t.Helper()
	tr := &trace{}
	log, _ := newLog()
	b := newBoard(tr, noButton{}, 0, log)
	n := 0
	b.sleep = func(ctx context.Context, d time.Duration) bool {
		tr.add(d.String())
		n++
		hook(n)
		return ctx.Err() == nil
	}
	return b, tr
}

// cycles renders k cycles of a pattern's table in trace form.
func cycles(p Pattern, k int) []string {
	var out []string
	for range k {
		for _, s := range patterns[p] {
			if s.on {
				out = append(out, "on")
			} else {
				out = append(out, "off")
			}
			if s.dur > 0 {
				out = append(out, s.dur.String())
			}
		}
	}
	return out
}

func TestPatternTable(t *testing.T) {
	ms := time.Millisecond
	want := map[Pattern][]step{
		Starting: {{true, 100 * ms}, {false, 100 * ms}},
		Online:   {{true, 0}},
		Offline:  {{true, time.Second}, {false, time.Second}},
		Pairing:  {{true, 150 * ms}, {false, 150 * ms}, {true, 150 * ms}, {false, 800 * ms}},
		Error:    {{true, 50 * ms}, {false, 50 * ms}},
	}
	for p, w := range want {
		if !slices.Equal(patterns[p], w) {
			t.Errorf("%v: table %v, want %v", p, patterns[p], w)
		}
	}
	if len(patterns) != len(want) {
		t.Errorf("table has %d patterns, want %d", len(patterns), len(want))
	}
}

func TestRunLEDBlinkSequences(t *testing.T) {
	for _, p := range []Pattern{Starting, Offline, Pairing, Error} {
		t.Run(p.String(), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			const k = 3
			b, tr := ledBoard(t, func(n int) {
				if n == k*len(patterns[p]) {
					cancel()
				}
			})
			b.SetPattern(p)
			b.RunLED(ctx)
			want := append(cycles(p, k), "off")
			if got := tr.list(); !slices.Equal(got, want) {
				t.Errorf("sequence\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestRunLEDOnlineSolid(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b, tr := ledBoard(t, func(int) { t.Error("solid pattern must not sleep") })
	tr.onSet = func(bool) { cancel() }
	b.SetPattern(Online)
	b.RunLED(ctx)
	if got, want := tr.list(), []string{"on", "off"}; !slices.Equal(got, want) {
		t.Errorf("sequence %v, want %v", got, want)
	}
}

func TestRunLEDDefaultIsStarting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, tr := ledBoard(t, func(n int) {
		if n == 2 {
			cancel()
		}
	})
	if b.Pattern() != Starting {
		t.Fatalf("initial pattern %v, want starting", b.Pattern())
	}
	b.RunLED(ctx)
	if got, want := tr.list(), append(cycles(Starting, 1), "off"); !slices.Equal(got, want) {
		t.Errorf("sequence %v, want %v", got, want)
	}
}

func TestSetPatternSwitchesMidCycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var b *Board
	b, tr := ledBoard(t, func(n int) {
		switch n {
		case 3: // during Starting's second "on"
			b.SetPattern(Pairing)
		case 3 + len(patterns[Pairing]):
			cancel()
		}
	})
	b.RunLED(ctx)
	want := []string{"on", "100ms", "off", "100ms", "on", "100ms"}
	want = append(want, cycles(Pairing, 1)...)
	want = append(want, "off")
	if got := tr.list(); !slices.Equal(got, want) {
		t.Errorf("sequence\n got %v\nwant %v", got, want)
	}
	if b.Pattern() != Pairing {
		t.Errorf("pattern %v, want pairing", b.Pattern())
	}
}

func TestSetPatternSameDoesNotRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var b *Board
	b, tr := ledBoard(t, func(n int) {
		switch n {
		case 1:
			b.SetPattern(Starting)
		case 4:
			cancel()
		}
	})
	b.RunLED(ctx)
	if got, want := tr.list(), append(cycles(Starting, 2), "off"); !slices.Equal(got, want) {
		t.Errorf("sequence %v, want %v", got, want)
	}
}

func TestSetPatternUnknownShowsError(t *testing.T) {
	b, _ := ledBoard(t, func(int) {})
	b.SetPattern(Pattern(42))
	if b.Pattern() != Error {
		t.Errorf("pattern %v, want error", b.Pattern())
	}
}

func TestRunLEDWriteErrorLoggedOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, tr := ledBoard(t, func(n int) {
		if n == 6 {
			cancel()
		}
	})
	log, rec := newLog()
	b.log = log
	tr.err = errors.New("broken")
	b.RunLED(ctx)
	if n := len(rec.records()); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
}

// ledChan hands each LED write to the test over a channel, in order, until
// stop is closed; for runs with the real sleeper on their own goroutine.
type ledChan struct {
	mu   sync.Mutex
	last *bool
	ch   chan bool
	stop chan struct{}
}

func (l *ledChan) Set(on bool) error {
	l.mu.Lock()
	l.last = &on
	l.mu.Unlock()
	select {
	case l.ch <- on:
	case <-l.stop:
	}
	return nil
}

// TestRunLEDRealSleeperWakes checks, with real timers, that SetPattern
// interrupts a solid pattern and that the LED ends off. The deadline is only
// a guard against hanging, not a timing assertion.
func TestRunLEDRealSleeperWakes(t *testing.T) {
	led := &ledChan{ch: make(chan bool), stop: make(chan struct{})}
	log, _ := newLog()
	b := newBoard(led, noButton{}, 0, log)
	b.SetPattern(Online)
	ctx, cancel := context.WithCancel(context.Background())
	stop := sync.OnceFunc(func() { close(led.stop); cancel() })
	defer stop()
	done := make(chan struct{})
	go func() { b.RunLED(ctx); close(done) }()

	next := func() bool {
		t.Helper()
		select {
		case on := <-led.ch:
			return on
		case <-time.After(5 * time.Second):
			t.Fatal("no LED write")
			return false
		}
	}
	if !next() {
		t.Fatal("online: first write should be on")
	}
	b.SetPattern(Error) // would never be seen if the solid wait were not woken
	if !next() {
		t.Fatal("error: first write should be on")
	}
	if next() {
		t.Fatal("error: second write should be off")
	}
	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunLED did not return after cancel")
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if led.last == nil || *led.last {
		t.Error("LED not left off")
	}
}
