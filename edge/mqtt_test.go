package edge_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// unsigned builds an alg=none token.
func unsigned(claims map[string]any, kid string) string {
	return b64(map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}) + "." + b64(claims) + "."
}

// hmacWithPublicKey is the key-confusion attack: HS256 keyed with the
// issuer's public key, which an attacker knows.
func hmacWithPublicKey(t *testing.T, iss *demo.Issuer, claims map[string]any) string {
	pub, err := iss.Key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pubJSON, _ := json.Marshal(pub)
	secret := pubJSON
	in := b64(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": iss.Kid}) + "." + b64(claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestTokenConnectAndACL(t *testing.T) {
	g := startGateway(t)
	for _, method := range []string{"ace", "password"} {
		t.Run(method, func(t *testing.T) {
			dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil), method: method})
			if code := dev.publish(t, "devices/thermo-1/telemetry/temp", "21", 1); code != 0 {
				t.Errorf("allowed publish: PUBACK %s", hexCode(code))
			}
			if code := dev.publish(t, "devices/thermo-2/telemetry/temp", "21", 1); code != 0x87 {
				t.Errorf("publish to another device's topic: PUBACK %s, want 0x87", hexCode(code))
			}
			if code := dev.publish(t, "devices/thermo-1/commands/set", "x", 1); code != 0x87 {
				t.Errorf("publish on a subscribe-only topic: PUBACK %s, want 0x87", hexCode(code))
			}
			got := dev.subscribe(t,
				"devices/thermo-1/commands/#",     // exactly the granted filter
				"devices/thermo-1/commands/+/set", // a subset
				"devices/+/commands/#",            // wider: refused
				"devices/thermo-1/#",              // wider: refused
				"#",                               // refused
				"devices/thermo-1/telemetry/temp", // publish-only: refused
			)
			want := []byte{1, 1, 0x87, 0x87, 0x87, 0x87}
			if string(got) != string(want) {
				t.Errorf("SUBACK reasons %x, want %x", got, want)
			}
			_ = dev.c.Disconnect(&paho.Disconnect{})
		})
	}
}

func TestDeliveryAcrossClients(t *testing.T) {
	g := startGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	if r := svc.subscribe(t, "devices/+/telemetry/#"); r[0] != 1 {
		t.Fatalf("service subscribe: %x", r)
	}
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	dev.publish(t, "devices/thermo-1/telemetry/temp", "21.5", 1)
	svc.expectMsg(t, "devices/thermo-1/telemetry/temp", "21.5")
	if r := dev.subscribe(t, "devices/thermo-1/commands/#"); r[0] != 1 {
		t.Fatalf("device subscribe: %x", r)
	}
	svc.publish(t, "devices/thermo-1/commands/set", "22", 1)
	dev.expectMsg(t, "devices/thermo-1/commands/set", "22")
}

func TestEffectiveRightIsClassAndScope(t *testing.T) {
	g := startGateway(t)
	// The token grants only telemetry/temp; the class allows telemetry/#.
	narrow := g.token("thermo-1", "alice", func(c map[string]any) {
		c["scope"] = "publish:devices/thermo-1/telemetry/temp publish:devices/thermo-2/telemetry/temp"
	})
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: narrow})
	if code := dev.publish(t, "devices/thermo-1/telemetry/temp", "1", 1); code != 0 {
		t.Errorf("allowed by both: %s", hexCode(code))
	}
	if code := dev.publish(t, "devices/thermo-1/telemetry/humidity", "1", 1); code != 0x87 {
		t.Errorf("allowed by class only: %s, want 0x87", hexCode(code))
	}
	if code := dev.publish(t, "devices/thermo-2/telemetry/temp", "1", 1); code != 0x87 {
		t.Errorf("allowed by scope only: %s, want 0x87", hexCode(code))
	}
}

func TestBadTokensRefused(t *testing.T) {
	g := startGateway(t)
	other, err := demo.NewIssuer("https://issuer.test", "k1") // same kid, another key
	if err != nil {
		t.Fatal(err)
	}
	base := func() map[string]any {
		var scope string
		for _, c := range demo.Classes() {
			if c.Name == "thermostat" {
				scope = demo.Scope(c, "thermo-1", "alice")
			}
		}
		return g.iss.Claims("thermo-1", "alice", "edgeid", scope, time.Hour)
	}
	mint := func(mod func(map[string]any)) string {
		c := base()
		if mod != nil {
			mod(c)
		}
		tok, err := g.iss.Mint(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	revokedJTI := "revoked-jti-1"
	if _, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: revokedJTI, RevokedAt: time.Now(), ExpiresAt: time.Now().Add(2 * time.Hour)}}}, nil); err != nil {
		t.Fatal(err)
	}
	good := mint(nil)
	parts := strings.Split(good, ".")
	tampered := func() string {
		c := base()
		c["scope"] = "publish:# subscribe:#"
		return parts[0] + "." + b64(c) + "." + parts[2]
	}()
	otherKey, _ := other.Mint(base(), nil)
	stranger, err := demo.NewIssuer("https://issuer.test", "k-unknown")
	if err != nil {
		t.Fatal(err)
	}
	unknownKid, _ := stranger.Mint(base(), nil)
	cases := []struct {
		name, clientID, token, reason string
		code                          byte
	}{
		{"alg none", "thermo-1", unsigned(base(), "k1"), "bad_header", 0x86},
		{"HS256 keyed with the public key", "thermo-1", hmacWithPublicKey(t, g.iss, base()), "bad_header", 0x86},
		{"unknown kid", "thermo-1", unknownKid, "unknown_key", 0x86},
		{"tampered payload", "thermo-1", tampered, "bad_signature", 0x86},
		{"signed by another key", "thermo-1", otherKey, "bad_signature", 0x86},
		{"expired", "thermo-1", mint(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), "expired", 0x86},
		{"not yet valid", "thermo-1", mint(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), "not_yet_valid", 0x86},
		{"wrong iss", "thermo-1", mint(func(c map[string]any) { c["iss"] = "https://evil.test" }), "wrong_issuer", 0x86},
		{"wrong aud", "thermo-1", mint(func(c map[string]any) { c["aud"] = "another-gateway" }), "wrong_audience", 0x86},
		{"revoked jti", "thermo-1", mint(func(c map[string]any) { c["jti"] = revokedJTI }), "revoked", 0x87},
		{"unknown device", "ghost-1", mint(func(c map[string]any) { c["client_id"] = "ghost-1" }), "unknown_device", 0x87},
		{"suspended device", "thermo-3", mint(func(c map[string]any) { c["client_id"] = "thermo-3" }), "device_inactive", 0x87},
		{"oversized", "thermo-1", mint(func(c map[string]any) { c["pad"] = strings.Repeat("x", 9000) }), "oversized", 0x86},
		{"not a JWT", "thermo-1", "hello", "malformed", 0x86},
		{"acting for a stranger", "thermo-1", mint(func(c map[string]any) { c["sub"] = "mallory" }), "subject_mismatch", 0x87},
		{"bound to a key without proof", "thermo-1", mint(func(c map[string]any) {
			c["cnf"] = map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
		}), "pop_required", 0x87},
		{"client id of another device", "thermo-2", good, "client_id_mismatch", 0x85},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _ := g.connect(connOpts{clientID: tc.clientID, token: tc.token})
			if code != tc.code {
				t.Errorf("CONNACK %s, want %s", hexCode(code), hexCode(tc.code))
			}
			if !strings.Contains(g.logs.String(), "reason="+tc.reason) {
				t.Errorf("log has no reason=%s", tc.reason)
			}
		})
	}
	// The token itself never reaches the log.
	for _, tc := range cases {
		if len(tc.token) > 20 && strings.Contains(g.logs.String(), tc.token) {
			t.Errorf("%s: token appears in the log", tc.name)
		}
	}
	if code, _ := g.connect(connOpts{clientID: "thermo-1", token: good, method: "SCRAM-SHA-1"}); code != 0x8C {
		t.Errorf("unknown auth method: CONNACK %s, want 0x8c", hexCode(code))
	}
	if code, _ := g.connect(connOpts{clientID: "thermo-1"}); code != 0x87 {
		t.Errorf("no credentials: CONNACK %s, want 0x87", hexCode(code))
	}
}

func TestWillTopicChecked(t *testing.T) {
	g := startGateway(t)
	tok := g.token("thermo-1", "alice", nil)
	code, _ := g.connect(connOpts{clientID: "thermo-1", token: tok, will: &paho.WillMessage{Topic: "devices/thermo-2/status", Payload: []byte("gone")}})
	if code != 0x87 {
		t.Fatalf("forbidden will topic: CONNACK %s, want 0x87", hexCode(code))
	}
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	svc.subscribe(t, "devices/+/telemetry/#")

	// An allowed Will is published when the connection drops.
	will := &paho.WillMessage{Topic: "devices/thermo-1/telemetry/will", Payload: []byte("lost"), QoS: 1}
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: tok, will: will})
	dev.conn.Close()
	svc.expectMsg(t, "devices/thermo-1/telemetry/will", "lost")

	// A kicked session's Will is not: the device was cut off for a reason.
	dev = g.mustConnect(connOpts{clientID: "thermo-1", token: tok, will: will})
	if r, err := g.admin().Kick(context.Background(), admin.KickRequest{Device: "thermo-1"}); err != nil || r.Kicked != 1 {
		t.Fatalf("kick: %+v %v", r, err)
	}
	dev.expectDisconnect(t)
	dev = g.mustConnect(connOpts{clientID: "thermo-1", token: tok})
	dev.publish(t, "devices/thermo-1/telemetry/temp", "marker", 1)
	svc.expectNoMsgBefore(t, "devices/thermo-1/telemetry/will", "devices/thermo-1/telemetry/temp", "marker")
}

func TestCertificateAuth(t *testing.T) {
	g := startGateway(t)
	cert, err := tls.LoadX509KeyPair(g.files.DeviceCert, g.files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	dev := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "thermo-2"})
	if code := dev.publish(t, "devices/thermo-2/telemetry/temp", "19", 1); code != 0 {
		t.Errorf("publish: %s", hexCode(code))
	}
	if code := dev.publish(t, "devices/thermo-1/telemetry/temp", "19", 1); code != 0x87 {
		t.Errorf("publish as another device: %s, want 0x87", hexCode(code))
	}
	// No certificate and no token.
	if code, _ := g.connect(connOpts{tls: true, clientID: "thermo-2"}); code != 0x87 {
		t.Errorf("no credential over TLS: %s, want 0x87", hexCode(code))
	}
	// A certificate the store does not know.
	files2, err := demo.WriteTLS(t.TempDir(), "thermo-2")
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := tls.LoadX509KeyPair(files2.DeviceCert, files2.DeviceKey)
	if code, _ := g.connect(connOpts{tls: true, cert: &stranger, clientID: "thermo-2"}); code != 0x86 {
		t.Errorf("unknown certificate: %s, want 0x86", hexCode(code))
	}
	// Suspending the device cuts the certificate session, like a token session.
	if _, err := g.importJSON(store.Batch{Devices: []store.Device{{ID: "thermo-2", Class: "thermostat", Owner: "alice", Status: store.DeviceSuspended, CertSHA256: g.files.DeviceFingerprint}}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Errorf("DISCONNECT %s, want 0x87", hexCode(code))
	}
	if code, _ := g.connect(connOpts{tls: true, cert: &cert, clientID: "thermo-2"}); code != 0x87 {
		t.Errorf("suspended certificate device: %s, want 0x87", hexCode(code))
	}
}

func TestCertificateBoundToken(t *testing.T) {
	g := startGateway(t)
	cert, err := tls.LoadX509KeyPair(g.files.DeviceCert, g.files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	sum := sha256.Sum256(leaf.Raw)
	bound := g.token("thermo-2", "alice", func(c map[string]any) {
		c["cnf"] = map[string]any{"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}
	})
	g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "thermo-2", token: bound})
	// The same token as a bearer copy, without the certificate.
	if code, _ := g.connect(connOpts{tls: true, clientID: "thermo-2", token: bound}); code != 0x87 {
		t.Errorf("bound token without its certificate: %s, want 0x87", hexCode(code))
	}
	if code, _ := g.connect(connOpts{clientID: "thermo-2", token: bound}); code != 0x87 {
		t.Errorf("bound token over plain TCP: %s, want 0x87", hexCode(code))
	}
}

func TestTokenExpiryEndsSession(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	short := g.token("thermo-1", "alice", func(c map[string]any) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: short})
	dev.subscribe(t, "devices/thermo-1/commands/#")
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Fatalf("DISCONNECT %s at expiry, want 0x87", hexCode(code))
	}
	svc.publish(t, "devices/thermo-1/commands/set", "after-expiry", 1)
	select {
	case m := <-dev.msgs:
		if string(m.Payload) == "after-expiry" {
			t.Fatal("expired session received a message")
		}
	case <-time.After(300 * time.Millisecond):
	}
}

func TestKickAndRevocation(t *testing.T) {
	g := startGateway(t)
	ctx := context.Background()

	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	r, err := g.admin().Kick(ctx, admin.KickRequest{Device: "thermo-1"})
	if err != nil || r.Kicked != 1 {
		t.Fatalf("kick: %+v %v", r, err)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Errorf("kick DISCONNECT %s, want 0x87", hexCode(code))
	}

	// Revocation by jti, imported while connected.
	tok := g.token("thermo-1", "alice", func(c map[string]any) { c["jti"] = "jti-to-revoke" })
	dev = g.mustConnect(connOpts{clientID: "thermo-1", token: tok})
	now := time.Now()
	if _, err := g.importJSON(store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "jti-to-revoke", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Errorf("revocation DISCONNECT %s, want 0x87", hexCode(code))
	}
	if code, _ := g.connect(connOpts{clientID: "thermo-1", token: tok}); code != 0x87 {
		t.Errorf("revoked token reconnect: %s, want 0x87", hexCode(code))
	}

	// Revocation of every token of a subject issued so far; a newer token works.
	dev = g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", func(c map[string]any) { c["iat"] = time.Now().Add(-time.Minute).Unix() })})
	if _, err := g.importJSON(store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: "alice", RevokedAt: time.Now().Add(-time.Second), ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Errorf("subject revocation DISCONNECT %s, want 0x87", hexCode(code))
	}
	fresh := g.token("thermo-1", "alice", func(c map[string]any) { c["iat"] = time.Now().Add(time.Second).Unix() })
	time.Sleep(1100 * time.Millisecond) // let the fresh token's iat pass so it is valid now
	g.mustConnect(connOpts{clientID: "thermo-1", token: fresh})
}

func TestClassChangeReachesLiveSessions(t *testing.T) {
	g := startGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	if r := dev.subscribe(t, "devices/thermo-1/commands/#", "firmware/thermostat/#"); r[0] != 1 || r[1] != 1 {
		t.Fatalf("subscribe: %x", r)
	}
	// The class loses the commands permission.
	g.narrowClass(t)
	svc.publish(t, "devices/thermo-1/commands/set", "forbidden-now", 1)
	svc.publish(t, "firmware/thermostat/v2", "marker", 1)
	dev.expectNoMsgBefore(t, "devices/thermo-1/commands/set", "firmware/thermostat/v2", "marker")
	// And a new SUBSCRIBE to it is refused.
	if r := dev.subscribe(t, "devices/thermo-1/commands/#"); r[0] != 0x87 {
		t.Errorf("subscribe after the class change: %x, want 87", r)
	}
}

func TestAdminImportRejectsBadBatch(t *testing.T) {
	g := startGateway(t)
	before, _ := g.g.Store.Devices()
	_, err := g.importJSON(map[string]any{"devices": []map[string]any{{"id": "x1", "class": "nope", "status": "active"}}})
	if err == nil || !strings.Contains(err.Error(), `devices[0] (x1).class "nope" is not known`) {
		t.Fatalf("import with unknown class: %v", err)
	}
	_, err = g.importJSON(map[string]any{"devices": []map[string]any{{"id": "x1", "clas": "thermostat"}}})
	if err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("import with a typo: %v", err)
	}
	after, _ := g.g.Store.Devices()
	if len(after) != len(before) {
		t.Fatalf("store changed by a rejected import: %d -> %d devices", len(before), len(after))
	}
}

func TestConnectRatePerSource(t *testing.T) {
	g := startGateway(t, func(c *configT) { c.MQTT.ConnectRate, c.MQTT.ConnectBurst = 0.001, 3 })
	tok := g.token("thermo-1", "alice", nil)
	var codes []byte
	for i := 0; i < 5; i++ {
		code, cl := g.connect(connOpts{clientID: "thermo-1", token: tok})
		codes = append(codes, code)
		if cl != nil {
			_ = cl.c.Disconnect(&paho.Disconnect{})
		}
	}
	if want := []byte{0, 0, 0, 0x9f, 0x9f}; string(codes) != string(want) {
		t.Fatalf("CONNACK codes %x, want %x (burst of 3, then 0x9f)", codes, want)
	}
	if !strings.Contains(g.logs.String(), "reason=connect_rate") {
		t.Error("rate refusal not logged")
	}
}

func TestImportedRevocationKeptAsLongAsItMatters(t *testing.T) {
	g := startGateway(t, func(c *configT) { c.Auth.MaxTokenLifetime = 2 * time.Hour })
	revokedAt := time.Now().Add(-time.Minute).Truncate(time.Second)
	if _, err := g.importJSON(map[string]any{"revocations": []map[string]any{
		{"kind": "jti", "value": "j-1"},
		{"kind": "subject", "value": "mallory", "revoked_at": revokedAt},
	}}); err != nil {
		t.Fatal(err)
	}
	r, ok, err := g.g.Store.Revocation(store.RevokeSubject, "mallory")
	if err != nil || !ok {
		t.Fatalf("subject revocation not held: %v", err)
	}
	if want := revokedAt.Add(2 * time.Hour); !r.ExpiresAt.Equal(want) {
		t.Errorf("expires_at %s, want revoked_at + max_token_lifetime = %s", r.ExpiresAt, want)
	}
	r, ok, _ = g.g.Store.Revocation(store.RevokeToken, "j-1")
	if !ok || r.RevokedAt.IsZero() || r.ExpiresAt.Sub(r.RevokedAt) != 2*time.Hour {
		t.Errorf("jti revocation without times: %+v", r)
	}
}

func TestDisabledOwnerEndsSessions(t *testing.T) {
	g := startGateway(t)
	tok := g.token("thermo-1", "alice", nil)
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: tok})
	if _, err := g.importJSON(store.Batch{Users: []store.User{{ID: "alice", Status: store.UserDisabled}}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Fatalf("DISCONNECT %s, want 0x87", hexCode(code))
	}
	if code, _ := g.connect(connOpts{clientID: "thermo-1", token: tok}); code != 0x87 {
		t.Fatalf("token of a disabled owner: CONNACK %s, want 0x87", hexCode(code))
	}
	// The device's own call-home token (sub = device) still works.
	g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "thermo-1", nil)})
}

func TestSelfSignedServerCertificateKept(t *testing.T) {
	dir := t.TempDir()
	opt := func(c *configT) {
		c.StateDir = dir
		c.MQTT.TLS.Cert, c.MQTT.TLS.Key = "", ""
	}
	fp := func() string {
		g := startGateway(t, opt)
		conn, err := tls.Dial("tcp", g.g.Addr("tls"), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
		fp := fmt.Sprintf("%x", sum)
		if !strings.Contains(g.logs.String(), "sha256="+fp) {
			t.Errorf("fingerprint %s not logged", fp)
		}
		g.g.Close()
		return fp
	}
	if a, b := fp(), fp(); a != b {
		t.Fatalf("certificate changed across restarts: %s then %s", a, b)
	}
}

// A device moved to another class gets that class's permissions, and later
// changes to the new class reach its live session.
func TestClassMoveThenNarrowReachesSession(t *testing.T) {
	g := startGateway(t)
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	var thermo store.DeviceClass
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			thermo = c
		}
	}
	moved := thermo
	moved.Name = "thermo2"
	if _, err := g.importJSON(store.Batch{Classes: []store.DeviceClass{moved},
		Devices: []store.Device{{ID: "thermo-1", Class: "thermo2", Owner: "alice", Status: store.DeviceActive}}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.publish(t, "devices/thermo-1/telemetry/t", "1", 1); code != 0 {
		t.Fatalf("after the move: %s", hexCode(code))
	}
	var kept []policy.Rule
	for _, r := range moved.Permissions {
		if !strings.Contains(r.Filter, "telemetry") {
			kept = append(kept, r)
		}
	}
	moved.Permissions = kept
	if _, err := g.importJSON(store.Batch{Classes: []store.DeviceClass{moved}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.publish(t, "devices/thermo-1/telemetry/t", "2", 1); code != 0x87 {
		t.Fatalf("the new class lost telemetry: PUBACK %s, want 0x87", hexCode(code))
	}
}

// A certificate session ends when the certificate is taken off the device.
func TestCertificateDeregisteredEndsSession(t *testing.T) {
	g := startGateway(t)
	cert, err := tls.LoadX509KeyPair(g.files.DeviceCert, g.files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	dev := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "thermo-2"})
	if _, err := g.importJSON(store.Batch{Devices: []store.Device{{ID: "thermo-2", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}}); err != nil {
		t.Fatal(err)
	}
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Fatalf("DISCONNECT %s, want 0x87", hexCode(code))
	}
}
