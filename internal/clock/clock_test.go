package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	f := NewFake(t0)
	ch := f.After(time.Minute)
	f.Advance(59 * time.Second)
	select {
	case <-ch:
		t.Fatal("fired before its time")
	default:
	}
	f.Advance(time.Second)
	select {
	case got := <-ch:
		if !got.Equal(t0.Add(time.Minute)) {
			t.Errorf("fired with %s, want %s", got, t0.Add(time.Minute))
		}
	default:
		t.Fatal("did not fire at its time")
	}
	if !f.Now().Equal(t0.Add(time.Minute)) {
		t.Errorf("Now = %s", f.Now())
	}
}
