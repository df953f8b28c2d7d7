// Package authority is the EdgeID cloud authority: the manufacturer's device
// registry, gateway enrollment, the signed sync feed gateways follow, and
// token issuance. The Authority type does the work; http.go maps it onto
// HTTPS (thin handlers, as smallstep's api/ over its authority).
package authority

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/store"
)

// Config is the authority's configuration.
type Config struct {
	// URL is the authority's public base URL; it is the iss of its tokens.
	URL string
	// StateDir holds its Badger store and TLS material.
	StateDir string
	// TokenAudience is the aud of device tokens (what gateways accept).
	TokenAudience string
	// TokenTTL is the lifetime of tokens it issues.
	TokenTTL time.Duration
	// MaxTokenLifetime is the gateways' auth.max_token_lifetime: how long a
	// device or subject revocation must be kept.
	MaxTokenLifetime time.Duration
	// EnrollCodeTTL is how long a gateway enrollment code stays valid.
	EnrollCodeTTL time.Duration
	// KeyPublishAhead is how long a new token key is published before it signs.
	KeyPublishAhead time.Duration
	// PairingCodeTTL is how long a device's pairing codes live (RFC 8628); 0 means 10 minutes.
	PairingCodeTTL time.Duration
	// PairingPollInterval is the RFC 8628 polling interval a device is
	// told (whole seconds); 0 means 5 seconds.
	PairingPollInterval time.Duration
	// HeartbeatInterval is how often each event stream carries a signed
	// heartbeat (the head of the log); 0 means cloudsync.DefaultHeartbeatInterval.
	// Gateways call their store stale after cloudsync.HeartbeatMisses of them
	// go unheard.
	HeartbeatInterval time.Duration
	// UMATicketTTL is how long a UMA permission ticket lives (0: 5 minutes);
	// one that left a share request waiting lives until the owner decides,
	// and this long after (uma.go).
	UMATicketTTL time.Duration
	// SweepInterval is how often expired refresh tokens, codes, tickets and
	// replay entries are deleted (sweep.go); 0 means 10 minutes.
	SweepInterval time.Duration
}

// Authority holds the registry and the keys.
//
// Any number of Authorities (replicas) may share one Storage: every piece
// of state that decides a request is in it (documents, written by
// conditional commits), and what each keeps in memory is either a copy
// reloaded when the store changes (the token keyring, keys.go) or honestly
// per replica, as its comment says (rate-limit buckets, adminUse, feed).
type Authority struct {
	cfg   Config
	log   *slog.Logger
	Store Storage
	epoch string

	// The token keyring is a document all replicas share (keys.go); this
	// is this replica's copy of it, so that no token needs a store read.
	keyMu       sync.Mutex // guards the copy: held briefly, never across a store call
	keys        keyring
	keysVer     uint64     // the keyring document's version keys was read at
	keysChecked time.Time  // when the version was last compared (before signing, at most once a second)
	tokenKey    jwk.Key    // private, signs device tokens (keys.Current)
	keyLoadMu   sync.Mutex // one reload at a time: a slow read never installs an older copy over a newer one
	rotateMu    sync.Mutex // one rotation or promotion at a time here: fewer conflicts (the keyring's version condition makes it correct)
	feedKey     jwk.Key    // private, signs feed batches

	// DPoP proofs at the token endpoint and for resource registration (RFC
	// 9449), their ids kept in documents (dpopReplay): a proof used at one
	// replica is refused by all.
	dpop *dpop.Verifier

	// revocation is Store.Revocation (a test makes it fail).
	revocation func(kind store.RevocationKind, value string) (store.Revocation, bool, error)

	// adminKeyMu orders this process's changes to admin keys (adminkeys.go)
	// so that they conflict less; the conditional commits are what make
	// them correct between replicas.
	adminKeyMu sync.Mutex

	mu sync.Mutex
	// adminUse is when this replica last wrote each admin key's last use: a
	// throttle of that write, per replica (N replicas write at most N times
	// a minute a key; the time listed is the latest any wrote).
	adminUse map[string]time.Time
	// feed is what each gateway has been sent by this replica (FeedLag): a
	// gateway's stream is held by one replica, so each reports the
	// gateways it serves.
	feed        map[string]feedPos
	ticketSwept time.Time     // when expired UMA permission tickets were last deleted
	notify      chan struct{} // closed and replaced at each applied batch
	done        chan struct{} // closed by Close: ends the event streams and the sweep
	sweepDone   chan struct{} // closed when the sweep goroutine has returned
	closed      sync.Once
}

// Close ends the gateways' event streams (before the HTTP server shuts down,
// which would otherwise wait for them forever) and stops the sweep of
// expired records, waiting for it: the store may be closed after Close.
func (a *Authority) Close() {
	a.closed.Do(func() {
		close(a.done)
		<-a.sweepDone
	})
}

// Done is closed when the authority is closing.
func (a *Authority) Done() <-chan struct{} { return a.done }

// Gateway is an enrolled gateway.
type Gateway struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Key      json.RawMessage `json:"key"`
	Hardware string          `json:"hardware,omitempty"`
	// Site is the site the gateway serves: it is fed that site's records
	// and the global ones (store/sites.go); empty: every record.
	Site     string    `json:"site,omitempty"`
	Enrolled time.Time `json:"enrolled"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

type enrollCode struct {
	Name    string    `json:"name"`
	Site    string    `json:"site,omitempty"`
	Expires time.Time `json:"expires"`
}

const (
	docGateway = "gateway"
	docCode    = "enroll-code"
	docKey     = "key"
	docMeta    = "meta"
)

// New opens (or creates) the authority's state under cfg.StateDir. Several
// Authorities may be made on one shared Storage (replicas); what the first
// start makes (the epoch, the feed and token keys) is created on condition
// that it is absent, so replicas starting at once agree on one of each.
func New(cfg Config, st Storage, log *slog.Logger) (*Authority, error) {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = cloudsync.DefaultHeartbeatInterval
	}
	a := &Authority{cfg: cfg, log: log, Store: st, notify: make(chan struct{}), done: make(chan struct{}),
		revocation: st.Revocation}
	a.dpop = dpop.NewVerifier(dpop.Options{Replay: dpopReplay{a}})
	var meta struct{ Epoch string }
	if err := createDoc(st, docMeta, "epoch", &meta, func() (any, error) {
		return struct{ Epoch string }{randomID(12)}, nil
	}); err != nil {
		return nil, fmt.Errorf("epoch: %w", err)
	}
	a.epoch = meta.Epoch
	var err error
	if err = a.loadKeyring(); err != nil {
		return nil, err
	}
	if a.feedKey, err = a.loadKey("feed"); err != nil {
		return nil, err
	}
	// Every commit, this replica's or another's, may be a rotation or
	// promotion of the token keys (each republishes the issuer, a commit).
	st.Watch(func(store.Applied) {
		if err := a.reloadKeys(); err != nil && !a.closing() {
			a.log.Warn("token keyring not reloaded after a commit; read again before the next signature", "err", err)
			a.keyMu.Lock()
			a.keysChecked = time.Time{}
			a.keyMu.Unlock()
		}
		a.wake()
	})
	// Gateways learn the authority's token keys from the feed like any issuer.
	if err := a.publishIssuer(); err != nil {
		return nil, err
	}
	every := cfg.SweepInterval
	if every <= 0 {
		every = recordSweepEvery
	}
	a.sweepDone = make(chan struct{})
	go a.sweepLoop(every)
	return a, nil
}

// createDoc loads the document kind/id into v, making it with fresh first
// if there is none: on condition that it is still absent, so that of
// several replicas starting at once on a new store one makes it and the
// others load that one.
func createDoc(st Storage, kind, id string, v any, fresh func() (any, error)) error {
	err := st.GetDoc(kind, id, v)
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	nv, err := fresh()
	if err != nil {
		return err
	}
	err = st.CommitDocs(nil, store.DocWrite{Kind: kind, ID: id, Value: nv, ExpectAbsent: true})
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("create %s/%s: %w", kind, id, err)
	}
	// Ours, or the one another replica made first.
	return st.GetDoc(kind, id, v)
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// loadKey returns the named private key, making it on first start (of the
// first replica: createDoc).
func (a *Authority) loadKey(name string) (jwk.Key, error) {
	var raw json.RawMessage
	err := createDoc(a.Store, docKey, name, &raw, func() (any, error) {
		k, err := a.newKey(name)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(k)
		return json.RawMessage(b), err
	})
	if err != nil {
		return nil, fmt.Errorf("%s key: %w", name, err)
	}
	return jwk.ParseKey(raw)
}

// newKey makes a fresh ES256 private key for use name.
func (a *Authority) newKey(name string) (jwk.Key, error) {
	k, err := cloudsync.NewES256Key()
	if err != nil {
		return nil, err
	}
	_ = k.Set(jwk.KeyIDKey, name+"-"+time.Now().UTC().Format("20060102")+"-"+randomID(4))
	_ = k.Set(jwk.KeyUsageKey, "sig")
	a.log.Info("made a new signing key", "use", name, "kid", mustKid(k))
	return k, nil
}

func mustKid(k jwk.Key) string { kid, _ := k.KeyID(); return kid }

// JWKS is the public set of token-signing keys (current, next, previous).
func (a *Authority) JWKS() (json.RawMessage, error) {
	set, err := a.ownKeySet()
	if err != nil {
		return nil, err
	}
	return json.Marshal(set)
}

// FeedPublicKey is the key gateways pin at enrollment.
func (a *Authority) FeedPublicKey() (json.RawMessage, error) {
	pub, err := a.feedKey.PublicKey()
	if err != nil {
		return nil, err
	}
	return json.Marshal(pub)
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// Apply validates and commits a change, logs it for the feed and wakes the
// gateways' event streams. who is recorded in the change log with the
// batch (store.LogEntry.By) and in the authority's log: "admin:<key name>"
// for the admin API, "owner <user>" for an owner's pages, "system" for the
// authority itself, "gateway:<id>" or "device:<id>" for their requests.
func (a *Authority) Apply(b *store.Batch, who string) (uint64, error) {
	a.completeRevocations(b.Revocations)
	rev, err := a.Store.ApplyLoggedBy(b, who)
	if errors.Is(err, store.ErrConflict) {
		// Retried from a fresh read or answered by the caller (cas.go).
		a.log.Debug("change not applied: a record it read changed meanwhile", "by", who, "err", err)
		return 0, err
	}
	if err != nil {
		a.log.Warn("change refused", "by", who, "records", b.Size(), "err", err)
		return 0, err
	}
	a.log.Info("change applied", "by", who, "rev", rev, "classes", len(b.Classes), "devices", len(b.Devices),
		"revocations", len(b.Revocations), "deleted_devices", len(b.Delete.Devices))
	return rev, nil
}

// applyFunc is Apply of the batch build makes from the records as they
// stand in the committing transaction (Storage.ApplyLoggedFunc): for the
// changes that must not lose to concurrent writers of the same record.
func (a *Authority) applyFunc(who string, build func(r store.RecordReader) (*store.Batch, error)) (uint64, error) {
	var b *store.Batch
	rev, err := a.Store.ApplyLoggedFunc(who, func(r store.RecordReader) (*store.Batch, error) {
		var err error
		if b, err = build(r); err == nil {
			a.completeRevocations(b.Revocations)
		}
		return b, err
	})
	if err != nil {
		a.log.Warn("change refused", "by", who, "err", err)
		return 0, err
	}
	a.log.Info("change applied", "by", who, "rev", rev, "devices", len(b.Devices), "revocations", len(b.Revocations))
	return rev, nil
}

// deviceIn reads device id in a committing transaction.
func deviceIn(r store.RecordReader, id string) (store.Device, error) {
	d, ok, err := r.Device(id)
	if err == nil && !ok {
		err = fmt.Errorf("load device %q: %w", id, store.ErrNotFound)
	}
	return d, err
}

func (a *Authority) completeRevocations(rs []store.Revocation) {
	now := time.Now()
	for i := range rs {
		if rs[i].RevokedAt.IsZero() {
			rs[i].RevokedAt = now
		}
		if rs[i].ExpiresAt.IsZero() {
			rs[i].ExpiresAt = rs[i].RevokedAt.Add(a.cfg.MaxTokenLifetime + time.Minute)
		}
	}
}

func (a *Authority) wake() {
	a.mu.Lock()
	close(a.notify)
	a.notify = make(chan struct{})
	a.mu.Unlock()
}

// Changed returns a channel closed at the next applied batch.
func (a *Authority) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.notify
}

// RevokeDevice marks a device revoked and revokes every token it holds.
// The status is set on the device as it is when the change commits
// (conditional commit, retried from a fresh read on a conflict), so no
// concurrent change of the device is overwritten, and none made from a
// read before the revocation can undo it.
func (a *Authority) RevokeDevice(id, reason, who string) (uint64, error) {
	// Read in the committing transaction: no concurrent change of the
	// device (a rename hammered by its owner) can make it lose.
	return a.applyFunc(who, func(r store.RecordReader) (*store.Batch, error) {
		d, err := deviceIn(r, id)
		if err != nil {
			return nil, err
		}
		d.Status = store.DeviceRevoked
		return &store.Batch{Devices: []store.Device{d},
			Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: id, Reason: reason}}}, nil
	})
}

// CheckSite validates a site name ("" is none).
func CheckSite(site string) error {
	if site == "" {
		return nil
	}
	if site == store.AllSites || len(site) > 128 || strings.ContainsAny(site, "/+#\x00 \t\r\n") {
		return fmt.Errorf("site %q: give a name of at most 128 bytes without spaces, slashes, + or #, and not %q", site, store.AllSites)
	}
	return nil
}

// MoveDevice puts a device at another site ("" for every site), on the
// device as it is when the change commits. The gateways of the site it
// leaves delete it, which ends its sessions there; those of the new site
// receive it, with its owner and shares.
func (a *Authority) MoveDevice(id, site, who string) (uint64, error) {
	if err := CheckSite(site); err != nil {
		return 0, err
	}
	rev, err := a.applyFunc(who, func(r store.RecordReader) (*store.Batch, error) {
		d, err := deviceIn(r, id)
		if err != nil {
			return nil, err
		}
		d.Site = site
		return &store.Batch{Devices: []store.Device{d}}, nil
	})
	if err == nil {
		a.log.Info("device moved", "device", id, "site", site, "by", who)
	}
	return rev, err
}

// ErrDeviceRevoked refuses to suspend a revoked device: suspending would
// make it a device that activation alone brings back. Activate it first
// if that is what is meant.
var ErrDeviceRevoked = errors.New("the device is revoked; suspending it would undo the revocation (activate it first if that is meant)")

// SetDeviceStatus suspends or re-activates a device, on the device as it is
// when the change commits (conditional commit, retried from a fresh read on
// a conflict). Suspending a revoked device is ErrDeviceRevoked; activating
// one is the operator's explicit way back.
func (a *Authority) SetDeviceStatus(id string, st store.DeviceStatus, who string) (uint64, error) {
	return a.applyFunc(who, func(r store.RecordReader) (*store.Batch, error) {
		d, err := deviceIn(r, id)
		if err != nil {
			return nil, err
		}
		if d.Status == store.DeviceRevoked && st == store.DeviceSuspended {
			return nil, ErrDeviceRevoked
		}
		d.Status = st
		return &store.Batch{Devices: []store.Device{d}}, nil
	})
}

// AddGateway makes a one-time enrollment code for a gateway called name,
// of no particular site (it is fed every record).
func (a *Authority) AddGateway(name, who string) (string, time.Time, error) {
	return a.AddSiteGateway(name, "", who)
}

// AddSiteGateway makes a one-time enrollment code for a gateway called
// name that serves site: it will hold that site's records only.
func (a *Authority) AddSiteGateway(name, site, who string) (string, time.Time, error) {
	if name == "" || strings.ContainsAny(name, "/ \t") {
		return "", time.Time{}, fmt.Errorf("gateway name %q: give a name without spaces or slashes", name)
	}
	if err := CheckSite(site); err != nil {
		return "", time.Time{}, err
	}
	code := strings.ToUpper(hex.EncodeToString(randomBytes(10)))
	exp := time.Now().Add(a.cfg.EnrollCodeTTL)
	if err := a.Store.PutDoc(docCode, codeID(code), enrollCode{Name: name, Site: site, Expires: exp}); err != nil {
		return "", time.Time{}, err
	}
	a.log.Info("gateway enrollment code made", "by", who, "gateway", name, "site", site, "expires", exp)
	return code, exp, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// codeID stores codes by hash, so a copy of the store does not hold usable codes.
func codeID(code string) string {
	h := sha256.Sum256([]byte(strings.ToUpper(strings.TrimSpace(code))))
	return hex.EncodeToString(h[:])
}

// ErrEnroll is returned for every bad enrollment, whatever the cause, so a
// guesser learns nothing; the log has the reason.
var ErrEnroll = errors.New("enrollment refused: the code is unknown, used or expired")

// Enroll exchanges a one-time code and the gateway's public key for its identity.
func (a *Authority) Enroll(req cloudsync.EnrollRequest) (cloudsync.EnrollResponse, error) {
	k, err := jwk.ParseKey(req.Key)
	if err != nil {
		return cloudsync.EnrollResponse{}, fmt.Errorf("key: not a JWK: %w", err)
	}
	if priv, _ := jwk.IsPrivateKey(k); priv {
		return cloudsync.EnrollResponse{}, errors.New("key: send the public key only")
	}
	if alg, ok := k.Algorithm(); !ok || alg.String() != "ES256" {
		return cloudsync.EnrollResponse{}, errors.New("key: want an ES256 key with alg set")
	}
	var c enrollCode
	if err := a.Store.TakeDoc(docCode, codeID(req.Code), &c); err != nil {
		a.log.Warn("enrollment refused", "reason", "unknown or used code")
		return cloudsync.EnrollResponse{}, ErrEnroll
	}
	if time.Now().After(c.Expires) {
		a.log.Warn("enrollment refused", "reason", "expired code", "gateway", c.Name)
		return cloudsync.EnrollResponse{}, ErrEnroll
	}
	gw := Gateway{ID: c.Name, Name: c.Name, Key: req.Key, Hardware: req.Hardware, Site: c.Site, Enrolled: time.Now()}
	if err := a.Store.PutDoc(docGateway, gw.ID, gw); err != nil {
		return cloudsync.EnrollResponse{}, err
	}
	feed, err := a.FeedPublicKey()
	if err != nil {
		return cloudsync.EnrollResponse{}, err
	}
	a.log.Info("gateway enrolled", "gateway", gw.ID, "hardware", gw.Hardware, "site", gw.Site)
	return cloudsync.EnrollResponse{Gateway: gw.ID, FeedKey: feed, Audience: a.cfg.TokenAudience}, nil
}

// Gateway returns an enrolled gateway.
func (a *Authority) Gateway(id string) (Gateway, error) {
	var g Gateway
	err := a.Store.GetDoc(docGateway, id, &g)
	return g, err
}

// Gateways lists enrolled gateways.
func (a *Authority) Gateways() ([]Gateway, error) { return listDocs[Gateway](a.Store, docGateway, nil) }

// listDocs decodes the documents of kind that keep accepts (nil: all).
func listDocs[T any](st Storage, kind string, keep func(T) bool) ([]T, error) {
	var out []T
	err := st.ListDocs(kind, func(_ string, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		if keep == nil || keep(v) {
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// RemoveGateway forgets a gateway: it gets nothing more.
func (a *Authority) RemoveGateway(id, who string) error {
	if _, err := a.Gateway(id); err != nil {
		return err
	}
	a.log.Info("gateway removed", "by", who, "gateway", id)
	if err := a.Store.DeleteDoc(docGateway, id); err != nil {
		return err
	}
	a.wake() // open streams re-check their gateway now
	return nil
}

// siteOf is the site gateway gw serves ("" for none).
func (a *Authority) siteOf(gw string) (string, error) {
	g, err := a.Gateway(gw)
	if err != nil {
		return "", fmt.Errorf("gateway %q: %w", gw, err)
	}
	return g.Site, nil
}

// Snapshot is a signed snapshot batch for gateway gw: its site's records.
func (a *Authority) Snapshot(gw string) (string, error) {
	site, err := a.siteOf(gw)
	if err != nil {
		return "", err
	}
	b, rev, err := a.Store.SiteSnapshot(site)
	if err != nil {
		return "", err
	}
	return cloudsync.Sign(&cloudsync.Batch{Gateway: gw, Epoch: a.epoch, From: 0, To: rev, Snapshot: true,
		IssuedAt: time.Now().Unix(), Changes: *b}, a.feedKey)
}

// Changes returns signed deltas after from, or NeedSnapshot, with a signed
// heartbeat naming the head of the log as it stood before the log was read:
// the deltas reach at least that head unless the page is full, so a gateway
// left behind it by an answer knows deltas were withheld.
func (a *Authority) Changes(gw, epoch string, from uint64, max int) (cloudsync.ChangesResponse, error) {
	return a.changes(gw, nil, epoch, from, max)
}

// changes is Changes; site, when not nil, is the gateway's site as its
// caller has just read it (an event stream reads its gateway at each wake),
// so the gateway is not read again per stream per commit.
func (a *Authority) changes(gw string, site *string, epoch string, from uint64, max int) (cloudsync.ChangesResponse, error) {
	if epoch != a.epoch {
		return cloudsync.ChangesResponse{NeedSnapshot: true}, nil
	}
	// The time is taken before the head is read, so every change committed
	// before the heartbeat's time is at or below its head.
	at := time.Now()
	head, err := a.Store.Rev()
	if err != nil {
		return cloudsync.ChangesResponse{}, err
	}
	if from > head {
		// The gateway is ahead of us: we were restored from a backup. Only a
		// snapshot can make it whole again.
		a.log.Warn("gateway cursor is ahead of the log; sending a snapshot", "gateway", gw, "cursor", from, "head", head)
		return cloudsync.ChangesResponse{NeedSnapshot: true}, nil
	}
	if site == nil {
		s, err := a.siteOf(gw)
		if err != nil {
			return cloudsync.ChangesResponse{}, err
		}
		site = &s
	}
	entries, err := a.Store.LogSince(from, max)
	if errors.Is(err, store.ErrLogTrimmed) {
		return cloudsync.ChangesResponse{NeedSnapshot: true}, nil
	}
	if err != nil {
		return cloudsync.ChangesResponse{}, err
	}
	out := cloudsync.ChangesResponse{Batches: []string{}}
	for _, e := range entries {
		// Every revision is sent, empty when nothing of it reaches the
		// site: the gateway's arithmetic on From and To stays whole.
		s, err := cloudsync.Sign(&cloudsync.Batch{Gateway: gw, Epoch: a.epoch, From: e.Rev - 1, To: e.Rev,
			IssuedAt: time.Now().Unix(), Changes: e.ForSite(*site)}, a.feedKey)
		if err != nil {
			return out, err
		}
		out.Batches = append(out.Batches, s)
	}
	if out.Heartbeat, err = a.heartbeat(gw, head, at); err != nil {
		return out, err
	}
	a.sent(gw, from+uint64(len(out.Batches)))
	return out, nil
}

// feedPos is where a gateway stands in the feed, as far as the authority
// knows: the revision it has been sent up to, and when.
type feedPos struct {
	rev uint64
	at  time.Time
}

// sent records that gateway gw has been sent the log up to rev.
func (a *Authority) sent(gw string, rev uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.feed == nil {
		a.feed = map[string]feedPos{}
	}
	a.feed[gw] = feedPos{rev: rev, at: time.Now()}
}

// FeedLag is how many changes the gateway furthest behind has not been
// sent, over the gateways that asked for changes or held a stream within
// the last window (those that did not are offline: the gateways listing
// says since when); 0 with none. Per replica: it covers the gateways this
// replica served within the window (a gateway's stream is held by one),
// so the fleet's lag is the largest any replica reports.
func (a *Authority) FeedLag(window time.Duration) (uint64, error) {
	head, err := a.Store.Rev()
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var lag uint64
	for gw, p := range a.feed {
		if time.Since(p.at) > window {
			delete(a.feed, gw)
			continue
		}
		if p.rev < head && head-p.rev > lag {
			lag = head - p.rev
		}
	}
	return lag, nil
}

// heartbeat signs "at time at, the log reached head" for gateway gw.
func (a *Authority) heartbeat(gw string, head uint64, at time.Time) (string, error) {
	s, err := cloudsync.SignHeartbeat(&cloudsync.Heartbeat{Gateway: gw, Epoch: a.epoch, Head: head, Time: at,
		IntervalMS: a.cfg.HeartbeatInterval.Milliseconds()}, a.feedKey)
	if err != nil {
		return "", fmt.Errorf("sign heartbeat for gateway %q: %w", gw, err)
	}
	return s, nil
}

// HeartbeatInterval is how often event streams carry a signed heartbeat.
func (a *Authority) HeartbeatInterval() time.Duration { return a.cfg.HeartbeatInterval }

// Epoch names the authority's change log.
func (a *Authority) Epoch() string { return a.epoch }

// URL is the authority's issuer URL.
func (a *Authority) URL() string { return a.cfg.URL }
