package store

import (
	"encoding/json"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Documents are records that belong to one program and are not synced: the
// authority's gateways, enrollment codes and keys. They live in their own
// key space ("o/<kind>/<id>") beside the synced records, in the same Badger.
const pDoc = "o/"

// PutDoc stores v as the document kind/id, durably.
func (s *Store) PutDoc(kind, id string, v any) error {
	if err := validID(kind); err != nil {
		return fmt.Errorf("document kind %q %v", kind, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", kind, id, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(pDoc+kind+"/"+id), b) }); err != nil {
		return fmt.Errorf("store %s/%s: %w", kind, id, err)
	}
	return s.db.Sync()
}

// GetDoc loads the document kind/id into v; ErrNotFound if there is none.
func (s *Store) GetDoc(kind, id string, v any) error {
	return s.get(pDoc+kind+"/"+id, v)
}

// DeleteDoc removes the document kind/id.
func (s *Store) DeleteDoc(kind, id string) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(pDoc + kind + "/" + id)) })
}

// TakeDoc loads and deletes kind/id in one transaction: a one-time code can
// be used once, even by two requests at the same moment.
func (s *Store) TakeDoc(kind, id string, v any) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := getJSON(txn, pDoc+kind+"/"+id, v); err != nil {
			return err
		}
		return txn.Delete([]byte(pDoc + kind + "/" + id))
	})
	if errors.Is(err, badger.ErrConflict) {
		return ErrNotFound
	}
	return err
}

// ListDocs calls fn with the id and raw JSON of every document of kind.
func (s *Store) ListDocs(kind string, fn func(id string, raw []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error { return iterate(txn, pDoc+kind+"/", fn) })
}
