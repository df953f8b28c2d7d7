package broker

import (
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/enforce"
)

// FrontEnd is the broker's sessions (live and offline) as principals of the
// gateway's enforcement point.
type FrontEnd struct{ B *Broker }

var _ enforce.FrontEnd = FrontEnd{}

func principal(s *Session) enforce.Principal {
	return enforce.Principal{Device: s.Device, Claims: s.Claims(), Since: s.ConnectedAt}
}

// pick is the sessions sel names, through the registry's indexes.
func (r *Sessions) pick(sel enforce.Selector) []*Session {
	switch {
	case sel.Device != "":
		return r.ByDevice(sel.Device)
	case sel.Subject != "":
		return r.BySubject(sel.Subject)
	case sel.JTI != "":
		return r.ByJTI(sel.JTI)
	}
	return r.All()
}

// End disconnects the matching sessions (DISCONNECT 0x87 for MQTT 5, a
// closed socket for 3.1.1, no Will) and discards offline ones; it counts
// the sessions it cut, not those already closing.
func (f FrontEnd) End(sel enforce.Selector, m enforce.Match, reason string) int {
	var ss []*Session
	for _, s := range f.B.Sessions.pick(sel) {
		if m == nil || m(principal(s)) {
			ss = append(ss, s)
		}
	}
	return f.B.Kick(ss, reason)
}

// Recheck re-evaluates the matching sessions against the store.
func (f FrontEnd) Recheck(sel enforce.Selector, m enforce.Match) {
	for _, s := range f.B.Sessions.pick(sel) {
		if m == nil || m(principal(s)) {
			f.B.Revalidate(s)
		}
	}
}

// Revalidate re-evaluates one session against the store, as a new CONNECT
// would be, and ends it or installs its current class and permissions.
func (b *Broker) Revalidate(s *Session) {
	s.recheck.Lock()
	defer s.recheck.Unlock()
	end := func(reason string) { b.End(s, packets.ErrNotAuthorized, reason) }
	c := s.Claims()
	d, perms, err := b.Auth.Revalidate(s.Device, c, s.ClientID)
	if err != nil {
		end(err.Error()) // fail closed, store errors included
		return
	}
	if s.CertSHA256 != "" {
		byFP := d.CertSHA256 == s.CertSHA256
		byIssuer := d.CertIssuer != "" && d.CertIssuer == s.CertIssuer && d.CertSerial == s.CertSerial
		switch {
		case c == nil && !byFP && !byIssuer:
			end("certificate no longer registered to the device")
			return
		case c != nil && d.CertSHA256 != "" && !byFP:
			end("TLS certificate no longer the device's")
			return
		}
	}
	b.SetPermissions(s, d.Class, perms)
}
