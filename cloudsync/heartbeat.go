package cloudsync

import (
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/store"
)

// HeartbeatType is the JWS typ of a feed heartbeat. It differs from
// FeedType so that a heartbeat can never be applied as a batch, nor a batch
// counted as a heartbeat.
const HeartbeatType = "edgeid-head+jws"

// DefaultHeartbeatInterval is how often the authority signs a heartbeat on
// each open event stream, unless configured otherwise. Every heartbeat says
// its interval, so gateways need no setting of their own.
const DefaultHeartbeatInterval = 15 * time.Second

// HeartbeatMisses is how many heartbeat intervals a gateway waits without a
// verified signed message before it calls its stream silent and its store
// stale: one lost heartbeat is ordinary network weather, three are not.
const HeartbeatMisses = 3

// Heartbeat is the authority's signed statement "at Time, my log for this
// gateway's epoch reached Head". It is what makes freshness part of the
// signed feed: the unsigned SSE comments and the HTTP status of an answer can
// be produced by anyone holding the TLS certificate (a TLS-terminating load
// balancer), a heartbeat only by the holder of the feed key. A gateway whose
// cursor is behind Head knows deltas exist that it has not been given.
type Heartbeat struct {
	// Gateway and Epoch bind the heartbeat as a batch is bound.
	Gateway string `json:"gw"`
	Epoch   string `json:"epoch"`
	// Head is the authority's last rev, read after Time: every change
	// committed before Time is at or below it.
	Head uint64    `json:"head"`
	Time time.Time `json:"time"`
	// IntervalMS is how often the stream sends one (milliseconds).
	IntervalMS int64 `json:"interval_ms"`
}

// Interval is how often the authority sends heartbeats on the stream.
func (h *Heartbeat) Interval() time.Duration { return time.Duration(h.IntervalMS) * time.Millisecond }

// SignHeartbeat returns the heartbeat as a compact JWS signed with the feed key.
func SignHeartbeat(h *Heartbeat, key jwk.Key) (string, error) { return signFeed(h, HeartbeatType, key) }

// VerifyHeartbeat checks a signed heartbeat with the pinned feed key and
// returns it. What it means for the gateway needs the cursor and the newest
// heartbeat seen (see CheckHeartbeat).
func VerifyHeartbeat(raw string, pinned jwk.Key) (*Heartbeat, error) {
	var h Heartbeat
	if err := verifyFeed(raw, HeartbeatType, pinned, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// CheckHeartbeat decides whether a verified heartbeat may be believed by
// gateway gw whose store stands at cur, given last, the newest heartbeat it
// has accepted (nil if none since it started). A heartbeat older than last,
// or naming a lower head in the same epoch, is a replay: counting it would
// let whoever recorded the feed keep the gateway looking fresh while
// withholding what came after. One from another epoch means the gateway
// needs a snapshot (wrong_epoch), unless it is older than the snapshot the
// store holds (rollback).
func CheckHeartbeat(h *Heartbeat, gw string, cur store.Cursor, last *Heartbeat) error {
	if h.Gateway != gw {
		return &Reject{"wrong_gateway", fmt.Sprintf("heartbeat is for gateway %q, this is %q", h.Gateway, gw)}
	}
	if h.Time.IsZero() || h.IntervalMS <= 0 {
		return &Reject{"malformed", "heartbeat without a time or an interval"}
	}
	if last != nil {
		if h.Time.Before(last.Time) {
			return &Reject{"rollback", fmt.Sprintf("heartbeat of %s is older than one already seen (%s): replayed",
				h.Time.UTC().Format(time.RFC3339Nano), last.Time.UTC().Format(time.RFC3339Nano))}
		}
		if h.Epoch == last.Epoch && h.Head < last.Head {
			return &Reject{"rollback", fmt.Sprintf("heartbeat head %d is below head %d already seen: replayed", h.Head, last.Head)}
		}
	}
	if h.Epoch != cur.Epoch {
		if h.Time.Unix() < cur.SnapshotIssued {
			return &Reject{"rollback", fmt.Sprintf("heartbeat of epoch %q is older than the snapshot applied: replayed", h.Epoch)}
		}
		return &Reject{"wrong_epoch", fmt.Sprintf("heartbeat of epoch %q on a store of epoch %q needs a snapshot first", h.Epoch, cur.Epoch)}
	}
	if h.Head < cur.Seq {
		return &Reject{"rollback", fmt.Sprintf("heartbeat head %d is behind the cursor %d: replayed", h.Head, cur.Seq)}
	}
	return nil
}
