package authn

import (
	"errors"
	"fmt"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Shares is what a requesting party token's permissions grant now, each as
// the share it names stands in the store: shared are the topics allowed,
// held the topics of shares outside their daily window (kept subscribed,
// nothing delivered). A permission whose share is gone, expired, for
// someone else, or whose device has changed hands or class grants nothing;
// a store error is an error (the caller fails closed).
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
// window). No rules for a permission that grants nothing.
func (a *Authenticator) sharedRules(c *Claims, p Permission) ([]policy.Rule, bool, error) {
	g, err := a.Store.Grant(p.Share)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	switch g.GranteeKind {
	case store.GranteeUser:
		if c.Subject != g.Grantee {
			return nil, false, nil
		}
	case store.GranteeClient:
		if c.ClientID != g.Grantee || c.Subject != c.ClientID {
			return nil, false, nil
		}
	default:
		return nil, false, nil
	}
	now := a.now()
	if !g.Expires.IsZero() && !now.Before(g.Expires) {
		return nil, false, nil
	}
	var res *store.SharedResource
	for i := range g.Resources {
		if g.Resources[i].ID() == p.ResourceID {
			res = &g.Resources[i]
			break
		}
	}
	if res == nil {
		return nil, false, nil
	}
	// The token's scopes, as far as the share still grants them.
	var scopes []string
	for _, s := range p.Scopes {
		for _, t := range res.Scopes {
			if s == t {
				scopes = append(scopes, s)
			}
		}
	}
	actions := store.ScopeActions(scopes)
	if actions == 0 {
		return nil, false, nil
	}
	d, err := a.Store.Device(res.Device)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	if d.Status != store.DeviceActive || d.Owner != g.Owner {
		return nil, false, nil
	}
	if u, err := a.Store.User(g.Owner); err == nil && u.Status != store.UserActive {
		return nil, false, nil
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	class, err := a.Store.Class(d.Class)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fail(ReasonStore, "%v", err)
	}
	group, ok := class.Group(res.Group)
	if !ok {
		return nil, false, nil
	}
	var allowed policy.Action
	for _, s := range scopes {
		if group.Allows(s) {
			allowed |= store.ScopeActions([]string{s})
		}
	}
	if allowed == 0 {
		return nil, false, nil
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
