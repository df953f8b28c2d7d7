package pgstore

import (
	"encoding/json"
	"fmt"

	"github.com/edgeid/edgeid/store"
	"github.com/jackc/pgx/v5"
)

// Documents: JSON values by kind and id, not synced. Each write draws a
// new version from doc_versions (GetDocVersion; DocWrite.ExpectVersion).

// PutDoc stores v as the document kind/id.
func (s *Store) PutDoc(kind, id string, v any) error {
	if err := store.ValidID(kind); err != nil {
		return fmt.Errorf("document kind %q %v", kind, err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", kind, id, err)
	}
	ctx, cancel := s.call()
	defer cancel()
	if _, err := s.pool.Exec(ctx, `INSERT INTO docs (kind, id, version, body) VALUES ($1, $2, nextval('doc_versions'), $3)
ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, body = excluded.body`, kind, id, raw); err != nil {
		return fmt.Errorf("pgstore: store %s/%s: %w", kind, id, err)
	}
	return nil
}

// GetDoc loads the document kind/id into v; store.ErrNotFound if there is
// none.
func (s *Store) GetDoc(kind, id string, v any) error {
	_, err := s.GetDocVersion(kind, id, v)
	return err
}

// GetDocVersion is GetDoc that also returns the document's version, for a
// DocWrite's ExpectVersion.
func (s *Store) GetDocVersion(kind, id string, v any) (uint64, error) {
	ctx, cancel := s.call()
	defer cancel()
	var ver int64
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT version, body FROM docs WHERE kind = $1 AND id = $2`, kind, id).Scan(&ver, &raw)
	switch {
	case isNoRows(err):
		return 0, store.ErrNotFound
	case err != nil:
		return 0, fmt.Errorf("pgstore: load %s/%s: %w", kind, id, err)
	}
	return uint64(ver), json.Unmarshal(raw, v)
}

// DeleteDoc removes the document kind/id (none is no error).
func (s *Store) DeleteDoc(kind, id string) error {
	ctx, cancel := s.call()
	defer cancel()
	if _, err := s.pool.Exec(ctx, `DELETE FROM docs WHERE kind = $1 AND id = $2`, kind, id); err != nil {
		return fmt.Errorf("pgstore: delete %s/%s: %w", kind, id, err)
	}
	return nil
}

// TakeDoc loads and deletes kind/id at once: of concurrent takers, one gets
// it (the others wait for its row lock, then find it gone: ErrNotFound). A
// value that does not decode into v is left in place.
func (s *Store) TakeDoc(kind, id string, v any) error {
	ctx, cancel := s.call()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var raw []byte
		err := tx.QueryRow(ctx, `DELETE FROM docs WHERE kind = $1 AND id = $2 RETURNING body`, kind, id).Scan(&raw)
		switch {
		case isNoRows(err):
			return store.ErrNotFound
		case err != nil:
			return fmt.Errorf("pgstore: take %s/%s: %w", kind, id, err)
		}
		return json.Unmarshal(raw, v)
	})
	return err
}

// ListDocs calls fn with the id and raw JSON of every document of kind, in
// id order, as of one read: fn runs after it, holding no connection, so it
// may use the store.
func (s *Store) ListDocs(kind string, fn func(id string, raw []byte) error) error {
	ctx, cancel := s.call()
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT id, body FROM docs WHERE kind = $1 ORDER BY id`, kind)
	if err != nil {
		return fmt.Errorf("pgstore: list %s: %w", kind, err)
	}
	type doc struct {
		id  string
		raw []byte
	}
	docs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (doc, error) {
		var d doc
		err := r.Scan(&d.id, &d.raw)
		return d, err
	})
	if err != nil {
		return fmt.Errorf("pgstore: list %s: %w", kind, err)
	}
	cancel() // the read is done; fn may take long
	for _, d := range docs {
		if err := fn(d.id, d.raw); err != nil {
			return err
		}
	}
	return nil
}
