package hw

import (
	"context"
)

// RunButton watches the pair button until ctx ends. A press released before
// the long-press time calls onShort (the daemon opens the pairing window);
// holding it that long calls onLong once, at that moment rather than on
// release, so the user knows when to let go, and the release then calls
// nothing. Contacts are debounced for 30ms, and a press already held when
// RunButton starts is ignored until released, so a stuck button cannot pair.
// Callbacks run on RunButton's goroutine and should return quickly.
func (b *Board) RunButton(ctx context.Context, onShort, onLong func()) {
	if _, ok := b.button.(noButton); ok {
		<-ctx.Done()
		return
	}
	if onShort == nil {
		onShort = func() {}
	}
	if onLong == nil {
		onLong = func() {}
	}
	failed := false
	fail := func(what string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		if !failed {
			failed = true
			b.log.Warn("hardware: pair button "+what+" failed", "err", err)
		}
		// Back off so a broken pin does not spin.
		return b.sleep(ctx, b.poll)
	}

	pressed, err := b.button.Pressed()
	if err != nil && !fail("read", err) {
		return
	}
	ignore := pressed // held before we were watching
	var since = b.now()
	longDone := false

	for ctx.Err() == nil {
		timeout := b.poll
		if pressed && !ignore && !longDone {
			left := since.Add(b.longPress).Sub(b.now())
			if left <= 0 {
				longDone = true
				b.log.Debug("hardware: pair button long press")
				onLong()
				continue
			}
			timeout = min(timeout, left)
		}
		edge, err := b.button.Wait(ctx, timeout)
		if err != nil {
			if !fail("wait", err) {
				return
			}
			continue
		}
		if !edge {
			continue
		}
		at := b.now()
		if !b.sleep(ctx, debounce) {
			return
		}
		level, err := b.button.Pressed()
		if err != nil {
			if !fail("read", err) {
				return
			}
			continue
		}
		if level == pressed {
			continue // bounce, or a press shorter than the debounce
		}
		pressed = level
		if pressed {
			since, longDone, ignore = at, false, false
			continue
		}
		if !ignore && !longDone {
			b.log.Debug("hardware: pair button short press")
			onShort()
		}
		ignore = false
	}
}
