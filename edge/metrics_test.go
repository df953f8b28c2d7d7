package edge_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/edgeid/edgeid/edge/admin"
)

func scrape(t *testing.T, g *gw) string {
	t.Helper()
	resp, err := http.Get("http://" + g.g.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric returns the value of the series whose line starts with prefix, or -1.
func metric(body, prefix string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func TestMetrics(t *testing.T) {
	g := startGateway(t, func(c *configT) { c.Metrics.Listen = "127.0.0.1:0" })
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	svc.subscribe(t, "devices/+/telemetry/#")
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	dev.publish(t, "devices/thermo-1/telemetry/temp", "21.5", 1)
	svc.expectMsg(t, "devices/thermo-1/telemetry/temp", "21.5")
	dev.publish(t, "devices/thermo-2/telemetry/temp", "1", 1) // refused
	g.connect(connOpts{clientID: "thermo-1", token: "garbage"})
	body := scrape(t, g)
	for prefix, want := range map[string]float64{
		`edgeid_sessions{protocol="mqtt5"}`:                            2,
		`edgeid_auth_results_total{method="token",reason="ok"}`:        2,
		`edgeid_auth_results_total{method="token",reason="malformed"}`: 1,
		`edgeid_messages_in_total`:                                     1,
		`edgeid_messages_out_total`:                                    1,
		`edgeid_bytes_in_total`:                                        4,
		`edgeid_acl_denied_total`:                                      1,
		`edgeid_sync_lag_seconds`:                                      -1,
		`edgeid_revocations_held`:                                      0,
	} {
		if got := metric(body, prefix); got != want {
			t.Errorf("%s = %v, want %v", prefix, got, want)
		}
	}
	if _, err := g.admin().Kick(context.Background(), admin.KickRequest{Device: "thermo-1"}); err != nil {
		t.Fatal(err)
	}
	dev.expectDisconnect(t)
	waitFor(t, "the session gauge to drop", func() bool { return metric(scrape(t, g), `edgeid_sessions{protocol="mqtt5"}`) == 1 })
	if got := metric(scrape(t, g), `edgeid_sessions_ended_total{reason="kicked by technician"}`); got != 1 {
		t.Errorf("sessions ended by kick = %v, want 1", got)
	}
}
