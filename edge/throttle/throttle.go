// Package throttle slows, then refuses, devices, users and services that
// send more than their rate: messages per second and bytes per second, each
// with a burst, per device and per subject (the token's sub: the owner or the
// service acting through it). Limiters live in a bounded LRU, so a flood of
// distinct identities cannot grow memory without bound.
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
	msgs, bytes *rate.Limiter
	mu          sync.Mutex
	refused     int // consecutive refusals
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

// Enabled reports whether any limit is set.
func (t *Throttle) Enabled() bool {
	return t != nil && (t.limits.Messages.Rate > 0 || t.limits.Bytes.Rate > 0)
}

func limiter(l Limit) *rate.Limiter {
	if l.Rate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(l.Rate), max(l.Burst, 1))
}

func (t *Throttle) bucket(key string) *bucket {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.by.Get(key)
	if !ok {
		b = &bucket{msgs: limiter(t.limits.Messages), bytes: limiter(t.limits.Bytes)}
		t.by.Add(key, b)
	}
	return b
}

// Check decides one message of size bytes from key at now.
func (t *Throttle) Check(key string, size int, now time.Time) Verdict {
	if !t.Enabled() {
		return Allow
	}
	b := t.bucket(key)
	b.mu.Lock()
	defer b.mu.Unlock()
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

// Len is the number of keys tracked.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.by.Len()
}
