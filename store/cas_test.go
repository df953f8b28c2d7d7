package store

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Issue 16: a read-modify-write of a record is one conditional commit
// (cas.go). These tests hold the store to it: a batch made from a record
// that changed meanwhile writes nothing, many writers racing on one record
// lose no update, documents commit with records in one transaction, and the
// expectations are read inside the committing transaction.

func casStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.ApplyLogged(&Batch{Classes: []DeviceClass{{Name: "thermostat"}}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func wantConflict(t *testing.T, err error, key string) {
	t.Helper()
	var ce *ConflictError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) || ce.Key != key {
		t.Fatalf("err = %v, want a conflict on %q", err, key)
	}
}

// The conditional-commit races (a stale batch, no lost update, one creation
// of many, document expectations) are the conformance suite's
// (cloudsync/authority/storagetest), run on this store by
// storage_conformance_test.go; what is Badger's own stays here.

// The expectations are read inside the committing transaction: a document
// written by another transaction after the check and before the commit
// (here from the test hook, between the two) makes Badger refuse the
// commit, and the store answers a conflict, having written nothing.
func TestExpectationsAreInTheCommittingTransaction(t *testing.T) {
	s := casStore(t)
	if err := s.PutDoc("pairing", "p1", "pending"); err != nil {
		t.Fatal(err)
	}
	var v string
	ver, _ := s.GetDocVersion("pairing", "p1", &v)
	var once sync.Once
	s.beforeCommit = func(*Batch) error {
		var err error
		once.Do(func() { err = s.PutDoc("pairing", "p1", "polled meanwhile") })
		return err
	}
	d := Device{ID: "dev-1", Class: "thermostat", Status: DeviceActive, Owner: "alice"}
	b := (&Batch{Devices: []Device{d}, Docs: []DocWrite{{Kind: "pairing", ID: "p1", Value: "approved", ExpectVersion: ver}}}).ExpectRev(DeviceKey("dev-1"), 0)
	_, err := s.ApplyLogged(b)
	wantConflict(t, err, "")
	if _, err := s.Device("dev-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the device of the refused commit: %v", err)
	}
	_ = s.GetDoc("pairing", "p1", &v)
	if v != "polled meanwhile" {
		t.Fatalf("pairing = %q", v)
	}
}

// A failure anywhere before the commit leaves neither the records nor the
// documents of the batch: they are one commit.
func TestRecordsAndDocumentsCommitTogether(t *testing.T) {
	s := casStore(t)
	head, _ := s.Rev()
	s.beforeCommit = func(*Batch) error { return errors.New("disk on fire") }
	d := Device{ID: "dev-1", Class: "thermostat", Status: DeviceActive, Owner: "alice"}
	_, err := s.ApplyLogged(&Batch{Devices: []Device{d}, Docs: []DocWrite{{Kind: "pairing", ID: "p1", Value: "approved"}}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
	var v string
	if _, err := s.Device("dev-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("device after the failed commit: %v", err)
	}
	if err := s.GetDoc("pairing", "p1", &v); !errors.Is(err, ErrNotFound) {
		t.Fatalf("document after the failed commit: %v", err)
	}
	if rev, _ := s.Rev(); rev != head {
		t.Fatal("rev moved")
	}
	s.beforeCommit = nil
	if _, err := s.ApplyLogged(&Batch{Devices: []Device{d}, Docs: []DocWrite{{Kind: "pairing", ID: "p1", Value: "approved"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.GetDoc("pairing", "p1", &v); err != nil || v != "approved" {
		t.Fatalf("document: %q %v", v, err)
	}
}

// Expectations and documents are the committing process's own: they are
// not in the batch's JSON, so never in the change log, a sync batch or an
// import; a snapshot (Replace) is not a conditional commit.
func TestExpectAndDocsStayOutOfTheLog(t *testing.T) {
	s := casStore(t)
	b := (&Batch{Users: []User{{ID: "alice", Status: UserActive}},
		Docs: []DocWrite{{Kind: "credential", ID: "alice", Value: "secret-hash"}}}).ExpectRev(UserKey("alice"), 0)
	raw, _ := json.Marshal(b)
	if strings.Contains(string(raw), "secret-hash") || strings.Contains(string(raw), "users/alice") {
		t.Fatalf("batch JSON carries docs or expectations: %s", raw)
	}
	rev, err := s.ApplyLoggedBy(b, "registration")
	if err != nil {
		t.Fatal(err)
	}
	es, _ := s.LogSince(rev-1, 10)
	if len(es) != 1 || len(es[0].Batch.Docs) != 0 || len(es[0].Batch.Expect) != 0 {
		t.Fatalf("log entry: %+v", es)
	}
	raw, _ = json.Marshal(es[0])
	if strings.Contains(string(raw), "secret-hash") {
		t.Fatal("the credential reached the log")
	}
	_, err = s.Replace((&Batch{Classes: []DeviceClass{{Name: "thermostat"}}}).ExpectRev(ClassKey("thermostat"), 1), nil)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Replace with expectations: %v", err)
	}
}
