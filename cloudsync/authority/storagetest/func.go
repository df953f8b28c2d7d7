package storagetest

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// 16 writers × 20 increments of one record made with ApplyLoggedFunc, the
// record read inside the committing transaction: none is lost and none
// conflicts (a change that must win is never starved by other writers),
// while 4 more writers race it with ordinary conditional commits. An error
// of build writes nothing and comes back.
func testApplyFuncWins(t *testing.T, hs []authority.Storage) {
	mustApply(t, hs[0], &store.Batch{Users: []store.User{{ID: "counter", Name: "0", Status: store.UserActive}}}, "setup")
	const writers, each = 16, 20
	stop := make(chan struct{})
	var racers sync.WaitGroup
	for w := range 4 {
		s := hs[w%len(hs)]
		racers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				u, err := s.User("counter")
				if err != nil {
					t.Error(err)
					return
				}
				u.Manager = "racer" // another field: the counter must survive it
				_, _ = s.ApplyLoggedBy((&store.Batch{Users: []store.User{u}}).ExpectRev(store.UserKey(u.ID), u.Rev), "racer")
			}
		})
	}
	var wg sync.WaitGroup
	for w := range writers {
		s := hs[w%len(hs)]
		wg.Go(func() {
			for range each {
				_, err := s.ApplyLoggedFunc("writer", func(r store.RecordReader) (*store.Batch, error) {
					u, ok, err := r.User("counter")
					if err != nil || !ok {
						return nil, errors.Join(err, errors.New("counter not found"))
					}
					n, _ := strconv.Atoi(u.Name)
					u.Name = strconv.Itoa(n + 1)
					return &store.Batch{Users: []store.User{u}}, nil
				})
				if err != nil {
					t.Errorf("ApplyLoggedFunc: %v (it must never conflict)", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	racers.Wait()
	for i, s := range hs {
		u, err := s.User("counter")
		if err != nil || u.Name != strconv.Itoa(writers*each) {
			t.Fatalf("handle %d: counter = %q (%v), want %d", i, u.Name, err, writers*each)
		}
	}
	before, _ := hs[0].Rev()
	refused := errors.New("no")
	if _, err := hs[0].ApplyLoggedFunc("writer", func(store.RecordReader) (*store.Batch, error) { return nil, refused }); !errors.Is(err, refused) {
		t.Errorf("build's error came back as %v", err)
	}
	if after, _ := hs[0].Rev(); after != before {
		t.Errorf("a refused build moved the rev from %d to %d", before, after)
	}
}
