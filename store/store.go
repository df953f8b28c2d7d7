// Package store keeps the gateway's local state in Badger: devices, classes,
// users, grants, trusted issuers, revocations and the sync cursor. Every change
// arrives as a Batch, validated whole and applied in one transaction, so the
// gateway decides from a consistent store while its uplink is down.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// SchemaVersion is the layout of keys and records this code reads and writes.
// 2 added the PSK identity index x/psk/; Open builds it in a store of version 1.
// 3 added the sites bookkeeping of a logged store (x/reach/, x/site/,
// x/gdev/; sites_badger.go); Open builds it in a logged store of version 2.
const SchemaVersion = 3

// Key prefixes. One byte-string namespace per record type keeps prefix scans cheap.
const (
	pMeta      = "m/"
	pClass     = "c/"
	pDevice    = "d/"
	pUser      = "u/"
	pGrant     = "g/"
	pIssuer    = "i/"
	pRevoke    = "r/"
	pIdxCertFP = "x/fp/"
	pIdxCertIS = "x/is/"
	pIdxOwner  = "x/own/"
	pIdxPSK    = "x/psk/"
	pLog       = "l/"
	kSchema    = pMeta + "schema"
	kSeq       = pMeta + "seq"
	kCursor    = pMeta + "cursor"
)

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("not found")

// Options tunes the store. Zero values take the defaults sized for a 512 MB board.
type Options struct {
	// Dir holds the Badger files. Empty with InMemory for tests.
	Dir      string
	InMemory bool
	Logger   *slog.Logger
	// Gateway sizes Badger for a gateway's store (see badgerOptions);
	// without it, for an authority's.
	Gateway bool
	// MemTableSize, when set, is the size of each of Badger's two
	// memtables, instead of 16 MB (GatewayMemTableSize with Gateway).
	MemTableSize int64
}

// GatewayMemTableSize is a gateway's memtable size. A memtable is one Go
// heap allocation that counts, untouched or not, in the collector's goal, so
// 16 MB of it kept as much garbage again resident (docs/BENCHMARKS.md, "Lean
// connections"); a gateway writes only sync batches. It caps one
// transaction at ~15% of it (about 600 KB and 6,500 entries): a delta
// batch larger than that is fetched again as a snapshot, which is applied
// in chunks (cloudsync/client, replace.go).
const GatewayMemTableSize = 4 << 20

func (o Options) memTableSize() int64 {
	switch {
	case o.MemTableSize > 0:
		return o.MemTableSize
	case o.Gateway:
		return GatewayMemTableSize
	}
	return 16 << 20
}

// ErrTooLarge is returned (wrapped) when a batch does not fit in one
// transaction; nothing of it was applied.
var ErrTooLarge = errors.New("too large for one transaction")

// Store is the gateway's Badger-backed state.
type Store struct {
	db  *badger.DB
	log *slog.Logger

	mu       sync.Mutex // serializes Apply so Rev numbers are ordered and watchers see batches in order
	watchers []func(Applied)

	// classes caches decoded classes by name (*cachedClass; see Class).
	classes sync.Map

	// beforeCommit, set by the package's tests, runs in apply's transaction
	// after every write and before the commit; an error aborts it.
	beforeCommit func(*Batch) error
}

// Applied describes a committed batch to watchers.
type Applied struct {
	Rev   uint64
	Batch *Batch
	// Replaced is true when the batch replaced the whole store (a snapshot).
	Replaced bool
	// Previous holds the devices as they were before the batch, for those it changed or deleted.
	Previous map[string]Device
}

// badgerOptions sizes Badger for a board with 512 MB of RAM shared with
// everything else: two memtables (Options.memTableSize), a 16 MB block
// cache (needed anyway: Badger panics with compression and no block cache),
// an 8 MB index cache, and small value-log files so GC can reclaim space in
// small steps. Values under 1 KB (all our records) stay in the LSM tree, so
// a read is one table lookup.
//
// A gateway's store (a few MB at 10,000 devices) is written uncompressed and
// read through the page cache, with no block or index cache: a read is then
// a slice of the memory-mapped table, not a block decompressed onto the Go
// heap and kept in a cache whose counters and filters are heap too (10 MiB
// of RSS at 10,000 sessions, which the collector's goal doubles). Tables
// written compressed before (an upgrade) are still read, decompressed on
// each read, until compaction rewrites them.
func badgerOptions(o Options) badger.Options {
	bo := badger.DefaultOptions(o.Dir).
		WithInMemory(o.InMemory).
		WithLogger(nil).
		WithMemTableSize(o.memTableSize()).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(1 << 10).
		WithCompression(options.ZSTD).
		WithNumCompactors(2).
		WithSyncWrites(false) // batches call Sync themselves before they report success
	if o.Gateway {
		bo = bo.WithCompression(options.None).WithBlockCacheSize(0).WithIndexCacheSize(0)
	}
	if o.InMemory {
		bo.Dir, bo.ValueDir = "", ""
	}
	return bo
}

// Open opens (creating if needed) the store and checks its schema version.
func Open(o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := flushLargerMemtables(o); err != nil {
		return nil, fmt.Errorf("open store at %q: %w", o.Dir, err)
	}
	db, err := openBadger(o)
	if err != nil {
		return nil, fmt.Errorf("open store at %q: %w", o.Dir, err)
	}
	s := &Store{db: db, log: o.Logger}
	if err := s.checkSchema(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// openBadger opens Badger with o's options. A crash between Badger
// creating a memtable or value-log file and sizing it leaves an empty file
// that Badger refuses to open (dgraph-io/badger#2207). The failed attempt
// sizes it, so opening again succeeds and nothing is lost. Badger drops the
// error chain: match text.
func openBadger(o Options) (*badger.DB, error) {
	db, err := badger.Open(badgerOptions(o))
	for i := 0; i < 3 && err != nil && !o.InMemory && strings.Contains(err.Error(), "Create a new file"); i++ {
		o.Logger.Warn("store: opening again after a crash left an empty file", "dir", o.Dir, "err", err)
		db, err = badger.Open(badgerOptions(o))
	}
	return db, err
}

// flushLargerMemtables opens and closes the store first with memtables
// large enough for its memtable files, when they are not of the size o
// makes: Badger replays an unflushed memtable file (a power cut) into a
// memtable of today's size and exits the process (log.Fatal, "Arena too
// small") when it does not fit, as after an upgrade to smaller memtables.
// Closing flushes them to tables, which any size reads. A memtable file is
// made 2*MemTableSize long and cut to its contents when replayed; any other
// non-empty size is flushed first, with a memtable 1.5 times the file: a
// replay of small entries can take ~1.7 times their bytes of arena (which
// is ~1.3 times the memtable).
func flushLargerMemtables(o Options) error {
	if o.InMemory {
		return nil
	}
	size := o.memTableSize()
	files, err := filepath.Glob(filepath.Join(o.Dir, "*.mem"))
	if err != nil {
		return err
	}
	var larger int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return err
		}
		// Any file this size does not make: a replay cuts a file to its
		// contents, which small entries can make need more memtable than
		// their bytes (index keys with empty values).
		if n := fi.Size(); n > 0 && n != 2*size {
			larger = max(larger, n)
		}
	}
	if larger == 0 {
		return nil
	}
	o.Logger.Info("store: flushing memtable files of another size before opening", "dir", o.Dir,
		"memtable_file_bytes", larger, "memtable_bytes", size)
	o.MemTableSize = max(larger*3/2, 16<<20) // an arena is mostly virtual: only what is replayed is touched
	db, err := openBadger(o)
	if err != nil {
		return fmt.Errorf("flush memtables of %d bytes: %w", larger, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("flush memtables of %d bytes: %w", larger, err)
	}
	return nil
}

func (s *Store) checkSchema() error {
	sites := false
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(kSchema))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set([]byte(kSchema), u64(SchemaVersion))
		}
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		got := binary.BigEndian.Uint64(v)
		if got == 1 {
			if err := s.migrate1to2(txn); err != nil {
				return err
			}
			got = 2
		}
		if got == 2 {
			sites = true // after this transaction: it may not fit in one
			return nil
		}
		if got != SchemaVersion {
			return fmt.Errorf("store schema version is %d, this edgeid reads %d: upgrade edgeid or restore a matching backup", got, SchemaVersion)
		}
		return nil
	})
	if errors.Is(err, badger.ErrTxnTooBig) {
		return errors.New("store schema 1 to 2: too many devices to index in one transaction")
	}
	if err != nil || !sites {
		return err
	}
	return s.migrate2to3()
}

// migrate2to3 builds the sites bookkeeping of a logged store (an
// authority's; a gateway's store keeps none) and marks the store version 3.
// Interrupted, it runs again at the next Open: its writes are idempotent.
func (s *Store) migrate2to3() error {
	logged := false
	if err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pLog)})
		defer it.Close()
		it.Rewind()
		logged = it.Valid()
		return nil
	}); err != nil {
		return err
	}
	if logged {
		if err := s.buildSites(); err != nil {
			return fmt.Errorf("store schema 2 to 3: %w", err)
		}
		s.log.Info("store: schema 2 to 3, sites of the logged records built")
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(kSchema), u64(SchemaVersion)) })
}

// migrate1to2 builds the PSK identity index of a version 1 store and marks
// it version 2, in the caller's transaction: all of it or none of it. An
// identity that two devices already share (version 1 did not refuse it
// across batches) is left out of the index, so neither device is found by
// it (as CoAP refused them before), and logged.
func (s *Store) migrate1to2(txn *badger.Txn) error {
	holders := map[string][]string{}
	var order []string
	if err := iterate(txn, pDevice, func(k string, v []byte) error {
		var d Device
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("decode %s%s: %w", pDevice, k, err)
		}
		if d.PSKIdentity != "" {
			if holders[d.PSKIdentity] == nil {
				order = append(order, d.PSKIdentity)
			}
			holders[d.PSKIdentity] = append(holders[d.PSKIdentity], d.ID)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("store schema 1 to 2: %w", err)
	}
	for _, identity := range order {
		ids := holders[identity]
		if len(ids) > 1 {
			s.log.Warn("store: a psk_identity is shared by several devices; none of them is found by it until each has its own",
				"devices", strings.Join(ids, ", "))
			continue
		}
		if err := txn.Set([]byte(pIdxPSK+identity), []byte(ids[0])); err != nil {
			return err
		}
	}
	s.log.Info("store: schema 1 to 2, psk identity index built", "identities", len(order))
	return txn.Set([]byte(kSchema), u64(2))
}

// Close flushes and closes the store.
func (s *Store) Close() error {
	if err := s.db.Sync(); err != nil {
		s.log.Warn("store sync on close failed", "err", err)
	}
	return s.db.Close()
}

// RunGC reclaims value-log space until ctx ends. Badger never does it by itself.
func (s *Store) RunGC(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// Watch registers fn to be called, in order, after each batch commits.
// Register watchers before the store is shared.
func (s *Store) Watch(fn func(Applied)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// Apply validates b and writes it in one transaction together with cursor (if
// non-nil). Nothing is written if any record is invalid. It returns after the
// write is durable on disk, then tells the watchers.
func (s *Store) Apply(b *Batch, cursor *Cursor) (uint64, error) {
	return s.apply(b, cursor, nil, false)
}

// ApplyLogged is Apply that also keeps the batch in the store's change log
// under its rev, in the same transaction (the authority's source of deltas).
func (s *Store) ApplyLogged(b *Batch) (uint64, error) {
	return s.ApplyLoggedBy(b, "")
}

// ApplyLoggedBy is ApplyLogged that records with the batch who made the
// change (LogEntry.By) and when (LogEntry.At).
func (s *Store) ApplyLoggedBy(b *Batch, by string) (uint64, error) {
	return s.apply(b, nil, &logged{By: by, At: time.Now().UTC()}, false)
}

// Replace makes the store hold exactly the records of b (a snapshot),
// atomically together with cursor. Records not in b are gone afterwards.
func (s *Store) Replace(b *Batch, cursor *Cursor) (uint64, error) {
	if len(b.Delete.Classes)+len(b.Delete.Devices)+len(b.Delete.Users)+len(b.Delete.Grants)+len(b.Delete.Issuers)+len(b.Delete.Revocations) > 0 {
		return 0, &ValidationError{Problems: []string{"delete: a snapshot replaces everything and cannot delete"}}
	}
	if len(b.Expect)+len(b.Docs) > 0 {
		return 0, &ValidationError{Problems: []string{"expect, docs: a snapshot replaces everything; it is not a conditional commit"}}
	}
	// One transaction when it may fit (it also deletes every record the
	// store holds); chunks when it cannot, or did not.
	if b.Size() > replaceChunk {
		return s.replaceChunked(b, cursor)
	}
	rev, err := s.apply(b, cursor, nil, true)
	if errors.Is(err, ErrTooLarge) {
		return s.replaceChunked(b, cursor)
	}
	return rev, err
}

// recordPrefixes are every key space that a snapshot replaces.
var recordPrefixes = []string{pClass, pDevice, pUser, pGrant, pIssuer, pRevoke, "x/"}

// apply writes b; with lg set it also logs it (ApplyLoggedBy).
func (s *Store) apply(b *Batch, cursor *Cursor, lg *logged, replace bool) (uint64, error) {
	if err := checkDocWrites(b.Docs); err != nil {
		return 0, err
	}
	return s.applyBuilt(func(*badger.Txn) (*Batch, error) { return b, nil }, cursor, lg, replace)
}

// ApplyLoggedFunc is ApplyLoggedBy of the batch build makes from the
// records as they stand in the committing transaction: every commit of
// records holds s.mu, so nothing commits between build's reads and this
// commit. A read-modify-write made so cannot conflict, so writers of the
// same record cannot starve it (a revocation raced by renames). An error
// of build writes nothing and is returned (errors.Is holds).
func (s *Store) ApplyLoggedFunc(by string, build func(r RecordReader) (*Batch, error)) (uint64, error) {
	return s.applyBuilt(func(txn *badger.Txn) (*Batch, error) {
		b, err := build(txnSites{txn: txn})
		if err != nil {
			return nil, err
		}
		if err := checkDocWrites(b.Docs); err != nil {
			return nil, err
		}
		return b, nil
	}, nil, &logged{By: by, At: time.Now().UTC()}, false)
}

// applyBuilt writes the batch build returns inside the transaction.
func (s *Store) applyBuilt(build func(*badger.Txn) (*Batch, error), cursor *Cursor, lg *logged, replace bool) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	var rev uint64
	var b *Batch
	prev := map[string]Device{}
	err := s.db.Update(func(txn *badger.Txn) error {
		var err error
		if b, err = build(txn); err != nil {
			return err
		}
		// Expectations first, read in this transaction: a batch made from
		// records that changed meanwhile is refused before it is judged.
		if err := expectRecords(txn, b.Expect); err != nil {
			return err
		}
		if err := expectDocs(txn, b.Docs); err != nil {
			return err
		}
		var lookupErr error
		if err = b.validate(func(name string) bool {
			if replace {
				return false // the snapshot must carry its own classes
			}
			_, err := txn.Get([]byte(pClass + name))
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				lookupErr = err // a storage error is not "unknown class"
			}
			return err == nil
		}); err != nil {
			if lookupErr != nil {
				return fmt.Errorf("read classes: %w", lookupErr)
			}
			return err
		}
		if replace {
			for _, p := range recordPrefixes {
				if err := deletePrefix(txn, p); err != nil {
					return err
				}
			}
		}
		// Devices of a class being deleted would lose their permissions silently.
		for _, c := range b.Delete.Classes {
			if n := classUsers(txn, c, b); n > 0 {
				return &ValidationError{Problems: []string{fmt.Sprintf("delete.classes %q is still used by %d devices; move or delete them first", c, n)}}
			}
		}
		seq, err := getU64(txn, kSeq)
		if err != nil {
			return err
		}
		rev = seq + 1
		if err := txn.Set([]byte(kSeq), u64(rev)); err != nil {
			return err
		}
		var oldGrants []Grant
		if lg != nil {
			if oldGrants, err = grantsBefore(txn, b); err != nil {
				return err
			}
		}
		if err := writeRecords(txn, b, rev, prev); err != nil {
			return err
		}
		if err := writeDocs(txn, b.Docs); err != nil {
			return err
		}
		if cursor != nil {
			if err := putJSON(txn, kCursor, cursor); err != nil {
				return err
			}
		}
		if lg != nil {
			lg.Batch = *b
			// The authority's log knows where each record goes (sites.go).
			if err := keepSites(s.db, txn, lg, prev, oldGrants); err != nil {
				return err
			}
			if err := putJSON(txn, string(logKey(rev)), lg); err != nil {
				return err
			}
		}
		if s.beforeCommit != nil {
			return s.beforeCommit(b)
		}
		return nil
	})
	if errors.Is(err, badger.ErrTxnTooBig) {
		return 0, fmt.Errorf("apply batch of %d records: %w (at most %d entries and %d KB; a record takes up to 9 with its indexes); split it into smaller batches",
			b.Size(), ErrTooLarge, s.db.MaxBatchCount(), s.db.MaxBatchSize()>>10)
	}
	if err != nil {
		return 0, commitError("apply batch", err)
	}
	// Durable before reported: a revocation must survive a power cut. The
	// batch is committed either way, so the watchers run either way: its
	// revocations must cut sessions even if the disk then misbehaves.
	syncErr := s.db.Sync()
	a := Applied{Rev: rev, Batch: b, Previous: prev, Replaced: replace}
	for _, w := range s.watchers {
		w(a)
	}
	if syncErr != nil {
		return rev, fmt.Errorf("apply batch: committed, but sync to disk failed: %w", syncErr)
	}
	return rev, nil
}

func classUsers(txn *badger.Txn, class string, b *Batch) int {
	moving := map[string]bool{}
	for _, d := range b.Devices {
		moving[d.ID] = true
	}
	for _, id := range b.Delete.Devices {
		moving[id] = true
	}
	n := 0
	_ = iterate(txn, pDevice, func(_ string, v []byte) error {
		var d Device
		if json.Unmarshal(v, &d) == nil && d.Class == class && !moving[d.ID] {
			n++
		}
		return nil
	})
	return n
}

func certIssuerIndexKey(issuer, serial string) string {
	h := sha256.Sum256([]byte(issuer))
	return pIdxCertIS + hex.EncodeToString(h[:16]) + "/" + serial
}

// claimIndex points the unique index key at device id; a key already held
// by another device is refused, naming it ("devices "<id>": <taken> device "<other>"").
func claimIndex(txn *badger.Txn, key, id, taken string) error {
	k := []byte(key)
	if item, err := txn.Get(k); err == nil {
		other, _ := item.ValueCopy(nil)
		if string(other) != id {
			return &ValidationError{Problems: []string{fmt.Sprintf("devices %q: %s device %q", id, taken, other)}}
		}
	}
	return txn.Set(k, []byte(id))
}

func addDeviceIndexes(txn *badger.Txn, d Device) error {
	if d.CertSHA256 != "" {
		if err := claimIndex(txn, pIdxCertFP+d.CertSHA256, d.ID, "cert_sha256 is already the certificate of"); err != nil {
			return err
		}
	}
	if d.CertIssuer != "" {
		if err := claimIndex(txn, certIssuerIndexKey(d.CertIssuer, d.CertSerial), d.ID, "cert_issuer/cert_serial already identify"); err != nil {
			return err
		}
	}
	if d.PSKIdentity != "" {
		if err := claimIndex(txn, pIdxPSK+d.PSKIdentity, d.ID, "psk_identity is already the identity of"); err != nil {
			return err
		}
	}
	if d.Owner != "" {
		if err := txn.Set([]byte(pIdxOwner+d.Owner+"/"+d.ID), nil); err != nil {
			return err
		}
	}
	return nil
}

func dropDeviceIndexes(txn *badger.Txn, d Device) error {
	var keys []string
	if d.CertSHA256 != "" {
		keys = append(keys, pIdxCertFP+d.CertSHA256)
	}
	if d.CertIssuer != "" {
		keys = append(keys, certIssuerIndexKey(d.CertIssuer, d.CertSerial))
	}
	if d.PSKIdentity != "" {
		keys = append(keys, pIdxPSK+d.PSKIdentity)
	}
	if d.Owner != "" {
		keys = append(keys, pIdxOwner+d.Owner+"/"+d.ID)
	}
	for _, k := range keys {
		if err := txn.Delete([]byte(k)); err != nil {
			return err
		}
	}
	return nil
}

func putJSON(txn *badger.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return txn.Set([]byte(key), b)
}

func getU64(txn *badger.Txn, key string) (uint64, error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("%s: corrupt counter", key)
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err
}

func getJSON(txn *badger.Txn, key string, v any) error {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func getDevice(txn *badger.Txn, id string) (Device, error) {
	var d Device
	err := getJSON(txn, pDevice+id, &d)
	return d, err
}

func iterate(txn *badger.Txn, prefix string, fn func(key string, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		err := item.Value(func(v []byte) error { return fn(string(item.Key()[len(prefix):]), v) })
		if err != nil {
			return err
		}
	}
	return nil
}

func deletePrefix(txn *badger.Txn, prefix string) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func logKey(rev uint64) []byte { return append([]byte(pLog), u64(rev)...) }

// LogEntry is one batch of the change log.
type LogEntry struct {
	Rev   uint64
	Batch Batch
	// By is who made the change (the authority's "admin:<key name>",
	// "owner <user>", …) and At when; both empty in entries logged before
	// they were recorded, or by ApplyLogged.
	By string
	At time.Time
	// Reach and Was are the sites the entry's records reach after it and
	// reached before it (sites.go; ForSite); nil in entries logged before
	// sites were kept.
	Reach, Was map[string][]string
}

// logged is a change log entry as stored: the batch's own fields, with who
// and when beside them under names a Batch does not use, so an entry
// written before By and At decodes with them empty, and a reader that
// knows only Batch still reads a newer entry.
type logged struct {
	Batch
	By    string              `json:"logged_by,omitempty"`
	At    time.Time           `json:"logged_at,omitzero"`
	Reach map[string][]string `json:"logged_reach,omitempty"`
	Was   map[string][]string `json:"logged_was,omitempty"`
}

// ErrLogTrimmed means the log no longer holds the entries asked for: the
// reader must start again from a snapshot.
var ErrLogTrimmed = errors.New("change log trimmed past the requested rev")

// LogSince returns up to max logged batches with rev > from, in order.
func (s *Store) LogSince(from uint64, max int) ([]LogEntry, error) {
	var out []LogEntry
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pLog), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		first := true
		for it.Seek(logKey(from + 1)); it.Valid() && len(out) < max; it.Next() {
			item := it.Item()
			rev := binary.BigEndian.Uint64(item.Key()[len(pLog):])
			if first && rev != from+1 && from != 0 {
				return ErrLogTrimmed
			}
			first = false
			var lg logged
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &lg) }); err != nil {
				return fmt.Errorf("decode log entry %d: %w", rev, err)
			}
			out = append(out, LogEntry{Rev: rev, Batch: lg.Batch, By: lg.By, At: lg.At, Reach: lg.Reach, Was: lg.Was})
		}
		return nil
	})
	return out, err
}

// Snapshot returns every record and the rev they are current at, read in one
// consistent view.
func (s *Store) Snapshot() (*Batch, uint64, error) {
	b := &Batch{}
	var rev uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if rev, err = getU64(txn, kSeq); err != nil {
			return err
		}
		dec := func(prefix string, add func([]byte) error) error {
			return iterate(txn, prefix, func(_ string, v []byte) error { return add(v) })
		}
		steps := []struct {
			prefix string
			add    func([]byte) error
		}{
			{pClass, appendJSON(&b.Classes)},
			{pDevice, appendJSON(&b.Devices)},
			{pUser, appendJSON(&b.Users)},
			{pGrant, appendJSON(&b.Grants)},
			{pIssuer, appendJSON(&b.Issuers)},
			{pRevoke, appendJSON(&b.Revocations)},
		}
		for _, st := range steps {
			if err := dec(st.prefix, st.add); err != nil {
				return fmt.Errorf("snapshot %s: %w", st.prefix, err)
			}
		}
		return nil
	})
	return b, rev, err
}

// appendJSON decodes a record and appends it to *dst (also when it does not
// decode, as the error ends the snapshot anyway).
func appendJSON[T any](dst *[]T) func([]byte) error {
	return func(v []byte) error {
		var x T
		err := json.Unmarshal(v, &x)
		*dst = append(*dst, x)
		return err
	}
}

// writeRecords writes b's records and deletions into txn, stamped with rev,
// keeping the indexes in step; prev receives devices as they were.
func writeRecords(txn *badger.Txn, b *Batch, rev uint64, prev map[string]Device) error {
	for _, c := range b.Classes {
		c.Rev = rev
		if err := putJSON(txn, pClass+c.Name, c); err != nil {
			return err
		}
	}
	for _, d := range b.Devices {
		old, err := getDevice(txn, d.ID)
		if err == nil {
			prev[d.ID] = old
			if err := dropDeviceIndexes(txn, old); err != nil {
				return err
			}
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		d.Rev = rev
		if err := putJSON(txn, pDevice+d.ID, d); err != nil {
			return err
		}
		if err := addDeviceIndexes(txn, d); err != nil {
			return err
		}
	}
	for _, u := range b.Users {
		u.Rev = rev
		if err := putJSON(txn, pUser+u.ID, u); err != nil {
			return err
		}
	}
	for _, g := range b.Grants {
		g.Rev = rev
		if err := putJSON(txn, pGrant+g.ID, g); err != nil {
			return err
		}
	}
	for _, is := range b.Issuers {
		is.Rev = rev
		if err := putJSON(txn, pIssuer+is.Issuer, is); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, r := range b.Revocations {
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		e := badger.NewEntry([]byte(pRevoke+r.Key()), v)
		if ttl, ok := revocationTTL(r, now); ok {
			e = e.WithTTL(ttl)
			// Badger keeps expiry in whole seconds, rounded down: round up
			// instead, so an entry is never forgotten before ExpiresAt.
			if up := uint64(r.ExpiresAt.Add(time.Second - time.Nanosecond).Unix()); up > e.ExpiresAt {
				e.ExpiresAt = up
			}
		}
		if err := txn.SetEntry(e); err != nil {
			return err
		}
	}
	for _, id := range b.Delete.Devices {
		old, err := getDevice(txn, id)
		if errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		prev[id] = old
		if err := dropDeviceIndexes(txn, old); err != nil {
			return err
		}
		if err := txn.Delete([]byte(pDevice + id)); err != nil {
			return err
		}
	}
	for prefix, keys := range map[string][]string{pClass: b.Delete.Classes, pUser: b.Delete.Users, pGrant: b.Delete.Grants, pIssuer: b.Delete.Issuers, pRevoke: b.Delete.Revocations} {
		for _, k := range keys {
			if err := txn.Delete([]byte(prefix + k)); err != nil {
				return err
			}
		}
	}
	return nil
}
