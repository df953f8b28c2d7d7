package store_test

import (
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

func TestWindow(t *testing.T) {
	loc := time.FixedZone("gw", 2*3600)
	at := func(h, m int) time.Time { return time.Date(2026, 12, 2, h, m, 30, 0, loc) }
	evening := store.Window{From: "18:00", To: "20:00"}
	night := store.Window{From: "22:00", To: "06:30"}
	for _, c := range []struct {
		w    store.Window
		t    time.Time
		in   bool
		next time.Time
	}{
		{evening, at(17, 59), false, time.Date(2026, 12, 2, 18, 0, 0, 0, loc)},
		{evening, at(18, 0), true, time.Date(2026, 12, 2, 20, 0, 0, 0, loc)},
		{evening, at(19, 59), true, time.Date(2026, 12, 2, 20, 0, 0, 0, loc)},
		{evening, at(20, 0), false, time.Date(2026, 12, 3, 18, 0, 0, 0, loc)},
		{night, at(23, 0), true, time.Date(2026, 12, 3, 6, 30, 0, 0, loc)},
		{night, at(3, 0), true, time.Date(2026, 12, 2, 6, 30, 0, 0, loc)},
		{night, at(12, 0), false, time.Date(2026, 12, 2, 22, 0, 0, 0, loc)},
	} {
		if got := c.w.Contains(c.t); got != c.in {
			t.Errorf("%v.Contains(%s) = %v, want %v", c.w, c.t.Format("15:04"), got, c.in)
		}
		if got := c.w.Next(c.t); !got.Equal(c.next) {
			t.Errorf("%v.Next(%s) = %s, want %s", c.w, c.t.Format("15:04"), got, c.next)
		}
	}
	if (store.Window{From: "8:00", To: "09:00"}).Check() == nil {
		t.Error("Check accepted 8:00 (want HH:MM)")
	}
	if (store.Window{From: "09:00", To: "09:00"}).Check() == nil {
		t.Error("Check accepted an empty window")
	}
}

func TestGrantActive(t *testing.T) {
	now := time.Date(2026, 12, 2, 19, 0, 0, 0, time.UTC)
	g := store.Grant{Expires: now.Add(30 * time.Minute), Window: &store.Window{From: "18:00", To: "20:00"}}
	if !g.Active(now) || g.Active(now.Add(30*time.Minute)) {
		t.Errorf("Active: want true now and false at expiry")
	}
	if got := g.NextChange(now); !got.Equal(now.Add(30 * time.Minute)) {
		t.Errorf("NextChange = %s, want the expiry %s", got, now.Add(30*time.Minute))
	}
	g.Expires = time.Time{}
	if got := g.NextChange(now); !got.Equal(now.Add(time.Hour)) {
		t.Errorf("NextChange = %s, want the window's close %s", got, now.Add(time.Hour))
	}
}
