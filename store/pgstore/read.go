package pgstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/edgeid/edgeid/store"
	"github.com/jackc/pgx/v5"
)

// live is the condition of a record still held: a revocation past its
// expiry is gone for every reader, swept or not.
const live = `(expires_at IS NULL OR expires_at > now())`

// getRaw reads the body of the record kind/id; store.ErrNotFound, bare,
// when there is none.
func (s *Store) getRaw(kind, id string) ([]byte, error) {
	ctx, cancel := s.call()
	defer cancel()
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT body FROM records WHERE kind = $1 AND id = $2 AND `+live, kind, id).Scan(&raw)
	if isNoRows(err) {
		return nil, store.ErrNotFound
	}
	return raw, err
}

// getRecord loads the record kind/id; what names its kind in the error,
// which wraps store.ErrNotFound as the Badger store's does.
func getRecord[T any](s *Store, kind, what, id string) (T, error) {
	var x T
	raw, err := s.getRaw(kind, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return x, fmt.Errorf("load %s %q: %w", what, id, err)
	case err != nil:
		return x, fmt.Errorf("pgstore: load %s %q: %w", what, id, err)
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		return x, fmt.Errorf("pgstore: decode %s %q: %w", what, id, err)
	}
	return x, nil
}

// Device returns the device with the given id.
func (s *Store) Device(id string) (store.Device, error) {
	return getRecord[store.Device](s, kDevice, "device", id)
}

// Class returns the device class with the given name.
func (s *Store) Class(name string) (store.DeviceClass, error) {
	return getRecord[store.DeviceClass](s, kClass, "class", name)
}

// User returns the user with the given id.
func (s *Store) User(id string) (store.User, error) {
	return getRecord[store.User](s, kUser, "user", id)
}

// Grant returns the grant with the given id.
func (s *Store) Grant(id string) (store.Grant, error) {
	return getRecord[store.Grant](s, kGrant, "grant", id)
}

// Revocation returns the revocation of kind for value, if one is held
// (an expired one is not).
func (s *Store) Revocation(kind store.RevocationKind, value string) (store.Revocation, bool, error) {
	var r store.Revocation
	raw, err := s.getRaw(kRevoke, string(kind)+"/"+value)
	if errors.Is(err, store.ErrNotFound) {
		return r, false, nil
	}
	if err == nil {
		err = json.Unmarshal(raw, &r)
	}
	if err != nil {
		return store.Revocation{}, false, fmt.Errorf("pgstore: load revocation %s/%s: %w", kind, value, err)
	}
	return r, true, nil
}

// DeviceByCertFingerprint finds the device whose certificate has this
// SHA-256 (lowercase hex).
func (s *Store) DeviceByCertFingerprint(fp string) (store.Device, error) {
	ctx, cancel := s.call()
	defer cancel()
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT r.body FROM device_index x JOIN records r ON r.kind = 'devices' AND r.id = x.device
WHERE x.key = $1`, store.CertFingerprintIndexKey(fp)).Scan(&raw)
	switch {
	case isNoRows(err):
		return store.Device{}, fmt.Errorf("device for certificate %s: %w", fp, store.ErrNotFound)
	case err != nil:
		return store.Device{}, fmt.Errorf("pgstore: device for certificate %s: %w", fp, err)
	}
	var d store.Device
	if err := json.Unmarshal(raw, &d); err != nil {
		return store.Device{}, fmt.Errorf("pgstore: decode device for certificate %s: %w", fp, err)
	}
	return d, nil
}

// DevicesOfOwner lists the ids of devices paired to owner, in id order.
func (s *Store) DevicesOfOwner(owner string) ([]string, error) {
	ctx, cancel := s.call()
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id FROM records WHERE kind = 'devices' AND owner = $1 ORDER BY id`, owner)
	if err != nil {
		return nil, fmt.Errorf("pgstore: devices of %q: %w", owner, err)
	}
	var ids []string
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { ids = append(ids, id); return nil }); err != nil {
		return nil, fmt.Errorf("pgstore: devices of %q: %w", owner, err)
	}
	return ids, nil
}

// list decodes every record of kind, in id order.
func list[T any](s *Store, kind string) ([]T, error) {
	ctx, cancel := s.call()
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id, body FROM records WHERE kind = $1 AND `+live+` ORDER BY id`, kind)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list %s: %w", kind, err)
	}
	var out []T
	var id string
	var raw []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &raw}, func() error {
		var t T
		if err := json.Unmarshal(raw, &t); err != nil {
			return fmt.Errorf("decode %s/%s: %w", kind, id, err)
		}
		out = append(out, t)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("pgstore: list %s: %w", kind, err)
	}
	return out, nil
}

// Devices lists all devices in id order.
func (s *Store) Devices() ([]store.Device, error) { return list[store.Device](s, kDevice) }

// Classes lists all device classes.
func (s *Store) Classes() ([]store.DeviceClass, error) { return list[store.DeviceClass](s, kClass) }

// Users lists all users.
func (s *Store) Users() ([]store.User, error) { return list[store.User](s, kUser) }

// Grants lists all grants.
func (s *Store) Grants() ([]store.Grant, error) { return list[store.Grant](s, kGrant) }

// Issuers lists all trusted issuers.
func (s *Store) Issuers() ([]store.Issuer, error) { return list[store.Issuer](s, kIssuer) }

// Revocations lists the revocations still held.
func (s *Store) Revocations() ([]store.Revocation, error) { return list[store.Revocation](s, kRevoke) }

// LogSince returns up to max logged batches with rev > from, in order;
// store.ErrLogTrimmed when the log no longer holds from+1.
func (s *Store) LogSince(from uint64, max int) ([]store.LogEntry, error) {
	if max <= 0 || from >= math.MaxInt64 {
		return nil, nil
	}
	ctx, cancel := s.call()
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT rev, entry FROM log WHERE rev > $1 ORDER BY rev LIMIT $2`, int64(from), max)
	if err != nil {
		return nil, fmt.Errorf("pgstore: read log: %w", err)
	}
	var out []store.LogEntry
	var rev int64
	var raw []byte
	if _, err := pgx.ForEachRow(rows, []any{&rev, &raw}, func() error {
		if len(out) == 0 && uint64(rev) != from+1 && from != 0 {
			return store.ErrLogTrimmed
		}
		e, err := store.DecodeLogEntry(uint64(rev), raw)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	}); err != nil {
		if errors.Is(err, store.ErrLogTrimmed) {
			return nil, err
		}
		return nil, fmt.Errorf("pgstore: read log: %w", err)
	}
	return out, nil
}

// Snapshot returns every record and the rev they are current at, read in
// one REPEATABLE READ transaction: one consistent view.
func (s *Store) Snapshot() (*store.Batch, uint64, error) {
	return s.snapshot(nil, `SELECT kind, id, body FROM records WHERE `+live+` ORDER BY kind, id`)
}

// SiteSnapshot is Snapshot for the gateways of one site: the classes and
// issuers, and the records whose reach holds the site or every site (as
// the Badger store's, those of the site first); site "" is Snapshot.
func (s *Store) SiteSnapshot(site string) (*store.Batch, uint64, error) {
	if site == "" {
		return s.Snapshot()
	}
	return s.snapshot([]any{site},
		`SELECT kind, id, body FROM records WHERE kind IN ('classes', 'issuers') ORDER BY kind, id`,
		`SELECT r.kind, r.id, r.body FROM reach x JOIN records r USING (kind, id)
WHERE x.sites && ARRAY[$1::text, '*'] AND (x.expires_at IS NULL OR x.expires_at > now())
	AND (r.expires_at IS NULL OR r.expires_at > now())
ORDER BY NOT ($1 = ANY(x.sites)), r.kind, r.id`)
}

// snapshot reads the rev and the records each query selects (kind, id,
// body), in one REPEATABLE READ transaction; a query with parameters
// takes args.
func (s *Store) snapshot(args []any, queries ...string) (*store.Batch, uint64, error) {
	ctx, cancel := s.call()
	defer cancel()
	b := &store.Batch{}
	var rev int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT rev FROM head`).Scan(&rev); err != nil {
			return err
		}
		for _, q := range queries {
			var qargs []any
			if strings.Contains(q, "$1") {
				qargs = args
			}
			rows, err := tx.Query(ctx, q, qargs...)
			if err != nil {
				return err
			}
			var kind, id string
			var raw []byte
			if _, err := pgx.ForEachRow(rows, []any{&kind, &id, &raw}, func() error {
				var err error
				switch kind {
				case kClass:
					err = appendJSON(&b.Classes, raw)
				case kDevice:
					err = appendJSON(&b.Devices, raw)
				case kUser:
					err = appendJSON(&b.Users, raw)
				case kGrant:
					err = appendJSON(&b.Grants, raw)
				case kIssuer:
					err = appendJSON(&b.Issuers, raw)
				case kRevoke:
					err = appendJSON(&b.Revocations, raw)
				}
				if err != nil {
					return fmt.Errorf("decode %s/%s: %w", kind, id, err)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("pgstore: snapshot: %w", err)
	}
	return b, uint64(rev), nil
}

func appendJSON[T any](dst *[]T, raw []byte) error {
	var x T
	if err := json.Unmarshal(raw, &x); err != nil {
		return err
	}
	*dst = append(*dst, x)
	return nil
}
