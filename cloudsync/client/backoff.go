package client

import (
	"errors"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxBackoff caps the wait between tries when the authority does not say
// how long to wait. It bounds how long a gateway stays behind an authority
// that has come back: before, the wait doubled to minutes and a gateway
// returned a minute after its authority.
const MaxBackoff = 30 * time.Second

// DefaultMaxRetryAfter caps an authority's Retry-After. It is honoured
// (the authority knows when it will be back, and a fleet should not hammer
// it), but not past this, so a wrong or hostile header cannot park a
// gateway for hours; sync.max_staleness covers the rest.
const DefaultMaxRetryAfter = time.Minute

// DefaultBackoff is the wait before retry number attempt: 1 s doubling to
// MaxBackoff, with equal jitter (half fixed, half random) so a fleet that
// lost its authority together does not come back all at once.
func DefaultBackoff(attempt int) time.Duration {
	d := MaxBackoff
	if attempt >= 0 && attempt < 5 {
		d = min(time.Second<<attempt, MaxBackoff)
	}
	half := d / 2
	return half + mrand.N(half+1)
}

// ParseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): a number of
// seconds or an HTTP date. 0 means none, unreadable, or already past.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		// delay-seconds: digits only. More than a day is as good as forever
		// here (the cap is far below), and must not overflow.
		const day = uint64(24 * time.Hour / time.Second)
		n, err := strconv.ParseUint(v, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) || (err == nil && n > day):
			return 24 * time.Hour
		case err != nil:
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// retryWait is how long Run waits after err, the attempt-th failure in a
// row: the authority's Retry-After if it sent one (capped at MaxRetryAfter,
// plus up to a tenth as jitter), else the backoff.
func (s *Syncer) retryWait(err error, attempt int) time.Duration {
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		limit := s.MaxRetryAfter
		if limit <= 0 {
			limit = DefaultMaxRetryAfter
		}
		d := min(se.RetryAfter, limit)
		return d + mrand.N(d/10+1)
	}
	backoff := s.Backoff
	if backoff == nil {
		backoff = DefaultBackoff
	}
	return backoff(attempt)
}
