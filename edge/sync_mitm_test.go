package edge_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/cloudsync/synctest"
	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// startAuthorityBehindProxy is a real authority whose public face is a man
// in the middle holding the certificate gateways pin (a TLS-terminating load
// balancer, say): gateways enroll and sync through it. heartbeat is the
// authority's heartbeat interval.
func startAuthorityBehindProxy(t *testing.T, heartbeat time.Duration) (*authSrv, *synctest.Proxy) {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // registered first: runs after the servers have stopped
	logs := &syncBuf{}
	var a *authority.Authority
	p := synctest.Start(t, func(u string) http.Handler {
		a, err = authority.New(authority.Config{URL: u, TokenAudience: "edgeid", TokenTTL: time.Hour, MaxTokenLifetime: 24 * time.Hour,
			EnrollCodeTTL: time.Hour, HeartbeatInterval: heartbeat}, st, slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), nil)))
		if err != nil {
			t.Fatal(err)
		}
		return authority.NewHandler(a, "admin-secret-for-tests")
	})
	t.Cleanup(a.Close) // before the proxy stops: ends the authority's streams
	return &authSrv{t: t, a: a, srv: p.Server(), fp: p.Fingerprint, token: "admin-secret-for-tests", logs: logs}, p
}

// waitLong is waitFor for what may take up to one capped backoff
// (syncclient.MaxBackoff) plus a stream's idle deadline.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2*syncclient.MaxBackoff + 20*time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connectCode connects with a token and hangs up again at once.
func connectCode(g *gw, clientID, tok string) byte {
	code, cl := g.connect(connOpts{clientID: clientID, token: tok})
	if cl != nil {
		_ = cl.c.Disconnect(&paho.Disconnect{})
	}
	return code
}

func syncOnline(g *gw) bool {
	st, err := g.admin().Status(context.Background())
	return err == nil && st.Sync != nil && st.Sync.Online
}

func syncStatus(t *testing.T, g *gw) syncclient.Status {
	t.Helper()
	st, err := g.g.Syncer.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A man in the middle withholds the revocation of thermo-1 (the delta and
// its stream event), passing everything else. Before, the gateway stayed
// "online" at cursor 12 of 13 and kept taking thermo-1's token: unsigned
// pings kept it "current". Now the signed heartbeat shows the gap at once
// (or, if the heartbeats are withheld too, their absence does), the gateway
// goes offline and stale, sync.max_staleness refuses token connects as in
// an outage, and when the path is honest again the revocation is applied:
// the open session ends and the token is refused as revoked.
func TestSyncWithheldRevocationDetected(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	for _, c := range []struct {
		name   string
		strip  bool   // the proxy withholds the heartbeats too
		reason string // in the syncer's status while withheld
	}{
		{"heartbeats pass", false, "behind the authority's signed head"},
		{"heartbeats withheld too", true, "no signed heartbeat"},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, p := startAuthorityBehindProxy(t, 400*time.Millisecond)
			iss, _ := demo.NewIssuer("https://issuer.test", "k1")
			rec, _ := iss.Record()
			x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec},
				Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Status: store.DeviceActive},
					{ID: "thermo-2", Class: "thermostat", Status: store.DeviceActive}}})
			g := startGateway(t, func(cfg *configT) {
				cfg.Sync.Enrollment = x.enroll("gw-1")
				cfg.Sync.MaxStaleness = 2 * time.Second
			})
			tok1, _ := iss.Mint(iss.Claims("thermo-1", "thermo-1", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
			tok2, _ := iss.Mint(iss.Claims("thermo-2", "thermo-2", "edgeid", "publish:devices/thermo-2/telemetry/#", time.Hour), nil)
			waitFor(t, "the stream", func() bool { return syncOnline(g) })
			waitFor(t, "a token connect", func() bool { return connectCode(g, "thermo-2", tok2) == 0 })
			dev := g.mustConnect(connOpts{clientID: "thermo-1", token: tok1})

			head, _ := x.a.Store.Rev()
			p.WithholdFrom.Store(head + 1)
			p.StripHeartbeats.Store(c.strip)
			x.admin("POST", "/admin/v1/devices/thermo-1/revoke?reason=stolen", nil)

			waitFor(t, "the gateway to see it is not current", func() bool {
				st := syncStatus(t, g)
				return !syncOnline(g) && st.Stale && strings.Contains(st.Reason, c.reason)
			})
			// The technician sees it: edgeid status over the admin socket.
			if st, err := g.admin().Status(context.Background()); err != nil || st.Sync == nil || !st.Sync.Stale || !strings.Contains(st.Sync.Reason, c.reason) {
				t.Errorf("admin status while withheld: %+v %v; want stale with reason %q", st.Sync, err, c.reason)
			}
			if p.Withheld.Load() == 0 {
				t.Fatal("the proxy withheld nothing")
			}
			waitFor(t, "sync.max_staleness to refuse token connects", func() bool { return connectCode(g, "thermo-2", tok2) == 0x88 })
			if code := connectCode(g, "thermo-1", tok1); code != 0x88 {
				t.Errorf("thermo-1 while its revocation is withheld: %s, want 0x88 (stale)", hexCode(code))
			}
			if !strings.Contains(g.logs.String(), "reason=stale_sync") {
				t.Error("stale refusal not logged")
			}
			if cur, _ := g.g.Store.Cursor(); cur.Seq != head {
				t.Fatalf("cursor %d, want %d: the delta was not withheld", cur.Seq, head)
			}

			// The path is honest again: the gateway catches up by itself.
			p.WithholdFrom.Store(0)
			p.StripHeartbeats.Store(false)
			waitLong(t, "the revocation to be applied", func() bool { cur, _ := g.g.Store.Cursor(); return cur.Seq > head })
			if code := dev.expectDisconnect(t); code != 0x87 {
				t.Fatalf("thermo-1's session: DISCONNECT %s, want 0x87", hexCode(code))
			}
			waitLong(t, "the stream back", func() bool { return syncOnline(g) })
			if st := syncStatus(t, g); st.Stale || st.Head != st.Cursor {
				t.Fatalf("after recovery: %+v", st)
			}
			if code := connectCode(g, "thermo-1", tok1); code != 0x87 {
				t.Errorf("revoked thermo-1 after recovery: %s, want 0x87", hexCode(code))
			}
			if code := connectCode(g, "thermo-2", tok2); code != 0 {
				t.Errorf("thermo-2 after recovery: %s, want success", hexCode(code))
			}
		})
	}
}

// A stream that answers its headers and then says nothing (a proxy holding
// it open) used to leave the gateway "online" forever. Now, after a few
// heartbeat intervals without a signed message, the syncer drops it, is
// offline, reconnects, and its catch-up pull brings the revocation the
// stream did not.
func TestSyncSilentStreamReconnects(t *testing.T) {
	x, p := startAuthorityBehindProxy(t, 400*time.Millisecond)
	iss, _ := demo.NewIssuer("https://issuer.test", "k1")
	rec, _ := iss.Record()
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec},
		Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Status: store.DeviceActive}}})
	g := startGateway(t, func(cfg *configT) { cfg.Sync.Enrollment = x.enroll("gw-1") })
	tok1, _ := iss.Mint(iss.Claims("thermo-1", "thermo-1", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
	waitFor(t, "the stream", func() bool { return syncOnline(g) })
	var dev *client
	waitFor(t, "a token connect", func() bool {
		var code byte
		code, dev = g.connect(connOpts{clientID: "thermo-1", token: tok1})
		return code == 0
	})

	streams := p.Streams.Load()
	p.Silent.Store(true)
	x.admin("POST", "/admin/v1/devices/thermo-1/revoke?reason=stolen", nil)
	waitFor(t, "the silent stream to be dropped", func() bool { return !syncOnline(g) })
	waitFor(t, "the reason in the status", func() bool { return strings.Contains(syncStatus(t, g).LastError, "silent") })
	waitLong(t, "a new stream", func() bool { return p.Streams.Load() > streams })
	if code := dev.expectDisconnect(t); code != 0x87 {
		t.Fatalf("thermo-1's session: DISCONNECT %s, want 0x87", hexCode(code))
	}
	if code := connectCode(g, "thermo-1", tok1); code != 0x87 {
		t.Errorf("revoked thermo-1: %s, want 0x87", hexCode(code))
	}
	if syncOnline(g) {
		t.Error("online while the stream is still silent")
	}

	p.Silent.Store(false)
	waitLong(t, "the stream back", func() bool { return syncOnline(g) })
}

// edgeid doctor shows a store that is not known to be current: a warning
// while the stream is down, a failure once sync.max_staleness refuses token
// connects, and ok again once a signed heartbeat finds it current.
func TestDoctorSyncStale(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	x, p := startAuthorityBehindProxy(t, 400*time.Millisecond)
	g := startGateway(t, func(cfg *configT) {
		cfg.Sync.Enrollment = x.enroll("gw-1")
		cfg.Sync.MaxStaleness = 2 * time.Second
	})
	ctx := context.Background()
	sync := func() edge.Check { return find(edge.Doctor(ctx, g.cfg, nil, edge.DoctorOptions{}), "sync") }
	waitFor(t, "the stream", func() bool { return syncOnline(g) })
	waitFor(t, "doctor: sync ok", func() bool { return sync().Result == "ok" })

	head, _ := x.a.Store.Rev()
	p.WithholdFrom.Store(head + 1)
	p.StripHeartbeats.Store(true)
	x.admin("POST", "/admin/v1/import", store.Batch{Users: []store.User{{ID: "u1", Status: store.UserActive}}})
	waitFor(t, "doctor: sync fails", func() bool { return sync().Result == "fail" })
	if c := sync(); !strings.Contains(c.Detail, "token connects are refused") || !strings.Contains(c.Detail, "sync.max_staleness") {
		t.Errorf("doctor sync: %+v", c)
	}

	p.WithholdFrom.Store(0)
	p.StripHeartbeats.Store(false)
	waitLong(t, "doctor: sync ok again", func() bool { return sync().Result == "ok" })
}
