package store

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// replaceChunk is the most records one transaction of a chunked snapshot
// carries at first: Badger caps a transaction at ~15% of a memtable (about
// 6,500 entries and 600 KB with a gateway's 4 MB ones), and each record also
// moves its index keys. A chunk still too large is halved (writeChunks).
const replaceChunk = 500

const kReplacing = pMeta + "replacing"

// ReplaceInterrupted reports whether a large snapshot was being applied when
// the process stopped: the store then mixes old and new records (no
// revocation is ever dropped before the end), and the next sync must start
// again from a snapshot.
func (s *Store) ReplaceInterrupted() (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte(kReplacing))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// replaceChunked applies a snapshot too large for one transaction. Order
// matters for safety if the process dies half-way: new records are written
// before stale revocations are removed, so the store never holds fewer
// revocations than either the old or the new state; the cursor moves last.
func (s *Store) replaceChunked(b *Batch, cursor *Cursor) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := b.validate(func(string) bool { return false }); err != nil {
		return 0, err
	}
	var rev uint64
	if err := s.db.Update(func(txn *badger.Txn) error {
		seq, err := getU64(txn, kSeq)
		rev = seq + 1
		if err != nil {
			return err
		}
		return txn.Set([]byte(kReplacing), u64(rev))
	}); err != nil {
		return 0, fmt.Errorf("replace: mark start: %w", err)
	}
	if err := s.db.Sync(); err != nil {
		return 0, fmt.Errorf("replace: %w", err)
	}

	keep := map[string]bool{}
	for _, c := range b.Classes {
		keep[pClass+c.Name] = true
	}
	for _, d := range b.Devices {
		keep[pDevice+d.ID] = true
	}
	for _, u := range b.Users {
		keep[pUser+u.ID] = true
	}
	for _, g := range b.Grants {
		keep[pGrant+g.ID] = true
	}
	for _, i := range b.Issuers {
		keep[pIssuer+i.Issuer] = true
	}
	for _, r := range b.Revocations {
		keep[pRevoke+r.Key()] = true
	}
	// Indexes are rebuilt from the snapshot's devices; stale records go.
	if err := s.deleteKeys("x/", func(string) bool { return true }); err != nil {
		return 0, err
	}
	for _, p := range []string{pDevice, pUser, pGrant, pIssuer, pClass} {
		if err := s.deleteKeys(p, func(k string) bool { return !keep[k] }); err != nil {
			return 0, err
		}
	}
	if err := s.writeChunks(splitBatch(b, replaceChunk), rev); err != nil {
		return 0, fmt.Errorf("replace: write records: %w", err)
	}
	if err := s.deleteKeys(pRevoke, func(k string) bool { return !keep[k] }); err != nil {
		return 0, err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte(kSeq), u64(rev)); err != nil {
			return err
		}
		if cursor != nil {
			if err := putJSON(txn, kCursor, cursor); err != nil {
				return err
			}
		}
		return txn.Delete([]byte(kReplacing))
	}); err != nil {
		return 0, fmt.Errorf("replace: finish: %w", err)
	}
	syncErr := s.db.Sync()
	a := Applied{Rev: rev, Batch: b, Previous: map[string]Device{}, Replaced: true}
	for _, w := range s.watchers {
		w(a)
	}
	if syncErr != nil {
		return rev, fmt.Errorf("replace: committed, but sync to disk failed: %w", syncErr)
	}
	return rev, nil
}

// deleteKeys deletes, in transactions of half what one may hold (keys and
// bytes), every key under prefix for which drop is true.
func (s *Store) deleteKeys(prefix string, drop func(key string) bool) error {
	var keys [][]byte
	if err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().KeyCopy(nil); drop(string(k)) {
				keys = append(keys, k)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("replace: list %s: %w", prefix, err)
	}
	// A deletion costs Badger its key and ~12 bytes (16 counted); keys run
	// up to ~1 KB (a revocation's value), so a chunk is bounded in bytes too.
	maxN, maxBytes := int(s.db.MaxBatchCount()/2), int(s.db.MaxBatchSize()/2)
	for len(keys) > 0 {
		n, size := 0, 0
		for n < len(keys) && n < maxN && (n == 0 || size+len(keys[n])+16 <= maxBytes) {
			size += len(keys[n]) + 16
			n++
		}
		chunk := keys[:n]
		keys = keys[n:]
		if err := s.db.Update(func(txn *badger.Txn) error {
			for _, k := range chunk {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("replace: delete %s: %w", prefix, err)
		}
	}
	return nil
}

// writeChunks writes each part in a transaction of its own, in order; a
// part too large for one (large records) is halved until it fits.
func (s *Store) writeChunks(parts []*Batch, rev uint64) error {
	for _, part := range parts {
		err := s.db.Update(func(txn *badger.Txn) error { return writeRecords(txn, part, rev, map[string]Device{}) })
		if errors.Is(err, badger.ErrTxnTooBig) && part.Size() > 1 {
			err = s.writeChunks(splitBatch(part, (part.Size()+1)/2), rev)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// splitBatch cuts b's records into batches of at most n, classes first (the
// devices that name them come later).
func splitBatch(b *Batch, n int) []*Batch {
	var out []*Batch
	cur := &Batch{}
	size := 0
	flush := func() {
		if size > 0 {
			out = append(out, cur)
			cur, size = &Batch{}, 0
		}
	}
	add := func(f func()) {
		if size == n {
			flush()
		}
		f()
		size++
	}
	for _, c := range b.Classes {
		add(func() { cur.Classes = append(cur.Classes, c) })
	}
	for _, i := range b.Issuers {
		add(func() { cur.Issuers = append(cur.Issuers, i) })
	}
	for _, u := range b.Users {
		add(func() { cur.Users = append(cur.Users, u) })
	}
	for _, d := range b.Devices {
		add(func() { cur.Devices = append(cur.Devices, d) })
	}
	for _, g := range b.Grants {
		add(func() { cur.Grants = append(cur.Grants, g) })
	}
	for _, r := range b.Revocations {
		add(func() { cur.Revocations = append(cur.Revocations, r) })
	}
	flush()
	return out
}
