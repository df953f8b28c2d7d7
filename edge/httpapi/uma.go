package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/uma"
	"github.com/edgeid/edgeid/policy"
)

// The UMA challenge (UMA 2.0 Grant §3.2): the gateway is the resource
// server of its owners' devices. A request refused on a topic that is an
// owner's shared resource (a device's topic group that may be shared with
// the scope the request needs), also one with no credential at all, is
// answered
//
//	401 WWW-Authenticate: UMA realm="edgeid", as_uri="<authority>", ticket="<ticket>"
//
// with a ticket from the authority's permission endpoint, which the client
// takes to the authority for a requesting party token (RPT). When no ticket
// can be had (the authority unreachable or refusing, the gateway not
// enrolled): 403 with no ticket and Warning: 199 - "UMA Authorization Server
// Unreachable" (§3.2's failure answer). Other refusals keep their answers.

// deny answers a request p may not make on topic (act is what it needs):
// the share of a topic outside its hours says so; a shared resource gets
// the UMA challenge; anything else 403 insufficient_scope.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, p *authn.Principal, topic string, act policy.Action, detail string) {
	if act == policy.Subscribe && p.Perms.Holds(topic) {
		s.forbid(w, r, p, fmt.Sprintf("the share of %q is outside its hours; it may be read within them", topic))
		return
	}
	if act == policy.Publish && p.Perms.HeldPublish(topic) {
		s.forbid(w, r, p, fmt.Sprintf("the share of %q is outside its hours; it may be written within them", topic))
		return
	}
	if s.umaRefusal(w, r, p, topic, act) {
		return
	}
	s.forbid(w, r, p, detail)
}

// umaRefusal answers the refusal of act on topic to p (nil: no credential)
// when topic is a shared resource, and reports whether it did. A store
// error leaves the ordinary refusal to the caller (it refuses too).
func (s *Server) umaRefusal(w http.ResponseWriter, r *http.Request, p *authn.Principal, topic string, act policy.Action) bool {
	if s.o.UMA == nil {
		return false
	}
	requester, device := "", ""
	if p != nil {
		requester, device = subjectOf(p), p.Device.ID
	}
	ch, err := s.o.UMA.Challenge(r.Context(), topic, act, requester)
	switch {
	case errors.Is(err, uma.ErrNotShared):
		return false
	case errors.Is(err, uma.ErrUnavailable):
		s.Refused.Add(1)
		s.o.Counters.Denied.Add(1)
		s.log.Warn("https request refused without a permission ticket", "path", r.URL.Path, "remote", r.RemoteAddr, "device", device, "err", err)
		if p == nil {
			s.bearerChallenges(w)
		}
		w.Header().Set("Warning", `199 - "UMA Authorization Server Unreachable"`)
		fail(w, http.StatusForbidden, "insufficient_scope", fmt.Sprintf("%q is a shared resource, but the gateway cannot get a permission ticket from the authority now; retry later", topic))
		return true
	case err != nil:
		s.log.Error("https refusal: finding shared resources failed", "path", r.URL.Path, "err", err)
		return false
	}
	s.Refused.Add(1)
	s.o.Counters.Denied.Add(1)
	s.log.Info("https request refused with a permission ticket", "path", r.URL.Path, "remote", r.RemoteAddr, "device", device)
	w.Header().Add("WWW-Authenticate", `UMA realm="`+realm+`", as_uri="`+quoteParam(ch.ASURI)+`", ticket="`+quoteParam(ch.Ticket)+`"`)
	code := "insufficient_scope"
	if p == nil {
		s.bearerChallenges(w)
		code = "invalid_request"
	}
	fail(w, http.StatusUnauthorized, code, fmt.Sprintf("%q is a shared resource: take the ticket to the authority (as_uri) for a requesting party token", topic))
	return true
}

// bearerChallenges adds the Bearer and DPoP challenges of a request with no
// credential (RFC 6750 §3, RFC 9449 §7.1).
func (s *Server) bearerChallenges(w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", `Bearer realm="`+realm+`"`)
	w.Header().Add("WWW-Authenticate", `DPoP realm="`+realm+`", algs="`+dpopAlgs+`"`)
	if n := s.o.DPoP.Nonce(); n != "" {
		w.Header().Set("DPoP-Nonce", n)
	}
}

// requested is the topic (or, for an event stream, the filter) and the
// action a /v1/topics request asks for, as its handler will read them; ok
// is false for other paths (protected routes) and for a topic its handler
// would refuse as malformed.
func requested(r *http.Request) (string, policy.Action, bool) {
	t := r.PathValue("topic")
	if t == "" {
		return "", 0, false
	}
	var act policy.Action
	filter := false
	switch r.Method {
	case http.MethodPost:
		act = policy.Publish
	case http.MethodGet:
		act, filter = policy.Subscribe, acceptsEvents(r)
	default:
		return "", 0, false
	}
	if checkPathTopic(t, filter) != "" {
		return "", 0, false
	}
	return t, act, true
}
