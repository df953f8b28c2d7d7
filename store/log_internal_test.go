package store

import (
	"encoding/json"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Issue 15: the change log records who made each change (ApplyLoggedBy) and
// when; entries logged before that (a bare Batch), and by ApplyLogged, read
// back with By empty; a newer entry still decodes as a plain Batch, so an
// older reader of the log is not broken by the new fields.
func TestChangeLogRecordsWho(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	class := DeviceClass{Name: "thermostat", Permissions: nil}
	if _, err := s.ApplyLogged(&Batch{Classes: []DeviceClass{class}}); err != nil {
		t.Fatal(err)
	}
	// Rev 1 as the log held it before By: the batch alone.
	old, _ := json.Marshal(&Batch{Classes: []DeviceClass{class}})
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(logKey(1), old) }); err != nil {
		t.Fatal(err)
	}
	before := time.Now().UTC().Add(-time.Second)
	if _, err := s.ApplyLoggedBy(&Batch{Devices: []Device{{ID: "dev-1", Class: "thermostat", Status: DeviceActive}}}, "admin:ops-alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyLogged(&Batch{Devices: []Device{{ID: "dev-2", Class: "thermostat", Status: DeviceActive}}}); err != nil {
		t.Fatal(err)
	}
	es, err := s.LogSince(0, 10)
	if err != nil || len(es) != 3 {
		t.Fatalf("LogSince: %d entries, %v", len(es), err)
	}
	if e := es[0]; e.Rev != 1 || e.By != "" || !e.At.IsZero() || len(e.Batch.Classes) != 1 || e.Batch.Classes[0].Name != "thermostat" {
		t.Errorf("entry from before By: %+v", e)
	}
	if e := es[1]; e.Rev != 2 || e.By != "admin:ops-alice" || e.At.Before(before) || len(e.Batch.Devices) != 1 || e.Batch.Devices[0].ID != "dev-1" {
		t.Errorf("entry with By: %+v", e)
	}
	if e := es[2]; e.By != "" || e.At.IsZero() || e.Batch.Devices[0].ID != "dev-2" {
		t.Errorf("ApplyLogged entry: %+v", e)
	}
	// What is stored for rev 2 is still a Batch to a reader that knows no By.
	var raw []byte
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(2))
		if err != nil {
			return err
		}
		raw, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var b Batch
	if err := json.Unmarshal(raw, &b); err != nil || len(b.Devices) != 1 || b.Devices[0].ID != "dev-1" {
		t.Fatalf("stored entry %s as a Batch: %+v, %v", raw, b, err)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if m["logged_by"] != "admin:ops-alice" {
		t.Fatalf("stored entry %s: no logged_by", raw)
	}
}
