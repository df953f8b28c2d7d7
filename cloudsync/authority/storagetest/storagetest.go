// Package storagetest is the conformance suite of the authority's storage
// (authority.Storage): every implementation (the Badger store, PostgreSQL's
// store/pgstore) must pass Run, and a shared one (several handles on one
// database: replicas) RunShared too. The tests assert outcomes, never how
// long anything takes; a wait for an event has a deadline.
package storagetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

type test struct {
	name string
	// run gets the handles on one new, empty storage: one for Run, two
	// (replicas) for RunShared; concurrent writers take turns on them.
	run func(t *testing.T, hs []authority.Storage)
}

// single are the tests of Run; a test that takes handles runs in
// RunShared too (shared).
var single = []test{
	{"Reads", testReads},
	{"RevocationExpiry", testRevocationExpiry},
	{"InvalidBatchChangesNothing", testInvalidBatch},
	{"UniqueIndexes", testUniqueIndexes},
	{"DeleteClassInUse", testDeleteClassInUse},
	{"StaleExpectWritesNothing", testStaleExpect},
	{"DocExpectations", testDocExpectations},
	{"BatchDocExpectations", testBatchDocExpectations},
	{"Documents", testDocuments},
	{"Watch", testWatch},
	{"SnapshotConsistent", testSnapshotConsistent},
	{"Sites", testSites},
}

var shared = []test{
	{"NoLostUpdate", testNoLostUpdate},
	{"OneCreationWins", testOneCreationWins},
	{"CommitDocsNoLostUpdate", testCommitDocsNoLostUpdate},
	{"TakeDocOnce", testTakeDocOnce},
	{"LogConsecutive", testLogConsecutive},
	{"ApplyFuncWins", testApplyFuncWins},
}

// Run runs the suite, each test on a new, empty storage from open (which
// closes it when t ends).
func Run(t *testing.T, open func(t *testing.T) authority.Storage) {
	for _, tc := range append(single[:len(single):len(single)], shared...) {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, []authority.Storage{open(t)}) })
	}
}

// RunShared runs, for a shared backend, the concurrent tests with their
// writers split over two handles a and b on one new, empty database (two
// replicas), and the test that a commit on one handle reaches the watchers
// of the other.
func RunShared(t *testing.T, open func(t *testing.T) (a, b authority.Storage)) {
	for _, tc := range shared {
		t.Run(tc.name, func(t *testing.T) {
			a, b := open(t)
			tc.run(t, []authority.Storage{a, b})
		})
	}
	t.Run("WatchOtherHandle", func(t *testing.T) {
		a, b := open(t)
		testWatchOtherHandle(t, a, b)
	})
}

// ---- helpers ----

const class = "thermostat"

// withClass commits the class every device of the tests is of.
func withClass(t *testing.T, s authority.Storage) uint64 {
	t.Helper()
	return mustApply(t, s, &store.Batch{Classes: []store.DeviceClass{{Name: class,
		Permissions: []policy.Rule{{Filter: "devices/{device}/#", Actions: policy.Publish}}}}}, "setup")
}

func mustApply(t testing.TB, s authority.Storage, b *store.Batch, by string) uint64 {
	t.Helper()
	rev, err := s.ApplyLoggedBy(b, by)
	if err != nil {
		t.Fatalf("ApplyLoggedBy: %v", err)
	}
	return rev
}

func mustRev(t testing.TB, s authority.Storage) uint64 {
	t.Helper()
	rev, err := s.Rev()
	if err != nil {
		t.Fatalf("Rev: %v", err)
	}
	return rev
}

func device(id string) store.Device {
	return store.Device{ID: id, Class: class, Status: store.DeviceActive}
}

// fp is a certificate fingerprint made of one byte.
func fp(b byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 64)
	for i := range 32 {
		out[2*i], out[2*i+1] = hex[b>>4], hex[b&15]
	}
	return string(out)
}

// sameJSON fails unless got and want encode alike (records hold times and
// raw JSON that compare by their encoding, as they are stored).
func sameJSON(t testing.TB, what string, got, want any) {
	t.Helper()
	g, err1 := json.Marshal(got)
	w, err2 := json.Marshal(want)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: encode: %v %v", what, err1, err2)
	}
	if string(g) != string(w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func wantConflict(t testing.TB, err error, key string) {
	t.Helper()
	var ce *store.ConflictError
	if !errors.Is(err, store.ErrConflict) || !errors.As(err, &ce) || ce.Key != key {
		t.Fatalf("err = %v, want a conflict on %q", err, key)
	}
}

func wantValidation(t testing.TB, err error, problem string) {
	t.Helper()
	var ve *store.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v (%T), want a *store.ValidationError", err, err)
	}
	for _, p := range ve.Problems {
		if p == problem {
			return
		}
	}
	t.Fatalf("problems %q, want %q among them", ve.Problems, problem)
}

func wantNotFound(t testing.TB, err error, text string) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want one wrapping store.ErrNotFound", err)
	}
	if text != "" && err.Error() != text {
		t.Fatalf("err = %q, want %q", err, text)
	}
}

// validJWKS is a key set of one P-256 public key.
func validJWKS(t testing.TB) store.JWKS {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jk, err := jwk.Import(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := jk.Set(jwk.KeyIDKey, "k1"); err != nil {
		t.Fatal(err)
	}
	if err := jk.Set(jwk.AlgorithmKey, jwa.ES256()); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(map[string]any{"keys": []any{jk}})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// waitFor waits, up to 10 s, for cond; the deadline is for an event that
// must come, not a measure of speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 10 s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
