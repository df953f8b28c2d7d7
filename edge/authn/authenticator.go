package authn

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"time"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Method is how a principal proved who it is.
type Method string

// Authentication methods.
const (
	MethodToken       Method = "token"
	MethodCertificate Method = "certificate"
)

// ReasonSubject: a valid token acting for someone who is not the device's owner.
const ReasonSubject Reason = "subject_mismatch"

// ReasonUserDisabled: a valid token acting for an owner whose account is disabled.
const ReasonUserDisabled Reason = "user_disabled"

// Principal is an authenticated device and what it may do.
type Principal struct {
	Device store.Device
	Method Method
	// Claims is nil for a certificate-only session.
	Claims *Claims
	// CertSHA256 is the hex fingerprint of the TLS client certificate, if
	// any; CertIssuer and CertSerial identify it for CA-issued certificates.
	CertSHA256, CertIssuer, CertSerial string
	// Expires is when the credential stops being valid: for a token, exp plus
	// ExpLeeway, or the NotAfter of the certificate it is bound to (cnf
	// x5t#S256) if that is earlier; for a certificate, its NotAfter. The
	// session is ended then.
	Expires time.Time
	Perms   policy.Perms
}

// Authenticator decides who a connecting client is, from the store alone.
type Authenticator struct {
	Store    *store.Store
	Verifier *Verifier
	// ClientCAs verifies certificates registered by issuer and serial; nil if none.
	ClientCAs *x509.CertPool
	// Skew is auth.clock_skew. Token does not use it: nbf and iat are the
	// Verifier's (VerifierConfig.Skew), and exp never gets it.
	Skew time.Duration
	// ExpLeeway is auth.exp_leeway, as VerifierConfig.ExpLeeway: a token
	// session's End is exp plus ExpLeeway (see CredentialEnd).
	ExpLeeway time.Duration
	Now       func() time.Time
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// CertFingerprint is the lowercase hex SHA-256 of a certificate's DER.
func CertFingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

// Possession is what the connection proved about the client, against which
// a key-bound token (cnf) is checked.
type Possession struct {
	// Cert is the TLS or DTLS client certificate, or nil.
	Cert *x509.Certificate
	// JKT is the thumbprint of the key a proof-of-possession exchange proved
	// (MQTT 5 AUTH, a plain-UDP CoAP proof); "" if none.
	JKT string
	// PSKIdentity is the DTLS pre-shared key identity of the session; "" if
	// the session has none.
	PSKIdentity string
}

// Token authenticates a client presenting an access token. A token bound to
// a key (cnf) is accepted only with its proof: x5t#S256 must be the
// certificate's thumbprint, jkt the proven key's, and kid the DTLS session's
// PSK identity (RFC 9202: the PSK is the key the token is bound to).
func (a *Authenticator) Token(token string, proven Possession, clientID string) (*Principal, error) {
	cert, provenJKT := proven.Cert, proven.JKT
	c, err := a.Verifier.Verify(token)
	if err != nil {
		return nil, err
	}
	p := &Principal{Method: MethodToken, Claims: c, Expires: a.CredentialEnd(c, nil)}
	if cert != nil {
		p.CertSHA256 = CertFingerprint(cert)
		p.CertIssuer, p.CertSerial = store.CertIssuerKey(cert)
	}
	if c.Cnf.X5T != "" {
		if cert == nil {
			return nil, fail(ReasonPoPRequired, "token is bound to a certificate (cnf x5t#S256); connect over TLS with that certificate")
		}
		h := sha256.Sum256(cert.Raw)
		got := base64.RawURLEncoding.EncodeToString(h[:])
		if subtle.ConstantTimeCompare([]byte(got), []byte(c.Cnf.X5T)) != 1 {
			return nil, fail(ReasonCnfMismatch, "TLS client certificate is not the one the token is bound to")
		}
		// The certificate is half the credential: outside its validity the
		// token is not proven, and the session must not outlive it.
		if err := a.certInValidity(cert, "the client certificate the token is bound to (cnf x5t#S256)"); err != nil {
			return nil, err
		}
		p.Expires = a.CredentialEnd(c, cert)
	}
	if c.Cnf.JKT != "" {
		if provenJKT == "" {
			return nil, fail(ReasonPoPRequired, "token is bound to a key (cnf jkt); prove possession with MQTT 5 enhanced authentication")
		}
		if subtle.ConstantTimeCompare([]byte(provenJKT), []byte(c.Cnf.JKT)) != 1 {
			return nil, fail(ReasonCnfMismatch, "proven key is not the one the token is bound to")
		}
	}
	if c.Cnf.Kid != "" {
		if proven.PSKIdentity == "" {
			return nil, fail(ReasonPoPRequired, "token is bound to a DTLS pre-shared key (cnf kid); post it over a coaps:// session opened with that PSK identity")
		}
		if subtle.ConstantTimeCompare([]byte(proven.PSKIdentity), []byte(c.Cnf.Kid)) != 1 {
			return nil, fail(ReasonCnfMismatch, "the session's PSK identity is not the key the token is bound to (cnf kid)")
		}
	}
	d, err := a.device(c.ClientID)
	if err != nil {
		return nil, err
	}
	if p.CertSHA256 != "" && d.CertSHA256 != "" && d.CertSHA256 != p.CertSHA256 {
		return nil, fail(ReasonCnfMismatch, "TLS client certificate belongs to another device than the token's client_id %q", c.ClientID)
	}
	if err := a.CheckSubject(d, c); err != nil {
		return nil, err
	}
	if err := a.CheckRevoked(c); err != nil {
		return nil, err
	}
	p.Device = d
	if p.Perms, err = a.Permissions(d, c, clientID); err != nil {
		return nil, err
	}
	return p, nil
}

// CredentialEnd is when a session on token claims c (nil for none) and
// certificate cert (nil for none) must end: the earlier of exp plus
// ExpLeeway and the certificate's NotAfter. The zero time if both are nil.
func (a *Authenticator) CredentialEnd(c *Claims, cert *x509.Certificate) time.Time {
	var end time.Time
	if c != nil {
		end = c.Expiry.Add(a.ExpLeeway)
	}
	if cert != nil && (end.IsZero() || cert.NotAfter.Before(end)) {
		end = cert.NotAfter
	}
	return end
}

// certInValidity refuses a certificate whose NotBefore has not come or whose
// NotAfter has passed; what names it in the refusal.
func (a *Authenticator) certInValidity(cert *x509.Certificate, what string) error {
	now := a.now()
	if now.Before(cert.NotBefore) {
		return fail(ReasonNotYetValid, "%s is not valid before %s", what, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return fail(ReasonExpired, "%s expired at %s", what, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Certificate authenticates a client by its TLS certificate alone: by
// registered fingerprint, or by issuer and serial under a trusted client CA.
func (a *Authenticator) Certificate(chain []*x509.Certificate, clientID string) (*Principal, error) {
	if len(chain) == 0 {
		return nil, fail(ReasonNoCredentials, "no token and no client certificate")
	}
	leaf := chain[0]
	now := a.now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fail(ReasonUnknownCert, "client certificate is outside its validity period (%s to %s)",
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	fp := CertFingerprint(leaf)
	d, err := a.Store.DeviceByCertFingerprint(fp)
	if errors.Is(err, store.ErrNotFound) && a.ClientCAs != nil {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, verr := leaf.Verify(x509.VerifyOptions{Roots: a.ClientCAs, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); verr == nil {
			issuer, serial := store.CertIssuerKey(leaf)
			d, err = a.Store.DeviceByCertIssuer(issuer, serial)
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, fail(ReasonUnknownCert, "client certificate sha256 %s is not registered to any device", fp)
	}
	if err != nil {
		return nil, fail(ReasonStore, "%v", err)
	}
	if d.Status != store.DeviceActive {
		return nil, fail(ReasonDeviceInactive, "device %q is %s", d.ID, d.Status)
	}
	p := &Principal{Device: d, Method: MethodCertificate, CertSHA256: fp, Expires: leaf.NotAfter}
	p.CertIssuer, p.CertSerial = store.CertIssuerKey(leaf)
	if p.Perms, err = a.Permissions(d, nil, clientID); err != nil {
		return nil, err
	}
	return p, nil
}

func (a *Authenticator) device(id string) (store.Device, error) {
	d, err := a.Store.Device(id)
	if errors.Is(err, store.ErrNotFound) {
		return d, fail(ReasonUnknownDevice, "client_id %q is not a device known to this gateway", id)
	}
	if err != nil {
		return d, fail(ReasonStore, "%v", err)
	}
	if d.Status != store.DeviceActive {
		return d, fail(ReasonDeviceInactive, "device %q is %s", d.ID, d.Status)
	}
	return d, nil
}

// CheckSubject refuses a token that acts for anyone but the device itself or
// its current owner, or for an owner whose account is disabled.
func (a *Authenticator) CheckSubject(d store.Device, c *Claims) error {
	if c.Subject == d.ID {
		return nil
	}
	if d.Owner == "" || c.Subject != d.Owner {
		return fail(ReasonSubject, "token acts for %q, who is neither the device nor its owner", c.Subject)
	}
	u, err := a.Store.User(d.Owner)
	if errors.Is(err, store.ErrNotFound) {
		return nil // the gateway may know devices' owners before it knows their accounts
	}
	if err != nil {
		return fail(ReasonStore, "%v", err)
	}
	if u.Status != store.UserActive {
		return fail(ReasonUserDisabled, "owner %q is %s", u.ID, u.Status)
	}
	return nil
}

// CheckRevoked refuses a token revoked by jti, or issued at or before a
// revocation of its device (client_id) or subject.
func (a *Authenticator) CheckRevoked(c *Claims) error {
	if r, ok, err := a.Store.Revocation(store.RevokeToken, c.JTI); err != nil {
		return fail(ReasonStore, "%v", err)
	} else if ok {
		return fail(ReasonRevoked, "token jti %q revoked at %s", c.JTI, r.RevokedAt.UTC().Format(time.RFC3339))
	}
	for _, k := range []struct {
		kind  store.RevocationKind
		value string
	}{{store.RevokeDevice, c.ClientID}, {store.RevokeSubject, c.Subject}} {
		r, ok, err := a.Store.Revocation(k.kind, k.value)
		if err != nil {
			return fail(ReasonStore, "%v", err)
		}
		if ok && RevocationCovers(r, c) {
			return fail(ReasonRevoked, "tokens of %s %q issued before %s are revoked", k.kind, k.value, r.RevokedAt.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// RevocationCovers reports whether r applies to the token with claims c.
func RevocationCovers(r store.Revocation, c *Claims) bool {
	switch r.Kind {
	case store.RevokeToken:
		return c.JTI == r.Value
	case store.RevokeDevice:
		return c.ClientID == r.Value && !c.IssuedAt.After(r.RevokedAt)
	case store.RevokeSubject:
		return c.Subject == r.Value && !c.IssuedAt.After(r.RevokedAt)
	}
	return false
}

// Permissions is what device d may do: its class template, expanded for the
// device, its owner and the MQTT client id, intersected with the token's
// scope when there is a token.
func (a *Authenticator) Permissions(d store.Device, c *Claims, clientID string) (policy.Perms, error) {
	class, err := a.Store.Class(d.Class)
	if err != nil {
		return policy.Perms{}, fail(ReasonStore, "%v", err)
	}
	rules, err := policy.Expand(class.Permissions, policy.Vars{Device: d.ID, Owner: d.Owner, Client: clientID})
	if err != nil {
		return policy.Perms{}, fail(ReasonStore, "class %q: %v", class.Name, err)
	}
	set, err := policy.Compile(rules)
	if err != nil {
		return policy.Perms{}, fail(ReasonStore, "class %q: %v", class.Name, err)
	}
	if c == nil {
		return policy.NewPerms(set), nil
	}
	perms := policy.NewPerms(set, c.Scope)
	if c.Permissions != nil {
		shared, held, err := a.Shares(c)
		if err != nil {
			return policy.Perms{}, err
		}
		perms = perms.WithShares(shared, held)
	}
	return perms, nil
}

// Revalidate re-decides a live session against the store, as a new CONNECT
// would: the device must exist and be active and, for a token session, the
// signing key must still be trusted, the token unrevoked and acting for the
// device or its current owner. It returns the device and the session's
// current permissions. Both the MQTT and the CoAP front ends use it.
func (a *Authenticator) Revalidate(deviceID string, c *Claims, clientID string) (store.Device, policy.Perms, error) {
	d, err := a.device(deviceID)
	if err != nil {
		return d, policy.Perms{}, err
	}
	if c != nil {
		if !a.Verifier.HasKey(c.Issuer, c.Kid) {
			return d, policy.Perms{}, fail(ReasonUnknownKey, "signing key %q of %s is no longer trusted", c.Kid, c.Issuer)
		}
		if err := a.CheckSubject(d, c); err != nil {
			return d, policy.Perms{}, err
		}
		if err := a.CheckRevoked(c); err != nil {
			return d, policy.Perms{}, err
		}
	}
	perms, err := a.Permissions(d, c, clientID)
	return d, perms, err
}
