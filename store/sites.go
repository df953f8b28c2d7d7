package store

import (
	"slices"
	"strings"
)

// Sites: a fleet's gateways each hold the records of their own site, not
// the whole fleet's. A device belongs to the site its manufacturer set or
// its owner's gateway is in (Device.Site; "" = every site). The other
// records reach the sites that need them, derived from the devices:
//
//   - a device: its site, or every site (AllSites) when it has none;
//   - a user: their own site (User.Site, their home gateway's) and the
//     sites of every device they own; no site at all when neither (a user
//     with no devices is needed by no gateway);
//   - a share (Grant): the sites of the devices it shares;
//   - a device revocation: the revoked device's sites; any other revocation
//     (a token, a subject) every site: revocations are small, expire, and a
//     token may be presented anywhere, so they fail closed;
//   - classes and issuers: every site.
//
// An authority's store works this out inside each logged commit (PlanSites)
// and keeps it with the log entry (LogEntry.Reach and Was), so the feed of
// one site is a pure function of the log (LogEntry.ForSite): a record that
// leaves a site (a device moved, a user whose last device there went) is a
// deletion for that site's gateways, which ends its sessions there. A
// change to a device also re-derives its owners' and its shares' sites; one
// whose sites changed is carried in the logged batch as it stands, so a
// site it joins receives it.

// AllSites in a reach list means every gateway, whatever its site.
const AllSites = "*"

// RevocationKey names a revocation record, as DeviceKey names a device.
func RevocationKey(r Revocation) string { return "revocations/" + r.Key() }

// Devices are the devices a share covers: the one it was made from and
// those its resources name, each once.
func (g Grant) Devices() []string {
	out := []string{g.Device}
	for _, r := range g.Resources {
		if r.Device != "" && !slices.Contains(out, r.Device) {
			out = append(out, r.Device)
		}
	}
	return out
}

// RecordReader reads records inside a committing transaction (false: none).
type RecordReader interface {
	Device(id string) (Device, bool, error)
	User(id string) (User, bool, error)
	Grant(id string) (Grant, bool, error)
}

// SiteReader is what planning a commit's sites reads: the records as the
// committing transaction sees them (the batch's own writes included) and
// the reach each record had before the commit.
type SiteReader interface {
	RecordReader
	DevicesOfOwner(owner string) ([]string, error)
	// GrantsOfDevice lists the shares covering the device (Grant.Devices).
	GrantsOfDevice(device string) ([]string, error)
	// Reach is the stored reach of a record key before this commit; false
	// when none is stored (a new record).
	Reach(key string) ([]string, bool, error)
}

// SitePlan is what one commit changes in the sites records reach.
type SitePlan struct {
	// Reach is the sorted sites of each record the batch writes and of each
	// dependent (owner, share) whose sites changed, after the commit.
	Reach map[string][]string
	// Was is the reach before, for the same records (absent: new) and for
	// the records the batch deletes.
	Was map[string][]string
	// Users and Grants are dependents whose sites changed although the
	// batch does not carry them: the committer logs them with the batch.
	Users  []User
	Grants []Grant
}

// DeviceReach is the sites a device record reaches.
func DeviceReach(d Device) []string {
	if d.Site == "" {
		return []string{AllSites}
	}
	return []string{d.Site}
}

// sites is a small set of site names with AllSites absorbing the rest.
type sites map[string]bool

func (s sites) add(list []string) {
	for _, x := range list {
		s[x] = true
	}
}

func (s sites) list() []string {
	if s[AllSites] {
		return []string{AllSites}
	}
	out := make([]string, 0, len(s))
	for x := range s {
		out = append(out, x)
	}
	slices.Sort(out)
	return out
}

func userReach(r SiteReader, u User) ([]string, error) {
	s := sites{}
	if u.Site != "" {
		s[u.Site] = true
	}
	ids, err := r.DevicesOfOwner(u.ID)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		d, ok, err := r.Device(id)
		if err != nil {
			return nil, err
		}
		if ok {
			s.add(DeviceReach(d))
		}
	}
	return s.list(), nil
}

func grantReach(r SiteReader, g Grant) ([]string, error) {
	s := sites{}
	for _, id := range g.Devices() {
		d, ok, err := r.Device(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			s[AllSites] = true // a share of a device not (yet) registered: fail closed, everywhere
			continue
		}
		s.add(DeviceReach(d))
	}
	return s.list(), nil
}

func revocationReach(r SiteReader, rv Revocation) ([]string, error) {
	if rv.Kind != RevokeDevice {
		return []string{AllSites}, nil
	}
	d, ok, err := r.Device(rv.Value)
	if err != nil || !ok {
		return []string{AllSites}, err
	}
	return DeviceReach(d), nil
}

// PlanSites works out the sites of the records batch b writes and deletes
// and of their dependents; prev holds the devices as they were before the
// commit (as apply collects them).
func PlanSites(b *Batch, prev map[string]Device, r SiteReader) (SitePlan, error) {
	p := SitePlan{Reach: map[string][]string{}, Was: map[string][]string{}}
	was := func(key string) error {
		old, ok, err := r.Reach(key)
		if err != nil {
			return err
		}
		if ok {
			p.Was[key] = old
		}
		return nil
	}
	set := func(key string, now []string) error {
		p.Reach[key] = now
		return was(key)
	}
	inBatch := map[string]bool{}
	owners := map[string]bool{}
	devices := map[string]bool{}
	for _, d := range b.Devices {
		inBatch[DeviceKey(d.ID)] = true
		if err := set(DeviceKey(d.ID), DeviceReach(d)); err != nil {
			return p, err
		}
		// Its owners' and shares' sites derive from its site and owner
		// only: a change of anything else (a status, a name) leaves them
		// as they are, and re-deriving an owner's would read every device
		// they own, inside the commit.
		if old, ok := prev[d.ID]; ok && old.Owner == d.Owner && old.Site == d.Site {
			continue
		}
		devices[d.ID] = true
		owners[d.Owner] = true
		owners[prev[d.ID].Owner] = true
	}
	for _, id := range b.Delete.Devices {
		inBatch[DeviceKey(id)] = true
		if err := was(DeviceKey(id)); err != nil {
			return p, err
		}
		devices[id] = true
		owners[prev[id].Owner] = true
	}
	for _, u := range b.Users {
		inBatch[UserKey(u.ID)] = true
		now, err := userReach(r, u)
		if err != nil {
			return p, err
		}
		if err := set(UserKey(u.ID), now); err != nil {
			return p, err
		}
	}
	for _, g := range b.Grants {
		inBatch[GrantKey(g.ID)] = true
		now, err := grantReach(r, g)
		if err != nil {
			return p, err
		}
		if err := set(GrantKey(g.ID), now); err != nil {
			return p, err
		}
	}
	for _, rv := range b.Revocations {
		now, err := revocationReach(r, rv)
		if err != nil {
			return p, err
		}
		if err := set(RevocationKey(rv), now); err != nil {
			return p, err
		}
	}
	dels := []struct {
		kind string
		ids  []string
	}{{"users", b.Delete.Users}, {"grants", b.Delete.Grants}, {"revocations", b.Delete.Revocations}}
	for _, d := range dels {
		for _, id := range d.ids {
			inBatch[d.kind+"/"+id] = true
			if err := was(d.kind + "/" + id); err != nil {
				return p, err
			}
		}
	}

	// Dependents: the owners (before and after) and the shares of every
	// device the batch changes. One level is enough: nothing derives its
	// sites from a user or a share.
	changed := func(key string, now []string) (bool, error) {
		old, ok, err := r.Reach(key)
		if err != nil {
			return false, err
		}
		if ok && slices.Equal(old, now) {
			return false, nil
		}
		p.Reach[key] = now
		if ok {
			p.Was[key] = old
		}
		return true, nil
	}
	for _, owner := range sortedKeys(owners) {
		if owner == "" || inBatch[UserKey(owner)] {
			continue
		}
		u, ok, err := r.User(owner)
		if err != nil {
			return p, err
		}
		if !ok {
			continue
		}
		now, err := userReach(r, u)
		if err != nil {
			return p, err
		}
		if c, err := changed(UserKey(owner), now); err != nil {
			return p, err
		} else if c {
			p.Users = append(p.Users, u)
		}
	}
	seen := map[string]bool{}
	for _, dev := range sortedKeys(devices) {
		ids, err := r.GrantsOfDevice(dev)
		if err != nil {
			return p, err
		}
		for _, id := range ids {
			if seen[id] || inBatch[GrantKey(id)] {
				continue
			}
			seen[id] = true
			g, ok, err := r.Grant(id)
			if err != nil {
				return p, err
			}
			if !ok {
				continue
			}
			now, err := grantReach(r, g)
			if err != nil {
				return p, err
			}
			if c, err := changed(GrantKey(id), now); err != nil {
				return p, err
			} else if c {
				p.Grants = append(p.Grants, g)
			}
		}
	}
	return p, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// reaches reports whether a reach list includes site.
func reaches(list []string, site string) bool {
	return slices.Contains(list, AllSites) || slices.Contains(list, site)
}

// ForSite is the entry's batch as the gateways of site receive it: the
// records that reach the site, and a deletion of each record that was at
// the site and no longer is (moved away or deleted). Site "" is a gateway
// of no particular site: it receives everything. An entry logged before
// sites were kept reaches every site.
func (e LogEntry) ForSite(site string) Batch {
	if site == "" || (e.Reach == nil && e.Was == nil) {
		return e.Batch
	}
	in := e.Batch
	out := Batch{Classes: in.Classes, Issuers: in.Issuers}
	out.Delete.Classes, out.Delete.Issuers = in.Delete.Classes, in.Delete.Issuers
	// keep decides a written record: sent, turned into a deletion, or left out.
	keep := func(key string) (send, del bool) {
		now, ok := e.Reach[key]
		if !ok || reaches(now, site) {
			return true, false
		}
		old, ok := e.Was[key]
		return false, ok && reaches(old, site)
	}
	// gone decides a deleted record: a deletion unless it was known to be
	// elsewhere (an unknown past deletes everywhere, which is harmless).
	gone := func(key string) bool {
		old, ok := e.Was[key]
		return !ok || reaches(old, site)
	}
	for _, d := range in.Devices {
		if send, del := keep(DeviceKey(d.ID)); send {
			out.Devices = append(out.Devices, d)
		} else if del {
			out.Delete.Devices = append(out.Delete.Devices, d.ID)
		}
	}
	for _, u := range in.Users {
		if send, del := keep(UserKey(u.ID)); send {
			out.Users = append(out.Users, u)
		} else if del {
			out.Delete.Users = append(out.Delete.Users, u.ID)
		}
	}
	for _, g := range in.Grants {
		if send, del := keep(GrantKey(g.ID)); send {
			out.Grants = append(out.Grants, g)
		} else if del {
			out.Delete.Grants = append(out.Delete.Grants, g.ID)
		}
	}
	for _, r := range in.Revocations {
		if send, del := keep(RevocationKey(r)); send {
			out.Revocations = append(out.Revocations, r)
		} else if del {
			out.Delete.Revocations = append(out.Delete.Revocations, r.Key())
		}
	}
	for _, id := range in.Delete.Devices {
		if gone(DeviceKey(id)) {
			out.Delete.Devices = append(out.Delete.Devices, id)
		}
	}
	for _, id := range in.Delete.Users {
		if gone(UserKey(id)) {
			out.Delete.Users = append(out.Delete.Users, id)
		}
	}
	for _, id := range in.Delete.Grants {
		if gone(GrantKey(id)) {
			out.Delete.Grants = append(out.Delete.Grants, id)
		}
	}
	for _, k := range in.Delete.Revocations {
		if gone("revocations/" + k) {
			out.Delete.Revocations = append(out.Delete.Revocations, k)
		}
	}
	return out
}

// recordPrefixOf maps a record key ("devices/<id>") to its Badger key.
func recordPrefixOf(key string) (string, bool) {
	kind, id, ok := strings.Cut(key, "/")
	if !ok || id == "" {
		return "", false
	}
	switch kind {
	case "devices":
		return pDevice + id, true
	case "users":
		return pUser + id, true
	case "grants":
		return pGrant + id, true
	case "revocations":
		return pRevoke + id, true
	}
	return "", false
}
