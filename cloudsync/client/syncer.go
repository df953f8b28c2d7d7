package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// Syncer keeps the store in step with the authority.
//
// Freshness comes only from the signed feed: the store is current as of a
// heartbeat's signed time when its cursor has reached that heartbeat's head.
// Unsigned stream comments, HTTP 200s and TCP keepalives say nothing, since
// whoever holds the authority's TLS certificate (a TLS-terminating load
// balancer, say) can send them while withholding a revocation.
type Syncer struct {
	E     *Enrollment
	Store *store.Store
	Log   *slog.Logger
	// OnReject is told about every refused batch or heartbeat (for
	// metrics); may be nil.
	OnReject func(reason string)
	// Prepare may adjust a verified batch before it is applied (the gateway
	// extends revocations to its own token lifetime); may be nil.
	Prepare func(*store.Batch)
	// Backoff is the wait before retry number attempt (0 for the first
	// after a failure); nil means DefaultBackoff. Set before Run.
	Backoff func(attempt int) time.Duration
	// After waits for d; tests set it to see the waits chosen without
	// spending them. nil means time.After. Set before Run.
	After func(d time.Duration) <-chan time.Time
	// MaxRetryAfter caps how long an authority's Retry-After holds the
	// syncer off; 0 means DefaultMaxRetryAfter. Set before Run.
	MaxRetryAfter time.Duration

	http     *http.Client
	key      jwk.Key
	feed     jwk.Key
	wake     chan struct{}
	lastOK   atomic.Int64 // unix nanos: signed time of the newest heartbeat whose head the store has reached
	online   atomic.Bool  // the stream is open and its last heartbeat found the store current
	snapshot atomic.Bool  // set when the next round must start from a snapshot

	mu       sync.Mutex
	head     *cloudsync.Heartbeat // the newest heartbeat accepted since start
	lastErr  string               // why the last round ended
	nextTry  time.Time            // when a waiting Run tries again; zero while it is not waiting
	failures int                  // rounds in a row that failed before the stream carried a heartbeat
}

// NewSyncer checks the enrollment's keys.
func NewSyncer(e *Enrollment, st *store.Store, log *slog.Logger) (*Syncer, error) {
	key, err := jwk.ParseKey(e.Key)
	if err != nil {
		return nil, fmt.Errorf("enrollment key: %w", err)
	}
	feed, err := jwk.ParseKey(e.FeedKey)
	if err != nil {
		return nil, fmt.Errorf("enrollment feed key: %w", err)
	}
	return &Syncer{E: e, Store: st, Log: log, http: HTTPClient(e.Fingerprint), key: key, feed: feed, wake: make(chan struct{}, 1)}, nil
}

// Now asks a waiting Syncer to retry at once instead of after its backoff.
func (s *Syncer) Now() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Online reports whether the push stream is connected and its latest signed
// heartbeat found the store holding everything the authority had.
func (s *Syncer) Online() bool { return s.online.Load() }

// LastContact is the authority's signed time of the newest heartbeat whose
// head the store has reached (never later than when it arrived): the store
// is known to have held everything the authority had at that moment. Zero
// until the first such heartbeat since start. This is what
// sync.max_staleness is measured from.
func (s *Syncer) LastContact() time.Time {
	n := s.lastOK.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Status is where the link to the authority stands, for edgeid status,
// metrics and edgeid doctor.
type Status struct {
	// Online: the push stream is connected and current.
	Online bool
	// Stale: the store is not known to hold the authority's head as of the
	// last HeartbeatMisses heartbeat intervals. Reason says why.
	Stale  bool
	Reason string
	// HeardAt is LastContact.
	HeardAt time.Time
	// Head and HeadAt are the newest signed heartbeat accepted: the
	// authority's last rev and when it said so.
	Head   uint64
	HeadAt time.Time
	// Cursor is the store's sequence number, for comparison with Head.
	Cursor uint64
	// Interval is the authority's signed heartbeat interval (the default
	// until one is heard); a stream silent for HeartbeatMisses of them is
	// dropped and the store called stale.
	Interval time.Duration
	// NextTry is when a waiting syncer tries again; zero while it is
	// connected or trying.
	NextTry time.Time
	// Failures counts failed rounds in a row.
	Failures int
	// LastError is why the last round ended ("" if none has).
	LastError string
}

// Status reports where the link stands now.
func (s *Syncer) Status() (Status, error) {
	cur, err := s.Store.Cursor()
	if err != nil {
		return Status{}, fmt.Errorf("sync status: %w", err)
	}
	now := time.Now()
	s.mu.Lock()
	st := Status{Online: s.online.Load(), HeardAt: s.LastContact(), Cursor: cur.Seq, Interval: s.intervalLocked(),
		NextTry: s.nextTry, Failures: s.failures, LastError: s.lastErr}
	h := s.head
	s.mu.Unlock()
	if h != nil {
		st.Head, st.HeadAt = h.Head, h.Time
	}
	bound := cloudsync.HeartbeatMisses * st.Interval
	switch {
	case h != nil && h.Epoch == cur.Epoch && h.Head > cur.Seq:
		st.Stale = true
		st.Reason = fmt.Sprintf("behind the authority's signed head: cursor %d, head %d", cur.Seq, h.Head)
		if age := now.Sub(h.Time); age > bound {
			st.Reason += fmt.Sprintf(", and the missing deltas have not arrived in %s: withheld on the way?", age.Round(time.Second))
		} else {
			st.Reason += "; fetching the missing deltas"
		}
	case st.HeardAt.IsZero():
		st.Stale, st.Reason = true, "no signed heartbeat from the authority since start"
	case now.Sub(st.HeardAt) > bound:
		st.Stale, st.Reason = true, fmt.Sprintf("no signed heartbeat for %s (the authority signs one every %s)",
			now.Sub(st.HeardAt).Round(time.Second), st.Interval)
	}
	if !st.Online && !st.Stale {
		st.Reason = "push stream not connected"
	}
	if !st.Online && st.LastError != "" {
		st.Reason += ": " + st.LastError
	}
	return st, nil
}

// intervalLocked is the authority's signed heartbeat interval, or the
// default before one is heard (s.mu held). A signed value is trusted only
// within sane bounds, so a misconfigured authority cannot make gateways
// reconnect in a loop or never notice silence.
func (s *Syncer) intervalLocked() time.Duration {
	if s.head != nil {
		if d := s.head.Interval(); d >= 50*time.Millisecond && d <= 10*time.Minute {
			return d
		}
	}
	return cloudsync.DefaultHeartbeatInterval
}

// idleBound is how long the stream may go without a verified signed message.
func (s *Syncer) idleBound() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloudsync.HeartbeatMisses * s.intervalLocked()
}

// StatusError is an authority's (or whatever answers in its name) non-200
// answer.
type StatusError struct {
	Method, Path string
	Code         int
	Status       string
	Body         string
	// RetryAfter is the answer's Retry-After on a 429 or 503, 0 if none.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.Path, e.Status, e.Body)
}

func (s *Syncer) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := s.E.Authority + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	a, err := cloudsync.SignAssertion(s.key, s.E.Gateway, s.E.Authority, time.Now())
	if err != nil {
		return nil, fmt.Errorf("sign request assertion: %w", err)
	}
	req.Header.Set("Authorization", "EdgeID-GW "+a)
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		se := &StatusError{Method: http.MethodGet, Path: path, Code: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(data))}
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests {
			se.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return nil, se
	}
	return resp, nil
}

// current records that the store held everything the authority had at the
// signed time at. Never later than now: a heartbeat from a clock ahead of
// ours must not buy freshness in advance.
func (s *Syncer) current(at time.Time) {
	n := min(at.UnixNano(), time.Now().UnixNano())
	for {
		old := s.lastOK.Load()
		if n <= old || s.lastOK.CompareAndSwap(old, n) {
			return
		}
	}
}

// refused logs and counts a refused batch or heartbeat.
func (s *Syncer) refused(what string, err error) {
	var rj *cloudsync.Reject
	reason := "store_error"
	if errors.As(err, &rj) {
		reason = rj.Reason
	}
	s.Log.Warn("sync "+what+" refused", "reason", reason, "detail", err.Error())
	if s.OnReject != nil {
		s.OnReject(reason)
	}
	if reason == "gap" || reason == "wrong_epoch" {
		s.snapshot.Store(true)
	}
}

// Apply verifies one signed batch and applies it atomically with the new
// cursor. A refused batch changes nothing and is logged with its reason.
func (s *Syncer) Apply(raw string) error {
	b, err := cloudsync.Verify(raw, s.feed)
	var prev store.Cursor
	if err == nil {
		if prev, err = s.Store.Cursor(); err == nil {
			err = cloudsync.Check(b, s.E.Gateway, prev)
		}
	}
	if err != nil {
		s.refused("batch", err)
		return err
	}
	if s.Prepare != nil {
		s.Prepare(&b.Changes)
	}
	cur := b.Cursor(prev, time.Now())
	if b.Snapshot {
		_, err = s.Store.Replace(&b.Changes, &cur)
	} else {
		_, err = s.Store.Apply(&b.Changes, &cur)
	}
	if err != nil && !b.Snapshot && errors.Is(err, store.ErrTooLarge) {
		// A delta larger than one transaction of this store (a mass
		// import): the site's snapshot brings the same state, applied in
		// chunks. Retrying the delta would stop the sync for good.
		s.Log.Warn("sync batch too large for one transaction of the store; fetching a snapshot instead", "from", b.From, "to", b.To,
			"records", b.Changes.Size(), "err", err)
		s.snapshot.Store(true)
		return fmt.Errorf("apply sync batch %d..%d: %w", b.From, b.To, err)
	}
	if err != nil {
		s.Log.Error("sync batch not applied", "from", b.From, "to", b.To, "err", err)
		return fmt.Errorf("apply sync batch %d..%d: %w", b.From, b.To, err)
	}
	s.Log.Info("sync batch applied", "from", b.From, "to", b.To, "snapshot", b.Snapshot, "records", b.Changes.Size())
	// Reaching the head of a heartbeat heard earlier (the stream sends the
	// heartbeat after the batches, a pull answer may end short of it) makes
	// the store current as of that heartbeat.
	s.mu.Lock()
	h := s.head
	s.mu.Unlock()
	if h != nil && h.Epoch == cur.Epoch && cur.Seq >= h.Head {
		s.current(h.Time)
	}
	return nil
}

// AcceptHeartbeat verifies a signed heartbeat and checks it against the
// newest one accepted and the cursor (cloudsync.CheckHeartbeat). A refused
// one changes nothing and is logged with its reason. An accepted one whose
// head the store holds makes the store current as of its signed time;
// behind reports one whose head is past the cursor: deltas exist that the
// store has not been given.
func (s *Syncer) AcceptHeartbeat(raw string) (behind bool, err error) {
	h, err := cloudsync.VerifyHeartbeat(raw, s.feed)
	var cur store.Cursor
	if err == nil {
		if cur, err = s.Store.Cursor(); err == nil {
			s.mu.Lock()
			if err = cloudsync.CheckHeartbeat(h, s.E.Gateway, cur, s.head); err == nil {
				s.head = h
			}
			s.mu.Unlock()
		}
	}
	if err != nil {
		s.refused("heartbeat", err)
		return false, err
	}
	if h.Head > cur.Seq {
		return true, nil
	}
	s.current(h.Time)
	return false, nil
}

// BehindError is a store behind the authority's signed head.
type BehindError struct {
	Cursor, Head uint64
	// Fetched: a pull of the changes ended without reaching the head, so the
	// deltas were withheld (or lost) on the way, and waiting is in order.
	// Otherwise the stream has just shown them to exist: fetch at once.
	Fetched bool
}

func (e *BehindError) Error() string {
	if e.Fetched {
		return fmt.Sprintf("the authority's signed head is %d but its answer stopped at %d: deltas withheld on the way?", e.Head, e.Cursor)
	}
	return fmt.Sprintf("behind the authority's signed head: cursor %d, head %d", e.Cursor, e.Head)
}

// SyncOnce brings the store up to date: a snapshot if it has none (or must
// start again), then every delta. It fails with a *BehindError if the
// answers end short of the newest signed head heard.
func (s *Syncer) SyncOnce(ctx context.Context) error {
	cur, err := s.Store.Cursor()
	if err != nil {
		return fmt.Errorf("read sync cursor: %w", err)
	}
	interrupted, err := s.Store.ReplaceInterrupted()
	if err != nil {
		return fmt.Errorf("read snapshot state: %w", err)
	}
	snapshotted := false
	if cur.Epoch == "" || s.snapshot.Load() || interrupted {
		snapshotted = true
		resp, err := s.get(ctx, cloudsync.PathSnapshot, nil)
		if err != nil {
			return err
		}
		var body struct{ Batch string }
		err = json.NewDecoder(io.LimitReader(resp.Body, 512<<20)).Decode(&body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		if err := s.Apply(body.Batch); err != nil {
			return err
		}
		s.snapshot.Store(false)
	}
	for {
		cur, err := s.Store.Cursor()
		if err != nil {
			return fmt.Errorf("read sync cursor: %w", err)
		}
		resp, err := s.get(ctx, cloudsync.PathChanges, url.Values{"epoch": {cur.Epoch}, "from": {fmt.Sprint(cur.Seq)}})
		if err != nil {
			return err
		}
		var ch cloudsync.ChangesResponse
		err = json.NewDecoder(io.LimitReader(resp.Body, 512<<20)).Decode(&ch)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("changes: %w", err)
		}
		if ch.NeedSnapshot {
			s.snapshot.Store(true)
			if snapshotted {
				// need_snapshot is unsigned: asked again straight after a
				// snapshot, wait before the next one rather than fetch
				// snapshots in a loop for whoever sits on the path.
				return errors.New("changes: the authority asks for a snapshot again right after one")
			}
			return s.SyncOnce(ctx)
		}
		for _, raw := range ch.Batches {
			if err := s.Apply(raw); err != nil {
				if errors.Is(err, store.ErrTooLarge) && !snapshotted {
					return s.SyncOnce(ctx) // from the snapshot Apply asked for
				}
				return err
			}
		}
		// The answer's heartbeat comes after its batches: it was made before
		// the log was read, so they reach its head unless the page was full.
		// An answer without one (an authority from before heartbeats, or one
		// stripped on the way) leaves the store not known to be current.
		if ch.Heartbeat != "" {
			if _, err := s.AcceptHeartbeat(ch.Heartbeat); err != nil {
				return err
			}
		}
		if len(ch.Batches) == 0 {
			break
		}
	}
	cur, err = s.Store.Cursor()
	if err != nil {
		return fmt.Errorf("read sync cursor: %w", err)
	}
	s.mu.Lock()
	h := s.head
	s.mu.Unlock()
	if h != nil && h.Epoch == cur.Epoch && cur.Seq < h.Head {
		return &BehindError{Cursor: cur.Seq, Head: h.Head, Fetched: true}
	}
	return nil
}

// SilentError ends a stream that carried no verified signed message for
// longer than HeartbeatMisses heartbeat intervals.
type SilentError struct{ Idle time.Duration }

func (e *SilentError) Error() string {
	return fmt.Sprintf("sync stream silent: no signed heartbeat for %s; reconnecting", e.Idle)
}

// stream follows the push channel until it breaks, goes silent, or shows
// the store behind the signed head. heard reports whether it carried a
// heartbeat the store was current with.
func (s *Syncer) stream(ctx context.Context) (heard bool, err error) {
	cur, err := s.Store.Cursor()
	if err != nil {
		return false, fmt.Errorf("read sync cursor: %w", err)
	}
	// The idle deadline: only a verified batch or heartbeat pushes it back,
	// so neither a stream that sends nothing after its headers nor one that
	// sends only unsigned comments stays up.
	idle := s.idleBound()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	deadline := time.AfterFunc(idle, func() { cancel(&SilentError{Idle: idle}) })
	defer deadline.Stop()
	silent := func(err error) error {
		if c := context.Cause(ctx); c != nil && ctx.Err() != nil {
			return c
		}
		return err
	}
	resp, err := s.get(ctx, cloudsync.PathEvents, url.Values{"epoch": {cur.Epoch}, "from": {fmt.Sprint(cur.Seq)}})
	if err != nil {
		return false, silent(err)
	}
	defer resp.Body.Close()
	defer s.online.Store(false)
	s.Log.Info("sync stream connected", "authority", s.E.Authority, "cursor", cur.Seq)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			// A comment ping keeps NAT mappings open. It is unsigned, so it
			// proves nothing about the feed and does not push the deadline.
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			switch event {
			case "batch":
				if err := s.Apply(data); err != nil {
					return heard, err
				}
				deadline.Reset(idle)
			case "heartbeat":
				behind, err := s.AcceptHeartbeat(data)
				if err != nil {
					return heard, err
				}
				if behind {
					// The authority has deltas this stream did not bring.
					st, _ := s.Store.Cursor()
					s.mu.Lock()
					head := s.head.Head
					s.mu.Unlock()
					return heard, &BehindError{Cursor: st.Seq, Head: head}
				}
				if !heard {
					heard = true
					s.online.Store(true)
					s.mu.Lock()
					s.failures, s.lastErr = 0, ""
					s.mu.Unlock()
				}
				idle = s.idleBound() // the signed interval may differ from the default
				deadline.Reset(idle)
			case "snapshot-required":
				s.snapshot.Store(true)
				return heard, errors.New("authority asks for a new snapshot")
			}
		case line == "":
			event = ""
		}
	}
	if err := sc.Err(); err != nil {
		return heard, silent(err)
	}
	return heard, silent(io.ErrUnexpectedEOF)
}

// Run syncs, then follows the push stream, reconnecting after a wait (see
// retryWait) until ctx ends. The store keeps deciding throughout.
func (s *Syncer) Run(ctx context.Context) {
	attempt := 0
	tooLarge := false // the last round ended on a delta too large for the store
	for ctx.Err() == nil {
		err := s.SyncOnce(ctx)
		if err == nil {
			var heard bool
			heard, err = s.stream(ctx)
			if heard {
				attempt, tooLarge = 0, false
			}
		}
		if ctx.Err() != nil {
			return
		}
		if be := (*BehindError)(nil); errors.As(err, &be) && !be.Fetched {
			// Fetch the missing deltas now rather than after a backoff: this
			// is what a withheld revocation looks like. If the pull ends
			// short too, SyncOnce says so and the wait below applies.
			s.Log.Warn("sync: behind the authority's signed head; fetching the missing deltas", "cursor", be.Cursor, "head", be.Head)
			continue
		}
		if errors.Is(err, store.ErrTooLarge) && !tooLarge {
			// A pushed delta too large for one transaction (Apply asked
			// for a snapshot): fetch it now, not after a backoff, since
			// the delta may carry revocations. Once: a second in a row
			// waits like any failure.
			tooLarge = true
			continue
		}
		tooLarge = false
		wait := s.retryWait(err, attempt)
		attempt++
		s.mu.Lock()
		s.failures++
		s.lastErr = err.Error()
		s.nextTry = time.Now().Add(wait)
		s.mu.Unlock()
		s.Log.Warn("sync interrupted; deciding from the local store meanwhile", "err", err, "retry_in", wait.Round(time.Millisecond))
		after := s.After
		if after == nil {
			after = time.After
		}
		select {
		case <-ctx.Done():
			return
		case <-after(wait):
		case <-s.wake:
			attempt = 0
		}
		s.mu.Lock()
		s.nextTry = time.Time{}
		s.mu.Unlock()
	}
}
