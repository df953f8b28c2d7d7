package edge_test

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
)

// The HTTPS front end with stock clients: curl for Bearer requests.

func startHTTP(t *testing.T, mods ...gwOpt) *gw {
	t.Helper()
	return startGateway(t, append([]gwOpt{func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:0" }}, mods...)...)
}

func (g *gw) httpURL(path string) string { return "https://" + g.g.HTTP.Addr() + path }

// curl runs curl against the gateway (trusting its CA) and returns the
// status code and body.
func (g *gw) curl(t *testing.T, args ...string) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found: .ci/run installs it")
	}
	args = append([]string{"-s", "--cacert", g.files.CACert, "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"}, args...)
	out, err := exec.Command("curl", args...).Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("curl %v: %v", args, err)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	return s[i+1:], s[:i]
}

func TestHTTPBearerPublishReadSubscribe(t *testing.T) {
	g := startHTTP(t)
	tok := g.token("thermo-1", "alice", nil)
	svc := g.telemetry(t)

	// Publish: an MQTT subscriber gets it, with its content type.
	code, body := g.curl(t, "-X", "POST", "-H", "Authorization: Bearer "+tok, "-H", "Content-Type: application/json",
		"--data-binary", `{"c":21.5}`, g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp?retain=1"))
	if code != "204" {
		t.Fatalf("publish: %s %s", code, body)
	}
	m := svc.next(t)
	if m.Topic != "devices/thermo-1/telemetry/temp" || string(m.Payload) != `{"c":21.5}` || m.Properties.ContentType != "application/json" {
		t.Fatalf("MQTT got %s %q (%q)", m.Topic, m.Payload, m.Properties.ContentType)
	}

	// Read the retained message back (the service may read telemetry).
	svcTok := g.token("acme-cloud", "acme-cloud", nil)
	code, body = g.curl(t, "-H", "Authorization: Bearer "+svcTok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp"))
	if code != "200" || body != `{"c":21.5}` {
		t.Fatalf("retained: %s %q", code, body)
	}
	code, _ = g.curl(t, "-H", "Authorization: Bearer "+svcTok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/none"))
	if code != "404" {
		t.Fatalf("no retained message: %s, want 404", code)
	}

	// Outside the class: 403 insufficient_scope; no token: 401 with both challenges.
	code, body = g.curl(t, "-X", "POST", "-H", "Authorization: Bearer "+tok, "--data", "x", g.httpURL("/v1/topics/devices/thermo-2/telemetry/temp"))
	if code != "403" || !strings.Contains(body, "insufficient_scope") {
		t.Fatalf("other device's topic: %s %s", code, body)
	}
	// A dot level would be resolved away in a DPoP proof's htu (a proof for
	// a/b must not publish on a/x/../b), and a control character in a
	// filter would break the event stream's lines: both 400.
	for _, path := range []string{"/v1/topics/devices/thermo-1/telemetry/x/%2E%2E/temp", "/v1/topics/devices/thermo-1/telemetry/%0Adata:x"} {
		if code, body := g.curl(t, "-X", "POST", "-H", "Authorization: Bearer "+tok, "--data", "x", g.httpURL(path)); code != "400" {
			t.Errorf("POST %s: %s %s, want 400", path, code, body)
		}
	}
	code, body = g.curl(t, "-i", g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp"))
	if lb := strings.ToLower(body); code != "401" || !strings.Contains(lb, `www-authenticate: bearer realm="edgeid"`) || !strings.Contains(lb, `www-authenticate: dpop realm="edgeid"`) {
		t.Fatalf("no credential: %s %s", code, body)
	}

	// Subscribe as server-sent events; an MQTT publish arrives; a kick ends the stream.
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", "-s", "-N", "--cacert", g.files.CACert, "-H", "Accept: text/event-stream",
		"-H", "Authorization: Bearer "+svcTok, g.httpURL("/v1/topics/devices/+/telemetry/%23"))
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	waitLine := func(want string) string {
		t.Helper()
		for lines.Scan() {
			if strings.Contains(lines.Text(), want) {
				return lines.Text()
			}
		}
		t.Fatalf("the stream ended before %q", want)
		return ""
	}
	waitLine(": subscribed to devices/+/telemetry/#")
	// The retained message comes first, then live ones.
	if l := waitLine("data:"); !strings.Contains(l, `"topic":"devices/thermo-1/telemetry/temp"`) || !strings.Contains(l, `"retain":true`) {
		t.Fatalf("first event %s", l)
	}
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: tok})
	dev.publish(t, "devices/thermo-1/telemetry/hum", "40", 1)
	if l := waitLine("data:"); !strings.Contains(l, `"topic":"devices/thermo-1/telemetry/hum"`) || !strings.Contains(l, `"payload":"40"`) {
		t.Fatalf("live event %s", l)
	}
	waitFor(t, "the stream listed", func() bool { return len(g.g.HTTP.Streams("acme-cloud")) == 1 })
	ss, err := g.admin().Sessions(g.ctx())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range ss {
		found = found || (s.Transport == "https" && s.Device == "acme-cloud" && s.Filter == "devices/+/telemetry/#")
	}
	if !found {
		t.Fatalf("edgeid sessions does not list the stream: %+v", ss)
	}
	if _, err := g.importJSON(map[string]any{"revocations": []map[string]any{{"kind": "subject", "value": "acme-cloud", "revoked_at": time.Now().UTC().Format(time.RFC3339)}}}); err != nil {
		t.Fatal(err)
	}
	if l := waitLine("event: end"); l == "" {
		t.Fatal("no end event")
	}
	if l := waitLine("data:"); !strings.Contains(l, "revoked") {
		t.Errorf("end event without the reason: %q", l)
	}
	waitFor(t, "the stream gone", func() bool { return len(g.g.HTTP.Streams("")) == 0 })

}
