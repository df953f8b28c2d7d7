package hw

import (
	"context"
	"errors"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
)

const ms = time.Millisecond

// press scripts a press at `at` held for `hold`, with contact bounce on both
// edges (all of it inside the 30ms debounce window).
func press(at, hold time.Duration) []simEvent {
	var ev []simEvent
	for i, lvl := range []bool{true, false, true, false, true} {
		ev = append(ev, simEvent{at + time.Duration(i)*5*ms, lvl})
	}
	up := at + hold
	for i, lvl := range []bool{false, true, false, true, false} {
		ev = append(ev, simEvent{up + time.Duration(i)*4*ms, lvl})
	}
	return ev
}

type pressResult struct {
	short  int
	long   int
	longAt []time.Duration // virtual time of each onLong
	sim    *simButton
}

// runSim runs RunButton on the test goroutine against a scripted button on a
// virtual clock; it returns once the script is over and the sim cancels.
func runSim(t *testing.T, longPress time.Duration, initial bool, events []simEvent) pressResult {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	end := time.Duration(0)
	if len(events) > 0 {
		end = events[len(events)-1].at
	}
	sim := &simButton{level: initial, events: events, end: end + 5*time.Second, cancel: cancel}
	log, _ := newLog()
	b := newBoard(noLED{}, sim, longPress, log)
	b.now, b.sleep = sim.now, sim.sleep
	var r pressResult
	r.sim = sim
	b.RunButton(ctx,
		func() { r.short++ },
		func() { r.long++; r.longAt = append(r.longAt, sim.t) })
	if sim.waits > 100000 {
		t.Fatal("RunButton looped without end")
	}
	for _, d := range sim.timeouts {
		if d <= 0 || d > pollInterval {
			t.Errorf("Wait timeout %v, want in (0, %v]", d, pollInterval)
		}
	}
	return r
}

func TestButtonShortPress(t *testing.T) {
	r := runSim(t, 0, false, press(time.Second, 500*ms))
	if r.short != 1 || r.long != 0 {
		t.Errorf("short=%d long=%d, want 1, 0", r.short, r.long)
	}
}

func TestButtonBounceIsOnePress(t *testing.T) {
	// Ten edges within 30ms on press and on release still make one press.
	var ev []simEvent
	for i := range 10 {
		ev = append(ev, simEvent{time.Second + time.Duration(i)*2*ms, i%2 == 0})
	}
	ev = append(ev, simEvent{time.Second + 20*ms, true})
	for i := range 10 {
		ev = append(ev, simEvent{2*time.Second + time.Duration(i)*2*ms, i%2 != 0})
	}
	ev = append(ev, simEvent{2*time.Second + 20*ms, false})
	r := runSim(t, 0, false, ev)
	if r.short != 1 || r.long != 0 {
		t.Errorf("short=%d long=%d, want 1, 0", r.short, r.long)
	}
}

func TestButtonLongPress(t *testing.T) {
	r := runSim(t, 0, false, press(time.Second, 5*time.Second))
	if r.long != 1 || r.short != 0 {
		t.Fatalf("short=%d long=%d, want 0, 1", r.short, r.long)
	}
	// Fired while still held, at the long-press mark (virtual clock).
	if want := time.Second + DefaultLongPress; r.longAt[0] != want {
		t.Errorf("onLong at %v, want %v", r.longAt[0], want)
	}
}

func TestButtonLongHoldFiresOnce(t *testing.T) {
	r := runSim(t, 0, false, press(time.Second, 30*time.Second))
	if r.long != 1 || r.short != 0 {
		t.Errorf("short=%d long=%d, want 0, 1", r.short, r.long)
	}
}

func TestButtonCustomLongPress(t *testing.T) {
	r := runSim(t, 500*ms, false, press(time.Second, time.Second))
	if r.long != 1 || r.short != 0 {
		t.Errorf("short=%d long=%d, want 0, 1", r.short, r.long)
	}
	r = runSim(t, 500*ms, false, press(time.Second, 300*ms))
	if r.long != 0 || r.short != 1 {
		t.Errorf("short=%d long=%d, want 1, 0", r.short, r.long)
	}
}

func TestButtonSeveralPresses(t *testing.T) {
	ev := press(time.Second, 200*ms)
	ev = append(ev, press(2*time.Second, 4*time.Second)...)
	ev = append(ev, press(7*time.Second, 100*ms)...)
	r := runSim(t, 0, false, ev)
	if r.short != 2 || r.long != 1 {
		t.Errorf("short=%d long=%d, want 2, 1", r.short, r.long)
	}
}

func TestButtonGlitchIgnored(t *testing.T) {
	// Shorter than the debounce: settled level never changes.
	r := runSim(t, 0, false, []simEvent{{time.Second, true}, {time.Second + 10*ms, false}})
	if r.short != 0 || r.long != 0 {
		t.Errorf("short=%d long=%d, want 0, 0", r.short, r.long)
	}
}

func TestButtonHeldAtStartIgnored(t *testing.T) {
	// Held from before RunButton (stuck or leaned on): neither the hold nor
	// its release counts, but the next press does.
	ev := []simEvent{{10 * time.Second, false}}
	ev = append(ev, press(11*time.Second, 100*ms)...)
	r := runSim(t, 0, true, ev)
	if r.short != 1 || r.long != 0 {
		t.Errorf("short=%d long=%d, want 1, 0", r.short, r.long)
	}
}

func TestButtonNilCallbacks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := press(time.Second, 100*ms)
	ev = append(ev, press(2*time.Second, 5*time.Second)...)
	sim := &simButton{events: ev, end: 10 * time.Second, cancel: cancel}
	log, rec := newLog()
	b := newBoard(noLED{}, sim, 0, log)
	b.now, b.sleep = sim.now, sim.sleep
	b.RunButton(ctx, nil, nil) // must not panic
	// Both presses were seen and decided (nil callbacks stand for no-ops),
	// and the run went to the end of the simulated events.
	var short, long int
	for _, r := range rec.records() {
		switch r.Message {
		case "hardware: pair button short press":
			short++
		case "hardware: pair button long press":
			long++
		}
	}
	if short != 1 || long != 1 || sim.t < sim.end {
		t.Fatalf("short %d, long %d presses seen, simulated time %v of %v; want 1, 1 and the whole run", short, long, sim.t, sim.end)
	}
}

// errButton fails every call, to check RunButton logs once and backs off.
type errButton struct{}

func (errButton) Wait(context.Context, time.Duration) (bool, error) {
	return false, errors.New("wait broken")
}
func (errButton) Pressed() (bool, error) { return false, errors.New("read broken") }

func TestButtonErrorsLoggedOnceAndBackOff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log, rec := newLog()
	b := newBoard(noLED{}, errButton{}, 0, log)
	var sleeps []time.Duration
	b.sleep = func(ctx context.Context, d time.Duration) bool {
		sleeps = append(sleeps, d)
		if len(sleeps) == 5 {
			cancel()
		}
		return ctx.Err() == nil
	}
	b.RunButton(ctx, func() { t.Error("onShort") }, func() { t.Error("onLong") })
	if n := len(rec.records()); n != 1 {
		t.Errorf("%d log lines, want 1", n)
	}
	for _, d := range sleeps {
		if d != pollInterval {
			t.Errorf("back-off %v, want %v", d, pollInterval)
		}
	}
}

// TestButtonCancelEndsRun runs the periph adapter over a fake pin whose edge
// wait blocks for real, and checks cancel ends RunButton. The deadline only
// guards against a hang.
func TestButtonCancelEndsRun(t *testing.T) {
	pin := &fakePin{level: gpio.High, edges: make(chan struct{})}
	log, _ := newLog()
	b := newBoard(noLED{}, gpioButton{pin}, 0, log)
	b.poll = 10 * ms
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		b.RunButton(ctx, func() {}, func() {})
		close(done)
	}()
	pin.edges <- struct{}{} // RunButton is waiting on the pin
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunButton did not return after cancel")
	}
	for _, d := range pin.snapshot().timeouts {
		if d <= 0 {
			t.Errorf("WaitForEdge timeout %v, want positive", d)
		}
	}
}

func TestNoButtonCancelEndsRun(t *testing.T) {
	log, _ := newLog()
	b := newBoard(noLED{}, noButton{}, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.RunButton(ctx, nil, nil); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunButton did not return after cancel")
	}
}

func TestGPIOButtonAdapter(t *testing.T) {
	pin := &fakePin{level: gpio.Low, edges: make(chan struct{}, 1)}
	btn := gpioButton{pin}
	if p, err := btn.Pressed(); err != nil || !p {
		t.Errorf("low level: pressed=%v err=%v, want true (pull-up, active low)", p, err)
	}
	pin.level = gpio.High
	if p, _ := btn.Pressed(); p {
		t.Error("high level read as pressed")
	}
	// Zero and negative timeouts mean "forever" or "poll" depending on the
	// periph driver; the adapter must always pass a positive one.
	for _, d := range []time.Duration{0, -1} {
		if edge, err := btn.Wait(context.Background(), d); edge || err != nil {
			t.Errorf("Wait(%v) = %v, %v; want timeout", d, edge, err)
		}
	}
	pin.edges <- struct{}{}
	if edge, err := btn.Wait(context.Background(), time.Second); !edge || err != nil {
		t.Errorf("Wait with pending edge = %v, %v; want true", edge, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := btn.Wait(ctx, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on cancelled ctx err=%v, want Canceled", err)
	}
	for _, d := range pin.snapshot().timeouts {
		if d <= 0 {
			t.Errorf("WaitForEdge got timeout %v, want positive", d)
		}
	}
}

func TestGPIOLEDAdapter(t *testing.T) {
	pin := &fakePin{}
	led := gpioLED{pin}
	_ = led.Set(true)
	_ = led.Set(false)
	got := pin.snapshot().outs
	if len(got) != 2 || got[0] != gpio.High || got[1] != gpio.Low {
		t.Errorf("Out calls %v, want [High Low]", got)
	}
}
