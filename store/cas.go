package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// Conditional commits: "a read-modify-write of a record is one conditional
// commit". A writer reads the records it will change (each carries Rev, the
// batch that last wrote it), changes them, and commits a Batch whose Expect
// names each record read and the revision it was read at. The store checks
// every expectation inside the transaction that writes the batch, reading
// the keys in that transaction (so Badger's own conflict detection covers
// them too): if any record changed meanwhile, nothing is written and the
// answer is a *ConflictError (errors.Is ErrConflict). Whether to read again
// and retry or to give up is the caller's decision.
//
// Documents (PutDoc) that must change together with records go in
// Batch.Docs, in the same transaction; CommitDocs commits document writes
// alone. A document has no Rev: its version is what GetDocVersion returns
// (Badger's commit timestamp of its last write), and a DocWrite may expect
// it, or expect the document to be absent.

// ErrConflict is the error a conditional commit returns, wrapped in a
// *ConflictError, when a record or document it expected changed meanwhile.
var ErrConflict = errors.New("changed meanwhile")

// ConflictError names the record or document whose expectation failed.
type ConflictError struct {
	// Key is the record ("devices/<id>", as in Batch.Expect) or document
	// ("docs/<kind>/<id>"); empty when Badger found that a key the commit
	// read was written by a concurrent transaction.
	Key string
	// Want is the revision (for a document, the version) expected, 0 for
	// "must not exist"; Got is what was found, 0 for "does not exist".
	Want, Got uint64
}

func (e *ConflictError) Error() string {
	switch {
	case e.Key == "":
		return "conflict: a record or document this change read was written by a concurrent change; nothing was written"
	case e.Want == 0:
		return fmt.Sprintf("conflict: %s exists (rev %d), expected none; nothing was written", e.Key, e.Got)
	case e.Got == 0:
		return fmt.Sprintf("conflict: %s is gone, expected rev %d; nothing was written", e.Key, e.Want)
	}
	return fmt.Sprintf("conflict: %s is at rev %d, expected %d; nothing was written", e.Key, e.Got, e.Want)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Record keys of Batch.Expect: "<kind>/<id>".
func DeviceKey(id string) string    { return "devices/" + id }
func UserKey(id string) string      { return "users/" + id }
func GrantKey(id string) string     { return "grants/" + id }
func ClassKey(name string) string   { return "classes/" + name }
func IssuerKey(iss string) string   { return "issuers/" + iss }
func docKey(kind, id string) string { return "docs/" + kind + "/" + id }

// expectPrefixes maps the kinds of Batch.Expect keys to key spaces.
var expectPrefixes = map[string]string{"devices": pDevice, "users": pUser, "grants": pGrant, "classes": pClass, "issuers": pIssuer}

// ExpectRev adds to b the expectation that the record key (DeviceKey, …)
// is still at rev when b commits (0: that it does not exist). It returns b.
func (b *Batch) ExpectRev(key string, rev uint64) *Batch {
	if b.Expect == nil {
		b.Expect = map[string]uint64{}
	}
	b.Expect[key] = rev
	return b
}

// DocWrite is a write of one document in a conditional commit.
type DocWrite struct {
	Kind, ID string
	// Value is stored as JSON (ignored with Delete).
	Value any
	// Delete removes the document instead.
	Delete bool
	// ExpectAbsent: the document must not exist.
	ExpectAbsent bool
	// ExpectVersion, when not 0: the document must still be the version
	// GetDocVersion returned (so it must exist).
	ExpectVersion uint64
}

// GetDocVersion is GetDoc that also returns the document's version, for a
// DocWrite's ExpectVersion; ErrNotFound if there is none.
func (s *Store) GetDocVersion(kind, id string, v any) (uint64, error) {
	var ver uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(pDoc + kind + "/" + id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		ver = item.Version()
		return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	})
	return ver, err
}

// CommitDocs writes documents together, in one transaction, if each
// expectation holds, the documents' own and expect's of records read (as
// Batch.Expect: a decision on a document made from a record); else it
// writes nothing and returns a *ConflictError. It changes no record, so it
// logs nothing and moves no rev. Durable on return.
func (s *Store) CommitDocs(expect map[string]uint64, ws ...DocWrite) error {
	if err := checkDocWrites(ws); err != nil {
		return err
	}
	err := s.db.Update(func(txn *badger.Txn) error {
		if err := expectRecords(txn, expect); err != nil {
			return err
		}
		if err := expectDocs(txn, ws); err != nil {
			return err
		}
		return writeDocs(txn, ws)
	})
	if err != nil {
		return commitError("commit documents", err)
	}
	return s.db.Sync()
}

// commitError maps Badger's conflict to a *ConflictError and leaves
// conflicts and validation errors unwrapped.
func commitError(what string, err error) error {
	var ce *ConflictError
	var ve *ValidationError
	switch {
	case errors.Is(err, badger.ErrConflict):
		return &ConflictError{}
	case errors.As(err, &ce), errors.As(err, &ve):
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// checkDocWrites validates document writes on their own.
func checkDocWrites(ws []DocWrite) error {
	var p problems
	seen := map[string]bool{}
	for i, w := range ws {
		at := fmt.Sprintf("docs[%d] (%s/%s)", i, w.Kind, w.ID)
		if err := validID(w.Kind); err != nil {
			p.add("%s.kind %v", at, err)
		}
		if w.ID == "" {
			p.add("%s.id is empty", at)
		}
		if seen[w.Kind+"/"+w.ID] {
			p.add("%s appears twice", at)
		}
		seen[w.Kind+"/"+w.ID] = true
		if w.ExpectAbsent && (w.ExpectVersion != 0 || w.Delete) {
			p.add("%s: expect_absent goes with neither expect_version nor delete", at)
		}
	}
	if len(p.list) > 0 {
		return &ValidationError{Problems: p.list}
	}
	return nil
}

// expectRecords checks b.Expect in txn, reading each record there.
func expectRecords(txn *badger.Txn, expect map[string]uint64) error {
	keys := make([]string, 0, len(expect))
	for k := range expect {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		want := expect[k]
		kind, id, _ := strings.Cut(k, "/")
		prefix, ok := expectPrefixes[kind]
		if !ok || id == "" {
			return &ValidationError{Problems: []string{fmt.Sprintf("expect %q: name a record as devices/<id>, users/<id>, grants/<id>, classes/<name> or issuers/<issuer>", k)}}
		}
		var r struct {
			Rev uint64 `json:"rev"`
		}
		err := getJSON(txn, prefix+id, &r)
		switch {
		case errors.Is(err, ErrNotFound):
			if want != 0 {
				return &ConflictError{Key: k, Want: want}
			}
		case err != nil:
			return fmt.Errorf("read %s: %w", k, err)
		case want == 0 || r.Rev != want:
			return &ConflictError{Key: k, Want: want, Got: r.Rev}
		}
	}
	return nil
}

// expectDocs checks each document write's expectation in txn.
func expectDocs(txn *badger.Txn, ws []DocWrite) error {
	for _, w := range ws {
		if !w.ExpectAbsent && w.ExpectVersion == 0 {
			continue
		}
		item, err := txn.Get([]byte(pDoc + w.Kind + "/" + w.ID))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			if w.ExpectVersion != 0 {
				return &ConflictError{Key: docKey(w.Kind, w.ID), Want: w.ExpectVersion}
			}
		case err != nil:
			return fmt.Errorf("read %s: %w", docKey(w.Kind, w.ID), err)
		case w.ExpectAbsent || item.Version() != w.ExpectVersion:
			return &ConflictError{Key: docKey(w.Kind, w.ID), Want: w.ExpectVersion, Got: item.Version()}
		}
	}
	return nil
}

// writeDocs writes or deletes each document in txn.
func writeDocs(txn *badger.Txn, ws []DocWrite) error {
	for _, w := range ws {
		k := pDoc + w.Kind + "/" + w.ID
		if w.Delete {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
			continue
		}
		b, err := json.Marshal(w.Value)
		if err != nil {
			return fmt.Errorf("encode %s: %w", docKey(w.Kind, w.ID), err)
		}
		if err := txn.Set([]byte(k), b); err != nil {
			return err
		}
	}
	return nil
}
