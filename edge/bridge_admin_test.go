package edge_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/bridge"
	"github.com/edgeid/edgeid/edge/config"
)

// The bridge as the technician and the monitoring see it: GET /v1/bridge
// through the admin client and the edgeid_bridge_* series, after a reading
// went to the cloud.
func TestBridgeAdminAndMetrics(t *testing.T) {
	g, cloud := startBridged(t, "5", bridgeRules, func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	app := cloudApp(t, cloud, "gateways/test-gw/#")
	g.waitBridge(t, "connected", connected)
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	if rc := dev.publish(t, "devices/thermo-1/telemetry/temp", "21.5", 1); rc != 0 {
		t.Fatalf("publish: 0x%02x", rc)
	}
	app.next(t)
	dev.publish(t, "owners/alice/alerts", "smoke", 1) // outside the bridge class
	g.waitBridge(t, "forwarded the reading", func(s bridge.Status) bool { return s.Forwarded == 1 && s.Queued == 0 && s.RefusedOut == 1 })

	rs, err := g.admin().Bridge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("GET /v1/bridge: %+v, want one remote", rs)
	}
	r := rs[0]
	if r.Remote != "cloud" || r.Address != "mqtts://"+cloud.Addr || r.Principal != "bridge:cloud" || r.State != "connected" || r.Since.IsZero() ||
		r.LastError != "" || r.Forwarded != 1 || r.RefusedOut != 1 || r.Queued != 0 || r.Connects < 1 || r.BytesWritten == 0 ||
		r.Class != "bridge" || r.ClassError != "" {
		t.Errorf("GET /v1/bridge: %+v", r)
	}

	body := scrape(t, g)
	if got := metric(body, `edgeid_bridge_forwarded_total{remote="cloud"}`); got < 1 {
		t.Errorf("edgeid_bridge_forwarded_total{remote=\"cloud\"} = %v, want ≥ 1\n%s", got, bridgeLines(body))
	}
	for prefix, want := range map[string]float64{
		`edgeid_bridge_connected{remote="cloud"}`:                     1,
		`edgeid_bridge_queue_messages{remote="cloud"}`:                0,
		`edgeid_bridge_queue_oldest_seconds{remote="cloud"}`:          0,
		`edgeid_bridge_refused_total{direction="out",remote="cloud"}`: 1,
		`edgeid_bridge_refused_total{direction="in",remote="cloud"}`:  0,
		`edgeid_bridge_received_total{remote="cloud"}`:                0,
		`edgeid_bridge_resent_total{remote="cloud"}`:                  0,
		`edgeid_bridge_dropped_total{remote="cloud"}`:                 0,
	} {
		if got := metric(body, prefix); got != want {
			t.Errorf("%s = %v, want %v\n%s", prefix, got, want, bridgeLines(body))
		}
	}
	if got := metric(body, `edgeid_bridge_queue_written_bytes_total{remote="cloud"}`); got <= 0 {
		t.Errorf("edgeid_bridge_queue_written_bytes_total = %v, want > 0", got)
	}

	// The cloud away: the gauge drops, readings wait and age.
	cloud.Stop()
	g.waitBridge(t, "noticed the outage", func(s bridge.Status) bool { return s.State != "connected" })
	dev.publish(t, "devices/thermo-1/telemetry/temp", "22", 1)
	body = scrape(t, g)
	if metric(body, `edgeid_bridge_connected{remote="cloud"}`) != 0 || metric(body, `edgeid_bridge_queue_messages{remote="cloud"}`) != 1 ||
		metric(body, `edgeid_bridge_queue_bytes{remote="cloud"}`) <= 0 {
		t.Errorf("during the outage:\n%s", bridgeLines(body))
	}
	rs, err = g.admin().Bridge(context.Background())
	if err != nil || len(rs) != 1 || rs[0].State == "connected" || rs[0].Queued != 1 || rs[0].Oldest.IsZero() {
		t.Errorf("GET /v1/bridge during the outage: %+v %v", rs, err)
	}
}

func bridgeLines(body string) string {
	var out []string
	for l := range strings.Lines(body) {
		if strings.HasPrefix(l, "edgeid_bridge_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// Without bridge.remotes the route answers an empty list and no bridge
// series are served.
func TestBridgeAdminWithoutBridge(t *testing.T) {
	g := startGateway(t, func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	rs, err := g.admin().Bridge(context.Background())
	if err != nil || rs == nil || len(rs) != 0 {
		t.Fatalf("GET /v1/bridge without a bridge: %+v %v, want an empty list", rs, err)
	}
	if body := scrape(t, g); strings.Contains(body, "edgeid_bridge_") {
		t.Errorf("bridge series without a bridge:\n%s", bridgeLines(body))
	}
}

func doctorCheck(t *testing.T, checks []edge.Check, name string) edge.Check {
	t.Helper()
	i := slices.IndexFunc(checks, func(c edge.Check) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no check %q in %+v", name, checks)
	}
	return checks[i]
}

// edgeid doctor connects to each remote as the bridge does and says what
// to fix: a CA that did not sign the cloud's certificate, a client
// certificate the cloud refuses, a bridge class missing from the store.
func TestDoctorBridgeRemote(t *testing.T) {
	g, cloud := startBridged(t, "5", bridgeRules)
	g.waitBridge(t, "connected", connected)
	ctx := context.Background()

	// The daemon runs: its remote is reachable and its class known.
	checks := edge.Doctor(ctx, g.cfg, nil, edge.DoctorOptions{})
	if c := doctorCheck(t, checks, "bridge cloud"); c.Result != "ok" || !strings.Contains(c.Detail, "TLS handshake ok") {
		t.Errorf("a good remote: %+v", c)
	}
	if c := doctorCheck(t, checks, "bridge cloud class"); c.Result != "ok" || !strings.Contains(c.Detail, `"bridge"`) {
		t.Errorf("the demo's bridge class: %+v", c)
	}

	with := func(mod func(*config.Remote)) config.Config {
		cfg := g.cfg
		r := cfg.Bridge.Remotes[0]
		mod(&r)
		cfg.Bridge.Remotes = []config.Remote{r}
		return cfg
	}
	// A CA that did not sign the cloud's certificate.
	checks = edge.Doctor(ctx, with(func(r *config.Remote) { r.CA = g.files.CACert }), nil, edge.DoctorOptions{})
	if c := doctorCheck(t, checks, "bridge cloud"); c.Result != "fail" || !strings.Contains(c.Detail, "does not chain to "+g.files.CACert) ||
		!strings.Contains(c.Detail, "bridge.remotes[0].ca") {
		t.Errorf("a wrong CA: %+v", c)
	}
	// A client certificate from another CA: the cloud refuses it.
	checks = edge.Doctor(ctx, with(func(r *config.Remote) { r.Cert, r.Key = g.files.DeviceCert, g.files.DeviceKey }), nil, edge.DoctorOptions{})
	if c := doctorCheck(t, checks, "bridge cloud"); c.Result != "fail" || !strings.Contains(c.Detail, "refused the gateway's client certificate") {
		t.Errorf("a client certificate the cloud refuses: %+v", c)
	}
	// The wrong server name.
	checks = edge.Doctor(ctx, with(func(r *config.Remote) { r.ServerName = "cloud.example" }), nil, edge.DoctorOptions{})
	if c := doctorCheck(t, checks, "bridge cloud"); c.Result != "fail" || !strings.Contains(c.Detail, "server_name") {
		t.Errorf("a wrong server name: %+v", c)
	}

	// The daemon stopped, with a fresh store: the class is missing; and the
	// cloud stopped: unreachable, quickly.
	cfg := with(func(r *config.Remote) {})
	cfg.Admin.Socket = t.TempDir() + "/none.sock"
	cfg.StateDir = t.TempDir()
	checks = edge.Doctor(ctx, cfg, nil, edge.DoctorOptions{})
	if c := doctorCheck(t, checks, "bridge cloud"); c.Result != "ok" {
		t.Errorf("a good remote, daemon stopped: %+v", c)
	}
	if c := doctorCheck(t, checks, "bridge cloud class"); c.Result != "fail" || !strings.Contains(c.Detail, `class "bridge" is not in the store`) {
		t.Errorf("a missing bridge class: %+v", c)
	}
	cloud.Stop()
	checks = edge.Doctor(ctx, cfg, nil, edge.DoctorOptions{})
	if c := doctorCheck(t, checks, "bridge cloud"); c.Result != "fail" || !strings.Contains(c.Detail, "unreachable") {
		t.Errorf("the cloud stopped: %+v", c)
	}
}
