package store

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgeid/edgeid/policy"
)

// Sharing (UMA 2.0): a class names groups of its topics; each paired
// device's groups are its owner's resources, shared with scopes sub and pub.

// Share scopes: what a requesting party may do with a shared topic group.
const (
	ScopeSub = "sub" // subscribe (read)
	ScopePub = "pub" // publish (write)
)

// ResourceGroup is a named group of a class's topics an owner can share.
type ResourceGroup struct {
	// Name is what owners and tokens call it: "telemetry", "commands".
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Filter is a topic filter template ({device}, {owner}) of the group.
	Filter string `json:"filter"`
	// Scopes are the scopes it may be shared with (sub, pub); empty: both.
	Scopes []string `json:"scopes,omitempty"`
}

// Allows reports whether the group may be shared with scope.
func (g ResourceGroup) Allows(scope string) bool {
	if scope != ScopeSub && scope != ScopePub {
		return false
	}
	return len(g.Scopes) == 0 || slices.Contains(g.Scopes, scope)
}

// Group returns the class's resource group called name.
func (c DeviceClass) Group(name string) (ResourceGroup, bool) {
	for _, g := range c.Resources {
		if g.Name == name {
			return g, true
		}
	}
	return ResourceGroup{}, false
}

// ResourceID names one device's topic group: "<device>/<group>" (neither
// may contain a slash).
func ResourceID(device, group string) string { return device + "/" + group }

// ParseResourceID splits a ResourceID; ok is false if it is not one.
func ParseResourceID(id string) (device, group string, ok bool) {
	device, group, ok = strings.Cut(id, "/")
	if !ok || device == "" || group == "" || strings.Contains(group, "/") {
		return "", "", false
	}
	return device, group, true
}

// ScopeActions maps share scopes to the topic actions they allow.
func ScopeActions(scopes []string) policy.Action {
	var a policy.Action
	for _, s := range scopes {
		switch s {
		case ScopeSub:
			a |= policy.Subscribe
		case ScopePub:
			a |= policy.Publish
		}
	}
	return a
}

// GranteeKind says what a Grant's grantee names.
type GranteeKind string

// Grantee kinds.
const (
	GranteeUser   GranteeKind = "user"
	GranteeClient GranteeKind = "client"
)

// SharedResource is one shared topic group of one device, with its scopes.
type SharedResource struct {
	Device string   `json:"device"`
	Group  string   `json:"group"`
	Scopes []string `json:"scopes"`
}

// ID is the resource's ResourceID.
func (r SharedResource) ID() string { return ResourceID(r.Device, r.Group) }

// Window is a daily time window, "HH:MM" to "HH:MM" in the gateway's time
// zone; To before From spans midnight. From is in the window, To is not.
type Window struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// parseClock reads "HH:MM" as minutes after midnight.
func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil || len(s) != 5 {
		return 0, fmt.Errorf("%q is not a time of day as HH:MM (00:00 to 23:59)", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// Check validates the window.
func (w Window) Check() error {
	from, err := parseClock(w.From)
	if err != nil {
		return fmt.Errorf("from: %w", err)
	}
	to, err := parseClock(w.To)
	if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	if from == to {
		return fmt.Errorf("from and to are both %s: an empty window; remove the window to share at all hours", w.From)
	}
	return nil
}

// Contains reports whether t (read in its own location) is in the window.
// An invalid window contains nothing.
func (w Window) Contains(t time.Time) bool {
	from, err1 := parseClock(w.From)
	to, err2 := parseClock(w.To)
	if err1 != nil || err2 != nil || from == to {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	if from < to {
		return m >= from && m < to
	}
	return m >= from || m < to
}

// Next is the first instant after t at which the window opens or closes
// (in t's location); the zero time for an invalid window.
func (w Window) Next(t time.Time) time.Time {
	from, err1 := parseClock(w.From)
	to, err2 := parseClock(w.To)
	if err1 != nil || err2 != nil || from == to {
		return time.Time{}
	}
	var best time.Time
	for _, m := range []int{from, to} {
		y, mo, d := t.Date()
		for day := 0; day <= 2; day++ {
			at := time.Date(y, mo, d+day, m/60, m%60, 0, 0, t.Location())
			if at.After(t) {
				if best.IsZero() || at.Before(best) {
					best = at
				}
				break
			}
		}
	}
	return best
}

// Active reports whether the grant applies at t: not expired and, with a
// window, inside it.
func (g Grant) Active(t time.Time) bool {
	if !g.Expires.IsZero() && !t.Before(g.Expires) {
		return false
	}
	return g.Window == nil || g.Window.Contains(t)
}

// NextChange is the first instant after t at which Active may change: the
// window's next boundary or the expiry; zero if never.
func (g Grant) NextChange(t time.Time) time.Time {
	var next time.Time
	if g.Window != nil {
		next = g.Window.Next(t)
	}
	if !g.Expires.IsZero() && g.Expires.After(t) && (next.IsZero() || g.Expires.Before(next)) {
		next = g.Expires
	}
	return next
}

// checkGrant validates one grant of a batch.
func checkGrant(p *problems, at string, g Grant) {
	for field, v := range map[string]string{"id": g.ID, "owner": g.Owner, "device": g.Device, "grantee": g.Grantee} {
		if err := validID(v); err != nil {
			p.add("%s.%s %q %v", at, field, v, err)
		}
	}
	if g.GranteeKind != GranteeUser && g.GranteeKind != GranteeClient {
		p.add("%s.grantee_kind %q is not one of user, client", at, g.GranteeKind)
	}
	if g.Grantee == g.Owner && g.GranteeKind == GranteeUser {
		p.add("%s.grantee %q is the owner; an owner needs no share of their own devices", at, g.Grantee)
	}
	if len(g.Resources) == 0 {
		p.add("%s.resources is empty; share at least one topic group", at)
	}
	for j, r := range g.Resources {
		rat := fmt.Sprintf("%s.resources[%d]", at, j)
		for field, v := range map[string]string{"device": r.Device, "group": r.Group} {
			if err := validID(v); err != nil {
				p.add("%s.%s %q %v", rat, field, v, err)
			}
		}
		if len(r.Scopes) == 0 {
			p.add("%s.scopes is empty; give sub, pub or both", rat)
		}
		for _, s := range r.Scopes {
			if s != ScopeSub && s != ScopePub {
				p.add("%s.scopes: %q is not one of sub, pub", rat, s)
			}
		}
	}
	if g.Window != nil {
		if err := g.Window.Check(); err != nil {
			p.add("%s.window.%v", at, err)
		}
	}
}

// checkGroups validates a class's resource groups.
func checkGroups(p *problems, at string, groups []ResourceGroup) {
	seen := map[string]bool{}
	for j, g := range groups {
		gat := fmt.Sprintf("%s.resources[%d]", at, j)
		if err := validID(g.Name); err != nil {
			p.add("%s.name %q %v", gat, g.Name, err)
		}
		if seen[g.Name] {
			p.add("%s.name %q appears twice in the class", gat, g.Name)
		}
		seen[g.Name] = true
		if err := policy.CheckTemplate([]policy.Rule{{Filter: g.Filter, Actions: policy.Subscribe}}); err != nil {
			p.add("%s.filter: %v", gat, err)
		}
		for _, s := range g.Scopes {
			if s != ScopeSub && s != ScopePub {
				p.add("%s.scopes: %q is not one of sub, pub", gat, s)
			}
		}
	}
}
