package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/edge/authn"
)

// realm is the WWW-Authenticate realm of every challenge.
const realm = "edgeid"

// dpopAlgs is what the DPoP challenge advertises (RFC 9449 §7.1).
const dpopAlgs = "ES256 ES384 EdDSA"

// authenticate decides who the request is, or answers it: a 401 with the
// challenge the RFCs define (RFC 6750 §3 for Bearer, RFC 9449 §7.1 for
// DPoP), a 503 when the gateway cannot judge tokens now. Failures are
// logged with their reason, never with the token or proof.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*authn.Principal, bool) {
	var cert = peerCert(r)
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	switch {
	case scheme == "" && cert != nil:
		p, err := s.o.Auth.Certificate(r.TLS.PeerCertificates, "")
		if err != nil {
			s.refuse(w, r, "Bearer", "invalid_client", err)
			return nil, false
		}
		return p, true
	case scheme == "":
		// No credential at all for an owner's shared resource: the UMA
		// challenge (with the Bearer and DPoP ones).
		if topic, act, ok := requested(r); ok && s.umaRefusal(w, r, nil, topic, act) {
			return nil, false
		}
		s.challenge(w, r, http.StatusUnauthorized, "", "", "")
		return nil, false
	case token == "":
		// Challenge with the scheme only when it is one the gateway takes:
		// never advertise the caller's (Basic, ...).
		switch {
		case strings.EqualFold(scheme, "Bearer"):
			scheme = "Bearer"
		case strings.EqualFold(scheme, "DPoP"):
			scheme = "DPoP"
		default:
			scheme = ""
		}
		s.challenge(w, r, http.StatusUnauthorized, scheme, "invalid_request", "the Authorization header has no token")
		return nil, false
	}
	if g := s.o.Gate; g != nil {
		if err := g(); err != nil {
			s.log.Warn("https request refused: tokens cannot be judged now", "path", r.URL.Path, "reason", err.Reason, "detail", err.Detail)
			w.Header().Set("Retry-After", "30")
			fail(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Detail)
			return nil, false
		}
	}
	proven := authn.Possession{Cert: cert}
	var pf dpop.Proof
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if len(r.Header.Values("DPoP")) > 0 {
			// RFC 9449 §7.2: a DPoP proof with the Bearer scheme is a
			// client mistake that would hide a downgrade.
			s.challenge(w, r, http.StatusUnauthorized, "DPoP", "invalid_request", "a DPoP proof was sent with the Bearer scheme; use Authorization: DPoP")
			return nil, false
		}
		scheme = "Bearer"
	case strings.EqualFold(scheme, "DPoP"):
		scheme = "DPoP"
		proofs := r.Header.Values("DPoP")
		if len(proofs) != 1 {
			s.challenge(w, r, http.StatusUnauthorized, "DPoP", "invalid_dpop_proof", fmt.Sprintf("want exactly one DPoP header, got %d", len(proofs)))
			return nil, false
		}
		// The URL as the client sent it (EscapedPath, not the decoded Path:
		// a topic's %23, %3F or %2F must not become '#', '?' or '/').
		// Check, not Verify: the jti is recorded only once the token is
		// verified and bound to this key (below), so a stranger's proofs
		// cannot fill the replay store.
		var err error
		pf, err = s.o.DPoP.Check(proofs[0], dpop.Request{Method: r.Method, URL: "https://" + r.Host + r.URL.EscapedPath(), AccessToken: token})
		if err != nil {
			var de *dpop.Error
			code, detail := "invalid_dpop_proof", err.Error()
			if errors.As(err, &de) {
				code, detail = de.Code, de.Detail
			}
			s.log.Warn("https request refused: DPoP proof", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", code, "detail", detail)
			s.challenge(w, r, http.StatusUnauthorized, "DPoP", code, detail)
			return nil, false
		}
		proven.JKT = pf.JKT
	default:
		s.challenge(w, r, http.StatusUnauthorized, "", "invalid_request", fmt.Sprintf("authorization scheme %q: use Bearer or DPoP", scheme))
		return nil, false
	}
	p, err := s.o.Auth.Token(token, proven, "")
	if err != nil {
		s.refuse(w, r, scheme, "invalid_token", err)
		return nil, false
	}
	if scheme == "DPoP" {
		if p.Claims.Cnf.JKT == "" {
			// A proof proves nothing about a token that names no key.
			s.challenge(w, r, http.StatusUnauthorized, "DPoP", "invalid_token", "the token is not DPoP-bound (no cnf jkt); use the Bearer scheme")
			return nil, false
		}
		if err := s.o.DPoP.Use(pf); err != nil {
			s.log.Warn("https request refused: DPoP proof", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "invalid_dpop_proof", "detail", err.Error())
			detail := err.Error()
			var de *dpop.Error
			if errors.As(err, &de) {
				detail = de.Detail
			}
			s.challenge(w, r, http.StatusUnauthorized, "DPoP", "invalid_dpop_proof", detail)
			return nil, false
		}
	}
	return p, true
}

// refuse answers an authentication failure from the authenticator.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, scheme, code string, err error) {
	reason, detail := authn.ReasonOf(err), err.Error()
	var ae *authn.Error
	if errors.As(err, &ae) {
		detail = ae.Detail
	}
	s.log.Warn("https request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "scheme", scheme, "reason", reason, "detail", detail)
	if reason == authn.ReasonPoPRequired || reason == authn.ReasonCnfMismatch {
		// A bound token used without (or with the wrong) proof: say which
		// scheme proves it (RFC 9449 §7.1).
		if strings.Contains(detail, "cnf jkt") || scheme == "DPoP" {
			scheme = "DPoP"
			detail = strings.Replace(detail, "prove possession with MQTT 5 enhanced authentication", "send it with Authorization: DPoP and a DPoP proof", 1)
		}
	}
	s.challenge(w, r, http.StatusUnauthorized, scheme, code, detail)
}

// challenge answers 401 (or status) with WWW-Authenticate for scheme (both
// schemes when scheme is ""), and the error in a JSON body too.
func (s *Server) challenge(w http.ResponseWriter, r *http.Request, status int, scheme, code, detail string) {
	s.Refused.Add(1)
	// auth-params are a comma-separated list (RFC 9110 §11.3, the
	// examples of RFC 6750 §3 and RFC 9449 §7.1).
	param := func(scheme string) string {
		v := scheme + ` realm="` + realm + `"`
		if scheme == "DPoP" {
			v += `, algs="` + dpopAlgs + `"`
		}
		if code != "" {
			v += `, error="` + code + `", error_description="` + quoteParam(detail) + `"`
		}
		return v
	}
	switch scheme {
	case "":
		w.Header().Add("WWW-Authenticate", param("Bearer"))
		w.Header().Add("WWW-Authenticate", param("DPoP"))
	default:
		w.Header().Add("WWW-Authenticate", param(scheme))
	}
	if n := s.o.DPoP.Nonce(); n != "" && (scheme == "DPoP" || scheme == "") {
		w.Header().Set("DPoP-Nonce", n)
	}
	if code == "" {
		code, detail = "invalid_request", "no credential: send Authorization: Bearer <token>, Authorization: DPoP <token> with a DPoP proof, or a client certificate"
	}
	fail(w, status, code, detail)
}

// forbid answers 403 insufficient_scope (RFC 6750 §3.1).
func (s *Server) forbid(w http.ResponseWriter, r *http.Request, p *authn.Principal, detail string) {
	s.Refused.Add(1)
	s.o.Counters.Denied.Add(1)
	s.log.Warn("https request denied", "path", r.URL.Path, "device", p.Device.ID, "subject", subjectOf(p), "detail", detail)
	w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`", error="insufficient_scope", error_description="`+quoteParam(detail)+`"`)
	fail(w, http.StatusForbidden, "insufficient_scope", detail)
}

func quoteParam(s string) string {
	// An auth-param value is a quoted-string: no quote or backslash, and
	// printable ASCII only (a description may echo client input).
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}

// fail writes an OAuth-style JSON error.
func fail(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": detail})
}

func subjectOf(p *authn.Principal) string {
	if p.Claims == nil {
		return ""
	}
	return p.Claims.Subject
}
