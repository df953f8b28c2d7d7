package authority_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// Issue 16: replicas of the authority on one shared store. Two Authorities
// on one *store.Store behave as two processes on one shared database: each
// registers its own Watch and every commit wakes both; anything either
// keeps only in memory, the other does not see.

// replica starts another Authority on f's store, with its own Handler and
// TLS server, as a second process on a shared database would be: another
// address, the same public URL (what tokens, client assertions and DPoP
// proofs name), the same configuration as newFixture's.
func (f *fixture) replica() *fixture { return f.replicaOn(f.a.Store) }

// replicaOn is replica on st, which must be f's store or wrap it.
func (f *fixture) replicaOn(st authority.Storage) *fixture {
	f.t.Helper()
	var h http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	logs := &logBuf{}
	cfg := authority.Config{URL: f.srv.URL, TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour}
	a, err := authority.New(cfg, st, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	// Runs before the fixture's cleanup, which closes the store.
	f.t.Cleanup(func() { a.Close(); srv.Close() })
	h = authority.NewHandler(a, adminToken)
	sum := sha256.Sum256(srv.Certificate().Raw)
	return &fixture{t: f.t, a: a, srv: srv, fp: hex.EncodeToString(sum[:]), logs: logs, tls: f.tls}
}

var clientCredentials = url.Values{"grant_type": {"client_credentials"}}

func form(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// A client assertion spent at one replica is refused at the other.
func TestReplicasRefuseAReplayedClientAssertion(t *testing.T) {
	a := newFixture(t)
	a.classes()
	b := a.replica()
	d := a.keyDevice("dev-r1")
	used := d.assertionForm(form(clientCredentials))
	if code, m := a.postToken(used, nil); code != 200 {
		t.Fatalf("call home at A: %d %v", code, m["error"])
	}
	if code, m := b.postToken(d.assertionForm(form(clientCredentials)), nil); code != 200 {
		t.Fatalf("call home at B with a fresh assertion: %d %v", code, m["error"])
	}
	code, m := b.postToken(used, nil)
	if code != 401 || m["error"] != "invalid_client" {
		t.Fatalf("the assertion spent at A, at B: %d %v %v, want 401 invalid_client", code, m["error"], m["error_description"])
	}
	if logs := b.logs.String(); !strings.Contains(logs, "client assertion replayed") || strings.Contains(logs, used.Get("client_assertion")) {
		t.Fatalf("B's log does not say replayed, or holds the assertion:\n%s", logs)
	}
}

// A DPoP proof used at one replica's token endpoint is refused at the other.
func TestReplicasRefuseAReplayedDPoPProof(t *testing.T) {
	a := newFixture(t)
	a.classes()
	b := a.replica()
	d := a.keyDevice("dev-r2")
	k, jkt := dpopKey(t)
	proof := a.proofFor(k) // htu: the public URL, both replicas'
	code, m := a.postToken(d.assertionForm(form(clientCredentials)), nil, proof)
	wantDPoPToken(t, "call home with DPoP at A", code, m, jkt, "")
	code, m = b.postToken(d.assertionForm(form(clientCredentials)), nil, a.proofFor(k))
	wantDPoPToken(t, "call home at B with a fresh proof", code, m, jkt, "")
	code, m = b.postToken(d.assertionForm(form(clientCredentials)), nil, proof)
	if code == 200 {
		t.Fatalf("the proof used at A, at B: 200, token_type %v; want 400 invalid_dpop_proof", m["token_type"])
	}
	wantOAuthError(t, "the proof used at A, at B", code, m, "invalid_dpop_proof")
	if desc, _ := m["error_description"].(string); !strings.Contains(desc, "replayed") {
		t.Fatalf("refused for another reason: %v", m)
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Kid string }
	if err := json.Unmarshal(h, &m); err != nil || m.Kid == "" {
		t.Fatalf("token header %s: no kid (%v)", h, err)
	}
	return m.Kid
}

// Keys rotated at one replica: the other signs with the new key (once it
// is due: KeyPublishAhead is 0 here) and both accept tokens of every key
// in the published keyring.
func TestReplicasShareRotatedKeys(t *testing.T) {
	a := newFixture(t)
	a.classes()
	b := a.replica()
	d := a.keyDevice("dev-r3")
	token := func(r *fixture) string {
		t.Helper()
		code, m := r.postToken(d.assertionForm(form(clientCredentials)), nil)
		tok, _ := m["access_token"].(string)
		if code != 200 || tok == "" {
			t.Fatalf("call home: %d %v", code, m)
		}
		return tok
	}
	active := func(r *fixture, tok string) bool {
		t.Helper()
		code, body := r.do("POST", "/oauth/introspect", adminToken, "application/x-www-form-urlencoded", url.Values{"token": {tok}}.Encode(), nil)
		if code != 200 {
			t.Fatalf("introspect: %d %s", code, body)
		}
		return strings.Contains(body, `"active":true`)
	}
	before := token(b)
	code, body := a.do("POST", "/admin/v1/keys/rotate", adminToken, "", "", nil)
	var rr struct {
		NextKid string `json:"next_kid"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &rr) != nil || rr.NextKid == "" || rr.NextKid == kidOf(t, before) {
		t.Fatalf("rotate at A: %d %s", code, body)
	}
	// B learns of the rotation from the store (the commit that published
	// it, or its check before signing); awaited, not timed.
	var after string
	for deadline := time.Now().Add(10 * time.Second); ; {
		after = token(b)
		if kidOf(t, after) == rr.NextKid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B still signs with %s, 10 s after A rotated to %s", kidOf(t, after), rr.NextKid)
		}
		time.Sleep(100 * time.Millisecond) // within the token endpoint's rate (20 a second)
	}
	if kid := kidOf(t, token(a)); kid != rr.NextKid {
		t.Fatalf("A signs with %s after the rotation, want %s", kid, rr.NextKid)
	}
	if !active(a, before) {
		t.Fatal("a token B issued before the rotation is not active at A")
	}
	if !active(a, after) || !active(b, token(a)) {
		t.Fatal("a token of the new key, issued by one replica, is not active at the other")
	}
	iss, err := a.a.Store.Issuers()
	if err != nil || len(iss) != 1 || !strings.Contains(string(iss[0].JWKS), rr.NextKid) || !strings.Contains(string(iss[0].JWKS), kidOf(t, before)) {
		t.Fatalf("the feed's issuer record lacks the new or the previous key: %v %v", iss, err)
	}
}

// Two replicas rotating at once make one next key: both answer it, and it
// is the one published.
func TestReplicasRotatingAtOnceMakeOneKey(t *testing.T) {
	a := newFixture(t)
	b := a.replica()
	kids := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, r := range []*fixture{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			kids[i], _, errs[i] = r.a.Rotate("admin:test")
		}()
	}
	close(start)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || kids[0] != kids[1] {
		t.Fatalf("rotations at once: kids %q, errors %v; want one next key", kids, errs)
	}
	for _, r := range []*fixture{a, b} {
		jwks, err := r.a.JWKS()
		if err != nil || strings.Count(string(jwks), `"kid"`) != 2 || !strings.Contains(string(jwks), kids[0]) {
			t.Fatalf("published keys: %s %v; want the current key and %s", jwks, err, kids[0])
		}
	}
}

// Failed logins recorded at once at two replicas all count.
func TestReplicasCountEveryLoginFailure(t *testing.T) {
	a := newFixture(t)
	b := a.replica()
	hs := []*authority.Handler{authority.NewHandler(a.a, adminToken), authority.NewHandler(b.a, adminToken)}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// From 16 addresses: 16 failures of the account, below its
			// lock (20), one at each address.
			if err := hs[i%2].LoginFailed("alice", fmt.Sprintf("192.0.2.%d", i+1)); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n, err := hs[0].AccountLoginFailures("alice"); err != nil || n != 16 {
		t.Fatalf("alice's counter after 16 failures at two replicas: %d %v", n, err)
	}
}

// Admin keys added at once at two replicas: none is lost. Of two additions
// of one name, one is made and the other refused, and the key handed out
// works at both replicas.
func TestReplicasKeepEveryAdminKey(t *testing.T) {
	a := newFixture(t)
	b := a.replica()
	rs := []*fixture{a, b}
	const rounds = 32
	type added struct {
		name, key string
		err       error
	}
	var got []added
	var mu sync.Mutex
	add := func(wg *sync.WaitGroup, start chan struct{}, r *fixture, name string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key, _, err := r.a.AddAdminKey(name, "admin:test")
			mu.Lock()
			got = append(got, added{name, key, err})
			mu.Unlock()
		}()
	}
	// Names of their own, all at once.
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 8 {
		for j, r := range rs {
			add(&wg, start, r, fmt.Sprintf("own-%d-%d", j, i))
		}
	}
	close(start)
	wg.Wait()
	// One name both add at once, round by round.
	for i := range rounds {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, r := range rs {
			add(&wg, start, r, fmt.Sprintf("both-%d", i))
		}
		close(start)
		wg.Wait()
	}
	made := map[string]string{}
	for _, g := range got {
		switch {
		case g.err == nil && made[g.name] != "":
			t.Errorf("admin key %s made twice", g.name)
		case g.err == nil:
			made[g.name] = g.key
		case g.err != authority.ErrAdminKeyExists || !strings.HasPrefix(g.name, "both-"):
			t.Errorf("admin key %s: %v", g.name, g.err)
		}
	}
	if len(made) != 16+rounds {
		t.Errorf("%d admin keys made, want %d", len(made), 16+rounds)
	}
	for name, key := range made {
		for i, r := range rs {
			if code, body := r.do("GET", "/admin/v1/devices", key, "", "", nil); code != 200 {
				t.Errorf("admin key %s handed out, refused at replica %d: %d %s", name, i, code, body)
			}
		}
	}
	if ks, err := b.a.AdminKeys(); err != nil || len(ks) != 16+rounds {
		t.Errorf("admin keys listed: %d %v, want %d", len(ks), err, 16+rounds)
	}
}

// Tokens issued at once in one grant at two replicas are all recorded with
// it: revoking the grant revokes every one.
func TestReplicasRevokeEveryTokenOfAGrant(t *testing.T) {
	a := newFixture(t)
	a.classes()
	b := a.replica()
	d := a.keyDevice("dev-r4")
	_, jkt := dpopKey(t)
	rs := []*fixture{a, b}
	toks := make([]authority.TokenResponse, 16)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tr, err := rs[i%2].a.IssueInGrant(d.id, "alice", "grant-1", jkt)
			if err != nil {
				t.Error(err)
			}
			toks[i] = tr
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := b.a.RevokeToken(toks[0].RefreshToken, "admin:test"); err != nil {
		t.Fatal(err)
	}
	for i, tr := range toks {
		jti, _ := decodeClaims(t, tr.AccessToken)["jti"].(string)
		if _, ok, err := a.a.Store.Revocation(store.RevokeToken, jti); err != nil || !ok {
			t.Errorf("token %d of the grant (issued at replica %d) not revoked with it (%v)", i, i%2, err)
		}
	}
}

// failingDocs is a store whose conditional commits of some kinds of
// document fail (the database unreachable for them).
type failingDocs struct {
	authority.Storage
	mu    sync.Mutex
	kinds map[string]bool
}

func (s *failingDocs) fail(kinds ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kinds = map[string]bool{}
	for _, k := range kinds {
		s.kinds[k] = true
	}
}

func (s *failingDocs) CommitDocs(expect map[string]uint64, ws ...store.DocWrite) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range ws {
		if s.kinds[w.Kind] {
			return fmt.Errorf("connection refused (writing %s)", w.Kind)
		}
	}
	return s.Storage.CommitDocs(expect, ws...)
}

// A replay entry that cannot be written refuses the request (fail closed):
// the authority's error, logged with its reason and without the
// assertion or proof.
func TestReplayStoreFailureRefuses(t *testing.T) {
	a := newFixture(t)
	a.classes()
	st := &failingDocs{Storage: a.a.Store}
	b := a.replicaOn(st)
	d := a.keyDevice("dev-r5")
	k, _ := dpopKey(t)

	st.fail("assertion")
	used := d.assertionForm(form(clientCredentials))
	code, m := b.postToken(used, nil)
	if code != 500 || m["error"] != "server_error" {
		t.Fatalf("client assertion with its replay entry unwritable: %d %v %v, want 500 server_error", code, m["error"], m["error_description"])
	}
	// Not spent: once the store is back, it is accepted (here, at A).
	st.fail()
	if code, m := a.postToken(used, nil); code != 200 {
		t.Fatalf("the assertion refused for the store's failure, later: %d %v", code, m["error"])
	}

	st.fail("dpop-proof")
	proof := a.proofFor(k)
	code, m = b.postToken(d.assertionForm(form(clientCredentials)), nil, proof)
	if code != 500 || m["error"] != "server_error" {
		t.Fatalf("DPoP proof with its replay entry unwritable: %d %v %v, want 500 server_error", code, m["error"], m["error_description"])
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "connection refused (writing assertion)") || !strings.Contains(logs, "connection refused (writing dpop-proof)") {
		t.Fatalf("the reasons are not logged:\n%s", logs)
	}
	if strings.Contains(logs, used.Get("client_assertion")) || strings.Contains(logs, proof) {
		t.Fatalf("an assertion or proof was logged:\n%s", logs)
	}
}
