package authority

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

func sweepAuthority(t *testing.T, mod func(*Config)) *Authority {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{URL: "https://authority.test", TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour, PairingCodeTTL: 10 * time.Minute}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); st.Close() })
	if _, err := a.Apply(&store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive}}}, "test"); err != nil {
		t.Fatal(err)
	}
	return a
}

func countDocs(t *testing.T, a *Authority, kind string) int {
	t.Helper()
	n := 0
	if err := a.Store.ListDocs(kind, func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// Issue 15: refresh-token records (live, spent, revoked grants), device and
// user codes, enrollment codes and replay entries stayed forever. The sweep
// deletes each once it has expired, and nothing before.
func TestSweepDeletesExpiredRecords(t *testing.T) {
	a := sweepAuthority(t, nil)
	d, err := a.Store.Device("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	cnf := map[string]string{"jkt": "thumbprint"}
	pair := func() TokenResponse {
		t.Helper()
		da, err := a.startPairing(d, cnf, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.DecidePairing(da.UserCode, "alice", true); err != nil {
			t.Fatal(err)
		}
		tr, err := a.pollPairing(d, cnf, "", da.DeviceCode, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	if _, err := a.startPairing(d, cnf, ""); err != nil { // never approved, never polled
		t.Fatal(err)
	}
	revoked := pair()
	if err := a.RevokeToken(revoked.RefreshToken, "test"); err != nil { // a revoked grant
		t.Fatal(err)
	}
	pair() // a live grant
	if err := a.Store.PutDoc(docRefreshOld, hashCode("rotated"), spentRefresh{Family: "f", Expires: time.Now().Add(refreshTTL)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.AddGateway("gw-1", "test"); err != nil {
		t.Fatal(err)
	}
	if !a.seenAssertion("dev-1/j1", time.Now().Add(time.Minute)) {
		t.Fatal("assertion refused")
	}
	kinds := []string{docRefresh, docRefreshOld, docFamily, docGrantToks, docDeviceCode, docUserCode, docCode}
	want := map[string]int{docRefresh: 1, docRefreshOld: 1, docFamily: 1, docGrantToks: 2, docDeviceCode: 1, docUserCode: 1, docCode: 1}
	check := func(when string, want map[string]int) {
		t.Helper()
		for _, k := range kinds {
			if n := countDocs(t, a, k); n != want[k] {
				t.Errorf("%s: %d %s documents, want %d", when, n, k, want[k])
			}
		}
	}
	check("before any sweep", want)

	now := time.Now()
	if res, err := a.Sweep(now); err != nil || len(res) == 0 {
		t.Fatalf("sweep now: %v %v", res, err)
	} else {
		for k, n := range res {
			if n != 0 {
				t.Errorf("sweep now deleted %d %s, want none (nothing has expired)", n, k)
			}
		}
	}
	check("after a sweep now", want)

	// Past the pairing codes' 10 minutes: the pending pairing and its user code.
	res, err := a.Sweep(now.Add(12 * time.Minute))
	if err != nil || res[docDeviceCode] != 1 || res[docUserCode] != 1 || res["assertion"] != 1 {
		t.Fatalf("sweep at +12m: %v %v", res, err)
	}
	want[docDeviceCode], want[docUserCode] = 0, 0
	check("at +12m", want)
	// Past the enrollment code's hour.
	if res, err := a.Sweep(now.Add(2 * time.Hour)); err != nil || res[docCode] != 1 {
		t.Fatalf("sweep at +2h: %v %v", res, err)
	}
	want[docCode] = 0
	check("at +2h", want)
	// Past the refresh tokens' 30 days: every grant record.
	if res, err := a.Sweep(now.Add(refreshTTL + time.Hour)); err != nil || res[docRefresh] != 1 || res[docGrantToks] != 2 {
		t.Fatalf("sweep at +30d: %v %v", res, err)
	}
	check("at +30d", map[string]int{})
}

// The sweep runs by itself, from New to Close: records go without anyone
// reading them; after Close, nothing is swept (the store may be closed).
func TestSweepRunsUntilClose(t *testing.T) {
	a := sweepAuthority(t, func(c *Config) { c.SweepInterval = 20 * time.Millisecond })
	past := time.Now().Add(-time.Hour)
	if err := a.Store.PutDoc(docCode, "old", enrollCode{Name: "gw-old", Expires: past}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for countDocs(t, a, docCode) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the expired enrollment code is still there after 10 s of 20 ms sweeps")
		}
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { a.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := a.Store.PutDoc(docCode, "old", enrollCode{Name: "gw-old", Expires: past}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if countDocs(t, a, docCode) != 1 {
		t.Fatal("swept after Close")
	}
}
