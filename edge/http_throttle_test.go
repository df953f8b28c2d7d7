package edge_test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
)

// The HTTPS front end under the same PUBLISH throttle as MQTT and CoAP.

func TestHTTPThrottle(t *testing.T) {
	g := startHTTP(t, throttled(config.Rates{MessagesPerSecond: 1, MessageBurst: 2}, config.Rates{}, 0))
	tok := g.token("thermo-1", "alice", nil)
	svc := g.telemetry(t)
	before := g.g.Broker.Counters.Throttled.Load()

	// Three quick POSTs: one curl, one connection.
	u := func(p string) string { return g.httpURL("/v1/topics/devices/thermo-1/telemetry/" + p) }
	out, err := exec.Command("curl", "-s", "--cacert", g.files.CACert, "--max-time", "30", "-X", "POST", "-H", "Authorization: Bearer "+tok,
		"--data", "x", "-w", "%{http_code} %header{retry-after}\n", u("t1"), "-o", "/dev/null", u("t2"), "-o", "/dev/null", u("t3"), "-o", "/dev/null").Output()
	if err != nil {
		t.Fatalf("curl: %v %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || strings.TrimSpace(lines[0]) != "204" || strings.TrimSpace(lines[1]) != "204" || !strings.HasPrefix(lines[2], "429 ") {
		t.Fatalf("three quick POSTs: %q, want 204, 204, 429", lines)
	}
	retry, err := strconv.Atoi(strings.TrimPrefix(lines[2], "429 "))
	if err != nil || retry < 1 {
		t.Fatalf("429 with Retry-After %q", strings.TrimPrefix(lines[2], "429 "))
	}
	if n := g.g.Broker.Counters.Throttled.Load() - before; n != 1 {
		t.Errorf("Counters.Throttled counted %d, want 1", n)
	}
	svc.expectMsg(t, "devices/thermo-1/telemetry/t1", "x")
	svc.expectMsg(t, "devices/thermo-1/telemetry/t2", "x")

	// After Retry-After, a POST is taken again; the throttled one was never published.
	time.Sleep(time.Duration(retry) * time.Second)
	if code, body := g.curl(t, "-X", "POST", "-H", "Authorization: Bearer "+tok, "--data", "marker", u("marker")); code != "204" {
		t.Fatalf("after Retry-After: %s %s", code, body)
	}
	onlyMarker(t, svc, "devices/thermo-1/telemetry/marker", "marker")
}

// TestHTTPPublishCountedOnce: an HTTPS publish is one message in for the
// metrics (edgeid_messages_in_total), as an MQTT or CoAP one; a read of the
// retained message one out.
func TestHTTPPublishCountedOnce(t *testing.T) {
	g := startHTTP(t)
	tok := g.token("thermo-1", "alice", nil)
	c := &g.g.Broker.Counters
	in, bytesIn := c.MessagesIn.Load(), c.BytesIn.Load()
	if code, body := g.curl(t, "-X", "POST", "-H", "Authorization: Bearer "+tok, "--data", "12345", g.httpURL("/v1/topics/devices/thermo-1/telemetry/a?retain=1")); code != "204" {
		t.Fatalf("publish: %s %s", code, body)
	}
	if n, b := c.MessagesIn.Load()-in, c.BytesIn.Load()-bytesIn; n != 1 || b != 5 {
		t.Errorf("one HTTPS publish of 5 bytes counted as %d messages, %d bytes in", n, b)
	}
	out := c.MessagesOut.Load()
	if code, _ := g.curl(t, "-H", "Authorization: Bearer "+g.token("acme-cloud", "acme-cloud", nil), g.httpURL("/v1/topics/devices/thermo-1/telemetry/a")); code != "200" {
		t.Fatalf("read: %s", code)
	}
	if n := c.MessagesOut.Load() - out; n != 1 {
		t.Errorf("one retained read counted as %d messages out", n)
	}
}
