package authn

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// ReasonShareRevoked: an RPT presents a permission its share no longer
// grants (revoked, expired, changed, or its device moved on).
const ReasonShareRevoked Reason = "share_revoked"

// Shares is what a requesting party token's permissions grant now, each as
// the share it names stands in the store: shared are the topics allowed,
// held the topics of shares outside their daily window (kept subscribed,
// nothing delivered). An RPT is good only while every permission it
// presents still stands: one whose share is gone, expired, made to someone
// else, no longer holding the resource or scope, or whose device has
// changed hands or class refuses the token (ReasonShareRevoked), so a
// session holding it is ended and the client asks for a new RPT. A store
// error is an error (the caller fails closed).
func (a *Authenticator) Shares(c *Claims) (shared, held *policy.Set, err error) {
	var on, off []policy.Rule
	for _, p := range c.Permissions {
		rules, active, err := a.sharedRules(c, p)
		if err != nil {
			return nil, nil, err
		}
		if active {
			on = append(on, rules...)
		} else {
			off = append(off, rules...)
		}
	}
	if shared, err = policy.Compile(on); err != nil {
		return nil, nil, fail(ReasonStore, "shared topics: %v", err)
	}
	if held, err = policy.Compile(off); err != nil {
		return nil, nil, fail(ReasonStore, "shared topics: %v", err)
	}
	return shared, held, nil
}

// sharedRules are the topic rules permission p of token c grants, and
// whether its share is active now (false: inside its life but outside its
// window).
func (a *Authenticator) sharedRules(c *Claims, p Permission) ([]policy.Rule, bool, error) {
	gone := func(why string) ([]policy.Rule, bool, error) {
		return nil, false, fail(ReasonShareRevoked, "permission %s of share %q: %s", p.ResourceID, p.Share, why)
	}
	g, err := a.Store.Grant(p.Share)
	if errors.Is(err, store.ErrNotFound) {
		return gone("the share was revoked")
	}
	if err != nil {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	switch g.GranteeKind {
	case store.GranteeUser:
		if c.Subject != g.Grantee {
			return gone("the share is not made to the token's sub")
		}
	case store.GranteeClient:
		if c.ClientID != g.Grantee || c.Subject != c.ClientID {
			return gone("the share is made to another client")
		}
	default:
		return gone("the share names no grantee kind")
	}
	now := a.now()
	if !g.Expires.IsZero() && !now.Before(g.Expires) {
		return gone("the share expired at " + g.Expires.UTC().Format(time.RFC3339))
	}
	var res *store.SharedResource
	for i := range g.Resources {
		if g.Resources[i].ID() == p.ResourceID {
			res = &g.Resources[i]
			break
		}
	}
	if res == nil {
		return gone("the share no longer holds the resource")
	}
	for _, s := range p.Scopes {
		if !slices.Contains(res.Scopes, s) {
			return gone("the share no longer grants scope " + s)
		}
	}
	d, err := a.Store.Device(res.Device)
	if errors.Is(err, store.ErrNotFound) {
		return gone("the device is gone")
	}
	if err != nil {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	if d.Status != store.DeviceActive || d.Owner != g.Owner {
		return gone("the device is " + string(d.Status) + " or no longer the share owner's")
	}
	if u, err := a.Store.User(g.Owner); err == nil && u.Status != store.UserActive {
		return gone("the owner's account is " + string(u.Status))
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	class, err := a.Store.Class(d.Class)
	if errors.Is(err, store.ErrNotFound) {
		return gone("the device's class is gone")
	}
	if err != nil {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	group, ok := class.Group(res.Group)
	if !ok {
		return gone("the device's class no longer names the group")
	}
	var allowed policy.Action
	for _, s := range p.Scopes {
		if !group.Allows(s) {
			return gone("the group can no longer be shared with scope " + s)
		}
		allowed |= store.ScopeActions([]string{s})
	}
	rules, err := policy.Expand([]policy.Rule{{Filter: group.Filter, Actions: allowed}}, policy.Vars{Device: d.ID, Owner: d.Owner, Client: d.ID})
	if err != nil {
		return nil, false, fail(ReasonStore, "class %q resource %q: %v", class.Name, group.Name, err)
	}
	return rules, g.Window == nil || g.Window.Contains(now), nil
}

// ShareOf names, for a log line, the shares token c presents.
func ShareOf(c *Claims) string {
	if c == nil || len(c.Permissions) == 0 {
		return ""
	}
	s := ""
	for i, p := range c.Permissions {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%s:%s", p.Share, p.ResourceID)
	}
	return s
}
