package storagetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// Conditional commits (issue 16), ported from store/cas_test.go to every
// backend: a batch made from a record that changed meanwhile writes
// nothing; writers racing on one record or document lose no update; of
// creations of one record one wins, with its documents.

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func testStaleExpect(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	withClass(t, s)
	d := device("dev-1")
	if _, err := s.ApplyLoggedBy((&store.Batch{Devices: []store.Device{d}}).ExpectRev(store.DeviceKey("dev-1"), 0), "create"); err != nil {
		t.Fatalf("create expecting absence: %v", err)
	}
	read, err := s.Device("dev-1") // the owner's page reads it
	if err != nil {
		t.Fatal(err)
	}
	revoked := read
	revoked.Status = store.DeviceRevoked // the admin revokes it
	if _, err := s.ApplyLoggedBy((&store.Batch{Devices: []store.Device{revoked}}).ExpectRev(store.DeviceKey("dev-1"), read.Rev), "admin"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	before := snapshotJSON(t, s)
	renamed := read // the page writes its stale read back, renamed
	renamed.Name = "kitchen"
	b := (&store.Batch{Devices: []store.Device{renamed}, Docs: []store.DocWrite{{Kind: "note", ID: "n1", Value: "x"}}}).ExpectRev(store.DeviceKey("dev-1"), read.Rev)
	_, err = s.ApplyLoggedBy(b, "page")
	wantConflict(t, err, "devices/dev-1")
	if ce := (*store.ConflictError)(nil); errors.As(err, &ce) && (ce.Want != read.Rev || ce.Got != read.Rev+1) {
		t.Fatalf("conflict %+v, want Want %d Got %d", ce, read.Rev, read.Rev+1)
	}
	if got, _ := s.Device("dev-1"); got.Status != store.DeviceRevoked || got.Name != "" {
		t.Fatalf("after the refused stale write: %+v", got)
	}
	var v string
	if err := s.GetDoc("note", "n1", &v); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused batch's document: %v", err)
	}
	// A record that must not exist, and exists; one expected and absent.
	_, err = s.ApplyLoggedBy((&store.Batch{Devices: []store.Device{d}}).ExpectRev(store.DeviceKey("dev-1"), 0), "create")
	wantConflict(t, err, "devices/dev-1")
	_, err = s.ApplyLoggedBy((&store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}}}).ExpectRev(store.UserKey("u"), 7), "stale")
	wantConflict(t, err, "users/u")
	// Of several expectations, the first failing in key order is named.
	_, err = s.ApplyLoggedBy(&store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}},
		Expect: map[string]uint64{store.UserKey("u"): 3, store.DeviceKey("dev-1"): 1, store.ClassKey(class): 1}}, "stale")
	wantConflict(t, err, "devices/dev-1")
	if after := snapshotJSON(t, s); after != before {
		t.Fatalf("refused batches changed the store:\nbefore %s\nafter  %s", before, after)
	}
	// An expectation alone (a record read, not written) is checked too.
	cur, _ := s.Device("dev-1")
	if _, err := s.ApplyLoggedBy((&store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}}}).ExpectRev(store.DeviceKey("dev-1"), cur.Rev), "ok"); err != nil {
		t.Fatalf("expectation of a record read and not written: %v", err)
	}
	// A key that names no kind of record is a validation error, not a conflict.
	for _, key := range []string{"device/dev-1", "devices/", "revocations/jti/x"} {
		_, err = s.ApplyLoggedBy((&store.Batch{Users: []store.User{{ID: "v", Status: store.UserActive}}}).ExpectRev(key, 1), "bad")
		wantValidation(t, err, fmt.Sprintf("expect %q: name a record as devices/<id>, users/<id>, grants/<id>, classes/<name> or issuers/<issuer>", key))
		if errors.Is(err, store.ErrConflict) {
			t.Fatalf("bad expect key %q: %v is a conflict", key, err)
		}
	}
}

// Many writers each add one to a counter kept in a record, by read, change
// and conditional commit, retrying from a fresh read on a conflict: no
// increment is lost. (A blind write of the record read loses most.)
func testNoLostUpdate(t *testing.T, hs []authority.Storage) {
	mustApply(t, hs[0], &store.Batch{Users: []store.User{{ID: "counter", Name: "0", Status: store.UserActive}}}, "setup")
	const writers, each = 16, 20
	var wg sync.WaitGroup
	var conflicts atomic.Int64
	for w := range writers {
		s := hs[w%len(hs)]
		wg.Go(func() {
			for range each {
				for {
					u, err := s.User("counter")
					if err != nil {
						t.Error(err)
						return
					}
					n, _ := strconv.Atoi(u.Name)
					u.Name = strconv.Itoa(n + 1)
					_, err = s.ApplyLoggedBy((&store.Batch{Users: []store.User{u}}).ExpectRev(store.UserKey(u.ID), u.Rev), "writer")
					if errors.Is(err, store.ErrConflict) {
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
		})
	}
	wg.Wait()
	for i, s := range hs {
		u, err := s.User("counter")
		if err != nil || u.Name != strconv.Itoa(writers*each) {
			t.Fatalf("handle %d: counter = %q (%v), want %d: updates were lost", i, u.Name, err, writers*each)
		}
	}
	t.Logf("%d conflicts retried", conflicts.Load())
}

// Of 32 creations of one record that must not exist, each with its
// document (a registration: user and credential), exactly one commits,
// and the document left is the one that came with it.
func testOneCreationWins(t *testing.T, hs []authority.Storage) {
	const n = 32
	var wg sync.WaitGroup
	var won atomic.Int64
	winner := make(chan int, n)
	start := make(chan struct{})
	for i := range n {
		s := hs[i%len(hs)]
		wg.Go(func() {
			<-start
			b := (&store.Batch{Users: []store.User{{ID: "alice", Name: fmt.Sprint(i), Status: store.UserActive}},
				Docs: []store.DocWrite{{Kind: "credential", ID: "alice", Value: fmt.Sprint(i)}}}).ExpectRev(store.UserKey("alice"), 0)
			_, err := s.ApplyLoggedBy(b, "registration")
			switch {
			case err == nil:
				won.Add(1)
				winner <- i
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("creation %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d creations committed, want exactly 1", won.Load())
	}
	w := <-winner
	for i, s := range hs {
		u, err := s.User("alice")
		var cred string
		err2 := s.GetDoc("credential", "alice", &cred)
		if err != nil || err2 != nil || u.Name != fmt.Sprint(w) || cred != fmt.Sprint(w) {
			t.Fatalf("handle %d: winner %d, user %q (%v), credential %q (%v): the record and its document are not the same commit's",
				i, w, u.Name, err, cred, err2)
		}
	}
	if es, err := hs[0].LogSince(0, 100); err != nil || len(es) != 1 {
		t.Fatalf("log: %d entries, %v; want the one creation", len(es), err)
	}
}

// CommitDocs: documents alone, on condition of their versions and of
// records' revisions, all or nothing, with no rev.
func testDocExpectations(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	withClass(t, s)
	if err := s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Value: "pending", ExpectAbsent: true}); err != nil {
		t.Fatal(err)
	}
	err := s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Value: "again", ExpectAbsent: true})
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
	err = s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Value: "approved", ExpectVersion: ver},
		store.DocWrite{Kind: "user-code", ID: "u1", Delete: true}, store.DocWrite{Kind: "other", ID: "o0", Value: 0})
	wantConflict(t, err, "docs/code/c1")
	_ = s.GetDoc("code", "c1", &v)
	if v != "polled" {
		t.Fatalf("after a refused commit the document is %q", v)
	}
	var n int
	if err := s.GetDoc("other", "o0", &n); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another document of the refused commit: %v", err)
	}
	// Fresh: both writes land together; a take (delete expecting the
	// version) of a document gone is a conflict.
	ver, _ = s.GetDocVersion("code", "c1", &v)
	if err := s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Value: "approved", ExpectVersion: ver},
		store.DocWrite{Kind: "other", ID: "o1", Value: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.GetDoc("other", "o1", &n); err != nil || n != 1 {
		t.Fatalf("document o1: %d %v", n, err)
	}
	ver2, _ := s.GetDocVersion("code", "c1", &v)
	if v != "approved" || ver2 == ver {
		t.Fatalf("after the write: %q version %d (was %d)", v, ver2, ver)
	}
	if err := s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Delete: true, ExpectVersion: ver2}); err != nil {
		t.Fatal(err)
	}
	err = s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Delete: true, ExpectVersion: ver2})
	wantConflict(t, err, "docs/code/c1")
	// Created again, it is a new version: the one read before the delete
	// does not match it.
	if err := s.PutDoc("code", "c1", "new"); err != nil {
		t.Fatal(err)
	}
	err = s.CommitDocs(nil, store.DocWrite{Kind: "code", ID: "c1", Value: "stale", ExpectVersion: ver2})
	wantConflict(t, err, "docs/code/c1")
	// Documents decided from a record read: on condition of its revision.
	rev := mustApply(t, s, &store.Batch{Devices: []store.Device{device("dev-1")}}, "setup")
	head := mustRev(t, s)
	if err := s.CommitDocs(map[string]uint64{store.DeviceKey("dev-1"): rev}, store.DocWrite{Kind: "code", ID: "c2", Value: "denied"}); err != nil {
		t.Fatal(err)
	}
	if after := mustRev(t, s); after != head {
		t.Fatalf("CommitDocs moved the rev from %d to %d", head, after)
	}
	d := device("dev-1")
	d.Owner = "bob"
	mustApply(t, s, &store.Batch{Devices: []store.Device{d}}, "pair")
	err = s.CommitDocs(map[string]uint64{store.DeviceKey("dev-1"): rev}, store.DocWrite{Kind: "code", ID: "c3", Value: "denied"})
	wantConflict(t, err, "devices/dev-1")
	err = s.CommitDocs(map[string]uint64{store.UserKey("bob"): 0, store.DeviceKey("nope"): 4}, store.DocWrite{Kind: "code", ID: "c3", Value: "denied"})
	wantConflict(t, err, "devices/nope")
	if err := s.GetDoc("code", "c3", &v); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("document of the refused commit: %v", err)
	}
	if err := s.CommitDocs(map[string]uint64{store.UserKey("bob"): 0}, store.DocWrite{Kind: "code", ID: "c3", Value: "ok"}); err != nil {
		t.Fatalf("expecting a user absent: %v", err)
	}
	var ve *store.ValidationError
	if err := s.CommitDocs(nil, store.DocWrite{Kind: "a", ID: "1", ExpectAbsent: true, Delete: true}); !errors.As(err, &ve) {
		t.Fatalf("delete expecting absence: %v, want a validation error", err)
	}
	if err := s.CommitDocs(map[string]uint64{"device/x": 1}, store.DocWrite{Kind: "a", ID: "1", Value: 1}); !errors.As(err, &ve) {
		t.Fatalf("a bad expect key: %v, want a validation error", err)
	}
	if err := s.CommitDocs(nil, store.DocWrite{Kind: "a", ID: "1", Value: 1}, store.DocWrite{Kind: "a", ID: "1", Value: 2}); !errors.As(err, &ve) {
		t.Fatalf("a document written twice: %v, want a validation error", err)
	}
}

// Documents in a batch (Batch.Docs) commit with its records, on their own
// expectations: one failing refuses the whole batch.
func testBatchDocExpectations(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	withClass(t, s)
	if err := s.PutDoc("pairing", "p1", "pending"); err != nil {
		t.Fatal(err)
	}
	var v string
	ver, err := s.GetDocVersion("pairing", "p1", &v)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutDoc("pairing", "p1", "polled"); err != nil { // meanwhile
		t.Fatal(err)
	}
	before := snapshotJSON(t, s)
	d := device("dev-1")
	d.Owner = "alice"
	approve := func(ver uint64) *store.Batch {
		return &store.Batch{Devices: []store.Device{d}, Docs: []store.DocWrite{
			{Kind: "pairing", ID: "p1", Value: "approved", ExpectVersion: ver},
			{Kind: "user-code", ID: "ABCD", Delete: true},
			{Kind: "audit", ID: "a1", Value: "approved p1", ExpectAbsent: true},
		}}
	}
	_, err = s.ApplyLoggedBy(approve(ver), "owner alice")
	wantConflict(t, err, "docs/pairing/p1")
	if after := snapshotJSON(t, s); after != before {
		t.Fatalf("the refused batch changed the records:\nbefore %s\nafter  %s", before, after)
	}
	if err := s.GetDoc("audit", "a1", &v); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused batch's document: %v", err)
	}
	if err := s.PutDoc("user-code", "ABCD", "p1"); err != nil {
		t.Fatal(err)
	}
	ver, _ = s.GetDocVersion("pairing", "p1", &v)
	rev := mustApply(t, s, approve(ver), "owner alice")
	if got, err := s.Device("dev-1"); err != nil || got.Owner != "alice" || got.Rev != rev {
		t.Fatalf("device: %+v, %v", got, err)
	}
	if err := s.GetDoc("pairing", "p1", &v); err != nil || v != "approved" {
		t.Fatalf("pairing: %q %v", v, err)
	}
	if err := s.GetDoc("user-code", "ABCD", &v); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("user code: %v, want it deleted", err)
	}
	// The same again: the audit document now exists.
	ver, _ = s.GetDocVersion("pairing", "p1", &v)
	_, err = s.ApplyLoggedBy(approve(ver), "owner alice")
	wantConflict(t, err, "docs/audit/a1")
	// Neither expectations nor documents are logged.
	es, err := s.LogSince(rev-1, 10)
	if err != nil || len(es) != 1 {
		t.Fatalf("LogSince: %+v, %v", es, err)
	}
	if len(es[0].Batch.Docs) != 0 || len(es[0].Batch.Expect) != 0 {
		t.Fatalf("log entry carries documents or expectations: %+v", es[0].Batch)
	}
}

// Many read-modify-writes of one document through CommitDocs lose nothing.
func testCommitDocsNoLostUpdate(t *testing.T, hs []authority.Storage) {
	if err := hs[0].PutDoc("count", "c", 0); err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 20
	var wg sync.WaitGroup
	for w := range writers {
		s := hs[w%len(hs)]
		wg.Go(func() {
			for range each {
				for {
					var n int
					ver, err := s.GetDocVersion("count", "c", &n)
					if err != nil {
						t.Error(err)
						return
					}
					err = s.CommitDocs(nil, store.DocWrite{Kind: "count", ID: "c", Value: n + 1, ExpectVersion: ver})
					if errors.Is(err, store.ErrConflict) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	for i, s := range hs {
		var n int
		if err := s.GetDoc("count", "c", &n); err != nil || n != writers*each {
			t.Fatalf("handle %d: count = %d (%v), want %d", i, n, err, writers*each)
		}
	}
}

// Of 16 takers of one document, exactly one gets it.
func testTakeDocOnce(t *testing.T, hs []authority.Storage) {
	for round := range 3 {
		id := fmt.Sprint("code-", round)
		if err := hs[0].PutDoc("enroll", id, "secret"); err != nil {
			t.Fatal(err)
		}
		const n = 16
		var wg sync.WaitGroup
		var got atomic.Int64
		start := make(chan struct{})
		for i := range n {
			s := hs[i%len(hs)]
			wg.Go(func() {
				<-start
				var v string
				err := s.TakeDoc("enroll", id, &v)
				switch {
				case err == nil:
					if v != "secret" {
						t.Errorf("taken %q", v)
					}
					got.Add(1)
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("TakeDoc: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if got.Load() != 1 {
			t.Fatalf("round %d: %d takers got the document, want exactly 1", round, got.Load())
		}
		var v string
		if err := hs[len(hs)-1].GetDoc("enroll", id, &v); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the document after it was taken: %q %v", v, err)
		}
	}
}

// PutDoc, GetDoc, GetDocVersion, DeleteDoc and ListDocs.
func testDocuments(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	type gw struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	for _, id := range []string{"gw-b", "gw-a", "gw-c"} {
		if err := s.PutDoc("gateway", id, gw{Name: id, N: len(id)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutDoc("other", "gw-z", gw{}); err != nil {
		t.Fatal(err)
	}
	var g gw
	if err := s.GetDoc("gateway", "gw-a", &g); err != nil || g.Name != "gw-a" {
		t.Fatalf("GetDoc: %+v %v", g, err)
	}
	if err := s.GetDoc("gateway", "nope", &g); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetDoc of none: %v", err)
	}
	if _, err := s.GetDocVersion("gateway", "nope", &g); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetDocVersion of none: %v", err)
	}
	v1, _ := s.GetDocVersion("gateway", "gw-a", &g)
	if err := s.PutDoc("gateway", "gw-a", gw{Name: "gw-a", N: 9}); err != nil {
		t.Fatal(err)
	}
	v2, err := s.GetDocVersion("gateway", "gw-a", &g)
	if err != nil || v2 == v1 || v1 == 0 || g.N != 9 {
		t.Fatalf("versions %d then %d, %+v %v: a write must change the version", v1, v2, g, err)
	}
	var ids []string
	var raws []string
	if err := s.ListDocs("gateway", func(id string, raw []byte) error {
		ids = append(ids, id)
		raws = append(raws, string(raw))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"gw-a", "gw-b", "gw-c"}) {
		t.Fatalf("ListDocs ids = %q, want them in order, of the kind alone", ids)
	}
	if raws[0] != `{"name":"gw-a","n":9}` {
		t.Fatalf("ListDocs raw = %s", raws[0])
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.ListDocs("gateway", func(string, []byte) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ListDocs with fn failing: %v after %d calls", err, calls)
	}
	if err := s.DeleteDoc("gateway", "gw-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDoc("gateway", "gw-b"); err != nil {
		t.Fatalf("deleting a document that is gone: %v", err)
	}
	if err := s.GetDoc("gateway", "gw-b", &g); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetDoc after DeleteDoc: %v", err)
	}
	var took gw
	if err := s.TakeDoc("gateway", "gw-c", &took); err != nil || took.Name != "gw-c" {
		t.Fatalf("TakeDoc: %+v %v", took, err)
	}
	if err := s.TakeDoc("gateway", "gw-c", &took); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TakeDoc again: %v", err)
	}
	if err := s.PutDoc("bad/kind", "x", 1); err == nil {
		t.Fatal("PutDoc accepted a kind with a slash")
	}
	// Documents are not records: no rev, no log.
	if rev := mustRev(t, s); rev != 0 {
		t.Fatalf("documents moved the rev to %d", rev)
	}
}
