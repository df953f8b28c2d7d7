package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
)

// UMA stands in for the authority's UMA permission endpoint
// (cloudsync.PathPermission) on an httptest TLS server, as the gateway's
// tests need it before (and independently of) the authority's own: it
// checks each request's gateway assertion (Authorization: EdgeID-GW, signed
// with the key of the enrollment it makes) and its body (a JSON array of
// cloudsync.PermissionRequest), records it, and answers 201 with a fresh
// ticket. Presence reports are answered 200; every other path 503, so a
// gateway enrolled with it syncs nothing (set sync.max_staleness to 0).
type UMA struct {
	t   testing.TB
	Srv *httptest.Server
	URL string
	FP  string // SHA-256 of the server certificate, hex
	// E is an enrollment of a gateway with this stand-in (its key signs
	// the assertions the stand-in checks).
	E   *syncclient.Enrollment
	pub jwk.Key

	mu     sync.Mutex
	calls  []UMACall
	status int // answered instead of 201 when set
	n      int
}

// UMACall is one request the stand-in's permission endpoint received.
type UMACall struct {
	// Gateway is the gateway the assertion names; AssertionErr why it was
	// refused ("" if it was good).
	Gateway, AssertionErr string
	ContentType           string
	Requests              []cloudsync.PermissionRequest
	// Ticket is what it answered ("" for a refusal).
	Ticket string
}

// StartUMA starts the stand-in for gateway; it is closed with t.Cleanup.
func StartUMA(t testing.TB, gateway string) *UMA {
	t.Helper()
	key, err := cloudsync.NewES256Key()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	feed, err := cloudsync.NewES256Key()
	if err != nil {
		t.Fatal(err)
	}
	feedPub, _ := feed.PublicKey()
	u := &UMA{t: t, pub: pub}
	u.Srv = httptest.NewTLSServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Srv.Close)
	u.URL = u.Srv.URL
	sum := sha256.Sum256(u.Srv.Certificate().Raw)
	u.FP = hex.EncodeToString(sum[:])
	keyJSON, _ := json.Marshal(key)
	feedJSON, _ := json.Marshal(feedPub)
	u.E = &syncclient.Enrollment{Authority: u.URL, Fingerprint: u.FP, Gateway: gateway, Audience: "edgeid",
		FeedKey: feedJSON, Key: keyJSON, Enrolled: time.Now()}
	return u
}

// Fail makes the permission endpoint answer status (0: 201 again).
func (u *UMA) Fail(status int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status = status
}

// Calls are the permission requests received so far.
func (u *UMA) Calls() []UMACall {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]UMACall(nil), u.calls...)
}

func (u *UMA) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == cloudsync.PathSeen:
		w.WriteHeader(http.StatusOK)
		return
	case r.Method != http.MethodPost || r.URL.Path != cloudsync.PathPermission:
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "a UMA permission endpoint stand-in only", http.StatusServiceUnavailable)
		return
	}
	c := UMACall{ContentType: r.Header.Get("Content-Type")}
	refuse := func(status int, why string) {
		u.mu.Lock()
		u.calls = append(u.calls, c)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request", "error_description": why})
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "EdgeID-GW ")
	if !ok {
		c.AssertionErr = "no EdgeID-GW assertion"
		refuse(http.StatusUnauthorized, c.AssertionErr)
		return
	}
	a, err := cloudsync.VerifyAssertion(raw, u.URL, func(gw string) (jwk.Key, error) {
		if gw != u.E.Gateway {
			return nil, fmt.Errorf("unknown gateway %q", gw)
		}
		return u.pub, nil
	}, time.Now())
	c.Gateway = a.Gateway
	if err != nil {
		c.AssertionErr = err.Error()
		refuse(http.StatusUnauthorized, c.AssertionErr)
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c.Requests); err != nil || len(c.Requests) == 0 {
		refuse(http.StatusBadRequest, fmt.Sprintf("body is not a non-empty array of permission requests: %v", err))
		return
	}
	u.mu.Lock()
	status := u.status
	if status != 0 {
		u.calls = append(u.calls, c)
		u.mu.Unlock()
		http.Error(w, "permission endpoint failing on purpose", status)
		return
	}
	u.n++
	c.Ticket = fmt.Sprintf("ticket-%d-%s", u.n, strings.ReplaceAll(c.Requests[0].ResourceID, "/", "."))
	u.calls = append(u.calls, c)
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(cloudsync.TicketResponse{Ticket: c.Ticket})
}
