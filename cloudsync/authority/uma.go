package authority

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// UMA 2.0 at the authority (UMA 2.0 Grant for OAuth 2.0 Authorization, and
// Federated Authorization for UMA 2.0):
//
//   - the gateway, as resource server of its devices, asks the permission
//     endpoint (POST /uma/permission, its own request assertion) for a
//     permission ticket naming the resources ("<device>/<group>") and scopes
//     ("sub", "pub") a client lacked;
//   - the client takes the ticket to the token endpoint (grant type
//     urn:ietf:params:oauth:grant-type:uma-ticket), authenticated as every
//     client is (private_key_jwt or its pinned certificate; DPoP allowed),
//     with the requesting party's claim token (an access token whose sub is
//     the party and whose client_id is this client) or, for a service
//     acting for itself, none;
//   - when the owner's shares cover every permission the ticket names, the
//     answer is a requesting party token (RPT): an at+jwt with sub = the
//     party, client_id = the client, cnf = the client's binding, and a
//     permissions claim naming each resource, its scopes and the share that
//     grants it (with the share's expiry and daily window for the client to
//     read; the gateway decides from the share as it stands in its store);
//   - otherwise the owner is asked (a share request, shares.go): 403
//     request_submitted while they have not answered (the client polls with
//     the same ticket every interval), request_denied once they said no.
//
// Tickets are random, kept hashed (like device codes), bound to the first
// client and requesting party that use them, and single use once an RPT was
// issued from them.

const (
	// UMATicketGrant is the UMA 2.0 grant type (UMA 2.0 Grant §3.3.1).
	UMATicketGrant = "urn:ietf:params:oauth:grant-type:uma-ticket"
	// ClaimTokenJWT is the claim token format this authority takes: a JWT
	// access token of its own or of an issuer it trusts.
	ClaimTokenJWT = "urn:ietf:params:oauth:token-type:jwt"
	// claimTokenAccessToken is RFC 8693's name of an access token, taken as
	// ClaimTokenJWT (the access tokens here are JWTs).
	claimTokenAccessToken = "urn:ietf:params:oauth:token-type:access_token"

	docTicket = "uma-ticket"
	// defaultTicketTTL is a permission ticket's life (Config.UMATicketTTL).
	defaultTicketTTL = 5 * time.Minute
	// umaPollInterval is the request_submitted interval, in seconds.
	umaPollInterval = 5
	// maxPermissionRequests bounds a ticket (as the gateway bounds an RPT's
	// permissions claim).
	maxPermissionRequests = 256
	// maxPermissionBody bounds the permission endpoint's request body.
	maxPermissionBody = 64 << 10
	// maxClaimToken bounds a claim token or an RPT presented for upgrade.
	maxClaimToken = 16 << 10
	// ticketSweepEvery is how often dead tickets are deleted.
	ticketSweepEvery = time.Minute
)

// umaTicket is a permission ticket's state, kept under the ticket's hash.
type umaTicket struct {
	Gateway     string                        `json:"gateway"`
	Owner       string                        `json:"owner"`
	Permissions []cloudsync.PermissionRequest `json:"permissions"`
	Expires     time.Time                     `json:"expires"`
	// Client is the client that first used the ticket (need_info,
	// request_submitted); Party and PartyKind the requesting party and
	// Request the share request it left waiting. Set, they bind the ticket.
	Client    string            `json:"client,omitempty"`
	Party     string            `json:"party,omitempty"`
	PartyKind store.GranteeKind `json:"party_kind,omitempty"`
	Request   string            `json:"request,omitempty"`
}

// RequiredClaim is one claim need_info asks for (UMA 2.0 Grant §3.3.6).
type RequiredClaim struct {
	ClaimTokenFormat []string `json:"claim_token_format,omitempty"`
	Name             string   `json:"name,omitempty"`
}

// UMAError is a token endpoint error of the UMA grant that carries more than
// RFC 6749's members: need_info (a new ticket and the claims required) and
// request_submitted (the ticket to poll with and the interval), 403 both
// (UMA 2.0 Grant §3.3.6).
type UMAError struct {
	Code           string          `json:"error"`
	Description    string          `json:"error_description,omitempty"`
	Ticket         string          `json:"ticket,omitempty"`
	Interval       int             `json:"interval,omitempty"`
	RequiredClaims []RequiredClaim `json:"required_claims,omitempty"`
	status         int
}

func (e *UMAError) Error() string { return e.Code + ": " + e.Description }

// RPTResponse is the token endpoint's answer to the UMA grant (UMA 2.0
// Grant §3.3.5): no refresh token; upgraded tells whether the permissions
// of an rpt sent with the request were added.
type RPTResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Upgraded    bool   `json:"upgraded"`
}

// RPTPermission is one entry of an RPT's permissions claim: what the
// gateway reads (resource_id, resource_scopes, share) and, for the client,
// the share's conditions (exp, edgeid:window) as they were at issue.
type RPTPermission struct {
	ResourceID     string        `json:"resource_id"`
	ResourceScopes []string      `json:"resource_scopes"`
	Share          string        `json:"share"`
	Exp            int64         `json:"exp,omitempty"`
	Window         *store.Window `json:"edgeid:window,omitempty"`
}

func (a *Authority) ticketTTL() time.Duration {
	if a.cfg.UMATicketTTL > 0 {
		return a.cfg.UMATicketTTL
	}
	return defaultTicketTTL
}

// clip bounds a value a client sent before it is quoted in an answer or
// the log.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// shortHash names a ticket in the log (its hash, never the ticket).
func shortHash(s string) string { return hashCode(s)[:12] }

func umaBad(code, format string, args ...any) *OAuthError {
	return &OAuthError{code, fmt.Sprintf(format, args...), http.StatusBadRequest}
}

// Ticket is the permission endpoint (UMA Federated Authorization §4):
// gateway gw asks for a ticket naming reqs. Each resource must be a paired,
// active device's group, each scope one its group may be shared with, and
// all of one owner's; field is how the answer names the requests ("" for a
// single object, "[i]." for an array's). Refusals are 400 invalid_request,
// invalid_resource_id or invalid_scope (§4.3); a store error is an error.
func (a *Authority) Ticket(gw string, reqs []cloudsync.PermissionRequest, array bool) (string, error) {
	if len(reqs) == 0 {
		return "", umaBad("invalid_request", `give at least one permission: {"resource_id": "<device>/<group>", "resource_scopes": ["sub"]}`)
	}
	if len(reqs) > maxPermissionRequests {
		return "", umaBad("invalid_request", "%d permissions asked; at most %d per ticket", len(reqs), maxPermissionRequests)
	}
	var merged []cloudsync.PermissionRequest
	owner := ""
	for i, r := range reqs {
		at := ""
		if array {
			at = fmt.Sprintf("[%d].", i)
		}
		if r.ResourceID == "" {
			return "", umaBad("invalid_resource_id", "%sresource_id is missing: give <device>/<group>", at)
		}
		res, err := a.Resource(r.ResourceID)
		if errors.Is(err, ErrNoResource) {
			if _, rerr := a.registered(r.ResourceID); rerr == nil {
				return "", umaBad("invalid_resource_id", "%sresource_id %q is a registered resource; gateways enforce device resources (<device>/<group>) only", at, clip(r.ResourceID))
			}
			return "", umaBad("invalid_resource_id", "%sresource_id %q: no such resource; give <device>/<group> of a paired device and a group its class names", at, clip(r.ResourceID))
		}
		if err != nil {
			return "", err
		}
		if res.Device.Status != store.DeviceActive {
			return "", umaBad("invalid_resource_id", "%sresource_id %q: device %s is %s", at, r.ResourceID, res.Device.ID, res.Device.Status)
		}
		if owner != "" && res.Owner != owner {
			return "", umaBad("invalid_resource_id", "%sresource_id %q belongs to another owner than the first resource's; ask for one owner's resources per ticket", at, r.ResourceID)
		}
		owner = res.Owner
		if len(r.ResourceScopes) == 0 {
			return "", umaBad("invalid_scope", "%sresource_scopes is empty; ask for sub, pub or both", at)
		}
		for _, s := range r.ResourceScopes {
			if !res.Group.Allows(s) {
				return "", umaBad("invalid_scope", "%sresource_scopes: %q is not a scope %s can be shared with (%s)", at, clip(s), r.ResourceID, strings.Join(shareableScopes(res.Group), ", "))
			}
		}
		j := slices.IndexFunc(merged, func(m cloudsync.PermissionRequest) bool { return m.ResourceID == r.ResourceID })
		if j < 0 {
			merged = append(merged, cloudsync.PermissionRequest{ResourceID: r.ResourceID})
			j = len(merged) - 1
		}
		for _, s := range r.ResourceScopes {
			if !slices.Contains(merged[j].ResourceScopes, s) {
				merged[j].ResourceScopes = append(merged[j].ResourceScopes, s)
			}
		}
	}
	ticket := randomID(32)
	t := umaTicket{Gateway: gw, Owner: owner, Permissions: merged, Expires: time.Now().Add(a.ticketTTL())}
	if err := a.Store.PutDoc(docTicket, hashCode(ticket), t); err != nil {
		return "", fmt.Errorf("save permission ticket: %w", err)
	}
	a.log.Info("permission ticket issued", "gateway", gw, "owner", owner, "resources", len(merged), "ticket", shortHash(ticket))
	a.sweepTickets()
	return ticket, nil
}

// shareableScopes are the scopes a group may be shared with.
func shareableScopes(g store.ResourceGroup) []string {
	if len(g.Scopes) == 0 {
		return []string{store.ScopeSub, store.ScopePub}
	}
	return g.Scopes
}

// ticketLive reports whether ticket t is still valid at now: before its
// expiry or, when it left a share request waiting, while the request is
// pending and for a ticket's life after the owner decided.
func (a *Authority) ticketLive(t umaTicket, now time.Time) (bool, error) {
	if now.Before(t.Expires) {
		return true, nil
	}
	if t.Request == "" {
		return false, nil
	}
	r, err := a.ShareRequestByID(t.Request)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load share request %s: %w", t.Request, err)
	}
	if r.State == RequestPending {
		return true, nil
	}
	return now.Before(r.Decided.Add(a.ticketTTL())), nil
}

// sweepTickets deletes dead tickets, at most once every ticketSweepEvery.
func (a *Authority) sweepTickets() {
	now := time.Now()
	a.mu.Lock()
	if now.Sub(a.ticketSwept) < ticketSweepEvery {
		a.mu.Unlock()
		return
	}
	a.ticketSwept = now
	a.mu.Unlock()
	var dead []string
	err := a.Store.ListDocs(docTicket, func(id string, raw []byte) error {
		var t umaTicket
		if json.Unmarshal(raw, &t) != nil {
			dead = append(dead, id)
			return nil
		}
		if live, err := a.ticketLive(t, now); err == nil && !live {
			dead = append(dead, id)
		}
		return nil
	})
	if err != nil {
		a.log.Warn("permission tickets not swept", "err", err)
		return
	}
	for _, id := range dead {
		_ = a.Store.DeleteDoc(docTicket, id)
	}
}

// umaRequest is a token request of the UMA grant (UMA 2.0 Grant §3.3.1).
type umaRequest struct {
	ticket, claimToken, claimTokenFormat, rpt, scope string
}

// umaGrant answers a token request of the UMA grant: an RPT, or an error
// (*OAuthError, *UMAError; any other error is the store's: no token).
func (a *Authority) umaGrant(c tokenClient, q umaRequest) (RPTResponse, error) {
	d, cnf, jkt, err := a.authenticate(c)
	if err != nil {
		return RPTResponse{}, err
	}
	refuse := func(e error, reason string) (RPTResponse, error) {
		a.log.Warn("UMA grant refused", "client", d.ID, "ticket", shortHashOr(q.ticket), "reason", reason)
		return RPTResponse{}, e
	}
	if d.Status != store.DeviceActive {
		return refuse(&OAuthError{"unauthorized_client", "client is " + string(d.Status), http.StatusBadRequest}, "client "+string(d.Status))
	}
	if q.ticket == "" {
		return refuse(umaBad("invalid_request", "ticket is required: the permission ticket of the resource server's WWW-Authenticate: UMA answer (UMA 2.0 Grant §3.3.1)"), "no ticket")
	}
	h := hashCode(q.ticket)
	now := time.Now()
	badTicket := umaBad("invalid_grant", "ticket: unknown, used or expired; ask the resource server again for a new one")
	var t umaTicket
	if err := a.Store.GetDoc(docTicket, h, &t); errors.Is(err, store.ErrNotFound) {
		return refuse(badTicket, "unknown or used ticket")
	} else if err != nil {
		return RPTResponse{}, fmt.Errorf("load permission ticket: %w", err)
	}
	if live, err := a.ticketLive(t, now); err != nil {
		return RPTResponse{}, err
	} else if !live {
		_ = a.Store.DeleteDoc(docTicket, h)
		return refuse(badTicket, "expired ticket")
	}
	if t.Client != "" && t.Client != d.ID {
		return refuse(umaBad("invalid_grant", "ticket: in use by another client; ask the resource server for a new one"), "ticket bound to client "+t.Client)
	}

	party, kind, needInfo, err := a.requestingParty(d, cnf, jkt, q)
	if err != nil {
		var oe *OAuthError
		if errors.As(err, &oe) {
			return refuse(oe, oe.Description)
		}
		return RPTResponse{}, err
	}
	if needInfo {
		// A new ticket replaces the old one (UMA 2.0 Grant §3.3.6), bound to
		// this client.
		next := randomID(32)
		t.Client = d.ID
		if err := a.Store.PutDoc(docTicket, hashCode(next), t); err != nil {
			return RPTResponse{}, fmt.Errorf("save permission ticket: %w", err)
		}
		_ = a.Store.DeleteDoc(docTicket, h)
		return refuse(&UMAError{Code: "need_info", status: http.StatusForbidden, Ticket: next,
			Description:    "client " + d.ID + " acts for a person: send the requesting party's access token as claim_token (claim_token_format " + ClaimTokenJWT + ") with this ticket",
			RequiredClaims: []RequiredClaim{{ClaimTokenFormat: []string{ClaimTokenJWT}, Name: "sub"}}}, "need_info: no claim token from a client acting for a person")
	}
	if t.Party != "" && (t.Party != party || t.PartyKind != kind) {
		return refuse(umaBad("invalid_grant", "ticket: it waits on another requesting party's request; ask the resource server for a new one"), "ticket bound to party "+t.Party)
	}
	reqs, err := narrowScopes(t.Permissions, q.scope)
	if err != nil {
		return refuse(err, err.Error())
	}
	gone := umaBad("invalid_grant", "ticket: a resource it names is no longer shareable (the device was unpaired, passed to another owner or changed class); ask the resource server for a new one")
	covered, ok, err := a.Covering(party, kind, d.ID, reqs, now)
	if errors.Is(err, ErrNoResource) {
		_ = a.Store.DeleteDoc(docTicket, h)
		return refuse(gone, "resource gone")
	}
	if err != nil {
		return RPTResponse{}, err
	}
	if ok {
		perms := rptPermissions(covered)
		upgraded := false
		if q.rpt != "" {
			if perms, upgraded, err = a.upgrade(q.rpt, d, party, kind, perms, now); err != nil {
				var oe *OAuthError
				if errors.As(err, &oe) {
					return refuse(oe, oe.Description)
				}
				return RPTResponse{}, err
			}
		}
		// Single use: of two polls at once, one gets the RPT.
		if err := a.Store.TakeDoc(docTicket, h, &t); err != nil {
			return refuse(badTicket, "ticket used meanwhile")
		}
		return a.issueRPT(d, party, kind, perms, tokenCnf(cnf, jkt), bindingName(cnf, jkt), boundUntil(cnf, c.cert), tokenType(jkt), upgraded)
	}
	// The owner asked is the one the ticket was made for: a device passed
	// to someone else since (perhaps to the requesting party) needs a new
	// ticket.
	for _, r := range reqs {
		res, err := a.Resource(r.ResourceID)
		if errors.Is(err, ErrNoResource) || (err == nil && res.Owner != t.Owner) {
			_ = a.Store.DeleteDoc(docTicket, h)
			return refuse(gone, "resource gone or changed owner")
		}
		if err != nil {
			return RPTResponse{}, err
		}
	}
	// No share is ever made to its owner (shareFrom and the store refuse one).
	if kind == store.GranteeUser && party == t.Owner {
		_ = a.Store.DeleteDoc(docTicket, h)
		return refuse(&OAuthError{"request_denied", "the requesting party " + party + " owns these resources: an owner needs no share; use the owner's own token", http.StatusForbidden}, "party is the owner")
	}
	req, err := a.SubmitRequest(party, kind, d.ID, reqs)
	if errors.Is(err, ErrNoResource) || errors.Is(err, ErrManyOwners) {
		_ = a.Store.DeleteDoc(docTicket, h)
		return refuse(gone, "resource gone or changed owner")
	}
	if err != nil {
		return RPTResponse{}, err
	}
	if req.State == RequestDenied {
		_ = a.Store.DeleteDoc(docTicket, h)
		return refuse(&OAuthError{"request_denied", "the owner denied this request; ask them directly, or try again after " + req.Decided.Add(deniedFor).UTC().Format(time.RFC3339), http.StatusForbidden}, "request "+req.ID+" denied")
	}
	if t.Request != req.ID || t.Client != d.ID || t.Party != party {
		t.Client, t.Party, t.PartyKind, t.Request = d.ID, party, kind, req.ID
		if err := a.Store.PutDoc(docTicket, h, t); err != nil {
			return RPTResponse{}, fmt.Errorf("save permission ticket: %w", err)
		}
	}
	a.log.Info("UMA grant: the owner is asked", "client", d.ID, "party", party, "request", req.ID, "ticket", shortHash(q.ticket))
	return RPTResponse{}, &UMAError{Code: "request_submitted", status: http.StatusForbidden, Ticket: q.ticket, Interval: umaPollInterval,
		Description: fmt.Sprintf("the owner has been asked; poll with this ticket every %d s until they decide", umaPollInterval)}
}

func shortHashOr(ticket string) string {
	if ticket == "" {
		return ""
	}
	return shortHash(ticket)
}

// narrowScopes applies a token request's scope parameter to a ticket's
// permissions: each value must be one of the ticket's scopes, and each
// permission keeps the ones asked (a permission left with none is dropped).
// No scope: the ticket's permissions as they are.
func narrowScopes(perms []cloudsync.PermissionRequest, scope string) ([]cloudsync.PermissionRequest, error) {
	want := strings.Fields(scope)
	if len(want) == 0 {
		return perms, nil
	}
	var have []string
	for _, p := range perms {
		for _, s := range p.ResourceScopes {
			if !slices.Contains(have, s) {
				have = append(have, s)
			}
		}
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			return nil, umaBad("invalid_scope", "scope: %q is not among the ticket's scopes (%s); leave scope out to ask for the ticket's permissions", clip(w), strings.Join(have, ", "))
		}
	}
	var out []cloudsync.PermissionRequest
	for _, p := range perms {
		var s []string
		for _, x := range p.ResourceScopes {
			if slices.Contains(want, x) {
				s = append(s, x)
			}
		}
		if len(s) > 0 {
			out = append(out, cloudsync.PermissionRequest{ResourceID: p.ResourceID, ResourceScopes: s})
		}
	}
	return out, nil
}

// requestingParty is who client d asks for: the sub of the claim token, if
// one is sent (a user, or the client itself), else the client itself when
// it has no owner (a service acting for itself: kind client). A client
// with an owner (a person's app) and no claim token: needInfo.
func (a *Authority) requestingParty(d store.Device, cnf map[string]string, dpopJKT string, q umaRequest) (string, store.GranteeKind, bool, error) {
	if q.claimToken == "" {
		if q.claimTokenFormat != "" {
			return "", "", false, umaBad("invalid_request", "claim_token_format is sent without claim_token; send both, or neither")
		}
		if d.Owner != "" {
			return "", "", true, nil
		}
		return d.ID, store.GranteeClient, false, nil
	}
	switch q.claimTokenFormat {
	case ClaimTokenJWT, claimTokenAccessToken:
	case "":
		return "", "", false, umaBad("invalid_request", "claim_token_format is required with claim_token: send %s", ClaimTokenJWT)
	default:
		return "", "", false, umaBad("invalid_request", "claim_token_format %q is not supported; send the requesting party's access token as %s", clip(q.claimTokenFormat), ClaimTokenJWT)
	}
	tok, err := a.verifyClaimToken(q.claimToken, d, cnf, dpopJKT)
	if err != nil {
		return "", "", false, err
	}
	sub, _ := tok.Subject()
	if sub == d.ID {
		return d.ID, store.GranteeClient, false, nil
	}
	u, err := a.Store.User(sub)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", false, umaBad("invalid_grant", "claim_token: its sub %q is not an account of this authority; shares are made to its accounts", clip(sub))
	}
	if err != nil {
		return "", "", false, fmt.Errorf("load user %q: %w", sub, err)
	}
	if u.Status != store.UserActive {
		return "", "", false, umaBad("invalid_grant", "claim_token: the account %q is %s", sub, u.Status)
	}
	return sub, store.GranteeUser, false, nil
}

// verifyClaimToken checks a claim token presented by client d (which
// proved cnf, and the DPoP key dpopJKT if any): a JWT signed by this
// authority's keys or by an issuer in the store, unexpired, with a sub,
// issued to d (client_id, or azp for another issuer's), not revoked, and,
// if it is bound to a key or certificate (cnf), bound to one this request
// proved. Refusals are 400 invalid_grant "claim_token: …".
func (a *Authority) verifyClaimToken(raw string, d store.Device, cnf map[string]string, dpopJKT string) (jwt.Token, error) {
	bad := func(format string, args ...any) (jwt.Token, error) {
		return nil, umaBad("invalid_grant", "claim_token: "+format, args...)
	}
	if len(raw) > maxClaimToken {
		return bad("longer than %d bytes", maxClaimToken)
	}
	own := true
	tok, err := a.parseOwnToken(raw)
	if err != nil {
		own = false
		unverified, perr := jwt.ParseInsecure([]byte(raw))
		if perr != nil {
			return bad("not a JWT (format %s)", ClaimTokenJWT)
		}
		iss, _ := unverified.Issuer()
		if iss == a.cfg.URL {
			return bad("its signature does not verify with this authority's keys")
		}
		issuers, err := a.Store.Issuers()
		if err != nil {
			return nil, fmt.Errorf("list trusted issuers: %w", err)
		}
		i := slices.IndexFunc(issuers, func(is store.Issuer) bool { return is.Issuer == iss })
		if iss == "" || i < 0 {
			return bad("its issuer %q is not trusted by this authority", clip(iss))
		}
		set, err := jwk.Parse(issuers[i].JWKS)
		if err != nil {
			return nil, fmt.Errorf("keys of issuer %q: %w", iss, err)
		}
		if tok, err = jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(false)); err != nil {
			return bad("its signature does not verify with the keys of issuer %q", clip(iss))
		}
	}
	if _, ok := tok.Expiration(); !ok {
		return bad("it has no exp")
	}
	sub, _ := tok.Subject()
	if sub == "" {
		return bad("it has no sub (the requesting party)")
	}
	var client string
	_ = tok.Get("client_id", &client)
	if client == "" && !own {
		_ = tok.Get("azp", &client)
	}
	if client != d.ID {
		return bad("it was issued to client %q, not to %q; send a token issued to this client", clip(client), d.ID)
	}
	if !own {
		aud, _ := tok.Audience()
		if !slices.Contains(aud, a.cfg.TokenAudience) && !slices.Contains(aud, a.cfg.URL) {
			return bad("its aud names neither %q nor this authority", a.cfg.TokenAudience)
		}
	}
	reason, err := a.tokenInactive(tok, client)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		return bad("not active: %s", reason)
	}
	var tc map[string]any
	if tok.Has("cnf") {
		if err := tok.Get("cnf", &tc); err != nil {
			return bad("cnf is not an object")
		}
	}
	for k, v := range tc {
		s, _ := v.(string)
		switch k {
		case "x5t#S256":
			if !sameSecret(s, cnf["x5t#S256"]) {
				return bad("it is bound to a certificate (cnf x5t#S256) this request was not made with; send it over mutual TLS with that certificate")
			}
		case "jkt":
			if !sameSecret(s, cnf["jkt"]) && !sameSecret(s, dpopJKT) {
				return bad("it is bound to a key (cnf jkt) this request did not prove; authenticate with that key (private_key_jwt) or send a DPoP proof made with it")
			}
		default:
			return bad("it is bound by cnf %q, which cannot be proven at the token endpoint", clip(k))
		}
	}
	return tok, nil
}

// sameSecret compares two non-empty strings in constant time.
func sameSecret(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// rptPermissions is the permissions claim for covered permissions.
func rptPermissions(covered []Covered) []RPTPermission {
	out := make([]RPTPermission, 0, len(covered))
	for _, c := range covered {
		p := RPTPermission{ResourceID: c.ResourceID, ResourceScopes: slices.Clone(c.Scopes), Share: c.Share.ID, Window: c.Share.Window}
		if !c.Share.Expires.IsZero() {
			p.Exp = c.Share.Expires.Unix()
		}
		out = append(out, p)
	}
	return out
}

// upgrade adds to perms the permissions of an RPT the client sent (UMA 2.0
// Grant §3.3.5), each as far as a share still covers it now; upgraded is
// true if any was added. The RPT must be one of this authority's, active,
// for the same client and requesting party.
func (a *Authority) upgrade(raw string, d store.Device, party string, kind store.GranteeKind, perms []RPTPermission, now time.Time) ([]RPTPermission, bool, error) {
	bad := func(format string, args ...any) ([]RPTPermission, bool, error) {
		return nil, false, umaBad("invalid_grant", "rpt: "+format, args...)
	}
	if len(raw) > maxClaimToken {
		return bad("longer than %d bytes", maxClaimToken)
	}
	tok, err := a.parseOwnToken(raw)
	if err != nil {
		return bad("not a requesting party token of this authority")
	}
	var client string
	_ = tok.Get("client_id", &client)
	sub, _ := tok.Subject()
	if client != d.ID || sub != party {
		return bad("it was issued to another client or requesting party")
	}
	reason, err := a.tokenInactive(tok, client)
	if err != nil {
		return nil, false, err
	}
	if reason != "" {
		return bad("not active: %s; leave rpt out to get a new one", reason)
	}
	old, err := permissionsOf(raw)
	if err != nil || !tok.Has("permissions") {
		return bad("it has no permissions claim")
	}
	upgraded := false
	for _, p := range old {
		if slices.ContainsFunc(perms, func(x RPTPermission) bool {
			return x.ResourceID == p.ResourceID && containsAll(x.ResourceScopes, p.ResourceScopes)
		}) {
			continue
		}
		covered, ok, err := a.Covering(party, kind, d.ID, []cloudsync.PermissionRequest{{ResourceID: p.ResourceID, ResourceScopes: p.ResourceScopes}}, now)
		if errors.Is(err, ErrNoResource) || (err == nil && !ok) {
			continue // no longer shared: not carried over
		}
		if err != nil {
			return nil, false, err
		}
		perms = append(perms, rptPermissions(covered)...)
		upgraded = true
	}
	return perms, upgraded, nil
}

// permissionsOf reads the permissions claim of a verified token.
func permissionsOf(raw string) ([]RPTPermission, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c struct {
		Permissions []RPTPermission `json:"permissions"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, err
	}
	return c.Permissions, nil
}

// issueRPT signs a requesting party token for client d: sub the party,
// client_id the client, scope empty (the permissions claim says what it
// grants), bound by cnf, expiring by the first share expiry and until.
func (a *Authority) issueRPT(d store.Device, party string, kind store.GranteeKind, perms []RPTPermission, cnf map[string]string, binding string, until time.Time, typ string, upgraded bool) (RPTResponse, error) {
	shares := make([]string, 0, len(perms))
	for _, p := range perms {
		if p.Exp != 0 {
			if exp := time.Unix(p.Exp, 0); until.IsZero() || exp.Before(until) {
				until = exp
			}
		}
		if !slices.Contains(shares, p.Share) {
			shares = append(shares, p.Share)
		}
	}
	tok, life, err := a.signUntil(map[string]any{"sub": party, "client_id": d.ID, "scope": "", "cnf": cnf, "permissions": perms}, until)
	if err != nil {
		return RPTResponse{}, err
	}
	a.log.Info("token issued", "device", d.ID, "party", party, "party_kind", kind, "grant", "uma-ticket", "shares", strings.Join(shares, ","),
		"permissions", len(perms), "binding", binding, "expires_in", life, "upgraded", upgraded)
	return RPTResponse{AccessToken: tok, TokenType: typ, ExpiresIn: life, Upgraded: upgraded}, nil
}

// umaConfiguration is UMA 2.0 Grant §2's discovery document: the RFC 8414
// metadata and the UMA members (the permission and resource registration
// endpoints of Federated Authorization §2; no claims interaction endpoint:
// claims are pushed as a claim token).
func (h *Handler) umaConfiguration(w http.ResponseWriter, r *http.Request) {
	m := h.serverMetadata()
	u := h.A.URL()
	m["permission_endpoint"] = u + cloudsync.PathPermission
	m["resource_registration_endpoint"] = u + pathResourceSet
	m["uma_profiles_supported"] = []string{}
	m["claim_token_formats_supported"] = []string{ClaimTokenJWT}
	writeJSON(w, http.StatusOK, m)
}

// permission is the permission endpoint's handler: the body is one
// permission request object or an array of them.
func (h *Handler) permission(w http.ResponseWriter, r *http.Request, gw string) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxPermissionBody+1))
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "request body: "+err.Error())
		return
	}
	if len(data) > maxPermissionBody {
		fail(w, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("request body: larger than %d bytes", maxPermissionBody))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	array := bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("["))
	var reqs []cloudsync.PermissionRequest
	if array {
		err = dec.Decode(&reqs)
	} else {
		var one cloudsync.PermissionRequest
		err = dec.Decode(&one)
		reqs = []cloudsync.PermissionRequest{one}
	}
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON value")
	}
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", `request body: `+err.Error()+`; send {"resource_id": "<device>/<group>", "resource_scopes": ["sub"]} or an array of them`)
		return
	}
	ticket, err := h.A.Ticket(gw, reqs, array)
	var oe *OAuthError
	if errors.As(err, &oe) {
		h.A.log.Warn("permission ticket refused", "gateway", gw, "reason", oe.Description)
		writeJSON(w, oe.status, oe)
		return
	}
	if err != nil {
		h.A.log.Error("permission ticket failed", "gateway", gw, "err", err)
		fail(w, http.StatusInternalServerError, "server_error", "the authority could not make a ticket; try again")
		return
	}
	writeJSON(w, http.StatusCreated, cloudsync.TicketResponse{Ticket: ticket})
}

// disableUser is the operator's POST /admin/v1/users/{id}/disable: the
// account can no longer log in, the shares made to it are deleted and its
// tokens revoked, at every gateway (revoking "the friend's account").
func (h *Handler) disableUser(w http.ResponseWriter, r *http.Request, who string) {
	reason := r.URL.Query().Get("reason")
	if reason == "" {
		reason = "disabled by the operator"
	}
	id := r.PathValue("id")
	err := h.A.DisableUser(id, reason, who)
	if errors.Is(err, store.ErrNotFound) {
		fail(w, http.StatusNotFound, "not_found", "no user "+id)
		return
	}
	if errors.Is(err, store.ErrConflict) {
		fail(w, http.StatusConflict, "conflict", err.Error())
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"disabled": id})
}
