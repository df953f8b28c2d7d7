package edge_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// auth is a real authority on loopback HTTPS (in-process).
type authSrv struct {
	t     testing.TB
	a     *authority.Authority
	srv   *httptest.Server
	fp    string
	token string
	logs  *syncBuf
}

func startAuthority(t testing.TB) *authSrv { return startAuthorityWith(t, nil) }

// startAuthorityWith lets mod change the authority's configuration.
func startAuthorityWith(t testing.TB, mod func(*authority.Config)) *authSrv {
	t.Helper()
	logs := &syncBuf{}
	x := testenv.AuthorityLog(t, logs, mod)
	return &authSrv{t: t, a: x.A, srv: x.Srv, fp: x.FP, token: x.Token, logs: logs}
}

func (x *authSrv) admin(method, path string, body any) []byte {
	x.t.Helper()
	return testenv.Admin(x.t, x.srv.URL, x.fp, x.token, method, path, body)
}

// enroll makes an enrollment for a gateway called name and saves it.
func (x *authSrv) enroll(name string) string {
	x.t.Helper()
	return testenv.Enroll(x.t, x.a, x.srv.URL, x.fp, name, "test-board")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSyncEndToEnd(t *testing.T) {
	x := startAuthority(t)
	files, err := demo.WriteTLS(t.TempDir(), "factory-7")
	if err != nil {
		t.Fatal(err)
	}
	// The manufacturer registers its classes and 1,000 devices in one call,
	// one of them with the factory certificate it will call home with.
	batch := store.Batch{Classes: demo.Classes(), Users: []store.User{{ID: "alice", Status: store.UserActive}}}
	for i := 0; i < 1000; i++ {
		batch.Devices = append(batch.Devices, store.Device{ID: fmt.Sprintf("dev-%04d", i), Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
	}
	files9, err := demo.WriteTLS(t.TempDir(), "factory-9")
	if err != nil {
		t.Fatal(err)
	}
	batch.Devices = append(batch.Devices,
		store.Device{ID: "factory-7", Class: "thermostat", Status: store.DeviceActive, CertSHA256: files.DeviceFingerprint},
		store.Device{ID: "factory-9", Class: "thermostat", Status: store.DeviceActive, CertSHA256: files9.DeviceFingerprint})
	x.admin("POST", "/admin/v1/import", batch)

	stateDir := t.TempDir()
	enrollment := x.enroll("gw-1")
	opts := func(c *configT) { c.StateDir = stateDir; c.Sync.Enrollment = enrollment }
	g := startGateway(t, opts)
	waitFor(t, "1,002 devices at the gateway", func() bool {
		ds, _ := g.g.Store.Devices()
		return len(ds) == 1002
	})

	waitFor(t, "the push stream", func() bool {
		st, err := g.admin().Status(context.Background())
		return err == nil && st.Sync != nil && st.Sync.Online
	})
	if st, _ := g.admin().Status(context.Background()); st.Sync.Gateway != "gw-1" || st.Sync.Cursor == 0 || st.Sync.Epoch != x.a.Epoch() {
		t.Fatalf("status sync: %+v", st.Sync)
	}
	var st admin.Status
	if err := g.admin().Do(context.Background(), "POST", "/v1/sync", nil, &st); err != nil || st.Sync == nil || !st.Sync.Online {
		t.Fatalf("POST /v1/sync: %+v %v", st.Sync, err)
	}

	// Call home with the factory certificate, then connect with that token.
	cert, err := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := syncclient.HTTPClient(x.fp)
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	resp, err := hc.PostForm(x.srv.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"factory-7"}})
	if err != nil {
		t.Fatal(err)
	}
	var tr authority.TokenResponse
	json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if resp.StatusCode != 200 || tr.AccessToken == "" {
		t.Fatalf("call home: %s %+v", resp.Status, tr)
	}
	dev := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "factory-7", token: tr.AccessToken})
	if code := dev.publish(t, "devices/factory-7/telemetry/temp", "20", 1); code != 0 {
		t.Fatalf("publish with the call-home token: %s", hexCode(code))
	}
	// The same token without its certificate is refused (bound with x5t#S256).
	if code, _ := g.connect(connOpts{clientID: "factory-7", token: tr.AccessToken}); code != 0x87 {
		t.Errorf("bound call-home token without its certificate: %s, want 0x87", hexCode(code))
	}

	// Revoke at the authority: the gateway hears it on the push channel and
	// disconnects the session.
	x.admin("POST", "/admin/v1/devices/factory-7/revoke?reason=lost", nil)
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Fatalf("revocation DISCONNECT %s, want 0x87", hexCode(code))
	}
	if code, _ := g.connect(connOpts{tls: true, cert: &cert, clientID: "factory-7", token: tr.AccessToken}); code != 0x87 {
		t.Errorf("revoked device reconnect: %s, want 0x87", hexCode(code))
	}

	// The authority goes away and the gateway restarts: the store still
	// decides, for the device still allowed and for the revoked one.
	x.a.Close()
	x.srv.Close()
	g.g.Close()
	g2 := startGateway(t, opts)
	if code, _ := g2.connect(connOpts{tls: true, cert: &cert, clientID: "factory-7", token: tr.AccessToken}); code != 0x87 {
		t.Errorf("offline restart: revoked device %s, want 0x87", hexCode(code))
	}
	cert9, err := tls.LoadX509KeyPair(files9.DeviceCert, files9.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	g2.mustConnect(connOpts{tls: true, cert: &cert9, clientID: "factory-9"})
	waitFor(t, "the sync failure to be logged", func() bool { return strings.Contains(g2.logs.String(), "sync interrupted") })
}

// A delta larger than one transaction of the gateway's store (4 MB
// memtables: ~600 KB) but accepted by the authority (a mass import) reaches
// the gateway whole, as a snapshot applied in chunks; retried as a delta it
// would stop the sync for good.
func TestSyncLargeDeltaComesAsSnapshot(t *testing.T) {
	x := startAuthority(t)
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Users: []store.User{{ID: "alice", Status: store.UserActive}},
		Devices: []store.Device{{ID: "first", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}})
	g := startGateway(t, func(c *configT) { c.StateDir = t.TempDir(); c.Sync.Enrollment = x.enroll("gw-big") })
	waitFor(t, "the first device at the gateway", func() bool { _, err := g.g.Store.Device("first"); return err == nil })

	big := store.Batch{}
	for i := range 2000 {
		big.Devices = append(big.Devices, store.Device{ID: fmt.Sprintf("big-%04d", i), Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, Name: strings.Repeat("n", 300)})
	}
	x.admin("POST", "/admin/v1/import", big)
	waitFor(t, "2,001 devices at the gateway", func() bool {
		ds, _ := g.g.Store.Devices()
		return len(ds) == 2001
	})
	if l := g.logs.String(); !strings.Contains(l, "fetching a snapshot instead") {
		t.Errorf("no snapshot asked for; log:\n%s", l)
	} else if strings.Contains(l, "sync interrupted") {
		// The pushed delta may carry revocations: the snapshot is fetched
		// at once, not after a failed round's backoff.
		t.Errorf("the sync waited out a backoff before the snapshot; log:\n%s", l)
	}
	if c, err := g.g.Store.Cursor(); err != nil || c.Seq != mustRev(t, x) {
		t.Errorf("cursor %+v (%v), want the authority's head", c, err)
	}
}

func mustRev(t *testing.T, x *authSrv) uint64 {
	t.Helper()
	rev, err := x.a.Store.Rev()
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// Batches that are tampered with, replayed, rolled back, meant for another
// gateway, signed by another key or from another epoch are refused with a
// logged reason and change nothing.
func TestSyncRefusesBadBatches(t *testing.T) {
	x := startAuthority(t)
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "d1", Class: "thermostat", Status: store.DeviceActive}}})
	g := startGateway(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-1") })
	waitFor(t, "d1 at the gateway", func() bool { _, err := g.g.Store.Device("d1"); return err == nil })

	// A delta the gateway has already applied: fetch the log from 0.
	old, err := x.a.Changes("gw-1", x.a.Epoch(), 0, 100)
	if err != nil || len(old.Batches) == 0 {
		t.Fatalf("changes: %v", err)
	}
	x.enroll("gw-2")
	snapOther, err := x.a.Snapshot("gw-2")
	if err != nil {
		t.Fatal(err)
	}
	// A new change, signed for this gateway, then tampered with.
	x.admin("POST", "/admin/v1/import", store.Batch{Devices: []store.Device{{ID: "d2", Class: "thermostat", Status: store.DeviceActive}}})
	waitFor(t, "d2 at the gateway", func() bool { _, err := g.g.Store.Device("d2"); return err == nil })
	cur, _ := g.g.Store.Cursor()
	next, _ := x.a.Changes("gw-1", x.a.Epoch(), cur.Seq-1, 1)
	parts := strings.Split(next.Batches[0], ".")
	payload, _ := base64Decode(parts[1])
	tamperedPayload := strings.Replace(string(payload), `"status":"active"`, `"status":"suspended"`, 1)
	tampered := parts[0] + "." + base64Encode([]byte(tamperedPayload)) + "." + parts[2]
	otherKey, _ := demo.NewIssuer("x", "feed-x")
	forged := signFeed(t, otherKey, tamperedPayload)

	before, _ := g.g.Store.Devices()
	beforeCur, _ := g.g.Store.Cursor()
	cases := []struct{ name, raw, reason string }{
		{"replayed delta", old.Batches[0], "rollback"},
		{"replayed latest", next.Batches[0], "rollback"},
		{"another gateway's snapshot", snapOther, "wrong_gateway"},
		{"tampered", tampered, "bad_signature"},
		{"signed by another key", forged, "bad_signature"},
		{"not a JWS", "garbage", "malformed"},
	}
	for _, c := range cases {
		err := g.g.Syncer.Apply(c.raw)
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: err %v, want reason %s", c.name, err, c.reason)
		}
		if !strings.Contains(g.logs.String(), "reason="+c.reason) {
			t.Errorf("%s: refusal not logged with reason=%s", c.name, c.reason)
		}
	}
	after, _ := g.g.Store.Devices()
	afterCur, _ := g.g.Store.Cursor()
	if len(after) != len(before) || afterCur.Seq != beforeCur.Seq || afterCur.Epoch != beforeCur.Epoch {
		t.Fatalf("refused batches changed the store: %d→%d devices, cursor %+v→%+v", len(before), len(after), beforeCur, afterCur)
	}
	if d, _ := g.g.Store.Device("d2"); d.Status != store.DeviceActive {
		t.Fatalf("tampered status applied: %+v", d)
	}
}

// A gateway removed at the authority gets nothing more.
func TestRemovedGatewayGetsNothing(t *testing.T) {
	x := startAuthority(t)
	path := x.enroll("gw-9")
	e, err := syncclient.LoadEnrollment(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := syncclient.NewSyncer(e, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(context.Background()); err != nil {
		t.Fatalf("enrolled gateway: %v", err)
	}
	// The authority restored from an older backup: a cursor ahead of its log
	// gets "start again from a snapshot", never a silent gap.
	if resp, err := x.a.Changes("gw-9", x.a.Epoch(), 1000, 10); err != nil || !resp.NeedSnapshot {
		t.Fatalf("cursor ahead of the log: %+v %v", resp, err)
	}
	x.admin("DELETE", "/admin/v1/gateways/gw-9", nil)
	if err := s.SyncOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("removed gateway synced: %v", err)
	}
	if !strings.Contains(x.logs.String(), "gateway request refused") {
		t.Error("authority did not log the refusal")
	}
	// A used enrollment code cannot enroll a second gateway.
	code, _, _ := x.a.AddGateway("gw-10", "test")
	if _, err := syncclient.Enroll(context.Background(), x.srv.URL, x.fp, code, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := syncclient.Enroll(context.Background(), x.srv.URL, x.fp, code, ""); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("code used twice: %v", err)
	}
	// A wrong TLS pin is refused before anything is sent.
	if _, err := syncclient.Enroll(context.Background(), x.srv.URL, strings.Repeat("0", 64), code, ""); err == nil || !strings.Contains(err.Error(), "not the pinned") {
		t.Fatalf("wrong pin: %v", err)
	}
}

func TestMaxStalenessRefusesTokenConnects(t *testing.T) {
	// Freshness comes from the signed heartbeats: send them well inside
	// the 1 s max_staleness.
	x := startAuthorityWith(t, func(c *authority.Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	iss, _ := demo.NewIssuer("https://issuer.test", "k1")
	rec, _ := iss.Record()
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec},
		Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Status: store.DeviceActive}}})
	stateDir, enrollment := t.TempDir(), x.enroll("gw-1")
	opts := func(c *configT) {
		c.StateDir = stateDir
		c.Sync.Enrollment = enrollment
		c.Sync.MaxStaleness = time.Second
	}
	g := startGateway(t, opts)
	waitFor(t, "the device at the gateway", func() bool { _, err := g.g.Store.Device("thermo-1"); return err == nil })
	tok, _ := iss.Mint(iss.Claims("thermo-1", "thermo-1", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
	// The issuer's keys are loaded by the store watcher just after the batch
	// commits: wait for the first accepted connect rather than racing it.
	waitFor(t, "a token connect", func() bool {
		code, cl := g.connect(connOpts{clientID: "thermo-1", token: tok})
		if cl != nil {
			_ = cl.c.Disconnect(&paho.Disconnect{})
		}
		return code == 0
	})

	x.a.Close()
	x.srv.Close()
	g.g.Close()
	g = startGateway(t, opts)
	waitFor(t, "the staleness limit to pass", func() bool {
		code, cl := g.connect(connOpts{clientID: "thermo-1", token: tok})
		if cl != nil {
			_ = cl.c.Disconnect(&paho.Disconnect{})
		}
		return code == 0x88
	})
	if !strings.Contains(g.logs.String(), "reason=stale_sync") {
		t.Error("stale refusal not logged")
	}
}

// A gateway removed at the authority while its push stream is open loses the
// stream at once.
func TestRemovedGatewayStreamEnds(t *testing.T) {
	x := startAuthority(t)
	g := startGateway(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-3") })
	online := func() bool {
		st, err := g.admin().Status(context.Background())
		return err == nil && st.Sync != nil && st.Sync.Online
	}
	waitFor(t, "the push stream", online)
	x.admin("DELETE", "/admin/v1/gateways/gw-3", nil)
	waitFor(t, "the stream to end", func() bool { return !online() })
	if !strings.Contains(x.logs.String(), "gateway stream ended: gateway removed") {
		t.Error("authority did not log why the stream ended")
	}
}

// Revocations from the feed are kept as long as this gateway could accept a
// token they cover, even when the authority assumed shorter tokens.
func TestSyncedRevocationsKeptForOwnTokenLifetime(t *testing.T) {
	x := startAuthority(t)
	g := startGateway(t, func(c *configT) {
		c.Sync.Enrollment = x.enroll("gw-4")
		c.Auth.MaxTokenLifetime = 72 * time.Hour
	})
	revokedAt := time.Now().Truncate(time.Second)
	x.a.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: "mallory", RevokedAt: revokedAt,
		ExpiresAt: revokedAt.Add(time.Hour)}}}, "test")
	var r store.Revocation
	waitFor(t, "the revocation at the gateway", func() bool {
		var ok bool
		r, ok, _ = g.g.Store.Revocation(store.RevokeSubject, "mallory")
		return ok
	})
	if want := revokedAt.Add(72 * time.Hour); r.ExpiresAt.Before(want) {
		t.Fatalf("kept until %s, want at least %s (this gateway accepts 72h tokens)", r.ExpiresAt, want)
	}
}

// A class's rate limits set at the authority reach the gateway with the
// snapshot, and a change to them reaches a live session with the next delta.
func TestSyncedClassLimits(t *testing.T) {
	x := startAuthority(t)
	iss, _ := demo.NewIssuer("https://issuer.test", "k1")
	rec, _ := iss.Record()
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Device: burstOf(10)})},
		Issuers: []store.Issuer{rec}, Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Status: store.DeviceActive}}})
	if body := x.admin("GET", "/admin/v1/classes", nil); !strings.Contains(string(body), `"limits":{"device":{"messages_per_second":0.01,"message_burst":10}}`) {
		t.Fatalf("authority classes without the limits: %s", body)
	}
	g := startGateway(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-5") })
	tok, _ := iss.Mint(iss.Claims("thermo-1", "thermo-1", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
	// Issuers, like class limits, are loaded by the store watcher.
	var dev *client
	waitFor(t, "a token connect", func() bool {
		var code byte
		code, dev = g.connect(connOpts{clientID: "thermo-1", token: tok})
		return code == 0
	})
	if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 2); string(codes) != string([]byte{0, 0}) {
		t.Fatalf("codes %x under a burst of 10", codes)
	}
	applied := func() int { return strings.Count(g.logs.String(), "sync batch applied") }
	n := applied()
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Device: burstOf(3)})}})
	// Logged once the batch and its watchers are done.
	waitFor(t, "the class change at the gateway", func() bool { return applied() > n })
	if c, err := g.g.Store.Class("thermostat"); err != nil || c.Limits == nil || c.Limits.Device != burstOf(3) {
		t.Fatalf("gateway's thermostat class: %+v, %v", c, err)
	}
	if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 4); string(codes) != string([]byte{0, 0, 0, 0x97}) {
		t.Fatalf("codes %x after the synced burst of 3", codes)
	}
}
