package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The sites bookkeeping of a logged (authority) store, kept in the same
// transaction as the records: what each record reaches, an index of the
// records of each site, and the shares of each device.
const (
	pIdxReach    = "x/reach/" // x/reach/<record key> → JSON list of sites
	pIdxSite     = "x/site/"  // x/site/<site>/<record key> → nothing
	pIdxGrantDev = "x/gdev/"  // x/gdev/<device>/<grant> → nothing
)

// txnSites reads what PlanSites needs inside a Badger transaction; before,
// when set, is a read-only view of the store as it was before that
// transaction, for the share index (see GrantsOfDevice).
type txnSites struct {
	txn    *badger.Txn
	before *badger.Txn
}

func found[T any](txn *badger.Txn, key string) (T, bool, error) {
	var v T
	err := getJSON(txn, key, &v)
	if errors.Is(err, ErrNotFound) {
		return v, false, nil
	}
	return v, err == nil, err
}

func (r txnSites) Device(id string) (Device, bool, error) { return found[Device](r.txn, pDevice+id) }
func (r txnSites) User(id string) (User, bool, error)     { return found[User](r.txn, pUser+id) }
func (r txnSites) Grant(id string) (Grant, bool, error)   { return found[Grant](r.txn, pGrant+id) }
func (r txnSites) Reach(key string) ([]string, bool, error) {
	return found[[]string](r.txn, pIdxReach+key)
}

func (r txnSites) keys(prefix string) ([]string, error) { return keysIn(r.txn, prefix) }

func keysIn(txn *badger.Txn, prefix string) ([]string, error) {
	var out []string
	err := iterate(txn, prefix, func(k string, _ []byte) error {
		out = append(out, k)
		return nil
	})
	return out, err
}

func (r txnSites) DevicesOfOwner(owner string) ([]string, error) {
	return r.keys(pIdxOwner + owner + "/")
}

// GrantsOfDevice reads the share index as it was before the commit when it
// can: an iterator on the committing transaction copies and sorts all its
// pending writes, once per device of a batch (most of a large import's
// time). The shares PlanSites asks this for are those the batch does not
// write or delete, whose index entries the commit does not change.
func (r txnSites) GrantsOfDevice(device string) ([]string, error) {
	if r.before != nil {
		return keysIn(r.before, pIdxGrantDev+device+"/")
	}
	return r.keys(pIdxGrantDev + device + "/")
}

// grantsBefore reads the shares a batch writes or deletes as they were, for
// the device index of shares.
func grantsBefore(txn *badger.Txn, b *Batch) ([]Grant, error) {
	var out []Grant
	ids := make([]string, 0, len(b.Grants)+len(b.Delete.Grants))
	for _, g := range b.Grants {
		ids = append(ids, g.ID)
	}
	ids = append(ids, b.Delete.Grants...)
	for _, id := range ids {
		g, ok, err := found[Grant](txn, pGrant+id)
		if err != nil {
			return nil, fmt.Errorf("read grant %q: %w", id, err)
		}
		if ok {
			out = append(out, g)
		}
	}
	return out, nil
}

// keepSites plans the sites of the batch being logged (lg.Batch, whose
// records txn has written), writes them beside the records and records them
// in the log entry, which also carries the dependents whose sites changed.
func keepSites(db *badger.DB, txn *badger.Txn, lg *logged, prev map[string]Device, oldGrants []Grant) error {
	for _, g := range oldGrants {
		for _, d := range g.Devices() {
			if err := txn.Delete([]byte(pIdxGrantDev + d + "/" + g.ID)); err != nil {
				return err
			}
		}
	}
	for _, g := range lg.Batch.Grants {
		for _, d := range g.Devices() {
			if err := txn.Set([]byte(pIdxGrantDev+d+"/"+g.ID), nil); err != nil {
				return err
			}
		}
	}
	// Commits of records are serialised (Store.mu): a view opened now is
	// the store before this transaction.
	before := db.NewTransaction(false)
	defer before.Discard()
	plan, err := PlanSites(&lg.Batch, prev, txnSites{txn: txn, before: before})
	if err != nil {
		return fmt.Errorf("plan sites: %w", err)
	}
	expires := map[string]time.Time{}
	for _, r := range lg.Batch.Revocations {
		expires[RevocationKey(r)] = r.ExpiresAt
	}
	if err := writeReach(txn, plan.Was, plan.Reach, expires); err != nil {
		return err
	}
	// Clip: appending must not write into the caller's batch's spare capacity.
	lg.Batch.Users = append(slices.Clip(lg.Batch.Users), plan.Users...)
	lg.Batch.Grants = append(slices.Clip(lg.Batch.Grants), plan.Grants...)
	lg.Reach, lg.Was = plan.Reach, plan.Was
	return nil
}

// writeReach moves records' site index entries from was to reach; a key
// only in was is gone. A revocation's entries expire with it.
func writeReach(txn *badger.Txn, was, reach map[string][]string, expires map[string]time.Time) error {
	for key, old := range was {
		for _, s := range old {
			if err := txn.Delete([]byte(pIdxSite + s + "/" + key)); err != nil {
				return err
			}
		}
		if _, stays := reach[key]; !stays {
			if err := txn.Delete([]byte(pIdxReach + key)); err != nil {
				return err
			}
		}
	}
	for key, now := range reach {
		v, _ := json.Marshal(now)
		entries := []*badger.Entry{badger.NewEntry([]byte(pIdxReach+key), v)}
		for _, s := range now {
			entries = append(entries, badger.NewEntry([]byte(pIdxSite+s+"/"+key), nil))
		}
		for _, e := range entries {
			if at := expires[key]; !at.IsZero() {
				e.ExpiresAt = uint64(at.Add(time.Second - time.Nanosecond).Unix())
			}
			if err := txn.SetEntry(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// SiteSnapshot is Snapshot for the gateways of one site: the classes and
// issuers, and the records that reach the site (sites.go), read in one
// consistent view; site "" is Snapshot. Only a logged store keeps sites.
func (s *Store) SiteSnapshot(site string) (*Batch, uint64, error) {
	if site == "" {
		return s.Snapshot()
	}
	b := &Batch{}
	var rev uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if rev, err = getU64(txn, kSeq); err != nil {
			return err
		}
		if err := iterate(txn, pClass, func(_ string, v []byte) error { return appendJSON(&b.Classes)(v) }); err != nil {
			return fmt.Errorf("snapshot classes: %w", err)
		}
		if err := iterate(txn, pIssuer, func(_ string, v []byte) error { return appendJSON(&b.Issuers)(v) }); err != nil {
			return fmt.Errorf("snapshot issuers: %w", err)
		}
		for _, s := range []string{site, AllSites} {
			if err := iterate(txn, pIdxSite+s+"/", func(key string, _ []byte) error {
				return addRecord(txn, b, key)
			}); err != nil {
				return fmt.Errorf("snapshot site %q: %w", site, err)
			}
		}
		return nil
	})
	return b, rev, err
}

// addRecord appends the record named by key ("devices/<id>", …) to b; one
// gone meanwhile (an expired revocation) is skipped.
func addRecord(txn *badger.Txn, b *Batch, key string) error {
	bk, ok := recordPrefixOf(key)
	if !ok {
		return fmt.Errorf("site index names %q, which is no record", key)
	}
	item, err := txn.Get([]byte(bk))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return item.Value(func(v []byte) error {
		switch {
		case strings.HasPrefix(key, "devices/"):
			return appendJSON(&b.Devices)(v)
		case strings.HasPrefix(key, "users/"):
			return appendJSON(&b.Users)(v)
		case strings.HasPrefix(key, "grants/"):
			return appendJSON(&b.Grants)(v)
		default:
			return appendJSON(&b.Revocations)(v)
		}
	})
}

// buildSites makes the sites bookkeeping of a logged store written before
// it was kept (schema 2 to 3): the share index first (the plan reads it),
// then each record's reach, in batches of writes, as nothing else is
// running yet. Every record starts with no previous reach.
func (s *Store) buildSites() error {
	var grants []Grant
	if err := s.db.View(func(txn *badger.Txn) error {
		return iterate(txn, pGrant, func(_ string, v []byte) error { return appendJSON(&grants)(v) })
	}); err != nil {
		return fmt.Errorf("read grants: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, g := range grants {
		for _, d := range g.Devices() {
			if err := wb.Set([]byte(pIdxGrantDev+d+"/"+g.ID), nil); err != nil {
				return err
			}
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("write share index: %w", err)
	}
	all := &Batch{}
	if err := s.db.View(func(txn *badger.Txn) error {
		for _, st := range []struct {
			prefix string
			add    func([]byte) error
		}{{pDevice, appendJSON(&all.Devices)}, {pUser, appendJSON(&all.Users)}, {pGrant, appendJSON(&all.Grants)}, {pRevoke, appendJSON(&all.Revocations)}} {
			if err := iterate(txn, st.prefix, func(_ string, v []byte) error { return st.add(v) }); err != nil {
				return err
			}
		}
		plan, err := PlanSites(all, map[string]Device{}, noReach{txnSites{txn: txn}})
		if err != nil {
			return err
		}
		wb2 := s.db.NewWriteBatch()
		defer wb2.Cancel()
		for key, now := range plan.Reach {
			v, _ := json.Marshal(now)
			if err := wb2.Set([]byte(pIdxReach+key), v); err != nil {
				return err
			}
			for _, st := range now {
				if err := wb2.Set([]byte(pIdxSite+st+"/"+key), nil); err != nil {
					return err
				}
			}
		}
		return wb2.Flush()
	}); err != nil {
		return fmt.Errorf("build site index: %w", err)
	}
	return nil
}

// noReach is a reader with no stored reach: building from scratch.
type noReach struct{ txnSites }

func (noReach) Reach(string) ([]string, bool, error) { return nil, false, nil }
