package store_test

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// sitesFixture is a logged store with two sites: alice's sensor at A, bob's
// at B, a factory-fresh device of no site, a share of alice's sensor with
// bob, and one revocation of each scope.
func sitesFixture(t *testing.T, s *store.Store) {
	t.Helper()
	b := &store.Batch{
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
	}
	if _, err := s.ApplyLoggedBy(b, "test"); err != nil {
		t.Fatalf("seed: %v", err)
	}
}

func ids[T any](xs []T, id func(T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, id(x))
	}
	slices.Sort(out)
	return out
}

func devIDs(b *store.Batch) []string {
	return ids(b.Devices, func(d store.Device) string { return d.ID })
}
func userIDs(b *store.Batch) []string { return ids(b.Users, func(u store.User) string { return u.ID }) }
func revIDs(b *store.Batch) []string {
	return ids(b.Revocations, func(r store.Revocation) string { return r.Key() })
}

func TestSiteSnapshotHoldsOnlyItsSite(t *testing.T) {
	s := newStore(t)
	sitesFixture(t, s)
	a, rev, err := s.SiteSnapshot("A")
	if err != nil || rev != 1 {
		t.Fatalf("SiteSnapshot(A) = rev %d, %v", rev, err)
	}
	if got := devIDs(a); !slices.Equal(got, []string{"a1", "fresh"}) {
		t.Errorf("site A devices = %v, want a1 and the device of no site", got)
	}
	// carol owns nothing and has no site: no gateway of a site needs her.
	if got := userIDs(a); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("site A users = %v, want only alice (bob's devices are at B)", got)
	}
	if len(a.Grants) != 1 || len(a.Classes) != 1 {
		t.Errorf("site A: %d grants, %d classes; want alice's share and the class", len(a.Grants), len(a.Classes))
	}
	if got := revIDs(a); !slices.Equal(got, []string{"jti/jti-1"}) {
		t.Errorf("site A revocations = %v, want the token revocation only (b1 is at B)", got)
	}
	b, _, _ := s.SiteSnapshot("B")
	if got := devIDs(b); !slices.Equal(got, []string{"b1", "fresh"}) {
		t.Errorf("site B devices = %v", got)
	}
	if got := revIDs(b); !slices.Equal(got, []string{"device/b1", "jti/jti-1"}) {
		t.Errorf("site B revocations = %v", got)
	}
	all, _, _ := s.SiteSnapshot("")
	if got := userIDs(all); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("a gateway of no site gets every user, got %v", got)
	}
}

func TestMovingADeviceDeletesItFromTheOldSite(t *testing.T) {
	s := newStore(t)
	sitesFixture(t, s)
	d, _ := s.Device("a1")
	d.Site = "B"
	rev, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{d}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	es, err := s.LogSince(rev-1, 1)
	if err != nil || len(es) != 1 {
		t.Fatalf("LogSince = %d entries, %v", len(es), err)
	}
	atA := es[0].ForSite("A")
	if !slices.Equal(atA.Delete.Devices, []string{"a1"}) || len(atA.Devices) != 0 {
		t.Errorf("site A: devices %v, deletes %v; want a1 deleted", devIDs(&atA), atA.Delete.Devices)
	}
	// alice owns nothing at A any more, nor does her share cover anything there.
	if !slices.Equal(atA.Delete.Users, []string{"alice"}) || !slices.Equal(atA.Delete.Grants, []string{"g1"}) {
		t.Errorf("site A: user deletes %v, grant deletes %v; want alice and g1", atA.Delete.Users, atA.Delete.Grants)
	}
	atB := es[0].ForSite("B")
	if got := devIDs(&atB); !slices.Equal(got, []string{"a1"}) {
		t.Errorf("site B devices = %v, want a1", got)
	}
	// The dependents arrive with the device, although the change named only it.
	if got := userIDs(&atB); !slices.Equal(got, []string{"alice"}) || len(atB.Grants) != 1 {
		t.Errorf("site B users %v, %d grants; want alice and g1 carried along", got, len(atB.Grants))
	}
	if atC := es[0].ForSite("C"); !atC.Empty() {
		t.Errorf("site C gets %+v from a move between A and B, want nothing", atC)
	}
	if got := es[0].ForSite(""); len(got.Devices) != 1 || len(got.Delete.Devices) != 0 {
		t.Errorf("a gateway of no site gets %+v, want the device as written", got)
	}
	// The caller's batch is not changed by what the log carries along.
	a, _, _ := s.SiteSnapshot("A")
	if slices.Contains(devIDs(a), "a1") || slices.Contains(userIDs(a), "alice") {
		t.Errorf("after the move site A still holds %v / %v", devIDs(a), userIDs(a))
	}
	b, _, _ := s.SiteSnapshot("B")
	if !slices.Contains(devIDs(b), "a1") || !slices.Contains(userIDs(b), "alice") {
		t.Errorf("after the move site B holds %v / %v", devIDs(b), userIDs(b))
	}
}

func TestDeletionsGoWhereTheRecordWas(t *testing.T) {
	s := newStore(t)
	sitesFixture(t, s)
	rev, err := s.ApplyLoggedBy(&store.Batch{Delete: store.Deletions{Devices: []string{"b1"}, Grants: []string{"g1"}}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	es, _ := s.LogSince(rev-1, 1)
	if atA := es[0].ForSite("A"); len(atA.Delete.Devices) != 0 || !slices.Equal(atA.Delete.Grants, []string{"g1"}) {
		t.Errorf("site A deletes %+v, want only g1 (b1 was never at A)", atA.Delete)
	}
	atB := es[0].ForSite("B")
	if !slices.Equal(atB.Delete.Devices, []string{"b1"}) || !slices.Equal(atB.Delete.Users, []string{"bob"}) {
		t.Errorf("site B deletes %+v, want b1 and bob (his only device there)", atB.Delete)
	}
}

func TestPairingToAnOwnerBringsTheOwnerToTheSite(t *testing.T) {
	s := newStore(t)
	sitesFixture(t, s)
	d, _ := s.Device("fresh")
	d.Owner, d.Site = "carol", "C"
	rev, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{d}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	es, _ := s.LogSince(rev-1, 1)
	atC := es[0].ForSite("C")
	if got := userIDs(&atC); !slices.Equal(got, []string{"carol"}) {
		t.Errorf("site C users = %v, want carol carried with her device", got)
	}
	// The device of no site was everywhere: every other site deletes it.
	if atA := es[0].ForSite("A"); !slices.Equal(atA.Delete.Devices, []string{"fresh"}) || len(atA.Users) != 0 {
		t.Errorf("site A gets %+v, want fresh deleted and no carol", atA)
	}
}

func TestOldLogEntriesReachEverySite(t *testing.T) {
	e := store.LogEntry{Rev: 1, Batch: store.Batch{Devices: []store.Device{{ID: "x", Site: "A"}}}}
	if got := e.ForSite("B"); len(got.Devices) != 1 {
		t.Errorf("an entry logged before sites reached site B with %+v, want it whole", got)
	}
}

func TestSiteNameValidated(t *testing.T) {
	s := newStore(t)
	sitesFixture(t, s)
	for _, site := range []string{"*", "a/b", "with space"} {
		d, _ := s.Device("a1")
		d.Site = site
		_, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{d}}, "test")
		ve := asValidation(t, err)
		if !hasProblem(ve, "(a1).site") {
			t.Errorf("site %q: problems %v, want one about the device's site", site, ve.Problems)
		}
	}
}

// A logged store of schema 2 (no sites kept) gets them built when opened.
func TestSchema2LoggedStoreGetsSites(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	sitesFixture(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := openBadger(t, dir)
	two := make([]byte, 8)
	binary.BigEndian.PutUint64(two, 2)
	if err := db.Update(func(txn *badger.Txn) error {
		for _, p := range []string{"x/reach/", "x/site/", "x/gdev/"} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(p)})
			var keys [][]byte
			for it.Rewind(); it.Valid(); it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
		}
		return txn.Set([]byte("m/schema"), two)
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	a, _, err := s.SiteSnapshot("A")
	if err != nil {
		t.Fatal(err)
	}
	if got := devIDs(a); !slices.Equal(got, []string{"a1", "fresh"}) {
		t.Errorf("site A after migration: %v", got)
	}
	// The share index is rebuilt too: moving a1 carries g1 along.
	d, _ := s.Device("a1")
	d.Site = "B"
	rev, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{d}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	es, _ := s.LogSince(rev-1, 1)
	if atB := es[0].ForSite("B"); len(atB.Grants) != 1 {
		t.Errorf("after migration a move does not carry the share: %+v", atB)
	}
}
