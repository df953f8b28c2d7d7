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

// RevokeToken is RFC 7009: the token's jti is revoked until the token would
// have expired, and every gateway hears of it. Unknown or invalid tokens are
// not an error (the RFC answers 200 either way). A refresh token revokes
// its grant: it and every refresh token rotated from it are refused.
func (a *Authority) RevokeToken(raw, who string) error {
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
		if err := a.revokeFamily(g.family(h), "revoked by "+who+" (device "+g.Device+")"); err != nil {
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

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request, who string) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		fail(w, http.StatusBadRequest, "invalid_request", "form field token is required (RFC 7009)")
		return
	}
	if err := h.A.RevokeToken(r.PostForm.Get("token"), who); err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) introspect(w http.ResponseWriter, r *http.Request, who string) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		fail(w, http.StatusBadRequest, "invalid_request", "form field token is required (RFC 7662)")
		return
	}
	writeJSON(w, http.StatusOK, h.A.Introspect(r.PostForm.Get("token")))
}

func (h *Handler) listClasses(w http.ResponseWriter, r *http.Request, who string) {
	cs, err := h.A.Store.Classes()
	writeList(w, cs, err)
}

// csvColumns are the columns a device CSV may have; id and class are required.
var csvColumns = map[string]func(*store.Device, string){
	"id":          func(d *store.Device, v string) { d.ID = v },
	"serial":      func(d *store.Device, v string) { d.Serial = v },
	"mac":         func(d *store.Device, v string) { d.MAC = v },
	"class":       func(d *store.Device, v string) { d.Class = v },
	"owner":       func(d *store.Device, v string) { d.Owner = v },
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
