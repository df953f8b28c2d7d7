package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Exported wrappers of this package's own rules, for the other
// implementation of the authority's storage (store/pgstore, PostgreSQL):
// it validates, names its errors and encodes its change log with the very
// code the Badger store uses, so the two cannot drift apart. Each is thin;
// the logic stays where the Badger store has it. Two texts (DeviceIndexes'
// wording, ClassInUseError) are written inline in store.go and repeated
// here; the conformance suite (cloudsync/authority/storagetest) holds both
// backends to the same words.

// Validate checks the batch whole, on its own and against the classes the
// storage holds (classKnown reports whether a class exists): the checks
// Badger's apply runs, with the same *ValidationError.
func (b *Batch) Validate(classKnown func(string) bool) error { return b.validate(classKnown) }

// ValidateDocWrites checks document writes on their own (kind, id, a write
// named twice, ExpectAbsent with a delete), as a conditional commit does
// before it starts.
func ValidateDocWrites(ws []DocWrite) error { return checkDocWrites(ws) }

// ValidID checks an identifier used in keys (a document kind, a record id).
func ValidID(s string) error { return validID(s) }

// DocKey is the key a *ConflictError names for a document: "docs/<kind>/<id>".
func DocKey(kind, id string) string { return docKey(kind, id) }

// ParseExpectKey splits a Batch.Expect key ("devices/<id>", …) into the
// kind of record and its id; a key naming no kind of record is the
// *ValidationError the Badger store returns for it.
func ParseExpectKey(key string) (kind, id string, err error) {
	kind, id, _ = strings.Cut(key, "/")
	if _, ok := expectPrefixes[kind]; !ok || id == "" {
		return "", "", &ValidationError{Problems: []string{fmt.Sprintf("expect %q: name a record as devices/<id>, users/<id>, grants/<id>, classes/<name> or issuers/<issuer>", key)}}
	}
	return kind, id, nil
}

// RevocationExpiry is the instant from which the revocation r, written at
// now, is forgotten, exactly as Badger's TTL makes it (never before
// ExpiresAt, rounded up to the second, and kept at least a second); ok is
// false when it is kept forever.
func RevocationExpiry(r Revocation, now time.Time) (at time.Time, ok bool) {
	ttl, ok := revocationTTL(r, now)
	if !ok {
		return time.Time{}, false
	}
	// As writeRecords: Badger's expiry in whole seconds, rounded up.
	sec := now.Add(ttl).Unix()
	if up := r.ExpiresAt.Add(time.Second - time.Nanosecond).Unix(); up > sec {
		sec = up
	}
	return time.Unix(sec, 0), true
}

// CertIssuerIndexKey is the index key of a certificate issuer DN and
// serial (a hash of the DN, so any DN makes a short key of safe bytes).
func CertIssuerIndexKey(issuer, serial string) string { return certIssuerIndexKey(issuer, serial) }

// DeviceIndex is one of a device's unique index keys and what holding it
// means, as the error that refuses a second device names it.
type DeviceIndex struct {
	Key   string
	Taken string
}

// DeviceIndexes are the unique index keys of d (certificate fingerprint,
// issuer and serial, PSK identity), in the order, with the key spaces and
// wording, of addDeviceIndexes.
func DeviceIndexes(d Device) []DeviceIndex {
	var out []DeviceIndex
	if d.CertSHA256 != "" {
		out = append(out, DeviceIndex{pIdxCertFP + d.CertSHA256, "cert_sha256 is already the certificate of"})
	}
	if d.CertIssuer != "" {
		out = append(out, DeviceIndex{certIssuerIndexKey(d.CertIssuer, d.CertSerial), "cert_issuer/cert_serial already identify"})
	}
	if d.PSKIdentity != "" {
		out = append(out, DeviceIndex{pIdxPSK + d.PSKIdentity, "psk_identity is already the identity of"})
	}
	return out
}

// CertFingerprintIndexKey is the DeviceIndexes key of a certificate
// fingerprint, for a lookup by it.
func CertFingerprintIndexKey(fp string) string { return pIdxCertFP + fp }

// PSKIdentityIndexKey is the DeviceIndexes key of a PSK identity.
func PSKIdentityIndexKey(identity string) string { return pIdxPSK + identity }

// IndexTakenError is the *ValidationError claimIndex returns when device id
// would take the index key x that device other holds.
func IndexTakenError(id string, x DeviceIndex, other string) error {
	return &ValidationError{Problems: []string{fmt.Sprintf("devices %q: %s device %q", id, x.Taken, other)}}
}

// ClassInUseError is the *ValidationError refusing to delete a class that n
// devices still use.
func ClassInUseError(class string, n int) error {
	return &ValidationError{Problems: []string{fmt.Sprintf("delete.classes %q is still used by %d devices; move or delete them first", class, n)}}
}

// EncodeLogEntry is the change log entry of b as a logged Badger store
// keeps it (the batch's own fields, with logged_by, logged_at and the sites
// beside them): with plan (PlanSites of the commit), the dependents whose
// sites changed are carried in the logged batch and Reach and Was are kept,
// as keepSites does; b itself is not changed.
func EncodeLogEntry(b *Batch, by string, at time.Time, plan *SitePlan) ([]byte, error) {
	lg := logged{Batch: *b, By: by, At: at}
	if plan != nil {
		// Clip: appending must not write into the caller's batch's spare capacity.
		lg.Batch.Users = append(slices.Clip(lg.Batch.Users), plan.Users...)
		lg.Batch.Grants = append(slices.Clip(lg.Batch.Grants), plan.Grants...)
		lg.Reach, lg.Was = plan.Reach, plan.Was
	}
	raw, err := json.Marshal(&lg)
	if err != nil {
		return nil, fmt.Errorf("encode log entry: %w", err)
	}
	return raw, nil
}

// DecodeLogEntry reads an entry EncodeLogEntry made (or an older one, a
// bare batch) as the LogEntry of rev, as LogSince does.
func DecodeLogEntry(rev uint64, raw []byte) (LogEntry, error) {
	var lg logged
	if err := json.Unmarshal(raw, &lg); err != nil {
		return LogEntry{}, fmt.Errorf("decode log entry %d: %w", rev, err)
	}
	return LogEntry{Rev: rev, Batch: lg.Batch, By: lg.By, At: lg.At, Reach: lg.Reach, Was: lg.Was}, nil
}
