package authority

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeid/edgeid/store"
)

// The owners' pages: register, log in and out, enter a pairing code, consent,
// and "My devices" (unpair, rename). Server-rendered, usable without
// JavaScript (the Content-Security-Policy allows no script at all).
//
// Sessions: a logged-in session is a random id in a Secure, HttpOnly,
// SameSite=Lax cookie, stored (hashed) as a document with its expiry; an
// expired one is deleted when it is read, and a sweep at most every
// sweepEvery (run by a login, which is what makes sessions) deletes those
// never read again. Nothing is stored for a visitor who has not logged in:
// the anonymous forms (log in, register) are protected by a signed
// double-submit token instead — a random nonce in an HttpOnly cookie, and
// in the form HMAC-SHA256(key, nonce) with the key kept as a store
// document — so a forged form has neither.
//
// Every form carries its CSRF token; failed logins lock out per account,
// per (account, address) and per address, registrations are rate-limited
// per address (limits.go), and code entries per account and address.
// Destructive actions (unpair) need their "Yes, …" box ticked, checked
// again by the server.

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(pageFuncs).ParseFS(templateFS, "templates/*.html"))

const (
	docCredential = "credential"
	docWebSession = "web-session"
	docWebKey     = "web-key" // id "csrf": the HMAC key of anonymous forms' tokens
	sessionCookie = "edgeid_session"
	csrfCookie    = "edgeid_csrf" // the nonce of an anonymous visitor's forms
	sessionTTL    = 12 * time.Hour
	// sweepEvery is how often (at most) a login deletes the expired
	// sessions and login counters.
	sweepEvery = 10 * time.Minute
)

// pageCSP is the pages' Content-Security-Policy: no script, no image, no
// frame, no plugin; styles only inline (the layout's <style> and a few
// style attributes); forms post only here; no page may be framed.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

type credential struct {
	Email string `json:"email"`
	Hash  []byte `json:"hash"`
}

type webSession struct {
	User    string    `json:"user,omitempty"`
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
	// Flash is the notice the next page shows (after a redirect).
	Flash string `json:"flash,omitempty"`
}

// attempts limits failures per key (account or address) in a window, in
// memory (code entries; failed logins are loginCounters in the store).
type attempts struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	by     map[string][]time.Time
}

func newAttempts(max int, window time.Duration) *attempts {
	return &attempts{max: max, window: window, by: map[string][]time.Time{}}
}

// blocked reports whether key has failed max times within the window.
func (a *attempts) blocked(key string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	var keep []time.Time
	for _, t := range a.by[key] {
		if now.Sub(t) < a.window {
			keep = append(keep, t)
		}
	}
	a.by[key] = keep
	if len(a.by) > 100000 { // bounded: forget everyone rather than grow without end
		a.by = map[string][]time.Time{}
	}
	return len(keep) >= a.max
}

func (a *attempts) fail(key string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.by[key] = append(a.by[key], now)
}

type page struct {
	Title   string
	User    string
	CSRF    string
	Errors  []string
	Notice  string
	Next    string
	Form    map[string]string
	Pairing PairingRequest
	Devices []deviceView

	// Nav names the navigation entry of the page (aria-current); Wide
	// gives a list page more room on a large screen; Pending counts the
	// requests waiting for the owner (navigation).
	Nav     string
	Wide    bool
	Pending int
	// Back is where an error page's link goes.
	Back string
	// Fields are errors beside their fields (a FieldError's Field); Row,
	// when set, is the list row (share, request, member) they belong to.
	Fields map[string]string
	Row    string
	// Values are the submitted form, to fill it in again.
	Values url.Values
	// Sharing pages.
	ShareForm shareFormView
	Shares    []shareView
	Requests  []requestView
	History   []requestView
	Members   []memberView
	Manager   string
	Zone      string
}

// deviceView is a row of "My devices".
type deviceView struct {
	store.Device
	LastSeen string
}

// passwordCost is bcrypt's cost for owners' passwords (2^12 rounds, about
// 250 ms on a server core). Tests lower it: the race detector makes each
// hash seconds long.
var passwordCost = 12

var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), passwordCost)
	return h
})

var usernameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{2,31}$`)

// web holds the owners' pages' state.
type web struct {
	a      *Authority
	lim    *limits
	logins loginCounters
	codes  *attempts

	mu    sync.Mutex
	key   []byte    // HMAC key of the anonymous forms' tokens (docWebKey)
	swept time.Time // when expired sessions and counters were last deleted
}

func (h *Handler) mountWeb() {
	h.limits = newLimits(DefaultLimits())
	w := &web{a: h.A, lim: h.limits, logins: h.A.loginCounters(h.limits), codes: newAttempts(10, 10*time.Minute)}
	handle := func(pattern string, fn http.HandlerFunc) { h.mux.HandleFunc(pattern, securePage(fn)) }
	handle("GET /{$}", w.home)
	handle("GET /register", w.registerForm)
	handle("POST /register", w.register)
	handle("GET /login", w.loginForm)
	handle("POST /login", w.login)
	handle("POST /logout", w.logout)
	handle("GET /device", w.codeForm)
	handle("POST /device", w.code)
	handle("GET /device/consent", w.consentForm)
	handle("POST /device/consent", w.consent)
	handle("GET /devices", w.devices)
	handle("POST /devices/{id}/unpair", w.unpair)
	handle("POST /devices/{id}/rename", w.rename)
	w.mountShares(handle)
}

// securePage sets the headers of every page and of its redirects: HSTS (a
// year; not includeSubDomains: the authority's parent domain may serve
// other things), no MIME sniffing, the referrer only to this site, the CSP,
// no framing (X-Frame-Options for old browsers, frame-ancestors for new),
// no caching.
func securePage(next http.HandlerFunc) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("Cache-Control", "no-store")
		next(rw, r)
	}
}

// session returns the caller's session: the stored one its cookie names,
// or else an anonymous one (id ""), never stored, whose CSRF token is the
// signed double-submit token of its csrf cookie (set here if missing). A
// stored session found expired is deleted.
func (w *web) session(rw http.ResponseWriter, r *http.Request) (string, webSession) {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		id := hashCode(c.Value)
		s, err := w.a.webSession(id)
		switch {
		case err == nil && time.Now().Before(s.Expires):
			return c.Value, s
		case err == nil:
			_ = w.a.dropWebSession(id)
			clearCookie(rw, sessionCookie)
		case errors.Is(err, store.ErrNotFound):
			clearCookie(rw, sessionCookie)
		default:
			w.a.log.Error("web session not read", "err", err)
		}
	}
	return "", webSession{CSRF: w.anonymousCSRF(rw, r)}
}

// newSession starts the stored session of user at login, ending the one
// the browser had (no fixation).
func (w *web) newSession(rw http.ResponseWriter, r *http.Request, user string) (webSession, error) {
	w.endSession(rw, r)
	id := randomID(32)
	s := webSession{User: user, CSRF: randomID(24), Expires: time.Now().Add(sessionTTL)}
	if err := w.a.putWebSession(hashCode(id), s); err != nil {
		return webSession{}, err
	}
	http.SetCookie(rw, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, Expires: s.Expires})
	return s, nil
}

// endSession deletes the browser's stored session (logout, an account no
// longer active) and returns it to anonymous.
func (w *web) endSession(rw http.ResponseWriter, r *http.Request) webSession {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		_ = w.a.dropWebSession(hashCode(c.Value))
		clearCookie(rw, sessionCookie)
	}
	return webSession{CSRF: w.anonymousCSRF(rw, r)}
}

func clearCookie(rw http.ResponseWriter, name string) {
	http.SetCookie(rw, &http.Cookie{Name: name, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}

// anonymousCSRF is the CSRF token of an anonymous visitor's forms:
// HMAC-SHA256 of the nonce in its csrf cookie (a new nonce and cookie if it
// has none). "" if the key cannot be had (every form is then refused).
func (w *web) anonymousCSRF(rw http.ResponseWriter, r *http.Request) string {
	nonce := ""
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		if _, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
			nonce = c.Value
		}
	}
	if nonce == "" {
		nonce = randomID(24)
		http.SetCookie(rw, &http.Cookie{Name: csrfCookie, Value: nonce, Path: "/", HttpOnly: true, Secure: true,
			SameSite: http.SameSiteLaxMode, MaxAge: int(sessionTTL / time.Second)})
	}
	key, err := w.csrfKey()
	if err != nil {
		w.a.log.Error("web form key not read", "err", err)
		return ""
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("edgeid anonymous form\x00" + nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

type webKey struct {
	Key []byte `json:"key"`
}

// csrfKey is the HMAC key of anonymous forms, made on first use. Two
// processes making it at once may disagree until the later one is read
// again (a restart): forms of the earlier are refused meanwhile.
func (w *web) csrfKey() ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.key != nil {
		return w.key, nil
	}
	k, err := w.a.webFormKey(func() webKey {
		k := webKey{Key: make([]byte, 32)}
		_, _ = rand.Read(k.Key)
		return k
	})
	if err != nil {
		return nil, err
	}
	if len(k.Key) < 32 {
		return nil, errors.New("the web form key is shorter than 32 bytes")
	}
	w.key = k.Key
	return w.key, nil
}

// checkCSRF refuses a form whose token is not the session's, with a page
// that says so (403).
func (w *web) checkCSRF(rw http.ResponseWriter, r *http.Request, s webSession) bool {
	if s.CSRF != "" && subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.CSRF)) == 1 {
		return true
	}
	w.a.log.Warn("web form refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "missing or wrong CSRF token")
	w.render(rw, "error.html", http.StatusForbidden, page{Title: "This form has expired", User: s.User, CSRF: s.CSRF, Back: backFor(r.URL.Path),
		Errors: []string{"This form has expired or did not come from this site, so nothing was done. Open the page again and retry."}})
	return false
}

// backFor is the page a form posted to path came from.
func backFor(path string) string {
	switch path {
	case "/register", "/login", "/device", "/household":
		return path
	case "/device/consent":
		return "/device"
	}
	seg := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch seg[0] {
	case "devices":
		if len(seg) == 3 && seg[2] == "share" {
			return "/devices/" + url.PathEscape(seg[1]) + "/share"
		}
		return "/devices"
	case "shares", "requests", "shared-with-me", "household":
		return "/" + seg[0]
	}
	return "/"
}

func (w *web) render(rw http.ResponseWriter, name string, code int, p page) {
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	if p.User != "" && p.Pending == 0 {
		p.Pending = w.pendingRequests(p.User)
	}
	rw.WriteHeader(code)
	if err := pages.ExecuteTemplate(rw, name, p); err != nil {
		w.a.log.Error("render page", "page", name, "err", err)
	}
}

// sweep deletes expired sessions and login counters, at most every
// sweepEvery (a login calls it: logins make sessions).
func (w *web) sweep(now time.Time) {
	w.mu.Lock()
	if now.Sub(w.swept) < sweepEvery {
		w.mu.Unlock()
		return
	}
	w.swept = now
	w.mu.Unlock()
	for _, kind := range []string{docWebSession, docLoginFailures} {
		if err := w.a.sweepExpired(kind, now); err != nil {
			w.a.log.Warn("expired documents not swept", "kind", kind, "err", err)
		}
	}
}

// inWords is a wait as the pages say it: "a minute", "15 minutes", "2 hours".
func inWords(d time.Duration) string {
	switch m := int((d + time.Minute - 1) / time.Minute); {
	case m <= 1:
		return "a minute"
	case m < 120:
		return fmt.Sprintf("%d minutes", m)
	default:
		return fmt.Sprintf("%d hours", (m+59)/60)
	}
}

func (w *web) home(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if s.User != "" {
		http.Redirect(rw, r, "/devices", http.StatusSeeOther)
		return
	}
	http.Redirect(rw, r, "/login", http.StatusSeeOther)
}

func (w *web) registerForm(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	w.render(rw, "register.html", http.StatusOK, page{Title: "Register", User: s.User, CSRF: s.CSRF})
}

// serverError answers a failure of the authority's own (logged) with a page.
func (w *web) serverError(rw http.ResponseWriter, s webSession, back, what string, err error) {
	w.a.log.Error(what, "user", s.User, "err", err)
	w.render(rw, "error.html", http.StatusInternalServerError, page{Title: "Something went wrong", User: s.User, CSRF: s.CSRF, Back: back,
		Errors: []string{"Something went wrong on our side, so nothing was done. Try again in a moment."}})
}

func (w *web) register(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if !w.checkCSRF(rw, r, s) {
		return
	}
	user := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	email := strings.TrimSpace(r.PostFormValue("email"))
	pw := r.PostFormValue("password")
	// The typed values come back (never the password).
	p := page{Title: "Register", CSRF: s.CSRF, Values: url.Values{"username": {clipTyped(user)}, "email": {clipTyped(email)}}, Fields: map[string]string{}}
	if ok, wait := w.lim.bucket(registerBucket).allow(clientAddr(r), time.Now()); !ok {
		w.a.log.Warn("registration refused", "remote", r.RemoteAddr, "reason", "rate limit")
		retryAfter(rw, wait)
		p.Errors = []string{"Too many registrations from your network. Try again in " + inWords(wait) + "."}
		w.render(rw, "register.html", http.StatusTooManyRequests, p)
		return
	}
	if !usernameRE.MatchString(user) {
		p.Fields["username"] = "Use 3 to 32 lowercase letters, digits, dots, dashes or underscores, starting with a letter or digit."
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
		p.Fields["email"] = "That does not look like an email address (name@example.com)."
	}
	if len(pw) < 10 || len(pw) > 128 {
		p.Fields["password"] = "Use 10 to 128 characters."
	}
	if len(p.Fields) == 0 {
		if _, err := w.a.User(user); err == nil {
			p.Fields["username"] = "That name is taken; choose another."
		}
	}
	if len(p.Fields) > 0 {
		w.render(rw, "register.html", http.StatusUnprocessableEntity, p)
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), passwordCost)
	if err == nil {
		// The check above is for the page; this commit decides: of
		// several registrations of one name at once, one is created.
		err = w.a.createAccount(store.User{ID: user, Status: store.UserActive}, credential{Email: email, Hash: hash}, "registration")
	}
	if errors.Is(err, ErrOwnerTaken) {
		p.Fields["username"] = "That name is taken; choose another."
		w.render(rw, "register.html", http.StatusUnprocessableEntity, p)
		return
	}
	if err != nil {
		w.serverError(rw, s, "/register", "register", err)
		return
	}
	w.a.log.Info("owner registered", "user", user)
	w.render(rw, "login.html", http.StatusOK, page{Title: "Log in", CSRF: s.CSRF, Notice: "Account created. Log in to continue.", Values: url.Values{"username": {user}}})
}

// clipTyped keeps at most 100 bytes of a typed value shown again.
func clipTyped(s string) string {
	if len(s) > 100 {
		return strings.ToValidUTF8(s[:100], "")
	}
	return s
}

// safeNext is where a login goes on: next if it is a path of this site,
// else "My devices".
func safeNext(next string) string {
	if localPath(next) {
		return next
	}
	return "/devices"
}

// localPath reports whether p is a path of this site: it starts with one
// "/" and not "//" or "/\" (a browser reads a backslash as a slash, so
// "/\evil.example" is another host), has no backslash (also encoded,
// %5C, which a proxy may decode) and no control character or space
// (browsers drop tabs and newlines: "/\t/evil" becomes "//evil"), and
// parses with no scheme or host.
func localPath(p string) bool {
	if len(p) == 0 || len(p) > 2000 || p[0] != '/' || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") {
		return false
	}
	for _, c := range p {
		if c <= ' ' || c == 0x7f || c == '\\' {
			return false
		}
	}
	if l := strings.ToLower(p); strings.Contains(l, "%5c") || strings.HasPrefix(l, "/%2f") || strings.HasPrefix(l, "/%09") {
		return false
	}
	u, err := url.Parse(p)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil && strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(u.Path, "//")
}

func (w *web) loginForm(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	next := r.URL.Query().Get("next")
	if !localPath(next) {
		next = ""
	}
	w.render(rw, "login.html", http.StatusOK, page{Title: "Log in", User: s.User, CSRF: s.CSRF, Next: next})
}

func (w *web) login(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if !w.checkCSRF(rw, r, s) {
		return
	}
	user := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	next := r.PostFormValue("next")
	if !localPath(next) {
		next = ""
	}
	addr, now := clientAddr(r), time.Now()
	w.sweep(now)
	p := page{Title: "Log in", CSRF: s.CSRF, Next: next, Values: url.Values{"username": {clipTyped(user)}}}
	key := clipTyped(user) // the counters' name of the account
	locked, until, err := w.logins.locked(key, addr, now)
	if err != nil {
		w.a.log.Error("login counters not read", "err", err)
	}
	if locked {
		w.a.log.Warn("login refused", "user", key, "remote", r.RemoteAddr, "reason", "too many failed attempts", "until", until)
		retryAfter(rw, until.Sub(now))
		p.Errors = []string{"Too many failed attempts. Try again in " + inWords(until.Sub(now)) + "."}
		w.render(rw, "login.html", http.StatusTooManyRequests, p)
		return
	}
	c, err := w.a.credential(user)
	if err == nil {
		err = bcrypt.CompareHashAndPassword(c.Hash, []byte(r.PostFormValue("password")))
	} else {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte("x")) // same time whether or not the user exists
	}
	if err == nil {
		if u, uerr := w.a.User(user); uerr != nil || u.Status != store.UserActive {
			err = errors.New("disabled")
		}
	}
	if err != nil {
		if ferr := w.logins.fail(key, addr, now); ferr != nil {
			w.a.log.Error("login failure not counted", "err", ferr)
		}
		w.a.log.Warn("login refused", "user", key, "remote", r.RemoteAddr, "reason", "wrong username or password")
		p.Fields = map[string]string{"password": "Wrong username or password."}
		w.render(rw, "login.html", http.StatusUnauthorized, p)
		return
	}
	if err := w.logins.succeeded(key, addr); err != nil {
		w.a.log.Warn("login counter not reset", "err", err)
	}
	if _, err := w.newSession(rw, r, user); err != nil {
		w.serverError(rw, s, "/login", "start web session", err)
		return
	}
	w.a.log.Info("owner logged in", "user", user)
	http.Redirect(rw, r, safeNext(next), http.StatusSeeOther)
}

func (w *web) logout(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if !w.checkCSRF(rw, r, s) {
		return
	}
	w.endSession(rw, r)
	http.Redirect(rw, r, "/login", http.StatusSeeOther)
}

// requireUser sends an anonymous visitor to log in, then back.
func (w *web) requireUser(rw http.ResponseWriter, r *http.Request) (webSession, bool) {
	_, s, ok := w.requireSession(rw, r)
	return s, ok
}

// requireSession is requireUser with the session's id (for its flash). A
// session whose account was disabled since (a household member removed)
// ends here.
func (w *web) requireSession(rw http.ResponseWriter, r *http.Request) (string, webSession, bool) {
	sid, s := w.session(rw, r)
	if s.User != "" {
		if u, err := w.a.User(s.User); err != nil || u.Status != store.UserActive {
			w.a.log.Warn("web session ended", "user", s.User, "reason", "account no longer active")
			sid, s = "", w.endSession(rw, r)
		}
	}
	if s.User == "" {
		http.Redirect(rw, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return sid, s, false
	}
	return sid, s, true
}

func (w *web) codeForm(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok {
		return
	}
	if uc := r.URL.Query().Get("user_code"); uc != "" {
		// verification_uri_complete (a QR code): go straight to consent.
		http.Redirect(rw, r, "/device/consent?user_code="+url.QueryEscape(NormalizeUserCode(uc)), http.StatusSeeOther)
		return
	}
	w.render(rw, "code.html", http.StatusOK, page{Title: "Pair a device", User: s.User, CSRF: s.CSRF, Nav: "code"})
}

func (w *web) code(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	http.Redirect(rw, r, "/device/consent?user_code="+url.QueryEscape(NormalizeUserCode(r.PostFormValue("user_code"))), http.StatusSeeOther)
}

func (w *web) consentForm(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok {
		return
	}
	uc := r.URL.Query().Get("user_code")
	now := time.Now()
	if w.codes.blocked("user:"+s.User, now) || w.codes.blocked("addr:"+clientAddr(r), now) {
		w.render(rw, "code.html", http.StatusTooManyRequests, page{Title: "Pair a device", User: s.User, CSRF: s.CSRF,
			Errors: []string{"Too many wrong codes. Wait 10 minutes and try again."}})
		return
	}
	p, err := w.a.LookupPairing(uc, s.User)
	if err != nil {
		w.codes.fail("user:"+s.User, now)
		w.codes.fail("addr:"+clientAddr(r), now)
		w.render(rw, "code.html", http.StatusNotFound, page{Title: "Pair a device", User: s.User, CSRF: s.CSRF,
			Errors: []string{UserCodeMessage(err)}, Form: map[string]string{"user_code": uc}})
		return
	}
	w.render(rw, "consent.html", http.StatusOK, page{Title: "Approve pairing", User: s.User, CSRF: s.CSRF, Pairing: p})
}

func (w *web) consent(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	approve := r.PostFormValue("decision") == "approve"
	if err := w.a.DecidePairing(r.PostFormValue("user_code"), s.User, approve); err != nil {
		w.render(rw, "code.html", http.StatusConflict, page{Title: "Pair a device", User: s.User, CSRF: s.CSRF, Errors: []string{err.Error()}})
		return
	}
	notice := "Denied. The device was not paired."
	if approve {
		notice = "Paired. The device will connect in a few seconds."
	}
	w.renderDevices(rw, s, notice, nil)
}

func (w *web) renderDevices(rw http.ResponseWriter, s webSession, notice string, errs []string) {
	w.renderDevicesCode(rw, s, http.StatusOK, notice, errs)
}

func (w *web) renderDevicesCode(rw http.ResponseWriter, s webSession, code int, notice string, errs []string) {
	p := w.devicesPage(s)
	p.Notice, p.Errors = notice, errs
	w.render(rw, "devices.html", code, p)
}

// devicesPage is "My devices" of s's user.
func (w *web) devicesPage(s webSession) page {
	owned, _ := w.a.OwnedDevices(s.User)
	var ds []deviceView
	now := time.Now()
	for _, d := range owned {
		ds = append(ds, deviceView{Device: d, LastSeen: w.a.LastSeen(d.ID, now)})
	}
	return page{Title: "My devices", User: s.User, CSRF: s.CSRF, Devices: ds, Nav: "devices", Wide: true}
}

func (w *web) devices(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok {
		return
	}
	w.renderDevices(rw, s, "", nil)
}

func (w *web) unpair(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	id := r.PathValue("id")
	if _, mine := w.ownDevice(s.User, id); !mine {
		w.notMine(rw, s, "That device is not yours.")
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		p := w.devicesPage(s)
		p.Row, p.Fields = id, map[string]string{"confirm": "Tick the box to confirm."}
		w.render(rw, "devices.html", http.StatusUnprocessableEntity, p)
		return
	}
	if err := w.a.Unpair(id, s.User); err != nil {
		w.renderDevices(rw, s, "", []string{err.Error()})
		return
	}
	w.renderDevices(rw, s, "Unpaired "+id+". It has been disconnected and can be paired again.", nil)
}

func (w *web) rename(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if len(name) > 64 {
		w.renderDevices(rw, s, "", []string{"Name: use at most 64 characters."})
		return
	}
	// rev is the device as the page showed it: a device changed since
	// (revoked, unpaired, renamed in another tab) is not renamed.
	rev, _ := strconv.ParseUint(r.PostFormValue("rev"), 10, 64)
	switch err := w.a.RenameDevice(r.PathValue("id"), s.User, name, rev); {
	case errors.Is(err, ErrNotYours):
		w.renderDevices(rw, s, "", []string{"That device is not yours."})
	case errors.Is(err, ErrChanged):
		w.renderDevicesCode(rw, s, http.StatusConflict, "", []string{"The device changed meanwhile, so it was not renamed. Here it is as it is now; rename it again if you still want to."})
	case err != nil:
		w.renderDevices(rw, s, "", []string{err.Error()})
	default:
		w.renderDevices(rw, s, "Renamed.", nil)
	}
}
