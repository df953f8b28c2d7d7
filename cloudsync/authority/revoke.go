package authority

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/edgeid/edgeid/store"
)

// RevokeToken is RFC 7009 for the admin API and resource servers: the
// token's jti is revoked until the token would have expired, and every
// gateway hears of it. Unknown or invalid tokens are not an error (the RFC
// answers 200 either way). A refresh token revokes its grant: it, every
// refresh token rotated from it and the access tokens issued in it.
func (a *Authority) RevokeToken(raw, who string) error { return a.revokeToken(raw, who, "") }

// RevokeClientToken is RFC 7009 for a client: device revokes one of its own
// tokens. A token of another client is left alone and the request answered
// as if it was done (§2.2: no error, so the answer tells nothing); the log
// says so.
func (a *Authority) RevokeClientToken(raw, device string) error {
	return a.revokeToken(raw, "device:"+device, device)
}

// revokeToken revokes raw for who; when client is set, only a token issued
// to that client.
func (a *Authority) revokeToken(raw, who, client string) error {
	tok, err := a.parseOwnToken(raw)
	if err != nil {
		h := hashCode(raw)
		var g refreshGrant
		if err := a.Store.GetDoc(docRefresh, h, &g); errors.Is(err, store.ErrNotFound) {
			a.log.Info("revocation of an unknown token ignored", "by", who)
			return nil
		} else if err != nil {
			return err
		}
		if client != "" && g.Device != client {
			a.log.Warn("revocation of another client's refresh token ignored", "by", who, "client", g.Device)
			return nil
		}
		if err := a.revokeFamily(g.family(h), "revoked by "+who+" (device "+g.Device+")", who); err != nil {
			return err
		}
		return a.Store.DeleteDoc(docRefresh, h)
	}
	jti, _ := tok.JwtID()
	exp, _ := tok.Expiration()
	if jti == "" || time.Now().After(exp) {
		return nil
	}
	sub, _ := tok.Subject()
	var clientID string
	_ = tok.Get("client_id", &clientID)
	if client != "" && clientID != client {
		a.log.Warn("revocation of another client's token ignored", "by", who, "client", clientID, "jti", jti)
		return nil
	}
	_, err = a.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: jti,
		ExpiresAt: exp.Add(time.Minute), Reason: "revoked by " + who + " (subject " + sub + ")"}}}, who)
	return err
}

// Introspect is RFC 7662 for resource servers: whether a token of this
// authority is active now, and its claims. A store error answers inactive.
func (a *Authority) Introspect(raw string) map[string]any {
	inactive := map[string]any{"active": false}
	tok, err := a.parseOwnToken(raw)
	if err != nil {
		return inactive
	}
	jti, _ := tok.JwtID()
	sub, _ := tok.Subject()
	iat, _ := tok.IssuedAt()
	var clientID, scope string
	_ = tok.Get("client_id", &clientID)
	_ = tok.Get("scope", &scope)
	// Fail closed: a revocation or device that cannot be read makes the
	// token inactive, never active.
	if reason, err := a.tokenInactive(tok, clientID); err != nil {
		a.log.Error("introspection: token inactive, store unreadable", "jti", jti, "err", err)
		return inactive
	} else if reason != "" {
		return inactive
	}
	exp, _ := tok.Expiration()
	aud, _ := tok.Audience()
	out := map[string]any{"active": true, "iss": a.cfg.URL, "sub": sub, "client_id": clientID, "scope": scope,
		"exp": exp.Unix(), "iat": iat.Unix(), "jti": jti, "aud": aud, "token_type": "Bearer"}
	var cnf map[string]any
	if tok.Get("cnf", &cnf) == nil {
		out["cnf"] = cnf
	}
	return out
}

// tokenInactive says why a verified token whose client is clientID is not
// active now ("" when it is): outside its exp/nbf/iat (30 s of skew),
// revoked by its jti, or by its client or subject at or after it was
// issued, or its client is not an active device. A store error is an
// error: the caller refuses (fails closed).
func (a *Authority) tokenInactive(tok jwt.Token, clientID string) (string, error) {
	if err := jwt.Validate(tok, jwt.WithAcceptableSkew(30*time.Second)); err != nil {
		return err.Error(), nil
	}
	jti, _ := tok.JwtID()
	sub, _ := tok.Subject()
	iat, _ := tok.IssuedAt()
	r, ok, err := a.revocation(store.RevokeToken, jti)
	if err != nil {
		return "", fmt.Errorf("read revocation of token %s: %w", jti, err)
	}
	if ok && r.Value == jti {
		return "the token was revoked", nil
	}
	for _, c := range []struct {
		kind  store.RevocationKind
		value string
		what  string
	}{{store.RevokeDevice, clientID, "its client"}, {store.RevokeSubject, sub, "its subject"}} {
		r, ok, err := a.revocation(c.kind, c.value)
		if err != nil {
			return "", fmt.Errorf("read %s revocation of %q: %w", c.kind, c.value, err)
		}
		if ok && !iat.After(r.RevokedAt) {
			return c.what + " was revoked after it was issued", nil
		}
	}
	d, err := a.Store.Device(clientID)
	if errors.Is(err, store.ErrNotFound) {
		return "its client is not registered", nil
	}
	if err != nil {
		return "", fmt.Errorf("load device %q: %w", clientID, err)
	}
	if d.Status != store.DeviceActive {
		return "its client is " + string(d.Status), nil
	}
	return "", nil
}

// revokeToken is the revocation endpoint (RFC 7009). Who may call it: an
// admin key or a gateway (a resource server, with its request assertion),
// for any token of this authority; a device, authenticated as at the token
// endpoint (a client assertion, or its pinned certificate over mutual
// TLS), for its own tokens.
func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "form: "+err.Error())
		return
	}
	f := r.PostForm
	for k, v := range f {
		if len(v) > 1 {
			fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("parameter %s: sent %d times, at most once", k, len(v)))
			return
		}
	}
	if f.Get("token") == "" {
		fail(w, http.StatusBadRequest, "invalid_request", "form field token is required (RFC 7009)")
		return
	}
	var err error
	if hasServerCredential(r) {
		who, ok := h.resourceServerAuth(w, r)
		if !ok {
			return
		}
		err = h.A.RevokeToken(f.Get("token"), who)
	} else {
		var d store.Device
		d, _, err = h.A.clientAuth(requestClientID(r, f), f.Get("client_assertion_type"), f.Get("client_assertion"), h.A.URL()+"/oauth/revoke", clientCert(r))
		if err == nil {
			err = h.A.RevokeClientToken(f.Get("token"), d.ID)
		}
	}
	var oe *OAuthError
	if errors.As(err, &oe) && oe.status == http.StatusUnauthorized {
		// RFC 6749 §5.2, as at the token endpoint.
		if _, _, basic := r.BasicAuth(); basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="edgeid-authority"`)
		}
		if oe.Description == noCredential {
			oe = &OAuthError{oe.Code, noCredential + ", or send Authorization: Bearer <admin key> or EdgeID-GW <gateway assertion>", oe.status}
		}
		writeJSON(w, oe.status, oe)
		return
	}
	if err != nil {
		answerOAuth(w, nil, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// hasServerCredential says whether a request carries an admin key or a
// gateway assertion (Authorization: Bearer or EdgeID-GW), not a client's
// credential.
func hasServerCredential(r *http.Request) bool {
	a := r.Header.Get("Authorization")
	return strings.HasPrefix(a, "Bearer ") || strings.HasPrefix(a, "EdgeID-GW ")
}

// resourceServer requires an admin key or a gateway's request assertion:
// who is "admin:<name>" or "gateway:<id>".
func (h *Handler) resourceServer(next func(w http.ResponseWriter, r *http.Request, who string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if who, ok := h.resourceServerAuth(w, r); ok {
			next(w, r, who)
		}
	}
}

// resourceServerAuth authenticates an admin key or a gateway, or answers
// the refusal and returns false.
func (h *Handler) resourceServerAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	if strings.HasPrefix(r.Header.Get("Authorization"), "EdgeID-GW ") {
		gw, err := h.gatewayAuth(r)
		if err != nil {
			h.A.log.Warn("gateway request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
			fail(w, http.StatusUnauthorized, "invalid_client", "gateway not enrolled or assertion invalid")
			return "", false
		}
		return "gateway:" + gw, true
	}
	name, err := h.adminKey(r)
	if err != nil || name == "" {
		h.adminRefused(w, r, err)
		return "", false
	}
	return "admin:" + name, true
}

func (h *Handler) introspect(w http.ResponseWriter, r *http.Request, who string) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		fail(w, http.StatusBadRequest, "invalid_request", "form field token is required (RFC 7662)")
		return
	}
	writeJSON(w, http.StatusOK, h.A.Introspect(r.PostForm.Get("token")))
}

func (h *Handler) listClasses(w http.ResponseWriter, r *http.Request, who string) {
	cs, err := h.A.Classes()
	writeList(w, cs, err)
}

// csvColumns are the columns a device CSV may have; id and class are required.
var csvColumns = map[string]func(*store.Device, string){
	"id":          func(d *store.Device, v string) { d.ID = v },
	"serial":      func(d *store.Device, v string) { d.Serial = v },
	"mac":         func(d *store.Device, v string) { d.MAC = v },
	"class":       func(d *store.Device, v string) { d.Class = v },
	"owner":       func(d *store.Device, v string) { d.Owner = v },
	"site":        func(d *store.Device, v string) { d.Site = v },
	"status":      func(d *store.Device, v string) { d.Status = store.DeviceStatus(v) },
	"cert_sha256": func(d *store.Device, v string) { d.CertSHA256 = strings.ToLower(v) },
	"cert_issuer": func(d *store.Device, v string) { d.CertIssuer = v },
	"cert_serial": func(d *store.Device, v string) { d.CertSerial = strings.ToLower(v) },
}

// DevicesFromCSV reads a manufacturer's device list: a header row naming
// columns (id and class required), one device a row. A new device is active
// unless a status column says otherwise; for a device already registered
// (existing returns it) only the columns present change: re-uploading a
// list never re-activates a revoked device or drops its owner or keys.
func DevicesFromCSV(r io.Reader, existing func(id string) (store.Device, bool)) ([]store.Device, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	set := make([]func(*store.Device, string), len(header))
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		f, ok := csvColumns[h]
		if !ok {
			return nil, fmt.Errorf("csv header: unknown column %q (known: id, serial, mac, class, owner, status, cert_sha256, cert_issuer, cert_serial)", h)
		}
		set[i], seen[h] = f, true
	}
	if !seen["id"] || !seen["class"] {
		return nil, errors.New("csv header: columns id and class are required")
	}
	var out []store.Device
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("csv line %d: %w", line, err)
		}
		idCol := -1
		for i, h := range header {
			if strings.ToLower(strings.TrimSpace(h)) == "id" {
				idCol = i
			}
		}
		d := store.Device{Status: store.DeviceActive}
		if idCol < len(rec) {
			if old, ok := existing(strings.TrimSpace(rec[idCol])); ok {
				d = old
			}
		}
		for i, v := range rec {
			if v = strings.TrimSpace(v); v != "" {
				set[i](&d, v)
			}
		}
		out = append(out, d)
	}
	return out, nil
}
