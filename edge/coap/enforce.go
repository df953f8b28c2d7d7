package coap

import "github.com/edgeid/edgeid/edge/enforce"

// FrontEnd is the CoAP sessions (DTLS and plain UDP) as principals of the
// gateway's enforcement point.
type FrontEnd struct{ S *Server }

var _ enforce.FrontEnd = FrontEnd{}

func (p *session) principal() enforce.Principal {
	return enforce.Principal{Device: p.device, Claims: p.claims.Load(), Since: p.since}
}

// pick is the sessions sel names: by device through the registry's index,
// by token subject or id over all sessions (CoAP sessions are few).
func (f FrontEnd) pick(sel enforce.Selector) []*session {
	if sel.Device != "" {
		return f.S.sessionsOf(sel.Device)
	}
	all := f.S.allSessions()
	if sel == enforce.All {
		return all
	}
	var out []*session
	for _, p := range all {
		c := p.claims.Load()
		if c != nil && ((sel.Subject != "" && c.Subject == sel.Subject) || (sel.JTI != "" && c.JTI == sel.JTI)) {
			out = append(out, p)
		}
	}
	return out
}

// End ends the matching sessions; their observers are told 4.03.
func (f FrontEnd) End(sel enforce.Selector, m enforce.Match, reason string) int {
	n := 0
	for _, p := range f.pick(sel) {
		if (m == nil || m(p.principal())) && f.S.end(p, reason, true) {
			n++
		}
	}
	return n
}

// Recheck re-evaluates the matching sessions against the store.
func (f FrontEnd) Recheck(sel enforce.Selector, m enforce.Match) {
	for _, p := range f.pick(sel) {
		if m == nil || m(p.principal()) {
			f.S.check(p)
		}
	}
}
