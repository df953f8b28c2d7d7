package throttle

import (
	"testing"
	"time"
)

func TestGateNilAndUnlimitedAllow(t *testing.T) {
	var g *Gate
	if g.Enabled() || g.Decide("d", "c", "s", 10, t0) != Allow {
		t.Fatal("a nil Gate must allow everything")
	}
	g = &Gate{Devices: New(Limits{}, 3, 10), Subjects: New(Limits{}, 3, 10), Classes: New(Limits{}, 0, 10)}
	if g.Enabled() {
		t.Fatal("no limit anywhere: not enabled")
	}
	g.SetClasses(map[string]ClassLimits{"c": {}}) // a record with no rate keeps the fast path
	if g.Enabled() {
		t.Fatal("a class record without rates enables nothing")
	}
	g.SetClasses(map[string]ClassLimits{"c": {Device: Limits{Messages: Limit{Rate: 1, Burst: 1}}}})
	if !g.Enabled() {
		t.Fatal("a class record's own limit enables the gate")
	}
}

// The first limit that refuses decides, from the narrowest out: a message the
// device limit refuses costs its subject and class nothing.
func TestGateNarrowestFirst(t *testing.T) {
	g := &Gate{
		Devices:  New(Limits{Messages: Limit{Rate: 1, Burst: 1}}, 0, 10),
		Subjects: New(Limits{Messages: Limit{Rate: 1, Burst: 2}}, 0, 10),
		Classes:  New(Limits{Messages: Limit{Rate: 1, Burst: 3}}, 0, 10),
	}
	if v := g.Decide("d1", "c", "alice", 1, t0); v != Allow {
		t.Fatalf("first message: %v", v)
	}
	for range 5 {
		if v := g.Decide("d1", "c", "alice", 1, t0); v != Refuse {
			t.Fatalf("over the device limit: %v", v)
		}
	}
	// Refused by d1's own limit, those did not use alice's or the class's.
	if v := g.Decide("d2", "c", "alice", 1, t0); v != Allow {
		t.Fatalf("another device of the same subject: %v", v)
	}
	// alice's burst of 2 is used up: d3 is refused by the subject limit.
	if v := g.Decide("d3", "c", "alice", 1, t0); v != Refuse {
		t.Fatalf("subject limit: %v", v)
	}
	// The device acting for itself skips the subject limit; the class's
	// burst of 3 has one token left.
	if v := g.Decide("d4", "c", "d4", 1, t0); v != Allow {
		t.Fatalf("no subject: %v", v)
	}
	if v := g.Decide("d5", "c", "", 1, t0); v != Refuse {
		t.Fatalf("class limit: %v", v)
	}
}

// A class record's own limits replace the defaults rate by rate, for its
// devices and for the class as a whole.
func TestGateClassRecordLimits(t *testing.T) {
	g := &Gate{
		Devices: New(Limits{Messages: Limit{Rate: 1, Burst: 1}, Bytes: Limit{Rate: 1000, Burst: 1000}}, 0, 10),
		Classes: New(Limits{}, 0, 10),
	}
	g.SetClasses(map[string]ClassLimits{
		"fast":   {Device: Limits{Messages: Limit{Rate: 10, Burst: 3}}},
		"shared": {Class: Limits{Messages: Limit{Rate: 1, Burst: 2}}},
	})
	allowed := func(device, class string, size int) int {
		n := 0
		for range 10 {
			if g.Decide(device, class, "", size, t0) == Allow {
				n++
			}
		}
		return n
	}
	if n := allowed("a", "fast", 1); n != 3 {
		t.Errorf("class fast: %d allowed, want its own burst of 3", n)
	}
	// The byte rate the record leaves at 0 keeps the configured one.
	if v := g.Decide("b", "fast", "", 2000, t0); v != Allow {
		t.Errorf("one message larger than the byte burst takes the burst: %v", v)
	}
	if v := g.Decide("b", "fast", "", 10, t0.Add(time.Millisecond)); v != Refuse {
		t.Errorf("byte burst used up: %v", v)
	}
	if n := allowed("c", "other", 1); n != 1 {
		t.Errorf("class without a record: %d allowed, want the default burst of 1", n)
	}
	// Two devices of class shared share its burst of 2.
	if n := allowed("d", "shared", 1) + allowed("e", "shared", 1); n != 2 {
		t.Errorf("class shared: %d allowed in all, want 2", n)
	}
	// Records removed: the defaults again.
	g.SetClasses(nil)
	if n := allowed("f", "fast", 1); n != 1 {
		t.Errorf("after SetClasses(nil): %d allowed, want 1", n)
	}
}

func TestGateDisconnectsOnPersistentAbuse(t *testing.T) {
	g := &Gate{Devices: New(Limits{Messages: Limit{Rate: 1, Burst: 1}}, 3, 10)}
	got := []Verdict{}
	for range 5 {
		got = append(got, g.Decide("d", "c", "", 1, t0))
	}
	want := []Verdict{Allow, Refuse, Refuse, Disconnect, Refuse}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
	}
}

func TestConnectLimiter(t *testing.T) {
	off := NewConnectLimiter(0, 1, 10)
	if !off.Allow("192.0.2.1:1000", t0) {
		t.Fatal("rate 0 turns limiting off")
	}
	l := NewConnectLimiter(1, 2, 10)
	if !l.Allow("192.0.2.1:1000", t0) || !l.Allow("192.0.2.1:1001", t0) {
		t.Fatal("the burst of 2 allows two connects")
	}
	if l.Allow("192.0.2.1:1002", t0) {
		t.Fatal("a third from the same host (another port) is refused")
	}
	if !l.Allow("192.0.2.2:1000", t0) {
		t.Fatal("another host has its own burst")
	}
	if !l.Allow("192.0.2.1:1003", t0.Add(time.Second)) {
		t.Fatal("a second later, one more")
	}
}
