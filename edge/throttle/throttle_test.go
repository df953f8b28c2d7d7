package throttle

import (
	"fmt"
	"sync/atomic"
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

func countLimits(th *Throttle, key string, l Limits, n int, at time.Time) map[Verdict]int {
	out := map[Verdict]int{}
	for i := 0; i < n; i++ {
		out[th.CheckLimits(key, l, 1, at)]++
	}
	return out
}

func TestCheckLimitsPerKey(t *testing.T) {
	th := New(Limits{Messages: Limit{Rate: 1, Burst: 5}}, 0, 100)
	own := Limits{Messages: Limit{Rate: 1, Burst: 2}}
	if got := countLimits(th, "a", own, 4, t0); got[Allow] != 2 || got[Refuse] != 2 {
		t.Fatalf("key under its own burst of 2: %v", got)
	}
	if got := count(th, "b", 7, 1, t0); got[Allow] != 5 {
		t.Fatalf("key under the default burst of 5: %v", got)
	}
	// No default limit: Check allows all, CheckLimits still limits.
	off := New(Limits{}, 0, 100)
	if off.Enabled() || count(off, "c", 10, 1, t0)[Allow] != 10 {
		t.Fatal("a throttle without defaults must allow Check")
	}
	if got := countLimits(off, "c", own, 4, t0); got[Allow] != 2 {
		t.Fatalf("own limits on a throttle without defaults: %v", got)
	}
	if got := countLimits(off, "d", Limits{}, 10, t0); got[Allow] != 10 || off.Len() != 1 {
		t.Fatalf("zero limits are unlimited and track nothing: %v, %d keys", got, off.Len())
	}
}

func TestLimitsChangeKeepsTokens(t *testing.T) {
	th := New(Limits{}, 0, 100)
	wide := Limits{Messages: Limit{Rate: 1, Burst: 10}}
	narrow := Limits{Messages: Limit{Rate: 1, Burst: 3}}
	if got := countLimits(th, "k", wide, 2, t0); got[Allow] != 2 {
		t.Fatalf("first two under a burst of 10: %v", got)
	}
	// 8 tokens left; the burst shrinks to 3: three pass, not eight.
	if got := countLimits(th, "k", narrow, 5, t0); got[Allow] != 3 || got[Refuse] != 2 {
		t.Fatalf("after the burst shrank to 3: %v", got)
	}
	// Widening again does not refill the bucket.
	if got := countLimits(th, "k", wide, 2, t0); got[Refuse] != 2 {
		t.Fatalf("widening handed out a fresh burst: %v", got)
	}
	// Tokens come back at the rate: 4 in 4 s.
	if got := countLimits(th, "k", wide, 6, t0.Add(4*time.Second)); got[Allow] != 4 {
		t.Fatalf("4 s at 1/s: %v", got)
	}
	// A faster rate takes effect from the change on: 10/s, so 5 in 500 ms.
	fast := Limits{Messages: Limit{Rate: 10, Burst: 10}}
	if got := countLimits(th, "k", fast, 1, t0.Add(4*time.Second)); got[Refuse] != 1 {
		t.Fatalf("no time passed since the bucket emptied: %v", got)
	}
	if got := countLimits(th, "k", fast, 8, t0.Add(4500*time.Millisecond)); got[Allow] != 5 {
		t.Fatalf("500 ms at 10/s: %v", got)
	}
	// Lifting the limit allows everything; setting one again starts from the
	// state the bucket was left in (here: a full burst, time having passed).
	if got := countLimits(th, "k", Limits{}, 50, t0.Add(5*time.Second)); got[Allow] != 50 {
		t.Fatalf("unlimited: %v", got)
	}
	if got := countLimits(th, "k", narrow, 5, t0.Add(time.Minute)); got[Allow] != 3 {
		t.Fatalf("limited again a minute later: %v", got)
	}
	// A byte limit added to a message limit starts full.
	both := Limits{Messages: Limit{Rate: 1, Burst: 3}, Bytes: Limit{Rate: 1, Burst: 2}}
	if got := countLimits(th, "k", both, 3, t0.Add(2*time.Minute)); got[Allow] != 2 || got[Refuse] != 1 {
		t.Fatalf("a 2-byte burst added: %v", got)
	}
}

func TestCheckLimitsMemoryBounded(t *testing.T) {
	th := New(Limits{}, 0, 50)
	l := Limits{Messages: Limit{Rate: 1, Burst: 1}}
	for i := 0; i < 1000; i++ {
		th.CheckLimits(fmt.Sprint("k", i), l, 1, t0)
	}
	if th.Len() != 50 {
		t.Fatalf("tracked keys %d, want at most 50", th.Len())
	}
	if r, d := th.Stats(); r != 0 || d != 0 {
		t.Fatalf("stats %d %d, want none refused", r, d)
	}
}

// BenchmarkThrottle is the per-PUBLISH cost with every limit on and never
// reached: a device bucket each, one class bucket all of them share.
//
//	go test -run '^$' -bench BenchmarkThrottle -benchmem ./edge/throttle/
func BenchmarkThrottle(b *testing.B) {
	high := Limits{Messages: Limit{Rate: 1e9, Burst: 1 << 30}, Bytes: Limit{Rate: 1e12, Burst: 1 << 30}}
	devices, classes := New(high, 100, 50000), New(high, 0, 10000)
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("device-%d", i)
	}
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		key := keys[n.Add(1)%int64(len(keys))]
		for pb.Next() {
			now := time.Now()
			if devices.CheckLimits(key, high, 64, now) != Allow || classes.CheckLimits("thermostat", high, 64, now) != Allow {
				b.Fatal("refused")
			}
		}
	})
}
