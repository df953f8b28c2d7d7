package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

func (s *Store) get(key string, v any) error {
	return s.db.View(func(txn *badger.Txn) error { return getJSON(txn, key, v) })
}

// getRecord loads the record stored under prefix+id; what names its kind in the error.
func getRecord[T any](s *Store, prefix, what, id string) (T, error) {
	var x T
	if err := s.get(prefix+id, &x); err != nil {
		return x, fmt.Errorf("load %s %q: %w", what, id, err)
	}
	return x, nil
}

// Device returns the device with the given id.
func (s *Store) Device(id string) (Device, error) { return getRecord[Device](s, pDevice, "device", id) }

// Class returns the device class with the given name.
//
// Every MQTT CONNECT reads its device's class: decoding its JSON was a
// sixth of a token connect's CPU. The decoded class is kept with the
// version Badger gave the value, and used while the stored value has that
// version (a write always gives a new one), so it is never stale; callers
// get a copy of their own.
func (s *Store) Class(name string) (DeviceClass, error) {
	var c DeviceClass
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(pClass + name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if v, ok := s.classes.Load(name); ok && v.(*cachedClass).version == item.Version() {
			c = v.(*cachedClass).class.clone()
			return nil
		}
		if err := item.Value(func(b []byte) error { return json.Unmarshal(b, &c) }); err != nil {
			return err
		}
		s.classes.Store(name, &cachedClass{version: item.Version(), class: c.clone()})
		return nil
	})
	if err != nil {
		return DeviceClass{}, fmt.Errorf("load class %q: %w", name, err)
	}
	return c, nil
}

// cachedClass is a decoded class and the Badger version of its value.
type cachedClass struct {
	version uint64
	class   DeviceClass
}

// clone copies c down to its slices, so that no caller shares the cache's.
func (c DeviceClass) clone() DeviceClass {
	c.Permissions = slices.Clone(c.Permissions)
	if c.Resources != nil {
		rs := make([]ResourceGroup, len(c.Resources))
		for i, r := range c.Resources {
			r.Scopes = slices.Clone(r.Scopes)
			rs[i] = r
		}
		c.Resources = rs
	}
	if c.Limits != nil {
		l := *c.Limits
		c.Limits = &l
	}
	return c
}

// User returns the user with the given id.
func (s *Store) User(id string) (User, error) { return getRecord[User](s, pUser, "user", id) }

// Grant returns the grant with the given id.
func (s *Store) Grant(id string) (Grant, error) { return getRecord[Grant](s, pGrant, "grant", id) }

func (s *Store) lookupIndex(key string) (string, error) {
	var id string
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		id = string(v)
		return err
	})
	return id, err
}

// DeviceByCertFingerprint finds the device whose certificate has this SHA-256 (lowercase hex).
func (s *Store) DeviceByCertFingerprint(fp string) (Device, error) {
	id, err := s.lookupIndex(pIdxCertFP + fp)
	if err != nil {
		return Device{}, fmt.Errorf("device for certificate %s: %w", fp, err)
	}
	return s.Device(id)
}

// DeviceByCertIssuer finds the device registered with this issuer DN and serial (lowercase hex).
func (s *Store) DeviceByCertIssuer(issuer, serial string) (Device, error) {
	id, err := s.lookupIndex(certIssuerIndexKey(issuer, serial))
	if err != nil {
		return Device{}, fmt.Errorf("device for certificate %s/%s: %w", issuer, serial, err)
	}
	return s.Device(id)
}

// DevicesOfOwner lists the ids of devices paired to owner.
func (s *Store) DevicesOfOwner(owner string) ([]string, error) {
	var ids []string
	err := s.db.View(func(txn *badger.Txn) error {
		return iterate(txn, pIdxOwner+owner+"/", func(k string, _ []byte) error {
			ids = append(ids, k)
			return nil
		})
	})
	return ids, err
}

// Revocation returns the revocation of kind for value, if one is held.
func (s *Store) Revocation(kind RevocationKind, value string) (Revocation, bool, error) {
	var r Revocation
	err := s.get(pRevoke+string(kind)+"/"+value, &r)
	if errors.Is(err, ErrNotFound) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("load revocation %s/%s: %w", kind, value, err)
	}
	return r, true, nil
}

func list[T any](s *Store, prefix string) ([]T, error) {
	var out []T
	err := s.db.View(func(txn *badger.Txn) error {
		return iterate(txn, prefix, func(k string, v []byte) error {
			var t T
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode %s%s: %w", prefix, k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// Devices lists all devices in id order.
func (s *Store) Devices() ([]Device, error) { return list[Device](s, pDevice) }

// Classes lists all device classes.
func (s *Store) Classes() ([]DeviceClass, error) { return list[DeviceClass](s, pClass) }

// Issuers lists all trusted issuers.
func (s *Store) Issuers() ([]Issuer, error) { return list[Issuer](s, pIssuer) }

// Revocations lists the revocations still held (expired ones are gone).
func (s *Store) Revocations() ([]Revocation, error) { return list[Revocation](s, pRevoke) }

// Users lists all users.
func (s *Store) Users() ([]User, error) { return list[User](s, pUser) }

// Grants lists all grants.
func (s *Store) Grants() ([]Grant, error) { return list[Grant](s, pGrant) }

// Counts returns how many records of each type the store holds.
func (s *Store) Counts() (map[string]int, error) {
	out := map[string]int{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		names := map[string]string{pDevice: "devices", pClass: "classes", pUser: "users", pGrant: "grants", pIssuer: "issuers", pRevoke: "revocations"}
		for it.Rewind(); it.Valid(); it.Next() {
			k := string(it.Item().Key())
			if i := strings.IndexByte(k, '/'); i > 0 {
				if n, ok := names[k[:i+1]]; ok {
					out[n]++
				}
			}
		}
		return nil
	})
	return out, err
}

// Cursor returns the stored sync cursor (zero if never synced).
func (s *Store) Cursor() (Cursor, error) {
	var c Cursor
	err := s.get(kCursor, &c)
	if errors.Is(err, ErrNotFound) {
		return Cursor{}, nil
	}
	return c, err
}

// Rev is the number of the last applied batch.
func (s *Store) Rev() (uint64, error) {
	var v uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		v, err = getU64(txn, kSeq)
		return err
	})
	return v, err
}
