package authority_test

import (
	"net/url"
	"strings"
	"testing"
)

// The pages' safety: where a login goes on, their headers, the CSRF
// refusal page, the Unpair confirmation.

func TestLoginNextStaysOnSite(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.a.RegisterOwner("alice", "alice@example.com", webPassword); err != nil {
		t.Fatal(err)
	}
	b := f.browser().noRedirects()
	cases := map[string]string{
		"/device/consent?user_code=BCDF-GHJK": "/device/consent?user_code=BCDF-GHJK",
		"/shares":                             "/shares",
		"":                                    "/devices",
		`/\evil.example`:                      "/devices",
		`/\evil.example/devices`:              "/devices",
		"//evil.example":                      "/devices",
		"///evil.example":                     "/devices",
		"https://evil.example/":               "/devices",
		"http:evil.example":                   "/devices",
		"javascript:alert(1)":                 "/devices",
		"/%5Cevil.example":                    "/devices",
		"/%5cevil.example":                    "/devices",
		"/%2F/evil.example":                   "/devices",
		`\/evil.example`:                      "/devices",
		`\\/evil.example`:                     "/devices",
		`\\evil.example`:                      "/devices",
		"/\t/evil.example":                    "/devices",
		"/\n/evil.example":                    "/devices",
		" //evil.example":                     "/devices",
		"devices":                             "/devices",
		"/devices\\..\\":                      "/devices",
	}
	for next, want := range cases {
		_, _, csrf := b.get("/login")
		resp, body := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {webPassword}, "next": {next}})
		if resp.StatusCode != 303 || resp.Header.Get("Location") != want {
			t.Errorf("next %q: %d Location %q, want %q\n%s", next, resp.StatusCode, resp.Header.Get("Location"), want, body)
		}
	}
	// The login form does not carry an unsafe next either.
	_, body, _ := b.get("/login?next=" + url.QueryEscape(`/\evil.example`))
	if !strings.Contains(body, `name="next" value=""`) || strings.Contains(body, "evil.example") {
		t.Errorf("login form keeps an unsafe next:\n%s", body)
	}
	_, body, _ = b.get("/login?next=" + url.QueryEscape("/shares"))
	if !strings.Contains(body, `name="next" value="/shares"`) {
		t.Errorf("login form lost a safe next:\n%s", body)
	}
}

// securityHeaders are on every page, its redirects and refusals.
var securityHeaders = map[string]string{
	"Strict-Transport-Security": "max-age=31536000",
	"X-Content-Type-Options":    "nosniff",
	"Referrer-Policy":           "same-origin",
	"X-Frame-Options":           "DENY",
	"Content-Security-Policy":   "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"Cache-Control":             "no-store",
}

func TestWebSecurityHeaders(t *testing.T) {
	t.Parallel()
	f, alice, _, _ := webSharing(t)
	anon := f.browser().noRedirects()
	alice.noRedirects()
	check := func(who *browser, method, path string, form url.Values, want int) {
		t.Helper()
		resp, body := who.do(method, path, form)
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
		}
		for k, v := range securityHeaders {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s %s: %s %q, want %q", method, path, k, got, v)
			}
		}
		if strings.Contains(body, "<script") || strings.Contains(body, " onclick=") || strings.Contains(body, " onsubmit=") {
			t.Errorf("%s %s has a script, which the CSP refuses", method, path)
		}
	}
	for _, p := range []string{"/login", "/register"} {
		check(anon, "GET", p, nil, 200)
	}
	check(anon, "GET", "/", nil, 303)
	check(anon, "GET", "/devices", nil, 303)
	check(anon, "POST", "/login", url.Values{"csrf": {"forged"}}, 403)
	for _, p := range []string{"/devices", "/device", "/devices/living-1/share", "/shares", "/requests", "/shared-with-me", "/household"} {
		check(alice, "GET", p, nil, 200)
	}
	check(alice, "POST", "/devices/living-1/unpair", url.Values{"csrf": {"forged"}}, 403)
}

// A refused form gets a page: the layout, what happened, a link back, 403.
func TestCSRFRefusalIsAPage(t *testing.T) {
	t.Parallel()
	f, alice, _, _ := webSharing(t)
	anon := f.browser()
	anon.get("/login")
	resp, body := anon.do("POST", "/login", url.Values{"csrf": {"forged"}, "username": {"alice"}, "password": {webPassword}})
	if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "<main") ||
		!strings.Contains(element(body, "message"), "did not come from this site") || !strings.Contains(element(body, "back"), `href="/login"`) {
		t.Fatalf("anonymous refusal: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for path, back := range map[string]string{
		"/devices/living-1/unpair": "/devices", "/devices/living-1/share": "/devices/living-1/share", "/shares/x/revoke": "/shares",
		"/requests/x/approve": "/requests", "/household": "/household", "/household/kid/remove": "/household", "/device/consent": "/device",
		"/shared-with-me/x/give-up": "/shared-with-me", "/logout": "/",
	} {
		resp, body := alice.do("POST", path, url.Values{"csrf": {"forged"}, "confirm": {"yes"}})
		if resp.StatusCode != 403 || !strings.Contains(element(body, "back"), `href="`+back+`"`) || !strings.Contains(body, "Log out alice") {
			t.Errorf("POST %s refused: %d, want 403 with a link to %s and alice's navigation\n%s", path, resp.StatusCode, back, body)
		}
	}
	if d, _ := f.a.Store.Device("living-1"); d.Owner != "alice" {
		t.Fatal("a refused unpair unpaired")
	}
}

func TestUnpairNeedsConfirmation(t *testing.T) {
	t.Parallel()
	f, alice, bob, _ := webSharing(t)
	// Without the box: nothing happens, the row says why.
	code, body := alice.submit("/devices/living-1/unpair", url.Values{})
	if code != 422 || fieldError(body, "dev-living-1", "confirm") == "" || fieldError(body, "dev-bedroom-1", "confirm") != "" {
		t.Fatalf("unconfirmed unpair: %d\n%s", code, body)
	}
	if d, _ := f.a.Store.Device("living-1"); d.Owner != "alice" {
		t.Fatal("unpaired without confirmation")
	}
	if !strings.Contains(element(body, "dev-living-1"), `id="confirm-unpair-living-1" required`) {
		t.Errorf("the box is not required in the browser:\n%s", element(body, "dev-living-1"))
	}
	// Someone else's device, confirmed or not: refused.
	if code, _ := bob.submit("/devices/living-1/unpair", url.Values{"confirm": {"yes"}}); code != 404 {
		t.Fatalf("bob unpairs alice's device: %d, want 404", code)
	}
	code, body = alice.submit("/devices/living-1/unpair", url.Values{"confirm": {"yes"}})
	if code != 200 || !strings.Contains(element(body, "notice"), "Unpaired living-1") || element(body, "dev-living-1") != "" {
		t.Fatalf("confirmed unpair: %d\n%s", code, body)
	}
	if d, _ := f.a.Store.Device("living-1"); d.Owner != "" {
		t.Fatalf("device still owned by %q", d.Owner)
	}
}
