package storagetest

import (
	"slices"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Sites (store/sites.go), ported from store/sites_test.go to every
// backend: a site's snapshot holds what reaches it, and each log entry
// knows where its records went (LogEntry.ForSite), dependents included.

// sitesFixture: alice's sensor at A, bob's at B, a factory-fresh device of
// no site, a share of alice's sensor with bob, one revocation of each
// scope, and carol, who owns nothing.
func sitesFixture(t *testing.T, s authority.Storage) uint64 {
	t.Helper()
	return mustApply(t, s, &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: []policy.Rule{{Filter: "t/{device}", Actions: policy.Publish}}}},
		Users:   []store.User{{ID: "alice", Status: store.UserActive}, {ID: "bob", Status: store.UserActive}, {ID: "carol", Status: store.UserActive}},
		Devices: []store.Device{
			{ID: "a1", Class: "sensor", Status: store.DeviceActive, Owner: "alice", Site: "A"},
			{ID: "b1", Class: "sensor", Status: store.DeviceActive, Owner: "bob", Site: "B"},
			{ID: "fresh", Class: "sensor", Status: store.DeviceActive},
		},
		Grants: []store.Grant{{ID: "g1", Owner: "alice", Device: "a1", Grantee: "bob", GranteeKind: store.GranteeUser,
			Resources: []store.SharedResource{{Device: "a1", Group: "t", Scopes: []string{"sub"}}}}},
		Revocations: []store.Revocation{
			{Kind: store.RevokeDevice, Value: "b1", RevokedAt: time.Now()},
			{Kind: store.RevokeToken, Value: "jti-1", RevokedAt: time.Now()},
		},
	}, "fixture")
}

func ids[T any](xs []T, id func(T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, id(x))
	}
	return out
}

func devIDs(b *store.Batch) []string {
	return ids(b.Devices, func(d store.Device) string { return d.ID })
}
func userIDs(b *store.Batch) []string { return ids(b.Users, func(u store.User) string { return u.ID }) }
func grantIDs(b *store.Batch) []string {
	return ids(b.Grants, func(g store.Grant) string { return g.ID })
}
func revIDs(b *store.Batch) []string {
	return ids(b.Revocations, func(r store.Revocation) string { return r.Key() })
}

func wantIDs(t testing.TB, what string, got []string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

func siteSnapshot(t testing.TB, s authority.Storage, site string) *store.Batch {
	t.Helper()
	b, rev, err := s.SiteSnapshot(site)
	if err != nil {
		t.Fatal(err)
	}
	if head := mustRev(t, s); rev != head {
		t.Fatalf("SiteSnapshot(%q) at rev %d, Rev %d", site, rev, head)
	}
	return b
}

func lastEntry(t testing.TB, s authority.Storage, rev uint64) store.LogEntry {
	t.Helper()
	es, err := s.LogSince(rev-1, 1)
	if err != nil || len(es) != 1 || es[0].Rev != rev {
		t.Fatalf("LogSince(%d, 1) = %+v, %v", rev-1, es, err)
	}
	return es[0]
}

func testSites(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	sitesFixture(t, s)
	a := siteSnapshot(t, s, "A")
	wantIDs(t, "site A devices", devIDs(a), "a1", "fresh")
	// carol owns nothing and has no site: no gateway of a site needs her.
	wantIDs(t, "site A users", userIDs(a), "alice")
	wantIDs(t, "site A grants", grantIDs(a), "g1")
	wantIDs(t, "site A revocations (b1's is at B)", revIDs(a), "jti/jti-1")
	if len(a.Classes) != 1 {
		t.Fatalf("site A classes: %+v", a.Classes)
	}
	b := siteSnapshot(t, s, "B")
	wantIDs(t, "site B devices", devIDs(b), "b1", "fresh")
	wantIDs(t, "site B users", userIDs(b), "bob")
	wantIDs(t, "site B grants", grantIDs(b))
	wantIDs(t, "site B revocations", revIDs(b), "device/b1", "jti/jti-1")
	wantIDs(t, "a gateway of no site: users", userIDs(siteSnapshot(t, s, "")), "alice", "bob", "carol")
	wantIDs(t, "site C devices", devIDs(siteSnapshot(t, s, "C")), "fresh")

	// Moving a device deletes it, and its dependents, at the old site and
	// brings them to the new one.
	d, err := s.Device("a1")
	if err != nil {
		t.Fatal(err)
	}
	d.Site = "B"
	moved := &store.Batch{Devices: []store.Device{d}}
	rev := mustApply(t, s, moved, "move")
	e := lastEntry(t, s, rev)
	atA := e.ForSite("A")
	wantIDs(t, "site A deletes devices", atA.Delete.Devices, "a1")
	wantIDs(t, "site A devices", devIDs(&atA))
	wantIDs(t, "site A deletes users", atA.Delete.Users, "alice")
	wantIDs(t, "site A deletes grants", atA.Delete.Grants, "g1")
	atB := e.ForSite("B")
	wantIDs(t, "site B devices", devIDs(&atB), "a1")
	wantIDs(t, "site B users (carried along)", userIDs(&atB), "alice")
	wantIDs(t, "site B grants (carried along)", grantIDs(&atB), "g1")
	if atC := e.ForSite("C"); !atC.Empty() {
		t.Fatalf("site C gets %+v from a move between A and B", atC)
	}
	if len(moved.Users)+len(moved.Grants) != 0 {
		t.Fatalf("the caller's batch was changed: %+v", moved)
	}
	a, b = siteSnapshot(t, s, "A"), siteSnapshot(t, s, "B")
	wantIDs(t, "site A devices after the move", devIDs(a), "fresh")
	wantIDs(t, "site A users after the move", userIDs(a))
	wantIDs(t, "site B devices after the move", devIDs(b), "a1", "b1", "fresh")
	wantIDs(t, "site B users after the move", userIDs(b), "alice", "bob")
	wantIDs(t, "site B grants after the move", grantIDs(b), "g1")

	// Pairing a device to an owner brings the owner to the device's site;
	// the device of no site leaves every other site.
	f, err := s.Device("fresh")
	if err != nil {
		t.Fatal(err)
	}
	f.Owner, f.Site = "carol", "C"
	e = lastEntry(t, s, mustApply(t, s, &store.Batch{Devices: []store.Device{f}}, "pair"))
	atC := e.ForSite("C")
	wantIDs(t, "site C users", userIDs(&atC), "carol")
	atA = e.ForSite("A")
	wantIDs(t, "site A deletes devices", atA.Delete.Devices, "fresh")
	wantIDs(t, "site A users", userIDs(&atA))

	// Deletions go where the record was.
	e = lastEntry(t, s, mustApply(t, s, &store.Batch{Delete: store.Deletions{Devices: []string{"b1"}, Grants: []string{"g1"}}}, "delete"))
	atC = e.ForSite("C")
	wantIDs(t, "site C deletes devices (b1 was never at C)", atC.Delete.Devices)
	atB = e.ForSite("B")
	wantIDs(t, "site B deletes devices", atB.Delete.Devices, "b1")
	wantIDs(t, "site B deletes users (b1 was bob's only device there)", atB.Delete.Users, "bob")
	wantIDs(t, "site B deletes grants", atB.Delete.Grants, "g1")
	b = siteSnapshot(t, s, "B")
	wantIDs(t, "site B devices at the end", devIDs(b), "a1")
	wantIDs(t, "site B grants at the end", grantIDs(b))
	wantIDs(t, "site B revocations at the end", revIDs(b), "device/b1", "jti/jti-1")

	// A site name is checked.
	d.Site = "*"
	_, err = s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{d}}, "bad")
	wantValidation(t, err, `devices[0] (a1).site "*" is reserved (it means every site); leave the site empty for that`)
}
