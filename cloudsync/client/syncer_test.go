package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/cloudsync/synctest"
	"github.com/edgeid/edgeid/store"
)

type fixture struct {
	t  *testing.T
	a  *authority.Authority
	p  *synctest.Proxy
	e  *client.Enrollment
	st *store.Store // the gateway's
	s  *client.Syncer
}

// newFixture is a real authority behind a synctest.Proxy, a gateway
// enrolled through it, and a Syncer for that gateway (not running).
func newFixture(t *testing.T, heartbeat time.Duration) *fixture {
	t.Helper()
	ast, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ast.Close() }) // registered first: runs after the servers have stopped
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	var a *authority.Authority
	p := synctest.Start(t, func(u string) http.Handler {
		a, err = authority.New(authority.Config{URL: u, TokenAudience: "edgeid", TokenTTL: time.Hour,
			MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour, HeartbeatInterval: heartbeat}, ast, log)
		if err != nil {
			t.Fatal(err)
		}
		return authority.NewHandler(a, "admin-token")
	})
	t.Cleanup(a.Close) // runs before the proxy closes: ends the authority's streams
	code, _, err := a.AddGateway("gw-1", "test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := client.Enroll(context.Background(), p.URL, p.Fingerprint, code, "test-board")
	if err != nil {
		t.Fatal(err)
	}
	gst, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gst.Close() })
	s, err := client.NewSyncer(e, gst, log)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, a: a, p: p, e: e, st: gst, s: s}
}

// change commits a change at the authority and returns its rev.
func (f *fixture) change(id string) uint64 {
	f.t.Helper()
	rev, err := f.a.Apply(&store.Batch{Users: []store.User{{ID: id, Status: store.UserActive}}}, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	return rev
}

// run starts the syncer with its waits handed to the test: every wait Run
// chooses arrives on the returned channel and lasts until the test fires it.
func (f *fixture) run() <-chan wait {
	f.t.Helper()
	waits := make(chan wait, 100)
	f.s.After = func(d time.Duration) <-chan time.Time {
		w := wait{d: d, fire: make(chan time.Time, 1)}
		waits <- w
		return w.fire
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.s.Run(ctx) }()
	f.t.Cleanup(func() { cancel(); <-done })
	return waits
}

// testWriter shows the logs with go test -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

type wait struct {
	d    time.Duration
	fire chan time.Time
}

func next(t *testing.T, waits <-chan wait) wait {
	t.Helper()
	select {
	case w := <-waits:
		return w
	case <-time.After(30 * time.Second):
		t.Fatal("the syncer chose no wait")
		return wait{}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func status(t *testing.T, s *client.Syncer) client.Status {
	t.Helper()
	st, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// An outage however long (here a load balancer answering 503 for a dozen
// tries) never makes the syncer wait more than MaxBackoff between tries, the
// next try is in the status, and the first try after the authority is back
// brings the syncer online.
func TestSyncOutageReturnWithinCap(t *testing.T) {
	f := newFixture(t, time.Second)
	waits := f.run()
	waitFor(t, "the stream", f.s.Online)

	f.p.SetDown(&synctest.Down{Code: http.StatusServiceUnavailable})
	const tries = 12
	for i := 0; i < tries; i++ {
		w := next(t, waits)
		if w.d <= 0 || w.d > client.MaxBackoff {
			t.Fatalf("wait %d: %s, want within (0, %s]", i, w.d, client.MaxBackoff)
		}
		if i >= 6 && w.d < client.MaxBackoff/2 {
			t.Errorf("wait %d: %s; after five doublings the backoff should sit at the cap, jittered down by at most half", i, w.d)
		}
		st := status(t, f.s)
		if st.Online || st.NextTry.IsZero() || time.Until(st.NextTry) > w.d {
			t.Fatalf("wait %d of %s: status %+v", i, w.d, st)
		}
		if i > 0 && !strings.Contains(st.LastError, "503") {
			t.Errorf("wait %d: last error %q does not name the 503", i, st.LastError)
		}
		if i == tries-1 {
			f.p.SetDown(nil) // the authority is back during the last wait
		}
		w.fire <- time.Now()
	}
	// So the try at the end of that wait, at most MaxBackoff after the
	// authority came back, finds it.
	waitFor(t, "the stream back", f.s.Online)
	select {
	case w := <-waits:
		t.Fatalf("the syncer waited again (%s) after the authority came back", w.d)
	default:
	}
	if st := status(t, f.s); !st.NextTry.IsZero() || st.Stale || st.Failures != 0 {
		t.Fatalf("back online: %+v", st)
	}
}

// A 503 or 429 with Retry-After (seconds or an HTTP date) is waited out,
// up to MaxRetryAfter, instead of the backoff.
func TestSyncHonoursRetryAfter(t *testing.T) {
	f := newFixture(t, time.Second)
	waits := f.run()
	waitFor(t, "the stream", f.s.Online)

	cases := []struct {
		name     string
		down     synctest.Down
		min, max time.Duration
	}{
		{"seconds", synctest.Down{Code: 503, RetryAfter: "7"}, 7 * time.Second, 7*time.Second + 700*time.Millisecond},
		{"429", synctest.Down{Code: 429, RetryAfter: "3"}, 3 * time.Second, 3*time.Second + 300*time.Millisecond},
		{"HTTP date", synctest.Down{Code: 503, RetryAfter: time.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat)},
			18 * time.Second, 22 * time.Second},
		{"capped", synctest.Down{Code: 503, RetryAfter: "86400"}, client.DefaultMaxRetryAfter, client.DefaultMaxRetryAfter * 11 / 10},
		{"unreadable: backoff", synctest.Down{Code: 503, RetryAfter: "soon"}, time.Nanosecond, client.MaxBackoff},
	}
	f.p.SetDown(&cases[0].down)
	next(t, waits).fire <- time.Now() // the stream was cut without an answer: the backoff
	for i, c := range cases {
		// Each wait follows a try answered under case i; the try after it
		// meets case i+1.
		w := next(t, waits)
		if w.d < c.min || w.d > c.max {
			t.Errorf("%s: waited %s, want %s..%s", c.name, w.d, c.min, c.max)
		}
		if st := status(t, f.s); st.NextTry.IsZero() || time.Until(st.NextTry) > w.d || !strings.Contains(st.LastError, fmt.Sprint(c.down.Code)) {
			t.Errorf("%s: status %+v for a wait of %s", c.name, st, w.d)
		}
		if i+1 < len(cases) {
			f.p.SetDown(&cases[i+1].down)
		} else {
			f.p.SetDown(nil)
		}
		w.fire <- time.Now()
	}
	waitFor(t, "the stream back", f.s.Online)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"120":                           2 * time.Minute,
		" 5 ":                           5 * time.Second,
		"-3":                            0,
		"1.5":                           0,
		"99999999999999999999":          24 * time.Hour,
		"Tue, 01 Dec 2026 10:00:30 GMT": 30 * time.Second,
		"Tue, 01 Dec 2026 09:59:00 GMT": 0, // past
		"Tuesday":                       0,
	} {
		if got := client.ParseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", v, got, want)
		}
	}
}

func TestDefaultBackoffCapped(t *testing.T) {
	for attempt := -1; attempt < 200; attempt++ {
		for range 20 {
			d := client.DefaultBackoff(attempt)
			if d <= 0 || d > client.MaxBackoff {
				t.Fatalf("attempt %d: %s", attempt, d)
			}
			if attempt >= 5 && d < client.MaxBackoff/2 {
				t.Fatalf("attempt %d: %s is below half the cap", attempt, d)
			}
		}
	}
	if client.DefaultBackoff(0) > time.Second {
		t.Error("the first retry waits more than a second")
	}
}

// Only a verified heartbeat whose head the store has reached moves
// LastContact, and only to its signed time: a bare 200 without one, a pull
// answer that stops short of the head, a replayed heartbeat (older, or after
// a restart) buy no freshness.
func TestSyncFreshnessOnlyFromSignedHead(t *testing.T) {
	f := newFixture(t, time.Second)
	ctx := context.Background()
	if err := f.s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.s.LastContact()
	if first.IsZero() {
		t.Fatal("a full pull with its heartbeat did not make the store current")
	}
	cur, _ := f.st.Cursor()
	old, err := f.a.Changes("gw-1", f.a.Epoch(), cur.Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	oldAt := verifiedTime(t, f, old.Heartbeat)
	newer, _ := f.a.Changes("gw-1", f.a.Epoch(), cur.Seq, 10)
	if behind, err := f.s.AcceptHeartbeat(newer.Heartbeat); err != nil || behind {
		t.Fatalf("current heartbeat: behind %v, %v", behind, err)
	}
	heard := f.s.LastContact()
	if !heard.After(oldAt) {
		t.Fatalf("last contact %s not after the heartbeat of %s", heard, oldAt)
	}
	var rj *cloudsync.Reject
	if _, err := f.s.AcceptHeartbeat(old.Heartbeat); !errors.As(err, &rj) || rj.Reason != "rollback" {
		t.Fatalf("older heartbeat replayed: %v", err)
	}
	code, _, err := f.a.AddGateway("gw-2", "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enroll(context.Background(), f.p.URL, f.p.Fingerprint, code, "test-board"); err != nil {
		t.Fatal(err)
	}
	other, err := f.a.Changes("gw-2", f.a.Epoch(), cur.Seq, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.AcceptHeartbeat(other.Heartbeat); !errors.As(err, &rj) || rj.Reason != "wrong_gateway" {
		t.Fatalf("another gateway's heartbeat: %v", err)
	}
	all, _ := f.a.Changes("gw-1", f.a.Epoch(), 0, 1)
	if _, err := f.s.AcceptHeartbeat(all.Batches[0]); !errors.As(err, &rj) || rj.Reason != "malformed" {
		t.Fatalf("a batch as a heartbeat: %v", err)
	}
	if !f.s.LastContact().Equal(heard) {
		t.Fatal("a refused heartbeat moved last contact")
	}

	// A delta withheld from the pull answer, its heartbeat passed: the pull
	// fails as withheld and the store is stale.
	rev := f.change("u1")
	f.p.WithholdFrom.Store(rev)
	var be *client.BehindError
	if err := f.s.SyncOnce(ctx); !errors.As(err, &be) || !be.Fetched || be.Head != rev {
		t.Fatalf("pull with the delta withheld: %v", err)
	}
	if st := status(t, f.s); !st.Stale || st.Head != rev || !strings.Contains(st.Reason, "behind the authority's signed head") {
		t.Fatalf("status with the delta withheld: %+v", st)
	}
	if !f.s.LastContact().Equal(heard) {
		t.Fatal("a pull that stopped short of the head moved last contact")
	}
	// Heartbeats stripped too: a bare 200 with nothing signed in it says nothing.
	f.p.StripHeartbeats.Store(true)
	if err := f.s.SyncOnce(ctx); !errors.As(err, &be) {
		t.Fatalf("pull without heartbeat, behind the head heard before: %v", err)
	}
	f.p.WithholdFrom.Store(0)
	if err := f.s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// The delta reached the head heard before: current as of that heartbeat,
	// not as of the unsigned answer.
	at := f.s.LastContact()
	if st := status(t, f.s); st.Cursor != rev || !at.Equal(st.HeadAt) {
		t.Fatalf("caught up without a new heartbeat: last contact %s, status %+v", at, st)
	}
	f.p.StripHeartbeats.Store(false)
	if err := f.s.SyncOnce(ctx); err != nil || !f.s.LastContact().After(at) {
		t.Fatalf("pull with its heartbeat: %v, last contact %s", err, f.s.LastContact())
	}

	// After a restart the syncer remembers no heartbeat: a replayed one is
	// taken, but only as of its own signed time.
	replay, _ := f.a.Changes("gw-1", f.a.Epoch(), rev, 10)
	replayAt := verifiedTime(t, f, replay.Heartbeat)
	f.change("u2")
	restarted, err := client.NewSyncer(f.e, f.st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if behind, err := restarted.AcceptHeartbeat(replay.Heartbeat); err != nil || behind {
		t.Fatalf("replay after restart: behind %v, %v", behind, err)
	}
	if !restarted.LastContact().Equal(replayAt) {
		t.Fatalf("replayed heartbeat of %s gave last contact %s", replayAt, restarted.LastContact())
	}
}

// need_snapshot is unsigned: a proxy setting it on every answer gets one
// snapshot per round, not a loop of them.
func TestSyncSnapshotDemandedAgainWaits(t *testing.T) {
	f := newFixture(t, time.Second)
	if err := f.s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.p.DemandSnapshot.Store(true)
	before := f.p.Snapshots.Load()
	if err := f.s.SyncOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "snapshot again") {
		t.Fatalf("need_snapshot on every answer: %v", err)
	}
	if n := f.p.Snapshots.Load() - before; n != 1 {
		t.Fatalf("%d snapshots fetched in one round, want 1", n)
	}
}

func verifiedTime(t *testing.T, f *fixture, raw string) time.Time {
	t.Helper()
	pub, err := jwk.ParseKey(f.e.FeedKey)
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudsync.VerifyHeartbeat(raw, pub)
	if err != nil {
		t.Fatal(err)
	}
	return h.Time
}
