package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeid/edgeid/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Record kinds: the kinds of Batch.Expect keys, and revocations.
const (
	kClass  = "classes"
	kDevice = "devices"
	kUser   = "users"
	kGrant  = "grants"
	kIssuer = "issuers"
	kRevoke = "revocations"
)

// ApplyLoggedBy validates b whole and commits it, in one transaction, as
// the next revision of the change log (who made it: by), with its
// expectations (a *store.ConflictError writes nothing) and documents; then
// tells the watchers.
func (s *Store) ApplyLoggedBy(b *store.Batch, by string) (uint64, error) {
	if err := store.ValidateDocWrites(b.Docs); err != nil {
		return 0, err
	}
	docs, err := encodeDocs(b.Docs)
	if err != nil {
		return 0, fmt.Errorf("pgstore: apply batch: %w", err)
	}
	at := time.Now().UTC()
	ctx, cancel := s.call()
	defer cancel()
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var rev uint64
	var prev map[string]store.Device
	sweep := time.Since(s.lastSweep) >= s.sweep
	err = s.retry(ctx, func(tx pgx.Tx) error {
		prev = map[string]store.Device{}
		var err error
		rev, _, err = s.apply(ctx, tx, func(context.Context, pgx.Tx) (*store.Batch, [][]byte, error) { return b, docs, nil }, prev, by, at, sweep)
		return err
	})
	if err != nil {
		return 0, commitError("apply batch", err)
	}
	if sweep {
		s.lastSweep = time.Now()
	}
	s.tell(store.Applied{Rev: rev, Batch: b, Previous: prev})
	return rev, nil
}

// ApplyLoggedFunc is ApplyLoggedBy of the batch build makes from the
// records as they stand in the committing transaction, read after it holds
// head's lock: no commit of any process lands between build's reads and
// this commit, so a read-modify-write made so cannot conflict, and writers
// of the same record cannot starve it (a revocation raced by renames). An
// error of build writes nothing and is returned (errors.Is holds).
func (s *Store) ApplyLoggedFunc(by string, build func(r store.RecordReader) (*store.Batch, error)) (uint64, error) {
	at := time.Now().UTC()
	ctx, cancel := s.call()
	defer cancel()
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var rev uint64
	var b *store.Batch
	var prev map[string]store.Device
	sweep := time.Since(s.lastSweep) >= s.sweep
	err := s.retry(ctx, func(tx pgx.Tx) error {
		prev = map[string]store.Device{}
		var err error
		rev, b, err = s.apply(ctx, tx, func(ctx context.Context, tx pgx.Tx) (*store.Batch, [][]byte, error) {
			b, err := build(txSites{ctx, tx})
			if err != nil {
				return nil, nil, err
			}
			if err := store.ValidateDocWrites(b.Docs); err != nil {
				return nil, nil, err
			}
			docs, err := encodeDocs(b.Docs)
			return b, docs, err
		}, prev, by, at, sweep)
		return err
	})
	if err != nil {
		return 0, commitError("apply batch", err)
	}
	if sweep {
		s.lastSweep = time.Now()
	}
	s.tell(store.Applied{Rev: rev, Batch: b, Previous: prev})
	return rev, nil
}

// CommitDocs writes documents together, in one transaction, if each
// expectation holds, theirs and expect's of records (as Batch.Expect); else
// it writes nothing and returns a *store.ConflictError. No rev, no log.
func (s *Store) CommitDocs(expect map[string]uint64, ws ...store.DocWrite) error {
	if err := store.ValidateDocWrites(ws); err != nil {
		return err
	}
	docs, err := encodeDocs(ws)
	if err != nil {
		return fmt.Errorf("pgstore: commit documents: %w", err)
	}
	ctx, cancel := s.call()
	defer cancel()
	err = s.retry(ctx, func(tx pgx.Tx) error {
		if len(expect) > 0 {
			// A share of head's lock holds off commits of records until
			// this one ends, so the records checked stay as checked
			// (documents alone do not take it: their rows are locked).
			if _, err := tx.Exec(ctx, `SELECT 1 FROM head FOR SHARE`); err != nil {
				return err
			}
			if err := expectRecords(ctx, tx, expect); err != nil {
				return err
			}
		}
		if err := lockDocs(ctx, tx, ws); err != nil {
			return err
		}
		return writeDocs(ctx, tx, ws, docs)
	})
	if err != nil {
		return commitError("commit documents", err)
	}
	return nil
}

// Transient failures a transaction is tried again for: another
// transaction got in the way (unique_violation cannot happen to commits
// serialised by head, but would mean a race, not a bad batch).
var retryCodes = map[string]bool{
	"40001": true, // serialization_failure
	"40P01": true, // deadlock_detected
	"23505": true, // unique_violation
}

// retry runs fn in a READ COMMITTED transaction (explicitly, whatever the
// database's default: the design relies on each statement seeing the
// commits before it) and commits, again from the start a few times when
// PostgreSQL reports a race; then the race is a *store.ConflictError.
func (s *Store) retry(ctx context.Context, fn func(pgx.Tx) error) error {
	const attempts = 4
	for i := 1; ; i++ {
		err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, fn)
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || !retryCodes[pe.Code] {
			return err
		}
		if i == attempts {
			return &store.ConflictError{}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(i) * 5 * time.Millisecond):
		}
	}
}

// commitError leaves conflicts and validation errors as they are (callers
// test their type) and wraps anything else.
func commitError(what string, err error) error {
	var ce *store.ConflictError
	var ve *store.ValidationError
	if errors.As(err, &ce) || errors.As(err, &ve) {
		return err
	}
	return fmt.Errorf("pgstore: %s: %w", what, err)
}

// apply does what the Badger store's apply does, in the same order (so a
// batch both stale and invalid gets the same answer), in tx: the next
// rev, expectations, validation, classes in use, records with their
// indexes, the log entry, documents, the notification.
func (s *Store) apply(ctx context.Context, tx pgx.Tx, build func(context.Context, pgx.Tx) (*store.Batch, [][]byte, error),
	prev map[string]store.Device, by string, at time.Time, sweep bool) (uint64, *store.Batch, error) {
	var rev int64
	if err := tx.QueryRow(ctx, `UPDATE head SET rev = rev + 1 RETURNING rev`).Scan(&rev); err != nil {
		return 0, nil, fmt.Errorf("next rev: %w", err)
	}
	// The batch is made (or, for ApplyLoggedBy, handed over) under head's
	// lock: what build reads stays as read until this commits.
	b, docs, err := build(ctx, tx)
	if err != nil {
		return 0, nil, err
	}
	if err := expectRecords(ctx, tx, b.Expect); err != nil {
		return 0, nil, err
	}
	if err := lockDocs(ctx, tx, b.Docs); err != nil {
		return 0, nil, err
	}
	if err := validate(ctx, tx, b); err != nil {
		return 0, nil, err
	}
	if err := classesInUse(ctx, tx, b); err != nil {
		return 0, nil, err
	}
	var w pgx.Batch
	if err := queueRecords(ctx, tx, &w, b, uint64(rev), prev); err != nil {
		return 0, nil, err
	}
	queueGrantDevices(&w, b)
	if err := tx.SendBatch(ctx, &w).Close(); err != nil {
		return 0, nil, err
	}
	// The sites plan reads the records as this transaction wrote them.
	plan, err := store.PlanSites(b, prev, txSites{ctx, tx})
	if err != nil {
		return 0, nil, fmt.Errorf("plan sites: %w", err)
	}
	entry, err := store.EncodeLogEntry(b, by, at, &plan)
	if err != nil {
		return 0, nil, err
	}
	w = pgx.Batch{}
	queueReach(&w, b, plan)
	w.Queue(`INSERT INTO log (rev, logged_at, logged_by, entry) VALUES ($1, $2, $3, $4)`, rev, at, by, entry)
	w.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, strconv.FormatInt(rev, 10))
	if sweep {
		// Under head's lock, so no commit writes these rows meanwhile.
		w.Queue(`DELETE FROM records WHERE kind = 'revocations' AND expires_at <= now()`)
		w.Queue(`DELETE FROM reach WHERE expires_at <= now()`)
	}
	if err := tx.SendBatch(ctx, &w).Close(); err != nil {
		return 0, nil, err
	}
	if err := writeDocs(ctx, tx, b.Docs, docs); err != nil {
		return 0, nil, err
	}
	return uint64(rev), b, nil
}

// expectRecords checks each expectation (record key -> rev, 0: absent) in
// tx, in key order as the Badger store does, so the same key is named.
func expectRecords(ctx context.Context, tx pgx.Tx, expect map[string]uint64) error {
	if len(expect) == 0 {
		return nil
	}
	keys := make([]string, 0, len(expect))
	var kinds, ids []string
	for k := range expect {
		keys = append(keys, k)
		if kind, id, err := store.ParseExpectKey(k); err == nil {
			kinds, ids = append(kinds, kind), append(ids, id)
		}
	}
	slices.Sort(keys)
	rows, err := tx.Query(ctx, `SELECT kind || '/' || id, rev FROM records
WHERE (kind, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, kinds, ids)
	if err != nil {
		return fmt.Errorf("read expected records: %w", err)
	}
	got := map[string]uint64{}
	var key string
	var rev int64
	if _, err := pgx.ForEachRow(rows, []any{&key, &rev}, func() error { got[key] = uint64(rev); return nil }); err != nil {
		return fmt.Errorf("read expected records: %w", err)
	}
	for _, k := range keys {
		if _, _, err := store.ParseExpectKey(k); err != nil {
			return err
		}
		want := expect[k]
		have, ok := got[k]
		switch {
		case !ok:
			if want != 0 {
				return &store.ConflictError{Key: k, Want: want}
			}
		case want == 0 || have != want:
			return &store.ConflictError{Key: k, Want: want, Got: have}
		}
	}
	return nil
}

// lockDocs locks the rows of the documents ws writes, in key order (so two
// commits writing the same documents cannot deadlock), and checks the
// expectations of ws, in order, against the versions locked: a document a
// concurrent commit changes is either changed before (and then read so
// here) or waits for this transaction.
func lockDocs(ctx context.Context, tx pgx.Tx, ws []store.DocWrite) error {
	if len(ws) == 0 {
		return nil
	}
	kinds, ids := make([]string, len(ws)), make([]string, len(ws))
	for i, w := range ws {
		kinds[i], ids[i] = w.Kind, w.ID
	}
	rows, err := tx.Query(ctx, `SELECT kind, id, version FROM docs
WHERE (kind, id) IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY kind, id FOR UPDATE`, kinds, ids)
	if err != nil {
		return fmt.Errorf("lock documents: %w", err)
	}
	versions := map[[2]string]uint64{}
	var kind, id string
	var ver int64
	if _, err := pgx.ForEachRow(rows, []any{&kind, &id, &ver}, func() error {
		versions[[2]string{kind, id}] = uint64(ver)
		return nil
	}); err != nil {
		return fmt.Errorf("lock documents: %w", err)
	}
	for _, w := range ws {
		if !w.ExpectAbsent && w.ExpectVersion == 0 {
			continue
		}
		have, ok := versions[[2]string{w.Kind, w.ID}]
		switch {
		case !ok:
			if w.ExpectVersion != 0 {
				return &store.ConflictError{Key: store.DocKey(w.Kind, w.ID), Want: w.ExpectVersion}
			}
		case w.ExpectAbsent || have != w.ExpectVersion:
			return &store.ConflictError{Key: store.DocKey(w.Kind, w.ID), Want: w.ExpectVersion, Got: have}
		}
	}
	return nil
}

// encodeDocs encodes each document's value (nil for a delete) before any
// transaction, as the Badger store would refuse it.
func encodeDocs(ws []store.DocWrite) ([][]byte, error) {
	out := make([][]byte, len(ws))
	for i, w := range ws {
		if w.Delete {
			continue
		}
		raw, err := json.Marshal(w.Value)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", store.DocKey(w.Kind, w.ID), err)
		}
		out[i] = raw
	}
	return out, nil
}

// writeDocs writes or deletes each document (rows lockDocs locked). A
// document expected absent that a concurrent commit created after the lock
// found none is not overwritten: a conflict.
func writeDocs(ctx context.Context, tx pgx.Tx, ws []store.DocWrite, docs [][]byte) error {
	if len(ws) == 0 {
		return nil
	}
	var w pgx.Batch
	var taken []store.DocWrite
	for i, d := range ws {
		switch {
		case d.Delete:
			w.Queue(`DELETE FROM docs WHERE kind = $1 AND id = $2`, d.Kind, d.ID)
		case d.ExpectAbsent:
			w.Queue(`INSERT INTO docs (kind, id, version, body) VALUES ($1, $2, nextval('doc_versions'), $3)
ON CONFLICT (kind, id) DO NOTHING`, d.Kind, d.ID, docs[i]).Exec(func(ct pgconn.CommandTag) error {
				if ct.RowsAffected() == 0 {
					taken = append(taken, d)
				}
				return nil
			})
		default:
			w.Queue(`INSERT INTO docs (kind, id, version, body) VALUES ($1, $2, nextval('doc_versions'), $3)
ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, body = excluded.body`, d.Kind, d.ID, docs[i])
		}
	}
	if err := tx.SendBatch(ctx, &w).Close(); err != nil {
		return fmt.Errorf("write documents: %w", err)
	}
	if len(taken) > 0 {
		d := taken[0]
		var ver int64
		_ = tx.QueryRow(ctx, `SELECT version FROM docs WHERE kind = $1 AND id = $2`, d.Kind, d.ID).Scan(&ver)
		return &store.ConflictError{Key: store.DocKey(d.Kind, d.ID), Got: uint64(ver)}
	}
	return nil
}

// validate runs the store's validation of b against the classes in tx.
func validate(ctx context.Context, tx pgx.Tx, b *store.Batch) error {
	var names []string
	for _, d := range b.Devices {
		if d.Class != "" && !slices.Contains(names, d.Class) {
			names = append(names, d.Class)
		}
	}
	known := map[string]bool{}
	if len(names) > 0 {
		rows, err := tx.Query(ctx, `SELECT id FROM records WHERE kind = 'classes' AND id = ANY($1)`, names)
		if err != nil {
			return fmt.Errorf("read classes: %w", err)
		}
		var name string
		if _, err := pgx.ForEachRow(rows, []any{&name}, func() error { known[name] = true; return nil }); err != nil {
			return fmt.Errorf("read classes: %w", err)
		}
	}
	return b.Validate(func(name string) bool { return known[name] })
}

// classesInUse refuses to delete a class that devices the batch leaves
// in place still use: they would lose their permissions silently.
func classesInUse(ctx context.Context, tx pgx.Tx, b *store.Batch) error {
	if len(b.Delete.Classes) == 0 {
		return nil
	}
	moving := append([]string{}, b.Delete.Devices...) // never nil: id = ANY(NULL) is NULL, not false
	for _, d := range b.Devices {
		moving = append(moving, d.ID)
	}
	for _, c := range b.Delete.Classes {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM records WHERE kind = 'devices' AND class = $1 AND NOT (id = ANY($2))`,
			c, moving).Scan(&n); err != nil {
			return fmt.Errorf("count devices of class %q: %w", c, err)
		}
		if n > 0 {
			return store.ClassInUseError(c, n)
		}
	}
	return nil
}

// row is one record to write.
type row struct {
	kind, id     string
	body         []byte
	expires      pgtype.Timestamptz
	owner, class pgtype.Text
}

// queueRecords reads the devices b changes as they are (into prev), judges
// their unique indexes as the Badger store's writes would (devices in batch
// order, each dropping its old keys and claiming its new ones; then the
// deletions), and queues on w the writes of records, deletions and index
// rows, stamped with rev.
func queueRecords(ctx context.Context, tx pgx.Tx, w *pgx.Batch, b *store.Batch, rev uint64, prev map[string]store.Device) error {
	var rows []row
	add := func(kind, id string, v any) error {
		raw, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s/%s: %w", kind, id, err)
		}
		rows = append(rows, row{kind: kind, id: id, body: raw})
		return nil
	}
	for _, c := range b.Classes {
		c.Rev = rev
		if err := add(kClass, c.Name, c); err != nil {
			return err
		}
	}
	if err := queueDevices(ctx, tx, w, b, rev, prev, func(d store.Device) error {
		if err := add(kDevice, d.ID, d); err != nil {
			return err
		}
		r := &rows[len(rows)-1]
		r.owner = pgtype.Text{String: d.Owner, Valid: d.Owner != ""}
		r.class = pgtype.Text{String: d.Class, Valid: true}
		return nil
	}); err != nil {
		return err
	}
	for _, u := range b.Users {
		u.Rev = rev
		if err := add(kUser, u.ID, u); err != nil {
			return err
		}
	}
	for _, g := range b.Grants {
		g.Rev = rev
		if err := add(kGrant, g.ID, g); err != nil {
			return err
		}
	}
	for _, is := range b.Issuers {
		is.Rev = rev
		if err := add(kIssuer, is.Issuer, is); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, r := range b.Revocations {
		if err := add(kRevoke, r.Key(), r); err != nil {
			return err
		}
		if at, ok := store.RevocationExpiry(r, now); ok {
			rows[len(rows)-1].expires = pgtype.Timestamptz{Time: at, Valid: true}
		}
	}
	// One statement writes them all; a record named twice (revocations
	// may be) is written as its last entry, as the Badger store's second
	// write would leave it.
	last := map[[2]string]int{}
	for i, r := range rows {
		last[[2]string{r.kind, r.id}] = i
	}
	var kinds, ids []string
	var bodies [][]byte
	var expires []pgtype.Timestamptz
	var owners, classes []pgtype.Text
	for i, r := range rows {
		if last[[2]string{r.kind, r.id}] != i {
			continue
		}
		kinds, ids, bodies, expires = append(kinds, r.kind), append(ids, r.id), append(bodies, r.body), append(expires, r.expires)
		owners, classes = append(owners, r.owner), append(classes, r.class)
	}
	if len(kinds) > 0 {
		w.Queue(`INSERT INTO records (kind, id, rev, body, expires_at, owner, class)
SELECT k, i, $3, b, e, o, c FROM unnest($1::text[], $2::text[], $4::bytea[], $5::timestamptz[], $6::text[], $7::text[]) AS u(k, i, b, e, o, c)
ON CONFLICT (kind, id) DO UPDATE SET rev = excluded.rev, body = excluded.body, expires_at = excluded.expires_at,
	owner = excluded.owner, class = excluded.class`,
			kinds, ids, int64(rev), bodies, expires, owners, classes)
	}
	kinds, ids = nil, nil
	for kind, names := range map[string][]string{kDevice: b.Delete.Devices, kClass: b.Delete.Classes, kUser: b.Delete.Users,
		kGrant: b.Delete.Grants, kIssuer: b.Delete.Issuers, kRevoke: b.Delete.Revocations} {
		for _, id := range names {
			kinds, ids = append(kinds, kind), append(ids, id)
		}
	}
	if len(kinds) > 0 {
		w.Queue(`DELETE FROM records WHERE (kind, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, kinds, ids)
	}
	return nil
}

// queueDevices adds b's devices to the records (add) and queues their
// index rows; prev receives the devices as they were.
func queueDevices(ctx context.Context, tx pgx.Tx, w *pgx.Batch, b *store.Batch, rev uint64, prev map[string]store.Device,
	add func(store.Device) error) error {
	if len(b.Devices)+len(b.Delete.Devices) == 0 {
		return nil
	}
	changed := slices.Clone(b.Delete.Devices)
	var keys []string
	for _, d := range b.Devices {
		changed = append(changed, d.ID)
		for _, x := range store.DeviceIndexes(d) {
			keys = append(keys, x.Key)
		}
	}
	rows, err := tx.Query(ctx, `SELECT body FROM records WHERE kind = 'devices' AND id = ANY($1)`, changed)
	if err != nil {
		return fmt.Errorf("read devices: %w", err)
	}
	var raw []byte
	if _, err := pgx.ForEachRow(rows, []any{&raw}, func() error {
		var d store.Device
		if err := json.Unmarshal(raw, &d); err != nil {
			return fmt.Errorf("decode device: %w", err)
		}
		prev[d.ID] = d
		return nil
	}); err != nil {
		return fmt.Errorf("read devices: %w", err)
	}
	// held: index key -> device, for every key a device of the batch
	// claims, as the database has it and then as each write leaves it.
	held := map[string]string{}
	if len(keys) > 0 {
		rows, err := tx.Query(ctx, `SELECT key, device FROM device_index WHERE key = ANY($1)`, keys)
		if err != nil {
			return fmt.Errorf("read device index: %w", err)
		}
		var key, dev string
		if _, err := pgx.ForEachRow(rows, []any{&key, &dev}, func() error { held[key] = dev; return nil }); err != nil {
			return fmt.Errorf("read device index: %w", err)
		}
	}
	var ixKeys, ixDevs []string
	for _, d := range b.Devices {
		if old, ok := prev[d.ID]; ok {
			for _, x := range store.DeviceIndexes(old) {
				delete(held, x.Key)
			}
		}
		for _, x := range store.DeviceIndexes(d) {
			if other, ok := held[x.Key]; ok && other != d.ID {
				return store.IndexTakenError(d.ID, x, other)
			}
			held[x.Key] = d.ID
			ixKeys, ixDevs = append(ixKeys, x.Key), append(ixDevs, d.ID)
		}
		d.Rev = rev
		if err := add(d); err != nil {
			return err
		}
	}
	// Every index row of a device changed goes, then those of the devices
	// as written come back: the simulation above found them all free.
	w.Queue(`DELETE FROM device_index WHERE device = ANY($1)`, changed)
	if len(ixKeys) > 0 {
		w.Queue(`INSERT INTO device_index (key, device) SELECT * FROM unnest($1::text[], $2::text[])`, ixKeys, ixDevs)
	}
	return nil
}

// queueGrantDevices keeps grant_devices in step with the shares b writes
// and deletes (the Badger store's x/gdev/).
func queueGrantDevices(w *pgx.Batch, b *store.Batch) {
	if len(b.Grants)+len(b.Delete.Grants) == 0 {
		return
	}
	ids := slices.Clone(b.Delete.Grants)
	var devs, grants []string
	for _, g := range b.Grants {
		ids = append(ids, g.ID)
		for _, d := range g.Devices() {
			devs, grants = append(devs, d), append(grants, g.ID)
		}
	}
	w.Queue(`DELETE FROM grant_devices WHERE grant_id = ANY($1)`, ids)
	if len(devs) > 0 {
		w.Queue(`INSERT INTO grant_devices (device, grant_id) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, devs, grants)
	}
}

// queueReach writes the plan's sites, as the Badger store's writeReach: a
// record only in Was is gone; each in Reach is written, a revocation's
// expiring with it (rounded up to the second, as Badger's entries).
func queueReach(w *pgx.Batch, b *store.Batch, plan store.SitePlan) {
	var kinds, ids []string
	for key := range plan.Was {
		if _, stays := plan.Reach[key]; !stays {
			kind, id, _ := strings.Cut(key, "/")
			kinds, ids = append(kinds, kind), append(ids, id)
		}
	}
	if len(kinds) > 0 {
		w.Queue(`DELETE FROM reach WHERE (kind, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, kinds, ids)
	}
	expires := map[string]time.Time{}
	for _, r := range b.Revocations {
		expires[store.RevocationKey(r)] = r.ExpiresAt
	}
	for _, key := range slices.Sorted(maps.Keys(plan.Reach)) {
		var at pgtype.Timestamptz
		if e := expires[key]; !e.IsZero() {
			at = pgtype.Timestamptz{Time: time.Unix(e.Add(time.Second-time.Nanosecond).Unix(), 0), Valid: true}
		}
		kind, id, _ := strings.Cut(key, "/")
		w.Queue(`INSERT INTO reach (kind, id, sites, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (kind, id) DO UPDATE SET sites = excluded.sites, expires_at = excluded.expires_at`, kind, id, plan.Reach[key], at)
	}
}

// txSites is what store.PlanSites reads, in the committing transaction.
type txSites struct {
	ctx context.Context
	tx  pgx.Tx
}

func found[T any](r txSites, kind, id string) (T, bool, error) {
	var x T
	var raw []byte
	err := r.tx.QueryRow(r.ctx, `SELECT body FROM records WHERE kind = $1 AND id = $2 AND `+live, kind, id).Scan(&raw)
	switch {
	case isNoRows(err):
		return x, false, nil
	case err != nil:
		return x, false, fmt.Errorf("read %s/%s: %w", kind, id, err)
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		return x, false, fmt.Errorf("decode %s/%s: %w", kind, id, err)
	}
	return x, true, nil
}

func (r txSites) Device(id string) (store.Device, bool, error) {
	return found[store.Device](r, kDevice, id)
}
func (r txSites) User(id string) (store.User, bool, error) { return found[store.User](r, kUser, id) }
func (r txSites) Grant(id string) (store.Grant, bool, error) {
	return found[store.Grant](r, kGrant, id)
}

func (r txSites) ids(sql string, arg string) ([]string, error) {
	rows, err := r.tx.Query(r.ctx, sql, arg)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (r txSites) DevicesOfOwner(owner string) ([]string, error) {
	return r.ids(`SELECT id FROM records WHERE kind = 'devices' AND owner = $1 ORDER BY id`, owner)
}

func (r txSites) GrantsOfDevice(device string) ([]string, error) {
	return r.ids(`SELECT grant_id FROM grant_devices WHERE device = $1 ORDER BY grant_id`, device)
}

func (r txSites) Reach(key string) ([]string, bool, error) {
	kind, id, _ := strings.Cut(key, "/")
	var sites []string
	err := r.tx.QueryRow(r.ctx, `SELECT sites FROM reach WHERE kind = $1 AND id = $2 AND `+live, kind, id).Scan(&sites)
	switch {
	case isNoRows(err):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("read the reach of %s: %w", key, err)
	}
	return sites, true, nil
}
