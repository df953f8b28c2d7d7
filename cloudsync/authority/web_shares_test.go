package authority_test

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// The owners' sharing pages (issue 14): Share on a device, Shared by me,
// Requests, Shared with me, Household.

const webPassword = "long enough password"

// webUser registers name and logs it in, in a browser of its own.
func (f *fixture) webUser(name string) *browser {
	f.t.Helper()
	b := f.browser()
	_, _, csrf := b.get("/register")
	if code, body := b.post("/register", url.Values{"csrf": {csrf}, "username": {name}, "email": {name + "@example.com"}, "password": {webPassword}}); code != 200 {
		f.t.Fatalf("register %s: %d\n%s", name, code, body)
	}
	b.login(name, webPassword, 200)
	return b
}

// login logs in as name and wants code.
func (b *browser) login(name, password string, want int) string {
	b.t.Helper()
	_, _, csrf := b.get("/login")
	code, body := b.post("/login", url.Values{"csrf": {csrf}, "username": {name}, "password": {password}})
	if code != want {
		b.t.Fatalf("login %s: %d, want %d\n%s", name, code, want, body)
	}
	return body
}

// csrf is the CSRF token of the browser's session.
func (b *browser) csrf() string {
	b.t.Helper()
	_, _, c := b.get("/devices")
	if c == "" {
		b.t.Fatal("no CSRF token on /devices")
	}
	return c
}

// submit posts form with the session's CSRF token.
func (b *browser) submit(path string, form url.Values) (int, string) {
	b.t.Helper()
	form.Set("csrf", b.csrf())
	return b.post(path, form)
}

// webSharing is a fixture with owners alice (two thermostats, living-1
// named "Living room" and bedroom-1), bob and carol logged in, bob's own
// thermostat bob-1, and a registered client svc-1 (a service).
func webSharing(t *testing.T) (f *fixture, alice, bob, carol *browser) {
	f = newFixture(t)
	alice, bob, carol = f.webUser("alice"), f.webUser("bob"), f.webUser("carol")
	if _, err := f.a.Apply(&store.Batch{Classes: demo.Classes(), Devices: []store.Device{
		{ID: "living-1", Name: "Living room", Serial: "TH-1", Class: "thermostat", Status: store.DeviceActive, Owner: "alice"},
		{ID: "bedroom-1", Serial: "TH-2", Class: "thermostat", Status: store.DeviceActive, Owner: "alice"},
		{ID: "bob-1", Serial: "TH-3", Class: "thermostat", Status: store.DeviceActive, Owner: "bob"},
		{ID: "svc-1", Name: "Energy report", Class: "app", Status: store.DeviceActive},
	}}, "test"); err != nil {
		t.Fatal(err)
	}
	return f, alice, bob, carol
}

func grants(t *testing.T, f *fixture) []store.Grant {
	t.Helper()
	gs, err := f.a.Store.Grants()
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

// shareWithBob is alice's share of living-1's telemetry with bob, made
// through the Authority.
func shareWithBob(t *testing.T, f *fixture, win *store.Window, expires time.Time) store.Grant {
	t.Helper()
	g, err := f.a.CreateShare("alice", authority.ShareInput{Devices: []string{"living-1"}, Groups: map[string][]string{"telemetry": {"sub"}},
		Grantee: "bob", GranteeKind: store.GranteeUser, Window: win, Expires: expires}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// element is the HTML of the element with id (up to its closing tag of
// the same name; elements of these pages do not nest in themselves).
func element(body, id string) string {
	m := regexp.MustCompile(`<(\w+)[^>]*\bid="` + regexp.QuoteMeta(id) + `"`).FindStringSubmatchIndex(body)
	if m == nil {
		return ""
	}
	tag := body[m[2]:m[3]]
	rest := body[m[0]:]
	if end := strings.Index(rest, "</"+tag+">"); end >= 0 {
		return rest[:end+len(tag)+3]
	}
	return rest
}

// fieldError is the text of the error shown for field inside the element
// within, or anywhere with within "" (empty: none there).
func fieldError(body, within, field string) string {
	if within != "" {
		body = element(body, within)
	}
	m := regexp.MustCompile(`<div class="error" data-field="` + regexp.QuoteMeta(field) + `"[^>]*>([^<]*)</div>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

func localTomorrowAt(hour int) time.Time {
	now := time.Now().In(authority.ShareZone)
	return time.Date(now.Year(), now.Month(), now.Day()+1, hour, 0, 0, 0, authority.ShareZone)
}

func TestShareFormShowsTheDevicesGroups(t *testing.T) {
	f, alice, bob, _ := webSharing(t)
	_, body, _ := alice.get("/devices")
	if !strings.Contains(element(body, "dev-living-1"), `href="/devices/living-1/share"`) {
		t.Fatalf("no Share link on My devices:\n%s", body)
	}
	code, body, _ := alice.get("/devices/living-1/share")
	if code != 200 || element(body, "share-form") == "" {
		t.Fatalf("share form: %d\n%s", code, body)
	}
	groups := element(body, "groups-field")
	for _, want := range []string{`name="group:telemetry:sub"`, `name="group:status:sub"`, `name="group:commands:pub"`,
		"telemetry — read (sub)", "commands — send (pub)", "temperature and humidity readings"} {
		if !strings.Contains(groups, want) {
			t.Errorf("groups: no %s in\n%s", want, groups)
		}
	}
	if strings.Contains(groups, "group:telemetry:pub") || strings.Contains(groups, "group:commands:sub") {
		t.Errorf("a scope the class does not allow is offered:\n%s", groups)
	}
	devices := element(body, "devices-field")
	if !strings.Contains(devices, `name="devices" value="bedroom-1"`) || strings.Contains(devices, `value="living-1"`) || strings.Contains(devices, "bob-1") {
		t.Errorf("other devices of alice's:\n%s", devices)
	}
	for _, id := range []string{"kind-user", "kind-member", "kind-client", "grantee", "client", "expires", "window_from", "window_to", "zone"} {
		if element(body, id) == "" {
			t.Errorf("no #%s on the share form", id)
		}
	}
	if !strings.Contains(element(body, "zone"), time.Now().In(authority.ShareZone).Format("MST")) {
		t.Errorf("the form does not say its time zone: %s", element(body, "zone"))
	}
	// Not bob's to share.
	if code, body, _ := bob.get("/devices/living-1/share"); code != 404 || element(body, "share-form") != "" {
		t.Errorf("bob opens alice's share form: %d", code)
	}
	if code, _ := bob.submit("/devices/living-1/share", url.Values{"grantee_kind": {"user"}, "grantee": {"carol"}, "group:telemetry:sub": {"1"}}); code != 404 {
		t.Errorf("bob shares alice's device: %d", code)
	}
	// Logged out: sent to log in.
	anon := f.browser()
	anon.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if code, _, _ := anon.get("/devices/living-1/share"); code != 303 {
		t.Errorf("anonymous share form: %d, want 303", code)
	}
	if len(grants(t, f)) != 0 {
		t.Fatal("a refused share was stored")
	}
}

func TestShareWithWindowAndExpiry(t *testing.T) {
	f, alice, _, _ := webSharing(t)
	until := localTomorrowAt(18)
	code, body := alice.submit("/devices/living-1/share", url.Values{"grantee_kind": {"user"}, "grantee": {" Bob "},
		"group:telemetry:sub": {"1"}, "group:status:sub": {"1"}, "devices": {"bedroom-1"},
		"expires": {until.Format("2006-01-02T15:04")}, "window_from": {"18:00"}, "window_to": {"20:00"}})
	if code != 200 || !strings.Contains(body, `id="notice"`) || !strings.Contains(element(body, "notice"), "Shared status, telemetry of Living room (living-1) with bob") {
		t.Fatalf("share: %d\n%s", code, body)
	}
	gs := grants(t, f)
	if len(gs) != 1 {
		t.Fatalf("grants: %+v", gs)
	}
	g := gs[0]
	if g.Owner != "alice" || g.Device != "living-1" || g.Grantee != "bob" || g.GranteeKind != store.GranteeUser ||
		g.Window == nil || *g.Window != (store.Window{From: "18:00", To: "20:00"}) || !g.Expires.Equal(until) {
		t.Fatalf("grant: %+v (window %v), want expiry %v", g, g.Window, until)
	}
	want := map[string]string{"living-1/telemetry": "sub", "living-1/status": "sub", "bedroom-1/telemetry": "sub", "bedroom-1/status": "sub"}
	if len(g.Resources) != len(want) {
		t.Fatalf("resources: %+v", g.Resources)
	}
	for _, r := range g.Resources {
		if want[r.ID()] != strings.Join(r.Scopes, ",") {
			t.Errorf("resource %s scopes %v, want %s", r.ID(), r.Scopes, want[r.ID()])
		}
	}
	row := element(body, "share-"+g.ID)
	for _, w := range []string{"bob", "every day 18:00–20:00", "until " + until.Format("2 Jan 2006 15:04"), "living-1/telemetry", "bedroom-1/status", "telemetry — read (sub)", `id="revoke-` + g.ID + `"`} {
		if !strings.Contains(row, w) {
			t.Errorf("Shared by me row: no %q in\n%s", w, row)
		}
	}
	// The notice is shown once.
	if _, body, _ := alice.get("/shares"); strings.Contains(body, `id="notice"`) {
		t.Error("the notice is shown again on reload")
	}
	// A share with a service (client), no conditions.
	if code, body := alice.submit("/devices/living-1/share", url.Values{"grantee_kind": {"client"}, "client": {"svc-1"}, "group:commands:pub": {"1"}}); code != 200 ||
		!strings.Contains(body, "with the service svc-1") {
		t.Fatalf("share with a client: %d\n%s", code, body)
	}
	var svc *store.Grant
	for _, g := range grants(t, f) {
		if g.GranteeKind == store.GranteeClient {
			svc = &g
		}
	}
	if svc == nil || svc.Grantee != "svc-1" || svc.Window != nil || !svc.Expires.IsZero() || len(svc.Resources) != 1 || svc.Resources[0].ID() != "living-1/commands" {
		t.Fatalf("client share: %+v", svc)
	}
	_, body, _ = alice.get("/shares")
	if row := element(body, "share-"+svc.ID); !strings.Contains(row, "Energy report, service or app") || !strings.Contains(row, "at all hours, until revoked") || !strings.Contains(row, "commands — send (pub)") {
		t.Errorf("client share row:\n%s", row)
	}
}

func TestShareBadInputShowsTheFieldsError(t *testing.T) {
	f, alice, _, _ := webSharing(t)
	good := func() url.Values {
		return url.Values{"grantee_kind": {"user"}, "grantee": {"bob"}, "group:telemetry:sub": {"1"}}
	}
	past := time.Now().In(authority.ShareZone).Add(-time.Hour).Format("2006-01-02T15:04")
	for _, c := range []struct {
		name, field, within, says string
		mod                       func(url.Values)
	}{
		{"no group", "groups", "groups-field", "choose what to share", func(v url.Values) { v.Del("group:telemetry:sub") }},
		{"window 7pm", "window", "window-field", `"7pm" is not a time of day as HH:MM`, func(v url.Values) { v.Set("window_from", "7pm"); v.Set("window_to", "20:00") }},
		{"window half", "window", "window-field", "give both the start and the end", func(v url.Values) { v.Set("window_from", "19:00") }},
		{"empty window", "window", "window-field", "an empty window", func(v url.Values) { v.Set("window_from", "19:00"); v.Set("window_to", "19:00") }},
		{"past expiry", "expires", "conditions-field", "is in the past", func(v url.Values) { v.Set("expires", past) }},
		{"bad expiry", "expires", "conditions-field", "give a date and time", func(v url.Values) { v.Set("expires", "tomorrow") }},
		{"unknown grantee", "grantee", "grantee-field", `no active account is called "nobody"`, func(v url.Values) { v.Set("grantee", "nobody") }},
		{"no grantee", "grantee", "grantee-field", "type the username", func(v url.Values) { v.Set("grantee", "") }},
		{"self", "grantee", "grantee-field", "that is you", func(v url.Values) { v.Set("grantee", "alice") }},
		{"unknown client", "grantee", "grantee-field", "no active registered client", func(v url.Values) { v.Set("grantee_kind", "client"); v.Set("client", "svc-9") }},
		{"not a member", "grantee", "grantee-field", "choose a member of your household", func(v url.Values) { v.Set("grantee_kind", "member"); v.Set("member", "bob") }},
		{"no kind", "grantee_kind", "grantee-field", "choose who to share with", func(v url.Values) { v.Del("grantee_kind") }},
		{"scope not allowed", "groups", "groups-field", `cannot be shared with scope "pub"`, func(v url.Values) { v.Set("group:telemetry:pub", "1") }},
		{"someone else's device", "devices", "devices-field", `"bob-1" is not one of your devices`, func(v url.Values) { v.Set("devices", "bob-1") }},
	} {
		form := good()
		c.mod(form)
		code, body := alice.submit("/devices/living-1/share", form)
		if code != 422 {
			t.Errorf("%s: %d, want 422", c.name, code)
			continue
		}
		if msg := fieldError(body, c.within, c.field); !strings.Contains(msg, c.says) {
			t.Errorf("%s: error beside %s in #%s is %q, want %q\n%s", c.name, c.field, c.within, msg, c.says, element(body, c.within))
		}
		if n := strings.Count(body, `class="error"`); n != 1 {
			t.Errorf("%s: %d errors shown, want 1", c.name, n)
		}
		if element(body, "share-form") == "" {
			t.Errorf("%s: the form is not shown again", c.name)
		}
	}
	// Several problems at once are each shown beside their field, and what
	// was typed is kept.
	code, body := alice.submit("/devices/living-1/share", url.Values{"grantee_kind": {"user"}, "grantee": {"bob"}, "expires": {"soon"}, "window_from": {"7pm"}, "window_to": {"8pm"}, "devices": {"bedroom-1"}})
	if code != 422 || fieldError(body, "groups-field", "groups") == "" || fieldError(body, "conditions-field", "expires") == "" || fieldError(body, "window-field", "window") == "" {
		t.Fatalf("several problems: %d\n%s", code, body)
	}
	if !strings.Contains(element(body, "grantee"), `value="bob"`) || !strings.Contains(element(body, "device-bedroom-1"), "checked") || !strings.Contains(element(body, "kind-user"), "checked") {
		t.Errorf("the form lost what was typed:\n%s", element(body, "share-form"))
	}
	if gs := grants(t, f); len(gs) != 0 {
		t.Fatalf("bad input stored shares: %+v", gs)
	}
}

func TestSharedByMeListsAndRevokes(t *testing.T) {
	f, alice, bob, carol := webSharing(t)
	until := localTomorrowAt(9)
	g := shareWithBob(t, f, &store.Window{From: "22:00", To: "06:00"}, until)
	_, body, _ := alice.get("/shares")
	row := element(body, "share-"+g.ID)
	for _, w := range []string{"bob", "registered user", "living-1", "Living room", "telemetry — read (sub)", "every day 22:00–06:00 (overnight)", "until " + until.Format("2 Jan 2006 15:04"),
		`id="revoke-` + g.ID + `"`, `id="confirm-revoke-` + g.ID + `"`, "required"} {
		if !strings.Contains(row, w) {
			t.Errorf("row: no %q in\n%s", w, row)
		}
	}
	// Others do not see it, and cannot revoke it.
	if _, body, _ := carol.get("/shares"); strings.Contains(body, g.ID) {
		t.Error("carol sees alice's share")
	}
	if code, body := carol.submit("/shares/"+g.ID+"/revoke", url.Values{"confirm": {"yes"}}); code != 404 || fieldError(body, "", "share") == "" {
		t.Errorf("carol revokes alice's share: %d\n%s", code, body)
	}
	// Not confirmed: refused, beside the row's button.
	code, body := alice.submit("/shares/"+g.ID+"/revoke", url.Values{})
	if code != 422 || !strings.Contains(fieldError(body, "share-"+g.ID, "confirm"), "tick the box") {
		t.Fatalf("revoke without confirming: %d\n%s", code, element(body, "share-"+g.ID))
	}
	if _, err := f.a.Store.Grant(g.ID); err != nil {
		t.Fatalf("an unconfirmed or foreign revoke deleted the share: %v", err)
	}
	code, body = alice.submit("/shares/"+g.ID+"/revoke", url.Values{"confirm": {"yes"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Revoked the share: telemetry with bob") || element(body, "share-"+g.ID) != "" {
		t.Fatalf("revoke: %d\n%s", code, body)
	}
	if _, err := f.a.Store.Grant(g.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked share still in the store: %v", err)
	}
	if _, body, _ := bob.get("/shared-with-me"); strings.Contains(body, g.ID) {
		t.Error("bob still sees the revoked share")
	}
	if code, _ := alice.submit("/shares/"+g.ID+"/revoke", url.Values{"confirm": {"yes"}}); code != 404 {
		t.Errorf("revoking it again: %d, want 404", code)
	}
}

func TestRequestsApproveAndDeny(t *testing.T) {
	f, alice, _, carol := webSharing(t)
	ask, err := f.a.SubmitRequest("bob", store.GranteeUser, "", []cloudsync.PermissionRequest{{ResourceID: "living-1/telemetry", ResourceScopes: []string{"sub"}}})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := f.a.SubmitRequest("svc-1", store.GranteeClient, "svc-1", []cloudsync.PermissionRequest{{ResourceID: "bedroom-1/status", ResourceScopes: []string{"sub"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := alice.get("/requests")
	if c := element(body, "pending-count"); !strings.Contains(c, ">2<") {
		t.Errorf("navigation's pending count: %q", c)
	}
	row := element(body, "request-"+ask.ID)
	for _, w := range []string{"bob", "registered user", "living-1/telemetry", "telemetry — read (sub)", `id="approve-` + ask.ID + `"`, `id="deny-` + ask.ID + `"`,
		`id="expires-` + ask.ID + `"`, `id="window_from-` + ask.ID + `"`} {
		if !strings.Contains(row, w) {
			t.Errorf("request row: no %q in\n%s", w, row)
		}
	}
	if row := element(body, "request-"+svc.ID); !strings.Contains(row, "svc-1") || !strings.Contains(row, "service or app") || !strings.Contains(row, "bedroom-1/status") {
		t.Errorf("client request row:\n%s", row)
	}
	// Not carol's to decide.
	if code, _ := carol.submit("/requests/"+ask.ID+"/approve", url.Values{}); code != 404 {
		t.Errorf("carol approves alice's request: %d", code)
	}
	if _, body, _ := carol.get("/requests"); strings.Contains(body, ask.ID) {
		t.Error("carol sees alice's request")
	}
	// A bad window is shown beside the request's window fields, kept, and decides nothing.
	code, body := alice.submit("/requests/"+ask.ID+"/approve", url.Values{"window_from": {"7am"}, "window_to": {"08:00"}})
	if code != 422 || !strings.Contains(fieldError(body, "request-"+ask.ID, "window"), `"7am" is not a time of day`) || fieldError(body, "request-"+svc.ID, "window") != "" {
		t.Fatalf("approve with a bad window: %d\n%s", code, element(body, "request-"+ask.ID))
	}
	if r, _ := f.a.ShareRequestByID(ask.ID); r.State != authority.RequestPending || len(grants(t, f)) != 0 {
		t.Fatalf("a refused approval decided: %+v", r)
	}
	code, body = alice.submit("/requests/"+ask.ID+"/approve", url.Values{"window_from": {"07:00"}, "window_to": {"08:00"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Approved: bob now has telemetry") {
		t.Fatalf("approve: %d\n%s", code, body)
	}
	r, _ := f.a.ShareRequestByID(ask.ID)
	g, err := f.a.Store.Grant(r.Share)
	if r.State != authority.RequestApproved || err != nil || g.Grantee != "bob" || g.Window == nil || g.Window.From != "07:00" || len(g.Resources) != 1 || g.Resources[0].ID() != "living-1/telemetry" {
		t.Fatalf("approved request %+v, share %+v %v", r, g, err)
	}
	if hist := element(body, "request-"+ask.ID); !strings.Contains(hist, `data-state="approved"`) || !strings.Contains(hist, g.ID) {
		t.Errorf("history of the approved request:\n%s", hist)
	}
	if c := element(body, "pending-count"); !strings.Contains(c, ">1<") {
		t.Errorf("pending count after approving: %q", c)
	}
	// Deny needs confirming.
	if code, body := alice.submit("/requests/"+svc.ID+"/deny", url.Values{}); code != 422 || !strings.Contains(fieldError(body, "request-"+svc.ID, "confirm"), "tick the box") {
		t.Fatalf("deny without confirming: %d\n%s", code, element(body, "request-"+svc.ID))
	}
	if r, _ := f.a.ShareRequestByID(svc.ID); r.State != authority.RequestPending {
		t.Fatalf("an unconfirmed deny decided: %+v", r)
	}
	code, body = alice.submit("/requests/"+svc.ID+"/deny", url.Values{"confirm": {"yes"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Denied: the service svc-1") || !strings.Contains(element(body, "request-"+svc.ID), `data-state="denied"`) {
		t.Fatalf("deny: %d\n%s", code, body)
	}
	if r, _ := f.a.ShareRequestByID(svc.ID); r.State != authority.RequestDenied {
		t.Fatalf("denied request: %+v", r)
	}
	if len(grants(t, f)) != 1 {
		t.Fatal("denying made a share")
	}
	if strings.Contains(body, `id="pending-count"`) || element(body, "none") == "" {
		t.Error("nothing is pending, but the page says otherwise")
	}
	// Deciding again is refused.
	if code, body := alice.submit("/requests/"+svc.ID+"/approve", url.Values{}); code != 409 || !strings.Contains(fieldError(body, "request-"+svc.ID, "request"), "already denied") {
		t.Errorf("approving a denied request: %d, want 409 and why\n%s", code, element(body, "request-"+svc.ID))
	}
}

func TestSharedWithMeGivesUp(t *testing.T) {
	f, alice, bob, carol := webSharing(t)
	g := shareWithBob(t, f, nil, time.Time{})
	_, body, _ := bob.get("/shared-with-me")
	row := element(body, "share-"+g.ID)
	for _, w := range []string{"From <span class=\"owner\">alice</span>", "living-1/telemetry", "Living room", "telemetry — read (sub)", "at all hours, until revoked", `id="give-up-` + g.ID + `"`} {
		if !strings.Contains(row, w) {
			t.Errorf("row: no %q in\n%s", w, row)
		}
	}
	if _, body, _ := alice.get("/shared-with-me"); strings.Contains(body, g.ID) {
		t.Error("the owner's Shared with me lists her own share")
	}
	if code, _ := carol.submit("/shared-with-me/"+g.ID+"/give-up", url.Values{"confirm": {"yes"}}); code != 404 {
		t.Errorf("carol gives up bob's share: %d", code)
	}
	if code, body := bob.submit("/shared-with-me/"+g.ID+"/give-up", url.Values{}); code != 422 || fieldError(body, "share-"+g.ID, "confirm") == "" {
		t.Fatalf("give up without confirming: %d", code)
	}
	if _, err := f.a.Store.Grant(g.ID); err != nil {
		t.Fatalf("share gone before bob confirmed: %v", err)
	}
	code, body := bob.submit("/shared-with-me/"+g.ID+"/give-up", url.Values{"confirm": {"yes"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Gave up the share: telemetry from alice") || strings.Contains(body, `id="share-`+g.ID+`"`) {
		t.Fatalf("give up: %d\n%s", code, body)
	}
	if _, err := f.a.Store.Grant(g.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("given-up share still in the store: %v", err)
	}
}

func TestHouseholdMembers(t *testing.T) {
	f, alice, bob, _ := webSharing(t)
	for _, c := range []struct{ name, password, field, says string }{
		{"Kid", "short", "password", "use 10 to 128 characters"},
		{"bob", "kid's own password", "username", "that name is taken"},
		{"x", "kid's own password", "username", "use 3 to 32"},
	} {
		code, body := alice.submit("/household", url.Values{"username": {c.name}, "name": {"Kim"}, "password": {c.password}})
		if code != 422 || !strings.Contains(fieldError(body, "member-form", c.field), c.says) {
			t.Errorf("add %q: %d; error beside %s: %q\n%s", c.name, code, c.field, fieldError(body, "member-form", c.field), element(body, "member-form"))
		}
		if strings.Contains(body, c.password) {
			t.Error("the password was shown again")
		}
	}
	code, body := alice.submit("/household", url.Values{"username": {"kid"}, "name": {"Kim"}, "password": {"kid's own password"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Added kid") || !strings.Contains(element(body, "member-kid"), "Kim") {
		t.Fatalf("add member: %d\n%s", code, body)
	}
	if u, err := f.a.Store.User("kid"); err != nil || u.Manager != "alice" {
		t.Fatalf("member: %+v %v", u, err)
	}
	// The share form offers the member; sharing with it.
	_, body, _ = alice.get("/devices/living-1/share")
	if !strings.Contains(element(body, "member"), `<option value="kid">kid (Kim)</option>`) {
		t.Fatalf("share form's members:\n%s", element(body, "grantee-field"))
	}
	if code, body := alice.submit("/devices/living-1/share", url.Values{"grantee_kind": {"member"}, "member": {"kid"}, "group:telemetry:sub": {"1"}, "window_from": {"16:00"}, "window_to": {"19:00"}}); code != 200 {
		t.Fatalf("share with the member: %d\n%s", code, body)
	}
	gs := grants(t, f)
	if len(gs) != 1 || gs[0].Grantee != "kid" || gs[0].GranteeKind != store.GranteeUser {
		t.Fatalf("member's share: %+v", gs)
	}
	_, body, _ = alice.get("/shares")
	if !strings.Contains(element(body, "share-"+gs[0].ID), "Kim, household member") {
		t.Errorf("Shared by me does not say it is a household member:\n%s", element(body, "share-"+gs[0].ID))
	}
	// The member logs in and has only what it is given.
	kid := f.browser()
	kid.login("kid", "kid's own password", 200)
	if _, body, _ := kid.get("/shared-with-me"); !strings.Contains(body, `id="share-`+gs[0].ID+`"`) {
		t.Fatal("the member does not see its share")
	}
	if _, body, _ := kid.get("/household"); element(body, "managed") == "" || element(body, "member-form") != "" {
		t.Errorf("a member's Household page:\n%s", body)
	}
	if code, _ := kid.submit("/household", url.Values{"username": {"kid2"}, "password": {"kid's own password"}}); code != 403 {
		t.Errorf("a member adds members: %d, want 403", code)
	}
	// Not bob's to remove.
	if code, _ := bob.submit("/household/kid/remove", url.Values{"confirm": {"yes"}}); code != 404 {
		t.Errorf("bob removes alice's member: %d", code)
	}
	if code, body := alice.submit("/household/kid/remove", url.Values{}); code != 422 || fieldError(body, "member-kid", "confirm") == "" {
		t.Fatalf("remove without confirming: %d", code)
	}
	if u, _ := f.a.Store.User("kid"); u.Status != store.UserActive {
		t.Fatal("an unconfirmed or foreign remove disabled the member")
	}
	code, body = alice.submit("/household/kid/remove", url.Values{"confirm": {"yes"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Removed kid") || element(body, "member-kid") != "" {
		t.Fatalf("remove: %d\n%s", code, body)
	}
	if len(grants(t, f)) != 0 {
		t.Fatal("the removed member's share is still in the store")
	}
	// Its open session ends, and it cannot log in again.
	kid.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if code, _, _ := kid.get("/shared-with-me"); code != 303 {
		t.Errorf("the removed member's session still works: %d", code)
	}
	kid.c.CheckRedirect = nil
	kid.login("kid", "kid's own password", 401)
}

func TestSharingFormsNeedCSRF(t *testing.T) {
	f, alice, _, _ := webSharing(t)
	g := shareWithBob(t, f, nil, time.Time{})
	ask, err := f.a.SubmitRequest("bob", store.GranteeUser, "", []cloudsync.PermissionRequest{{ResourceID: "living-1/status", ResourceScopes: []string{"sub"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.AddMember("alice", "kid", "", "kid's own password", "test"); err != nil {
		t.Fatal(err)
	}
	for path, form := range map[string]url.Values{
		"/devices/living-1/share":              {"grantee_kind": {"user"}, "grantee": {"carol"}, "group:telemetry:sub": {"1"}},
		"/shares/" + g.ID + "/revoke":          {"confirm": {"yes"}},
		"/requests/" + ask.ID + "/approve":     {},
		"/requests/" + ask.ID + "/deny":        {"confirm": {"yes"}},
		"/shared-with-me/" + g.ID + "/give-up": {"confirm": {"yes"}},
		"/household":                           {"username": {"kid2"}, "password": {"kid's own password"}},
		"/household/kid/remove":                {"confirm": {"yes"}},
	} {
		for _, csrf := range []string{"", "forged"} {
			form := url.Values(form)
			if csrf != "" {
				form.Set("csrf", csrf)
			} else {
				form.Del("csrf")
			}
			if code, _ := alice.post(path, form); code != 403 {
				t.Errorf("POST %s with CSRF %q: %d, want 403", path, csrf, code)
			}
		}
	}
	if gs := grants(t, f); len(gs) != 1 || gs[0].ID != g.ID {
		t.Errorf("shares after forged forms: %+v", gs)
	}
	if r, _ := f.a.ShareRequestByID(ask.ID); r.State != authority.RequestPending {
		t.Errorf("request after forged forms: %+v", r)
	}
	if u, _ := f.a.Store.User("kid"); u.Status != store.UserActive {
		t.Error("a forged form removed the member")
	}
	if _, err := f.a.Store.User("kid2"); err == nil {
		t.Error("a forged form added a member")
	}
}

// webChromium starts headless Debian chromium for a test.
func webChromium(t *testing.T) context.Context {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: install Debian's chromium (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancel(); cancelAlloc() })
	return ctx
}

// The sharing pages in a real browser, on a phone (390 px wide) and a
// desktop (1280 px): nothing is wider than the screen, and the share form,
// a confirmation and a revoke work by clicking (no script of the page's).
// EDGEID_SCREENSHOTS=dir keeps a screenshot of each page.
func TestSharingPagesFitPhoneAndDesktop(t *testing.T) {
	t.Parallel() // mostly waiting for the browser
	f, _, _, _ := webSharing(t)
	if _, err := f.a.Apply(&store.Batch{Devices: []store.Device{
		{ID: "kitchen-thermostat-0123456789abcdef", Name: "Kitchen thermostat by the very long window", Serial: "TH-0123456789ABCDEF0123", Class: "thermostat", Status: store.DeviceActive, Owner: "alice"},
	}}, "test"); err != nil {
		t.Fatal(err)
	}
	shareWithBob(t, f, &store.Window{From: "18:00", To: "20:00"}, localTomorrowAt(18))
	if _, err := f.a.CreateShare("bob", authority.ShareInput{Devices: []string{"bob-1"}, Groups: map[string][]string{"telemetry": {"sub"}, "status": {"sub"}},
		Grantee: "alice", GranteeKind: store.GranteeUser}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.SubmitRequest("carol", store.GranteeUser, "svc-1", []cloudsync.PermissionRequest{{ResourceID: "kitchen-thermostat-0123456789abcdef/telemetry", ResourceScopes: []string{"sub"}},
		{ResourceID: "kitchen-thermostat-0123456789abcdef/status", ResourceScopes: []string{"sub"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.AddMember("alice", "kid.with.a.long.name", "A child of the household", "kid's own password", "test"); err != nil {
		t.Fatal(err)
	}
	// The fixture's server asks for client certificates, which holds a
	// browser at a certificate prompt: the pages are served here without.
	srv := httptest.NewTLSServer(authority.NewHandler(f.a, adminToken))
	t.Cleanup(srv.Close)
	shots := os.Getenv("EDGEID_SCREENSHOTS")
	ctx := webChromium(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/login"), chromedp.SendKeys("#username", "alice"),
		chromedp.SendKeys("#password", webPassword), chromedp.Click("#login"), chromedp.WaitVisible(chromedp.CSS("#dev-living-1"))); err != nil {
		t.Fatal(err)
	}
	pages := []string{"/devices", "/devices/living-1/share", "/shares", "/requests", "/shared-with-me", "/household"}
	for _, size := range [][2]int64{{390, 844}, {1280, 800}} {
		for _, path := range pages {
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(size[0], size[1]), chromedp.Navigate(srv.URL+path), chromedp.WaitVisible(chromedp.CSS("main"))); err != nil {
				t.Fatal(err)
			}
			over, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - document.documentElement.clientWidth`))
			if err != nil {
				t.Fatal(err)
			}
			if over > 0 {
				t.Errorf("%s at %d px: %d px wider than the screen", path, size[0], over)
			}
			if shots != "" {
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
				if err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("%d%s.png", size[0], strings.ReplaceAll(path, "/", "_"))
				if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// On the phone: share by clicking; revoking needs the box ticked (the
	// browser holds the form back without it).
	err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844), chromedp.Navigate(srv.URL+"/devices"),
		chromedp.Click("#share-link-bedroom-1"), chromedp.WaitVisible("#share-form"),
		chromedp.Click("#kind-client"), chromedp.SendKeys("#client", "svc-1"), chromedp.Click("#group-status-sub"),
		chromedp.SetValue("#window_from", "07:30"), chromedp.SetValue("#window_to", "08:15"),
		chromedp.Click("#share-submit"), chromedp.WaitVisible("#notice"))
	if err != nil {
		t.Fatal(err)
	}
	notice, _ := chromedp.Run(ctx, chromedp.Text("#notice"))
	var g store.Grant
	for _, x := range grants(t, f) {
		if x.GranteeKind == store.GranteeClient {
			g = x
		}
	}
	if !strings.Contains(notice, "with the service svc-1") || g.Grantee != "svc-1" || g.Window == nil || *g.Window != (store.Window{From: "07:30", To: "08:15"}) {
		t.Fatalf("clicked share: notice %q, grant %+v", notice, g)
	}
	if err := chromedp.Do(ctx, chromedp.Click("#revoke-"+g.ID), chromedp.Sleep(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Store.Grant(g.ID); err != nil {
		t.Fatalf("revoked without the box ticked: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click("#confirm-revoke-"+g.ID), chromedp.Click("#revoke-"+g.ID), chromedp.WaitNotPresent("#share-"+g.ID)); err != nil {
		t.Fatal(err)
	}
	notice, _ = chromedp.Run(ctx, chromedp.Text("#notice"))
	if _, err := f.a.Store.Grant(g.ID); !errors.Is(err, store.ErrNotFound) || !strings.Contains(notice, "Revoked") {
		t.Fatalf("confirmed revoke: %v, notice %q", err, notice)
	}
}
