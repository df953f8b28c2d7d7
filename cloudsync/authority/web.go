package authority

import (
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeid/edgeid/store"
)

// The owners' pages: register, log in and out, enter a pairing code, consent,
// and "My devices" (unpair, rename). Server-rendered, usable without
// JavaScript. Sessions are random ids in a Secure, HttpOnly, SameSite cookie;
// every form carries the session's CSRF token; failed logins and code entries
// are rate-limited per account and per address.

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(pageFuncs).ParseFS(templateFS, "templates/*.html"))

const (
	docCredential = "credential"
	docWebSession = "web-session"
	sessionCookie = "edgeid_session"
	sessionTTL    = 12 * time.Hour
)

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

// attempts limits failures per key (account or address) in a window.
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
	logins *attempts
	codes  *attempts
}

func (h *Handler) mountWeb() {
	w := &web{a: h.A, logins: newAttempts(5, 15*time.Minute), codes: newAttempts(10, 10*time.Minute)}
	m := h.mux
	m.HandleFunc("GET /{$}", w.home)
	m.HandleFunc("GET /register", w.registerForm)
	m.HandleFunc("POST /register", w.register)
	m.HandleFunc("GET /login", w.loginForm)
	m.HandleFunc("POST /login", w.login)
	m.HandleFunc("POST /logout", w.logout)
	m.HandleFunc("GET /device", w.codeForm)
	m.HandleFunc("POST /device", w.code)
	m.HandleFunc("GET /device/consent", w.consentForm)
	m.HandleFunc("POST /device/consent", w.consent)
	m.HandleFunc("GET /devices", w.devices)
	m.HandleFunc("POST /devices/{id}/unpair", w.unpair)
	m.HandleFunc("POST /devices/{id}/rename", w.rename)
	w.mountShares(m)
}

// session returns the caller's session, making an anonymous one if needed.
func (w *web) session(rw http.ResponseWriter, r *http.Request) (string, webSession) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		var s webSession
		if w.a.Store.GetDoc(docWebSession, hashCode(c.Value), &s) == nil && time.Now().Before(s.Expires) {
			return c.Value, s
		}
	}
	id := randomID(32)
	s := webSession{CSRF: randomID(24), Expires: time.Now().Add(sessionTTL)}
	_ = w.a.Store.PutDoc(docWebSession, hashCode(id), s)
	http.SetCookie(rw, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, Expires: s.Expires})
	return id, s
}

// newSession replaces the session at login/logout (no fixation).
func (w *web) newSession(rw http.ResponseWriter, r *http.Request, user string) webSession {
	if c, err := r.Cookie(sessionCookie); err == nil {
		_ = w.a.Store.DeleteDoc(docWebSession, hashCode(c.Value))
	}
	id := randomID(32)
	s := webSession{User: user, CSRF: randomID(24), Expires: time.Now().Add(sessionTTL)}
	_ = w.a.Store.PutDoc(docWebSession, hashCode(id), s)
	http.SetCookie(rw, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteLaxMode, Expires: s.Expires})
	return s
}

// checkCSRF refuses a form whose token is not the session's.
func (w *web) checkCSRF(rw http.ResponseWriter, r *http.Request, s webSession) bool {
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.CSRF)) == 1 {
		return true
	}
	w.a.log.Warn("web form refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "missing or wrong CSRF token")
	http.Error(rw, "This form has expired or did not come from this site. Go back, reload the page and try again.", http.StatusForbidden)
	return false
}

func (w *web) render(rw http.ResponseWriter, name string, code int, p page) {
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Frame-Options", "DENY")
	rw.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	if p.User != "" && p.Pending == 0 {
		p.Pending = w.pendingRequests(p.User)
	}
	rw.WriteHeader(code)
	if err := pages.ExecuteTemplate(rw, name, p); err != nil {
		w.a.log.Error("render page", "page", name, "err", err)
	}
}

func host(r *http.Request) string {
	h := r.RemoteAddr
	if i := strings.LastIndex(h, ":"); i > 0 {
		h = h[:i]
	}
	return h
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

func (w *web) register(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if !w.checkCSRF(rw, r, s) {
		return
	}
	user := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	email := strings.TrimSpace(r.PostFormValue("email"))
	pw := r.PostFormValue("password")
	var errs []string
	if !usernameRE.MatchString(user) {
		errs = append(errs, "Username: use 3 to 32 lowercase letters, digits, dots, dashes or underscores, starting with a letter or digit.")
	}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email {
		errs = append(errs, "Email: that does not look like an email address (name@example.com).")
	}
	if len(pw) < 10 || len(pw) > 128 {
		errs = append(errs, "Password: use 10 to 128 characters.")
	}
	if len(errs) == 0 {
		if _, err := w.a.Store.User(user); err == nil {
			errs = append(errs, "Username: that name is taken; choose another.")
		}
	}
	form := map[string]string{"username": user, "email": email}
	if len(errs) > 0 {
		w.render(rw, "register.html", http.StatusUnprocessableEntity, page{Title: "Register", CSRF: s.CSRF, Errors: errs, Form: form})
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), passwordCost)
	if err != nil {
		http.Error(rw, "could not register; try again", http.StatusInternalServerError)
		return
	}
	if err := w.a.Store.PutDoc(docCredential, user, credential{Email: email, Hash: hash}); err != nil {
		http.Error(rw, "could not register; try again", http.StatusInternalServerError)
		return
	}
	if _, err := w.a.Apply(&store.Batch{Users: []store.User{{ID: user, Status: store.UserActive}}}, "registration"); err != nil {
		http.Error(rw, "could not register; try again", http.StatusInternalServerError)
		return
	}
	w.a.log.Info("owner registered", "user", user)
	w.render(rw, "login.html", http.StatusOK, page{Title: "Log in", CSRF: s.CSRF, Notice: "Account created. Log in to continue.", Form: map[string]string{"username": user}})
}

func safeNext(next string) string {
	if u, err := url.Parse(next); err == nil && u.Host == "" && u.Scheme == "" && strings.HasPrefix(u.Path, "/") && !strings.HasPrefix(next, "//") {
		return next
	}
	return "/devices"
}

func (w *web) loginForm(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	w.render(rw, "login.html", http.StatusOK, page{Title: "Log in", User: s.User, CSRF: s.CSRF, Next: r.URL.Query().Get("next")})
}

func (w *web) login(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if !w.checkCSRF(rw, r, s) {
		return
	}
	user := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	next := r.PostFormValue("next")
	now := time.Now()
	if w.logins.blocked("user:"+user, now) || w.logins.blocked("addr:"+host(r), now) {
		w.a.log.Warn("login refused", "user", user, "remote", r.RemoteAddr, "reason", "too many failed attempts")
		w.render(rw, "login.html", http.StatusTooManyRequests, page{Title: "Log in", CSRF: s.CSRF, Next: next,
			Errors: []string{"Too many failed attempts. Wait 15 minutes and try again."}, Form: map[string]string{"username": user}})
		return
	}
	var c credential
	err := w.a.Store.GetDoc(docCredential, user, &c)
	if err == nil {
		err = bcrypt.CompareHashAndPassword(c.Hash, []byte(r.PostFormValue("password")))
	} else {
		_ = bcrypt.CompareHashAndPassword(dummyHash(), []byte("x")) // same time whether or not the user exists
	}
	if err == nil {
		if u, uerr := w.a.Store.User(user); uerr != nil || u.Status != store.UserActive {
			err = errors.New("disabled")
		}
	}
	if err != nil {
		w.logins.fail("user:"+user, now)
		w.logins.fail("addr:"+host(r), now)
		w.a.log.Warn("login refused", "user", user, "remote", r.RemoteAddr, "reason", "wrong username or password")
		w.render(rw, "login.html", http.StatusUnauthorized, page{Title: "Log in", CSRF: s.CSRF, Next: next,
			Errors: []string{"Wrong username or password."}, Form: map[string]string{"username": user}})
		return
	}
	w.newSession(rw, r, user)
	w.a.log.Info("owner logged in", "user", user)
	http.Redirect(rw, r, safeNext(next), http.StatusSeeOther)
}

func (w *web) logout(rw http.ResponseWriter, r *http.Request) {
	_, s := w.session(rw, r)
	if !w.checkCSRF(rw, r, s) {
		return
	}
	w.newSession(rw, r, "")
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
		if u, err := w.a.Store.User(s.User); err != nil || u.Status != store.UserActive {
			w.a.log.Warn("web session ended", "user", s.User, "reason", "account no longer active")
			s = w.newSession(rw, r, "")
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
	if w.codes.blocked("user:"+s.User, now) || w.codes.blocked("addr:"+host(r), now) {
		w.render(rw, "code.html", http.StatusTooManyRequests, page{Title: "Pair a device", User: s.User, CSRF: s.CSRF,
			Errors: []string{"Too many wrong codes. Wait 10 minutes and try again."}})
		return
	}
	p, err := w.a.LookupPairing(uc, s.User)
	if err != nil {
		w.codes.fail("user:"+s.User, now)
		w.codes.fail("addr:"+host(r), now)
		w.render(rw, "code.html", http.StatusNotFound, page{Title: "Pair a device", User: s.User, CSRF: s.CSRF,
			Errors: []string{ErrUserCode.Error()}, Form: map[string]string{"user_code": uc}})
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
	ids, _ := w.a.Store.DevicesOfOwner(s.User)
	var ds []deviceView
	now := time.Now()
	for _, id := range ids {
		if d, err := w.a.Store.Device(id); err == nil {
			ds = append(ds, deviceView{Device: d, LastSeen: w.a.LastSeen(id, now)})
		}
	}
	w.render(rw, "devices.html", code, page{Title: "My devices", User: s.User, CSRF: s.CSRF, Devices: ds, Notice: notice, Errors: errs, Nav: "devices", Wide: true})
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
	d, err := w.a.Store.Device(r.PathValue("id"))
	if err != nil || d.Owner != s.User {
		w.renderDevices(rw, s, "", []string{"That device is not yours."})
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if len(name) > 64 {
		w.renderDevices(rw, s, "", []string{"Name: use at most 64 characters."})
		return
	}
	d.Name = name
	if _, err := w.a.Apply(&store.Batch{Devices: []store.Device{d}}, "owner "+s.User); err != nil {
		w.renderDevices(rw, s, "", []string{err.Error()})
		return
	}
	w.renderDevices(rw, s, "Renamed.", nil)
}
