package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

func TestExpectRevRefusesAStaleBatch(t *testing.T) {
	s := casStore(t)
	d := Device{ID: "dev-1", Class: "thermostat", Status: DeviceActive}
	if _, err := s.ApplyLogged((&Batch{Devices: []Device{d}}).ExpectRev(DeviceKey("dev-1"), 0)); err != nil {
		t.Fatalf("create with expect absent: %v", err)
	}
	read, _ := s.Device("dev-1") // the owner's page reads it
	revoked := read
	revoked.Status = DeviceRevoked // the admin revokes it
	if _, err := s.ApplyLogged((&Batch{Devices: []Device{revoked}}).ExpectRev(DeviceKey("dev-1"), read.Rev)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	head, _ := s.Rev()
	renamed := read // the page writes its stale read back, renamed
	renamed.Name = "kitchen"
	b := (&Batch{Devices: []Device{renamed}, Docs: []DocWrite{{Kind: "note", ID: "n1", Value: "x"}}}).ExpectRev(DeviceKey("dev-1"), read.Rev)
	_, err := s.ApplyLogged(b)
	wantConflict(t, err, "devices/dev-1")
	if got, _ := s.Device("dev-1"); got.Status != DeviceRevoked || got.Name != "" {
		t.Fatalf("after the refused stale write: %+v", got)
	}
	if rev, _ := s.Rev(); rev != head {
		t.Fatalf("rev moved from %d to %d: a refused batch was logged", head, rev)
	}
	var v string
	if err := s.GetDoc("note", "n1", &v); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused batch's document: %v", err)
	}
	// A record that must not exist, and exists; one expected and gone.
	_, err = s.ApplyLogged((&Batch{Devices: []Device{d}}).ExpectRev(DeviceKey("dev-1"), 0))
	wantConflict(t, err, "devices/dev-1")
	_, err = s.ApplyLogged((&Batch{Users: []User{{ID: "u", Status: UserActive}}}).ExpectRev(UserKey("u"), 7))
	wantConflict(t, err, "users/u")
	// An expectation alone (a record read, not written) is checked too.
	cur, _ := s.Device("dev-1")
	if _, err := s.ApplyLogged((&Batch{Users: []User{{ID: "u", Status: UserActive}}}).ExpectRev(DeviceKey("dev-1"), cur.Rev)); err != nil {
		t.Fatalf("expectation of a record read and not written: %v", err)
	}
	// A key that names no record kind is a validation error, not a conflict.
	_, err = s.ApplyLogged((&Batch{Users: []User{{ID: "v", Status: UserActive}}}).ExpectRev("device/dev-1", 1))
	var ve *ValidationError
	if !errors.As(err, &ve) || errors.Is(err, ErrConflict) {
		t.Fatalf("bad expect key: %v", err)
	}
}

// Many writers each add one to a counter kept in a record, by read, change
// and conditional commit, retrying from a fresh read on a conflict: no
// increment is lost. Without the expectation (a blind write of the read
// record) most of them are.
func TestExpectRevLosesNoUpdate(t *testing.T) {
	s := casStore(t)
	if _, err := s.ApplyLogged(&Batch{Users: []User{{ID: "counter", Name: "0", Status: UserActive}}}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 20
	var wg sync.WaitGroup
	var conflicts atomic.Int64
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					u, err := s.User("counter")
					if err != nil {
						t.Error(err)
						return
					}
					n, _ := strconv.Atoi(u.Name)
					u.Name = strconv.Itoa(n + 1)
					_, err = s.ApplyLogged((&Batch{Users: []User{u}}).ExpectRev(UserKey(u.ID), u.Rev))
					if errors.Is(err, ErrConflict) {
						conflicts.Add(1)
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	u, _ := s.User("counter")
	if u.Name != strconv.Itoa(writers*each) {
		t.Fatalf("counter = %s, want %d: updates were lost", u.Name, writers*each)
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

// Of 32 creations of one record that must not exist, with a document each
// (a registration: user and credential), exactly one commits, and the
// document left is the one that came with it.
func TestExpectAbsentOneCreationWins(t *testing.T) {
	s := casStore(t)
	const n = 32
	var wg sync.WaitGroup
	var won atomic.Int64
	winner := make(chan int, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			b := (&Batch{Users: []User{{ID: "alice", Name: fmt.Sprint(i), Status: UserActive}},
				Docs: []DocWrite{{Kind: "credential", ID: "alice", Value: fmt.Sprint(i)}}}).ExpectRev(UserKey("alice"), 0)
			_, err := s.ApplyLogged(b)
			switch {
			case err == nil:
				won.Add(1)
				winner <- i
			case !errors.Is(err, ErrConflict):
				t.Errorf("creation %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d creations committed, want exactly 1", won.Load())
	}
	w := <-winner
	u, _ := s.User("alice")
	var cred string
	_ = s.GetDoc("credential", "alice", &cred)
	if u.Name != fmt.Sprint(w) || cred != fmt.Sprint(w) {
		t.Fatalf("winner %d, user %q, credential %q: the record and its document are not the same commit's", w, u.Name, cred)
	}
}

func TestCommitDocsExpectations(t *testing.T) {
	s := casStore(t)
	if err := s.CommitDocs(nil, DocWrite{Kind: "code", ID: "c1", Value: "pending", ExpectAbsent: true}); err != nil {
		t.Fatal(err)
	}
	err := s.CommitDocs(nil, DocWrite{Kind: "code", ID: "c1", Value: "again", ExpectAbsent: true})
	wantConflict(t, err, "docs/code/c1")
	var v string
	ver, err := s.GetDocVersion("code", "c1", &v)
	if err != nil || ver == 0 || v != "pending" {
		t.Fatalf("GetDocVersion: %d %q %v", ver, v, err)
	}
	// A plain PutDoc meanwhile makes the version read stale.
	if err := s.PutDoc("code", "c1", "polled"); err != nil {
		t.Fatal(err)
	}
	err = s.CommitDocs(nil, DocWrite{Kind: "code", ID: "c1", Value: "approved", ExpectVersion: ver},
		DocWrite{Kind: "user-code", ID: "u1", Delete: true})
	wantConflict(t, err, "docs/code/c1")
	_ = s.GetDoc("code", "c1", &v)
	if v != "polled" {
		t.Fatalf("after a refused commit the document is %q", v)
	}
	// Fresh: both writes land together; a take (delete expecting the
	// version) of a document gone is a conflict.
	ver, _ = s.GetDocVersion("code", "c1", &v)
	if err := s.CommitDocs(nil, DocWrite{Kind: "code", ID: "c1", Value: "approved", ExpectVersion: ver},
		DocWrite{Kind: "other", ID: "o1", Value: 1}); err != nil {
		t.Fatal(err)
	}
	ver, _ = s.GetDocVersion("code", "c1", &v)
	if err := s.CommitDocs(nil, DocWrite{Kind: "code", ID: "c1", Delete: true, ExpectVersion: ver}); err != nil {
		t.Fatal(err)
	}
	err = s.CommitDocs(nil, DocWrite{Kind: "code", ID: "c1", Delete: true, ExpectVersion: ver})
	wantConflict(t, err, "docs/code/c1")
	// Documents decided from a record read: on condition of its revision.
	d := Device{ID: "dev-1", Class: "thermostat", Status: DeviceActive}
	rev, err := s.ApplyLogged(&Batch{Devices: []Device{d}})
	if err != nil {
		t.Fatal(err)
	}
	head, _ := s.Rev()
	if err := s.CommitDocs(map[string]uint64{DeviceKey("dev-1"): rev}, DocWrite{Kind: "code", ID: "c2", Value: "denied"}); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Rev(); after != head {
		t.Fatalf("CommitDocs moved the rev from %d to %d", head, after)
	}
	d.Owner = "bob"
	if _, err := s.ApplyLogged(&Batch{Devices: []Device{d}}); err != nil {
		t.Fatal(err)
	}
	err = s.CommitDocs(map[string]uint64{DeviceKey("dev-1"): rev}, DocWrite{Kind: "code", ID: "c3", Value: "denied"})
	wantConflict(t, err, "devices/dev-1")
	if err := s.GetDoc("code", "c3", &v); !errors.Is(err, ErrNotFound) {
		t.Fatalf("document of the refused commit: %v", err)
	}
	var ve *ValidationError
	if err := s.CommitDocs(nil, DocWrite{Kind: "a", ID: "1", ExpectAbsent: true, Delete: true}); !errors.As(err, &ve) {
		t.Fatalf("delete expecting absence: %v, want a validation error", err)
	}
}

// Many read-modify-writes of one document through CommitDocs lose nothing.
func TestCommitDocsLosesNoUpdate(t *testing.T) {
	s := casStore(t)
	if err := s.PutDoc("count", "c", 0); err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 20
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					var n int
					ver, err := s.GetDocVersion("count", "c", &n)
					if err != nil {
						t.Error(err)
						return
					}
					err = s.CommitDocs(nil, DocWrite{Kind: "count", ID: "c", Value: n + 1, ExpectVersion: ver})
					if errors.Is(err, ErrConflict) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	var n int
	_ = s.GetDoc("count", "c", &n)
	if n != writers*each {
		t.Fatalf("count = %d, want %d", n, writers*each)
	}
}

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
