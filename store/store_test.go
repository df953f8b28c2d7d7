package store_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// ---- helpers ----

func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	s, err := store.Open(store.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("store.Open(%s): %v", dir, err)
	}
	return s
}

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s := openStore(t, t.TempDir())
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustApply(t *testing.T, s *store.Store, b *store.Batch, c *store.Cursor) uint64 {
	t.Helper()
	rev, err := s.Apply(b, c)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return rev
}

// jwkMap returns the JSON form of key (public or private) as a map, with kid
// and alg set unless empty.
func jwkMap(t *testing.T, key any, kid, alg string) map[string]any {
	t.Helper()
	k, err := jwk.Import(key)
	if err != nil {
		t.Fatalf("jwk.Import: %v", err)
	}
	raw, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		m["kid"] = kid
	}
	if alg != "" {
		m["alg"] = alg
	}
	return m
}

func jwks(t *testing.T, keys ...map[string]any) store.JWKS {
	t.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	raw, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func ecKey(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func validJWKS(t *testing.T, kid string) store.JWKS {
	return jwks(t, jwkMap(t, &ecKey(t, elliptic.P256()).PublicKey, kid, "ES256"))
}

func fp(b byte) string { return strings.Repeat(fmt.Sprintf("%02x", b), 32) }

var sensorRules = []policy.Rule{
	{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
	{Filter: "devices/{device}/commands/+", Actions: policy.Subscribe},
	{Filter: "owners/{owner}/alerts", Actions: policy.Publish | policy.Subscribe},
}

type snapshot struct {
	Devices     []store.Device
	Classes     []store.DeviceClass
	Users       []store.User
	Grants      []store.Grant
	Issuers     []store.Issuer
	Revocations []store.Revocation
	Cursor      store.Cursor
	Rev         uint64
	Owned       []string
}

func snap(t *testing.T, s *store.Store) snapshot {
	t.Helper()
	var sn snapshot
	var err error
	must := func(e error) {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
	}
	sn.Devices, err = s.Devices()
	must(err)
	sn.Classes, err = s.Classes()
	must(err)
	sn.Users, err = s.Users()
	must(err)
	sn.Grants, err = s.Grants()
	must(err)
	sn.Issuers, err = s.Issuers()
	must(err)
	sn.Revocations, err = s.Revocations()
	must(err)
	sn.Cursor, err = s.Cursor()
	must(err)
	sn.Rev, err = s.Rev()
	must(err)
	sn.Owned, err = s.DevicesOfOwner("alice")
	must(err)
	return sn
}

// seed fills s with one record of each kind and returns the batch.
func seed(t *testing.T, s *store.Store) *store.Batch {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	b := &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Description: "a sensor", Permissions: sensorRules}},
		Devices: []store.Device{
			{ID: "d1", Serial: "S-1", MAC: "00:11:22:33:44:55", Class: "sensor", Owner: "alice", Status: store.DeviceActive, CertSHA256: fp(0xaa)},
			{ID: "d2", Class: "sensor", Status: store.DeviceSuspended, CertIssuer: "CN=Factory CA", CertSerial: "0a1b"},
		},
		Users:  []store.User{{ID: "alice", Name: "Alice", Status: store.UserActive}},
		Grants: []store.Grant{{ID: "g1", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"sub"}}}, Expires: now.Add(48 * time.Hour)}},
		Issuers: []store.Issuer{
			{Issuer: "https://auth.example.com/", JWKS: validJWKS(t, "k1")},
		},
		Revocations: []store.Revocation{
			{Kind: store.RevokeToken, Value: "jti-1", RevokedAt: now, ExpiresAt: now.Add(24 * time.Hour), Reason: "lost"},
		},
	}
	mustApply(t, s, b, &store.Cursor{Epoch: "e1", Seq: 7, SyncedAt: now})
	return b
}

func asValidation(t *testing.T, err error) *store.ValidationError {
	t.Helper()
	if err == nil {
		t.Fatal("Apply accepted an invalid batch")
	}
	var ve *store.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Apply error %T %v is not a *store.ValidationError", err, err)
	}
	return ve
}

func hasProblem(ve *store.ValidationError, want string) bool {
	return slices.ContainsFunc(ve.Problems, func(p string) bool { return strings.Contains(p, want) })
}

// foundID is the id of d, the result of an index lookup, or "" when the
// lookup found nothing; any other error fails the test.
func foundID(t *testing.T, d store.Device, err error) string {
	t.Helper()
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return d.ID
}

// openBadger opens the store's directory as a bare badger database, to see
// or change what the store wrote (the store must be closed).
func openBadger(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatalf("badger.Open: %v", err)
	}
	return db
}

// schemaValue is the stored m/schema value, as written.
func schemaValue(t *testing.T, db *badger.DB) []byte {
	t.Helper()
	var v []byte
	if err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("m/schema"))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// ---- tests ----

func TestRoundTripEveryRecordType(t *testing.T) {
	s := newStore(t)
	if rev, _ := s.Rev(); rev != 0 {
		t.Fatalf("Rev of a new store = %d, want 0", rev)
	}
	if c, _ := s.Cursor(); !reflect.DeepEqual(c, store.Cursor{}) {
		t.Fatalf("Cursor of a new store = %+v, want zero", c)
	}
	now := time.Now().UTC().Truncate(time.Second)
	jw := validJWKS(t, "k1")
	b := &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Description: "a sensor", Permissions: sensorRules,
			Limits: &store.ClassLimits{Device: store.Rates{MessagesPerSecond: 0.5, MessageBurst: 3}, Class: store.Rates{BytesPerSecond: 4096, ByteBurst: 65536}}}},
		Devices: []store.Device{{ID: "d1", Serial: "S-1", MAC: "00:11:22:33:44:55", Class: "sensor", Owner: "alice",
			Status: store.DeviceActive, CertSHA256: fp(0xaa), CertIssuer: "CN=Factory CA,O=Acme", CertSerial: "0a1b"}},
		Users: []store.User{{ID: "alice", Name: "Alice", Status: store.UserActive}, {ID: "bob", Status: store.UserDisabled}},
		Grants: []store.Grant{
			{ID: "g1", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"sub"}}}, Expires: now.Add(time.Hour)},
			{ID: "g2", Owner: "alice", Device: "d1", Grantee: "carol", GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "d1", Group: "status", Scopes: []string{"sub"}}}},
		},
		Issuers: []store.Issuer{{Issuer: "https://auth.example.com/", JWKS: jw}},
		Revocations: []store.Revocation{
			{Kind: store.RevokeToken, Value: "jti-1", RevokedAt: now, ExpiresAt: now.Add(24 * time.Hour), Reason: "lost"},
			{Kind: store.RevokeDevice, Value: "d1", RevokedAt: now.Add(-time.Minute)},
			{Kind: store.RevokeSubject, Value: "alice", RevokedAt: now, Reason: "password reset"},
		},
	}
	cur := store.Cursor{Epoch: "epoch-1", Seq: 42, SyncedAt: now}
	rev := mustApply(t, s, b, &cur)
	if rev != 1 {
		t.Fatalf("first Apply returned rev %d, want 1", rev)
	}

	wantClass := b.Classes[0]
	wantClass.Rev = 1
	if c, err := s.Class("sensor"); err != nil || !reflect.DeepEqual(c, wantClass) {
		t.Errorf("Class(sensor) = %+v, %v; want %+v", c, err, wantClass)
	}
	wantDev := b.Devices[0]
	wantDev.Rev = 1
	if d, err := s.Device("d1"); err != nil || !reflect.DeepEqual(d, wantDev) {
		t.Errorf("Device(d1) = %+v, %v; want %+v", d, err, wantDev)
	}
	for _, u := range b.Users {
		u.Rev = 1
		if got, err := s.User(u.ID); err != nil || !reflect.DeepEqual(got, u) {
			t.Errorf("User(%s) = %+v, %v; want %+v", u.ID, got, err, u)
		}
	}
	for _, g := range b.Grants {
		g.Rev = 1
		if got, err := s.Grant(g.ID); err != nil || !reflect.DeepEqual(got, g) {
			t.Errorf("Grant(%s) = %+v, %v; want %+v", g.ID, got, err, g)
		}
	}
	iss, err := s.Issuers()
	if err != nil || len(iss) != 1 || iss[0].Issuer != "https://auth.example.com/" || string(iss[0].JWKS) != string(jw) || iss[0].Rev != 1 {
		t.Errorf("Issuers() = %+v, %v; want the one issuer with its JWKS and rev 1", iss, err)
	}
	for _, r := range b.Revocations {
		got, ok, err := s.Revocation(r.Kind, r.Value)
		if err != nil || !ok || !reflect.DeepEqual(got, r) {
			t.Errorf("Revocation(%s, %s) = %+v, %v, %v; want %+v", r.Kind, r.Value, got, ok, err, r)
		}
	}
	if _, ok, err := s.Revocation(store.RevokeToken, "jti-other"); ok || err != nil {
		t.Errorf("Revocation of an unknown jti = %v, %v; want not found", ok, err)
	}
	if revs, _ := s.Revocations(); len(revs) != 3 {
		t.Errorf("Revocations() has %d entries, want 3: %+v", len(revs), revs)
	}
	if got, err := s.Cursor(); err != nil || !reflect.DeepEqual(got, cur) {
		t.Errorf("Cursor() = %+v, %v; want %+v", got, err, cur)
	}
	if r, _ := s.Rev(); r != 1 {
		t.Errorf("Rev() = %d, want 1", r)
	}
	wantCounts := map[string]int{"classes": 1, "devices": 1, "users": 2, "grants": 2, "issuers": 1, "revocations": 3}
	if c, err := s.Counts(); err != nil || !reflect.DeepEqual(c, wantCounts) {
		t.Errorf("Counts() = %v, %v; want %v", c, err, wantCounts)
	}

	// Missing records are ErrNotFound.
	if _, err := s.Device("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(nope) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Class("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Class(nope) error = %v, want ErrNotFound", err)
	}
	if _, err := s.User("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("User(nope) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Grant("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Grant(nope) error = %v, want ErrNotFound", err)
	}

	// Deleting every kind removes it.
	mustApply(t, s, &store.Batch{Delete: store.Deletions{
		Devices: []string{"d1"}, Classes: []string{"sensor"}, Users: []string{"bob"}, Grants: []string{"g2"},
		Issuers: []string{"https://auth.example.com/"}, Revocations: []string{"jti/jti-1", "subject/alice"},
	}}, nil)
	wantCounts = map[string]int{"users": 1, "grants": 1, "revocations": 1}
	if c, err := s.Counts(); err != nil || !reflect.DeepEqual(c, wantCounts) {
		t.Errorf("after deletions Counts() = %v, %v; want %v", c, err, wantCounts)
	}
	if _, ok, _ := s.Revocation(store.RevokeToken, "jti-1"); ok {
		t.Error("revocation jti/jti-1 still held after it was lifted")
	}
	if _, ok, _ := s.Revocation(store.RevokeDevice, "d1"); !ok {
		t.Error("revocation device/d1 vanished though it was not lifted")
	}
	// A batch without a cursor leaves the cursor alone.
	if got, _ := s.Cursor(); !reflect.DeepEqual(got, cur) {
		t.Errorf("Cursor() after a batch without cursor = %+v, want %+v", got, cur)
	}
}

func TestRevIncrementsPerBatchAndIsStamped(t *testing.T) {
	s := newStore(t)
	r1 := mustApply(t, s, &store.Batch{Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}}}, nil)
	r2 := mustApply(t, s, &store.Batch{
		Devices: []store.Device{{ID: "d1", Class: "sensor", Status: store.DeviceActive}, {ID: "d2", Class: "sensor", Status: store.DeviceActive}},
	}, nil)
	r3 := mustApply(t, s, &store.Batch{Devices: []store.Device{{ID: "d2", Class: "sensor", Status: store.DeviceSuspended}}}, nil)
	if r1 != 1 || r2 != 2 || r3 != 3 {
		t.Fatalf("revs = %d, %d, %d; want 1, 2, 3", r1, r2, r3)
	}
	if rev, _ := s.Rev(); rev != 3 {
		t.Fatalf("Rev() = %d, want 3", rev)
	}
	if c, _ := s.Class("sensor"); c.Rev != 1 {
		t.Errorf("class rev = %d, want 1 (unchanged since batch 1)", c.Rev)
	}
	if d, _ := s.Device("d1"); d.Rev != 2 {
		t.Errorf("d1 rev = %d, want 2", d.Rev)
	}
	if d, _ := s.Device("d2"); d.Rev != 3 || d.Status != store.DeviceSuspended {
		t.Errorf("d2 = %+v, want rev 3 and suspended", d)
	}
	// A rejected batch does not use up a rev.
	if _, err := s.Apply(&store.Batch{Devices: []store.Device{{ID: "d3", Class: "nope", Status: store.DeviceActive}}}, nil); err == nil {
		t.Fatal("batch with unknown class accepted")
	}
	if r4 := mustApply(t, s, &store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}}}, nil); r4 != 4 {
		t.Errorf("rev after a rejected batch = %d, want 4", r4)
	}
	// The rev a record carries in the batch is ignored.
	mustApply(t, s, &store.Batch{Devices: []store.Device{{ID: "d1", Class: "sensor", Status: store.DeviceActive, Rev: 99}}}, nil)
	if d, _ := s.Device("d1"); d.Rev != 5 {
		t.Errorf("d1 rev = %d after batch 5 that claimed rev 99, want 5", d.Rev)
	}
}

func TestInvalidBatchChangesNothing(t *testing.T) {
	pub256 := &ecKey(t, elliptic.P256()).PublicKey
	priv256 := ecKey(t, elliptic.P256())
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	noKid := jwkMap(t, pub256, "", "ES256")
	noAlg := jwkMap(t, pub256, "k1", "")
	now := time.Now().UTC()

	hmac := map[string]any{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "h1", "alg": "HS256"}
	octES := map[string]any{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "h1", "alg": "ES256"}

	issuer := func(j store.JWKS) []store.Issuer { return []store.Issuer{{Issuer: "https://evil.example/", JWKS: j}} }
	dev := func(d store.Device) []store.Device {
		// A valid change first, so that a partial write would show.
		return []store.Device{{ID: "d1", Class: "sensor", Owner: "bob", Status: store.DeviceSuspended, CertSHA256: fp(0xbb)}, d}
	}
	tests := []struct {
		name  string
		batch store.Batch
		want  string // a substring of one problem: the record and field
	}{
		{"unknown class", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "nope", Status: store.DeviceActive})}, `devices[1] (d9).class "nope" is not known`},
		{"empty class", store.Batch{Devices: dev(store.Device{ID: "d9", Status: store.DeviceActive})}, `devices[1] (d9).class is empty`},
		{"class deleted by the batch", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "other", Status: store.DeviceActive}), Delete: store.Deletions{Classes: []string{"other"}}}, `devices[1] (d9).class "other" is deleted`},
		{"bad status", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: "paused"})}, `devices[1] (d9).status "paused"`},
		{"empty status", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor"})}, `devices[1] (d9).status is empty`},
		{"cert_sha256 uppercase", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertSHA256: strings.ToUpper(fp(0xcc))})}, `devices[1] (d9).cert_sha256`},
		{"cert_sha256 short", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertSHA256: "abcd"})}, `devices[1] (d9).cert_sha256`},
		{"cert_sha256 not hex", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertSHA256: strings.Repeat("zz", 32)})}, `devices[1] (d9).cert_sha256`},
		{"cert_issuer without serial", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertIssuer: "CN=x"})}, `devices[1] (d9): cert_issuer and cert_serial go together`},
		{"cert_serial uppercase", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertIssuer: "CN=x", CertSerial: "0A"})}, `devices[1] (d9).cert_serial`},
		{"owner with slash", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, Owner: "a/b"})}, `devices[1] (d9).owner "a/b"`},
		{"duplicate device id", store.Batch{Devices: append(dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive})}, `devices[2] (d9): id appears twice`},
		{"device id with slash", store.Batch{Devices: dev(store.Device{ID: "a/b", Class: "sensor", Status: store.DeviceActive})}, `devices[1].id "a/b"`},
		{"device id with plus", store.Batch{Devices: dev(store.Device{ID: "a+", Class: "sensor", Status: store.DeviceActive})}, `devices[1].id "a+"`},
		{"device id with hash", store.Batch{Devices: dev(store.Device{ID: "#", Class: "sensor", Status: store.DeviceActive})}, `devices[1].id "#"`},
		{"device id empty", store.Batch{Devices: dev(store.Device{ID: "", Class: "sensor", Status: store.DeviceActive})}, `devices[1].id "" is empty`},
		{"device id with space", store.Batch{Devices: dev(store.Device{ID: "a b", Class: "sensor", Status: store.DeviceActive})}, `devices[1].id "a b"`},
		{"class name with slash", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "x/y"}}}, `classes[0].name "x/y"`},
		{"duplicate class", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "c"}, {Name: "c"}}}, `classes[1].name "c" appears twice`},
		{"class bad template", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "c", Permissions: []policy.Rule{{Filter: "a/{nope}", Actions: policy.Publish}}}}}, `classes[0].permissions`},
		{"class limit burst missing", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules, Limits: &store.ClassLimits{Class: store.Rates{MessagesPerSecond: 5}}}}}, `classes[0].limits.class.message_burst must be at least 1 when messages_per_second is set`},
		{"class limit byte burst missing", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "c"}, {Name: "sensor", Permissions: sensorRules, Limits: &store.ClassLimits{Device: store.Rates{BytesPerSecond: 100}}}}}, `classes[1].limits.device.byte_burst must be at least 1 when bytes_per_second is set`},
		{"class limit negative rate", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "c", Limits: &store.ClassLimits{Device: store.Rates{MessagesPerSecond: -1, MessageBurst: 1}}}}}, `classes[0].limits.device.messages_per_second -1 must be a finite number, 0 or more`},
		{"class limit negative burst", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "c", Limits: &store.ClassLimits{Class: store.Rates{ByteBurst: -5}}}}}, `classes[0].limits.class.byte_burst -5 must not be negative`},
		{"user bad status", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Users: []store.User{{ID: "u", Status: "gone"}}}, `users[0].status "gone"`},
		{"duplicate user", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Users: []store.User{{ID: "u", Status: store.UserActive}, {ID: "u", Status: store.UserActive}}}, `users[1].id "u" appears twice`},
		{"user id with hash", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Users: []store.User{{ID: "u#", Status: store.UserActive}}}, `users[0].id "u#"`},
		{"grant bad scope", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Grants: []store.Grant{{ID: "g", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"read"}}}}}}, `grants[0].resources[0].scopes: "read" is not one of sub, pub`},
		{"grant no resources", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Grants: []store.Grant{{ID: "g", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser}}}, `grants[0].resources is empty`},
		{"grant bad kind", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Grants: []store.Grant{{ID: "g", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: "group", Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"sub"}}}}}}, `grants[0].grantee_kind "group"`},
		{"grant bad window", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Grants: []store.Grant{{ID: "g", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser, Window: &store.Window{From: "7pm", To: "21:00"}, Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"sub"}}}}}}, `grants[0].window.from: "7pm" is not a time of day`},
		{"class bad group", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules, Resources: []store.ResourceGroup{{Name: "t", Filter: "a/#/b"}}}}}, `classes[0].resources[0].filter`},
		{"grant grantee with plus", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Grants: []store.Grant{{ID: "g", Owner: "alice", Device: "d1", Grantee: "+"}}}, `grants[0].grantee "+"`},
		{"issuer empty", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: []store.Issuer{{JWKS: validJWKS(t, "k")}}}, `issuers[0].issuer is empty`},
		{"duplicate issuer", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: []store.Issuer{{Issuer: "i", JWKS: validJWKS(t, "k")}, {Issuer: "i", JWKS: validJWKS(t, "k")}}}, `issuers[1].issuer "i" appears twice`},
		{"jwks not json", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(store.JWKS(`{"keys":[`))}, `issuers[0] (https://evil.example/).jwks: not a JSON Web Key Set`},
		{"jwks empty", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(nil)}, `issuers[0] (https://evil.example/).jwks: is empty`},
		{"jwks without keys", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t))}, `.jwks: has no keys`},
		{"jwks hmac key", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, hmac))}, `.jwks: key "h1" alg "HS256" is not an accepted signature algorithm`},
		{"jwks oct key with ES256", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, octES))}, `.jwks: key "h1": alg ES256 needs a EC key`},
		{"jwks key without kid", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, noKid))}, `.jwks: keys[0] has no kid`},
		{"jwks key without alg", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, noAlg))}, `.jwks: key "k1" has no alg`},
		{"jwks EC key with RS256", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, jwkMap(t, pub256, "k1", "RS256")))}, `.jwks: key "k1": alg RS256 needs a RSA key`},
		{"jwks P-256 key with ES384", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, jwkMap(t, pub256, "k1", "ES384")))}, `.jwks: key "k1": alg ES384 needs a EC key on P-384`},
		{"jwks Ed25519 key with ES256", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, jwkMap(t, edPub, "k1", "ES256")))}, `.jwks: key "k1": alg ES256 needs a EC key on P-256`},
		{"jwks private key", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, jwkMap(t, priv256, "k1", "ES256")))}, `.jwks: key "k1" is a private key`},
		{"jwks duplicate kid", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Issuers: issuer(jwks(t, jwkMap(t, pub256, "k1", "ES256"), jwkMap(t, edPub, "k1", "EdDSA")))}, `.jwks: keys[1] kid "k1" is used twice`},
		{"revocation bad kind", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Revocations: []store.Revocation{{Kind: "token", Value: "x", RevokedAt: now}}}, `revocations[0].kind "token"`},
		{"revocation empty value", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Revocations: []store.Revocation{{Kind: store.RevokeToken, RevokedAt: now}}}, `revocations[0].value`},
		{"device revocation without revoked_at", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "d1"}}}, `revocations[0].revoked_at is required for device`},
		{"subject revocation without revoked_at", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: "alice"}}}, `revocations[0].revoked_at is required for subject`},
		{"revocation expires before revoked", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "x", RevokedAt: now, ExpiresAt: now.Add(-time.Hour)}}}, `revocations[0].expires_at is before revoked_at`},
		{"bad revocation deletion", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Delete: store.Deletions{Revocations: []string{"jti-1"}}}, `delete.revocations[0] "jti-1"`},
		{"duplicate cert_sha256 of a stored device", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertSHA256: fp(0xee)})}, `cert_sha256 is already the certificate of device "d2"`},
		{"duplicate cert issuer/serial", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive, CertIssuer: "CN=Factory CA", CertSerial: "0a1b"})}, `cert_issuer/cert_serial already identify device "d2"`},
		{"deleting a class in use", store.Batch{Devices: dev(store.Device{ID: "d9", Class: "sensor", Status: store.DeviceActive}), Delete: store.Deletions{Classes: []string{"used"}}}, `delete.classes "used" is still used by 1 devices`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			now := time.Now().UTC().Truncate(time.Second)
			mustApply(t, s, &store.Batch{
				Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}, {Name: "other"}, {Name: "used"}},
				Devices: []store.Device{
					{ID: "d1", Class: "sensor", Owner: "alice", Status: store.DeviceActive, CertSHA256: fp(0xaa)},
					{ID: "d2", Class: "used", Status: store.DeviceActive, CertSHA256: fp(0xee), CertIssuer: "CN=Factory CA", CertSerial: "0a1b"},
				},
				Issuers:     []store.Issuer{{Issuer: "https://auth.example.com/", JWKS: validJWKS(t, "k1")}},
				Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "jti-1", RevokedAt: now}},
			}, &store.Cursor{Epoch: "e", Seq: 1, SyncedAt: now})
			before := snap(t, s)
			var watched int
			s.Watch(func(store.Applied) { watched++ })

			b := tt.batch
			b.Classes = append(b.Classes, store.DeviceClass{Name: "fresh"})
			b.Users = append(b.Users, store.User{ID: "zed", Status: store.UserActive})
			_, err := s.Apply(&b, &store.Cursor{Epoch: "e", Seq: 2, SyncedAt: now.Add(time.Minute)})
			ve := asValidation(t, err)
			if !hasProblem(ve, tt.want) {
				t.Errorf("problems %q do not mention %q", ve.Problems, tt.want)
			}
			if !strings.Contains(ve.Error(), "nothing was applied") {
				t.Errorf("error text %q does not say nothing was applied", ve.Error())
			}
			if after := snap(t, s); !reflect.DeepEqual(before, after) {
				t.Errorf("store changed by a rejected batch:\nbefore %+v\nafter  %+v", before, after)
			}
			if d, err := s.DeviceByCertFingerprint(fp(0xaa)); err != nil || d.ID != "d1" {
				t.Errorf("fingerprint index of d1 changed by a rejected batch: %+v, %v", d, err)
			}
			if _, err := s.DeviceByCertFingerprint(fp(0xbb)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("fingerprint of the rejected batch is indexed: %v", err)
			}
			if watched != 0 {
				t.Errorf("watchers called %d times for a rejected batch", watched)
			}
		})
	}
}

func TestValidationErrorListsEveryProblem(t *testing.T) {
	s := newStore(t)
	_, err := s.Apply(&store.Batch{
		Devices: []store.Device{{ID: "a/b", Class: "x", Status: "active"}, {ID: "ok", Class: "nope", Status: "weird"}},
		Users:   []store.User{{ID: "u", Status: "x"}},
	}, nil)
	ve := asValidation(t, err)
	for _, want := range []string{`devices[0].id "a/b"`, `devices[1] (ok).class "nope"`, `devices[1] (ok).status "weird"`, `users[0].status "x"`} {
		if !hasProblem(ve, want) {
			t.Errorf("problems %q do not mention %q", ve.Problems, want)
		}
	}
	if len(ve.Problems) != 4 {
		t.Errorf("got %d problems, want 4: %q", len(ve.Problems), ve.Problems)
	}
}

func TestValidJWKSAccepted(t *testing.T) {
	s := newStore(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	set := jwks(t,
		jwkMap(t, &ecKey(t, elliptic.P256()).PublicKey, "es256", "ES256"),
		jwkMap(t, &ecKey(t, elliptic.P384()).PublicKey, "es384", "ES384"),
		jwkMap(t, edPub, "ed", "EdDSA"),
	)
	mustApply(t, s, &store.Batch{Issuers: []store.Issuer{{Issuer: "https://a/", JWKS: set}}}, nil)
	parsed, err := store.ParseJWKS(set)
	if err != nil || parsed.Len() != 3 {
		t.Fatalf("ParseJWKS = %v, %v; want 3 keys", parsed, err)
	}
}

func TestIndexesFollowUpdates(t *testing.T) {
	s := newStore(t)
	mustApply(t, s, &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}},
		Devices: []store.Device{
			{ID: "d1", Class: "sensor", Owner: "alice", Status: store.DeviceActive, CertSHA256: fp(0x01), CertIssuer: "CN=CA 1", CertSerial: "01"},
			{ID: "d2", Class: "sensor", Owner: "alice", Status: store.DeviceActive, CertSHA256: fp(0x02)},
			{ID: "d3", Class: "sensor", Owner: "alicia", Status: store.DeviceActive},
		},
	}, nil)
	owned := func(owner string) []string {
		t.Helper()
		ids, err := s.DevicesOfOwner(owner)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	byFP := func(f string) string {
		t.Helper()
		d, err := s.DeviceByCertFingerprint(f)
		return foundID(t, d, err)
	}
	byIssuer := func(is, serial string) string {
		t.Helper()
		d, err := s.DeviceByCertIssuer(is, serial)
		return foundID(t, d, err)
	}
	if got := owned("alice"); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Fatalf("DevicesOfOwner(alice) = %v, want [d1 d2] (not alicia's d3)", got)
	}
	if got := byFP(fp(0x01)); got != "d1" {
		t.Fatalf("DeviceByCertFingerprint(01..) = %q, want d1", got)
	}
	if got := byIssuer("CN=CA 1", "01"); got != "d1" {
		t.Fatalf("DeviceByCertIssuer(CN=CA 1, 01) = %q, want d1", got)
	}
	if got := byIssuer("CN=CA 2", "01"); got != "" {
		t.Fatalf("DeviceByCertIssuer(CN=CA 2, 01) = %q, want not found", got)
	}

	// d1 moves to bob, changes its certificate and drops the CA registration.
	mustApply(t, s, &store.Batch{Devices: []store.Device{{ID: "d1", Class: "sensor", Owner: "bob", Status: store.DeviceActive, CertSHA256: fp(0x11)}}}, nil)
	if got := owned("alice"); !slices.Equal(got, []string{"d2"}) {
		t.Errorf("after move DevicesOfOwner(alice) = %v, want [d2]", got)
	}
	if got := owned("bob"); !slices.Equal(got, []string{"d1"}) {
		t.Errorf("after move DevicesOfOwner(bob) = %v, want [d1]", got)
	}
	if got := byFP(fp(0x01)); got != "" {
		t.Errorf("old fingerprint still finds %q", got)
	}
	if got := byFP(fp(0x11)); got != "d1" {
		t.Errorf("new fingerprint finds %q, want d1", got)
	}
	if got := byIssuer("CN=CA 1", "01"); got != "" {
		t.Errorf("dropped issuer/serial still finds %q", got)
	}

	// The freed fingerprint may go to another device now.
	mustApply(t, s, &store.Batch{Devices: []store.Device{{ID: "d3", Class: "sensor", Owner: "alicia", Status: store.DeviceActive, CertSHA256: fp(0x01)}}}, nil)
	if got := byFP(fp(0x01)); got != "d3" {
		t.Errorf("reused fingerprint finds %q, want d3", got)
	}

	// A second device with a fingerprint in use is refused, and d2 keeps its.
	_, err := s.Apply(&store.Batch{Devices: []store.Device{{ID: "d4", Class: "sensor", Status: store.DeviceActive, CertSHA256: fp(0x02)}}}, nil)
	ve := asValidation(t, err)
	if !hasProblem(ve, `devices "d4": cert_sha256 is already the certificate of device "d2"`) {
		t.Errorf("problems %q do not name d4 and d2", ve.Problems)
	}
	if _, err := s.Device("d4"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("d4 stored despite the rejection: %v", err)
	}
	if got := byFP(fp(0x02)); got != "d2" {
		t.Errorf("fingerprint of d2 now finds %q", got)
	}
	// Two new devices sharing one fingerprint in the same batch are refused too.
	_, err = s.Apply(&store.Batch{Devices: []store.Device{
		{ID: "d5", Class: "sensor", Status: store.DeviceActive, CertSHA256: fp(0x55)},
		{ID: "d6", Class: "sensor", Status: store.DeviceActive, CertSHA256: fp(0x55)},
	}}, nil)
	asValidation(t, err)
	if got := byFP(fp(0x55)); got != "" {
		t.Errorf("fingerprint of a rejected batch finds %q", got)
	}

	// Deleting a device drops its indexes.
	mustApply(t, s, &store.Batch{Delete: store.Deletions{Devices: []string{"d2", "never-existed"}}}, nil)
	if got := byFP(fp(0x02)); got != "" {
		t.Errorf("fingerprint of deleted d2 finds %q", got)
	}
	if got := owned("alice"); len(got) != 0 {
		t.Errorf("DevicesOfOwner(alice) after deleting d2 = %v, want none", got)
	}
	// The fingerprint is free again.
	mustApply(t, s, &store.Batch{Devices: []store.Device{{ID: "d4", Class: "sensor", Status: store.DeviceActive, CertSHA256: fp(0x02)}}}, nil)
	if got := byFP(fp(0x02)); got != "d4" {
		t.Errorf("fingerprint reused after delete finds %q, want d4", got)
	}
}

func TestDeleteClassInUse(t *testing.T) {
	s := newStore(t)
	mustApply(t, s, &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}, {Name: "spare"}},
		Devices: []store.Device{{ID: "d1", Class: "sensor", Status: store.DeviceActive}, {ID: "d2", Class: "sensor", Status: store.DeviceActive}},
	}, nil)
	before := snap(t, s)
	_, err := s.Apply(&store.Batch{Delete: store.Deletions{Classes: []string{"sensor"}}}, nil)
	ve := asValidation(t, err)
	if !hasProblem(ve, `delete.classes "sensor" is still used by 2 devices`) {
		t.Errorf("problems %q do not name the class and its 2 devices", ve.Problems)
	}
	if after := snap(t, s); !reflect.DeepEqual(before, after) {
		t.Errorf("store changed by a rejected class deletion")
	}
	// Moving one device and deleting the other in the same batch frees the class.
	mustApply(t, s, &store.Batch{
		Devices: []store.Device{{ID: "d1", Class: "spare", Status: store.DeviceActive}},
		Delete:  store.Deletions{Classes: []string{"sensor"}, Devices: []string{"d2"}},
	}, nil)
	if _, err := s.Class("sensor"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("class sensor still there: %v", err)
	}
	if d, err := s.Device("d1"); err != nil || d.Class != "spare" {
		t.Errorf("d1 = %+v, %v; want class spare", d, err)
	}
}

func TestRevocationTTL(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	now := time.Now()
	mustApply(t, s, &store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeToken, Value: "short", RevokedAt: now, ExpiresAt: now.Add(2 * time.Second)},
		{Kind: store.RevokeToken, Value: "long", RevokedAt: now, ExpiresAt: now.Add(time.Hour)},
		{Kind: store.RevokeDevice, Value: "d1", RevokedAt: now},
	}}, nil)
	if _, ok, err := s.Revocation(store.RevokeToken, "short"); !ok || err != nil {
		t.Fatalf("short-lived revocation not returned right after Apply: %v, %v", ok, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, ok, err := s.Revocation(store.RevokeToken, "short")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revocation with expires_at 2s ahead still held after 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	revs, err := s.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range revs {
		keys = append(keys, r.Key())
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"device/d1", "jti/long"}) {
		t.Errorf("Revocations() after expiry = %v, want [device/d1 jti/long]", keys)
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	b := seed(t, s)
	before := snap(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openStore(t, dir)
	defer s.Close()
	after := snap(t, s)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("store differs after reopen:\nbefore %+v\nafter  %+v", before, after)
	}
	if len(after.Devices) != len(b.Devices) || after.Rev != 1 || after.Cursor.Seq != 7 {
		t.Errorf("reopened store has %d devices, rev %d, cursor %+v; want %d, 1, seq 7", len(after.Devices), after.Rev, after.Cursor, len(b.Devices))
	}
	if d, err := s.DeviceByCertFingerprint(fp(0xaa)); err != nil || d.ID != "d1" {
		t.Errorf("fingerprint index after reopen: %+v, %v", d, err)
	}
	if d, err := s.DeviceByCertIssuer("CN=Factory CA", "0a1b"); err != nil || d.ID != "d2" {
		t.Errorf("issuer index after reopen: %+v, %v", d, err)
	}
	if rev := mustApply(t, s, &store.Batch{Users: []store.User{{ID: "bob", Status: store.UserActive}}}, nil); rev != 2 {
		t.Errorf("first rev after reopen = %d, want 2", rev)
	}
}

func TestSchemaVersionMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	seed(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db := openBadger(t, dir)
	// The store itself wrote its schema as 8 big-endian bytes.
	if v := schemaValue(t, db); len(v) != 8 || binary.BigEndian.Uint64(v) != store.SchemaVersion {
		t.Fatalf("m/schema = %x, want %d as 8 big-endian bytes", v, store.SchemaVersion)
	}
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, store.SchemaVersion+1)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("m/schema"), v) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := store.Open(store.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		s2.Close()
		t.Fatal("Open accepted a store with another schema version")
	}
	if want := fmt.Sprintf("schema version is %d, this edgeid reads %d", store.SchemaVersion+1, store.SchemaVersion); !strings.Contains(err.Error(), want) {
		t.Errorf("Open error %q does not say %q", err, want)
	}
	// Open closed the database on refusal: it can be opened again (and refused again).
	if s3, err := store.Open(store.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)}); err == nil {
		s3.Close()
		t.Fatal("second Open accepted the mismatched store")
	} else if !strings.Contains(err.Error(), "schema version") {
		t.Errorf("second Open error = %v, want the schema refusal (was the directory left locked?)", err)
	}
}

func TestWatchSeesEachBatchInOrder(t *testing.T) {
	s := newStore(t)
	var got []store.Applied
	s.Watch(func(a store.Applied) {
		// Watchers run after commit: the batch is visible.
		if rev, _ := s.Rev(); rev != a.Rev {
			t.Errorf("watcher for rev %d sees store rev %d", a.Rev, rev)
		}
		got = append(got, a)
	})
	var second []uint64
	s.Watch(func(a store.Applied) { second = append(second, a.Rev) })

	b1 := &store.Batch{
		Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}},
		Devices: []store.Device{{ID: "d1", Class: "sensor", Owner: "alice", Status: store.DeviceActive}, {ID: "d2", Class: "sensor", Status: store.DeviceActive}},
	}
	b2 := &store.Batch{Devices: []store.Device{{ID: "d1", Class: "sensor", Owner: "bob", Status: store.DeviceSuspended}}}
	b3 := &store.Batch{Delete: store.Deletions{Devices: []string{"d2"}}}
	bad := &store.Batch{Devices: []store.Device{{ID: "d3", Class: "nope", Status: store.DeviceActive}}}
	mustApply(t, s, b1, nil)
	mustApply(t, s, b2, nil)
	if _, err := s.Apply(bad, nil); err == nil {
		t.Fatal("bad batch accepted")
	}
	mustApply(t, s, b3, nil)

	if len(got) != 3 {
		t.Fatalf("watcher called %d times, want 3", len(got))
	}
	if !slices.Equal(second, []uint64{1, 2, 3}) {
		t.Errorf("second watcher saw revs %v, want [1 2 3]", second)
	}
	for i, b := range []*store.Batch{b1, b2, b3} {
		if got[i].Rev != uint64(i+1) || got[i].Batch != b {
			t.Errorf("Applied[%d] = rev %d batch %p; want rev %d batch %p", i, got[i].Rev, got[i].Batch, i+1, b)
		}
	}
	if len(got[0].Previous) != 0 {
		t.Errorf("Applied[0].Previous = %+v, want empty (all devices new)", got[0].Previous)
	}
	wantPrev := store.Device{ID: "d1", Class: "sensor", Owner: "alice", Status: store.DeviceActive, Rev: 1}
	if len(got[1].Previous) != 1 || !reflect.DeepEqual(got[1].Previous["d1"], wantPrev) {
		t.Errorf("Applied[1].Previous = %+v, want d1 as it was: %+v", got[1].Previous, wantPrev)
	}
	wantPrev = store.Device{ID: "d2", Class: "sensor", Status: store.DeviceActive, Rev: 1}
	if len(got[2].Previous) != 1 || !reflect.DeepEqual(got[2].Previous["d2"], wantPrev) {
		t.Errorf("Applied[2].Previous = %+v, want deleted d2: %+v", got[2].Previous, wantPrev)
	}
}

// A revocation must be held at least until its ExpiresAt: it is "when the
// entry may be forgotten", and tokens it covers may be valid until then.
func TestRevocationHeldUntilExpiresAt(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	// ExpiresAt 0.9 s past a whole second, between 1.9 s and 2.9 s from now,
	// so that a TTL rounded down to whole seconds would show.
	exp := time.Now().Truncate(time.Second).Add(2*time.Second + 900*time.Millisecond)
	mustApply(t, s, &store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeToken, Value: "j", RevokedAt: time.Now(), ExpiresAt: exp},
	}}, nil)
	for time.Now().Before(exp.Add(-100 * time.Millisecond)) {
		if _, ok, err := s.Revocation(store.RevokeToken, "j"); err != nil {
			t.Fatal(err)
		} else if !ok {
			t.Fatalf("revocation forgotten %s before its expires_at", time.Until(exp).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Like classes, devices, users and issuers, a grant id may appear only once
// in a batch; otherwise one of the two grants is silently lost.
func TestDuplicateGrantIDRejected(t *testing.T) {
	s := newStore(t)
	before := snap(t, s)
	_, err := s.Apply(&store.Batch{Grants: []store.Grant{
		{ID: "g1", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"sub"}}}},
		{ID: "g1", Owner: "alice", Device: "d1", Grantee: "carol", GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "d1", Group: "status", Scopes: []string{"sub"}}}},
	}}, nil)
	ve := asValidation(t, err)
	if !hasProblem(ve, `grants[1].id "g1" appears twice`) {
		t.Errorf("problems %q do not name grants[1].id", ve.Problems)
	}
	if after := snap(t, s); !reflect.DeepEqual(before, after) {
		t.Errorf("store changed by a rejected batch")
	}
}

func TestDeviceWrittenAndDeletedInOneBatchRejected(t *testing.T) {
	s, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := &store.Batch{Classes: []store.DeviceClass{{Name: "c"}}, Devices: []store.Device{{ID: "d1", Class: "c", Status: store.DeviceActive}}, Delete: store.Deletions{Devices: []string{"d1"}}}
	_, err = s.Apply(b, nil)
	var ve *store.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), `delete.devices[0] "d1" is also written`) {
		t.Fatalf("err = %v", err)
	}
}

// Class limits travel as JSON (import files, the authority's admin API, sync
// batches): the field names are the documented ones and unset parts stay out.
func TestClassLimitsJSON(t *testing.T) {
	in := `{"name":"meter","permissions":[],"limits":{"device":{"messages_per_second":0.2,"message_burst":2},"class":{"bytes_per_second":1000,"byte_burst":5000}}}`
	var c store.DeviceClass
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := store.ClassLimits{Device: store.Rates{MessagesPerSecond: 0.2, MessageBurst: 2}, Class: store.Rates{BytesPerSecond: 1000, ByteBurst: 5000}}
	if c.Limits == nil || *c.Limits != want {
		t.Fatalf("decoded limits %+v, want %+v", c.Limits, want)
	}
	for _, tt := range []struct {
		limits *store.ClassLimits
		want   string
	}{
		{nil, `{"name":"meter","permissions":[]}`},
		{&store.ClassLimits{Device: store.Rates{MessagesPerSecond: 1, MessageBurst: 1}}, `{"name":"meter","permissions":[],"limits":{"device":{"messages_per_second":1,"message_burst":1}}}`},
	} {
		out, _ := json.Marshal(store.DeviceClass{Name: "meter", Permissions: []policy.Rule{}, Limits: tt.limits})
		if string(out) != tt.want {
			t.Errorf("marshalled %s, want %s", out, tt.want)
		}
	}
}
