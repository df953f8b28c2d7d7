package store_test

import (
	"encoding/binary"
	"errors"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeid/edgeid/store"
)

func pskDev(id, identity string) store.Device {
	return store.Device{ID: id, Class: "sensor", Status: store.DeviceActive, PSKIdentity: identity, PSK: []byte("0123456789abcdef0123456789abcdef")}
}

func byPSK(t *testing.T, s *store.Store, identity string) string {
	t.Helper()
	d, err := s.DeviceByPSKIdentity(identity)
	return foundID(t, d, err)
}

// The x/psk/ index moves with the device records: written, renamed and
// deleted in the batch's transaction, rebuilt by Replace, and an identity
// already held by another device is refused, naming both.
func TestPSKIdentityIndex(t *testing.T) {
	s := newStore(t)
	mustApply(t, s, &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}},
		Devices: []store.Device{pskDev("d1", "id-1"), pskDev("d2", "id/2 with spaces"), {ID: "d3", Class: "sensor", Status: store.DeviceActive}},
	}, nil)
	if got := byPSK(t, s, "id-1"); got != "d1" {
		t.Fatalf("id-1 finds %q, want d1", got)
	}
	if got := byPSK(t, s, "id/2 with spaces"); got != "d2" {
		t.Fatalf("id/2 finds %q, want d2", got)
	}
	if got := byPSK(t, s, "id"); got != "" {
		t.Fatalf("a prefix of an identity finds %q", got)
	}

	// Renamed: the old identity is gone, the new one finds d1.
	mustApply(t, s, &store.Batch{Devices: []store.Device{pskDev("d1", "id-1b")}}, nil)
	if got := byPSK(t, s, "id-1"); got != "" {
		t.Errorf("old identity still finds %q", got)
	}
	if got := byPSK(t, s, "id-1b"); got != "d1" {
		t.Errorf("new identity finds %q, want d1", got)
	}
	// The freed identity may go to another device.
	mustApply(t, s, &store.Batch{Devices: []store.Device{pskDev("d3", "id-1")}}, nil)
	if got := byPSK(t, s, "id-1"); got != "d3" {
		t.Errorf("reused identity finds %q, want d3", got)
	}

	// An identity held by another device is refused, naming both; nothing changes.
	_, err := s.Apply(&store.Batch{Devices: []store.Device{pskDev("d4", "id-1b")}}, nil)
	ve := asValidation(t, err)
	if !hasProblem(ve, `devices "d4": psk_identity is already the identity of device "d1"`) {
		t.Errorf("problems %q do not name d4, psk_identity and d1", ve.Problems)
	}
	if _, err := s.Device("d4"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("d4 stored despite the rejection: %v", err)
	}
	if got := byPSK(t, s, "id-1b"); got != "d1" {
		t.Errorf("identity of d1 now finds %q", got)
	}
	// An existing device taking another's identity is refused too, and keeps its own.
	_, err = s.Apply(&store.Batch{Devices: []store.Device{pskDev("d2", "id-1b")}}, nil)
	asValidation(t, err)
	if got := byPSK(t, s, "id/2 with spaces"); got != "d2" {
		t.Errorf("after a refused rename, d2's identity finds %q", got)
	}
	// Two devices sharing one in the same batch: refused by validation.
	_, err = s.Apply(&store.Batch{Devices: []store.Device{pskDev("d5", "id-5"), pskDev("d6", "id-5")}}, nil)
	asValidation(t, err)
	if got := byPSK(t, s, "id-5"); got != "" {
		t.Errorf("identity of a refused batch finds %q", got)
	}

	// Dropping the PSK drops the index entry.
	mustApply(t, s, &store.Batch{Devices: []store.Device{{ID: "d3", Class: "sensor", Status: store.DeviceActive}}}, nil)
	if got := byPSK(t, s, "id-1"); got != "" {
		t.Errorf("identity d3 gave up finds %q", got)
	}
	// Deleting a device drops its entry.
	mustApply(t, s, &store.Batch{Delete: store.Deletions{Devices: []string{"d1"}}}, nil)
	if got := byPSK(t, s, "id-1b"); got != "" {
		t.Errorf("identity of deleted d1 finds %q", got)
	}

	// Replace rebuilds the index from the snapshot alone.
	if _, err := s.Replace(&store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}},
		Devices: []store.Device{pskDev("d7", "id-7"), pskDev("d8", "id/2 with spaces")},
	}, nil); err != nil {
		t.Fatal(err)
	}
	for identity, want := range map[string]string{"id-7": "d7", "id/2 with spaces": "d8", "id-1b": ""} {
		if got := byPSK(t, s, identity); got != want {
			t.Errorf("after Replace %q finds %q, want %q", identity, got, want)
		}
	}
	// A snapshot with a shared identity is refused whole.
	_, err = s.Replace(&store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}},
		Devices: []store.Device{pskDev("d9", "id-9"), pskDev("d10", "id-9")},
	}, nil)
	asValidation(t, err)
	if got := byPSK(t, s, "id-7"); got != "d7" {
		t.Errorf("after a refused Replace id-7 finds %q, want d7", got)
	}
}

// A store of schema 1 (no PSK index) gets the index built when opened, and
// is marked schema 2; an identity two devices already share is indexed for
// neither.
func TestSchema1StoreGetsPSKIndex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	mustApply(t, s, &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}},
		Devices: []store.Device{pskDev("d1", "id-1"), pskDev("d2", "shared"), {ID: "d3", Class: "sensor", Status: store.DeviceActive}},
	}, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it what schema 1 wrote: no x/psk/ keys, m/schema 1, and a
	// second holder of "shared" (schema 1 did not refuse it across batches).
	db := openBadger(t, dir)
	err := db.Update(func(txn *badger.Txn) error {
		for _, k := range []string{"x/psk/id-1", "x/psk/shared"} {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
		}
		if err := txn.Set([]byte("d/d4"), []byte(`{"id":"d4","class":"sensor","status":"active","psk_identity":"shared","psk":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}`)); err != nil {
			return err
		}
		one := make([]byte, 8)
		binary.BigEndian.PutUint64(one, 1)
		return txn.Set([]byte("m/schema"), one)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if got := byPSK(t, s, "id-1"); got != "d1" {
		t.Errorf("after migration id-1 finds %q, want d1", got)
	}
	if got := byPSK(t, s, "shared"); got != "" {
		t.Errorf("after migration an identity of two devices finds %q, want neither", got)
	}
	// Applies keep it from here on: d4 cannot be written with d2's identity.
	mustApply(t, s, &store.Batch{Devices: []store.Device{pskDev("d2", "id-2")}}, nil)
	if got := byPSK(t, s, "id-2"); got != "d2" {
		t.Errorf("id-2 finds %q, want d2", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db = openBadger(t, dir)
	defer db.Close()
	if got := binary.BigEndian.Uint64(schemaValue(t, db)); got != store.SchemaVersion {
		t.Errorf("m/schema after migration = %d, want %d", got, store.SchemaVersion)
	}
}
