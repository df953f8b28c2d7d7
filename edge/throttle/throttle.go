// Package throttle slows, then refuses, devices, users and services that
// send more than their rate: messages per second and bytes per second, each
// with a burst, per device, per subject (the token's sub: the owner or the
// service acting through it) and per device class. A throttle has default
// limits, and a key may be checked under its own (a class record's). Limiters
// live in a bounded LRU, so a flood of distinct identities cannot grow memory
// without bound.
package throttle

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Limit is a rate with a burst; a zero Rate means unlimited.
type Limit struct {
	Rate  float64 // per second
	Burst int
}

// Limits are the rates applied to one kind of key.
type Limits struct {
	Messages Limit
	Bytes    Limit
}

// Enabled reports whether any rate is set.
func (l Limits) Enabled() bool { return l.Messages.Rate > 0 || l.Bytes.Rate > 0 }

// Verdict is what to do with one message.
type Verdict int

const (
	// Allow the message.
	Allow Verdict = iota
	// Refuse the message (PUBACK 0x97 for QoS > 0, dropped for QoS 0).
	Refuse
	// Disconnect the sender: it kept sending while refused (0x96).
	Disconnect
)

// bucket is the limiter state of one key.
type bucket struct {
	mu          sync.Mutex
	limits      Limits // what msgs and bytes were last set to
	msgs, bytes *rate.Limiter
	refused     int // consecutive refusals
}

// follow moves the bucket to new limits at now. A limiter that stays keeps
// its tokens (capped at the new burst by rate.Limiter on its next use), so
// changing a class's limits neither hands every device a fresh burst nor
// empties it.
func (b *bucket) follow(l Limits, now time.Time) {
	if l == b.limits {
		return
	}
	b.msgs = adjust(b.msgs, b.limits.Messages, l.Messages, now)
	b.bytes = adjust(b.bytes, b.limits.Bytes, l.Bytes, now)
	b.limits = l
}

func adjust(lim *rate.Limiter, old, l Limit, now time.Time) *rate.Limiter {
	switch {
	case l.Rate <= 0:
		return nil
	case lim == nil:
		return limiter(l)
	}
	if l.Rate != old.Rate {
		lim.SetLimitAt(now, rate.Limit(l.Rate))
	}
	if b := max(l.Burst, 1); b != lim.Burst() {
		lim.SetBurstAt(now, b)
	}
	return lim
}

// Throttle holds the limiters for one kind of key (devices, or subjects).
type Throttle struct {
	limits Limits
	// Persist is how many refusals in a row turn into a disconnect.
	Persist int
	mu      sync.Mutex
	by      *lru.Cache[string, *bucket]
	// Refused and Disconnected count verdicts, for metrics.
	Refused, Disconnected uint64
}

// New returns a throttle for at most maxKeys keys (least recently used are
// forgotten first; a forgotten key starts again with a full burst).
func New(l Limits, persist, maxKeys int) *Throttle {
	c, _ := lru.New[string, *bucket](maxKeys)
	return &Throttle{limits: l, Persist: persist, by: c}
}

// Enabled reports whether any default limit is set.
func (t *Throttle) Enabled() bool {
	return t != nil && t.limits.Enabled()
}

// Limits are the default limits, those Check applies.
func (t *Throttle) Limits() Limits {
	if t == nil {
		return Limits{}
	}
	return t.limits
}

func limiter(l Limit) *rate.Limiter {
	if l.Rate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(l.Rate), max(l.Burst, 1))
}

func (t *Throttle) bucket(key string, l Limits) *bucket {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.by.Get(key)
	if !ok {
		b = &bucket{limits: l, msgs: limiter(l.Messages), bytes: limiter(l.Bytes)}
		t.by.Add(key, b)
	}
	return b
}

// Check decides one message of size bytes from key at now under the default
// limits.
func (t *Throttle) Check(key string, size int, now time.Time) Verdict {
	if t == nil {
		return Allow
	}
	return t.CheckLimits(key, t.limits, size, now)
}

// CheckLimits decides one message of size bytes from key at now under l
// instead of the defaults (l zero: unlimited). The key's bucket follows l when
// it differs from the last call's, keeping its tokens rather than starting
// again.
func (t *Throttle) CheckLimits(key string, l Limits, size int, now time.Time) Verdict {
	if t == nil || !l.Enabled() {
		return Allow
	}
	b := t.bucket(key, l)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.follow(l, now)
	ok := b.msgs == nil || b.msgs.AllowN(now, 1)
	if ok && b.bytes != nil {
		// A message larger than the burst could never pass; let it take the
		// whole burst instead of refusing it forever.
		n := min(size, b.bytes.Burst())
		ok = b.bytes.AllowN(now, n)
	}
	if ok {
		b.refused = 0
		return Allow
	}
	b.refused++
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.Persist > 0 && b.refused >= t.Persist {
		b.refused = 0
		t.Disconnected++
		return Disconnect
	}
	t.Refused++
	return Refuse
}

// Stats are the verdicts counted so far: refusals, and disconnects.
func (t *Throttle) Stats() (refused, disconnected uint64) {
	if t == nil {
		return 0, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.Refused, t.Disconnected
}

// Len is the number of keys tracked.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.by.Len()
}
