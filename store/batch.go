package store

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeid/edgeid/policy"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Batch is a set of changes applied atomically: all of it or none of it.
// It is the format of `edgeid import` files and of sync batches.
type Batch struct {
	Classes     []DeviceClass `json:"classes,omitempty"`
	Devices     []Device      `json:"devices,omitempty"`
	Users       []User        `json:"users,omitempty"`
	Grants      []Grant       `json:"grants,omitempty"`
	Issuers     []Issuer      `json:"issuers,omitempty"`
	Revocations []Revocation  `json:"revocations,omitempty"`
	Delete      Deletions     `json:"delete,omitzero"`

	// Expect makes the batch a conditional commit (cas.go): each record
	// key (DeviceKey, UserKey, …) must still be at the revision given
	// (0: must not exist) when the batch commits, or nothing is written.
	// Not part of the batch's JSON: never logged, synced or imported.
	Expect map[string]uint64 `json:"-"`
	// Docs are document writes committed in the same transaction as the
	// records (with their own expectations); never logged or synced.
	Docs []DocWrite `json:"-"`
}

// Deletions names records to remove.
type Deletions struct {
	Classes []string `json:"classes,omitempty"`
	Devices []string `json:"devices,omitempty"`
	Users   []string `json:"users,omitempty"`
	Grants  []string `json:"grants,omitempty"`
	Issuers []string `json:"issuers,omitempty"`
	// Revocations are "kind/value" keys (e.g. "jti/abc"); lifting a revocation.
	Revocations []string `json:"revocations,omitempty"`
}

// Empty reports whether the batch changes nothing.
func (b *Batch) Empty() bool {
	d := b.Delete
	return len(b.Classes)+len(b.Devices)+len(b.Users)+len(b.Grants)+len(b.Issuers)+len(b.Revocations)+
		len(d.Classes)+len(d.Devices)+len(d.Users)+len(d.Grants)+len(d.Issuers)+len(d.Revocations) == 0
}

// Size is the number of records the batch touches.
func (b *Batch) Size() int {
	d := b.Delete
	return len(b.Classes) + len(b.Devices) + len(b.Users) + len(b.Grants) + len(b.Issuers) + len(b.Revocations) +
		len(d.Classes) + len(d.Devices) + len(d.Users) + len(d.Grants) + len(d.Issuers) + len(d.Revocations)
}

// ValidationError lists every problem found in a batch, each naming the record and field.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	const max = 20
	p := e.Problems
	more := ""
	if len(p) > max {
		more = fmt.Sprintf("\n  ... and %d more", len(p)-max)
		p = p[:max]
	}
	return fmt.Sprintf("invalid batch (%d problems, nothing was applied):\n  %s%s", len(e.Problems), strings.Join(p, "\n  "), more)
}

type problems struct{ list []string }

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// validID checks an identifier used in keys and topic placeholders.
func validID(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > 256:
		return errors.New("is longer than 256 bytes")
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.ContainsAny(s, "/+#\x00 \t\r\n"):
		return errors.New(`contains one of / + # NUL or whitespace (not allowed: ids are used in topics and keys)`)
	}
	return nil
}

// checkSite checks a record's site name ("" is none: every site).
func checkSite(p *problems, at, site string) {
	if site == "" {
		return
	}
	if err := validID(site); err != nil {
		p.add("%s.site %q %v", at, site, err)
	} else if site == AllSites {
		p.add("%s.site %q is reserved (it means every site); leave the site empty for that", at, site)
	}
}

// validate checks the batch on its own and against the store's current
// classes (known reports whether a class exists in the store).
func (b *Batch) validate(classKnown func(string) bool) error {
	var p problems
	batchClasses := map[string]bool{}
	deletedClasses := map[string]bool{}
	for _, c := range b.Delete.Classes {
		deletedClasses[c] = true
	}
	seen := map[string]bool{}
	for i, c := range b.Classes {
		at := fmt.Sprintf("classes[%d]", i)
		if err := validID(c.Name); err != nil {
			p.add("%s.name %q %v", at, c.Name, err)
			continue
		}
		if seen[c.Name] {
			p.add("%s.name %q appears twice in the batch; merge the entries", at, c.Name)
		}
		seen[c.Name] = true
		batchClasses[c.Name] = true
		if err := policy.CheckTemplate(c.Permissions); err != nil {
			p.add("%s.permissions: %v", at, err)
		}
		checkGroups(&p, at, c.Resources)
		if c.Limits != nil {
			checkRates(&p, at+".limits.device", c.Limits.Device)
			checkRates(&p, at+".limits.class", c.Limits.Class)
		}
	}
	seen = map[string]bool{}
	pskSeen := map[string]string{} // PSK identity -> device id
	for i, d := range b.Devices {
		at := fmt.Sprintf("devices[%d]", i)
		if err := validID(d.ID); err != nil {
			p.add("%s.id %q %v", at, d.ID, err)
			continue
		}
		at = fmt.Sprintf("devices[%d] (%s)", i, d.ID)
		if seen[d.ID] {
			p.add("%s: id appears twice in the batch", at)
		}
		seen[d.ID] = true
		switch {
		case d.Class == "":
			p.add("%s.class is empty; name the device's class", at)
		case deletedClasses[d.Class]:
			p.add("%s.class %q is deleted by this batch", at, d.Class)
		case !batchClasses[d.Class] && !classKnown(d.Class):
			p.add("%s.class %q is not known; add it under \"classes\" first", at, d.Class)
		}
		switch d.Status {
		case DeviceActive, DeviceSuspended, DeviceRevoked:
		case "":
			p.add("%s.status is empty; use active, suspended or revoked", at)
		default:
			p.add("%s.status %q is not one of active, suspended, revoked", at, d.Status)
		}
		if d.Owner != "" {
			if err := validID(d.Owner); err != nil {
				p.add("%s.owner %q %v", at, d.Owner, err)
			}
		}
		checkSite(&p, at, d.Site)
		if d.CertSHA256 != "" {
			if b, err := hex.DecodeString(d.CertSHA256); err != nil || len(b) != 32 || strings.ToLower(d.CertSHA256) != d.CertSHA256 {
				p.add("%s.cert_sha256 must be 64 lowercase hex digits (sha256 of the DER certificate)", at)
			}
		}
		if len(d.PublicKey) > 0 {
			if err := checkDeviceKey(d.PublicKey); err != nil {
				p.add("%s.public_key: %v", at, err)
			}
		}
		// --- CoAP DTLS-PSK (see psk.go) ---
		if problem := checkPSK(d); problem != "" {
			p.add("%s%s", at, problem)
		} else if d.PSKIdentity != "" {
			if other, dup := pskSeen[d.PSKIdentity]; dup {
				p.add("%s.psk_identity is also the identity of %s in this batch; PSK identities must be unique", at, other)
			}
			pskSeen[d.PSKIdentity] = d.ID
		}
		// --- end CoAP DTLS-PSK ---
		if (d.CertIssuer == "") != (d.CertSerial == "") {
			p.add("%s: cert_issuer and cert_serial go together; set both or neither", at)
		}
		if d.CertSerial != "" {
			if _, err := hex.DecodeString(d.CertSerial); err != nil || strings.ToLower(d.CertSerial) != d.CertSerial {
				p.add("%s.cert_serial must be lowercase hex without separators", at)
			}
		}
	}
	for i, id := range b.Delete.Devices {
		if seen[id] {
			p.add("delete.devices[%d] %q is also written by this batch; do one or the other", i, id)
		}
	}
	seen = map[string]bool{}
	for i, u := range b.Users {
		at := fmt.Sprintf("users[%d]", i)
		if err := validID(u.ID); err != nil {
			p.add("%s.id %q %v", at, u.ID, err)
			continue
		}
		if seen[u.ID] {
			p.add("%s.id %q appears twice in the batch", at, u.ID)
		}
		seen[u.ID] = true
		if u.Status != UserActive && u.Status != UserDisabled {
			p.add("%s.status %q is not one of active, disabled", at, u.Status)
		}
		checkSite(&p, at, u.Site)
	}
	seen = map[string]bool{}
	for i, g := range b.Grants {
		at := fmt.Sprintf("grants[%d]", i)
		if g.ID != "" && seen[g.ID] {
			p.add("%s.id %q appears twice in the batch", at, g.ID)
		}
		seen[g.ID] = true
		checkGrant(&p, at, g)
	}
	seen = map[string]bool{}
	for i, is := range b.Issuers {
		at := fmt.Sprintf("issuers[%d]", i)
		if is.Issuer == "" {
			p.add("%s.issuer is empty; give the exact iss value of its tokens", at)
			continue
		}
		if seen[is.Issuer] {
			p.add("%s.issuer %q appears twice in the batch", at, is.Issuer)
		}
		seen[is.Issuer] = true
		if _, err := ParseJWKS(is.JWKS); err != nil {
			p.add("%s (%s).jwks: %v", at, is.Issuer, err)
		}
	}
	for i, r := range b.Revocations {
		at := fmt.Sprintf("revocations[%d]", i)
		switch r.Kind {
		case RevokeToken, RevokeDevice, RevokeSubject:
		default:
			p.add("%s.kind %q is not one of jti, device, subject", at, r.Kind)
		}
		if r.Value == "" || len(r.Value) > 1024 || strings.ContainsRune(r.Value, 0) {
			p.add("%s.value must be 1 to 1024 bytes without NUL", at)
		}
		if r.RevokedAt.IsZero() && r.Kind != RevokeToken {
			p.add("%s.revoked_at is required for %s revocations (tokens issued up to then are refused)", at, r.Kind)
		}
		if !r.ExpiresAt.IsZero() && !r.RevokedAt.IsZero() && r.ExpiresAt.Before(r.RevokedAt) {
			p.add("%s.expires_at is before revoked_at", at)
		}
	}
	for i, k := range b.Delete.Revocations {
		kind, value, ok := strings.Cut(k, "/")
		if !ok || value == "" || (kind != string(RevokeToken) && kind != string(RevokeDevice) && kind != string(RevokeSubject)) {
			p.add("delete.revocations[%d] %q must be kind/value with kind jti, device or subject", i, k)
		}
	}
	// Writing and deleting the same record in one batch is ambiguous.
	written := map[string]bool{}
	for _, c := range b.Classes {
		written["classes/"+c.Name] = true
	}
	for _, u := range b.Users {
		written["users/"+u.ID] = true
	}
	for _, g := range b.Grants {
		written["grants/"+g.ID] = true
	}
	for _, is := range b.Issuers {
		written["issuers/"+is.Issuer] = true
	}
	for _, r := range b.Revocations {
		written["revocations/"+r.Key()] = true
	}
	for kind, ids := range map[string][]string{"classes": b.Delete.Classes, "users": b.Delete.Users, "grants": b.Delete.Grants,
		"issuers": b.Delete.Issuers, "revocations": b.Delete.Revocations} {
		for i, id := range ids {
			if written[kind+"/"+id] {
				p.add("delete.%s[%d] %q is also written by this batch; do one or the other", kind, i, id)
			}
		}
	}
	if len(p.list) > 0 {
		return &ValidationError{Problems: p.list}
	}
	return nil
}

// checkRates checks a class's rate limits, each problem naming its field.
func checkRates(p *problems, at string, r Rates) {
	for _, f := range []struct {
		name  string
		rate  float64
		burst string
		n     int
	}{{"messages_per_second", r.MessagesPerSecond, "message_burst", r.MessageBurst},
		{"bytes_per_second", r.BytesPerSecond, "byte_burst", r.ByteBurst}} {
		switch {
		case math.IsNaN(f.rate) || math.IsInf(f.rate, 0) || f.rate < 0:
			p.add("%s.%s %v must be a finite number, 0 or more (0 keeps the gateway's configured rate)", at, f.name, f.rate)
		case f.n < 0:
			p.add("%s.%s %d must not be negative", at, f.burst, f.n)
		case f.rate > 0 && f.n < 1:
			p.add("%s.%s must be at least 1 when %s is set", at, f.burst, f.name)
		}
	}
}

// signingAlgs are the asymmetric algorithms a trusted issuer may use.
// HMAC is never accepted: a gateway must not hold shared token secrets, and
// accepting HS* next to public keys is the classic key-confusion hole.
var signingAlgs = map[string]bool{
	"ES256": true, "ES384": true, "ES512": true, "EdDSA": true, "Ed25519": true,
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
}

// ParseJWKS parses and checks an issuer key set: every key public, with a
// kid and an asymmetric alg that fits its key type.
func ParseJWKS(raw []byte) (jwk.Set, error) {
	if len(raw) == 0 {
		return nil, errors.New(`is empty; give {"keys":[...]}`)
	}
	set, err := jwk.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if set.Len() == 0 {
		return nil, errors.New("has no keys")
	}
	kids := map[string]bool{}
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		kid, ok := k.KeyID()
		if !ok || kid == "" {
			return nil, fmt.Errorf("keys[%d] has no kid; tokens name their key by kid", i)
		}
		if kids[kid] {
			return nil, fmt.Errorf("keys[%d] kid %q is used twice", i, kid)
		}
		kids[kid] = true
		alg, ok := k.Algorithm()
		if !ok {
			return nil, fmt.Errorf("key %q has no alg; set it (e.g. ES256) so the key cannot be used with another algorithm", kid)
		}
		if !signingAlgs[alg.String()] {
			return nil, fmt.Errorf("key %q alg %q is not an accepted signature algorithm (ES256, ES384, ES512, EdDSA, RS256+, PS256+)", kid, alg)
		}
		if err := algFitsKey(alg.String(), k); err != nil {
			return nil, fmt.Errorf("key %q: %w", kid, err)
		}
		if priv, err := jwk.IsPrivateKey(k); err == nil && priv {
			return nil, fmt.Errorf("key %q is a private key; publish only the public key", kid)
		}
		var raw any
		if err := jwk.Export(k, &raw); err != nil {
			return nil, fmt.Errorf("key %q: %w", kid, err)
		}
	}
	return set, nil
}

// CertIssuerKey is the index form of a certificate's issuer and serial.
func CertIssuerKey(c *x509.Certificate) (issuer, serial string) {
	return c.Issuer.String(), hex.EncodeToString(c.SerialNumber.Bytes())
}

// revocationTTL is how long badger keeps an entry; zero means forever.
func revocationTTL(r Revocation, now time.Time) (time.Duration, bool) {
	if r.ExpiresAt.IsZero() {
		return 0, false
	}
	d := r.ExpiresAt.Sub(now)
	if d < time.Second {
		d = time.Second
	}
	return d, true
}

// algFitsKey refuses an alg that does not belong to the key's type or curve,
// so a key is only ever used with the one algorithm it was published for.
func algFitsKey(alg string, k jwk.Key) error {
	kty := k.KeyType()
	crv := ""
	if c, ok := k.(interface {
		Crv() (jwa.EllipticCurveAlgorithm, bool)
	}); ok {
		if v, ok := c.Crv(); ok {
			crv = v.String()
		}
	}
	want := map[string][2]string{
		"ES256": {"EC", "P-256"}, "ES384": {"EC", "P-384"}, "ES512": {"EC", "P-521"},
		"EdDSA": {"OKP", "Ed25519"}, "Ed25519": {"OKP", "Ed25519"},
		"RS256": {"RSA", ""}, "RS384": {"RSA", ""}, "RS512": {"RSA", ""},
		"PS256": {"RSA", ""}, "PS384": {"RSA", ""}, "PS512": {"RSA", ""},
	}[alg]
	if kty.String() != want[0] || crv != want[1] {
		return fmt.Errorf("alg %s needs a %s key%s, not kty %s crv %q", alg, want[0], map[bool]string{true: " on " + want[1], false: ""}[want[1] != ""], kty, crv)
	}
	return nil
}

// checkDeviceKey accepts a public EC (P-256/P-384) or Ed25519 JWK.
func checkDeviceKey(raw []byte) error {
	k, err := jwk.ParseKey(raw)
	if err != nil {
		return fmt.Errorf("not a JWK: %v", err)
	}
	if priv, _ := jwk.IsPrivateKey(k); priv {
		return errors.New("is a private key; register the public key only")
	}
	switch k.KeyType() {
	case jwa.EC(), jwa.OKP():
	default:
		return fmt.Errorf("key type %s: use an EC (P-256) or Ed25519 key", k.KeyType())
	}
	return nil
}
