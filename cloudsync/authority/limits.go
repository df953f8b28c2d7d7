package authority

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeid/edgeid/store"
)

// The authority's limits on what one client may ask of it:
//
//   - Failed logins lock out, counted in store documents (a restart keeps a
//     lock): per (account, client address), per account and per address, each
//     with its own threshold (Limits). The right password for an account that
//     is not locked logs in from an address where others failed, unless that
//     address itself sprayed many failures (LoginPerAddress, much higher).
//   - Registrations per client address, token requests and device
//     authorization requests per client address: token buckets
//     (golang.org/x/time/rate) in memory. They are there against floods, not
//     guessing (that is the lockout's and the pairing code's job), so losing
//     them at a restart does no harm, and they are per replica on purpose:
//     each replica limits what it serves itself, so behind a load balancer
//     over N replicas a client gets up to N times each rate. Sharing them
//     would cost a store write per request, for a bound that is about
//     load, which each replica's own bucket bounds.
//
// A refused request is answered 429 Too Many Requests (RFC 6585) with
// Retry-After in seconds: a page for the pages, an OAuth error for the OAuth
// endpoints (see limitOAuth for which).
//
// A client address is the IP of the connection (the authority serves TLS
// itself; there is no proxy to believe), an IPv6 address by its /64: one
// host's subnet is one client.

// Limits are the authority's limits (DefaultLimits: what the authority
// uses unless Handler.SetLimits says otherwise).
type Limits struct {
	// LoginPerAccountAddress failed logins of one account from one address
	// lock that account at that address.
	LoginPerAccountAddress int
	// LoginPerAccount failed logins of one account from anywhere lock the
	// account everywhere (guessing from many addresses).
	LoginPerAccount int
	// LoginPerAddress failed logins from one address, whatever the accounts,
	// lock the address (spraying a password over many accounts).
	LoginPerAddress int
	// LoginWindow: failures count from the first one, for this long.
	LoginWindow time.Duration
	// LoginLock is how long the first lock of a counter lasts; each further
	// lock while the counter remembers the last one lasts twice as long, up
	// to LoginMaxLock. A counter forgets a lock LoginMaxLock after it ends.
	LoginLock, LoginMaxLock time.Duration

	// Register is the rate of registrations (each POST /register) per address.
	Register Rate
	// Token is the rate of requests to the token endpoint per address.
	Token Rate
	// DeviceAuthorization is the rate of device authorization requests
	// (RFC 8628 §3.1) per address.
	DeviceAuthorization Rate
}

// Rate is a token bucket: Burst requests at once, then one every Every.
type Rate struct {
	Every time.Duration
	Burst int
}

// DefaultLimits are the limits unless configured otherwise:
//
//   - logins: 5 failures of an account from one address, 20 of an account,
//     100 from an address, each within 15 minutes; locks of 15 minutes,
//     doubling (30 min, 1 h, … up to 24 h) while the last lock is remembered
//     (a day after it ends);
//   - registrations: 10 at once per address, then one every 6 minutes (10 an hour);
//   - token requests: 100 at once per address, then 20 a second (a site's
//     devices behind one NAT calling home together);
//   - device authorization: 20 at once per address, then one every 6 s.
func DefaultLimits() Limits {
	return Limits{
		LoginPerAccountAddress: 5, LoginPerAccount: 20, LoginPerAddress: 100,
		LoginWindow: 15 * time.Minute, LoginLock: 15 * time.Minute, LoginMaxLock: 24 * time.Hour,
		Register:            Rate{Every: 6 * time.Minute, Burst: 10},
		Token:               Rate{Every: 50 * time.Millisecond, Burst: 100},
		DeviceAuthorization: Rate{Every: 6 * time.Second, Burst: 20},
	}
}

// limits is a Handler's: its Limits and the buckets of each client.
type limits struct {
	mu  sync.Mutex
	cfg Limits

	register, token, deviceAuthorization *addrLimiter

	// stripes make each login counter's updates single-writer in this
	// process, only to spare them conflicts with each other: the
	// conditional commit is what makes them correct (see loginCounters).
	stripes [64]sync.Mutex
}

func newLimits(l Limits) *limits {
	x := &limits{}
	x.set(l)
	return x
}

func (x *limits) set(l Limits) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.cfg = l
	x.register = newAddrLimiter(l.Register)
	x.token = newAddrLimiter(l.Token)
	x.deviceAuthorization = newAddrLimiter(l.DeviceAuthorization)
}

func (x *limits) get() Limits {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.cfg
}

func (x *limits) bucket(pick func(*limits) *addrLimiter) *addrLimiter {
	x.mu.Lock()
	defer x.mu.Unlock()
	return pick(x)
}

// SetLimits replaces the Handler's limits (and forgets every client's
// buckets; the login counters are in the store and stay). Call it before
// serving.
func (h *Handler) SetLimits(l Limits) { h.limits.set(l) }

// clientAddr is the client address of r: its IP, an IPv6 one by its /64.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// addrLimiter is a token bucket per client address, in this replica's
// memory: per replica (see the top of this file for why).
type addrLimiter struct {
	mu   sync.Mutex
	rate Rate
	by   map[string]*rate.Limiter
	// full is when the map was last pruned of full buckets.
	pruned time.Time
}

// maxClients bounds an addrLimiter's map: past it, buckets that refilled
// (their clients idle) are dropped; if none did, the newcomers share one.
const maxClients = 100000

func newAddrLimiter(r Rate) *addrLimiter {
	return &addrLimiter{rate: r, by: map[string]*rate.Limiter{}}
}

func (l *addrLimiter) limit() rate.Limit {
	if l.rate.Every <= 0 {
		return rate.Inf
	}
	return rate.Every(l.rate.Every)
}

// allow takes one request of addr at now; when it is refused, wait is how
// long until the next would be allowed.
func (l *addrLimiter) allow(addr string, now time.Time) (ok bool, wait time.Duration) {
	if l.rate.Every <= 0 {
		return true, 0
	}
	l.mu.Lock()
	b := l.by[addr]
	if b == nil {
		if len(l.by) >= maxClients {
			l.prune(now)
		}
		if len(l.by) >= maxClients {
			addr = "\x00overflow"
			b = l.by[addr]
		}
		if b == nil {
			b = rate.NewLimiter(l.limit(), l.rate.Burst)
			l.by[addr] = b
		}
	}
	l.mu.Unlock()
	res := b.ReserveN(now, 1)
	if !res.OK() { // Burst 0: nothing is allowed
		return false, l.rate.Every
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// prune drops the buckets that are full again (their clients idle long
// enough); l.mu is held.
func (l *addrLimiter) prune(now time.Time) {
	if now.Sub(l.pruned) < time.Second {
		return
	}
	l.pruned = now
	for k, b := range l.by {
		if b.TokensAt(now) >= float64(l.rate.Burst) {
			delete(l.by, k)
		}
	}
}

// retryAfter sets Retry-After to wait in whole seconds (at least 1).
func retryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(wait)))
}

func retrySeconds(wait time.Duration) int {
	s := int(math.Ceil(wait.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// limitOAuth wraps an OAuth endpoint (the token endpoint, the device
// authorization endpoint) with its per-address rate. A refused request is
// 429 with Retry-After and an RFC 6749 §5.2 error object:
//
//   - "temporarily_unavailable" for every request but a device-code poll.
//     RFC 6749 defines it (§4.1.2.1, in its error registry) for "unable to
//     handle the request due to a temporary overloading", which is what a
//     limit is; §5.2's own list has no such code, and each of its codes
//     would say something false: invalid_request (the request is
//     malformed: a client would "fix" it, or give up, instead of waiting),
//     invalid_client, invalid_grant… (the credentials or grant are bad: a
//     client would discard them). "slow_down" is defined only for a
//     device-code poll (RFC 8628 §3.5) and means "add 5 s to your polling
//     interval", meaningless at the device authorization endpoint or for
//     client_credentials and refresh_token.
//   - "slow_down" for a device-code poll (grant_type
//     urn:ietf:params:oauth:grant-type:device_code): there it is exactly
//     right — keep polling, 5 s slower — and a stock device client
//     (x/oauth2, Authlib) backs off instead of abandoning the pairing as it
//     would on any other error.
//
// The machine-readable part for every client is the status and
// Retry-After.
func (h *Handler) limitOAuth(pick func(*limits) *addrLimiter, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok, wait := h.limits.bucket(pick).allow(clientAddr(r), time.Now())
		if ok {
			next(w, r)
			return
		}
		kind, desc := "temporarily_unavailable", "too many requests from your address"
		if r.URL.Path == "/oauth/token" && r.ParseForm() == nil && r.PostForm.Get("grant_type") == DeviceCodeGrant {
			kind = "slow_down"
		}
		h.A.log.Warn("oauth request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "rate limit", "retry_after_s", retrySeconds(wait))
		retryAfter(w, wait)
		fail(w, http.StatusTooManyRequests, kind, desc+"; retry after "+strconv.Itoa(retrySeconds(wait))+" s")
	}
}

// The buckets, for limits.bucket.
func registerBucket(x *limits) *addrLimiter            { return x.register }
func tokenBucket(x *limits) *addrLimiter               { return x.token }
func deviceAuthorizationBucket(x *limits) *addrLimiter { return x.deviceAuthorization }

// --- Failed logins ---

// docLoginFailures are the login counters: one per (account, address), per
// account and per address, under the hash of its key.
const docLoginFailures = "login-failures"

// loginCounter is one login counter's document.
type loginCounter struct {
	// Key is what it counts: "account-address:alice|192.0.2.1",
	// "account:alice" or "address:192.0.2.1".
	Key string `json:"key"`
	// Failures since First (within LoginWindow).
	Failures int       `json:"failures"`
	First    time.Time `json:"first,omitzero"`
	// Locks is how many locks in a row it has had; the next lasts
	// LoginLock << Locks.
	Locks       int       `json:"locks,omitempty"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// Expires: after it the document means nothing (deleted on read and by
	// the sweep).
	Expires time.Time `json:"expires"`
}

// loginKeys are the three counters of a login of user from addr, with
// their thresholds.
func loginKeys(l Limits, user, addr string) []loginKey {
	return []loginKey{
		{"account-address:" + user + "|" + addr, l.LoginPerAccountAddress},
		{"account:" + user, l.LoginPerAccount},
		{"address:" + addr, l.LoginPerAddress},
	}
}

type loginKey struct {
	key string
	max int
}

// loginCounters keep the login counters as store documents.
//
// Each update is a conditional commit of one document: read with its
// version, written on condition that it is still that version (or still
// absent), retried from a fresh read on a conflict. Two failures at the
// same moment both count, at one replica or at two sharing a store. The
// striped mutex makes each counter single-writer within this process,
// which only spares this process's requests conflicts with each other.
type loginCounters struct {
	x     *limits
	store Storage
}

func (c loginCounters) stripe(id string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return &c.x.stripes[h.Sum32()%uint32(len(c.x.stripes))]
}

// load reads the counter id and its version (0: none); an expired one
// reads as none (its version kept, for writing over it).
func (c loginCounters) load(id string, now time.Time) (loginCounter, uint64, error) {
	var lc loginCounter
	ver, err := c.store.GetDocVersion(docLoginFailures, id, &lc)
	if errors.Is(err, store.ErrNotFound) {
		return loginCounter{}, 0, nil
	}
	if err != nil {
		return loginCounter{}, 0, fmt.Errorf("read a login counter: %w", err)
	}
	if !now.Before(lc.Expires) {
		return loginCounter{}, ver, nil
	}
	return lc, ver, nil
}

// locked reports whether a login of user from addr is locked out now, and
// until when (the latest of its locked counters). A store error locks
// (fails closed). An expired counter is deleted, on condition that it is
// still the version read (a failure counted meanwhile stays).
func (c loginCounters) locked(user, addr string, now time.Time) (bool, time.Time, error) {
	var until time.Time
	for _, k := range loginKeys(c.x.get(), user, addr) {
		id := hashCode(k.key)
		lc, ver, err := c.load(id, now)
		if err != nil {
			return true, now.Add(time.Minute), err
		}
		if ver != 0 && lc.Expires.IsZero() { // stored, and expired: load read it as none
			_ = c.store.CommitDocs(nil, store.DocWrite{Kind: docLoginFailures, ID: id, Delete: true, ExpectVersion: ver})
		}
		if now.Before(lc.LockedUntil) && lc.LockedUntil.After(until) {
			until = lc.LockedUntil
		}
	}
	return !until.IsZero(), until, nil
}

// fail counts a failed login of user from addr in each of its counters.
func (c loginCounters) fail(user, addr string, now time.Time) error {
	l := c.x.get()
	var errs []error
	for _, k := range loginKeys(l, user, addr) {
		errs = append(errs, c.count(l, k, now))
	}
	return errors.Join(errs...)
}

func (c loginCounters) count(l Limits, k loginKey, now time.Time) error {
	id := hashCode(k.key)
	mu := c.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	err := retry(func() error {
		lc, ver, err := c.load(id, now)
		if err != nil {
			return err
		}
		lc.Key = k.key
		if lc.First.IsZero() || now.Sub(lc.First) >= l.LoginWindow {
			lc.Failures, lc.First = 0, now
		}
		lc.Failures++
		lc.Expires = lc.First.Add(l.LoginWindow)
		if k.max > 0 && lc.Failures >= k.max {
			lock := l.LoginLock << min(lc.Locks, 20)
			if lock > l.LoginMaxLock || lock <= 0 {
				lock = l.LoginMaxLock
			}
			lc.LockedUntil = now.Add(lock)
			lc.Locks++
			lc.Failures, lc.First = 0, time.Time{}
		}
		if !lc.LockedUntil.IsZero() {
			lc.Expires = maxTime(lc.Expires, lc.LockedUntil.Add(l.LoginMaxLock))
		}
		return c.store.CommitDocs(nil, store.DocWrite{Kind: docLoginFailures, ID: id, Value: lc, ExpectVersion: ver, ExpectAbsent: ver == 0})
	})
	if err != nil {
		return fmt.Errorf("count a failed login: %w", err)
	}
	return nil
}

// succeeded forgets the failures of user at addr (not those of the
// account elsewhere, nor of the address with other accounts).
func (c loginCounters) succeeded(user, addr string) error {
	k := loginKeys(c.x.get(), user, addr)[0]
	id := hashCode(k.key)
	mu := c.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	var lc loginCounter
	if err := c.store.GetDoc(docLoginFailures, id, &lc); errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return c.store.DeleteDoc(docLoginFailures, id)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
