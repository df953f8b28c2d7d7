// Package broker runs the MQTT side of the gateway on mochi-mqtt: hooks that
// authenticate every CONNECT, authorize every SUBSCRIBE, PUBLISH and delivery,
// track live sessions, and end them when their credential stops being valid.
package broker

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/policy"
)

// Session is one authenticated MQTT connection.
type Session struct {
	// recheck serializes re-evaluations of the session against the store
	// and the share clock, reads and install together: two that overlapped
	// (a store change's and the share clock's, say) could install the
	// older one's permission last, and a share's topic outside its window
	// was delivered again.
	recheck     sync.Mutex
	ClientID    string
	Device      string
	Owner       string
	Method      authn.Method
	Issuer      string
	Subject     string
	JTI         string
	IssuedAt    time.Time
	CertSHA256  string
	CertIssuer  string
	CertSerial  string
	Remote      string
	Protocol    byte
	ConnectedAt time.Time
	// Expires is when the credential expires; the session is cut then
	// (Broker.End is what cuts it).
	Expires time.Time

	perms  atomic.Pointer[policy.Perms]
	class  atomic.Pointer[string] // the device's class now (rate limits follow it)
	claims *authn.Claims
	cl     *mqtt.Client
	timer  *time.Timer
	ended  atomic.Bool
	will   bool // connected with a Will
	reauth atomic.Pointer[reauthState]
	// memoRead and memoWrite are the session's last ACL decision for a
	// delivery (or subscription) and for a publish; see aclMemo.
	memoRead, memoWrite atomic.Pointer[aclMemo]
	// suback is what the SUBACK being written says of refused filters
	// (a UMA ticket, a share outside its hours); see uma.go.
	suback atomic.Pointer[subackNote]

	// parked is set once the connection is gone but its persistent session
	// (clean_start=0, session expiry > 0) is kept: messages are queued for
	// it under its last permissions. queued and queuedBytes count what is
	// held for it while parked (the offline queue's bounds).
	parked      atomic.Bool
	queued      atomic.Int64
	queuedBytes atomic.Int64
}

// Offline reports whether the session's device is away and its persistent
// session kept (messages are queued for it).
func (s *Session) Offline() bool { return s.parked.Load() }

// Queued is how many messages are held for an offline session.
func (s *Session) Queued() int64 { return s.queued.Load() }

// Class is the device's current class.
func (s *Session) Class() string {
	if c := s.class.Load(); c != nil {
		return *c
	}
	return ""
}

// Perms returns the session's current permissions.
func (s *Session) Perms() policy.Perms { return *s.perms.Load() }

// SetPerms replaces the session's permissions (after a class or scope change).
func (s *Session) SetPerms(p policy.Perms) { s.perms.Store(&p) }

// Claims are the token's claims, nil for certificate sessions.
func (s *Session) Claims() *authn.Claims { return s.claims }

// Client is the mochi client of the session.
func (s *Session) Client() *mqtt.Client { return s.cl }

// aclMemo is one ACL decision and the permissions it was made under.
// Deliveries to a subscriber and a device's publishes repeat the same topic,
// and matching it against the grants again was a tenth of the broker's CPU
// under load. A permission change stores a new *policy.Perms (SetPerms), so a
// memo made under the old one never answers for the new; the memo holds the
// pointer, so it cannot be freed and reused while the memo lives.
type aclMemo struct {
	perms *policy.Perms
	topic string
	ok    bool
}

// aclMemoMaxTopic bounds what a memo keeps: a device choosing 64 KB topic
// names must not make every session hold two of them.
const aclMemoMaxTopic = 256

// Sessions is the registry of live sessions, keyed by connection (not client
// id, so a session taken over by a reconnect is never confused with the new one),
// with indexes for kicks by device, subject and token.
type Sessions struct {
	mu sync.RWMutex
	// byClient (*mqtt.Client -> *Session) is read on every message, by
	// every core: a sync.Map's reads take no lock, where a read lock's
	// counter was a cache line the cores fought over (3 % of the broker's
	// CPU under load). It is written with mu held, like the indexes.
	byClient  sync.Map
	byDevice  map[string]sessionSet
	bySubject map[string]sessionSet
	byJTI     map[string]sessionSet
	count     atomic.Int64 // live (connected) sessions
	parkedN   atomic.Int64 // offline sessions kept for their device
	// left records when a device's last session ended, for "last seen".
	left map[string]time.Time
}

// NewSessions returns an empty registry.
func NewSessions() *Sessions {
	return &Sessions{
		byDevice:  map[string]sessionSet{},
		bySubject: map[string]sessionSet{},
		byJTI:     map[string]sessionSet{},
		left:      map[string]time.Time{},
	}
}

// sessionSet is the sessions under one index key. It is almost always one
// session, kept without a map until a second comes: a map per key and index
// cost some 300 bytes per session, a tenth of an idle session's memory.
type sessionSet struct {
	one  *Session
	more map[*Session]struct{} // when there are two or more
}

// each calls f for every session of the set until f returns false.
func (set sessionSet) each(f func(*Session) bool) {
	if set.more == nil {
		if set.one != nil {
			f(set.one)
		}
		return
	}
	for s := range set.more {
		if !f(s) {
			return
		}
	}
}

func (set sessionSet) len() int {
	if set.more != nil {
		return len(set.more)
	}
	if set.one != nil {
		return 1
	}
	return 0
}

func addIdx(m map[string]sessionSet, k string, s *Session) {
	if k == "" {
		return
	}
	set := m[k]
	switch {
	case set.more != nil:
		set.more[s] = struct{}{}
	case set.one == nil || set.one == s:
		set.one = s
	default:
		set.more = map[*Session]struct{}{set.one: {}, s: {}}
		set.one = nil
	}
	m[k] = set
}

func delIdx(m map[string]sessionSet, k string, s *Session) {
	set, ok := m[k]
	if !ok {
		return
	}
	if set.more == nil {
		if set.one == s {
			delete(m, k)
		}
		return
	}
	delete(set.more, s)
	if len(set.more) == 0 {
		delete(m, k)
	}
}

func (r *Sessions) add(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byClient.Store(s.cl, s)
	addIdx(r.byDevice, s.Device, s)
	addIdx(r.bySubject, s.Subject, s)
	addIdx(r.byJTI, s.JTI, s)
	r.count.Add(1)
}

// replace swaps old for nw (same connection, new credential) in every
// index; false if old is no longer the connection's session.
func (r *Sessions) replace(old, nw *Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client(old.cl) != old {
		return false
	}
	delIdx(r.byDevice, old.Device, old)
	delIdx(r.bySubject, old.Subject, old)
	delIdx(r.byJTI, old.JTI, old)
	r.byClient.Store(nw.cl, nw)
	addIdx(r.byDevice, nw.Device, nw)
	addIdx(r.bySubject, nw.Subject, nw)
	addIdx(r.byJTI, nw.JTI, nw)
	return true
}

func (r *Sessions) remove(cl *mqtt.Client) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.client(cl)
	if s == nil {
		return nil
	}
	r.byClient.Delete(cl)
	delIdx(r.byDevice, s.Device, s)
	if s.parked.Load() {
		r.parkedN.Add(-1)
	} else {
		r.count.Add(-1)
		if !r.online(s.Device) {
			r.left[s.Device] = time.Now()
		}
	}
	delIdx(r.bySubject, s.Subject, s)
	delIdx(r.byJTI, s.JTI, s)
	return s
}

// park keeps a disconnected session in the registry as offline; false if
// it is no longer registered.
func (r *Sessions) park(s *Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client(s.cl) != s || s.ended.Load() || !s.parked.CompareAndSwap(false, true) {
		return false
	}
	r.count.Add(-1)
	r.parkedN.Add(1)
	if !r.online(s.Device) {
		r.left[s.Device] = time.Now()
	}
	return true
}

// online reports whether device has a connected session; r.mu held.
func (r *Sessions) online(device string) bool {
	online := false
	r.byDevice[device].each(func(o *Session) bool {
		online = !o.parked.Load()
		return !online
	})
	return online
}

// Offline is the number of offline sessions kept.
func (r *Sessions) Offline() int { return int(r.parkedN.Load()) }

// get is on the per-message path: a lock-free lookup, no allocation.
func (r *Sessions) get(cl *mqtt.Client) *Session { return r.client(cl) }

func (r *Sessions) client(cl *mqtt.Client) *Session {
	if v, ok := r.byClient.Load(cl); ok {
		return v.(*Session)
	}
	return nil
}

// Len is the number of live (connected) sessions.
func (r *Sessions) Len() int { return int(r.count.Load()) }

func collect(set sessionSet) []*Session {
	out := make([]*Session, 0, set.len())
	set.each(func(s *Session) bool {
		out = append(out, s)
		return true
	})
	return out
}

// ByDevice returns the sessions of a device, offline ones included.
func (r *Sessions) ByDevice(id string) []*Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return collect(r.byDevice[id])
}

// BySubject returns the live sessions whose token acts for subject.
func (r *Sessions) BySubject(sub string) []*Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return collect(r.bySubject[sub])
}

// ByJTI returns the live sessions using the token with this jti.
func (r *Sessions) ByJTI(jti string) []*Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return collect(r.byJTI[jti])
}

// All returns every session, offline ones included, ordered by client id.
func (r *Sessions) All() []*Session {
	r.mu.RLock()
	out := make([]*Session, 0, r.count.Load()+r.parkedN.Load())
	r.byClient.Range(func(_, v any) bool {
		out = append(out, v.(*Session))
		return true
	})
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// Seen is when each device was last connected: now for connected devices,
// the end of their last session for devices that left since the last call
// (those are then forgotten, so each is reported once).
func (r *Sessions) Seen(now time.Time) map[string]SeenAt {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]SeenAt{}
	for d, t := range r.left {
		out[d] = SeenAt{At: t}
	}
	r.left = map[string]time.Time{}
	for d := range r.byDevice {
		if r.online(d) {
			out[d] = SeenAt{At: now, Online: true}
		}
	}
	return out
}

// SeenAt is a device's last presence at this gateway.
type SeenAt struct {
	At     time.Time `json:"at"`
	Online bool      `json:"online"`
}
