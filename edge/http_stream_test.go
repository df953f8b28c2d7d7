package edge_test

import (
	"bufio"
	"context"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/store"
)

// Event streams (GET with Accept: text/event-stream) with curl -N: what
// MQTT and CoAP devices publish arrives, and a stream ends on revocation,
// kick and token expiry.

// sse is a running curl -N reading one event stream.
type sse struct {
	lines *bufio.Scanner
}

// openStream starts curl on filter with token and returns once the
// gateway said it subscribed.
func (g *gw) openStream(t *testing.T, token, filter string) *sse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	cmd := exec.CommandContext(ctx, "curl", "-s", "-N", "--cacert", g.files.CACert, "-H", "Accept: text/event-stream",
		"-H", "Authorization: Bearer "+token, g.httpURL("/v1/topics/"+strings.ReplaceAll(url.PathEscape(filter), "%2F", "/")))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sse{lines: bufio.NewScanner(out)}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	s.waitLine(t, ": subscribed to "+filter)
	return s
}

// waitLine reads the stream up to a line containing want and returns it.
func (s *sse) waitLine(t *testing.T, want string) string {
	t.Helper()
	for s.lines.Scan() {
		if strings.Contains(s.lines.Text(), want) {
			return s.lines.Text()
		}
	}
	t.Fatalf("the stream ended before %q", want)
	return ""
}

// waitEnd reads to the end event and returns its data line, then checks
// the stream is closed (curl sees EOF).
func (s *sse) waitEnd(t *testing.T) string {
	t.Helper()
	s.waitLine(t, "event: end")
	data := s.waitLine(t, "data:")
	for s.lines.Scan() {
		if l := s.lines.Text(); l != "" {
			t.Errorf("after the end event: %q", l)
		}
	}
	return data
}

func TestHTTPStreamMQTTAndCoAP(t *testing.T) {
	g := startHTTP(t, func(c *config.Config) { c.CoAP.DTLSListen = "127.0.0.1:0" })
	g.addPSKDevice(coapDevice, coapID, coapKey)
	svcTok := g.token("acme-cloud", "acme-cloud", nil)
	st := g.openStream(t, svcTok, "devices/+/telemetry/#")

	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	dev.publish(t, "devices/thermo-1/telemetry/hum", "from-mqtt", 1)
	if l := st.waitLine(t, "data:"); !strings.Contains(l, `"topic":"devices/thermo-1/telemetry/hum"`) || !strings.Contains(l, `"payload":"from-mqtt"`) {
		t.Fatalf("MQTT publish as event: %s", l)
	}
	if out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "from-coap", g.coapURI("devices/coap-1/telemetry/temp")); strings.Contains(out, "4.") {
		t.Fatalf("CoAP publish refused: %q", out)
	}
	if l := st.waitLine(t, "data:"); !strings.Contains(l, `"topic":"devices/coap-1/telemetry/temp"`) || !strings.Contains(l, `"payload":"from-coap"`) {
		t.Fatalf("CoAP publish as event: %s", l)
	}

	// edgeid kick (the admin API) ends it.
	r, err := g.admin().Kick(g.ctx(), admin.KickRequest{Device: "acme-cloud"})
	if err != nil || r.Kicked != 1 {
		t.Fatalf("kick: %+v %v", r, err)
	}
	if l := st.waitEnd(t); !strings.Contains(l, "reason") {
		t.Errorf("kick end event: %q", l)
	}
	waitFor(t, "the kicked stream gone", func() bool { return len(g.g.HTTP.Streams("")) == 0 })
}

func TestHTTPStreamRevokedToken(t *testing.T) {
	g := startHTTP(t)
	tok := g.token("acme-cloud", "acme-cloud", func(c map[string]any) { c["jti"] = "stream-jti" })
	other := g.openStream(t, g.token("acme-cloud", "acme-cloud", nil), "devices/+/telemetry/#")
	st := g.openStream(t, tok, "devices/+/telemetry/#")
	now := time.Now()
	if _, err := g.importJSON(store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "stream-jti", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if l := st.waitEnd(t); !strings.Contains(l, "revoked") {
		t.Errorf("revocation end event: %q", l)
	}
	// The other token's stream stays and still gets messages.
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	dev.publish(t, "devices/thermo-1/telemetry/t", "still-open", 1)
	if l := other.waitLine(t, "data:"); !strings.Contains(l, "still-open") {
		t.Fatalf("the other stream: %s", l)
	}
	// And the revoked token cannot open a new one.
	code, body := g.curl(t, "-H", "Accept: text/event-stream", "-H", "Authorization: Bearer "+tok, g.httpURL("/v1/topics/devices/+/telemetry/%23"))
	if code != "401" || !strings.Contains(body, "invalid_token") {
		t.Fatalf("revoked token's new stream: %s %s", code, body)
	}
}

func TestHTTPStreamEndsAtTokenExpiry(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startHTTP(t)
	short := g.token("acme-cloud", "acme-cloud", func(c map[string]any) { c["exp"] = time.Now().Add(3 * time.Second).Unix() })
	st := g.openStream(t, short, "devices/+/telemetry/#")
	// A liveness wait: the end comes at exp, whenever that is here.
	if l := st.waitEnd(t); !strings.Contains(l, "expired") {
		t.Errorf("expiry end event: %q", l)
	}
	waitFor(t, "the expired stream gone", func() bool { return len(g.g.HTTP.Streams("")) == 0 })
}
