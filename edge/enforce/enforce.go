// Package enforce is the gateway's one enforcement point. Every front end
// (MQTT, CoAP, the HTTP API's event streams, the cloud bridge) holds principals —
// live holders of a device credential — and answers the same two-method
// interface; this package turns each applied store change into "end" or
// "re-check" (which ends or narrows) for exactly the principals the change
// names, on every front end at once. Caches (verified tokens, issuer keys,
// class limits, PSK identities) are the gateway's to invalidate first.
package enforce

import (
	"log/slog"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/store"
)

// Principal is what a change is judged against: one live session's device,
// the token it holds (nil for a certificate or pre-shared key session) and
// when its credential was proven.
type Principal struct {
	Device string
	Claims *authn.Claims
	Since  time.Time
}

// Selector names principals through a front end's indexes: by device, by
// token subject or by token id (at most one set). The zero Selector names
// every principal.
type Selector struct {
	Device, Subject, JTI string
}

// All is the Selector of every principal.
var All = Selector{}

// A Match decides, for a principal a Selector named, whether a change
// concerns it; nil concerns them all.
type Match func(Principal) bool

// FrontEnd is a place principals live.
type FrontEnd interface {
	// End ends the principals sel names that match accepts, with reason
	// (logged, never a secret), and returns how many it ended. It never
	// blocks on a client.
	End(sel Selector, match Match, reason string) int
	// Recheck re-evaluates the principals sel names that match accepts
	// against the store, as a new connect would be: each is ended, narrowed
	// to its new permissions, or left as it is. Store errors end (fail closed).
	Recheck(sel Selector, match Match)
}

// Enforcer holds the front ends.
type Enforcer struct {
	fronts []FrontEnd
	log    *slog.Logger
}

// New returns an Enforcer over the given front ends.
func New(log *slog.Logger, fronts ...FrontEnd) *Enforcer {
	return &Enforcer{fronts: fronts, log: log}
}

// Add adds a front end (before the first change is applied).
func (e *Enforcer) Add(f FrontEnd) { e.fronts = append(e.fronts, f) }

// Kick ends the principals sel names on every front end.
func (e *Enforcer) Kick(sel Selector, reason string) int {
	n := 0
	for _, f := range e.fronts {
		n += f.End(sel, nil, reason)
	}
	return n
}

// Applied turns one committed batch into decisions:
//   - a revocation ends the principals it covers (Covers), found through the
//     index its kind names;
//   - a changed or deleted device re-checks that device's principals;
//   - a changed user (an owner disabled) re-checks the principals acting for it;
//   - a changed class re-checks every principal (a device may have moved
//     class since it connected); so does a changed issuer for token
//     principals, and a replaced store for all;
//   - a changed or deleted share (grant) re-checks the principals whose
//     requesting party token presents it; so does a changed device for the
//     tokens presenting its resources, and a changed user for every token
//     presenting shares.
//
// It returns how many principals revocations ended.
func (e *Enforcer) Applied(a store.Applied) int {
	b := a.Batch
	ended := 0
	for _, r := range b.Revocations {
		sel := selectorOf(r)
		if sel == All {
			continue
		}
		for _, f := range e.fronts {
			ended += f.End(sel, func(p Principal) bool { return Covers(r, p) }, "revoked: "+string(r.Kind))
		}
	}
	switch {
	case a.Replaced || len(b.Classes) > 0 || len(b.Delete.Classes) > 0:
		e.recheck(All, nil)
		return ended
	case len(b.Issuers) > 0 || len(b.Delete.Issuers) > 0:
		e.recheck(All, func(p Principal) bool { return p.Claims != nil })
	}
	for _, d := range b.Devices {
		e.recheck(Selector{Device: d.ID}, nil)
	}
	for _, id := range b.Delete.Devices {
		e.recheck(Selector{Device: id}, nil)
	}
	for _, u := range b.Users {
		e.recheck(Selector{Subject: u.ID}, nil)
	}
	// Shares: what an RPT grants is read from the store at each decision,
	// so the requesting parties' sessions are re-checked when a share they
	// present changes or goes, when a device whose resources they present
	// changes (unpaired, moved, disabled), and when any user changes (the
	// sharing owner may have been disabled; the grantee's own sessions were
	// re-checked by subject above).
	if len(b.Users) > 0 {
		e.RecheckShares()
		return ended
	}
	shares := map[string]bool{}
	for _, g := range b.Grants {
		shares[g.ID] = true
	}
	for _, id := range b.Delete.Grants {
		shares[id] = true
	}
	devices := map[string]bool{}
	for _, d := range b.Devices {
		devices[d.ID] = true
	}
	for _, id := range b.Delete.Devices {
		devices[id] = true
	}
	if len(shares) > 0 || len(devices) > 0 {
		e.recheck(All, func(p Principal) bool {
			if p.Claims == nil {
				return false
			}
			for _, perm := range p.Claims.Permissions {
				dev, _, _ := store.ParseResourceID(perm.ResourceID)
				if shares[perm.Share] || devices[dev] {
					return true
				}
			}
			return false
		})
	}
	return ended
}

// PresentsShares matches the principals whose token is a requesting party
// token (it has a permissions claim, even an empty one).
func PresentsShares(p Principal) bool { return p.Claims != nil && p.Claims.Permissions != nil }

// RecheckShares re-checks every principal that presents shares, on every
// front end: the gateway's share clock calls it when a share's daily window
// opens or closes or a share expires, so live sessions gain or lose the
// shared topics at the boundary (held subscriptions stay, delivering
// nothing outside the window).
func (e *Enforcer) RecheckShares() { e.recheck(All, PresentsShares) }

func (e *Enforcer) recheck(sel Selector, m Match) {
	for _, f := range e.fronts {
		f.Recheck(sel, m)
	}
}

func selectorOf(r store.Revocation) Selector {
	switch r.Kind {
	case store.RevokeToken:
		return Selector{JTI: r.Value}
	case store.RevokeDevice:
		return Selector{Device: r.Value}
	case store.RevokeSubject:
		return Selector{Subject: r.Value}
	}
	return All
}

// Covers reports whether revocation r ends principal p. A token revocation
// covers the token with that id; a device or subject revocation covers
// tokens of that device or subject issued at or before revoked_at. A device
// revocation also covers the device's certificate and pre-shared key
// principals proven before revoked_at, so a lost device is cut off whatever
// its credential, while a snapshot replaying an old revocation ends nothing
// opened since (a later connect is the device record's to decide).
func Covers(r store.Revocation, p Principal) bool {
	if p.Claims != nil {
		return authn.RevocationCovers(r, p.Claims)
	}
	return r.Kind == store.RevokeDevice && r.Value == p.Device && !r.RevokedAt.IsZero() && !p.Since.After(r.RevokedAt)
}
