package storagetest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// The change log is the feed: revisions are consecutive, committed in
// order, each entry the batch as committed with who and when.
func testLogConsecutive(t *testing.T, hs []authority.Storage) {
	base := mustRev(t, hs[0])
	started := time.Now()
	const writers, each = 8, 25
	type commit struct{ batch, by string }
	var mu sync.Mutex
	committed := map[uint64]commit{}
	var wg sync.WaitGroup
	for w := range writers {
		s := hs[w%len(hs)]
		wg.Go(func() {
			by := fmt.Sprintf("writer-%d", w)
			for i := range each {
				b := &store.Batch{Users: []store.User{{ID: fmt.Sprintf("w%d-%d", w, i), Name: by, Status: store.UserActive}}}
				rev, err := s.ApplyLoggedBy(b, by)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if _, dup := committed[rev]; dup {
					t.Errorf("rev %d committed twice", rev)
				}
				committed[rev] = commit{mustJSON(t, b), by}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const n = writers * each
	for r := base + 1; r <= base+n; r++ {
		if _, ok := committed[r]; !ok {
			t.Fatalf("rev %d was not returned by any commit: revisions are not consecutive", r)
		}
	}
	for i, s := range hs {
		if rev := mustRev(t, s); rev != base+n {
			t.Fatalf("handle %d: Rev = %d, want %d", i, rev, base+n)
		}
		es, err := s.LogSince(base, 2*n)
		if err != nil || len(es) != n {
			t.Fatalf("handle %d: LogSince: %d entries, %v; want %d", i, len(es), err, n)
		}
		for j, e := range es {
			c := committed[e.Rev]
			switch {
			case e.Rev != base+uint64(j)+1:
				t.Fatalf("handle %d: entry %d is rev %d, want %d: not in order", i, j, e.Rev, base+uint64(j)+1)
			case e.By != c.by:
				t.Fatalf("rev %d: By = %q, want %q", e.Rev, e.By, c.by)
			case e.At.IsZero() || e.At.Before(started.Add(-time.Minute)) || e.At.After(time.Now().Add(time.Minute)):
				t.Fatalf("rev %d: At = %v", e.Rev, e.At)
			}
			if got := mustJSON(t, e.Batch); got != c.batch {
				t.Fatalf("rev %d: logged %s, committed %s", e.Rev, got, c.batch)
			}
		}
		// Pages of it.
		page, err := s.LogSince(base+100, 10)
		if err != nil || len(page) != 10 || page[0].Rev != base+101 || page[9].Rev != base+110 {
			t.Fatalf("handle %d: LogSince(%d, 10) = %d entries from %v, %v", i, base+100, len(page), page, err)
		}
		if tail, err := s.LogSince(base+n, 10); err != nil || len(tail) != 0 {
			t.Fatalf("LogSince(head) = %d entries, %v; want none", len(tail), err)
		}
		if none, err := s.LogSince(base, 0); err != nil || len(none) != 0 {
			t.Fatalf("LogSince(_, 0) = %d entries, %v; want none", len(none), err)
		}
		snap, rev, err := s.Snapshot()
		if err != nil || rev != base+n || len(snap.Users) != n {
			t.Fatalf("handle %d: Snapshot at rev %d with %d users, %v; want rev %d with %d", i, rev, len(snap.Users), err, base+n, n)
		}
	}
}

// A snapshot taken while commits go on is one consistent view: at rev r it
// holds exactly what the commits up to r wrote.
func testSnapshotConsistent(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	base := withClass(t, s)
	const writers, each = 2, 30
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				d := device(fmt.Sprintf("d%d-%02d", w, i))
				d.Owner = "alice"
				// Each commit adds a device and a user, and rewrites the
				// writer's counter: all or nothing of it must be seen.
				b := &store.Batch{Devices: []store.Device{d}, Users: []store.User{{ID: d.ID, Status: store.UserActive},
					{ID: fmt.Sprintf("count-%d", w), Name: fmt.Sprint(i + 1), Status: store.UserActive}}}
				if _, err := s.ApplyLoggedBy(b, "writer"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	snaps := 0
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true // one more, after the last commit
		default:
		}
		b, rev, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		snaps++
		n := int(rev - base)
		if len(b.Devices) != n || len(b.Classes) != 1 {
			t.Fatalf("snapshot at rev %d: %d devices, %d classes; want %d and 1", rev, len(b.Devices), len(b.Classes), n)
		}
		counted, counters := 0, 0
		for _, u := range b.Users {
			if u.Rev > rev {
				t.Fatalf("snapshot at rev %d holds %s of rev %d", rev, u.ID, u.Rev)
			}
			if strings.HasPrefix(u.ID, "count-") {
				c, _ := strconv.Atoi(u.Name)
				counted += c
				counters++
			}
		}
		if counted != n || len(b.Users) != n+counters {
			t.Fatalf("snapshot at rev %d: counters say %d commits, %d users (%d counters); want %d commits", rev, counted, len(b.Users), counters, n)
		}
		if owned, err := s.DevicesOfOwner("alice"); err != nil || len(owned) < n {
			t.Fatalf("DevicesOfOwner after a snapshot at rev %d: %d, %v", rev, len(owned), err)
		}
	}
	if rev := mustRev(t, s); rev != base+writers*each {
		t.Fatalf("Rev = %d, want %d", rev, base+writers*each)
	}
	t.Logf("%d snapshots", snaps)
}

// watcher records what a storage's watchers are told.
type watcher struct {
	mu   sync.Mutex
	seen []store.Applied
}

func watch(s authority.Storage) *watcher {
	w := &watcher{}
	s.Watch(func(a store.Applied) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.seen = append(w.seen, a)
	})
	return w
}

func (w *watcher) revs() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []uint64
	for _, a := range w.seen {
		out = append(out, a.Rev)
	}
	return out
}

func (w *watcher) told(rev uint64) func() bool {
	return func() bool { return slices.Contains(w.revs(), rev) }
}

func (w *watcher) applied(rev uint64) store.Applied {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.seen {
		if a.Rev == rev {
			return a
		}
	}
	return store.Applied{}
}

// wantRevs fails unless the watcher was told of exactly from..to, once
// each, in order.
func (w *watcher) wantRevs(t testing.TB, from, to uint64) {
	t.Helper()
	var want []uint64
	for r := from; r <= to; r++ {
		want = append(want, r)
	}
	if got := w.revs(); !slices.Equal(got, want) {
		t.Fatalf("watchers were told of revs %v, want %v: each commit once, in order", got, want)
	}
}

// The watchers run after each commit with its rev, batch and the devices
// as they were; not for a refused batch.
func testWatch(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	w := watch(s)
	first := withClass(t, s)
	waitFor(t, "the watchers told of the first commit", w.told(first))
	d := device("d1")
	b1 := &store.Batch{Devices: []store.Device{d}}
	r1 := mustApply(t, s, b1, "create")
	waitFor(t, "the watchers told of the creation", w.told(r1))
	if a := w.applied(r1); a.Batch == nil || mustJSON(t, a.Batch) != mustJSON(t, b1) || len(a.Previous) != 0 || a.Replaced {
		t.Fatalf("told of the creation: %+v", a)
	}
	if _, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{{ID: "bad", Class: "toaster", Status: store.DeviceActive}}}, "bad"); err == nil {
		t.Fatal("an invalid batch was committed")
	}
	d.Owner = "alice"
	r2 := mustApply(t, s, &store.Batch{Devices: []store.Device{d}}, "pair")
	waitFor(t, "the watchers told of the pairing", w.told(r2))
	if a := w.applied(r2); a.Previous["d1"].Owner != "" || a.Previous["d1"].Rev != r1 || a.Batch.Devices[0].Owner != "alice" {
		t.Fatalf("told of the pairing: %+v", a)
	}
	r3 := mustApply(t, s, &store.Batch{Delete: store.Deletions{Devices: []string{"d1", "never"}}}, "delete")
	waitFor(t, "the watchers told of the deletion", w.told(r3))
	if a := w.applied(r3); a.Previous["d1"].Owner != "alice" || len(a.Previous) != 1 {
		t.Fatalf("told of the deletion: %+v", a)
	}
	w.wantRevs(t, first, r3)
}

// A commit on one handle reaches the watchers of the other (by rev alone),
// each rev once and in order, as the own commits of each reach its own
// (with their batch).
func testWatchOtherHandle(t *testing.T, a, b authority.Storage) {
	wa, wb := watch(a), watch(b)
	var last uint64
	for i := range 10 {
		s := a
		if i >= 7 {
			s = b
		}
		last = mustApply(t, s, &store.Batch{Users: []store.User{{ID: fmt.Sprint("u", i), Status: store.UserActive}}}, "writer")
	}
	waitFor(t, "the watchers of handle b told of the last commit", wb.told(last))
	waitFor(t, "the watchers of handle a told of the last commit", wa.told(last))
	wa.wantRevs(t, 1, last)
	wb.wantRevs(t, 1, last)
	for r := uint64(1); r <= last; r++ {
		own, other := wa, wb
		if r > 7 {
			own, other = wb, wa
		}
		if a := own.applied(r); a.Batch == nil || len(a.Batch.Users) != 1 {
			t.Fatalf("rev %d, told to the handle that committed it: %+v", r, a)
		}
		if a := other.applied(r); a.Batch != nil {
			t.Fatalf("rev %d, told to the other handle with a batch: %+v", r, a)
		}
	}
}
