package authn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"log/slog"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// ---- certificates ----

type certKey struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func issueCert(t testing.TB, tmpl *x509.Certificate, parent *certKey) certKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, parentCert := k, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &k.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return certKey{cert: c, key: k}
}

func newCA(t testing.TB, subject pkix.Name, parent *certKey) certKey {
	t.Helper()
	return issueCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, parent)
}

func newLeaf(t testing.TB, cn string, serial int64, notBefore, notAfter time.Time, eku x509.ExtKeyUsage, parent *certKey) *x509.Certificate {
	t.Helper()
	return issueCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}, parent).cert
}

func selfSigned(t testing.TB, cn string) *x509.Certificate {
	return newLeaf(t, cn, 99, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth, nil)
}

func x5t(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// ---- fixture ----

var sensorClass = store.DeviceClass{Name: "sensor", Permissions: []policy.Rule{
	{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
	{Filter: "devices/{device}/commands/+", Actions: policy.Subscribe},
	{Filter: "owners/{owner}/alerts", Actions: policy.Publish},
	{Filter: "fleet/{device}/status", Actions: policy.Publish},
	{Filter: "clients/{client}/inbox", Actions: policy.Subscribe},
}}

type fixture struct {
	store *store.Store
	auth  *authn.Authenticator
	iss   *demo.Issuer

	ca, ca2, inter     certKey
	certA, certB       *x509.Certificate // registered by fingerprint to d3 / suspended d5
	certExpired        *x509.Certificate // registered by fingerprint to d6
	caLeaf, caLeafSusp *x509.Certificate // registered by issuer/serial to d4 / d7
	interLeaf          *x509.Certificate // under ca2 via inter, registered to d8
	caLeafUnregistered *x509.Certificate
	caLeafServerOnly   *x509.Certificate // registered to d9, but not for client auth
	forgedLeaf         *x509.Certificate // same issuer DN and serial as caLeaf, other CA
	unregistered       *x509.Certificate
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{iss: newIssuer(t, issA, "a1")}
	now := time.Now()
	f.ca = newCA(t, pkix.Name{CommonName: "Factory CA", Organization: []string{"Acme"}}, nil)
	f.ca2 = newCA(t, pkix.Name{CommonName: "Root 2"}, nil)
	f.inter = newCA(t, pkix.Name{CommonName: "Intermediate"}, &f.ca2)
	forgedCA := newCA(t, pkix.Name{CommonName: "Factory CA", Organization: []string{"Acme"}}, nil)

	f.certA = selfSigned(t, "d3")
	f.certB = selfSigned(t, "d5")
	f.unregistered = selfSigned(t, "nobody")
	f.certExpired = newLeaf(t, "d6", 5, now.Add(-48*time.Hour), now.Add(-24*time.Hour), x509.ExtKeyUsageClientAuth, nil)
	f.caLeaf = newLeaf(t, "d4", 0x0a1b2c, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageClientAuth, &f.ca)
	f.caLeafSusp = newLeaf(t, "d7", 0x77, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageClientAuth, &f.ca)
	f.caLeafUnregistered = newLeaf(t, "dx", 0x99, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageClientAuth, &f.ca)
	f.caLeafServerOnly = newLeaf(t, "d9", 0x09, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageServerAuth, &f.ca)
	f.interLeaf = newLeaf(t, "d8", 0x08, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageClientAuth, &f.inter)
	f.forgedLeaf = newLeaf(t, "d4", 0x0a1b2c, now.Add(-time.Hour), now.Add(time.Hour), x509.ExtKeyUsageClientAuth, &forgedCA)

	issuer, serial := store.CertIssuerKey(f.caLeaf)
	if issuer != "CN=Factory CA,O=Acme" || serial != "0a1b2c" {
		t.Fatalf("CertIssuerKey = %q, %q; want CN=Factory CA,O=Acme and 0a1b2c", issuer, serial)
	}
	byIssuer := func(id string, c *x509.Certificate, status store.DeviceStatus) store.Device {
		is, se := store.CertIssuerKey(c)
		return store.Device{ID: id, Class: "sensor", Status: status, CertIssuer: is, CertSerial: se}
	}

	s, err := store.Open(store.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f.store = s
	if _, err := s.Apply(&store.Batch{
		Classes: []store.DeviceClass{sensorClass},
		Users:   []store.User{{ID: "alice", Status: store.UserActive}, {ID: "bob", Status: store.UserActive}},
		Issuers: []store.Issuer{record(t, f.iss)},
		Devices: []store.Device{
			{ID: "d1", Class: "sensor", Owner: "alice", Status: store.DeviceActive},
			{ID: "d2", Class: "sensor", Owner: "alice", Status: store.DeviceSuspended},
			{ID: "d3", Class: "sensor", Status: store.DeviceActive, CertSHA256: authn.CertFingerprint(f.certA)},
			byIssuer("d4", f.caLeaf, store.DeviceActive),
			{ID: "d5", Class: "sensor", Status: store.DeviceSuspended, CertSHA256: authn.CertFingerprint(f.certB)},
			{ID: "d6", Class: "sensor", Status: store.DeviceActive, CertSHA256: authn.CertFingerprint(f.certExpired)},
			byIssuer("d7", f.caLeafSusp, store.DeviceSuspended),
			byIssuer("d8", f.interLeaf, store.DeviceActive),
			byIssuer("d9", f.caLeafServerOnly, store.DeviceActive),
			{ID: "d10", Class: "sensor", Status: store.DeviceRevoked},
			{ID: "d11", Class: "sensor", Status: store.DeviceActive},
		},
	}, nil); err != nil {
		t.Fatal(err)
	}

	v := authn.NewVerifier(defaultConfig())
	iss, err := s.Issuers()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetIssuers(iss); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.cert)
	pool.AddCert(f.ca2.cert)
	f.auth = &authn.Authenticator{Store: s, Verifier: v, ClientCAs: pool, Skew: 30 * time.Second}
	return f
}

func (f *fixture) apply(t *testing.T, b *store.Batch) {
	t.Helper()
	if _, err := f.store.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
}

// claims are the claims of a token for device with subject sub and the
// given claim changes.
func (f *fixture) claims(device, sub string, kv ...any) map[string]any {
	c := f.iss.Claims(device, sub, aud, "publish:devices/"+device+"/telemetry/# publish:other/topic subscribe:devices/"+device+"/commands/+ subscribe:clients/"+device+"/inbox", time.Hour)
	return with(c, kv...)
}

// token mints a token for device with subject sub and the given claim changes.
func (f *fixture) token(t *testing.T, device, sub string, kv ...any) string {
	t.Helper()
	return mint(t, f.iss, f.claims(device, sub, kv...), nil)
}

// wantTokenRefused checks that tok is refused for client id d1 with reason
// want, and no principal.
func (f *fixture) wantTokenRefused(t *testing.T, tok string, want authn.Reason) {
	t.Helper()
	p, err := f.auth.Token(tok, authn.Possession{}, "d1")
	if p != nil {
		t.Errorf("principal %+v returned with a refusal", p)
	}
	wantReason(t, err, want)
}

// ---- Token ----

func TestTokenSuccess(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, "d1", "d1")
	p, err := f.auth.Token(tok, authn.Possession{}, "d1")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	want, _ := f.store.Device("d1")
	if !reflect.DeepEqual(p.Device, want) || p.Method != authn.MethodToken || p.Claims == nil || p.Claims.ClientID != "d1" || p.CertSHA256 != "" {
		t.Errorf("principal = %+v", p)
	}
	// exp gets no clock skew (the fixture's is 30 s), only auth.exp_leeway.
	if wantEnd := p.Claims.Expiry; !p.Expires.Equal(wantEnd) {
		t.Errorf("End = %s, want exp %s (skew never extends exp)", p.Expires, wantEnd)
	}
	f.auth.ExpLeeway = 10 * time.Second
	if p2, err := f.auth.Token(tok, authn.Possession{}, "d1"); err != nil || !p2.Expires.Equal(p.Claims.Expiry.Add(10*time.Second)) {
		t.Errorf("with ExpLeeway 10s: End %v, %v; want exp + 10s", p2, err)
	}
	f.auth.ExpLeeway = 0
	wantPublish(t, "Perms", p.Perms, map[string]bool{
		"devices/d1/telemetry/temp": true,  // class and scope
		"other/topic":               false, // scope only
		"fleet/d1/status":           false, // class only
		"owners/alice/alerts":       false, // class only
		"devices/d2/telemetry/temp": false, // neither
	})
	wantSubscribe(t, "Perms", p.Perms, map[string]bool{
		"devices/d1/commands/+": true,
		"clients/d1/inbox":      true, // {client} is the MQTT client id
		"devices/d1/commands/#": false,
	})

	// The owner may act for the device.
	if _, err := f.auth.Token(f.token(t, "d1", "alice"), authn.Possession{}, "d1"); err != nil {
		t.Errorf("token with sub = owner refused: %v", err)
	}
}

func TestTokenRefusals(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	tests := []struct {
		name string
		tok  string
		want authn.Reason
	}{
		{"unknown device", f.token(t, "ghost", "ghost"), authn.ReasonUnknownDevice},
		{"suspended device", f.token(t, "d2", "d2"), authn.ReasonDeviceInactive},
		{"revoked device status", f.token(t, "d10", "d10"), authn.ReasonDeviceInactive},
		{"sub neither device nor owner", f.token(t, "d1", "mallory"), authn.ReasonSubject},
		{"sub the owner of another device", f.token(t, "d11", "alice"), authn.ReasonSubject},
		{"sub another device", f.token(t, "d1", "d11"), authn.ReasonSubject},
		{"expired token", f.token(t, "d1", "d1", "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix()), authn.ReasonExpired},
		{"wrong audience", f.token(t, "d1", "d1", "aud", "x"), authn.ReasonWrongAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { f.wantTokenRefused(t, tt.tok, tt.want) })
	}
}

func TestTokenRevocations(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	revokedAt := now.Add(-30 * time.Minute)
	old := func(device, sub string) string {
		return f.token(t, device, sub, "iat", now.Add(-time.Hour).Unix(), "exp", now.Add(time.Hour).Unix())
	}

	// Tokens verified (and cached) before the revocations arrive.
	byJTI := f.token(t, "d1", "d1", "jti", "revoke-me")
	otherJTI := f.token(t, "d1", "d1", "jti", "keep-me")
	oldDev := old("d1", "d1")
	newDev := f.token(t, "d1", "d1")
	oldSubj := old("d11", "d11")
	oldSubjOwner := old("d1", "alice")
	newSubjOwner := f.token(t, "d1", "alice")
	for _, tok := range []string{byJTI, otherJTI, oldDev, newDev, oldSubj, oldSubjOwner, newSubjOwner} {
		if _, err := f.auth.Token(tok, authn.Possession{}, ""); err != nil {
			t.Fatalf("token refused before any revocation: %v", err)
		}
	}

	f.apply(t, &store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeToken, Value: "revoke-me", RevokedAt: now},
		{Kind: store.RevokeDevice, Value: "d1", RevokedAt: revokedAt},
	}})
	tests := []struct {
		name string
		tok  string
		want authn.Reason // "" = accepted
	}{
		{"revoked jti", byJTI, authn.ReasonRevoked},
		{"other jti", otherJTI, ""},
		{"device token issued before revoked_at", oldDev, authn.ReasonRevoked},
		{"device token issued after revoked_at", newDev, ""},
		{"other device unaffected", oldSubj, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.auth.Token(tt.tok, authn.Possession{}, "")
			wantOutcome(t, err, tt.want)
		})
	}

	// Subject revocation: alice's tokens issued before revoked_at, for any device.
	f.apply(t, &store.Batch{
		Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: "alice", RevokedAt: revokedAt}},
		Delete:      store.Deletions{Revocations: []string{"device/d1"}},
	})
	_, err := f.auth.Token(oldSubjOwner, authn.Possession{}, "")
	wantReason(t, err, authn.ReasonRevoked)
	if _, err := f.auth.Token(newSubjOwner, authn.Possession{}, ""); err != nil {
		t.Errorf("alice's token issued after revoked_at refused: %v", err)
	}
	if _, err := f.auth.Token(oldDev, authn.Possession{}, ""); err != nil {
		t.Errorf("token of d1 (sub d1) refused after the device revocation was lifted: %v", err)
	}
}

func TestRevocationBoundary(t *testing.T) {
	// iat == revoked_at is revoked ("at or before"); one second later is not.
	iat := time.Unix(time.Now().Add(-time.Minute).Unix(), 0)
	c := &authn.Claims{ClientID: "d1", Subject: "alice", JTI: "j", IssuedAt: iat}
	for _, tt := range []struct {
		r    store.Revocation
		want bool
	}{
		{store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: iat}, true},
		{store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: iat.Add(-time.Second)}, false},
		{store.Revocation{Kind: store.RevokeDevice, Value: "d2", RevokedAt: iat}, false},
		{store.Revocation{Kind: store.RevokeSubject, Value: "alice", RevokedAt: iat.Add(time.Millisecond)}, true},
		{store.Revocation{Kind: store.RevokeSubject, Value: "alice", RevokedAt: iat.Add(-time.Millisecond)}, false},
		{store.Revocation{Kind: store.RevokeToken, Value: "j"}, true},
		{store.Revocation{Kind: store.RevokeToken, Value: "k"}, false},
		{store.Revocation{Kind: "other", Value: "j"}, false},
	} {
		if got := authn.RevocationCovers(tt.r, c); got != tt.want {
			t.Errorf("RevocationCovers(%+v) = %v, want %v", tt.r, got, tt.want)
		}
	}
}

func TestTokenProofOfPossession(t *testing.T) {
	f := newFixture(t)
	jkt := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	jktTok := f.token(t, "d1", "d1", "cnf", map[string]any{"jkt": jkt})
	x5tTok := f.token(t, "d1", "d1", "cnf", map[string]any{"x5t#S256": x5t(f.unregistered)})
	kidTok := f.token(t, "d1", "d1", "cnf", map[string]any{"kid": "psk-7"})

	tests := []struct {
		name   string
		tok    string
		cert   *x509.Certificate
		proven string
		want   authn.Reason
		psk    string
	}{
		{"jkt without proof", jktTok, nil, "", authn.ReasonPoPRequired, ""},
		{"jkt without proof, with a cert", jktTok, f.unregistered, "", authn.ReasonPoPRequired, ""},
		{"jkt with another key proven", jktTok, nil, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", authn.ReasonCnfMismatch, ""},
		{"jkt proven", jktTok, nil, jkt, "", ""},
		{"x5t with its certificate", x5tTok, f.unregistered, "", "", ""},
		{"x5t with another certificate", x5tTok, f.certA, "", authn.ReasonCnfMismatch, ""},
		{"x5t without certificate", x5tTok, nil, "", authn.ReasonPoPRequired, ""},
		{"x5t without certificate, with a jkt proof", x5tTok, nil, jkt, authn.ReasonPoPRequired, ""},
		// A device registered with a certificate cannot use another one with its token.
		{"device cert mismatch", f.token(t, "d3", "d3"), f.certB, "", authn.ReasonCnfMismatch, ""},
		{"device cert match", f.token(t, "d3", "d3"), f.certA, "", "", ""},
		// RFC 9202: bound to the DTLS PSK whose identity is cnf kid.
		{"kid over its PSK session", kidTok, nil, "", "", "psk-7"},
		{"kid over another PSK session", kidTok, nil, "", authn.ReasonCnfMismatch, "psk-8"},
		{"kid without a PSK session", kidTok, f.unregistered, jkt, authn.ReasonPoPRequired, ""},
		{"jkt over a PSK session", jktTok, nil, "", authn.ReasonPoPRequired, "psk-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := f.auth.Token(tt.tok, authn.Possession{Cert: tt.cert, JKT: tt.proven, PSKIdentity: tt.psk}, "")
			if !wantOutcome(t, err, tt.want) && tt.cert != nil && p.CertSHA256 != authn.CertFingerprint(tt.cert) {
				t.Errorf("CertSHA256 = %q, want the certificate's fingerprint", p.CertSHA256)
			}
		})
	}
}

// ---- Certificate ----

func TestCertificate(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		chain  []*x509.Certificate
		device string // want this device, or
		want   authn.Reason
	}{
		{"registered fingerprint", []*x509.Certificate{f.certA}, "d3", ""},
		{"registered fingerprint, extra chain ignored", []*x509.Certificate{f.certA, f.ca.cert}, "d3", ""},
		{"issuer and serial under a client CA", []*x509.Certificate{f.caLeaf}, "d4", ""},
		{"issuer and serial via an intermediate", []*x509.Certificate{f.interLeaf, f.inter.cert}, "d8", ""},
		{"intermediate missing from the chain", []*x509.Certificate{f.interLeaf}, "", authn.ReasonUnknownCert},
		{"unknown self-signed cert", []*x509.Certificate{f.unregistered}, "", authn.ReasonUnknownCert},
		{"CA cert not registered", []*x509.Certificate{f.caLeafUnregistered}, "", authn.ReasonUnknownCert},
		{"same issuer DN and serial from another CA", []*x509.Certificate{f.forgedLeaf}, "", authn.ReasonUnknownCert},
		{"CA cert not for client auth", []*x509.Certificate{f.caLeafServerOnly}, "", authn.ReasonUnknownCert},
		{"expired registered cert", []*x509.Certificate{f.certExpired}, "", authn.ReasonUnknownCert},
		{"suspended by fingerprint", []*x509.Certificate{f.certB}, "", authn.ReasonDeviceInactive},
		{"suspended by issuer and serial", []*x509.Certificate{f.caLeafSusp}, "", authn.ReasonDeviceInactive},
		{"no certificate", nil, "", authn.ReasonNoCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := f.auth.Certificate(tt.chain, tt.device)
			if tt.want != "" && p != nil {
				t.Errorf("principal %+v returned with a refusal", p)
			}
			if wantOutcome(t, err, tt.want) {
				return
			}
			leaf := tt.chain[0]
			if p.Device.ID != tt.device || p.Method != authn.MethodCertificate || p.Claims != nil ||
				p.CertSHA256 != authn.CertFingerprint(leaf) || !p.Expires.Equal(leaf.NotAfter) {
				t.Errorf("principal = %+v; want device %s by certificate, End %s", p, tt.device, leaf.NotAfter)
			}
			// Without a token, the class template alone applies.
			d := tt.device
			wantPublish(t, "Perms", p.Perms, map[string]bool{
				"devices/" + d + "/telemetry/x": true, "fleet/" + d + "/status": true,
				"devices/d1/telemetry/x": false, "other/topic": false,
			})
			if !p.Perms.CanSubscribe("clients/" + d + "/inbox") {
				t.Errorf("Perms.CanSubscribe(clients/%s/inbox) = false with client id %s", d, d)
			}
		})
	}
}

func TestCertificateClock(t *testing.T) {
	f := newFixture(t)
	f.auth.Now = func() time.Time { return f.certA.NotAfter.Add(time.Second) }
	_, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d3")
	wantReason(t, err, authn.ReasonUnknownCert)
	f.auth.Now = func() time.Time { return f.certA.NotBefore.Add(-time.Second) }
	_, err = f.auth.Certificate([]*x509.Certificate{f.certA}, "d3")
	wantReason(t, err, authn.ReasonUnknownCert)
	// The expired certificate is fine at a time within its validity.
	f.auth.Now = func() time.Time { return f.certExpired.NotAfter.Add(-time.Hour) }
	if p, err := f.auth.Certificate([]*x509.Certificate{f.certExpired}, "d6"); err != nil || p.Device.ID != "d6" {
		t.Errorf("certificate within its validity refused: %+v, %v", p, err)
	}
}

func TestCertificateWithoutClientCAs(t *testing.T) {
	f := newFixture(t)
	f.auth.ClientCAs = nil
	_, err := f.auth.Certificate([]*x509.Certificate{f.caLeaf}, "d4")
	wantReason(t, err, authn.ReasonUnknownCert)
	if p, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d3"); err != nil || p.Device.ID != "d3" {
		t.Errorf("fingerprint-registered certificate without client CAs: %+v, %v", p, err)
	}
}

func TestCertificateFollowsStore(t *testing.T) {
	f := newFixture(t)
	if _, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d3"); err != nil {
		t.Fatal(err)
	}
	// Suspend d3: refused. Re-register its certificate elsewhere: that device.
	f.apply(t, &store.Batch{Devices: []store.Device{{ID: "d3", Class: "sensor", Status: store.DeviceSuspended, CertSHA256: authn.CertFingerprint(f.certA)}}})
	_, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d3")
	wantReason(t, err, authn.ReasonDeviceInactive)
	f.apply(t, &store.Batch{Devices: []store.Device{
		{ID: "d3", Class: "sensor", Status: store.DeviceActive},
		{ID: "d12", Class: "sensor", Status: store.DeviceActive, CertSHA256: authn.CertFingerprint(f.certA)},
	}})
	p, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d12")
	if err != nil || p.Device.ID != "d12" {
		t.Errorf("certificate moved to d12: %+v, %v", p, err)
	}
	// Deleting the device: unknown certificate.
	f.apply(t, &store.Batch{Delete: store.Deletions{Devices: []string{"d12"}}})
	_, err = f.auth.Certificate([]*x509.Certificate{f.certA}, "d12")
	wantReason(t, err, authn.ReasonUnknownCert)
}

// TestTokenBoundCertificateValidity: a token bound to a certificate (cnf
// x5t#S256) is proven by that certificate, so it is refused outside the
// certificate's validity, and its session ends at the earlier of exp (plus
// ExpLeeway) and the certificate's NotAfter: it used to run on to exp.
func TestTokenBoundCertificateValidity(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	leaf := func(cn string, from, to time.Time) *x509.Certificate {
		return newLeaf(t, cn, 42, from, to, x509.ExtKeyUsageClientAuth, nil)
	}
	shortLived := leaf("d1", now.Add(-time.Hour), now.Add(10*time.Minute))
	longLived := leaf("d1", now.Add(-time.Hour), now.Add(48*time.Hour))
	expired := leaf("d1", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	future := leaf("d1", now.Add(time.Hour), now.Add(48*time.Hour))
	bound := func(c *x509.Certificate) string {
		return f.token(t, "d1", "d1", "cnf", map[string]any{"x5t#S256": x5t(c)})
	}

	t.Run("session ends at the certificate's NotAfter", func(t *testing.T) {
		p, err := f.auth.Token(bound(shortLived), authn.Possession{Cert: shortLived}, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if !p.Expires.Equal(shortLived.NotAfter) || !p.Expires.Before(p.Claims.Expiry) {
			t.Errorf("End = %s, want the certificate's NotAfter %s (exp is %s)", p.Expires, shortLived.NotAfter, p.Claims.Expiry)
		}
	})
	t.Run("session ends at exp when the certificate outlives it", func(t *testing.T) {
		f.auth.ExpLeeway = 5 * time.Second
		defer func() { f.auth.ExpLeeway = 0 }()
		p, err := f.auth.Token(bound(longLived), authn.Possession{Cert: longLived}, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if want := p.Claims.Expiry.Add(5 * time.Second); !p.Expires.Equal(want) {
			t.Errorf("End = %s, want exp + ExpLeeway %s", p.Expires, want)
		}
	})
	for _, tt := range []struct {
		name   string
		cert   *x509.Certificate
		want   authn.Reason
		detail string
	}{
		{"expired certificate", expired, authn.ReasonExpired, "the client certificate the token is bound to (cnf x5t#S256) expired at"},
		{"certificate not valid yet", future, authn.ReasonNotYetValid, "the client certificate the token is bound to (cnf x5t#S256) is not valid before"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := bound(tt.cert)
			p, err := f.auth.Token(tok, authn.Possession{Cert: tt.cert}, "d1")
			if p != nil {
				t.Fatalf("accepted: End %s", p.Expires)
			}
			wantReason(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.detail) || strings.Contains(err.Error(), tok) {
				t.Errorf("refusal %q does not say %q, or repeats the token", err, tt.detail)
			}
			if !tt.want.BadCredentials() {
				t.Errorf("%s is not a bad-credentials reason (0x86)", tt.want)
			}
		})
	}
	t.Run("the authenticator's clock decides", func(t *testing.T) {
		tok := bound(shortLived)
		f.auth.Now = func() time.Time { return shortLived.NotAfter.Add(time.Second) }
		defer func() { f.auth.Now = nil }()
		_, err := f.auth.Token(tok, authn.Possession{Cert: shortLived}, "d1")
		wantReason(t, err, authn.ReasonExpired)
		f.auth.Now = func() time.Time { return shortLived.NotAfter.Add(-time.Second) }
		if _, err := f.auth.Token(tok, authn.Possession{Cert: shortLived}, "d1"); err != nil {
			t.Errorf("a second before NotAfter: %v", err)
		}
	})
	t.Run("CredentialEnd", func(t *testing.T) {
		c := &authn.Claims{Expiry: now.Add(time.Hour)}
		for _, tt := range []struct {
			name string
			c    *authn.Claims
			cert *x509.Certificate
			want time.Time
		}{
			{"token only", c, nil, c.Expiry},
			{"certificate only", nil, shortLived, shortLived.NotAfter},
			{"certificate first", c, shortLived, shortLived.NotAfter},
			{"exp first", c, longLived, c.Expiry},
			{"neither", nil, nil, time.Time{}},
		} {
			if got := f.auth.CredentialEnd(tt.c, tt.cert); !got.Equal(tt.want) {
				t.Errorf("%s: CredentialEnd = %s, want %s", tt.name, got, tt.want)
			}
		}
	})
}

// TestRevalidateRevokedTokenSession: a live token session re-checked after
// a store change (Revalidate) ends when a revocation covers its token: by
// jti, or by device or subject for a token issued at or before revoked_at.
// A certificate session (no claims) is not decided by revocations here:
// the gateway ends it on a device revocation, and its device's status
// decides new connects.
func TestRevalidateRevokedTokenSession(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	iat := now.Add(-time.Hour).Truncate(time.Second)
	session := func(sub string) *authn.Claims {
		t.Helper()
		p, err := f.auth.Token(f.token(t, "d1", sub, "iat", iat.Unix(), "exp", now.Add(time.Hour).Unix(), "jti", "j-"+sub), authn.Possession{}, "d1")
		if err != nil {
			t.Fatal(err)
		}
		return p.Claims
	}
	own, owners := session("d1"), session("alice")
	cert, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d3")
	if err != nil {
		t.Fatal(err)
	}
	revalidate := func(device string, c *authn.Claims) error {
		_, _, err := f.auth.Revalidate(device, c, device)
		return err
	}
	for _, c := range []*authn.Claims{own, owners} {
		if err := revalidate("d1", c); err != nil {
			t.Fatalf("before any revocation: %v", err)
		}
	}

	tests := []struct {
		name       string
		r          store.Revocation
		own, owner authn.Reason // "" = the session goes on
	}{
		{"device, revoked after iat", store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: now}, authn.ReasonRevoked, authn.ReasonRevoked},
		{"device, revoked at iat", store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: iat}, authn.ReasonRevoked, authn.ReasonRevoked},
		{"device, revoked before iat", store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: iat.Add(-time.Second)}, "", ""},
		{"another device", store.Revocation{Kind: store.RevokeDevice, Value: "d11", RevokedAt: now}, "", ""},
		{"subject alice", store.Revocation{Kind: store.RevokeSubject, Value: "alice", RevokedAt: now}, "", authn.ReasonRevoked},
		{"subject d1", store.Revocation{Kind: store.RevokeSubject, Value: "d1", RevokedAt: now}, authn.ReasonRevoked, ""},
		{"jti of the device's own token", store.Revocation{Kind: store.RevokeToken, Value: "j-d1", RevokedAt: now}, authn.ReasonRevoked, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.ExpiresAt = now.Add(3 * time.Hour)
			f.apply(t, &store.Batch{Revocations: []store.Revocation{tt.r}})
			defer f.apply(t, &store.Batch{Delete: store.Deletions{Revocations: []string{string(tt.r.Kind) + "/" + tt.r.Value}}})
			for _, s := range []struct {
				c    *authn.Claims
				want authn.Reason
			}{{own, tt.own}, {owners, tt.owner}} {
				err := revalidate("d1", s.c)
				if s.want == "" {
					if err != nil {
						t.Errorf("session of sub %s ended: %v", s.c.Subject, err)
					}
					continue
				}
				wantReason(t, err, s.want)
			}
			// A certificate session carries no token: revocations are not
			// Revalidate's to apply to it.
			if _, _, err := f.auth.Revalidate("d3", nil, "d3"); err != nil {
				t.Errorf("certificate session of d3: %v", err)
			}
		})
	}
	if cert.Device.ID != "d3" {
		t.Fatalf("certificate session is for %s", cert.Device.ID)
	}
	// After every revocation was lifted, both token sessions go on.
	for _, c := range []*authn.Claims{own, owners} {
		if err := revalidate("d1", c); err != nil {
			t.Errorf("after the revocations were lifted: %v", err)
		}
	}
}
