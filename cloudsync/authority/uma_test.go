package authority_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// umaEnv is a real authority with the demo classes, accounts alice, bob
// and carol, alice's thermostat thermo-1 and carol's thermo-2, and an
// enrolled gateway gw-1 (the resource server) whose key signs its
// permission requests.
type umaEnv struct {
	*fixture
	gwKey jwk.Key
}

const umaGateway = "gw-1"

func newUMA(t *testing.T, mod func(*authority.Config)) *umaEnv {
	t.Helper()
	f := newFixtureWith(t, mod)
	f.classes()
	users := []store.User{{ID: "alice", Status: store.UserActive}, {ID: "bob", Status: store.UserActive}, {ID: "carol", Status: store.UserActive}}
	devices := []store.Device{{ID: "thermo-1", Name: "Kitchen", Class: "thermostat", Owner: "alice", Status: store.DeviceActive},
		{ID: "thermo-2", Class: "thermostat", Owner: "carol", Status: store.DeviceActive}}
	if _, err := f.a.Apply(&store.Batch{Users: users, Devices: devices}, "test"); err != nil {
		t.Fatal(err)
	}
	code, _, err := f.a.AddGateway(umaGateway, "test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := client.Enroll(context.Background(), f.srv.URL, f.fp, code, "test-board")
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.ParseKey(e.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &umaEnv{fixture: f, gwKey: key}
}

// call makes a request with the given headers, over mutual TLS with cert
// when it is not nil.
func (f *fixture) call(method, path string, hdr http.Header, body string, cert *tls.Certificate) (int, http.Header, string) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	c := client.HTTPClient(f.fp)
	if cert != nil {
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func jsonMap(t *testing.T, body string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("not a JSON object: %s", body)
	}
	return m
}

// permission posts body to the permission endpoint as the gateway (with
// its request assertion when signed).
func (u *umaEnv) permission(body string, signed bool) (int, map[string]any) {
	u.t.Helper()
	hdr := http.Header{"Content-Type": {"application/json"}}
	if signed {
		a, err := cloudsync.SignAssertion(u.gwKey, umaGateway, u.srv.URL, time.Now())
		if err != nil {
			u.t.Fatal(err)
		}
		hdr.Set("Authorization", "EdgeID-GW "+a)
	}
	code, _, b := u.call("POST", cloudsync.PathPermission, hdr, body, nil)
	return code, jsonMap(u.t, b)
}

// ticket is the gateway's ticket for one resource and its scopes.
func (u *umaEnv) ticket(resource string, scopes ...string) string {
	u.t.Helper()
	b, _ := json.Marshal([]cloudsync.PermissionRequest{{ResourceID: resource, ResourceScopes: scopes}})
	code, m := u.permission(string(b), true)
	if code != 201 || m["ticket"] == "" {
		u.t.Fatalf("permission ticket for %s %v: %d %v", resource, scopes, code, m)
	}
	return m["ticket"].(string)
}

// service is a client of class app with no owner (a service acting for
// itself) that authenticates with its pinned certificate.
type service struct {
	u     *umaEnv
	id    string
	cert  tls.Certificate
	x5t   string // cnf x5t#S256 of its certificate
	files demo.Files
}

func (u *umaEnv) service(id string) *service {
	u.t.Helper()
	files, err := demo.WriteTLS(u.t.TempDir(), id)
	if err != nil {
		u.t.Fatal(err)
	}
	if _, err := u.a.Apply(&store.Batch{Devices: []store.Device{{ID: id, Class: "app", Status: store.DeviceActive, CertSHA256: files.DeviceFingerprint}}}, "test"); err != nil {
		u.t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	if err != nil {
		u.t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return &service{u: u, id: id, cert: cert, x5t: base64.RawURLEncoding.EncodeToString(sum[:]), files: files}
}

// grant asks the token endpoint for an RPT with the UMA grant.
func (s *service) grant(form url.Values, proofs ...string) (int, map[string]any) {
	form.Set("grant_type", authority.UMATicketGrant)
	form.Set("client_id", s.id)
	return s.u.postToken(form, &s.cert, proofs...)
}

// token is the service's own client_credentials token (a PAT).
func (s *service) token() string {
	s.u.t.Helper()
	code, m := s.u.postToken(url.Values{"grant_type": {"client_credentials"}, "client_id": {s.id}}, &s.cert)
	if code != 200 {
		s.u.t.Fatalf("service token: %d %v", code, m)
	}
	return m["access_token"].(string)
}

// app is a person's app: a device of class app with its own key
// (private_key_jwt), paired to owner; it returns the app and its access
// token (sub = owner, client_id = the app).
func (u *umaEnv) app(id, owner string) (*keyDevice, string) {
	u.t.Helper()
	k, _ := demo.NewIssuer(id, id+"-key")
	pub, _ := k.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	if _, err := u.a.Apply(&store.Batch{Devices: []store.Device{{ID: id, Class: "app", Status: store.DeviceActive, PublicKey: pubJSON}}}, "test"); err != nil {
		u.t.Fatal(err)
	}
	d := &keyDevice{f: u.fixture, id: id, key: k}
	dc, uc := d.start(u.t)
	if err := u.a.DecidePairing(uc, owner, true); err != nil {
		u.t.Fatal(err)
	}
	code, m := d.poll(dc)
	if code != 200 {
		u.t.Fatalf("pair %s to %s: %d %v", id, owner, code, m)
	}
	return d, m["access_token"].(string)
}

// umaGrant asks for an RPT as app d, with ticket and, when not empty, the
// claim token.
func umaGrant(d *keyDevice, ticket, claimToken string, extra ...string) (int, map[string]any) {
	form := url.Values{"grant_type": {authority.UMATicketGrant}, "ticket": {ticket}}
	if claimToken != "" {
		form.Set("claim_token", claimToken)
		form.Set("claim_token_format", authority.ClaimTokenJWT)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Set(extra[i], extra[i+1])
	}
	return d.post("/oauth/token", form)
}

func (u *umaEnv) share(owner string, in authority.ShareInput) store.Grant {
	u.t.Helper()
	g, err := u.a.CreateShare(owner, in, "test")
	if err != nil {
		u.t.Fatal(err)
	}
	return g
}

func permissionsOf(t *testing.T, claims map[string]any) []map[string]any {
	t.Helper()
	ps, ok := claims["permissions"].([]any)
	if !ok {
		t.Fatalf("no permissions claim: %v", claims)
	}
	var out []map[string]any
	for _, p := range ps {
		out = append(out, p.(map[string]any))
	}
	return out
}

func wantError(t *testing.T, what string, code int, m map[string]any, wantCode int, wantErr, inDesc string) {
	t.Helper()
	desc, _ := m["error_description"].(string)
	if code != wantCode || m["error"] != wantErr || !strings.Contains(desc, inDesc) {
		t.Fatalf("%s: %d %v, want %d %s with %q in the description", what, code, m, wantCode, wantErr, inDesc)
	}
	if m["access_token"] != nil {
		t.Fatalf("%s: an error answer carries a token: %v", what, m)
	}
}

// A service acting for itself (mutual TLS, no claim token): a share made
// to it gives an RPT for exactly the shared resource, bound to its
// certificate, expiring with the share; the ticket is then used up. A
// ticket for what no share covers asks the owner; once the owner approves,
// the same ticket's next poll gets the RPT.
func TestUMAServiceClient(t *testing.T) {
	u := newUMA(t, nil)
	svc := u.service("svc-1")
	expires := time.Now().Add(30 * time.Minute).Truncate(time.Second)
	g := u.share("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}},
		Grantee: "svc-1", GranteeKind: store.GranteeClient, Expires: expires})

	ticket := u.ticket("thermo-1/telemetry", "sub")
	code, m := svc.grant(url.Values{"ticket": {ticket}})
	if code != 200 || m["token_type"] != "Bearer" || m["upgraded"] != false || m["refresh_token"] != nil || m["expires_in"].(float64) <= 0 {
		t.Fatalf("RPT: %d %v", code, m)
	}
	rpt := m["access_token"].(string)
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(rpt, ".")[0])
	if !strings.Contains(string(hdr), `"typ":"at+jwt"`) {
		t.Fatalf("RPT header %s", hdr)
	}
	c := decodeClaims(t, rpt)
	if c["sub"] != "svc-1" || c["client_id"] != "svc-1" || c["scope"] != "" || c["iss"] != u.srv.URL || c["aud"] != "edgeid" {
		t.Fatalf("RPT claims %v", c)
	}
	if cnf, _ := c["cnf"].(map[string]any); cnf["x5t#S256"] != svc.x5t || len(cnf) != 1 {
		t.Fatalf("RPT cnf %v, want x5t#S256 %s", c["cnf"], svc.x5t)
	}
	if int64(c["exp"].(float64)) > expires.Unix() {
		t.Fatalf("RPT exp %v after the share's expiry %d", c["exp"], expires.Unix())
	}
	ps := permissionsOf(t, c)
	if len(ps) != 1 || ps[0]["resource_id"] != "thermo-1/telemetry" || ps[0]["share"] != g.ID ||
		!slices.Equal(ps[0]["resource_scopes"].([]any), []any{"sub"}) || int64(ps[0]["exp"].(float64)) != expires.Unix() || ps[0]["edgeid:window"] != nil {
		t.Fatalf("RPT permissions %v (share %s)", ps, g.ID)
	}
	// Introspection sees an active token of the service.
	_, body := u.do("POST", "/oauth/introspect", adminToken, "application/x-www-form-urlencoded", url.Values{"token": {rpt}}.Encode(), nil)
	if im := jsonMap(t, body); im["active"] != true || im["sub"] != "svc-1" {
		t.Fatalf("introspect the RPT: %v", im)
	}
	// Single use.
	code, m = svc.grant(url.Values{"ticket": {ticket}})
	wantError(t, "the same ticket again", code, m, 400, "invalid_grant", "ticket:")

	// Status is not shared: the owner is asked, the client polls.
	ticket = u.ticket("thermo-1/status", "sub")
	code, m = svc.grant(url.Values{"ticket": {ticket}})
	wantError(t, "unshared resource", code, m, 403, "request_submitted", "owner")
	if m["ticket"] != ticket || m["interval"] != float64(5) {
		t.Fatalf("request_submitted: %v, want the same ticket and interval 5", m)
	}
	reqs, err := u.a.Requests("alice")
	if err != nil || len(reqs) != 1 || reqs[0].State != authority.RequestPending || reqs[0].Party != "svc-1" || reqs[0].PartyKind != store.GranteeClient ||
		reqs[0].Resources[0].ID() != "thermo-1/status" {
		t.Fatalf("alice's requests: %+v %v", reqs, err)
	}
	code, m = svc.grant(url.Values{"ticket": {ticket}})
	wantError(t, "second poll before the owner decides", code, m, 403, "request_submitted", "")
	r, err := u.a.DecideRequest("alice", reqs[0].ID, true, time.Time{}, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	code, m = svc.grant(url.Values{"ticket": {ticket}})
	if code != 200 {
		t.Fatalf("poll after approval: %d %v", code, m)
	}
	ps = permissionsOf(t, decodeClaims(t, m["access_token"].(string)))
	if len(ps) != 1 || ps[0]["resource_id"] != "thermo-1/status" || ps[0]["share"] != r.Share || ps[0]["exp"] != nil {
		t.Fatalf("RPT after approval: %v (share %s)", ps, r.Share)
	}

	// With a DPoP proof the RPT is bound to the DPoP key and the certificate.
	k, jkt := dpopKey(t)
	ticket = u.ticket("thermo-1/telemetry", "sub")
	code, m = svc.grant(url.Values{"ticket": {ticket}}, u.proofFor(k))
	if code != 200 || m["token_type"] != "DPoP" {
		t.Fatalf("RPT with DPoP: %d %v", code, m)
	}
	if cnf := decodeClaims(t, m["access_token"].(string))["cnf"].(map[string]any); cnf["jkt"] != jkt || cnf["x5t#S256"] != svc.x5t {
		t.Fatalf("DPoP RPT cnf %v", cnf)
	}
	if logs := u.logs.String(); strings.Contains(logs, ticket) || strings.Contains(logs, rpt) {
		t.Fatal("a ticket or a token was logged")
	}
}

// The friend's app (a person's client, private_key_jwt): without a claim
// token it is asked for one (need_info, with a new ticket); with the
// friend's access token as claim token the owner is asked; the owner
// approves with conditions and the app's next poll gets an RPT acting for
// the friend, with the share's conditions in its permissions.
func TestUMAFriendAppThroughRequest(t *testing.T) {
	u := newUMA(t, nil)
	app, bobToken := u.app("bob-app", "bob")
	carolApp, carolToken := u.app("carol-app", "carol")

	first := u.ticket("thermo-1/telemetry", "sub")
	code, m := umaGrant(app, first, "")
	wantError(t, "app without claim token", code, m, 403, "need_info", "claim_token")
	ticket, _ := m["ticket"].(string)
	rc, _ := m["required_claims"].([]any)
	if ticket == "" || ticket == first || len(rc) != 1 {
		t.Fatalf("need_info: %v, want a new ticket and the required claims", m)
	}
	if want := map[string]any{"claim_token_format": []any{authority.ClaimTokenJWT}, "name": "sub"}; !jsonEqual(rc[0], want) {
		t.Fatalf("required_claims %v, want %v", rc[0], want)
	}
	code, m = umaGrant(app, first, bobToken)
	wantError(t, "the ticket need_info replaced", code, m, 400, "invalid_grant", "ticket:")

	code, m = umaGrant(app, ticket, bobToken)
	wantError(t, "no share yet", code, m, 403, "request_submitted", "")
	if m["ticket"] != ticket || m["interval"] != float64(5) {
		t.Fatalf("request_submitted: %v", m)
	}
	// Another client cannot take over the waiting ticket.
	code, m = umaGrant(carolApp, ticket, carolToken)
	wantError(t, "another client's poll", code, m, 400, "invalid_grant", "another client")

	reqs, _ := u.a.Requests("alice")
	if len(reqs) != 1 || reqs[0].Party != "bob" || reqs[0].PartyKind != store.GranteeUser || reqs[0].Client != "bob-app" {
		t.Fatalf("alice's requests: %+v", reqs)
	}
	expires := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	window := &store.Window{From: "07:00", To: "21:00"}
	r, err := u.a.DecideRequest("alice", reqs[0].ID, true, expires, window, "test")
	if err != nil {
		t.Fatal(err)
	}
	code, m = umaGrant(app, ticket, bobToken)
	if code != 200 || m["upgraded"] != false {
		t.Fatalf("poll after approval: %d %v", code, m)
	}
	c := decodeClaims(t, m["access_token"].(string))
	jkt, _ := dpop.Thumbprint(app.key.Key)
	if c["sub"] != "bob" || c["client_id"] != "bob-app" || c["cnf"].(map[string]any)["jkt"] != jkt {
		t.Fatalf("RPT claims %v (app key %s)", c, jkt)
	}
	ps := permissionsOf(t, c)
	if len(ps) != 1 || ps[0]["share"] != r.Share || ps[0]["resource_id"] != "thermo-1/telemetry" || int64(ps[0]["exp"].(float64)) != expires.Unix() ||
		!jsonEqual(ps[0]["edgeid:window"], map[string]any{"from": "07:00", "to": "21:00"}) {
		t.Fatalf("RPT permissions %v", ps)
	}
	if int64(c["exp"].(float64)) > expires.Unix() {
		t.Fatalf("RPT outlives the share: exp %v", c["exp"])
	}
	code, m = umaGrant(app, ticket, bobToken)
	wantError(t, "ticket after its RPT", code, m, 400, "invalid_grant", "ticket:")

	// With the share in place, a new ticket gives an RPT at once.
	code, m = umaGrant(app, u.ticket("thermo-1/telemetry", "sub"), bobToken)
	if code != 200 {
		t.Fatalf("with a share: %d %v", code, m)
	}
	// A ticket for a resource the share does not cover asks again.
	code, m = umaGrant(app, u.ticket("thermo-1/status", "sub"), bobToken)
	wantError(t, "a resource the share does not cover", code, m, 403, "request_submitted", "")
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// The owner denies: the poll is request_denied, and asking again the same
// day is too.
func TestUMARequestDenied(t *testing.T) {
	u := newUMA(t, nil)
	app, bobToken := u.app("bob-app", "bob")
	ticket := u.ticket("thermo-1/telemetry", "sub")
	if code, m := umaGrant(app, ticket, bobToken); code != 403 || m["error"] != "request_submitted" {
		t.Fatalf("first ask: %d %v", code, m)
	}
	reqs, _ := u.a.Requests("alice")
	if _, err := u.a.DecideRequest("alice", reqs[0].ID, false, time.Time{}, nil, "test"); err != nil {
		t.Fatal(err)
	}
	code, m := umaGrant(app, ticket, bobToken)
	wantError(t, "poll after the denial", code, m, 403, "request_denied", "denied")
	if m["ticket"] != nil {
		t.Fatalf("request_denied carries a ticket: %v", m)
	}
	code, m = umaGrant(app, u.ticket("thermo-1/telemetry", "sub"), bobToken)
	wantError(t, "asking again", code, m, 403, "request_denied", "")
	code, m = umaGrant(app, ticket, bobToken)
	wantError(t, "the denied ticket", code, m, 400, "invalid_grant", "ticket:")
}

// Each refusal of the UMA grant, with its answer.
func TestUMAGrantErrors(t *testing.T) {
	u := newUMA(t, nil)
	app, bobToken := u.app("bob-app", "bob")
	carolApp, carolToken := u.app("carol-app", "carol")
	u.share("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}}, Grantee: "bob", GranteeKind: store.GranteeUser})
	tel := func() string { return u.ticket("thermo-1/telemetry", "sub") }
	mint := func(iss *demo.Issuer, mod func(map[string]any)) string {
		now := time.Now()
		c := map[string]any{"iss": iss.URL, "sub": "bob", "client_id": "bob-app", "aud": "edgeid", "iat": now.Unix(),
			"exp": now.Add(10 * time.Minute).Unix(), "jti": "j-" + now.Format("150405.000000000")}
		if mod != nil {
			mod(c)
		}
		tok, err := iss.Mint(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	code, m := umaGrant(app, "", bobToken)
	wantError(t, "no ticket", code, m, 400, "invalid_request", "ticket is required")
	code, m = umaGrant(app, "not-a-ticket", bobToken)
	wantError(t, "bad ticket", code, m, 400, "invalid_grant", "ticket:")

	untrusted, _ := demo.NewIssuer("https://idp.untrusted.example", "k1")
	code, m = umaGrant(app, tel(), mint(untrusted, nil))
	wantError(t, "claim token of an untrusted issuer", code, m, 400, "invalid_grant", "claim_token: its issuer \"https://idp.untrusted.example\" is not trusted")
	forged, _ := demo.NewIssuer(u.srv.URL, "k1")
	code, m = umaGrant(app, tel(), mint(forged, nil))
	wantError(t, "claim token claiming this authority, signed by another key", code, m, 400, "invalid_grant", "claim_token: its signature")
	code, m = umaGrant(app, tel(), "garbage")
	wantError(t, "claim token that is no JWT", code, m, 400, "invalid_grant", "claim_token: not a JWT")

	// A trusted issuer's token works: sub the party, azp the client.
	idp, _ := demo.NewIssuer("https://idp.example", "idp-1")
	rec, _ := idp.Record()
	if _, err := u.a.Apply(&store.Batch{Issuers: []store.Issuer{rec}}, "test"); err != nil {
		t.Fatal(err)
	}
	code, m = umaGrant(app, tel(), mint(idp, func(c map[string]any) { delete(c, "client_id"); c["azp"] = "bob-app" }))
	if code != 200 || decodeClaims(t, m["access_token"].(string))["sub"] != "bob" {
		t.Fatalf("claim token of a trusted issuer: %d %v", code, m)
	}
	code, m = umaGrant(app, tel(), mint(idp, func(c map[string]any) {
		c["exp"], c["iat"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-2*time.Hour).Unix()
	}))
	wantError(t, "expired claim token", code, m, 400, "invalid_grant", "claim_token: not active")
	code, m = umaGrant(app, tel(), mint(idp, func(c map[string]any) { c["aud"] = "https://elsewhere.example" }))
	wantError(t, "claim token for another audience", code, m, 400, "invalid_grant", "claim_token: its aud")
	code, m = umaGrant(app, tel(), mint(idp, func(c map[string]any) { c["sub"] = "mallory" }))
	wantError(t, "claim token of no account", code, m, 400, "invalid_grant", "claim_token: its sub \"mallory\"")

	// The claim token of another client (carol's app's token, bob's app presenting it).
	code, m = umaGrant(app, tel(), carolToken)
	wantError(t, "claim token of another client", code, m, 400, "invalid_grant", "claim_token: it was issued to client \"carol-app\"")
	code, m = umaGrant(carolApp, tel(), bobToken)
	wantError(t, "bob's token presented by carol's app", code, m, 400, "invalid_grant", "claim_token:")

	// Formats.
	code, m = umaGrant(app, tel(), "", "claim_token", bobToken)
	wantError(t, "claim token without format", code, m, 400, "invalid_request", "claim_token_format is required")
	code, m = umaGrant(app, tel(), bobToken, "claim_token_format", "https://openid.net/specs/openid-connect-core-1_0.html#IDToken")
	wantError(t, "unsupported claim token format", code, m, 400, "invalid_request", "claim_token_format")
	code, m = umaGrant(app, tel(), bobToken, "claim_token_format", "urn:ietf:params:oauth:token-type:access_token")
	if code != 200 {
		t.Fatalf("RFC 8693 access_token format: %d %v", code, m)
	}

	// scope: only the ticket's scopes.
	code, m = umaGrant(app, tel(), bobToken, "scope", "pub")
	wantError(t, "scope beyond the ticket", code, m, 400, "invalid_scope", "scope: \"pub\"")
	if code, m = umaGrant(app, tel(), bobToken, "scope", "sub"); code != 200 {
		t.Fatalf("scope within the ticket: %d %v", code, m)
	}

	// A ticket for a resource bob has no share of: the owner is asked, no RPT.
	code, m = umaGrant(app, u.ticket("thermo-1/status", "sub"), bobToken)
	wantError(t, "ticket for another resource", code, m, 403, "request_submitted", "")
	code, m = umaGrant(app, u.ticket("thermo-2/telemetry", "sub"), bobToken)
	wantError(t, "ticket for another owner's resource", code, m, 403, "request_submitted", "")

	// The owner asking for her own resources.
	aliceApp, aliceToken := u.app("alice-app", "alice")
	code, m = umaGrant(aliceApp, tel(), aliceToken)
	wantError(t, "the owner as requesting party", code, m, 403, "request_denied", "owns these resources")

	// A revoked claim token.
	if code, _ := u.do("POST", "/oauth/revoke", adminToken, "application/x-www-form-urlencoded", url.Values{"token": {bobToken}}.Encode(), nil); code != 200 {
		t.Fatal("revoke")
	}
	code, m = umaGrant(app, tel(), bobToken)
	wantError(t, "revoked claim token", code, m, 400, "invalid_grant", "claim_token: not active")

	// No client authentication at all.
	code, m = u.postToken(url.Values{"grant_type": {authority.UMATicketGrant}, "ticket": {tel()}}, nil)
	wantError(t, "no client authentication", code, m, 401, "invalid_client", "")
	if strings.Contains(u.logs.String(), bobToken) || strings.Contains(u.logs.String(), carolToken) {
		t.Fatal("a claim token was logged")
	}
	if !strings.Contains(u.logs.String(), "UMA grant refused") {
		t.Fatal("refusals not logged")
	}
}

// A claim token bound to a key must be presented by a request that proves
// it: bob's app token (cnf jkt of the app's key) from a client that
// authenticated with a certificate is refused.
func TestUMAClaimTokenBinding(t *testing.T) {
	u := newUMA(t, nil)
	_, bobToken := u.app("bob-app", "bob")
	// The same client id, re-registered with a certificate as well: the
	// request proves the certificate, not the key the token is bound to.
	files, _ := demo.WriteTLS(t.TempDir(), "bob-app")
	d, _ := u.a.Store.Device("bob-app")
	d.CertSHA256 = files.DeviceFingerprint
	if _, err := u.a.Apply(&store.Batch{Devices: []store.Device{d}}, "test"); err != nil {
		t.Fatal(err)
	}
	cert, _ := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	code, m := u.postToken(url.Values{"grant_type": {authority.UMATicketGrant}, "client_id": {"bob-app"}, "ticket": {u.ticket("thermo-1/telemetry", "sub")},
		"claim_token": {bobToken}, "claim_token_format": {authority.ClaimTokenJWT}}, &cert)
	wantError(t, "key-bound claim token over mutual TLS", code, m, 400, "invalid_grant", "cnf jkt")
}

// A ticket lives UMATicketTTL; one that left a request waiting lives until
// the owner decides, and a TTL after.
func TestUMATicketExpiry(t *testing.T) {
	u := newUMA(t, func(c *authority.Config) { c.UMATicketTTL = 400 * time.Millisecond })
	app, bobToken := u.app("bob-app", "bob")
	unused := u.ticket("thermo-1/telemetry", "sub")
	waiting := u.ticket("thermo-1/telemetry", "sub")
	if code, m := umaGrant(app, waiting, bobToken); code != 403 || m["error"] != "request_submitted" {
		t.Fatalf("ask: %d %v", code, m)
	}
	time.Sleep(600 * time.Millisecond)
	code, m := umaGrant(app, unused, bobToken)
	wantError(t, "expired ticket", code, m, 400, "invalid_grant", "ticket:")
	code, m = umaGrant(app, waiting, bobToken)
	wantError(t, "a waiting ticket past its TTL", code, m, 403, "request_submitted", "")
	reqs, _ := u.a.Requests("alice")
	if _, err := u.a.DecideRequest("alice", reqs[0].ID, true, time.Time{}, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if code, m := umaGrant(app, waiting, bobToken); code != 200 {
		t.Fatalf("poll after approval: %d %v", code, m)
	}
}

// An RPT sent with the request (rpt) is upgraded: the new RPT holds its
// permissions and the ticket's.
func TestUMARPTUpgrade(t *testing.T) {
	u := newUMA(t, nil)
	svc := u.service("svc-1")
	u.share("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}, "status": {"sub"}},
		Grantee: "svc-1", GranteeKind: store.GranteeClient})
	code, m := svc.grant(url.Values{"ticket": {u.ticket("thermo-1/telemetry", "sub")}})
	if code != 200 {
		t.Fatalf("first RPT: %d %v", code, m)
	}
	first := m["access_token"].(string)
	code, m = svc.grant(url.Values{"ticket": {u.ticket("thermo-1/status", "sub")}, "rpt": {first}})
	if code != 200 || m["upgraded"] != true {
		t.Fatalf("upgrade: %d %v", code, m)
	}
	var ids []string
	for _, p := range permissionsOf(t, decodeClaims(t, m["access_token"].(string))) {
		ids = append(ids, p["resource_id"].(string))
	}
	if slices.Sort(ids); !slices.Equal(ids, []string{"thermo-1/status", "thermo-1/telemetry"}) {
		t.Fatalf("upgraded RPT permissions %v", ids)
	}
	code, m = svc.grant(url.Values{"ticket": {u.ticket("thermo-1/status", "sub")}, "rpt": {"not-an-rpt"}})
	wantError(t, "bad rpt", code, m, 400, "invalid_grant", "rpt:")
}

// The permission endpoint: the gateway's credential, then each field.
func TestUMAPermissionEndpoint(t *testing.T) {
	u := newUMA(t, nil)
	code, m := u.permission(`{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]}`, false)
	wantError(t, "no gateway credential", code, m, 401, "invalid_client", "EdgeID-GW")
	code, _, body := u.call("POST", cloudsync.PathPermission, http.Header{"Authorization": {"EdgeID-GW not.a.jwt"}}, `{}`, nil)
	if code != 401 || !strings.Contains(body, "invalid_client") {
		t.Fatalf("bad assertion: %d %s", code, body)
	}
	if code, m := u.permission(`{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]}`, true); code != 201 || m["ticket"] == "" {
		t.Fatalf("one object: %d %v", code, m)
	}
	code, m = u.permission(`[{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]},{"resource_id":"thermo-1/commands","resource_scopes":["pub"]}]`, true)
	if code != 201 {
		t.Fatalf("an array: %d %v", code, m)
	}
	for _, tt := range []struct {
		name, body, err, desc string
	}{
		{"unknown device", `{"resource_id":"nope/telemetry","resource_scopes":["sub"]}`, "invalid_resource_id", `resource_id "nope/telemetry": no such resource`},
		{"unknown group", `[{"resource_id":"thermo-1/firmware","resource_scopes":["sub"]}]`, "invalid_resource_id", `[0].resource_id "thermo-1/firmware"`},
		{"not an id", `{"resource_id":"thermo-1","resource_scopes":["sub"]}`, "invalid_resource_id", "resource_id"},
		{"no id", `{"resource_scopes":["sub"]}`, "invalid_resource_id", "resource_id is missing"},
		{"scope the group refuses", `{"resource_id":"thermo-1/telemetry","resource_scopes":["pub"]}`, "invalid_scope", `resource_scopes: "pub" is not a scope thermo-1/telemetry can be shared with (sub)`},
		{"unknown scope", `[{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]},{"resource_id":"thermo-1/status","resource_scopes":["read"]}]`, "invalid_scope", `[1].resource_scopes: "read"`},
		{"no scopes", `{"resource_id":"thermo-1/telemetry","resource_scopes":[]}`, "invalid_scope", "resource_scopes is empty"},
		{"two owners", `[{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]},{"resource_id":"thermo-2/telemetry","resource_scopes":["sub"]}]`, "invalid_resource_id", "[1].resource_id"},
		{"empty array", `[]`, "invalid_request", "at least one permission"},
		{"unknown field", `{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"],"resource_owner":"alice"}`, "invalid_request", "resource_owner"},
		{"not JSON", `resource_id=thermo-1/telemetry`, "invalid_request", "request body"},
		{"trailing data", `{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]} {}`, "invalid_request", "trailing data"},
	} {
		code, m := u.permission(tt.body, true)
		wantError(t, tt.name, code, m, 400, tt.err, tt.desc)
	}
	// A suspended device's resources get no ticket.
	if _, err := u.a.SetDeviceStatus("thermo-1", store.DeviceSuspended, "test"); err != nil {
		t.Fatal(err)
	}
	code, m = u.permission(`{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]}`, true)
	wantError(t, "suspended device", code, m, 400, "invalid_resource_id", "suspended")
	if !strings.Contains(u.logs.String(), "permission ticket refused") {
		t.Fatal("refusals not logged")
	}
}

// UMA 2.0 Grant §2 discovery, and the grant in the RFC 8414 metadata and
// the token endpoint's texts.
func TestUMAConfiguration(t *testing.T) {
	u := newUMA(t, nil)
	code, _, body := u.call("GET", "/.well-known/uma2-configuration", nil, "", nil)
	m := jsonMap(t, body)
	base := u.srv.URL
	if code != 200 || m["issuer"] != base || m["token_endpoint"] != base+"/oauth/token" || m["jwks_uri"] != base+"/jwks.json" ||
		m["permission_endpoint"] != base+"/uma/permission" || m["resource_registration_endpoint"] != base+"/uma/resource_set" ||
		m["claims_interaction_endpoint"] != nil || !jsonEqual(m["uma_profiles_supported"], []string{}) ||
		!jsonEqual(m["claim_token_formats_supported"], []string{authority.ClaimTokenJWT}) ||
		!jsonEqual(m["token_endpoint_auth_methods_supported"], []string{"private_key_jwt", "self_signed_tls_client_auth"}) {
		t.Fatalf("uma2-configuration: %d %s", code, body)
	}
	for _, path := range []string{"/.well-known/uma2-configuration", "/.well-known/oauth-authorization-server"} {
		_, _, body := u.call("GET", path, nil, "", nil)
		gts, _ := jsonMap(t, body)["grant_types_supported"].([]any)
		if !slices.Contains(gts, any(authority.UMATicketGrant)) {
			t.Errorf("%s grant_types_supported %v lacks the UMA grant", path, gts)
		}
	}
	form := "application/x-www-form-urlencoded"
	if _, body := u.do("POST", "/oauth/token", "", form, "client_id=x", nil); !strings.Contains(body, authority.UMATicketGrant) {
		t.Errorf("missing grant_type: %s does not list the UMA grant", body)
	}
	if _, body := u.do("POST", "/oauth/token", "", form, "grant_type=password", nil); !strings.Contains(body, authority.UMATicketGrant) {
		t.Errorf("unsupported grant_type: %s does not list the UMA grant", body)
	}
}

// The resource registration API: a PAT (the owner's paired device's
// token, proven with DPoP; a service's own token over mutual TLS) lists
// and describes its subject's resources; a service registers, updates and
// deletes its own; a device's resources cannot be changed there.
func TestUMAResourceRegistration(t *testing.T) {
	u := newUMA(t, nil)
	phone, aliceToken := u.app("alice-phone", "alice")
	dpopCall := func(method, path, body string) (int, string) {
		t.Helper()
		proof, err := dpop.Sign(phone.key.Key, method, u.srv.URL+path, aliceToken, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		code, _, b := u.call(method, path, http.Header{"Authorization": {"DPoP " + aliceToken}, "DPoP": {proof}, "Content-Type": {"application/json"}}, body, nil)
		return code, b
	}
	code, hdr, body := u.call("GET", "/uma/resource_set", http.Header{"Authorization": {"Bearer " + aliceToken}}, "", nil)
	if code != 401 || !strings.Contains(body, "DPoP") || !strings.Contains(strings.Join(hdr.Values("WWW-Authenticate"), ","), "DPoP") {
		t.Fatalf("key-bound PAT as Bearer: %d %s %v", code, body, hdr)
	}
	code, body = dpopCall("GET", "/uma/resource_set", "")
	var ids []string
	if code != 200 || json.Unmarshal([]byte(body), &ids) != nil || !slices.Equal(ids, []string{"thermo-1/telemetry", "thermo-1/status", "thermo-1/commands"}) {
		t.Fatalf("alice's resources: %d %s", code, body)
	}
	for _, path := range []string{"/uma/resource_set/thermo-1/telemetry", "/uma/resource_set/thermo-1%2Ftelemetry"} {
		code, body = dpopCall("GET", path, "")
		d := jsonMap(t, body)
		if code != 200 || d["_id"] != "thermo-1/telemetry" || d["name"] != "Kitchen: telemetry" || d["type"] != "urn:edgeid:resource-type:topic-group" ||
			!jsonEqual(d["resource_scopes"], []string{"sub"}) || d["edgeid:device"] != "thermo-1" || d["edgeid:group"] != "telemetry" ||
			d["description"] == "" {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
	if code, body = dpopCall("GET", "/uma/resource_set/thermo-2/telemetry", ""); code != 404 || !strings.Contains(body, "not_found") {
		t.Fatalf("carol's resource: %d %s", code, body)
	}
	if code, body = dpopCall("DELETE", "/uma/resource_set/thermo-1/telemetry", ""); code != 400 || !strings.Contains(body, "derived from a paired device; unpair or change its class instead") {
		t.Fatalf("delete a device's resource: %d %s", code, body)
	}
	if code, body = dpopCall("PUT", "/uma/resource_set/thermo-1/telemetry", `{"resource_scopes":["sub"]}`); code != 400 || !strings.Contains(body, "derived from a paired device") {
		t.Fatalf("update a device's resource: %d %s", code, body)
	}
	// A proof is single use.
	proof, _ := dpop.Sign(phone.key.Key, "GET", u.srv.URL+"/uma/resource_set", aliceToken, "", time.Now())
	h := http.Header{"Authorization": {"DPoP " + aliceToken}, "DPoP": {proof}}
	if code, _, _ := u.call("GET", "/uma/resource_set", h, "", nil); code != 200 {
		t.Fatalf("proof: %d", code)
	}
	if code, _, _ := u.call("GET", "/uma/resource_set", h, "", nil); code != 401 {
		t.Fatalf("replayed proof: %d", code)
	}

	// A service registers its own resource.
	svc := u.service("svc-1")
	pat := svc.token()
	bearer := http.Header{"Authorization": {"Bearer " + pat}, "Content-Type": {"application/json"}}
	code, hdr, body = u.call("POST", "/uma/resource_set", bearer, `{"name":"Weather history","type":"https://svc.example/rsrc/history","description":"hourly archive","resource_scopes":["read","export"]}`, &svc.cert)
	created := jsonMap(t, body)
	id, _ := created["_id"].(string)
	if code != 201 || id == "" || hdr.Get("Location") != u.srv.URL+"/uma/resource_set/"+id || created["user_access_policy_uri"] != nil {
		t.Fatalf("register: %d %s %v", code, body, hdr)
	}
	code, _, body = u.call("GET", "/uma/resource_set", bearer, "", &svc.cert)
	if code != 200 || body != `["`+id+`"]`+"\n" {
		t.Fatalf("the service's resources: %d %s", code, body)
	}
	code, _, body = u.call("GET", "/uma/resource_set/"+id, bearer, "", &svc.cert)
	if d := jsonMap(t, body); code != 200 || d["_id"] != id || d["name"] != "Weather history" || !jsonEqual(d["resource_scopes"], []string{"read", "export"}) {
		t.Fatalf("describe: %d %s", code, body)
	}
	code, _, body = u.call("PUT", "/uma/resource_set/"+id, bearer, `{"name":"Weather archive","resource_scopes":["read"]}`, &svc.cert)
	if code != 200 || jsonMap(t, body)["_id"] != id {
		t.Fatalf("update: %d %s", code, body)
	}
	if _, _, body = u.call("GET", "/uma/resource_set/"+id, bearer, "", &svc.cert); jsonMap(t, body)["name"] != "Weather archive" {
		t.Fatalf("after update: %s", body)
	}
	if code, body = dpopCall("GET", "/uma/resource_set/"+id, ""); code != 404 {
		t.Fatalf("alice reads the service's resource: %d %s", code, body)
	}
	for _, tt := range []struct{ name, body, desc string }{
		{"no scopes", `{"name":"x"}`, "resource_scopes: give at least one scope"},
		{"scope with a space", `{"resource_scopes":["read all"]}`, "resource_scopes[0]"},
		{"an id", `{"_id":"mine","resource_scopes":["read"]}`, "_id: is assigned by the authority"},
		{"bad icon", `{"resource_scopes":["read"],"icon_uri":"javascript:alert(1)"}`, "icon_uri"},
		{"unknown member", `{"resource_scopes":["read"],"owner":"alice"}`, "owner"},
	} {
		code, _, body := u.call("POST", "/uma/resource_set", bearer, tt.body, &svc.cert)
		if code != 400 || !strings.Contains(body, "invalid_request") || !strings.Contains(body, tt.desc) {
			t.Errorf("%s: %d %s", tt.name, code, body)
		}
	}
	// Gateways enforce device resources only: a registered one gets no ticket.
	code, m := u.permission(`{"resource_id":"`+id+`","resource_scopes":["read"]}`, true)
	wantError(t, "ticket for a registered resource", code, m, 400, "invalid_resource_id", "registered resource")
	if code, _, body = u.call("DELETE", "/uma/resource_set/"+id, bearer, "", &svc.cert); code != 204 || body != "" {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _, _ = u.call("GET", "/uma/resource_set/"+id, bearer, "", &svc.cert); code != 404 {
		t.Fatalf("after delete: %d", code)
	}
	if code, _, _ = u.call("DELETE", "/uma/resource_set/"+id, bearer, "", &svc.cert); code != 404 {
		t.Fatalf("delete twice: %d", code)
	}

	// Refused PATs.
	u.share("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}}, Grantee: "svc-1", GranteeKind: store.GranteeClient})
	_, m = svc.grant(url.Values{"ticket": {u.ticket("thermo-1/telemetry", "sub")}})
	rpt, _ := m["access_token"].(string)
	for _, tt := range []struct {
		name string
		hdr  http.Header
		cert *tls.Certificate
		desc string
	}{
		{"no token", nil, nil, "send Authorization: Bearer"},
		{"not a token", http.Header{"Authorization": {"Bearer nope"}}, nil, "not an access token of this authority"},
		{"certificate-bound PAT without the certificate", http.Header{"Authorization": {"Bearer " + pat}}, nil, "mutual TLS"},
		{"an RPT", http.Header{"Authorization": {"Bearer " + rpt}}, &svc.cert, "requesting party token"},
		{"a DPoP scheme for a certificate-bound token", http.Header{"Authorization": {"DPoP " + pat}}, &svc.cert, "not bound to a DPoP key"},
	} {
		code, _, body := u.call("GET", "/uma/resource_set", tt.hdr, "", tt.cert)
		if code != 401 || !strings.Contains(body, tt.desc) {
			t.Errorf("%s: %d %s", tt.name, code, body)
		}
	}
	if strings.Contains(u.logs.String(), pat) || strings.Contains(u.logs.String(), aliceToken) {
		t.Fatal("a PAT was logged")
	}
}

// The operator disables the friend's account: the shares made to it are
// deleted, and its tokens no longer get RPTs.
func TestAdminDisableUser(t *testing.T) {
	u := newUMA(t, nil)
	app, bobToken := u.app("bob-app", "bob")
	u.share("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}}, Grantee: "bob", GranteeKind: store.GranteeUser})
	if code, m := umaGrant(app, u.ticket("thermo-1/telemetry", "sub"), bobToken); code != 200 {
		t.Fatalf("before: %d %v", code, m)
	}
	if code, _ := u.do("POST", "/admin/v1/users/bob/disable", "", "", "", nil); code != 401 {
		t.Fatalf("without the admin token: %d", code)
	}
	if code, body := u.do("POST", "/admin/v1/users/nobody/disable", adminToken, "", "", nil); code != 404 {
		t.Fatalf("unknown user: %d %s", code, body)
	}
	if code, body := u.do("POST", "/admin/v1/users/bob/disable?reason=abuse", adminToken, "", "", nil); code != 200 || !strings.Contains(body, `"disabled":"bob"`) {
		t.Fatalf("disable: %d %s", code, body)
	}
	if gs, _ := u.a.SharesWith("bob"); len(gs) != 0 {
		t.Fatalf("bob's shares survive: %v", gs)
	}
	if usr, _ := u.a.Store.User("bob"); usr.Status != store.UserDisabled {
		t.Fatalf("bob: %+v", usr)
	}
	code, m := umaGrant(app, u.ticket("thermo-1/telemetry", "sub"), bobToken)
	wantError(t, "the disabled friend's claim token", code, m, 400, "invalid_grant", "claim_token:")
	if !strings.Contains(u.logs.String(), "reason=abuse") {
		t.Fatal("the reason was not logged")
	}
}

// A ticket names the owner it was made for: once the device is unpaired,
// or passed to someone else (here to the requesting party), it is
// invalid_grant and the client asks the resource server again.
func TestUMATicketAfterOwnerChange(t *testing.T) {
	u := newUMA(t, nil)
	app, bobToken := u.app("bob-app", "bob")
	before := u.ticket("thermo-1/telemetry", "sub")
	waiting := u.ticket("thermo-1/status", "sub")
	if code, m := umaGrant(app, waiting, bobToken); code != 403 || m["error"] != "request_submitted" {
		t.Fatalf("ask: %d %v", code, m)
	}
	d, _ := u.a.Store.Device("thermo-1")
	d.Owner = "bob"
	if _, err := u.a.Apply(&store.Batch{Devices: []store.Device{d}}, "test"); err != nil {
		t.Fatal(err)
	}
	code, m := umaGrant(app, before, bobToken)
	wantError(t, "ticket made for the former owner", code, m, 400, "invalid_grant", "no longer shareable")
	code, m = umaGrant(app, waiting, bobToken)
	wantError(t, "waiting ticket of the former owner", code, m, 400, "invalid_grant", "no longer shareable")
	ticket := u.ticket("thermo-1/telemetry", "sub")
	if err := u.a.Unpair("thermo-1", "bob"); err != nil {
		t.Fatal(err)
	}
	code, m = umaGrant(app, ticket, bobToken)
	wantError(t, "ticket of an unpaired device", code, m, 400, "invalid_grant", "no longer shareable")
}
