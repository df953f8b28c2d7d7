package authority_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// factoryCert is a self-signed client certificate valid from notBefore to
// notAfter, as a TLS client presents it, and its hex SHA-256 fingerprint.
func factoryCert(t *testing.T, cn string, notBefore, notAfter time.Time) (tls.Certificate, *x509.Certificate, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: c}, c, hex.EncodeToString(sum[:])
}

// callHome registers dev-1 with the certificate's fingerprint and asks for
// a token over mutual TLS with it.
func (f *fixture) callHome(cert tls.Certificate, fp string) (int, string) {
	f.t.Helper()
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: fp}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		f.t.Fatalf("import: %d %s", code, body)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"dev-1"}}.Encode()
	return f.do("POST", "/oauth/token", "", "application/x-www-form-urlencoded", form, &cert)
}

// TestCallHomeRefusesCertificateOutsideValidity: the token endpoint only
// requests a client certificate (the TLS layer checks no dates), and issued
// a token for a factory certificate that had expired a day earlier. It is
// invalid_client now, with the reason logged and no secret.
func TestCallHomeRefusesCertificateOutsideValidity(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		name     string
		from, to time.Time
		logged   string
	}{
		{"expired a day ago", now.Add(-365 * 24 * time.Hour), now.Add(-24 * time.Hour), "certificate expired at"},
		{"not valid yet", now.Add(time.Hour), now.Add(365 * 24 * time.Hour), "certificate not valid before"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.classes()
			cert, _, fp := factoryCert(t, "dev-1", tt.from, tt.to)
			code, body := f.callHome(cert, fp)
			if code != 401 || !strings.Contains(body, `"invalid_client"`) || strings.Contains(body, "access_token") {
				t.Fatalf("call home: %d %s; want 401 invalid_client", code, body)
			}
			logs := f.logs.String()
			if !strings.Contains(logs, "client authentication refused") || !strings.Contains(logs, tt.logged) {
				t.Errorf("refusal not logged with its reason %q:\n%s", tt.logged, logs)
			}
			der := base64.StdEncoding.EncodeToString(cert.Certificate[0])
			if strings.Contains(logs, der[:40]) || strings.Contains(logs, adminToken) {
				t.Error("the log holds the certificate or a secret")
			}
		})
	}
}

// TestCallHomeTokenEndsWithCertificate: a token bound to the factory
// certificate (cnf x5t#S256) expires no later than the certificate, and
// expires_in says so; a certificate that outlives the TTL leaves the TTL.
func TestCallHomeTokenEndsWithCertificate(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		name     string
		notAfter time.Time
		capped   bool
	}{
		{"certificate ends in 10 minutes", now.Add(10 * time.Minute), true},
		{"certificate ends in a year", now.Add(365 * 24 * time.Hour), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t) // TokenTTL 1h
			f.classes()
			cert, leaf, fp := factoryCert(t, "dev-1", now.Add(-time.Hour), tt.notAfter)
			code, body := f.callHome(cert, fp)
			var tr authority.TokenResponse
			if code != 200 || json.Unmarshal([]byte(body), &tr) != nil {
				t.Fatalf("call home: %d %s", code, body)
			}
			parts := strings.Split(tr.AccessToken, ".")
			raw, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				t.Fatal(err)
			}
			var claims struct {
				Iat, Exp int64
				Cnf      map[string]string
			}
			if err := json.Unmarshal(raw, &claims); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(leaf.Raw)
			if claims.Cnf["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
				t.Fatalf("token not bound to the certificate: cnf %v", claims.Cnf)
			}
			if claims.Exp > leaf.NotAfter.Unix() {
				t.Errorf("exp %s is after the certificate's NotAfter %s", time.Unix(claims.Exp, 0).UTC(), leaf.NotAfter.UTC())
			}
			wantExp := claims.Iat + 3600
			if tt.capped {
				wantExp = leaf.NotAfter.Unix()
			}
			if claims.Exp != wantExp || int64(tr.ExpiresIn) != claims.Exp-claims.Iat {
				t.Errorf("exp %d, expires_in %d; want exp %d and expires_in exp - iat (%d)", claims.Exp, tr.ExpiresIn, wantExp, claims.Exp-claims.Iat)
			}
		})
	}
}

// TestPairedTokenEndsWithCertificate: a device that pairs (RFC 8628) and
// refreshes over mutual TLS gets tokens bound to its certificate that
// expire no later than the certificate, as call-home tokens do.
func TestPairedTokenEndsWithCertificate(t *testing.T) {
	f := newFixture(t) // TokenTTL 1h
	f.classes()
	cert, leaf, fp := factoryCert(t, "dev-1", time.Now().Add(-time.Hour), time.Now().Add(10*time.Minute))
	if code, body := f.callHome(cert, fp); code != 200 { // registers dev-1 with the fingerprint
		t.Fatalf("call home: %d %s", code, body)
	}
	form := url.Values{"client_id": {"dev-1"}}.Encode()
	code, body := f.do("POST", "/oauth/device_authorization", "", "application/x-www-form-urlencoded", form, &cert)
	var da authority.DeviceAuthorization
	if code != 200 || json.Unmarshal([]byte(body), &da) != nil {
		t.Fatalf("device authorization: %d %s", code, body)
	}
	if err := f.a.DecidePairing(da.UserCode, "alice", true); err != nil {
		t.Fatal(err)
	}
	check := func(what string, code int, body string) authority.TokenResponse {
		t.Helper()
		var tr authority.TokenResponse
		if code != 200 || json.Unmarshal([]byte(body), &tr) != nil {
			t.Fatalf("%s: %d %s", what, code, body)
		}
		claims := decodeClaims(t, tr.AccessToken)
		exp, iat := int64(claims["exp"].(float64)), int64(claims["iat"].(float64))
		if exp != leaf.NotAfter.Unix() || int64(tr.ExpiresIn) != exp-iat {
			t.Errorf("%s: exp %d expires_in %d; want exp = the certificate's NotAfter %d and expires_in exp - iat", what, exp, tr.ExpiresIn, leaf.NotAfter.Unix())
		}
		return tr
	}
	code, body = f.do("POST", "/oauth/token", "", "application/x-www-form-urlencoded", url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "client_id": {"dev-1"}, "device_code": {da.DeviceCode}}.Encode(), &cert)
	tr := check("device code poll", code, body)
	code, body = f.do("POST", "/oauth/token", "", "application/x-www-form-urlencoded", url.Values{
		"grant_type": {"refresh_token"}, "client_id": {"dev-1"}, "refresh_token": {tr.RefreshToken}}.Encode(), &cert)
	check("refresh", code, body)
}
