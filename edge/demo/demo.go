// Package demo makes the embedded default of `edgeid serve --demo`: a local
// token issuer with its own key, device classes, demo devices, certificates,
// and the tokens to connect them. Tests use the same issuer to mint tokens.
package demo

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Issuer is a token issuer with one signing key.
type Issuer struct {
	URL string
	Kid string
	Alg jwa.SignatureAlgorithm
	Key jwk.Key // private
}

// NewIssuer makes an issuer with a fresh ES256 key.
func NewIssuer(url, kid string) (*Issuer, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return IssuerFromKey(url, kid, jwa.ES256(), priv)
}

// IssuerFromKey wraps an existing private key.
func IssuerFromKey(url, kid string, alg jwa.SignatureAlgorithm, priv crypto.Signer) (*Issuer, error) {
	k, err := jwk.Import(priv)
	if err != nil {
		return nil, err
	}
	if err := k.Set(jwk.KeyIDKey, kid); err != nil {
		return nil, err
	}
	if err := k.Set(jwk.AlgorithmKey, alg); err != nil {
		return nil, err
	}
	return &Issuer{URL: url, Kid: kid, Alg: alg, Key: k}, nil
}

// JWKS is the issuer's public key set.
func (i *Issuer) JWKS() (store.JWKS, error) {
	pub, err := i.Key.PublicKey()
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	return json.Marshal(set)
}

// Record is the issuer as a store record.
func (i *Issuer) Record() (store.Issuer, error) {
	j, err := i.JWKS()
	return store.Issuer{Issuer: i.URL, JWKS: j}, err
}

// Claims builds the usual RFC 9068 claims for a device token.
func (i *Issuer) Claims(device, subject, aud, scope string, ttl time.Duration) map[string]any {
	now := time.Now()
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	return map[string]any{
		"iss": i.URL, "sub": subject, "aud": aud, "client_id": device, "scope": scope,
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(), "jti": base64.RawURLEncoding.EncodeToString(jti),
	}
}

// Mint signs claims as an at+jwt with the issuer's key. Extra protected
// headers (for tests of bad headers) may be given.
func (i *Issuer) Mint(claims map[string]any, headers map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.TypeKey, "at+jwt")
	_ = h.Set(jws.KeyIDKey, i.Kid)
	for k, v := range headers {
		if err := h.Set(k, v); err != nil {
			return "", err
		}
	}
	tok, err := jws.Sign(payload, jws.WithKey(i.Alg, i.Key, jws.WithProtectedHeaders(h)))
	return string(tok), err
}

// Classes are the demo device classes.
func Classes() []store.DeviceClass {
	return []store.DeviceClass{
		{Name: "thermostat", Description: "room thermostat", Permissions: []policy.Rule{
			{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
			{Filter: "devices/{device}/commands/#", Actions: policy.Subscribe},
			{Filter: "devices/{device}/status", Actions: policy.Publish | policy.Subscribe},
			{Filter: "firmware/thermostat/#", Actions: policy.Subscribe},
			{Filter: "owners/{owner}/alerts", Actions: policy.Publish},
		}, Resources: []store.ResourceGroup{
			// What an owner can share of each thermostat (UMA resources).
			{Name: "telemetry", Description: "temperature and humidity readings", Filter: "devices/{device}/telemetry/#", Scopes: []string{store.ScopeSub}},
			{Name: "status", Description: "online and mode", Filter: "devices/{device}/status", Scopes: []string{store.ScopeSub}},
			{Name: "commands", Description: "set the target temperature", Filter: "devices/{device}/commands/#", Scopes: []string{store.ScopePub}},
		}},
		// A requesting party's client: a person's app or a third-party
		// service registered to receive what owners share with it. It has
		// no topics of its own; it gets what a requesting party token
		// (UMA RPT) presents of the shares made to it.
		{Name: "app", Description: "an app or service that owners share with", Permissions: []policy.Rule{}},
		{Name: "service", Description: "manufacturer's cloud service", Permissions: []policy.Rule{
			{Filter: "devices/+/telemetry/#", Actions: policy.Subscribe},
			{Filter: "devices/+/commands/#", Actions: policy.Publish},
			{Filter: "firmware/#", Actions: policy.Publish},
		}},
		// The cloud bridge's principal (bridge:<remote>): what the cloud may
		// receive (subscribe) and send in (publish). A leaked cloud
		// credential can command devices, not write their telemetry.
		{Name: "bridge", Description: "cloud bridge", Permissions: []policy.Rule{
			{Filter: "devices/+/telemetry/#", Actions: policy.Subscribe},
			{Filter: "devices/+/status", Actions: policy.Subscribe},
			{Filter: "devices/+/commands/#", Actions: policy.Publish},
		}},
	}
}

// Files are the demo's TLS material, written under a directory.
type Files struct {
	CACert, ServerCert, ServerKey, DeviceCert, DeviceKey string
	DeviceFingerprint                                    string
}

// WriteTLS makes a demo CA, a server certificate for localhost and a device
// certificate, and writes them as PEM files under dir.
func WriteTLS(dir, deviceCN string) (Files, error) {
	f := Files{
		CACert: filepath.Join(dir, "ca.crt"), ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		DeviceCert: filepath.Join(dir, deviceCN+".crt"), DeviceKey: filepath.Join(dir, deviceCN+".key"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, err
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "EdgeID demo CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(cn string, serial int64, server bool, certPath, keyPath string) ([]byte, error) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature}
		if server {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			t.DNSNames = []string{"localhost"}
			t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
		} else {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		kb, _ := x509.MarshalPKCS8PrivateKey(k)
		if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return nil, err
		}
		return der, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	}
	if err := os.WriteFile(f.CACert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return f, err
	}
	if _, err := issue("localhost", 2, true, f.ServerCert, f.ServerKey); err != nil {
		return f, err
	}
	der, err := issue(deviceCN, 3, false, f.DeviceCert, f.DeviceKey)
	if err != nil {
		return f, err
	}
	sum := sha256.Sum256(der)
	f.DeviceFingerprint = hex.EncodeToString(sum[:])
	return f, nil
}

// Bundle is the demo batch: classes, the issuer, a thermostat connecting with
// a token, a thermostat connecting with its certificate, and a service.
func Bundle(iss *Issuer, certFingerprint string) (*store.Batch, error) {
	rec, err := iss.Record()
	if err != nil {
		return nil, err
	}
	return &store.Batch{
		Classes: Classes(),
		Issuers: []store.Issuer{rec},
		Users:   []store.User{{ID: "alice", Name: "Alice", Status: store.UserActive}},
		Devices: []store.Device{
			{ID: "thermo-1", Serial: "TH-0001", Class: "thermostat", Owner: "alice", Status: store.DeviceActive},
			{ID: "thermo-2", Serial: "TH-0002", Class: "thermostat", Owner: "alice", Status: store.DeviceActive, CertSHA256: certFingerprint},
			{ID: "acme-cloud", Class: "service", Status: store.DeviceActive},
		},
	}, nil
}

// Scope grants everything a class template allows, as token scope.
func Scope(class store.DeviceClass, device, owner string) string {
	rules, _ := policy.Expand(class.Permissions, policy.Vars{Device: device, Owner: owner, Client: device})
	return policy.FormatScope(rules)
}

// Describe is a short line naming a demo file set (for the banner).
func (f Files) Describe() string { return fmt.Sprintf("CA %s", f.CACert) }
