package edge_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/internal/testenv"
)

// The UMA challenge: the gateway, resource server of its owners' devices,
// answers a refusal of a shared resource with a permission ticket from the
// authority's permission endpoint (a stand-in here, which checks the
// gateway's assertion and the request body), and only then.

// startUMAGateway is an HTTPS gateway enrolled with a UMA stand-in (which
// syncs nothing: the demo bundle and the parties are applied here).
func startUMAGateway(t *testing.T) (*gw, *testenv.UMA) {
	t.Helper()
	u := testenv.StartUMA(t, "test-gw")
	path := filepath.Join(t.TempDir(), "enrollment.json")
	if err := u.E.Save(path); err != nil {
		t.Fatal(err)
	}
	g := startHTTP(t, func(c *config.Config) { c.Sync.Enrollment, c.Sync.MaxStaleness = path, 0 })
	testenv.ApplyDemo(t, g.g, g.iss, g.files.DeviceFingerprint)
	g.apply(t, shareParties())
	return g, u
}

// lastCall is the stand-in's newest call, checked as the gateway's: its
// assertion good, a JSON body naming resource with scope.
func lastCall(t *testing.T, u *testenv.UMA, resource, scope string) testenv.UMACall {
	t.Helper()
	calls := u.Calls()
	if len(calls) == 0 {
		t.Fatal("the permission endpoint was not called")
	}
	c := calls[len(calls)-1]
	if c.AssertionErr != "" || c.Gateway != "test-gw" || c.ContentType != "application/json" {
		t.Errorf("permission request: assertion %q of %q, content type %q", c.AssertionErr, c.Gateway, c.ContentType)
	}
	want := []cloudsync.PermissionRequest{{ResourceID: resource, ResourceScopes: []string{scope}}}
	if len(c.Requests) != 1 || c.Requests[0].ResourceID != want[0].ResourceID || len(c.Requests[0].ResourceScopes) != 1 || c.Requests[0].ResourceScopes[0] != scope {
		t.Errorf("permission request body %+v, want %+v", c.Requests, want)
	}
	return c
}

// header is the value of header name in curl -i output ("" if absent);
// all of them, joined by newlines, when it is there more than once.
func header(out, name string) string {
	var vs []string
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return strings.Join(vs, "\n")
}

func TestShareUMAChallengeHTTP(t *testing.T) {
	t.Parallel()
	g, u := startUMAGateway(t)
	// bob's app with an ordinary access token (no permissions claim): its
	// class has no topics of its own.
	bobTok := g.token("bob-phone", "bob", func(c map[string]any) { c["scope"] = "" })
	events := []string{"-H", "Accept: text/event-stream"}
	bearer := func(tok string) []string { return []string{"-H", "Authorization: Bearer " + tok} }
	get := func(args ...string) (string, string) { return g.curl(t, append([]string{"-i"}, args...)...) }

	// A shared resource: 401 with the ticket the authority gave.
	code, out := get(append(append(events, bearer(bobTok)...), g.httpURL("/v1/topics/devices/thermo-1/telemetry/%23"))...)
	c := lastCall(t, u, "thermo-1/telemetry", "sub")
	want := `UMA realm="edgeid", as_uri="` + u.URL + `", ticket="` + c.Ticket + `"`
	if code != "401" || header(out, "WWW-Authenticate") != want {
		t.Fatalf("event stream of a shared resource: %s, WWW-Authenticate %q, want %q\n%s", code, header(out, "WWW-Authenticate"), want, out)
	}
	// With no credential at all, the UMA challenge and the Bearer/DPoP ones.
	code, out = get(g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp"))
	c = lastCall(t, u, "thermo-1/telemetry", "sub")
	if wa := header(out, "WWW-Authenticate"); code != "401" || !strings.Contains(wa, `UMA realm="edgeid", as_uri="`+u.URL+`", ticket="`+c.Ticket+`"`) ||
		!strings.Contains(wa, `Bearer realm="edgeid"`) || !strings.Contains(wa, `DPoP realm="edgeid"`) {
		t.Fatalf("no credential: %s %q", code, wa)
	}
	// A publish asks for scope pub of a group that may be shared so.
	code, out = get(append(bearer(bobTok), "-X", "POST", "--data", "22", g.httpURL("/v1/topics/devices/thermo-1/commands/set"))...)
	c = lastCall(t, u, "thermo-1/commands", "pub")
	if code != "401" || !strings.Contains(header(out, "WWW-Authenticate"), `ticket="`+c.Ticket+`"`) {
		t.Fatalf("publish on a shared command topic: %s %s", code, out)
	}

	// Not shared resources keep today's answer, and the authority is not
	// asked: a filter wider than one device's group, telemetry published
	// (shared for sub only), alice's own device's topic for her own token.
	calls := len(u.Calls())
	for _, r := range []struct {
		name string
		args []string
	}{
		{"all devices' telemetry", append(append(events, bearer(bobTok)...), g.httpURL("/v1/topics/devices/%2B/telemetry/%23"))},
		{"telemetry published", append(bearer(bobTok), "-X", "POST", "--data", "1", g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp"))},
		{"firmware", append(bearer(bobTok), g.httpURL("/v1/topics/firmware/thermostat/v2"))},
		{"the owner's own device", append(bearer(g.token("thermo-1", "alice", nil)), g.httpURL("/v1/topics/devices/thermo-2/telemetry/temp"))},
	} {
		code, out := get(r.args...)
		if code != "403" || strings.Contains(out, "UMA") || !strings.Contains(out, "insufficient_scope") {
			t.Errorf("%s: %s %s", r.name, code, out)
		}
	}
	if n := len(u.Calls()); n != calls {
		t.Errorf("the authority was asked %d times for refusals of no shared resource", n-calls)
	}

	// The authority refuses, then is gone: 403, no ticket, the Warning of
	// UMA 2.0 Grant §3.2.
	for _, down := range []func(){func() { u.Fail(http.StatusServiceUnavailable) }, u.Srv.Close} {
		down()
		code, out = get(append(append(events, bearer(bobTok)...), g.httpURL("/v1/topics/devices/thermo-1/telemetry/%23"))...)
		if code != "403" || strings.Contains(out, "ticket=") || !strings.Contains(header(out, "Warning"), "UMA Authorization Server Unreachable") {
			t.Errorf("authority down: %s %s", code, out)
		}
	}
}

func TestShareUMAChallengeMQTT(t *testing.T) {
	t.Parallel()
	g, u := startUMAGateway(t)
	bob := g.connectAsking(t, "bob-phone", g.token("bob-phone", "bob", func(c map[string]any) { c["scope"] = "" }))

	sa := bob.suback(t, "devices/thermo-1/telemetry/#")
	c := lastCall(t, u, "thermo-1/telemetry", "sub")
	if sa.Reasons[0] != 0x87 || sa.Properties.ReasonString != `uma ticket="`+c.Ticket+`" as_uri="`+u.URL+`"` ||
		sa.Properties.User.Get("uma-ticket") != c.Ticket || sa.Properties.User.Get("as_uri") != u.URL {
		t.Fatalf("SUBACK %s, reason string %q, user properties %+v", hexCode(sa.Reasons[0]), sa.Properties.ReasonString, sa.Properties.User)
	}

	// Not a shared resource: refused as before, the authority not asked.
	calls := len(u.Calls())
	for _, f := range []string{"devices/+/telemetry/#", "firmware/thermostat/#", "devices/thermo-1/commands/#"} {
		if sa := bob.suback(t, f); sa.Reasons[0] != 0x87 || sa.Properties.ReasonString != "" || len(sa.Properties.User) != 0 {
			t.Errorf("%s: SUBACK %s %q %+v", f, hexCode(sa.Reasons[0]), sa.Properties.ReasonString, sa.Properties.User)
		}
	}
	if n := len(u.Calls()); n != calls {
		t.Errorf("the authority was asked %d times for filters that are no shared resource", n-calls)
	}

	// The authority down: refused without a ticket, saying so.
	u.Fail(http.StatusServiceUnavailable)
	if sa := bob.suback(t, "devices/thermo-2/status"); sa.Reasons[0] != 0x87 || strings.Contains(sa.Properties.ReasonString, "ticket=") ||
		!strings.Contains(sa.Properties.ReasonString, "no permission ticket") || sa.Properties.User.Get("uma-ticket") != "" {
		t.Errorf("authority down: SUBACK %s %q %+v", hexCode(sa.Reasons[0]), sa.Properties.ReasonString, sa.Properties.User)
	}
	if len(u.Calls()) != calls+1 {
		t.Errorf("calls: %+v", u.Calls())
	}
}
