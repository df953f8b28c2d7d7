package authority

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// Sharing (UMA 2.0): an owner's resources are their paired devices' topic
// groups, named by each device's class. A share (store.Grant) gives some of
// them, with scopes and conditions, to a registered user, a household member
// or a registered client; it is a synced record, so every gateway enforces
// it, and its deletion, on its own. A requesting party who asks for what no
// share covers leaves a request the owner approves or denies.

// Resource is one of an owner's shareable resources: a device's topic group.
type Resource struct {
	ID     string
	Owner  string
	Device store.Device
	Group  store.ResourceGroup
}

// ErrNoResource is returned for a resource id that names no paired
// device's topic group.
var ErrNoResource = errors.New("no such resource: give <device>/<group> of a paired device and a group its class names")

// Resource returns the resource id names.
func (a *Authority) Resource(id string) (Resource, error) {
	dev, group, ok := store.ParseResourceID(id)
	if !ok {
		return Resource{}, ErrNoResource
	}
	d, err := a.Store.Device(dev)
	if errors.Is(err, store.ErrNotFound) {
		return Resource{}, ErrNoResource
	}
	if err != nil {
		return Resource{}, fmt.Errorf("load device %q: %w", dev, err)
	}
	if d.Owner == "" {
		return Resource{}, ErrNoResource
	}
	c, err := a.Store.Class(d.Class)
	if err != nil {
		return Resource{}, fmt.Errorf("load class %q: %w", d.Class, err)
	}
	g, ok := c.Group(group)
	if !ok {
		return Resource{}, ErrNoResource
	}
	return Resource{ID: id, Owner: d.Owner, Device: withoutSecrets(d), Group: g}, nil
}

// ResourcesOf lists an owner's resources, device by device.
func (a *Authority) ResourcesOf(owner string) ([]Resource, error) {
	ids, err := a.Store.DevicesOfOwner(owner)
	if err != nil {
		return nil, fmt.Errorf("list devices of %q: %w", owner, err)
	}
	sort.Strings(ids)
	var out []Resource
	for _, id := range ids {
		d, err := a.Store.Device(id)
		if err != nil {
			return nil, fmt.Errorf("load device %q: %w", id, err)
		}
		c, err := a.Store.Class(d.Class)
		if err != nil {
			return nil, fmt.Errorf("load class %q: %w", d.Class, err)
		}
		for _, g := range c.Resources {
			out = append(out, Resource{ID: store.ResourceID(d.ID, g.Name), Owner: owner, Device: withoutSecrets(d), Group: g})
		}
	}
	return out, nil
}

// ShareInput is what an owner fills in to share.
type ShareInput struct {
	// Devices are the owner's devices shared (a room); the first is the
	// one the share is made from.
	Devices []string
	// Groups maps each shared group to its scopes (sub, pub); it applies
	// to every device whose class names the group.
	Groups map[string][]string
	// Grantee is a user id (GranteeKind user) or a client's id (client).
	Grantee     string
	GranteeKind store.GranteeKind
	Expires     time.Time
	Window      *store.Window
}

// FieldError is a refusal of an owner's input that names the field.
type FieldError struct {
	Field, Msg string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// CreateShare validates in and commits it as a share of owner's; who is
// recorded in the change log. The share is committed on condition that the
// devices and the grantee it was checked against are as they were read (a
// device unpaired or a grantee disabled meanwhile makes it check again).
func (a *Authority) CreateShare(owner string, in ShareInput, who string) (store.Grant, error) {
	var g store.Grant
	err := retry(func() error {
		var expect map[string]uint64
		var err error
		if g, expect, err = a.shareFrom(owner, in, time.Now()); err != nil {
			return err
		}
		b := &store.Batch{Grants: []store.Grant{g}, Expect: expect}
		if _, err := a.Apply(b.ExpectRev(store.GrantKey(g.ID), 0), who); err != nil {
			return fmt.Errorf("save share: %w", err)
		}
		return nil
	})
	if err != nil {
		return store.Grant{}, err
	}
	a.log.Info("share created", "owner", owner, "share", g.ID, "grantee", g.Grantee, "kind", g.GranteeKind, "resources", len(g.Resources), "by", who)
	return g, nil
}

// shareFrom builds the Grant in describes, checking every field; expect
// holds the revisions of the records it was checked against (the grantee,
// the devices, their classes), for the commit's Batch.Expect.
func (a *Authority) shareFrom(owner string, in ShareInput, now time.Time) (_ store.Grant, expect map[string]uint64, _ error) {
	g, err := a.checkShare(owner, in, now, func(key string, rev uint64) {
		if expect == nil {
			expect = map[string]uint64{}
		}
		expect[key] = rev
	})
	return g, expect, err
}

func (a *Authority) checkShare(owner string, in ShareInput, now time.Time, read func(key string, rev uint64)) (store.Grant, error) {
	if len(in.Devices) == 0 {
		return store.Grant{}, fieldErr("devices", "choose at least one of your devices")
	}
	switch in.GranteeKind {
	case store.GranteeUser:
		if in.Grantee == owner {
			return store.Grant{}, fieldErr("grantee", "that is you; share with someone else")
		}
		u, err := a.Store.User(in.Grantee)
		if errors.Is(err, store.ErrNotFound) || (err == nil && u.Status != store.UserActive) {
			return store.Grant{}, fieldErr("grantee", "no active account is called %q; check the username", in.Grantee)
		} else if err != nil {
			return store.Grant{}, fmt.Errorf("load user %q: %w", in.Grantee, err)
		}
		read(store.UserKey(u.ID), u.Rev)
	case store.GranteeClient:
		d, err := a.Store.Device(in.Grantee)
		if errors.Is(err, store.ErrNotFound) || (err == nil && d.Status != store.DeviceActive) {
			return store.Grant{}, fieldErr("grantee", "no active registered client is called %q; check the client id", in.Grantee)
		} else if err != nil {
			return store.Grant{}, fmt.Errorf("load client %q: %w", in.Grantee, err)
		}
		if d.Owner == owner && slices.Contains(in.Devices, d.ID) {
			return store.Grant{}, fieldErr("grantee", "a device cannot be shared with itself")
		}
		read(store.DeviceKey(d.ID), d.Rev)
	default:
		return store.Grant{}, fieldErr("grantee_kind", "%q is not one of user, client", in.GranteeKind)
	}
	if !in.Expires.IsZero() && !in.Expires.After(now) {
		return store.Grant{}, fieldErr("expires", "%s is in the past; give a later time or none", in.Expires.UTC().Format(time.RFC3339))
	}
	if in.Window != nil {
		if err := in.Window.Check(); err != nil {
			return store.Grant{}, fieldErr("window", "%v", err)
		}
	}
	if len(in.Groups) == 0 {
		return store.Grant{}, fieldErr("groups", "choose what to share (telemetry, status, …)")
	}
	g := store.Grant{ID: randomID(9), Owner: owner, Device: in.Devices[0], Grantee: in.Grantee, GranteeKind: in.GranteeKind,
		Expires: in.Expires.UTC(), Window: in.Window, Created: now.UTC()}
	groups := make([]string, 0, len(in.Groups))
	for name := range in.Groups {
		groups = append(groups, name)
	}
	sort.Strings(groups)
	seen := map[string]bool{}
	for _, id := range in.Devices {
		if seen[id] {
			continue
		}
		seen[id] = true
		d, err := a.Store.Device(id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && d.Owner != owner) {
			return store.Grant{}, fieldErr("devices", "%q is not one of your devices", id)
		} else if err != nil {
			return store.Grant{}, fmt.Errorf("load device %q: %w", id, err)
		}
		read(store.DeviceKey(d.ID), d.Rev)
		c, err := a.Store.Class(d.Class)
		if err != nil {
			return store.Grant{}, fmt.Errorf("load class %q: %w", d.Class, err)
		}
		read(store.ClassKey(c.Name), c.Rev)
		for _, name := range groups {
			rg, ok := c.Group(name)
			if !ok {
				continue // a room mixes classes: each device shares the groups it has
			}
			var scopes []string
			for _, s := range in.Groups[name] {
				if !rg.Allows(s) {
					return store.Grant{}, fieldErr("groups", "%s of %s cannot be shared with scope %q", name, d.ID, s)
				}
				if !slices.Contains(scopes, s) {
					scopes = append(scopes, s)
				}
			}
			if len(scopes) == 0 {
				return store.Grant{}, fieldErr("groups", "choose sub, pub or both for %s", name)
			}
			g.Resources = append(g.Resources, store.SharedResource{Device: d.ID, Group: name, Scopes: scopes})
		}
	}
	if len(g.Resources) == 0 {
		return store.Grant{}, fieldErr("groups", "none of the chosen devices has the chosen groups")
	}
	return g, nil
}

// RevokeShare ends a share: its owner revokes it, or its grantee (a user)
// gives it up. Every gateway drops the grantee's live access to it.
func (a *Authority) RevokeShare(user, id, who string) error {
	var g store.Grant
	err := retry(func() error {
		var err error
		g, err = a.Store.Grant(id)
		if errors.Is(err, store.ErrNotFound) {
			return fieldErr("share", "no share %q", id)
		}
		if err != nil {
			return fmt.Errorf("load share %q: %w", id, err)
		}
		if g.Owner != user && (g.GranteeKind != store.GranteeUser || g.Grantee != user) {
			return fieldErr("share", "share %q is neither yours nor made to you", id)
		}
		b := (&store.Batch{Delete: store.Deletions{Grants: []string{id}}}).ExpectRev(store.GrantKey(id), g.Rev)
		if _, err := a.Apply(b, who); err != nil {
			return fmt.Errorf("revoke share %q: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.log.Info("share revoked", "share", id, "owner", g.Owner, "grantee", g.Grantee, "by", who)
	return nil
}

// SharesBy lists the shares owner made, newest first.
func (a *Authority) SharesBy(owner string) ([]store.Grant, error) {
	return a.shares(func(g store.Grant) bool { return g.Owner == owner })
}

// SharesWith lists the shares made to user, newest first.
func (a *Authority) SharesWith(user string) ([]store.Grant, error) {
	return a.shares(func(g store.Grant) bool { return g.GranteeKind == store.GranteeUser && g.Grantee == user })
}

func (a *Authority) shares(keep func(store.Grant) bool) ([]store.Grant, error) {
	all, err := a.Store.Grants()
	if err != nil {
		return nil, fmt.Errorf("list shares: %w", err)
	}
	var out []store.Grant
	for _, g := range all {
		if keep(g) {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Covered is one requested permission and the share that grants it.
type Covered struct {
	ResourceID string
	Scopes     []string
	Share      store.Grant
}

// Covering finds, for each requested permission, a share of the resource's
// owner that gives party (a user, or a client acting for itself: kind
// client, party == client) all the requested scopes and has not expired.
// ok is false if any permission is not covered; conditions other than the
// expiry (the daily window) are the gateways' to enforce.
func (a *Authority) Covering(party string, kind store.GranteeKind, client string, reqs []cloudsync.PermissionRequest, now time.Time) ([]Covered, bool, error) {
	all, err := a.Store.Grants()
	if err != nil {
		return nil, false, fmt.Errorf("list shares: %w", err)
	}
	var out []Covered
	for _, r := range reqs {
		res, err := a.Resource(r.ResourceID)
		if err != nil {
			return nil, false, err
		}
		found := false
		for _, g := range all {
			if g.Owner != res.Owner || (!g.Expires.IsZero() && !now.Before(g.Expires)) {
				continue
			}
			switch kind {
			case store.GranteeUser:
				if g.GranteeKind != store.GranteeUser || g.Grantee != party {
					continue
				}
			case store.GranteeClient:
				if g.GranteeKind != store.GranteeClient || g.Grantee != client || party != client {
					continue
				}
			}
			for _, sr := range g.Resources {
				if sr.ID() == r.ResourceID && containsAll(sr.Scopes, r.ResourceScopes) {
					out = append(out, Covered{ResourceID: r.ResourceID, Scopes: r.ResourceScopes, Share: g})
					found = true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			return out, false, nil
		}
	}
	return out, true, nil
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// Request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
)

const (
	docShareRequest = "share-request"
	// deniedFor is how long a denial answers the same request.
	deniedFor = 24 * time.Hour
)

// ShareRequest is a requesting party's ask for resources no share covers,
// waiting for the owner (UMA 2.0 Grant §3.3.6 request_submitted).
type ShareRequest struct {
	ID        string                 `json:"id"`
	Owner     string                 `json:"owner"`
	Party     string                 `json:"party"`
	PartyKind store.GranteeKind      `json:"party_kind"`
	Client    string                 `json:"client"`
	Resources []store.SharedResource `json:"resources"`
	State     string                 `json:"state"`
	Created   time.Time              `json:"created"`
	Decided   time.Time              `json:"decided,omitzero"`
	// Share is the share an approval made.
	Share string `json:"share,omitempty"`
}

// requestID names a request by who asks for what, so asking again finds it.
func requestID(owner, party string, kind store.GranteeKind, client string, res []store.SharedResource) string {
	parts := []string{owner, party, string(kind), client}
	for _, r := range res {
		s := slices.Clone(r.Scopes)
		sort.Strings(s)
		parts = append(parts, r.ID()+"="+strings.Join(s, ","))
	}
	sort.Strings(parts[4:])
	h := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(h[:12])
}

// ErrManyOwners is SubmitRequest's refusal of resources of more than one owner.
var ErrManyOwners = errors.New("the resources belong to more than one owner; ask for one owner's at a time")

// SubmitRequest records party's ask for reqs (all of one owner's
// resources) or finds the same ask already made. A pending or recently
// denied request is returned as it is; an approved one whose share is gone
// is asked again.
func (a *Authority) SubmitRequest(party string, kind store.GranteeKind, client string, reqs []cloudsync.PermissionRequest) (ShareRequest, error) {
	var res []store.SharedResource
	owner := ""
	for _, r := range reqs {
		rs, err := a.Resource(r.ResourceID)
		if err != nil {
			return ShareRequest{}, err
		}
		if owner != "" && rs.Owner != owner {
			return ShareRequest{}, ErrManyOwners
		}
		owner = rs.Owner
		res = append(res, store.SharedResource{Device: rs.Device.ID, Group: rs.Group.Name, Scopes: slices.Clone(r.ResourceScopes)})
	}
	if owner == "" {
		return ShareRequest{}, ErrNoResource
	}
	id := requestID(owner, party, kind, client, res)
	var req ShareRequest
	asked := false
	// Asked again on condition that the request is as read: never over
	// the owner's answer committed meanwhile.
	err := retry(func() error {
		var cur ShareRequest
		ver, err := a.Store.GetDocVersion(docShareRequest, id, &cur)
		switch {
		case err == nil && cur.State == RequestPending:
			req = cur
			return nil
		case err == nil && cur.State == RequestDenied && time.Since(cur.Decided) < deniedFor:
			req = cur
			return nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("load request %s: %w", id, err)
		}
		req = ShareRequest{ID: id, Owner: owner, Party: party, PartyKind: kind, Client: client, Resources: res, State: RequestPending, Created: time.Now().UTC()}
		if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docShareRequest, ID: id, Value: req, ExpectVersion: ver, ExpectAbsent: ver == 0}); err != nil {
			return fmt.Errorf("save request %s: %w", id, err)
		}
		asked = true
		return nil
	})
	if err != nil {
		return ShareRequest{}, err
	}
	if !asked {
		return req, nil
	}
	a.log.Info("share requested", "request", id, "owner", owner, "party", party, "client", client, "resources", len(res))
	return req, nil
}

// ShareRequestByID returns a request.
func (a *Authority) ShareRequestByID(id string) (ShareRequest, error) {
	var r ShareRequest
	if err := a.Store.GetDoc(docShareRequest, id, &r); err != nil {
		return r, err
	}
	return r, nil
}

// Requests lists the requests made to owner: pending first, then newest.
func (a *Authority) Requests(owner string) ([]ShareRequest, error) {
	out, err := listDocs(a.Store, docShareRequest, func(r ShareRequest) bool { return r.Owner == owner })
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].State == RequestPending) != (out[j].State == RequestPending) {
			return out[i].State == RequestPending
		}
		return out[i].Created.After(out[j].Created)
	})
	return out, nil
}

// DecideRequest is the owner's answer to a pending request. Approving makes
// a share of what was asked, with the owner's conditions (expires, window:
// either may be zero); the requesting party's next poll gets its token.
// The answer and the share it makes are one conditional commit, on the
// request as read (of two answers at once, one is taken; the other finds
// it decided) and the records the share was checked against.
func (a *Authority) DecideRequest(owner, id string, approve bool, expires time.Time, window *store.Window, who string) (ShareRequest, error) {
	var out ShareRequest
	err := retry(func() error {
		var err error
		out, err = a.decideRequest(owner, id, approve, expires, window, who)
		return err
	})
	return out, err
}

func (a *Authority) decideRequest(owner, id string, approve bool, expires time.Time, window *store.Window, who string) (ShareRequest, error) {
	var r ShareRequest
	ver, err := a.Store.GetDocVersion(docShareRequest, id, &r)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.Owner != owner) {
		return ShareRequest{}, fieldErr("request", "no request %q to you", id)
	} else if err != nil {
		return ShareRequest{}, fmt.Errorf("load request %q: %w", id, err)
	}
	if r.State != RequestPending {
		return ShareRequest{}, fieldErr("request", "request %q is already %s", id, r.State)
	}
	r.Decided = time.Now().UTC()
	if !approve {
		r.State = RequestDenied
		if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docShareRequest, ID: id, Value: r, ExpectVersion: ver}); err != nil {
			return ShareRequest{}, fmt.Errorf("save request %q: %w", id, err)
		}
		a.log.Info("share request denied", "request", id, "owner", owner, "party", r.Party)
		return r, nil
	}
	in := ShareInput{Grantee: r.Party, GranteeKind: r.PartyKind, Expires: expires, Window: window, Groups: map[string][]string{}}
	if r.PartyKind == store.GranteeClient {
		in.Grantee = r.Client
	}
	for _, res := range r.Resources {
		if !slices.Contains(in.Devices, res.Device) {
			in.Devices = append(in.Devices, res.Device)
		}
		in.Groups[res.Group] = append(in.Groups[res.Group], res.Scopes...)
	}
	g, expect, err := a.shareFrom(owner, in, time.Now())
	if err != nil {
		return ShareRequest{}, err
	}
	// Only what was asked: a room of several devices may not all have
	// every group asked of one.
	g.Resources = slices.DeleteFunc(g.Resources, func(sr store.SharedResource) bool {
		return !slices.ContainsFunc(r.Resources, func(x store.SharedResource) bool { return x.ID() == sr.ID() })
	})
	r.State, r.Share = RequestApproved, g.ID
	b := &store.Batch{Grants: []store.Grant{g}, Expect: expect,
		Docs: []store.DocWrite{{Kind: docShareRequest, ID: id, Value: r, ExpectVersion: ver}}}
	if _, err := a.Apply(b.ExpectRev(store.GrantKey(g.ID), 0), who); err != nil {
		return ShareRequest{}, fmt.Errorf("save share: %w", err)
	}
	a.log.Info("share request approved", "request", id, "owner", owner, "party", r.Party, "share", g.ID)
	return r, nil
}

// AddMember creates a household member's account, managed by owner: it
// logs in with the password the owner sets and has only the shares it is
// given.
func (a *Authority) AddMember(owner, username, name, password, who string) (store.User, error) {
	username = strings.ToLower(strings.TrimSpace(username))
	if !usernameRE.MatchString(username) {
		return store.User{}, fieldErr("username", "use 3 to 32 lowercase letters, digits, dots, dashes or underscores, starting with a letter or digit")
	}
	if len(password) < 10 || len(password) > 128 {
		return store.User{}, fieldErr("password", "use 10 to 128 characters")
	}
	taken := fieldErr("username", "that name is taken; choose another")
	if _, err := a.Store.User(username); err == nil {
		return store.User{}, taken
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.User{}, fmt.Errorf("load user %q: %w", username, err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), passwordCost)
	if err != nil {
		return store.User{}, fmt.Errorf("hash password: %w", err)
	}
	// The account and its credential in one commit, if the name is free.
	u := store.User{ID: username, Name: strings.TrimSpace(name), Status: store.UserActive, Manager: owner}
	if err := a.createAccount(u, credential{Hash: hash}, who); errors.Is(err, ErrOwnerTaken) {
		return store.User{}, taken
	} else if err != nil {
		return store.User{}, fmt.Errorf("save member %q: %w", username, err)
	}
	a.log.Info("household member added", "owner", owner, "member", username)
	return u, nil
}

// Members lists the household members owner manages.
func (a *Authority) Members(owner string) ([]store.User, error) {
	all, err := a.Store.Users()
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	var out []store.User
	for _, u := range all {
		if u.Manager == owner && u.Status == store.UserActive {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// RemoveMember ends a household member's account: it can no longer log
// in, its shares are deleted, every token acting for it is revoked and its
// credential deleted, in one change, so each gateway cuts its sessions.
func (a *Authority) RemoveMember(owner, id, who string) error {
	notMember := fieldErr("member", "%q is not a member of your household", id)
	return a.disableUser(id, func(u store.User) error {
		if u.Manager != owner {
			return notMember
		}
		return nil
	}, "household member removed by "+owner, who, true, notMember)
}

// DisableUser disables an account (the operator's or its manager's act):
// no more logins, its shares deleted, its tokens revoked.
func (a *Authority) DisableUser(id, reason, who string) error {
	return a.disableUser(id, nil, reason, who, false, nil)
}

// disableUser disables user id if check (when set) accepts it; with
// dropCredential its credential goes in the same commit. A missing user
// is notFound (if set) or the store's ErrNotFound.
//
// The user is disabled on condition that it is as read (retried from a
// fresh read on a conflict). A share made to it by a commit that read it
// still active, after this listed its shares and before this committed,
// is deleted by a second pass: once the disabling has committed, no share
// to the user can commit any more (CreateShare commits on the user's
// revision, which the disabling moved).
func (a *Authority) disableUser(id string, check func(store.User) error, reason, who string, dropCredential bool, notFound error) error {
	var deleted int
	err := retry(func() error {
		u, err := a.Store.User(id)
		if errors.Is(err, store.ErrNotFound) && notFound != nil {
			return notFound
		} else if err != nil {
			return fmt.Errorf("load user %q: %w", id, err)
		}
		if check != nil {
			if err := check(u); err != nil {
				return err
			}
		}
		mine, err := a.SharesWith(u.ID)
		if err != nil {
			return err
		}
		u.Status = store.UserDisabled
		b := &store.Batch{Users: []store.User{u}, Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: u.ID, Reason: reason}}}
		for _, g := range mine {
			b.Delete.Grants = append(b.Delete.Grants, g.ID)
		}
		if dropCredential {
			b.Docs = []store.DocWrite{{Kind: docCredential, ID: u.ID, Delete: true}}
		}
		if _, err := a.Apply(b.ExpectRev(store.UserKey(u.ID), u.Rev), who); err != nil {
			return fmt.Errorf("disable user %q: %w", u.ID, err)
		}
		deleted = len(mine)
		return nil
	})
	if err != nil {
		return err
	}
	late, err := a.SharesWith(id)
	if err != nil {
		return fmt.Errorf("user %q disabled; shares made to it meanwhile not listed: %w", id, err)
	}
	if len(late) > 0 {
		b := &store.Batch{}
		for _, g := range late {
			b.Delete.Grants = append(b.Delete.Grants, g.ID)
		}
		if _, err := a.Apply(b, who); err != nil {
			return fmt.Errorf("user %q disabled; shares made to it meanwhile not deleted: %w", id, err)
		}
		deleted += len(late)
	}
	a.log.Info("user disabled", "user", id, "shares_deleted", deleted, "reason", reason, "by", who)
	return nil
}
