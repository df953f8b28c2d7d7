package edge_test

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
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/store"
)

// clientCert is a self-signed TLS client certificate valid from notBefore to notAfter.
func clientCert(t *testing.T, cn string, notBefore, notAfter time.Time) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, leaf
}

// session is the live MQTT session of client id, or nil.
func (g *gw) session(clientID string) *broker.Session {
	for _, s := range g.g.Broker.Sessions.All() {
		if s.ClientID == clientID {
			return s
		}
	}
	return nil
}

// TestAuthnCertBoundTokenEndsWithCertificate: a token bound to a TLS client
// certificate (cnf x5t#S256) used to keep its session past the
// certificate's NotAfter, until the token's exp. The session now ends at
// NotAfter, and once the certificate has expired the token is refused.
func TestAuthnCertBoundTokenEndsWithCertificate(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	cert, leaf := clientCert(t, "thermo-2", time.Now().Add(-time.Hour), time.Now().Add(3*time.Second))
	fp := sha256.Sum256(leaf.Raw)
	if _, err := g.importJSON(store.Batch{Devices: []store.Device{{ID: "thermo-2", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, CertSHA256: hex.EncodeToString(fp[:])}}}); err != nil {
		t.Fatal(err)
	}
	bound := g.token("thermo-2", "alice", func(c map[string]any) {
		c["cnf"] = map[string]any{"x5t#S256": base64.RawURLEncoding.EncodeToString(fp[:])}
	})
	dev := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "thermo-2", token: bound})
	s := g.session("thermo-2")
	if s == nil {
		t.Fatal("no session for thermo-2")
	}
	if !s.Expires.Equal(leaf.NotAfter) {
		t.Errorf("session End = %s, want the certificate's NotAfter %s (the token's exp is an hour later)", s.Expires, leaf.NotAfter)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Errorf("DISCONNECT %s when the certificate expired, want 0x87", hexCode(code))
	}
	// The certificate has expired: the same token and certificate are refused.
	for time.Now().Before(leaf.NotAfter.Add(time.Second)) {
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := g.connect(connOpts{tls: true, cert: &cert, clientID: "thermo-2", token: bound}); code != 0x86 {
		t.Errorf("bound token with its expired certificate: CONNACK %s, want 0x86", hexCode(code))
	}
	if logs := g.logs.String(); !strings.Contains(logs, "reason=expired") || !strings.Contains(logs, "the client certificate the token is bound to (cnf x5t#S256) expired at") ||
		strings.Contains(logs, bound) {
		t.Errorf("refusal not logged with reason and detail, or the log holds the token:\n%s", logs)
	}
}

// TestAuthnTokenExpGetsNoClockSkew: auth.clock_skew used to extend exp (a
// subscriber kept receiving for the skew after its token expired). It now
// applies to nbf and iat only: the session ends at exp, and a token past
// its exp is refused whatever the skew.
func TestAuthnTokenExpGetsNoClockSkew(t *testing.T) {
	g := startGateway(t, func(c *configT) { c.Auth.ClockSkew = 30 * time.Second })
	exp := time.Now().Add(time.Hour).Unix()
	tok := g.token("thermo-1", "alice", func(c map[string]any) { c["exp"] = exp })
	g.mustConnect(connOpts{clientID: "thermo-1", token: tok})
	if s := g.session("thermo-1"); s == nil || !s.Expires.Equal(time.Unix(exp, 0)) {
		t.Errorf("session %+v: want End at exp %s exactly", s, time.Unix(exp, 0).UTC())
	}
	expired := g.token("thermo-1", "alice", func(c map[string]any) {
		c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-5*time.Second).Unix()
	})
	if code, _ := g.connect(connOpts{clientID: "thermo-1", token: expired}); code != 0x86 {
		t.Errorf("token expired 5 s ago, clock_skew 30s: CONNACK %s, want 0x86", hexCode(code))
	}
	// The skew still covers an issuer clock ahead of ours.
	ahead := g.token("thermo-1", "alice", func(c map[string]any) {
		c["iat"], c["nbf"] = time.Now().Add(10*time.Second).Unix(), time.Now().Add(10*time.Second).Unix()
	})
	if code, _ := g.connect(connOpts{clientID: "thermo-1", token: ahead}); code != 0 {
		t.Errorf("token with iat and nbf 10 s ahead, clock_skew 30s: CONNACK %s, want success", hexCode(code))
	}
}

// TestAuthnNonCanonicalTokensRefusedAtConnect: what Verify now refuses is
// refused at CONNECT (0x86) and logged with its reason, never the token.
func TestAuthnNonCanonicalTokensRefusedAtConnect(t *testing.T) {
	g := startGateway(t)
	good := g.token("thermo-1", "alice", nil)
	p := strings.Split(good, ".")
	for _, tt := range []struct {
		name, token, reason string
	}{
		{"CRLF inside the payload", p[0] + "." + p[1][:20] + "\r\n" + p[1][20:] + "." + p[2], "malformed"},
		{"padded signature", good + "==", "malformed"},
		{"exp as a string", g.token("thermo-1", "alice", func(c map[string]any) {
			c["exp"] = strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
		}), "bad_claims"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if code, _ := g.connect(connOpts{clientID: "thermo-1", token: tt.token}); code != 0x86 {
				t.Errorf("CONNACK %s, want 0x86", hexCode(code))
			}
			logs := g.logs.String()
			if !strings.Contains(logs, "reason="+tt.reason) || strings.Contains(logs, p[2]) {
				t.Errorf("refusal not logged with reason %s, or the log holds the token", tt.reason)
			}
		})
	}
	g.mustConnect(connOpts{clientID: "thermo-1", token: good})
}
