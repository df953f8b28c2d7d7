package authority

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

func TestLimitLoginLocksDoubleAndAreForgotten(t *testing.T) {
	t.Parallel()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l := DefaultLimits()
	c := loginCounters{x: newLimits(l), store: st}
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	failN := func(n int) {
		for i := 0; i < n; i++ {
			if err := c.fail("alice", "192.0.2.1", now); err != nil {
				t.Fatal(err)
			}
		}
	}
	lockedFor := func() time.Duration {
		locked, until, err := c.locked("alice", "192.0.2.1", now)
		if err != nil {
			t.Fatal(err)
		}
		if !locked {
			return 0
		}
		return until.Sub(now)
	}
	failN(4)
	if d := lockedFor(); d != 0 {
		t.Fatalf("4 failures: locked for %v", d)
	}
	// Failures older than the window do not add up.
	now = now.Add(16 * time.Minute)
	failN(4)
	if d := lockedFor(); d != 0 {
		t.Fatalf("4 + 4 failures 16 minutes apart: locked for %v", d)
	}
	failN(1)
	// Each lock while the last is remembered lasts twice as long, up to a day.
	for i, want := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 16 * time.Hour, 24 * time.Hour, 24 * time.Hour} {
		if i > 0 {
			failN(5)
		}
		if d := lockedFor(); d != want {
			t.Fatalf("lock %d: %v, want %v", i+1, d, want)
		}
		now = now.Add(want) // it ends
		if d := lockedFor(); d != 0 {
			t.Fatalf("lock %d still on at its end: %v", i+1, d)
		}
	}
	// A day after a lock ends, it is forgotten: the next is 15 minutes again.
	now = now.Add(24 * time.Hour)
	failN(5)
	if d := lockedFor(); d != 15*time.Minute {
		t.Fatalf("after a quiet day: %v, want 15m", d)
	}
	// A success forgets the account's failures at that address only.
	now = now.Add(15 * time.Minute)
	failN(4)
	if err := c.succeeded("alice", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	failN(1)
	if d := lockedFor(); d != 0 {
		t.Fatalf("after a success, 1 failure: locked for %v", d)
	}
}

// Two failures at the same moment both count (one writer per counter).
func TestLimitLoginCountersConcurrent(t *testing.T) {
	t.Parallel()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	l := DefaultLimits()
	l.LoginPerAccount = 1000
	c := loginCounters{x: newLimits(l), store: st}
	now := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.fail("alice", fmt.Sprintf("192.0.2.%d", i), now); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	var lc loginCounter
	if err := st.GetDoc(docLoginFailures, hashCode("account:alice"), &lc); err != nil || lc.Failures != 40 {
		t.Fatalf("account counter after 40 concurrent failures: %+v %v", lc, err)
	}
}

func TestLimitClientAddr(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.7:5555":                 "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443":     "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443":     "2001:db8:1:2::/64",
		"[::ffff:192.0.2.9]:1":           "192.0.2.9",
		"[fe80::1%eth0]:1":               "fe80::/64",
		"not an address":                 "not an address",
		"[2001:db8:1:3:3:4:5:6]:443":     "2001:db8:1:3::/64",
		"198.51.100.1:1":                 "198.51.100.1",
		"[2001:db8:ffff:ffff::1]:65535":  "2001:db8:ffff:ffff::/64",
		"[2001:db8::1]:8443":             "2001:db8::/64",
		"[0:0:0:0:0:ffff:c000:0201]:443": "192.0.2.1",
	} {
		if got := clientAddr(&http.Request{RemoteAddr: remote}); got != want {
			t.Errorf("clientAddr(%q) = %q, want %q", remote, got, want)
		}
	}
}

func TestLimitAddrLimiter(t *testing.T) {
	now := time.Now()
	l := newAddrLimiter(Rate{Every: 10 * time.Second, Burst: 2})
	for i := 0; i < 2; i++ {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	ok, wait := l.allow("a", now)
	if ok || wait != 10*time.Second {
		t.Fatalf("3rd request: %v, wait %v; want refused for 10s", ok, wait)
	}
	// A refusal takes nothing: after the wait, one more is allowed.
	if ok, _ := l.allow("a", now.Add(10*time.Second)); !ok {
		t.Fatal("refused after the wait")
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Fatal("another address refused")
	}
	// No rate: no limit.
	if ok, _ := newAddrLimiter(Rate{}).allow("a", now); !ok {
		t.Fatal("a zero Rate limits")
	}
}

func TestLimitLocalPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/devices": true, "/device/consent?user_code=BCDF-GHJK": true, "/": true, "/shares#x": true,
		"": false, "devices": false, "//evil.example": false, `/\evil.example`: false, `\/evil.example`: false, `\\/evil`: false,
		"https://evil.example": false, "/%5Cevil": false, "/%5cevil": false, "/a%5C/b": false, "/%2f/evil": false, "/\t/evil": false,
		"/\r\n/evil": false, "/ /evil": false, "/a\\b": false, "/\x00": false,
	} {
		if got := localPath(p); got != want {
			t.Errorf("localPath(%q) = %v, want %v", p, got, want)
		}
	}
}
