package edge

import (
	"context"
	"time"

	"github.com/edgeid/edgeid/hw"
)

// runBoard drives the status LED from the gateway's state and turns pair
// button presses into a pairing window (short) or a status report (long).
func (g *Gateway) runBoard(ctx context.Context, b *hw.Board) {
	go b.RunLED(ctx)
	go b.RunButton(ctx, func() {
		until := g.OpenPairing(g.cfg.Pairing.Window)
		g.log.Info("pair button: pairing window open", "until", until.Format(time.RFC3339))
	}, func() {
		g.log.Info("pair button: status", "status", g.StatusLine(), "pattern", g.ledPattern().String())
	})
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		b.SetPattern(g.ledPattern())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ledPattern is what the LED shows: pairing while the window is open, offline
// while an enrolled gateway cannot reach its authority or must refuse tokens,
// online otherwise.
func (g *Gateway) ledPattern() hw.Pattern {
	if g.PairingOpen() {
		return hw.Pairing
	}
	if g.gate() != nil || (g.Syncer != nil && !g.Syncer.Online()) {
		return hw.Offline
	}
	return hw.Online
}

// OpenPairing opens the pairing window for d and returns when it closes.
func (g *Gateway) OpenPairing(d time.Duration) time.Time {
	until := time.Now().Add(d)
	g.pairUntil.Store(until.UnixNano())
	return until
}

// PairingOpen reports whether the pairing window is open.
func (g *Gateway) PairingOpen() bool { return time.Now().UnixNano() < g.pairUntil.Load() }

// PairingUntil is when the pairing window closes (zero if it is closed).
func (g *Gateway) PairingUntil() time.Time {
	if !g.PairingOpen() {
		return time.Time{}
	}
	return time.Unix(0, g.pairUntil.Load())
}
