package authority_test

import (
	"crypto/tls"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// browser is an HTTP client with cookies, as a person's browser would be.
type browser struct {
	t    *testing.T
	f    *fixture
	c    *http.Client
	base string // the site; "" is the fixture's server
}

func (f *fixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	return &browser{t: f.t, f: f, c: &http.Client{Jar: jar, Transport: tr}}
}

// browserAt is a browser of site (a server of f's authority) on the host
// at ip (127.0.0.x: Linux answers the whole loopback /8), so that the site
// sees another client address.
func (f *fixture) browserAt(site, ip string) *browser {
	b := f.browser()
	b.base = site
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	b.c.Transport.(*http.Transport).DialContext = d.DialContext
	return b
}

func (b *browser) url(path string) string {
	if b.base != "" {
		return b.base + path
	}
	return b.f.srv.URL + path
}

// noRedirects makes b see redirects as they are (303 and its Location).
func (b *browser) noRedirects() *browser {
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return b
}

// do sends a request and returns the response with its body read.
func (b *browser) do(method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.url(path), body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// inputValue is the value of the input with id ("" if it has none).
func inputValue(body, id string) string {
	m := regexp.MustCompile(`<input [^>]*\bid="` + regexp.QuoteMeta(id) + `"[^>]*>`).FindString(body)
	v := regexp.MustCompile(`\bvalue="([^"]*)"`).FindStringSubmatch(m)
	if v == nil {
		return ""
	}
	return html.UnescapeString(v[1])
}

// get returns the status, the body and the page's CSRF token.
func (b *browser) get(path string) (int, string, string) {
	resp, err := b.c.Get(b.url(path))
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	csrf := ""
	if m := csrfRE.FindStringSubmatch(string(body)); m != nil {
		csrf = m[1]
	}
	return resp.StatusCode, string(body), csrf
}

func (b *browser) post(path string, form url.Values) (int, string) {
	resp, err := b.c.PostForm(b.url(path), form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestRegisterValidation(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	_, _, csrf := b.get("/register")
	code, body := b.post("/register", url.Values{"csrf": {csrf}, "username": {"A"}, "email": {"nope"}, "password": {"short"}})
	// Each error is beside its field; the typed values come back, the password never.
	if code != 422 || !strings.Contains(fieldError(body, "", "username"), "Use 3 to 32") || !strings.Contains(fieldError(body, "", "email"), "does not look like an email") ||
		!strings.Contains(fieldError(body, "", "password"), "Use 10 to 128") {
		t.Fatalf("validation messages: %d\n%s", code, body)
	}
	if inputValue(body, "username") != "a" || inputValue(body, "email") != "nope" || inputValue(body, "password") != "" || strings.Contains(body, "short") {
		t.Fatalf("typed values not kept (or the password shown):\n%s", body)
	}
	if _, err := f.a.Store.User("a"); err == nil {
		t.Fatal("an invalid registration created a user")
	}
	code, body = b.post("/register", url.Values{"csrf": {csrf}, "username": {"alice"}, "email": {"alice@example.com"}, "password": {"long enough password"}})
	if code != 200 || !strings.Contains(body, "Account created") {
		t.Fatalf("register: %d\n%s", code, body)
	}
	code, body = b.post("/register", url.Values{"csrf": {csrf}, "username": {"alice"}, "email": {"a2@example.com"}, "password": {"another long password"}})
	if code != 422 || !strings.Contains(fieldError(body, "", "username"), "That name is taken") || inputValue(body, "email") != "a2@example.com" {
		t.Fatalf("duplicate username: %d\n%s", code, body)
	}
	if strings.Contains(f.logs.String(), "long enough password") {
		t.Fatal("a password reached the log")
	}
}

func TestCSRFRequired(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	// See redirects as they are: an anonymous POST to a logged-in page is sent to log in (303), nothing else happens.
	b.c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	b.get("/register")
	for _, path := range []string{"/register", "/login", "/logout", "/device", "/device/consent"} {
		if code, _ := b.post(path, url.Values{"username": {"x"}, "password": {"y"}}); code != 403 && code != 303 {
			t.Errorf("POST %s without a CSRF token: %d, want 403", path, code)
		}
		if code, _ := b.post(path, url.Values{"csrf": {"forged"}, "username": {"x"}, "password": {"y"}}); code != 403 && code != 303 {
			t.Errorf("POST %s with a forged CSRF token: %d, want 403", path, code)
		}
	}
	// Another browser's token does not work in this one.
	other := f.browser()
	_, _, theirs := other.get("/register")
	if code, _ := b.post("/register", url.Values{"csrf": {theirs}, "username": {"mallory"}, "email": {"m@example.com"}, "password": {"long enough password"}}); code != 403 {
		t.Errorf("CSRF token of another session: %d, want 403", code)
	}
	if !strings.Contains(f.logs.String(), "missing or wrong CSRF token") {
		t.Error("CSRF refusals not logged")
	}
}

func TestLoginAndCodeRateLimits(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	_, _, csrf := b.get("/register")
	b.post("/register", url.Values{"csrf": {csrf}, "username": {"alice"}, "email": {"alice@example.com"}, "password": {"long enough password"}})
	_, _, csrf = b.get("/login")
	var codes []int
	for i := 0; i < 6; i++ {
		code, _ := b.post("/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {"wrong password!"}})
		codes = append(codes, code)
	}
	if codes[4] != 401 || codes[5] != 429 {
		t.Fatalf("failed logins: %v, want 5×401 then 429", codes)
	}
	// Even the right password waits now.
	if code, _ := b.post("/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {"long enough password"}}); code != 429 {
		t.Fatalf("right password while locked out: %d, want 429", code)
	}
	// Code entry: a logged-in user guessing codes is held off after 10 misses.
	f2 := newFixture(t)
	b2 := f2.browser()
	_, _, csrf = b2.get("/register")
	b2.post("/register", url.Values{"csrf": {csrf}, "username": {"bob"}, "email": {"bob@example.com"}, "password": {"long enough password"}})
	_, _, csrf = b2.get("/login")
	if code, _ := b2.post("/login", url.Values{"csrf": {csrf}, "username": {"bob"}, "password": {"long enough password"}}); code != 200 {
		t.Fatalf("login: %d", code)
	}
	var last int
	for i := 0; i < 11; i++ {
		last, _, _ = b2.get("/device/consent?user_code=BCDF-GHJK")
	}
	if last != 429 {
		t.Fatalf("11th wrong code: %d, want 429", last)
	}
}
