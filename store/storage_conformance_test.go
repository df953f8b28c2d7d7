package store_test

import (
	"log/slog"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/authority/storagetest"
	"github.com/edgeid/edgeid/store"
)

// The Badger store passes the conformance suite of the authority's storage
// (the suite PostgreSQL's store/pgstore passes too).
func TestStorageConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) authority.Storage {
		// On disk: in memory, Badger refuses values over 1 KB (no value log).
		s, err := store.Open(store.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
