package storagetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// Every kind of record reads back as committed, stamped with the rev that
// wrote it; lists come in id order; a record absent is store.ErrNotFound,
// wrapped naming it.
func testReads(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	now := time.Now().UTC().Truncate(time.Second)
	b := &store.Batch{
		Classes: []store.DeviceClass{{Name: class, Description: "a thermostat"}, {Name: "app"}},
		Devices: []store.Device{
			{ID: "d2", Class: class, Status: store.DeviceSuspended, CertIssuer: "CN=Factory CA", CertSerial: "0a1b"},
			{ID: "d1", Name: "kitchen", Serial: "S-1", Class: class, Owner: "alice", Status: store.DeviceActive, CertSHA256: fp(0xaa),
				PSKIdentity: "d1-psk", PSK: []byte("0123456789abcdef")},
			{ID: "d3", Class: "app", Owner: "alice", Status: store.DeviceActive},
		},
		Users: []store.User{{ID: "bob", Status: store.UserActive, Manager: "alice"}, {ID: "alice", Name: "Alice", Status: store.UserActive}},
		Grants: []store.Grant{{ID: "g1", Owner: "alice", Device: "d1", Grantee: "bob", GranteeKind: store.GranteeUser,
			Resources: []store.SharedResource{{Device: "d1", Group: "telemetry", Scopes: []string{"sub"}}}, Expires: now.Add(48 * time.Hour), Created: now}},
		Issuers:     []store.Issuer{{Issuer: "https://auth.example.com/", JWKS: validJWKS(t)}},
		Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "jti-1", RevokedAt: now, ExpiresAt: now.Add(24 * time.Hour), Reason: "lost"}},
	}
	rev := mustApply(t, s, b, "setup")
	if got := mustRev(t, s); got != rev {
		t.Fatalf("Rev = %d after the commit of rev %d", got, rev)
	}
	stamped := func(d store.Device) store.Device { d.Rev = rev; return d }

	d1, err := s.Device("d1")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "Device(d1)", d1, stamped(b.Devices[1]))
	c, err := s.Class(class)
	if err != nil || c.Rev != rev || c.Description != "a thermostat" {
		t.Fatalf("Class = %+v, %v", c, err)
	}
	u, err := s.User("bob")
	if err != nil || u.Rev != rev || u.Manager != "alice" {
		t.Fatalf("User = %+v, %v", u, err)
	}
	g, err := s.Grant("g1")
	if err != nil {
		t.Fatal(err)
	}
	wantGrant := b.Grants[0]
	wantGrant.Rev = rev
	sameJSON(t, "Grant(g1)", g, wantGrant)
	r, ok, err := s.Revocation(store.RevokeToken, "jti-1")
	if err != nil || !ok {
		t.Fatalf("Revocation = %v, %v", ok, err)
	}
	sameJSON(t, "Revocation(jti-1)", r, b.Revocations[0])

	devs, err := s.Devices()
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "Devices()", devs, []store.Device{stamped(b.Devices[1]), stamped(b.Devices[0]), stamped(b.Devices[2])})
	classes, err := s.Classes()
	if err != nil || len(classes) != 2 || classes[0].Name != "app" || classes[1].Name != class {
		t.Fatalf("Classes() = %+v, %v", classes, err)
	}
	users, err := s.Users()
	if err != nil || len(users) != 2 || users[0].ID != "alice" || users[1].ID != "bob" {
		t.Fatalf("Users() = %+v, %v", users, err)
	}
	grants, err := s.Grants()
	if err != nil || len(grants) != 1 || grants[0].ID != "g1" {
		t.Fatalf("Grants() = %+v, %v", grants, err)
	}
	iss, err := s.Issuers()
	if err != nil || len(iss) != 1 || iss[0].Rev != rev {
		t.Fatalf("Issuers() = %+v, %v", iss, err)
	}
	sameJSON(t, "Issuers()[0].JWKS", iss[0].JWKS, b.Issuers[0].JWKS)

	// Absent records.
	_, err = s.Device("nope")
	wantNotFound(t, err, `load device "nope": not found`)
	_, err = s.Class("nope")
	wantNotFound(t, err, `load class "nope": not found`)
	_, err = s.User("nope")
	wantNotFound(t, err, `load user "nope": not found`)
	_, err = s.Grant("nope")
	wantNotFound(t, err, `load grant "nope": not found`)
	if _, ok, err := s.Revocation(store.RevokeToken, "nope"); ok || err != nil {
		t.Fatalf("absent revocation: %v, %v", ok, err)
	}
	if _, ok, err := s.Revocation(store.RevokeDevice, "jti-1"); ok || err != nil {
		t.Fatalf("revocation of another kind: %v, %v", ok, err)
	}

	// The certificate index.
	byFP, err := s.DeviceByCertFingerprint(fp(0xaa))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "DeviceByCertFingerprint", byFP, d1)
	_, err = s.DeviceByCertFingerprint(fp(0xbb))
	wantNotFound(t, err, "device for certificate "+fp(0xbb)+": not found")

	// The owner index follows owner changes and deletions.
	owned := func(owner string, want ...string) {
		t.Helper()
		ids, err := s.DevicesOfOwner(owner)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("DevicesOfOwner(%s) = %q, want %q", owner, ids, want)
		}
	}
	owned("alice", "d1", "d3")
	owned("bob")
	d1.Owner = "bob"
	d2 := b.Devices[0]
	d2.Owner = "bob"
	mustApply(t, s, &store.Batch{Devices: []store.Device{d1, d2}}, "pairing")
	owned("alice", "d3")
	owned("bob", "d1", "d2")
	d1.Owner = ""
	mustApply(t, s, &store.Batch{Devices: []store.Device{d1}, Delete: store.Deletions{Devices: []string{"d3"}}}, "unpair")
	owned("alice")
	owned("bob", "d2")
	_, err = s.Device("d3")
	wantNotFound(t, err, `load device "d3": not found`)
	// The certificate stays the device's across its rewrites.
	if got, err := s.DeviceByCertFingerprint(fp(0xaa)); err != nil || got.ID != "d1" || got.Owner != "" {
		t.Fatalf("DeviceByCertFingerprint after the rewrite: %+v, %v", got, err)
	}

	// Deletions of each kind.
	mustApply(t, s, &store.Batch{Delete: store.Deletions{Users: []string{"bob"}, Grants: []string{"g1"},
		Issuers: []string{"https://auth.example.com/"}, Revocations: []string{"jti/jti-1"}, Classes: []string{"app"}}}, "cleanup")
	_, err = s.User("bob")
	wantNotFound(t, err, `load user "bob": not found`)
	_, err = s.Grant("g1")
	wantNotFound(t, err, `load grant "g1": not found`)
	_, err = s.Class("app")
	wantNotFound(t, err, `load class "app": not found`)
	if iss, err := s.Issuers(); err != nil || len(iss) != 0 {
		t.Fatalf("Issuers() after the delete: %+v, %v", iss, err)
	}
	if _, ok, err := s.Revocation(store.RevokeToken, "jti-1"); ok || err != nil {
		t.Fatalf("lifted revocation: %v, %v", ok, err)
	}
}

// A revocation is kept until its expiry and then reads as absent: by
// Revocation and in a snapshot.
func testRevocationExpiry(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	now := time.Now().UTC()
	soon := now.Add(1500 * time.Millisecond)
	b := &store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeToken, Value: "keep", RevokedAt: now, ExpiresAt: now.Add(time.Hour)},
		{Kind: store.RevokeToken, Value: "forever", RevokedAt: now},
		{Kind: store.RevokeSubject, Value: "soon", RevokedAt: now, ExpiresAt: soon},
		{Kind: store.RevokeToken, Value: "past", RevokedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)},
	}}
	mustApply(t, s, b, "setup")
	if time.Until(soon) > 500*time.Millisecond { // too late to tell otherwise
		if _, ok, err := s.Revocation(store.RevokeSubject, "soon"); !ok || err != nil {
			t.Fatalf("a revocation before its expiry: %v, %v", ok, err)
		}
	}
	gone := func(kind store.RevocationKind, value string) func() bool {
		return func() bool {
			_, ok, err := s.Revocation(kind, value)
			if err != nil {
				t.Fatal(err)
			}
			return !ok
		}
	}
	waitFor(t, "the revocation past its expiry to read as absent", gone(store.RevokeSubject, "soon"))
	waitFor(t, "the revocation written expired to read as absent", gone(store.RevokeToken, "past"))
	if time.Now().Before(soon) {
		t.Fatalf("the revocation was gone before its expiry %v", soon)
	}
	for _, v := range []string{"keep", "forever"} {
		if _, ok, err := s.Revocation(store.RevokeToken, v); !ok || err != nil {
			t.Fatalf("revocation %s: %v, %v", v, ok, err)
		}
	}
	// A commit after the expiry (which may sweep) changes none of it.
	mustApply(t, s, &store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}}}, "later")
	snap, _, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, r := range snap.Revocations {
		kept = append(kept, r.Key())
	}
	if !slices.Equal(kept, []string{"jti/forever", "jti/keep"}) {
		t.Fatalf("snapshot revocations = %q, want the two unexpired", kept)
	}
	// Writing an expired revocation's key again revokes again.
	mustApply(t, s, &store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: "soon", RevokedAt: time.Now().UTC()}}}, "again")
	if _, ok, err := s.Revocation(store.RevokeSubject, "soon"); !ok || err != nil {
		t.Fatalf("the revocation written again: %v, %v", ok, err)
	}
}

// snapshotJSON is the store's whole content, for "nothing changed".
func snapshotJSON(t testing.TB, s authority.Storage) string {
	t.Helper()
	b, rev, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("rev %d %s", rev, mustJSON(t, b))
}

// A batch with any invalid part is refused whole with a
// *store.ValidationError: no record, document, rev or log entry of it.
func testInvalidBatch(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	withClass(t, s)
	d := device("d1")
	d.CertSHA256 = fp(1)
	mustApply(t, s, &store.Batch{Devices: []store.Device{d}}, "setup")
	before := snapshotJSON(t, s)
	entries, err := s.LogSince(0, 100)
	if err != nil {
		t.Fatal(err)
	}

	ok := device("d2")
	unknown := device("d3")
	unknown.Class = "toaster"
	_, err = s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{ok, unknown}, Users: []store.User{{ID: "u1", Status: store.UserActive}},
		Docs: []store.DocWrite{{Kind: "note", ID: "n1", Value: "x"}}}, "bad")
	wantValidation(t, err, `devices[1] (d3).class "toaster" is not known; add it under "classes" first`)

	dup := device("d4")
	dup.CertSHA256 = fp(1)
	_, err = s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{ok, dup}, Docs: []store.DocWrite{{Kind: "note", ID: "n1", Value: "x"}}}, "bad")
	wantValidation(t, err, `devices "d4": cert_sha256 is already the certificate of device "d1"`)

	_, err = s.ApplyLoggedBy(&store.Batch{Users: []store.User{{ID: "u1", Status: "asleep"}}}, "bad")
	wantValidation(t, err, `users[0].status "asleep" is not one of active, disabled`)

	if after := snapshotJSON(t, s); after != before {
		t.Fatalf("refused batches changed the store:\nbefore %s\nafter  %s", before, after)
	}
	var v string
	if err := s.GetDoc("note", "n1", &v); err == nil {
		t.Fatalf("a refused batch's document was written: %q", v)
	}
	after, err := s.LogSince(0, 100)
	if err != nil || len(after) != len(entries) {
		t.Fatalf("log after refused batches: %d entries, %v; want %d", len(after), err, len(entries))
	}
	// Refused batches leave no gap: the next commit is the next rev.
	head := mustRev(t, s)
	if rev := mustApply(t, s, &store.Batch{Devices: []store.Device{ok}}, "good"); rev != head+1 {
		t.Fatalf("rev %d after rev %d", rev, head)
	}
}

// A certificate fingerprint, issuer and serial, or PSK identity is one
// device's: another device claiming it is refused, naming the holder,
// until the holder lets it go (a rewrite without it, a delete).
func testUniqueIndexes(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	withClass(t, s)
	a := device("a")
	a.CertSHA256, a.CertIssuer, a.CertSerial = fp(1), "CN=Factory CA", "01"
	a.PSKIdentity, a.PSK = "a-psk", []byte("0123456789abcdef")
	mustApply(t, s, &store.Batch{Devices: []store.Device{a}}, "setup")
	before := snapshotJSON(t, s)
	for _, c := range []struct {
		name    string
		set     func(*store.Device)
		problem string
	}{
		{"fingerprint", func(d *store.Device) { d.CertSHA256 = fp(1) }, `devices "b": cert_sha256 is already the certificate of device "a"`},
		{"issuer", func(d *store.Device) { d.CertIssuer, d.CertSerial = "CN=Factory CA", "01" }, `devices "b": cert_issuer/cert_serial already identify device "a"`},
		{"psk", func(d *store.Device) { d.PSKIdentity, d.PSK = "a-psk", []byte("fedcba9876543210") }, `devices "b": psk_identity is already the identity of device "a"`},
	} {
		b := device("b")
		c.set(&b)
		_, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{b}}, c.name)
		wantValidation(t, err, c.problem)
	}
	// In one batch: the second claimant is refused, naming the first.
	x, y := device("x"), device("y")
	x.CertSHA256, y.CertSHA256 = fp(2), fp(2)
	_, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{x, y}}, "both")
	wantValidation(t, err, `devices "y": cert_sha256 is already the certificate of device "x"`)
	if after := snapshotJSON(t, s); after != before {
		t.Fatalf("refused batches changed the store:\nbefore %s\nafter  %s", before, after)
	}
	// The holder rewritten with its own keys keeps them.
	a.Name = "renamed"
	mustApply(t, s, &store.Batch{Devices: []store.Device{a}}, "rename")
	// A batch where the holder lets go first, then another takes it.
	b := device("b")
	b.CertSHA256 = fp(1)
	freed := a
	freed.CertSHA256 = fp(3)
	mustApply(t, s, &store.Batch{Devices: []store.Device{freed, b}}, "move")
	for fpb, want := range map[byte]string{1: "b", 3: "a"} {
		if d, err := s.DeviceByCertFingerprint(fp(fpb)); err != nil || d.ID != want {
			t.Fatalf("DeviceByCertFingerprint(%x) = %q, %v; want %s", fpb, d.ID, err, want)
		}
	}
	// A device deleted frees its keys.
	mustApply(t, s, &store.Batch{Delete: store.Deletions{Devices: []string{"a"}}}, "delete")
	_, err = s.DeviceByCertFingerprint(fp(3))
	wantNotFound(t, err, "")
	c := device("c")
	c.CertSHA256, c.CertIssuer, c.CertSerial, c.PSKIdentity, c.PSK = fp(3), "CN=Factory CA", "01", "a-psk", []byte("0123456789abcdef")
	mustApply(t, s, &store.Batch{Devices: []store.Device{c}}, "reuse")
}

// A class still used by devices the batch leaves in place cannot be
// deleted; with its devices moved in the same batch it can.
func testDeleteClassInUse(t *testing.T, hs []authority.Storage) {
	s := hs[0]
	withClass(t, s)
	mustApply(t, s, &store.Batch{Classes: []store.DeviceClass{{Name: "other"}}, Devices: []store.Device{device("d1"), device("d2")}}, "setup")
	before := snapshotJSON(t, s)
	_, err := s.ApplyLoggedBy(&store.Batch{Delete: store.Deletions{Classes: []string{class}}}, "delete")
	wantValidation(t, err, `delete.classes "thermostat" is still used by 2 devices; move or delete them first`)
	moved := device("d1")
	moved.Class = "other"
	_, err = s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{moved}, Delete: store.Deletions{Classes: []string{class}}}, "delete")
	wantValidation(t, err, `delete.classes "thermostat" is still used by 1 devices; move or delete them first`)
	if after := snapshotJSON(t, s); after != before {
		t.Fatalf("refused batches changed the store:\nbefore %s\nafter  %s", before, after)
	}
	mustApply(t, s, &store.Batch{Devices: []store.Device{moved}, Delete: store.Deletions{Devices: []string{"d2"}, Classes: []string{class}}}, "delete")
	_, err = s.Class(class)
	wantNotFound(t, err, "")
	// A device of the deleted class is now refused.
	_, err = s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{device("d3")}}, "late")
	wantValidation(t, err, `devices[0] (d3).class "thermostat" is not known; add it under "classes" first`)
}
