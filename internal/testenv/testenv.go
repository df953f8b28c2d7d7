// Package testenv is the shared test environment: a real gateway on
// loopback, a real authority on an httptest TLS server, enrollment and a
// demo token issuer. Every package's tests start theirs here, so that a
// change to what a test gateway needs (a new listener to turn off, a new
// limit to raise) is made once.
//
// It is a normal package so tests in any package can import it; nothing
// outside _test.go files should.
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Buf is a log buffer safe for concurrent writers.
type Buf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *Buf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Take returns what was written and empties the buffer.
func (s *Buf) Take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

func (s *Buf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// verbose passes log lines to t.Log under go test -v.
type verbose struct{ t testing.TB }

func (w verbose) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// GW is a started gateway.
type GW struct {
	G      *edge.Gateway
	Config config.Config // as validated and started
	Logs   *Buf          // its log; nil when GatewayLog was given a writer
}

// Gateway starts a real gateway for t and closes it with t.Cleanup: a
// throwaway state directory, the admin socket in a short temporary
// directory (unix socket paths are limited to 108 bytes; t.TempDir can be
// longer), plain MQTT on 127.0.0.1:0 and no TLS listener, metrics off (tests
// run side by side), no per-source connect rate and the per-source half-open
// cap raised to the global one (tests connect often from one address). opts
// then change the configuration, in order; the gateway ID is "test-gw"
// unless one sets it.
func Gateway(t testing.TB, opts ...func(*config.Config)) *GW { return GatewayLog(t, nil, opts...) }

// GatewayLog is Gateway with the log written to w (and to t.Log under -v)
// instead of to a new Buf.
func GatewayLog(t testing.TB, w io.Writer, opts ...func(*config.Config)) *GW {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "eid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	cfg := config.Default()
	cfg.Gateway.ID = "test-gw"
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.MQTT.TCP = "127.0.0.1:0"
	cfg.MQTT.TLS.Listen = ""
	cfg.Admin.Socket = filepath.Join(sockDir, "admin.sock")
	cfg.MQTT.ConnectRate = 0
	cfg.MQTT.MaxHalfOpenPerSource = cfg.MQTT.MaxHalfOpen
	cfg.Metrics.Listen = ""
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs *Buf
	if w == nil {
		logs = &Buf{}
		w = logs
	}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(w, verbose{t}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	g, err := edge.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		g.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return &GW{G: g, Config: cfg, Logs: logs}
}

// Issuer is the demo token issuer the demo bundle trusts
// (https://issuer.test, key id k1).
func Issuer(t testing.TB) *demo.Issuer {
	t.Helper()
	iss, err := demo.NewIssuer("https://issuer.test", "k1")
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// ApplyDemo imports the demo bundle for iss into g's store, with the device
// certificate fingerprint fp (may be empty) and extra devices added.
func ApplyDemo(t testing.TB, g *edge.Gateway, iss *demo.Issuer, fp string, extra ...store.Device) {
	t.Helper()
	b, err := demo.Bundle(iss, fp)
	if err != nil {
		t.Fatal(err)
	}
	b.Devices = append(b.Devices, extra...)
	if _, err := g.Store.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
}

// AdminToken is the authority's admin bearer token.
const AdminToken = "admin-secret-for-tests"

// Auth is a real authority on loopback HTTPS (in-process).
type Auth struct {
	t     testing.TB
	A     *authority.Authority
	Srv   *httptest.Server
	FP    string // SHA-256 of the server certificate, hex
	Token string // admin token
	Logs  *Buf   // its log; nil when AuthorityLog was given a writer
}

// Authority starts a real authority for t on an httptest TLS server that
// requests (but does not require) client certificates, with one-hour tokens
// and enrollment codes; mod (may be nil) changes its configuration. The
// authority, server and store are closed with t.Cleanup.
func Authority(t testing.TB, mod func(*authority.Config)) *Auth { return AuthorityLog(t, nil, mod) }

// AuthorityLog is Authority with the log written to w (and to t.Log under
// -v) instead of to a new Buf.
func AuthorityLog(t testing.TB, w io.Writer, mod func(*authority.Config)) *Auth {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // registered first: runs after the server has stopped
	var h http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	var a *authority.Authority
	t.Cleanup(func() {
		if a != nil {
			a.Close()
		}
		srv.Close()
	})
	var logs *Buf
	if w == nil {
		logs = &Buf{}
		w = logs
	}
	cfg := authority.Config{URL: srv.URL, TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	a, err = authority.New(cfg, st, slog.New(slog.NewTextHandler(io.MultiWriter(w, verbose{t}), nil)))
	if err != nil {
		t.Fatal(err)
	}
	h = authority.NewHandler(a, AdminToken)
	sum := sha256.Sum256(srv.Certificate().Raw)
	return &Auth{t: t, A: a, Srv: srv, FP: hex.EncodeToString(sum[:]), Token: AdminToken, Logs: logs}
}

// Enroll adds a gateway called name at the authority, enrolls it as board
// and saves the enrollment in a temporary directory; it returns the path.
func (x *Auth) Enroll(name, board string) string {
	x.t.Helper()
	return Enroll(x.t, x.A, x.Srv.URL, x.FP, name, board)
}

// Admin calls the authority's admin API with the admin token and fails the
// test unless it answers 200; it returns the body.
func (x *Auth) Admin(method, path string, body any) []byte {
	x.t.Helper()
	return Admin(x.t, x.Srv.URL, x.FP, x.Token, method, path, body)
}

// Enroll adds a gateway called name at authority a (serving at url, with
// certificate fingerprint fp), enrolls it as board and saves the enrollment
// in a temporary directory; it returns the path. It is Auth.Enroll for an
// authority started another way (behind a proxy, say).
func Enroll(t testing.TB, a *authority.Authority, url, fp, name, board string) string {
	t.Helper()
	return EnrollSite(t, a, url, fp, name, "", board)
}

// EnrollSite is Enroll for a gateway that serves site.
func EnrollSite(t testing.TB, a *authority.Authority, url, fp, name, site, board string) string {
	t.Helper()
	code, _, err := a.AddSiteGateway(name, site, "test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := syncclient.Enroll(context.Background(), url, fp, code, board)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "enrollment.json")
	if err := e.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Admin calls the admin API of the authority at url (certificate
// fingerprint fp) with token and fails the test unless it answers 200; it
// returns the body.
func Admin(t testing.TB, url, fp, token, method, path string, body any) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := syncclient.HTTPClient(fp).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, data)
	}
	return data
}

// Fingerprint is the SHA-256 (hex) of a TLS test server's certificate, for
// pinning.
func Fingerprint(srv *httptest.Server) string {
	sum := sha256.Sum256(srv.Certificate().Raw)
	return hex.EncodeToString(sum[:])
}
