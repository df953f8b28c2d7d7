package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/edgeid/edgeid/edge/config"
)

// Identity headers a protected route's upstream may trust: the gateway
// removes any the caller sent and sets them from the verified credential.
const (
	HeaderSubject = "X-EdgeID-Subject" // the token's sub ("" for a certificate)
	HeaderDevice  = "X-EdgeID-Device"  // the device (client) the credential is for
	HeaderClient  = "X-EdgeID-Client"  // the token's client_id
	HeaderScope   = "X-EdgeID-Scope"   // the token's scope values, space-separated
	HeaderMethod  = "X-EdgeID-Method"  // token or certificate
)

// route serves one protected local service: authenticate, check the route's
// scope, throttle, strip the caller's credentials, pass the verified
// identity, forward.
func (s *Server) route(rc config.HTTPRoute) (http.Handler, error) {
	up, err := url.Parse(rc.Upstream)
	if err != nil {
		return nil, fmt.Errorf("http.routes %s: %w", rc.Prefix, err)
	}
	// http.DefaultTransport keeps 2 idle connections per host: with more
	// requests in flight than that, each one past it opened a new
	// connection to the upstream (and left one in TIME_WAIT).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 64
	rp := &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The rest of the path as the caller encoded it: an encoded
			// '/' (%2F) stays one, not a new segment.
			rest := strings.TrimPrefix(pr.In.URL.Path, rc.Prefix)
			escRest, ok := strings.CutPrefix(pr.In.URL.EscapedPath(), rc.Prefix)
			if !ok {
				escRest = (&url.URL{Path: rest}).EscapedPath()
			}
			pr.SetURL(up)
			pr.Out.URL.Path = strings.TrimSuffix(up.Path, "/") + "/" + rest
			pr.Out.URL.RawPath = strings.TrimSuffix(up.EscapedPath(), "/") + "/" + escRest
			pr.Out.Host = up.Host
			pr.SetXForwarded()
			h := pr.Out.Header
			// The caller's credentials are for the gateway, not the service.
			h.Del("Authorization")
			h.Del("DPoP")
			h.Del("Proxy-Authorization")
			for k := range h {
				if isIdentityHeader(k) {
					delete(h, k)
				}
			}
			id := identityOf(pr.In)
			for k, v := range id {
				h.Set(k, v)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("https route: upstream failed", "prefix", rc.Prefix, "upstream", rc.Upstream, "err", err)
			fail(w, http.StatusBadGateway, "bad_gateway", "the service behind "+rc.Prefix+" did not answer")
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux redirects a literal ../ away; an encoded one (%2E%2E,
		// ..%2F) would reach the upstream as "..", which it resolves
		// outside the route's upstream path.
		// '\' separates segments for Windows upstreams, and ";..." is a
		// Java servlet path parameter: "..;x" and "..\" are dot segments there.
		rest := strings.TrimPrefix(r.URL.Path, rc.Prefix)
		for _, seg := range strings.FieldsFunc(rest, func(c rune) bool { return c == '/' || c == '\\' }) {
			if name, _, _ := strings.Cut(seg, ";"); name == "." || name == ".." {
				fail(w, http.StatusBadRequest, "invalid_request", "the path has a dot segment (. or .., perhaps percent-encoded): it would leave "+rc.Prefix)
				return
			}
		}
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if rc.Scope != "" && !p.Claims.HasScope(rc.Scope) {
			s.forbid(w, r, p, fmt.Sprintf("%s needs scope %q", rc.Prefix, rc.Scope))
			return
		}
		size := 0
		if r.ContentLength > 0 {
			size = int(r.ContentLength)
		}
		if s.throttled(w, p, size) {
			return
		}
		id := map[string]string{HeaderDevice: p.Device.ID, HeaderMethod: string(p.Method)}
		if c := p.Claims; c != nil {
			id[HeaderSubject], id[HeaderClient], id[HeaderScope] = c.Subject, c.ClientID, strings.Join(c.ScopeValues, " ")
		}
		s.nonce(w)
		rp.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
	}), nil
}

// isIdentityHeader reports whether a header name could be read as one of
// the X-EdgeID-* headers: in any case, and with '_' for '-', since CGI,
// WSGI, PHP and Rack map X_EdgeID_Subject and X-EdgeID-Subject alike to
// HTTP_X_EDGEID_SUBJECT.
func isIdentityHeader(name string) bool {
	const p = "x-edgeid-"
	if len(name) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := name[i]
		if c == '_' {
			c = '-'
		} else if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[i] {
			return false
		}
	}
	return true
}

type identityKey struct{}

func withIdentity(ctx context.Context, id map[string]string) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

func identityOf(r *http.Request) map[string]string {
	id, _ := r.Context().Value(identityKey{}).(map[string]string)
	return id
}
