// Package client is the gateway's side of the sync protocol: enrollment, and
// the Syncer that keeps the local store in step with the authority (snapshot,
// deltas, then a push stream), applying only batches signed by the pinned
// feed key, meant for this gateway, and continuing its cursor.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// Enrollment is what a gateway keeps after enrolling (state_dir/enrollment.json, mode 0600).
type Enrollment struct {
	Authority string `json:"authority"`
	// Fingerprint pins the authority's TLS certificate (SHA-256 hex); empty
	// means the system's CA roots decide.
	Fingerprint string          `json:"fingerprint,omitempty"`
	Gateway     string          `json:"gateway"`
	Audience    string          `json:"audience"`
	FeedKey     json.RawMessage `json:"feed_key"`
	Key         json.RawMessage `json:"key"` // the gateway's private key
	Enrolled    time.Time       `json:"enrolled"`
}

// HTTPClient returns a client that trusts the authority as the enrollment says.
func HTTPClient(fingerprint string) *http.Client {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if fingerprint != "" {
		want, _ := hex.DecodeString(strings.ToLower(strings.ReplaceAll(fingerprint, ":", "")))
		// Pinning replaces chain validation: the authority may run on a
		// self-signed certificate, and only this one is accepted.
		tc.InsecureSkipVerify = true
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("authority sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("authority certificate sha256 %x is not the pinned %s", got, fingerprint)
			}
			return nil
		}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true,
		ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second}}
}

// Enroll makes the gateway's key and registers it with a one-time code.
func Enroll(ctx context.Context, authority, fingerprint, code, hardware string) (*Enrollment, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := jwk.Import(priv)
	if err != nil {
		return nil, err
	}
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256())
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	pubJSON, _ := json.Marshal(pub)
	body, _ := json.Marshal(cloudsync.EnrollRequest{Code: code, Key: pubJSON, Hardware: hardware})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(authority, "/")+cloudsync.PathEnroll, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := HTTPClient(fingerprint).Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", authority, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll at %s: %s: %s", authority, resp.Status, strings.TrimSpace(string(data)))
	}
	var er cloudsync.EnrollResponse
	if err := json.Unmarshal(data, &er); err != nil {
		return nil, fmt.Errorf("enroll: bad answer: %w", err)
	}
	if _, err := jwk.ParseKey(er.FeedKey); err != nil {
		return nil, fmt.Errorf("enroll: feed key: %w", err)
	}
	privJSON, _ := json.Marshal(k)
	return &Enrollment{Authority: strings.TrimRight(authority, "/"), Fingerprint: fingerprint, Gateway: er.Gateway,
		Audience: er.Audience, FeedKey: er.FeedKey, Key: privJSON, Enrolled: time.Now()}, nil
}

// Save writes the enrollment with owner-only permissions.
func (e *Enrollment) Save(path string) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadEnrollment reads an enrollment; os.ErrNotExist if the gateway is not enrolled.
func LoadEnrollment(path string) (*Enrollment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Enrollment
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if e.Authority == "" || e.Gateway == "" || len(e.FeedKey) == 0 || len(e.Key) == 0 {
		return nil, fmt.Errorf("%s: incomplete enrollment; enroll again", path)
	}
	return &e, nil
}

// Syncer keeps the store in step with the authority.
type Syncer struct {
	E     *Enrollment
	Store *store.Store
	Log   *slog.Logger
	// OnReject is told about every refused batch (for metrics); may be nil.
	OnReject func(reason string)
	// Prepare may adjust a verified batch before it is applied (the gateway
	// extends revocations to its own token lifetime); may be nil.
	Prepare func(*store.Batch)

	http     *http.Client
	key      jwk.Key
	feed     jwk.Key
	wake     chan struct{}
	lastOK   atomic.Int64 // unix nanos of the last successful contact
	online   atomic.Bool
	snapshot atomic.Bool // set when the next round must start from a snapshot
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

// Online reports whether the push stream is connected.
func (s *Syncer) Online() bool { return s.online.Load() }

// LastContact is when the store was last known to hold everything the
// authority had (a batch applied, an empty catch-up, a stream ping).
func (s *Syncer) LastContact() time.Time {
	n := s.lastOK.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
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
		return nil, err
	}
	req.Header.Set("Authorization", "EdgeID-GW "+a)
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(data)))
	}
	return resp, nil
}

// current records that the store holds everything the authority has sent.
func (s *Syncer) current() { s.lastOK.Store(time.Now().UnixNano()) }

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
		var rj *cloudsync.Reject
		reason := "store_error"
		if errors.As(err, &rj) {
			reason = rj.Reason
		}
		s.Log.Warn("sync batch refused", "reason", reason, "detail", err.Error())
		if s.OnReject != nil {
			s.OnReject(reason)
		}
		if reason == "gap" || reason == "wrong_epoch" {
			s.snapshot.Store(true)
		}
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
	if err != nil {
		s.Log.Error("sync batch not applied", "from", b.From, "to", b.To, "err", err)
		return err
	}
	s.Log.Info("sync batch applied", "from", b.From, "to", b.To, "snapshot", b.Snapshot, "records", b.Changes.Size())
	return nil
}

// SyncOnce brings the store up to date: a snapshot if it has none (or must
// start again), then every delta.
func (s *Syncer) SyncOnce(ctx context.Context) error {
	cur, err := s.Store.Cursor()
	if err != nil {
		return err
	}
	interrupted, err := s.Store.ReplaceInterrupted()
	if err != nil {
		return err
	}
	if cur.Epoch == "" || s.snapshot.Load() || interrupted {
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
			return err
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
			return s.SyncOnce(ctx)
		}
		for _, raw := range ch.Batches {
			if err := s.Apply(raw); err != nil {
				return err
			}
		}
		if len(ch.Batches) == 0 {
			s.current()
			return nil
		}
	}
}

// stream follows the push channel until it breaks.
func (s *Syncer) stream(ctx context.Context) error {
	cur, err := s.Store.Cursor()
	if err != nil {
		return err
	}
	resp, err := s.get(ctx, cloudsync.PathEvents, url.Values{"epoch": {cur.Epoch}, "from": {fmt.Sprint(cur.Seq)}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	s.online.Store(true)
	defer s.online.Store(false)
	s.Log.Info("sync stream connected", "authority", s.E.Authority, "cursor", cur.Seq)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			// A ping: the stream is alive, and every batch sent on it was
			// applied (a refused one ends the stream), so we are current.
			s.current()
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			switch event {
			case "batch":
				if err := s.Apply(strings.TrimPrefix(line, "data: ")); err != nil {
					return err
				}
				s.current()
			case "snapshot-required":
				s.snapshot.Store(true)
				return errors.New("authority asks for a new snapshot")
			}
		case line == "":
			event = ""
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// Run syncs, then follows the push stream, reconnecting with exponential
// backoff and jitter, until ctx ends. The store keeps deciding throughout.
func (s *Syncer) Run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := s.SyncOnce(ctx)
		if err == nil {
			backoff = time.Second
			err = s.stream(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		wait := backoff/2 + time.Duration(mrand.Int64N(int64(backoff)))
		s.Log.Warn("sync interrupted; deciding from the local store meanwhile", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-s.wake:
			backoff = time.Second
		}
		if backoff < 2*time.Minute {
			backoff *= 2
		}
	}
}

// Relay sends a device's pairing step to the authority on its behalf (for
// devices that cannot speak HTTPS) and returns the authority's JSON answer
// and HTTP status. It fails when the authority cannot be reached: pairing
// needs the uplink.
func (s *Syncer) Relay(ctx context.Context, req cloudsync.PairRelayRequest) (map[string]any, int, error) {
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.E.Authority+cloudsync.PathPairRelay, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	a, err := cloudsync.SignAssertion(s.key, s.E.Gateway, s.E.Authority, time.Now())
	if err != nil {
		return nil, 0, err
	}
	r.Header.Set("Authorization", "EdgeID-GW "+a)
	r.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(r)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return nil, resp.StatusCode, fmt.Errorf("pair relay: %s", resp.Status)
	}
	return m, resp.StatusCode, nil
}

// ReportSeen tells the authority when devices were last connected here (for
// the owners' "My devices" page). Best effort: presence is not security.
func (s *Syncer) ReportSeen(ctx context.Context, seen cloudsync.Seen) error {
	if len(seen) == 0 {
		return nil
	}
	body, _ := json.Marshal(seen)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.E.Authority+cloudsync.PathSeen, bytes.NewReader(body))
	if err != nil {
		return err
	}
	a, err := cloudsync.SignAssertion(s.key, s.E.Gateway, s.E.Authority, time.Now())
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", "EdgeID-GW "+a)
	r.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(r)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("report presence: %s", resp.Status)
	}
	return nil
}
