package edge_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/config"
)

// Malformed requests to the HTTPS front end, with curl: each gets a clear
// 4xx and publishes nothing (no MQTT delivery, no retained message).

// challengeRE is one WWW-Authenticate challenge as the gateway writes it.
var challengeRE = regexp.MustCompile(`^(Bearer|DPoP) realm="edgeid"(, [a-z_]+="[^"\\]*")*$`)

func TestHTTPBadRequests(t *testing.T) {
	g := startHTTP(t, func(c *config.Config) {
		c.MQTT.MaxPacketSize = 4096
		c.MQTT.MaxConnectSize = 4096
		c.HTTP.MaxHeaderBytes = 4096
	})
	tok := g.token("thermo-1", "alice", nil)
	svc := g.telemetry(t)
	auth := "Authorization: Bearer " + tok
	base := "/v1/topics/devices/thermo-1/telemetry/"
	var manyHeaders []string
	for i := range 30 {
		manyHeaders = append(manyHeaders, "-H", fmt.Sprintf("X-Pad-%d: %s", i, strings.Repeat("p", 1000)))
	}

	for _, c := range []struct {
		name string
		code string
		want []string // in the body (with -i: the headers too)
		args []string
	}{
		// HTTP/1.1: 431. (Over HTTP/2, Go's server ends a header block
		// this far over its SETTINGS_MAX_HEADER_LIST_SIZE with
		// REFUSED_STREAM or GOAWAY, a connection error: see below.)
		{"a header over http.max_header_bytes", "431", nil,
			[]string{"--http1.1", "-H", auth, "-H", "X-Big: " + strings.Repeat("x", 64<<10), "--data", "big-header", g.httpURL(base + "temp?retain=1")}},
		{"headers over http.max_header_bytes", "431", nil,
			append([]string{"--http1.1", "-H", auth, "--data", "many-headers", g.httpURL(base + "temp?retain=1")}, manyHeaders...)},
		{"a POST topic with #", "400", []string{"#", "wildcard"},
			[]string{"-H", auth, "--data", "wild", g.httpURL(base + "%23?retain=1")}},
		{"a POST topic with +", "400", []string{"+", "wildcard"},
			[]string{"-H", auth, "--data", "wild", g.httpURL("/v1/topics/devices/thermo-1/+/temp?retain=1")}},
		{"invalid UTF-8 in the topic", "400", []string{"UTF-8"},
			[]string{"-H", auth, "--data", "utf8", g.httpURL(base + "%FF%FE?retain=1")}},
		{"U+0000 in the topic", "400", []string{"invalid_request"},
			[]string{"-H", auth, "--data", "nul", g.httpURL(base + "a%00b?retain=1")}},
		{"a body over mqtt.max_packet_size", "413", []string{"max_packet_size"},
			[]string{"-H", auth, "--data-binary", strings.Repeat("b", 8000), g.httpURL(base + "temp?retain=1")}},
		{"qos=2", "400", []string{"qos"},
			[]string{"-H", auth, "--data", "qos2", g.httpURL(base + "temp?retain=1&qos=2")}},
		{"qos=x", "400", []string{"qos"},
			[]string{"-H", auth, "--data", "qosx", g.httpURL(base + "temp?retain=1&qos=x")}},
		{"retain=maybe", "400", []string{"retain"},
			[]string{"-H", auth, "--data", "retain", g.httpURL(base + "temp?retain=maybe")}},
		{"an unknown Authorization scheme", "401", []string{"Basic", "Bearer or DPoP"},
			[]string{"-H", "Authorization: Basic dGhlcm1vLTE6cHc=", "--data", "basic", g.httpURL(base + "temp?retain=1")}},
		{"a Bearer token with a DPoP header", "401", []string{`error="invalid_request"`, "DPoP"},
			[]string{"-i", "-H", auth, "-H", "DPoP: eyJhbGciOiJFUzI1NiJ9.e30.c2ln", "--data", "bearer-dpop", g.httpURL(base + "temp?retain=1")}},
		{"a bad Content-Type", "400", []string{"Content-Type"},
			[]string{"-H", auth, "-H", "Content-Type: /;;", "--data", "ctype", g.httpURL(base + "temp?retain=1")}},
	} {
		code, body := g.curl(t, append([]string{"-X", "POST"}, c.args...)...)
		if code != c.code {
			t.Errorf("%s: %s %s, want %s", c.name, code, body, c.code)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: %s %s, want it to say %q", c.name, code, body, w)
			}
		}
	}

	// Over HTTP/2 the same requests are refused too, as a stream or
	// connection error (curl reports no status), never served.
	for _, extra := range [][]string{{"-H", "X-Big: " + strings.Repeat("x", 64<<10)}, manyHeaders} {
		if code, body := g.curl(t, append([]string{"--http2", "-X", "POST", "-H", auth, "--data", "h2-big", g.httpURL(base + "temp?retain=1")}, extra...)...); code != "000" && code != "431" {
			t.Errorf("HTTP/2 headers over http.max_header_bytes: %s %s", code, body)
		}
	}

	// Every challenge is a well-formed RFC 9110 challenge: a scheme the
	// gateway takes, then comma-separated auth-params.
	for _, args := range [][]string{
		{g.httpURL(base + "temp")},
		{"-H", "Authorization: Bearer not.a.token", g.httpURL(base + "temp")},
		{"-H", "Authorization: DPoP " + tok, g.httpURL(base + "temp")},
		{"-H", "Authorization: Basic", g.httpURL(base + "temp")},
		{"-H", "Authorization: bearer", g.httpURL(base + "temp")},
		{"-H", "Authorization: Basic dGhlcm1vLTE6cHc=", g.httpURL(base + "temp")},
		{"-H", auth, "-H", "DPoP: x", g.httpURL(base + "temp")},
	} {
		code, body := g.curl(t, append([]string{"-i", "-X", "POST", "--data", "x"}, args...)...)
		label := strings.Join(args[:len(args)-1], " ")
		if len(label) > 60 {
			label = label[:60] + "..."
		}
		n := 0
		for _, l := range strings.Split(body, "\r\n") {
			name, v, _ := strings.Cut(l, ": ")
			if !strings.EqualFold(name, "WWW-Authenticate") {
				continue
			}
			n++
			if !challengeRE.MatchString(v) {
				t.Errorf("%s: WWW-Authenticate %q is not <Bearer|DPoP> realm=\"edgeid\"[, name=\"value\"]...", label, v)
			}
		}
		if code != "401" || n == 0 {
			t.Errorf("%s: %s with %d challenges: %s", label, code, n, body)
		}
	}

	// An Authorization header with a scheme and no credential names only
	// the schemes the gateway takes.
	code, body := g.curl(t, "-i", "-X", "POST", "-H", "Authorization: Basic", "--data", "x", g.httpURL(base+"temp?retain=1"))
	if lb := strings.ToLower(body); code != "401" || strings.Contains(lb, "www-authenticate: basic") || !strings.Contains(lb, "www-authenticate: bearer") {
		t.Errorf("Authorization: Basic without a credential: %s %s", code, body)
	}

	// Nothing was published: no retained message, no delivery before the marker.
	svcTok := g.token("acme-cloud", "acme-cloud", nil)
	code, body = g.curl(t, "-H", "Authorization: Bearer "+svcTok, g.httpURL(base+"temp"))
	if code != "404" {
		t.Errorf("retained message after the bad requests: %s %q", code, body)
	}
	if code, body := g.curl(t, "-X", "POST", "-H", auth, "--data", "marker", g.httpURL(base+"marker")); code != "204" {
		t.Fatalf("marker: %s %s", code, body)
	}
	onlyMarker(t, svc, "devices/thermo-1/telemetry/marker", "marker")
	if strings.Contains(g.logs.String(), "panic") {
		t.Errorf("a handler panicked:\n%s", g.logs.String())
	}
}
