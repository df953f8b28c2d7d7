package store_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

// A snapshot far larger than one Badger transaction replaces the store
// exactly: its records are there, stale ones are gone, the cursor moved.
func TestReplaceLargeSnapshot(t *testing.T) {
	s, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	class := store.DeviceClass{Name: "c"}
	old := &store.Batch{Classes: []store.DeviceClass{class, {Name: "gone"}}}
	for i := 0; i < 3000; i++ {
		old.Devices = append(old.Devices, store.Device{ID: fmt.Sprintf("old-%d", i), Class: "c", Status: store.DeviceActive,
			CertSHA256: fmt.Sprintf("%064x", i)})
		old.Revocations = append(old.Revocations, store.Revocation{Kind: store.RevokeToken, Value: fmt.Sprintf("old-j%d", i), RevokedAt: time.Now()})
	}
	if _, err := s.Apply(old, nil); err != nil {
		t.Fatal(err)
	}
	snap := &store.Batch{Classes: []store.DeviceClass{class}}
	for i := 0; i < 12000; i++ {
		// dev-0..2999 take over the certificates of old devices: indexes must follow.
		snap.Devices = append(snap.Devices, store.Device{ID: fmt.Sprintf("dev-%d", i), Class: "c", Owner: "o", Status: store.DeviceActive,
			CertSHA256: fmt.Sprintf("%064x", i)})
	}
	for i := 0; i < 30000; i++ {
		snap.Revocations = append(snap.Revocations, store.Revocation{Kind: store.RevokeToken, Value: fmt.Sprintf("j%d", i), RevokedAt: time.Now()})
	}
	var applied []store.Applied
	s.Watch(func(a store.Applied) { applied = append(applied, a) })
	cur := store.Cursor{Epoch: "e", Seq: 42}
	if _, err := s.Replace(snap, &cur); err != nil {
		t.Fatalf("replace %d records: %v", snap.Size(), err)
	}
	counts, _ := s.Counts()
	if counts["devices"] != 12000 || counts["revocations"] != 30000 || counts["classes"] != 1 {
		t.Fatalf("after replace: %v", counts)
	}
	if d, err := s.DeviceByCertFingerprint(fmt.Sprintf("%064x", 7)); err != nil || d.ID != "dev-7" {
		t.Fatalf("fingerprint index: %+v %v", d, err)
	}
	if ids, _ := s.DevicesOfOwner("o"); len(ids) != 12000 {
		t.Fatalf("owner index has %d devices", len(ids))
	}
	if _, ok, _ := s.Revocation(store.RevokeToken, "old-j1"); ok {
		t.Fatal("a stale revocation survived the snapshot")
	}
	if c, _ := s.Cursor(); c.Seq != 42 || c.Epoch != "e" {
		t.Fatalf("cursor %+v", c)
	}
	if in, _ := s.ReplaceInterrupted(); in {
		t.Fatal("replace left its in-progress marker")
	}
	if len(applied) != 1 || !applied[0].Replaced {
		t.Fatalf("watchers: %+v", applied)
	}
}

func TestWriteAndDeleteSameRecordRejected(t *testing.T) {
	s, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, b := range map[string]*store.Batch{
		"class": {Classes: []store.DeviceClass{{Name: "c"}}, Delete: store.Deletions{Classes: []string{"c"}}},
		"user":  {Users: []store.User{{ID: "u", Status: store.UserActive}}, Delete: store.Deletions{Users: []string{"u"}}},
		"revocation": {Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "j", RevokedAt: time.Now()}},
			Delete: store.Deletions{Revocations: []string{"jti/j"}}},
	} {
		if _, err := s.Apply(b, nil); err == nil || !strings.Contains(err.Error(), "is also written by this batch") {
			t.Errorf("%s written and deleted: %v", name, err)
		}
	}
}
