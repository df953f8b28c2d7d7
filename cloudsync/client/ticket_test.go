package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/internal/testenv"
)

// The UMA permission endpoint as the gateway (resource server) calls it:
// its assertion, a JSON array of permission requests, 201 {"ticket"}.
func TestTicket(t *testing.T) {
	u := testenv.StartUMA(t, "gw-1")
	s, err := client.NewSyncer(u.E, nil, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	reqs := []cloudsync.PermissionRequest{{ResourceID: "thermo-1/telemetry", ResourceScopes: []string{"sub"}}, {ResourceID: "thermo-1/status", ResourceScopes: []string{"sub"}}}
	tk, err := s.Ticket(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	calls := u.Calls()
	if len(calls) != 1 {
		t.Fatalf("calls: %+v", calls)
	}
	c := calls[0]
	if c.AssertionErr != "" || c.Gateway != "gw-1" || c.ContentType != "application/json" {
		t.Errorf("call: %+v", c)
	}
	if len(c.Requests) != 2 || c.Requests[0].ResourceID != "thermo-1/telemetry" || c.Requests[1].ResourceScopes[0] != "sub" {
		t.Errorf("body: %+v", c.Requests)
	}
	if tk == "" || tk != c.Ticket {
		t.Errorf("ticket %q, the endpoint answered %q", tk, c.Ticket)
	}

	// Refusals are errors with the status; nothing asked for, no call.
	u.Fail(http.StatusForbidden)
	var se *client.StatusError
	if _, err := s.Ticket(context.Background(), reqs); !errors.As(err, &se) || se.Code != http.StatusForbidden || se.Path != cloudsync.PathPermission {
		t.Errorf("403: %v", err)
	}
	if _, err := s.Ticket(context.Background(), nil); err == nil || len(u.Calls()) != 2 {
		t.Errorf("no permission: %v, calls %d", err, len(u.Calls()))
	}
}

// An answer that is not a ticket a header can carry is refused.
func TestTicketBadAnswers(t *testing.T) {
	u := testenv.StartUMA(t, "gw-1")
	answer := ""
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	e := *u.E
	e.Authority, e.Fingerprint = srv.URL, ""
	s, err := client.NewSyncer(&e, nil, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Not pinned and not a public CA: the TLS handshake fails, an error
	// that names the authority.
	reqs := []cloudsync.PermissionRequest{{ResourceID: "thermo-1/telemetry", ResourceScopes: []string{"sub"}}}
	if _, err := s.Ticket(context.Background(), reqs); err == nil || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("unpinned authority: %v", err)
	}
	e.Fingerprint = fingerprint(srv)
	if s, err = client.NewSyncer(&e, nil, slog.New(slog.NewTextHandler(testWriter{t}, nil))); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{`{}`, `{"ticket":""}`, `{"ticket":"a\"b"}`, `{"ticket":"a b"}`, `not json`, `{"ticket":"` + strings.Repeat("x", 3000) + `"}`} {
		answer = a
		if tk, err := s.Ticket(context.Background(), reqs); err == nil {
			t.Errorf("answer %.40s: ticket %q, want an error", a, tk)
		}
	}
	answer = `{"ticket":"016f84e8-f9b9-11e0-bd6f-0021cc6004de"}`
	if tk, err := s.Ticket(context.Background(), reqs); err != nil || tk != "016f84e8-f9b9-11e0-bd6f-0021cc6004de" {
		t.Errorf("good answer: %q %v", tk, err)
	}
}

// An authority that does not answer is given up on (TicketTimeout).
func TestTicketTimeout(t *testing.T) {
	t.Parallel()
	u := testenv.StartUMA(t, "gw-1")
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	e := *u.E
	e.Authority, e.Fingerprint = srv.URL, fingerprint(srv)
	s, err := client.NewSyncer(&e, nil, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Ticket(context.Background(), []cloudsync.PermissionRequest{{ResourceID: "thermo-1/telemetry", ResourceScopes: []string{"sub"}}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the deadline", err)
	}
}

func fingerprint(srv *httptest.Server) string {
	sum := sha256.Sum256(srv.Certificate().Raw)
	return hex.EncodeToString(sum[:])
}
