package edge

import (
	"context"
	"time"

	"github.com/edgeid/edgeid/internal/clock"
)

// The share clock. A share's conditions (its daily window, its expiry) are
// judged at the gateway, from its own clock, also while the uplink is down:
// authn.Authenticator reads the clock (Auth.Now, in gateway.time_zone)
// whenever it decides what a requesting party token grants, and this
// goroutine re-checks every principal presenting shares (on every front end,
// through the Enforcer) at each instant one of the store's shares opens,
// closes or expires, so live sessions gain or lose the shared topics then.
// It sleeps until the earliest such instant or a store change to shares.

// clockBox holds the share clock (an interface in an atomic.Pointer).
type clockBox struct{ c clock.Clock }

// shareRetry is how long the share clock waits after failing to read the
// shares before it tries again (it has re-checked their sessions, which a
// broken store ends).
const shareRetry = time.Minute

// SetClock makes c the clock the gateway judges shares by (their daily
// window and expiry): tests set a clock.Fake. It may be called before or
// after Start; the share clock then waits on c (and re-checks the sessions
// presenting shares at once, if it was already running). The authenticator
// reads the same clock for a client certificate's validity; token times
// (exp, nbf, iat) and session ends keep the system clock.
func (g *Gateway) SetClock(c clock.Clock) {
	g.clk.Store(&clockBox{c})
	g.wakeShares()
}

// clock is the share clock.
func (g *Gateway) clock() clock.Clock { return g.clk.Load().c }

// shareNow is the time shares are judged at: the share clock in the
// gateway's time zone (a window's "HH:MM" is read in it).
func (g *Gateway) shareNow() time.Time { return g.clock().Now().In(g.loc) }

// wakeShares tells the share clock the shares or its clock changed.
func (g *Gateway) wakeShares() {
	select {
	case g.sharesChanged <- struct{}{}:
	default:
	}
}

// nextShareChange is the earliest instant after now at which a share in the
// store opens, closes or expires; zero if none will.
func (g *Gateway) nextShareChange(now time.Time) (time.Time, error) {
	grants, err := g.Store.Grants()
	if err != nil {
		return time.Time{}, err
	}
	var next time.Time
	for _, gr := range grants {
		if t := gr.NextChange(now); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next, nil
}

// runShares is the share clock's loop (see above), until ctx ends. last is
// the instant the sessions presenting shares were last brought up to date
// (re-checked, or started); whenever a share's boundary after last has come
// (the wait ran out, or the clock was moved past it), they are re-checked.
// A clock that went back, or a new clock (SetClock), re-checks at once.
func (g *Gateway) runShares(ctx context.Context) {
	box := g.clk.Load()
	last := box.c.Now()
	for {
		var wait <-chan time.Time
		b := g.clk.Load()
		c := b.c
		now := c.Now().In(g.loc)
		if b != box || now.Before(last) {
			box = b
			last = g.recheckShares(c, "the share clock was set")
			continue
		}
		next, err := g.nextShareChange(last.In(g.loc))
		switch {
		case err != nil:
			// Fail closed: the sessions presenting shares are re-checked
			// now (a store that cannot be read ends them), and again later.
			g.log.Error("share clock: reading shares failed; re-checking the sessions that present them", "err", err)
			last = g.recheckShares(c, "the shares could not be read")
			wait = c.After(shareRetry)
		case next.IsZero():
			// No share will open, close or expire: wait for a change.
		case !now.Before(next):
			last = g.recheckShares(c, "a share opens, closes or expires")
			continue
		default:
			wait = c.After(next.Sub(now))
		}
		select {
		case <-ctx.Done():
			return
		case <-g.sharesChanged:
			// Shares or the clock changed: look again. A changed share's
			// sessions were re-checked when it was applied.
		case <-wait:
		}
	}
}

// recheckShares re-checks the sessions presenting shares, on every front
// end, and returns the share clock's time it did so at.
func (g *Gateway) recheckShares(c clock.Clock, why string) time.Time {
	at := c.Now()
	g.log.Info("share clock: re-checking the sessions that present shares", "reason", why, "at", at.In(g.loc).Format(time.RFC3339))
	g.enforce.RecheckShares()
	g.sharesCheckedAt.Store(at.UnixNano())
	return at
}

// SharesCheckedAt is the share clock's time at which the sessions
// presenting shares were last re-checked for a share opening, closing or
// expiring (zero before the first time); for tests and diagnostics.
func (g *Gateway) SharesCheckedAt() time.Time {
	n := g.sharesCheckedAt.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
