package authority

import (
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// TokenResponse is the RFC 6749 token endpoint answer.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
	// RefreshToken is set for paired devices (device grant, refresh).
	RefreshToken string `json:"refresh_token,omitempty"`
}

// OAuthError is an RFC 6749 §5.2 error.
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	status      int
}

func (e *OAuthError) Error() string { return e.Code + ": " + e.Description }

// noCredential is the answer to a token-endpoint request with no client credential.
const noCredential = "authenticate with the device's factory certificate (mutual TLS) or a client assertion"

// clientAuth authenticates the device behind a token-endpoint request:
// by its factory certificate (RFC 8705 tls_client_auth) or by a client
// assertion signed with its registered key (RFC 7523 private_key_jwt). It
// returns the device and the confirmation (cnf) its tokens are bound to.
func (a *Authority) clientAuth(clientID, assertionType, assertion, audience string, cert *x509.Certificate) (store.Device, map[string]string, error) {
	bad := func(reason, desc string) (store.Device, map[string]string, error) {
		a.log.Warn("client authentication refused", "device", clientID, "reason", reason)
		return store.Device{}, nil, &OAuthError{"invalid_client", desc, http.StatusUnauthorized}
	}
	// An unknown client_id, or one with no key, is answered as a bad
	// credential is: the answer does not tell which ids exist.
	const badAssertion, badCert = "client assertion invalid", "the client certificate is not registered for this client_id"
	if clientID == "" && assertionType == ClientAssertionType {
		// RFC 7523 §3: the assertion's sub (and iss) name the client;
		// client_id in the body is optional. The signature is checked
		// below, with the key of the device it names.
		clientID = assertionClient(assertion)
	}
	var d store.Device
	var err error
	if clientID == "" && assertionType == "" && cert != nil {
		// A pinned certificate names its client (it is registered for one
		// device): a stock client that leaves client_id out of a request
		// over mutual TLS (requests-oauthlib's refresh) is still known.
		sum := sha256.Sum256(cert.Raw)
		d, err = a.Store.DeviceByCertFingerprint(hex.EncodeToString(sum[:]))
		clientID = d.ID
	} else {
		d, err = a.Store.Device(clientID)
	}
	if errors.Is(err, store.ErrNotFound) {
		switch {
		case assertionType == ClientAssertionType:
			return bad("unknown device", badAssertion)
		case cert == nil:
			return bad("unknown device", noCredential)
		}
		return bad("unknown device", badCert)
	} else if err != nil {
		return store.Device{}, nil, err
	}
	if assertionType == ClientAssertionType {
		if len(d.PublicKey) == 0 {
			return bad("no registered key", badAssertion)
		}
		key, err := jwk.ParseKey(d.PublicKey)
		if err != nil {
			return store.Device{}, nil, err
		}
		alg := jwa.ES256()
		if key.KeyType() == jwa.OKP() {
			alg = jwa.EdDSA()
		}
		tok, err := jwt.Parse([]byte(assertion), jwt.WithKey(alg, key), jwt.WithValidate(true),
			jwt.WithIssuer(clientID), jwt.WithSubject(clientID),
			jwt.WithAcceptableSkew(30*time.Second), jwt.WithRequiredClaim(jwt.JwtIDKey), jwt.WithRequiredClaim(jwt.ExpirationKey))
		if err != nil {
			return bad("client assertion: "+err.Error(), badAssertion)
		}
		if aud, _ := tok.Audience(); !a.assertionAudience(aud, audience) {
			return bad(fmt.Sprintf("client assertion: aud %q names neither the issuer, the token endpoint nor %s", clip(strings.Join(aud, " ")), audience), badAssertion)
		}
		jti, _ := tok.JwtID()
		exp, _ := tok.Expiration()
		// Stock clients (Authlib's PrivateKeyJWT) make assertions that live
		// an hour; longer ones are refused. Each is single use: its jti is
		// kept until its exp.
		if exp.After(time.Now().Add(maxAssertionLife + 30*time.Second)) {
			return bad(fmt.Sprintf("client assertion: exp more than %s ahead", maxAssertionLife), badAssertion)
		}
		if err := a.useAssertion(clientID+"/"+jti, exp); errors.Is(err, errReplayed) {
			return bad("client assertion replayed", "client assertion already used")
		} else if err != nil {
			// Fail closed: an assertion that cannot be recorded as spent
			// could be replayed.
			a.log.Error("client authentication refused", "device", clientID, "reason", err.Error())
			return store.Device{}, nil, &OAuthError{"server_error", "the authority could not record the client assertion; try again", http.StatusInternalServerError}
		}
		thumb, err := key.Thumbprint(crypto.SHA256)
		if err != nil {
			return store.Device{}, nil, err
		}
		return d, map[string]string{"jkt": base64.RawURLEncoding.EncodeToString(thumb)}, nil
	}
	if cert == nil {
		return bad("no client certificate", noCredential)
	}
	sum := sha256.Sum256(cert.Raw)
	if d.CertSHA256 == "" || subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(d.CertSHA256)) != 1 {
		return bad("certificate is not the device's registered certificate", badCert)
	}
	// The TLS layer only asks for the certificate (RequestClientCert): its
	// validity is checked here, or a factory certificate that has expired
	// would go on getting tokens.
	if now := time.Now(); now.Before(cert.NotBefore) {
		return bad("certificate not valid before "+cert.NotBefore.UTC().Format(time.RFC3339), "the client certificate is not valid yet")
	} else if now.After(cert.NotAfter) {
		return bad("certificate expired at "+cert.NotAfter.UTC().Format(time.RFC3339), "the client certificate has expired")
	}
	return d, map[string]string{"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}, nil
}

// CallHome issues a device its own access token for its class topics ("call
// home", before it is paired), bound to the credential it authenticated with.
func (a *Authority) CallHome(clientID, assertionType, assertion, audience string, cert *x509.Certificate) (TokenResponse, error) {
	return a.callHome(tokenClient{id: clientID, assertionType: assertionType, assertion: assertion, audience: audience, cert: cert})
}

func (a *Authority) callHome(c tokenClient) (TokenResponse, error) {
	d, cnf, jkt, err := a.authenticate(c)
	if err != nil {
		return TokenResponse{}, err
	}
	if d.Status != store.DeviceActive {
		a.log.Warn("call home refused", "device", c.id, "reason", "device "+string(d.Status))
		return TokenResponse{}, &OAuthError{"unauthorized_client", "device is " + string(d.Status), http.StatusBadRequest}
	}
	cnf = tokenCnf(cnf, jkt)
	// A token bound to the certificate is proven by it: it must not
	// outlive it.
	return a.issueCallHome(d, cnf, bindingName(cnf, jkt), boundUntil(cnf, c.cert), tokenType(jkt))
}

// tokenClient is who asks at the token endpoint: its client authentication
// and the request's DPoP header values (none: nil).
type tokenClient struct {
	id, assertionType, assertion, audience string
	cert                                   *x509.Certificate
	dpop                                   []string
}

// authenticate is clientAuth and then, if the request carries a DPoP header,
// the proof (RFC 9449 §4.3; after the client is known, so that only a
// client with its credential can spend the proof store). It returns the
// device, the confirmation of its client authentication (what device codes
// and refresh tokens are issued to) and the DPoP key's thumbprint ("" when
// the request has no DPoP header).
func (a *Authority) authenticate(c tokenClient) (store.Device, map[string]string, string, error) {
	d, cnf, err := a.clientAuth(c.id, c.assertionType, c.assertion, c.audience, c.cert)
	if err != nil || c.dpop == nil {
		return d, cnf, "", err
	}
	bad := func(detail string) (store.Device, map[string]string, string, error) {
		a.log.Warn("DPoP proof refused", "device", c.id, "reason", detail)
		return store.Device{}, nil, "", &OAuthError{dpop.CodeInvalidProof, detail, http.StatusBadRequest}
	}
	if len(c.dpop) != 1 {
		return bad(fmt.Sprintf("send exactly one DPoP header (%d sent)", len(c.dpop)))
	}
	p, err := a.dpop.Verify(c.dpop[0], dpop.Request{Method: http.MethodPost, URL: a.cfg.URL + "/oauth/token"})
	if err != nil {
		var e *dpop.Error
		if errors.As(err, &e) {
			return bad(e.Detail)
		}
		// The replay store failed (not the client): refused all the same.
		a.log.Error("DPoP proof refused", "device", c.id, "reason", err.Error())
		return store.Device{}, nil, "", &OAuthError{"server_error", "the authority could not record the DPoP proof; try again", http.StatusInternalServerError}
	}
	return d, cnf, p.JKT, nil
}

// tokenCnf is the confirmation of a token issued to a client that
// authenticated with cnf and proved the DPoP key jkt ("" for none). A DPoP
// key is what the token is bound to (cnf jkt, RFC 9449 §6.1), in place of
// the registered key a client assertion proved; a certificate binding
// (x5t#S256) stays beside it, so such a token needs both: the certificate
// on the connection and a proof with the key.
func tokenCnf(cnf map[string]string, jkt string) map[string]string {
	if jkt == "" {
		return cnf
	}
	out := map[string]string{"jkt": jkt}
	if x5t, ok := cnf["x5t#S256"]; ok {
		out["x5t#S256"] = x5t
	}
	return out
}

// bindingName names a token's binding for the log.
func bindingName(cnf map[string]string, dpopJKT string) string {
	_, cert := cnf["x5t#S256"]
	switch {
	case dpopJKT != "" && cert:
		return "x5t#S256+dpop"
	case dpopJKT != "":
		return "dpop"
	case cert:
		return "x5t#S256"
	}
	return "jkt"
}

// tokenType is RFC 9449 §5's token_type: DPoP for a token bound to a DPoP
// key, else Bearer.
func tokenType(dpopJKT string) string {
	if dpopJKT != "" {
		return "DPoP"
	}
	return "Bearer"
}

// issueCallHome signs a device's own token (sub = the device) for its class
// topics, bound by cnf, expiring at until if that is before the usual TTL;
// typ is its token_type.
func (a *Authority) issueCallHome(d store.Device, cnf map[string]string, binding string, until time.Time, typ string) (TokenResponse, error) {
	class, err := a.Store.Class(d.Class)
	if err != nil {
		return TokenResponse{}, err
	}
	rules, err := policy.Expand(class.Permissions, policy.Vars{Device: d.ID, Owner: d.Owner, Client: d.ID})
	if err != nil {
		return TokenResponse{}, err
	}
	scope := policy.FormatScope(rules)
	tok, life, err := a.signUntil(map[string]any{"sub": d.ID, "client_id": d.ID, "scope": scope, "cnf": cnf}, until)
	if err != nil {
		return TokenResponse{}, err
	}
	a.log.Info("token issued", "device", d.ID, "grant", "client_credentials", "binding", binding, "expires_in", life)
	return TokenResponse{AccessToken: tok, TokenType: typ, ExpiresIn: life, Scope: scope}, nil
}

// signUntil makes an RFC 9068 access token with the standard claims added,
// its exp at until when that is sooner than the TTL (the NotAfter of the
// certificate a token is bound to); it also returns the token's lifetime in
// seconds, for expires_in.
func (a *Authority) signUntil(claims map[string]any, until time.Time) (string, int, error) {
	now := time.Now()
	exp := now.Add(a.cfg.TokenTTL).Unix()
	if !until.IsZero() && until.Unix() < exp {
		exp = until.Unix()
	}
	claims["iss"] = a.cfg.URL
	claims["aud"] = a.cfg.TokenAudience
	claims["iat"] = now.Unix()
	claims["exp"] = exp
	if _, ok := claims["jti"]; !ok {
		claims["jti"] = randomID(16)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", 0, err
	}
	key, err := a.signingKey()
	if err != nil {
		return "", 0, err
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.TypeKey, "at+jwt")
	_ = h.Set(jws.KeyIDKey, mustKid(key))
	out, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", 0, fmt.Errorf("sign token: %w", err)
	}
	return string(out), int(exp - now.Unix()), nil
}

// assertionAudience says whether a client assertion's aud names this
// authority (RFC 7523 §3): its issuer identifier, its token endpoint, or
// endpoint, the URL the assertion was sent to (Authlib's PrivateKeyJWT
// without a token endpoint signs for the URL it posts to).
func (a *Authority) assertionAudience(aud []string, endpoint string) bool {
	for _, v := range aud {
		if v == a.cfg.URL || v == a.cfg.URL+"/oauth/token" || v == endpoint {
			return true
		}
	}
	return false
}

// requestClientID is the client_id a request names: its client_id
// parameter, else the user name of an HTTP Basic header with an empty
// password (how requests-oauthlib sends a client id by default; a client
// that authenticates by certificate or assertion has no secret). A Basic
// header with a password is not a credential here: it names no one.
func requestClientID(r *http.Request, form url.Values) string {
	if id := form.Get("client_id"); id != "" {
		return id
	}
	if user, pass, ok := r.BasicAuth(); ok && pass == "" {
		return user
	}
	return ""
}

// ClientAssertionType is RFC 7523's client assertion type.
const ClientAssertionType = device.ClientAssertionType

// maxAssertionLife is how far ahead a client assertion's exp may be.
const maxAssertionLife = time.Hour

// assertionClient is the client an unverified client assertion names: its
// sub, when its iss is the same (RFC 7523 §3); "" otherwise.
func assertionClient(assertion string) string {
	tok, err := jwt.Parse([]byte(assertion), jwt.WithVerify(false), jwt.WithValidate(false))
	if err != nil {
		return ""
	}
	sub, _ := tok.Subject()
	iss, _ := tok.Issuer()
	if sub == "" || sub != iss {
		return ""
	}
	return sub
}

// Replay entries (issue 16): the ids of client and gateway assertions and
// of DPoP proofs, spent, are documents, so that an id spent at one replica
// is refused by every other (a replica's memory knows only what it saw).
// Each is created on condition that it is absent: of two requests with one
// id, at one replica or two, one creates it and the other is a replay. It
// is kept under the hash of the id (it names no assertion or proof) until
// it expires, and sweepGrace after, when the sweep deletes it (sweep.go).
// No count bounds them: only an assertion with a valid signature of a
// registered device or enrolled gateway, or a proof at the token endpoint
// of an authenticated client, is recorded, each for at most an hour
// (maxAssertionLife) or a minute, and token requests are rate-limited per
// address.
const (
	docAssertion = "assertion"
	docDPoPProof = "dpop-proof"
)

// spentID is a replay entry's document: its id is refused until Expires.
type spentID struct {
	Expires time.Time `json:"expires"`
}

func (s spentID) expiry() time.Time { return s.Expires }

// errReplayed is an assertion id spent before, at any replica.
var errReplayed = errors.New("already used")

// spend records that id of kind was used, valid until until: true if it
// was not spent before. An entry that has expired but is not swept yet is
// written over, on condition of its version. A store error is an error
// (the caller refuses); an id contended by more writers than spendAttempts
// is a replay.
func (a *Authority) spend(kind, id string, until time.Time) (bool, error) {
	h := hashCode(id)
	entry := store.DocWrite{Kind: kind, ID: h, Value: spentID{Expires: until}, ExpectAbsent: true}
	for range spendAttempts {
		err := a.Store.CommitDocs(nil, entry)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return false, fmt.Errorf("record %s %s: %w", kind, h, err)
		}
		var old spentID
		ver, err := a.Store.GetDocVersion(kind, h, &old)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue // swept meanwhile (it had expired): create it again
		case err != nil:
			return false, fmt.Errorf("read %s %s: %w", kind, h, err)
		case time.Now().Before(old.Expires.Add(sweepGrace)):
			return false, nil
		}
		over := entry
		over.ExpectAbsent, over.ExpectVersion = false, ver
		err = a.Store.CommitDocs(nil, over)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return false, fmt.Errorf("record %s %s: %w", kind, h, err)
		}
	}
	return false, nil
}

// spendAttempts bounds spend's loop: each turn means another writer of the
// same id, which only a replay makes.
const spendAttempts = 3

// useAssertion spends a client or gateway assertion id that is valid
// until exp: errReplayed if it was used before, at any replica; a store
// error is returned wrapped (the caller refuses, and logs it).
func (a *Authority) useAssertion(id string, exp time.Time) error {
	fresh, err := a.spend(docAssertion, id, exp)
	if err != nil {
		return fmt.Errorf("replay check: %w", err)
	}
	if !fresh {
		return errReplayed
	}
	return nil
}

// dpopReplay is the DPoP verifier's replay store (dpop.Options.Replay):
// documents, shared by every replica, as spend keeps them.
type dpopReplay struct{ a *Authority }

func (r dpopReplay) Seen(id string, until time.Time) (bool, error) {
	fresh, err := r.a.spend(docDPoPProof, id, until)
	return !fresh && err == nil, err
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		fail(w, http.StatusBadRequest, "invalid_request", "send the parameters as application/x-www-form-urlencoded (RFC 6749 §4.4.2)")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "form: "+err.Error())
		return
	}
	f := r.PostForm
	for k, v := range f {
		if len(v) > 1 {
			fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("parameter %s: sent %d times, at most once (RFC 6749 §3.2)", k, len(v)))
			return
		}
	}
	if f.Get("grant_type") == "" {
		fail(w, http.StatusBadRequest, "invalid_request", "grant_type is required: client_credentials, "+DeviceCodeGrant+", refresh_token or "+UMATicketGrant)
		return
	}
	c := tokenClient{id: requestClientID(r, f), assertionType: f.Get("client_assertion_type"), assertion: f.Get("client_assertion"),
		audience: h.A.URL() + "/oauth/token", cert: clientCert(r), dpop: r.Header.Values("DPoP")}
	var resp any
	var err error
	switch gt := f.Get("grant_type"); gt {
	case "client_credentials":
		resp, err = h.A.callHome(c)
	case DeviceCodeGrant:
		resp, err = h.A.pollDeviceCode(c, f.Get("device_code"))
	case "refresh_token":
		resp, err = h.A.refresh(c, f.Get("refresh_token"))
	case UMATicketGrant:
		resp, err = h.A.umaGrant(c, umaRequest{ticket: f.Get("ticket"), claimToken: f.Get("claim_token"),
			claimTokenFormat: f.Get("claim_token_format"), rpt: f.Get("rpt"), scope: f.Get("scope")})
		// need_info and request_submitted carry more than RFC 6749's members.
		var ue *UMAError
		if errors.As(err, &ue) {
			writeJSON(w, ue.status, ue)
			return
		}
	default:
		fail(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q: use client_credentials, %s, refresh_token or %s", gt, DeviceCodeGrant, UMATicketGrant))
		return
	}
	// RFC 6749 §5.2: a 401 to a client that tried HTTP Basic says how to
	// authenticate.
	var oe *OAuthError
	if errors.As(err, &oe) && oe.status == http.StatusUnauthorized && strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), "basic ") {
		w.Header().Set("WWW-Authenticate", `Basic realm="edgeid-authority"`)
	}
	answerOAuth(w, resp, err)
}
