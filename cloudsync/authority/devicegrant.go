package authority

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// The OAuth 2.0 device authorization grant (RFC 8628), "pin & pair": a device
// with no keyboard gets a user code, its owner enters it on the authority's
// page and approves, and the device's poll returns a token that acts for the
// owner (sub), is the device (client_id) and is bound to the device's key or
// certificate (cnf), with a rotating refresh token bound the same way.

// DeviceCodeGrant is RFC 8628's grant type.
const DeviceCodeGrant = device.DeviceCodeGrant

// userCodeAlphabet is RFC 8628 §6.1's: no vowels (no words), no lookalikes.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

const (
	docDeviceCode = "device-code"
	docUserCode   = "user-code"
	docRefresh    = "refresh"
	docRefreshOld = "refresh-used"    // a rotated refresh token, kept to catch its reuse
	docFamily     = "refresh-revoked" // a revoked grant (refresh token family)
	docGrantToks  = "refresh-family"  // the access tokens issued in a grant (grantTokens)
	deviceCodeTTL = 10 * time.Minute
	pollInterval  = 5 * time.Second
	// pollTolerance is how much sooner than its interval a poll may come
	// and not be too fast: a client polling on a ticker at exactly the
	// interval (golang.org/x/oauth2) reaches the server with network and
	// scheduling jitter, and slow_down for that would grow its interval
	// by 5 s every time. It is at most half the interval.
	pollTolerance = time.Second
	refreshTTL    = 30 * 24 * time.Hour
)

// DeviceAuthorization is the RFC 8628 §3.2 answer.
type DeviceAuthorization struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

// pendingPairing is a device code's state; kept under the hash of the code.
type pendingPairing struct {
	Device   string            `json:"device"`
	UserCode string            `json:"user_code"`
	Cnf      map[string]string `json:"cnf"`
	Expires  time.Time         `json:"expires"`
	Interval time.Duration     `json:"interval"`
	LastPoll time.Time         `json:"last_poll,omitzero"`
	// State is pending, approved or denied; Owner is set on approval.
	State string `json:"state"`
	Owner string `json:"owner,omitempty"`
	// Site is the site of the gateway that relayed the pairing: the
	// owner's gateway, whose site the device then follows.
	Site string `json:"site,omitempty"`
}

// refreshGrant is a refresh token's state; kept under the hash of the token.
// Cnf is the client authentication it was issued to; DPoPJKT, when set, the
// DPoP key it is bound to (RFC 9449 §5.2): a refresh must prove that key.
// Family names the grant: the first refresh token of a pairing and every
// one rotated from it (RFC 9700 §4.14.2); revoking one revokes them all.
type refreshGrant struct {
	Device  string            `json:"device"`
	Owner   string            `json:"owner"`
	Cnf     map[string]string `json:"cnf"`
	DPoPJKT string            `json:"dpop_jkt,omitempty"`
	Expires time.Time         `json:"expires"`
	Family  string            `json:"family,omitempty"`
}

// spentRefresh is a rotated refresh token's family (kept under the token's
// hash), or a revoked family (under its name), until Expires: no token of
// the family can be valid after that.
type spentRefresh struct {
	Family  string    `json:"family"`
	Expires time.Time `json:"expires"`
}

// family is g's family name; a token from before families had none: it
// starts its own, named by its hash h.
func (g refreshGrant) family(h string) string {
	if g.Family != "" {
		return g.Family
	}
	return h
}

// grantTokens are the access tokens issued in a grant (refresh token
// family) that may still be live, kept under the family's name until the
// last of them and the grant's refresh tokens have expired: revoking the
// grant revokes each of them by its jti.
//
// Why per-token jti revocations and not a device (client) or subject
// revocation: those are what the gateways already enforce, but a device
// revocation would also end the device's call-home token and any other
// grant it holds, and a subject revocation every token acting for the
// owner (all her devices and apps). A grant's live tokens are few (those
// issued within one token lifetime: each refresh adds one), so naming them
// costs a record each, synced to the gateways like every revocation, and
// cuts exactly the sessions that use them.
type grantTokens struct {
	Device  string        `json:"device"`
	Tokens  []issuedToken `json:"tokens"`
	Expires time.Time     `json:"expires"`
}

// issuedToken is an access token of a grant: its jti and exp.
type issuedToken struct {
	JTI string    `json:"jti"`
	Exp time.Time `json:"exp"`
}

// errGrantRevoked is a refresh whose grant was revoked meanwhile.
var errGrantRevoked = &OAuthError{"invalid_grant", "the refresh_token was revoked", http.StatusBadRequest}

// recordGrantToken adds the access token jti (expiring at exp) to grant
// family of device before it is handed out; errGrantRevoked if the grant
// was revoked since the refresh was checked.
//
// A conditional commit of the grant's token list, retried from a fresh
// read: two tokens issued in one grant at once (at one replica or two)
// are both kept. The list is read before the grant's revocation, and
// revokeFamily writes the revocation and the list in one commit, so either
// this sees the revocation or the revocation's commit conflicts with this
// one and reads the list again, with this token.
func (a *Authority) recordGrantToken(family, device, jti string, exp time.Time) error {
	err := retry(func() error {
		var g grantTokens
		ver, err := a.Store.GetDocVersion(docGrantToks, family, &g)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if revoked, err := a.familyRevoked(family); err != nil {
			return err
		} else if revoked {
			return errGrantRevoked
		}
		now := time.Now()
		live := g.Tokens[:0]
		for _, t := range g.Tokens {
			if now.Before(t.Exp.Add(time.Minute)) {
				live = append(live, t)
			}
		}
		g.Device, g.Tokens = device, append(live, issuedToken{JTI: jti, Exp: exp})
		g.Expires = now.Add(refreshTTL)
		if exp.After(g.Expires) {
			g.Expires = exp
		}
		return a.Store.CommitDocs(nil, store.DocWrite{Kind: docGrantToks, ID: family, Value: g, ExpectVersion: ver, ExpectAbsent: ver == 0})
	})
	if err != nil && !errors.Is(err, errGrantRevoked) {
		return fmt.Errorf("record the token with its grant: %w", err)
	}
	return err
}

// revokeFamily revokes a grant: every refresh token of it, the ones rotated
// from it later included, and every access token issued in it that may
// still be live (jti revocations, synced to the gateways, which end the
// sessions that use them). who is recorded with the revocations.
//
// The grant's revocation is committed with its token list as read, on
// condition of that list's version (recordGrantToken says why): the
// tokens revoked are every token issued in the grant.
func (a *Authority) revokeFamily(family, reason, who string) error {
	var g grantTokens
	err := retry(func() error {
		g = grantTokens{}
		ver, err := a.Store.GetDocVersion(docGrantToks, family, &g)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		now := time.Now()
		list := g
		if list.Expires.Before(now.Add(refreshTTL)) {
			list.Expires = now.Add(refreshTTL) // kept as long as the revocation: a late issuance still conflicts
		}
		return a.Store.CommitDocs(nil,
			store.DocWrite{Kind: docFamily, ID: family, Value: spentRefresh{Family: family, Expires: now.Add(refreshTTL)}},
			store.DocWrite{Kind: docGrantToks, ID: family, Value: list, ExpectVersion: ver, ExpectAbsent: ver == 0})
	})
	if err != nil {
		return fmt.Errorf("revoke grant: %w", err)
	}
	var rs []store.Revocation
	now := time.Now()
	for _, t := range g.Tokens {
		if now.Before(t.Exp) {
			rs = append(rs, store.Revocation{Kind: store.RevokeToken, Value: t.JTI, ExpiresAt: t.Exp.Add(time.Minute),
				Reason: "grant revoked: " + reason})
		}
	}
	if len(rs) > 0 {
		if _, err := a.Apply(&store.Batch{Revocations: rs}, who); err != nil {
			return fmt.Errorf("grant revoked, its access tokens not: %w", err)
		}
	}
	a.log.Warn("refresh grant revoked", "family", family, "device", g.Device, "access_tokens", len(rs), "by", who, "reason", reason)
	return nil
}

// familyRevoked reads whether a grant is revoked; a store error is an
// error (the caller refuses).
func (a *Authority) familyRevoked(family string) (bool, error) {
	var f spentRefresh
	err := a.Store.GetDoc(docFamily, family, &f)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	return time.Now().Before(f.Expires), nil
}

func hashCode(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func newUserCode() string {
	b := make([]byte, 8)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(userCodeAlphabet))))
		b[i] = userCodeAlphabet[n.Int64()]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

// NormalizeUserCode accepts what people type: any case, with or without the dash or spaces.
func NormalizeUserCode(s string) string {
	s = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(s)))
	if len(s) != 8 {
		return s
	}
	return s[:4] + "-" + s[4:]
}

// StartPairing is RFC 8628 §3.1: the authenticated device asks for codes.
func (a *Authority) StartPairing(clientID, assertionType, assertion, audience string, cert *x509.Certificate) (DeviceAuthorization, error) {
	d, cnf, err := a.clientAuth(clientID, assertionType, assertion, audience, cert)
	if err != nil {
		return DeviceAuthorization{}, err
	}
	return a.startPairing(d, cnf, "")
}

// startPairing makes the codes for device d, whose tokens will carry cnf;
// site is the relaying gateway's ("" when the device asked itself).
func (a *Authority) startPairing(d store.Device, cnf map[string]string, site string) (DeviceAuthorization, error) {
	if d.Status != store.DeviceActive {
		return DeviceAuthorization{}, &OAuthError{"unauthorized_client", "device is " + string(d.Status), http.StatusBadRequest}
	}
	deviceCode := randomID(32)
	ttl := a.cfg.PairingCodeTTL
	if ttl <= 0 {
		ttl = deviceCodeTTL
	}
	interval := a.cfg.PairingPollInterval.Truncate(time.Second)
	if interval <= 0 {
		interval = pollInterval
	}
	p := pendingPairing{Device: d.ID, Cnf: cnf, Expires: time.Now().Add(ttl), Interval: interval, State: "pending", Site: site}
	// The pairing and its user code in one commit, the code on condition
	// that no live pairing has it (another code is drawn if one has).
	err := retry(func() error {
		p.UserCode = newUserCode()
		return a.Store.CommitDocs(nil, store.DocWrite{Kind: docDeviceCode, ID: hashCode(deviceCode), Value: p},
			store.DocWrite{Kind: docUserCode, ID: p.UserCode, Value: hashCode(deviceCode), ExpectAbsent: true})
	})
	if err != nil {
		return DeviceAuthorization{}, err
	}
	a.log.Info("pairing started", "device", d.ID)
	return DeviceAuthorization{DeviceCode: deviceCode, UserCode: p.UserCode, VerificationURI: a.cfg.URL + "/device",
		VerificationURIComplete: a.cfg.URL + "/device?user_code=" + p.UserCode,
		ExpiresIn:               int(ttl.Seconds()), Interval: int(interval.Seconds())}, nil
}

// PairingRequest is what the owner's consent page shows for a user code.
type PairingRequest struct {
	UserCode string
	Device   store.Device
	Scope    []policy.Rule
	Expires  time.Time
}

// ErrUserCode is returned for an unknown, used or expired user code.
var ErrUserCode = errors.New("that code is unknown or has expired; check the code on the device's display")

// ErrPairedElsewhere is a user code typed by an account that is not the
// owner of the device it belongs to. The code is not spent: the device's
// owner can still enter it; the device keeps polling.
//
// Why not deny the pairing at once (access_denied to the device)? Then
// anyone typing codes could cancel other people's pairings: a hit on a
// live code, however unlikely, would end a pairing they have no part in.
// Leaving the code as it was changes nothing for the real owner; what the
// wrong account learns ("this code is live, for someone else's device")
// gives it nothing, since only the owner's account can approve or deny,
// and code entries are rate-limited per account and address by the pages.
var ErrPairedElsewhere = errors.New("that code belongs to a device paired to another account: its owner must enter it, or unpair the device first")

// LookupPairing finds the pending request behind a user code.
func (a *Authority) LookupPairing(userCode, owner string) (PairingRequest, error) {
	code := NormalizeUserCode(userCode)
	var h string
	if err := a.Store.GetDoc(docUserCode, code, &h); err != nil {
		return PairingRequest{}, ErrUserCode
	}
	var p pendingPairing
	if err := a.Store.GetDoc(docDeviceCode, h, &p); err != nil || p.State != "pending" || time.Now().After(p.Expires) {
		return PairingRequest{}, ErrUserCode
	}
	d, err := a.Store.Device(p.Device)
	if err != nil {
		return PairingRequest{}, ErrUserCode
	}
	if err := a.pairedElsewhere(d.ID, owner); err != nil {
		return PairingRequest{}, err
	}
	class, err := a.Store.Class(d.Class)
	if err != nil {
		return PairingRequest{}, err
	}
	rules, _ := policy.Expand(class.Permissions, policy.Vars{Device: d.ID, Owner: owner, Client: d.ID})
	return PairingRequest{UserCode: code, Device: d, Scope: rules, Expires: p.Expires}, nil
}

// DecidePairing records the owner's answer. Approving pairs the device to
// the owner (synced to every gateway). For a device paired to someone else
// it is ErrPairedElsewhere, and the code stays as it was, for its owner:
// neither approved, denied nor spent.
//
// The user code is spent, the pairing's state written and (approving) the
// device paired in one conditional commit, on the code and the device as
// read: a failure leaves all three as they were (never a device paired
// whose poll is not approved), a change of the device meanwhile makes it
// read again, and of two answers to one code one wins. The commit expects
// the user code, not the pairing: only an answer spends the code, so while
// the code is as read the pairing is still pending; a poll meanwhile only
// moved its poll time (which an answered pairing no longer needs), and
// polls, however fast, cannot keep an answer from committing. A poll never
// writes over an answer: it writes on condition of the pairing as read.
func (a *Authority) DecidePairing(userCode, owner string, approve bool) error {
	code := NormalizeUserCode(userCode)
	return retry(func() error { return a.decidePairing(code, owner, approve) })
}

func (a *Authority) decidePairing(code, owner string, approve bool) error {
	var h string
	codeVer, err := a.Store.GetDocVersion(docUserCode, code, &h)
	if err != nil {
		return ErrUserCode
	}
	var p pendingPairing
	if err := a.Store.GetDoc(docDeviceCode, h, &p); err != nil || p.State != "pending" || time.Now().After(p.Expires) {
		return ErrUserCode
	}
	d, err := a.Store.Device(p.Device)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUserCode
	} else if err != nil {
		return err
	}
	// The wrong account leaves the code usable: nothing is written.
	if d.Owner != "" && d.Owner != owner {
		a.log.Warn("pairing code entered by another account; left for the owner", "device", d.ID, "account", owner)
		return ErrPairedElsewhere
	}
	take := store.DocWrite{Kind: docUserCode, ID: code, Delete: true, ExpectVersion: codeVer} // single use: spent whatever the answer
	device := map[string]uint64{store.DeviceKey(d.ID): d.Rev}
	if !approve {
		p.State = "denied"
		if err := a.Store.CommitDocs(device, take, store.DocWrite{Kind: docDeviceCode, ID: h, Value: p}); err != nil {
			return err
		}
		a.log.Info("pairing denied", "device", p.Device, "by", owner)
		return nil
	}
	d.Owner = owner
	p.State, p.Owner = "approved", owner
	b := &store.Batch{Devices: []store.Device{d}, Expect: device,
		Docs: []store.DocWrite{take, {Kind: docDeviceCode, ID: h, Value: p}}}
	// The device follows its owner's gateway: the owner's home site, or,
	// for an owner with none yet, the site of the gateway that relayed
	// this pairing, which becomes their home site.
	if u, err := a.Store.User(owner); err == nil {
		if u.Site == "" && p.Site != "" {
			u.Site = p.Site
			b.Users = []store.User{u}
			b.ExpectRev(store.UserKey(owner), u.Rev)
		}
		if u.Site != "" {
			b.Devices[0].Site = u.Site
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, err := a.Apply(b, "owner "+owner); err != nil {
		return err
	}
	a.log.Info("pairing approved", "device", p.Device, "owner", owner)
	return nil
}

// UserCodeMessage is what the code page tells an account whose code
// LookupPairing or DecidePairing refused: that the device is another
// account's, or, for every other refusal, the same "unknown or expired"
// (a guesser learns nothing more).
func UserCodeMessage(err error) string {
	if errors.Is(err, ErrPairedElsewhere) {
		return ErrPairedElsewhere.Error()
	}
	return ErrUserCode.Error()
}

// pairedElsewhere is ErrPairedElsewhere when device is paired to an
// account other than owner (logged); a store error is an error.
func (a *Authority) pairedElsewhere(device, owner string) error {
	d, err := a.Store.Device(device)
	if errors.Is(err, store.ErrNotFound) {
		return ErrUserCode
	} else if err != nil {
		return err
	}
	if d.Owner != "" && d.Owner != owner {
		a.log.Warn("pairing code entered by another account; left for the owner", "device", d.ID, "account", owner)
		return ErrPairedElsewhere
	}
	return nil
}

// PollDeviceCode is RFC 8628 §3.4/3.5: the device polls until the owner
// decides; then it gets its token once.
func (a *Authority) PollDeviceCode(clientID, assertionType, assertion, audience string, cert *x509.Certificate, deviceCode string) (TokenResponse, error) {
	return a.pollDeviceCode(tokenClient{id: clientID, assertionType: assertionType, assertion: assertion, audience: audience, cert: cert}, deviceCode)
}

func (a *Authority) pollDeviceCode(c tokenClient, deviceCode string) (TokenResponse, error) {
	d, cnf, jkt, err := a.authenticate(c)
	if err != nil {
		return TokenResponse{}, err
	}
	return a.pollPairing(d, cnf, jkt, deviceCode, boundUntil(cnf, c.cert))
}

// boundUntil is when a token bound to cert (cnf x5t#S256) must expire at
// the latest: the certificate's NotAfter. Zero when not bound to cert.
func boundUntil(cnf map[string]string, cert *x509.Certificate) time.Time {
	if cert == nil || cnf["x5t#S256"] == "" {
		return time.Time{}
	}
	return cert.NotAfter
}

// pollPairing is one poll of device d (authenticated, holding cnf, and the
// DPoP key dpopJKT if it sent a proof); the token it issues expires by until
// (zero: no bound but the TTL).
func (a *Authority) pollPairing(d store.Device, cnf map[string]string, dpopJKT, deviceCode string, until time.Time) (TokenResponse, error) {
	h := hashCode(deviceCode)
	var p pendingPairing
	if deviceCode == "" {
		return TokenResponse{}, &OAuthError{"invalid_grant", "unknown device_code", http.StatusBadRequest}
	}
	ver, err := a.Store.GetDocVersion(docDeviceCode, h, &p)
	if err != nil || p.Device != d.ID {
		return TokenResponse{}, &OAuthError{"invalid_grant", "unknown device_code", http.StatusBadRequest}
	}
	// A pending poll records when it came on the pairing as it read it:
	// never over an answer committed meanwhile (that poll then says
	// pending; the next gets the answer).
	recordPoll := func() {
		_ = a.Store.CommitDocs(nil, store.DocWrite{Kind: docDeviceCode, ID: h, Value: p, ExpectVersion: ver})
	}
	now := time.Now()
	switch {
	case now.After(p.Expires):
		_ = a.Store.DeleteDoc(docDeviceCode, h)
		return TokenResponse{}, &OAuthError{"expired_token", "the device_code has expired; start again", http.StatusBadRequest}
	case p.State == "denied":
		_ = a.Store.DeleteDoc(docDeviceCode, h)
		return TokenResponse{}, &OAuthError{"access_denied", "the owner denied the request", http.StatusBadRequest}
	case p.State == "pending":
		// Too fast: sooner than the interval, less the tolerance for jitter.
		if !p.LastPoll.IsZero() && now.Sub(p.LastPoll) < p.Interval-min(pollTolerance, p.Interval/2) {
			p.Interval += 5 * time.Second // RFC 8628 §3.5: slow down by 5 s
			p.LastPoll = now
			recordPoll()
			return TokenResponse{}, &OAuthError{"slow_down", fmt.Sprintf("poll at most every %s", p.Interval), http.StatusBadRequest}
		}
		p.LastPoll = now
		recordPoll()
		return TokenResponse{}, &OAuthError{"authorization_pending", "waiting for the owner to approve", http.StatusBadRequest}
	}
	// Approved: the device code is used up now.
	if err := a.Store.TakeDoc(docDeviceCode, h, &p); err != nil {
		return TokenResponse{}, &OAuthError{"invalid_grant", "device_code already used", http.StatusBadRequest}
	}
	if !sameCnf(p.Cnf, cnf) {
		return TokenResponse{}, &OAuthError{"invalid_grant", "the device_code was issued to another credential of this device", http.StatusBadRequest}
	}
	return a.issuePaired(d, p.Owner, cnf, dpopJKT, until, randomID(16))
}

func sameCnf(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// issuePaired signs a paired device's access token (sub = owner) and a new
// refresh token bound to the same credential: the client authentication cnf
// and, when dpopJKT is set, the DPoP key, in the grant family.
func (a *Authority) issuePaired(d store.Device, owner string, cnf map[string]string, dpopJKT string, until time.Time, family string) (TokenResponse, error) {
	class, err := a.Store.Class(d.Class)
	if err != nil {
		return TokenResponse{}, err
	}
	rules, err := policy.Expand(class.Permissions, policy.Vars{Device: d.ID, Owner: owner, Client: d.ID})
	if err != nil {
		return TokenResponse{}, err
	}
	scope := policy.FormatScope(rules)
	// A token bound to a certificate ends no later than the certificate.
	jti := randomID(16)
	tok, life, err := a.signUntil(map[string]any{"sub": owner, "client_id": d.ID, "scope": scope, "cnf": tokenCnf(cnf, dpopJKT), "jti": jti}, until)
	if err != nil {
		return TokenResponse{}, err
	}
	// Recorded with its grant before it is handed out: revoking the grant
	// revokes it.
	if err := a.recordGrantToken(family, d.ID, jti, time.Now().Add(time.Duration(life+1)*time.Second)); err != nil {
		return TokenResponse{}, err
	}
	refresh := randomID(32)
	if err := a.Store.PutDoc(docRefresh, hashCode(refresh), refreshGrant{Device: d.ID, Owner: owner, Cnf: cnf, DPoPJKT: dpopJKT, Expires: time.Now().Add(refreshTTL), Family: family}); err != nil {
		return TokenResponse{}, err
	}
	a.log.Info("token issued", "device", d.ID, "owner", owner, "grant", "device_code", "binding", bindingName(cnf, dpopJKT))
	return TokenResponse{AccessToken: tok, TokenType: tokenType(dpopJKT), ExpiresIn: life, Scope: scope, RefreshToken: refresh}, nil
}

// Refresh rotates a refresh token: the old one is spent, the new token is
// bound to the same credential, and a device unpaired since gets nothing.
func (a *Authority) Refresh(clientID, assertionType, assertion, audience string, cert *x509.Certificate, refresh string) (TokenResponse, error) {
	return a.refresh(tokenClient{id: clientID, assertionType: assertionType, assertion: assertion, audience: audience, cert: cert}, refresh)
}

// refresh is Refresh for a request that may carry a DPoP proof. A refresh
// token issued with DPoP needs a proof with the same key (RFC 9449 §5.2, for
// every client here, not only public ones); one issued without DPoP may be
// refreshed with a proof, and the new tokens are then bound to its key.
// Like every refusal after the refresh token is presented, a wrong or
// missing proof spends it. A spent token presented again (reuse: it was
// stolen, or the client is confused) revokes its whole grant, the token
// rotated from it included (RFC 9700 §4.14.2); so does a revoked one.
func (a *Authority) refresh(c tokenClient, refresh string) (TokenResponse, error) {
	d, cnf, jkt, err := a.authenticate(c)
	if err != nil {
		return TokenResponse{}, err
	}
	unknown := &OAuthError{"invalid_grant", "unknown or used refresh_token", http.StatusBadRequest}
	if refresh == "" {
		return TokenResponse{}, unknown
	}
	h := hashCode(refresh)
	var g refreshGrant
	if err := a.Store.GetDoc(docRefresh, h, &g); err != nil {
		var old spentRefresh
		if a.Store.GetDoc(docRefreshOld, h, &old) == nil && time.Now().Before(old.Expires) {
			if err := a.revokeFamily(old.Family, "refresh token reused (device "+d.ID+")", "system"); err != nil {
				return TokenResponse{}, err
			}
		}
		return TokenResponse{}, unknown
	}
	// The token is recorded as spent before it is taken: a second request
	// with it, even one at the same moment, is seen as reuse.
	family := g.family(h)
	if err := a.Store.PutDoc(docRefreshOld, h, spentRefresh{Family: family, Expires: time.Now().Add(refreshTTL)}); err != nil {
		return TokenResponse{}, err
	}
	if a.Store.TakeDoc(docRefresh, h, &g) != nil {
		if err := a.revokeFamily(family, "refresh token used twice at once (device "+d.ID+")", "system"); err != nil {
			return TokenResponse{}, err
		}
		return TokenResponse{}, unknown
	}
	if revoked, err := a.familyRevoked(family); err != nil {
		return TokenResponse{}, err
	} else if revoked {
		return TokenResponse{}, errGrantRevoked
	}
	if g.Device != d.ID || !sameCnf(g.Cnf, cnf) || time.Now().After(g.Expires) {
		return TokenResponse{}, &OAuthError{"invalid_grant", "refresh_token not valid for this client", http.StatusBadRequest}
	}
	if g.DPoPJKT != "" && jkt != g.DPoPJKT {
		a.log.Warn("refresh refused", "device", d.ID, "reason", "refresh token bound to a DPoP key, proof missing or with another key")
		return TokenResponse{}, &OAuthError{"invalid_grant", "the refresh_token is bound to a DPoP key: send a DPoP proof made with that key", http.StatusBadRequest}
	}
	if d.Owner != g.Owner || d.Status != store.DeviceActive {
		return TokenResponse{}, &OAuthError{"invalid_grant", "the device is no longer paired to this owner", http.StatusBadRequest}
	}
	return a.issuePaired(d, g.Owner, cnf, jkt, boundUntil(cnf, c.cert), family)
}

// Unpair ends a device's pairing: its owner is cleared, every token it holds
// is revoked (pushed to the gateways, which disconnect it), its refresh
// tokens stop working. The next owner can pair it again. The owner is
// cleared on the device as it is when the change commits (conditional
// commit, retried from a fresh read on a conflict): its status, revoked or
// not, stays as it is.
func (a *Authority) Unpair(deviceID, owner string) error {
	_, err := a.applyFunc("owner "+owner, func(r store.RecordReader) (*store.Batch, error) {
		d, err := deviceIn(r, deviceID)
		if err != nil {
			return nil, err
		}
		if d.Owner != owner {
			return nil, fmt.Errorf("device %s is not paired to %s", deviceID, owner)
		}
		d.Owner = ""
		return &store.Batch{Devices: []store.Device{d},
			Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: deviceID, Reason: "unpaired by its owner"}}}, nil
	})
	if err != nil {
		return err
	}
	a.log.Info("device unpaired", "device", deviceID, "owner", owner)
	return nil
}
