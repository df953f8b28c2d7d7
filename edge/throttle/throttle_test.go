package throttle

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func count(th *Throttle, key string, n, size int, at time.Time) map[Verdict]int {
	out := map[Verdict]int{}
	for i := 0; i < n; i++ {
		out[th.Check(key, size, at)]++
	}
	return out
}

func TestMessageRate(t *testing.T) {
	th := New(Limits{Messages: Limit{Rate: 10, Burst: 5}}, 0, 100)
	got := count(th, "d1", 20, 10, t0)
	if got[Allow] != 5 || got[Refuse] != 15 {
		t.Fatalf("burst of 5 then refusals: %v", got)
	}
	// One second later, 10 more tokens (capped at the burst of 5).
	if got := count(th, "d1", 20, 10, t0.Add(time.Second)); got[Allow] != 5 {
		t.Fatalf("after 1s: %v", got)
	}
	// 100 ms later: one token.
	if got := count(th, "d1", 3, 10, t0.Add(1100*time.Millisecond)); got[Allow] != 1 {
		t.Fatalf("after 100ms: %v", got)
	}
	// Keys are independent.
	if got := count(th, "d2", 5, 10, t0); got[Allow] != 5 {
		t.Fatalf("another key: %v", got)
	}
}

func TestByteRate(t *testing.T) {
	th := New(Limits{Bytes: Limit{Rate: 1000, Burst: 1000}}, 0, 100)
	if got := count(th, "d", 12, 100, t0); got[Allow] != 10 || got[Refuse] != 2 {
		t.Fatalf("1000-byte burst of 100-byte messages: %v", got)
	}
	// A message larger than the burst passes once the bucket is full again.
	if v := th.Check("big", 5000, t0); v != Allow {
		t.Fatalf("oversized message on a full bucket: %v", v)
	}
	if v := th.Check("big", 1, t0); v != Refuse {
		t.Fatalf("after an oversized message the bucket is empty: %v", v)
	}
}

func TestPersistentAbuseDisconnects(t *testing.T) {
	th := New(Limits{Messages: Limit{Rate: 1, Burst: 1}}, 3, 100)
	got := []Verdict{}
	for i := 0; i < 5; i++ {
		got = append(got, th.Check("d", 1, t0))
	}
	want := []Verdict{Allow, Refuse, Refuse, Disconnect, Refuse}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdicts %v, want %v", got, want)
	}
	if th.Refused != 3 || th.Disconnected != 1 {
		t.Fatalf("counters refused=%d disconnected=%d", th.Refused, th.Disconnected)
	}
	// An allowed message resets the streak.
	th.Check("d", 1, t0.Add(2*time.Second))
	if v := th.Check("d", 1, t0.Add(2*time.Second)); v != Refuse {
		t.Fatalf("streak not reset: %v", v)
	}
}

func TestMemoryBounded(t *testing.T) {
	th := New(Limits{Messages: Limit{Rate: 1, Burst: 1}}, 0, 50)
	for i := 0; i < 1000; i++ {
		th.Check(fmt.Sprint("k", i), 1, t0)
	}
	if th.Len() != 50 {
		t.Fatalf("tracked keys %d, want at most 50", th.Len())
	}
}

func TestUnlimited(t *testing.T) {
	var nilT *Throttle
	if nilT.Enabled() || New(Limits{}, 3, 10).Check("d", 1<<20, t0) != Allow {
		t.Fatal("no limits must allow everything")
	}
}
