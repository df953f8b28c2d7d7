package coap

import (
	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/store"
)

// EndRevokedDevice ends the CoAP sessions of the device a device revocation
// names, whatever their credential, but only those it covers: a session
// holding a token issued at or before revoked_at, or a PSK or certificate
// session opened before it. A snapshot replaying an old revocation (an old
// unpair) therefore ends nothing opened since, as on MQTT.
func (s *Server) EndRevokedDevice(r store.Revocation, reason string) int {
	n := 0
	for _, p := range s.peersOf(r.Value) {
		c := p.claims.Load()
		covered := (c != nil && authn.RevocationCovers(r, c)) || (c == nil && !p.since.After(r.RevokedAt))
		if covered && s.end(p, reason, true) {
			n++
		}
	}
	return n
}
