package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/authn"
)

// testHookReauthChecked, when set by a test, runs between a re-authentication's
// token check and the switch to its session: where a store change can land.
var testHookReauthChecked func()

// reauthState is a re-authentication waiting for its proof of possession.
type reauthState struct {
	token string
	nonce []byte
}

// OnAuthPacket handles MQTT 5 re-authentication (AUTH 0x19, method ace, a
// fresh token) without dropping the session: the new token is checked as at
// CONNECT (with a proof-of-possession challenge when it is key-bound), and
// the session continues under it, or is ended with 0x87. mochi drops the
// returned packet, so the answers are written here.
func (h *authHook) OnAuthPacket(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	s := b.Sessions.get(cl)
	if s == nil || s.ended.Load() {
		return pk, packets.ErrNotAuthorized
	}
	if pk.Properties.AuthenticationMethod != AuthMethodACE {
		b.End(s, packets.ErrBadAuthenticationMethod, "re-authentication with another method")
		return pk, nil
	}
	var token, proven string
	switch pk.ReasonCode {
	case packets.CodeReAuthenticate.Code:
		token = string(pk.Properties.AuthenticationData)
		if c, err := b.Auth.Verifier.Verify(token); err == nil && c.Cnf.JKT != "" {
			nonce := newNonce()
			s.reauth.Store(&reauthState{token: token, nonce: nonce})
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ReasonCode: packets.CodeContinueAuthentication.Code,
				Properties: packets.Properties{AuthenticationMethod: AuthMethodACE, AuthenticationData: nonce}})
			return pk, nil
		}
	case packets.CodeContinueAuthentication.Code:
		st := s.reauth.Swap(nil)
		if st == nil {
			b.End(s, packets.ErrProtocolViolation, "AUTH 0x18 without a challenge")
			return pk, nil
		}
		d, err := b.Auth.Store.Device(s.Device)
		if err == nil {
			proven, err = checkProof(d.PublicKey, pk.Properties.AuthenticationData, st.nonce, s.ClientID)
		}
		if err != nil {
			b.End(s, packets.ErrNotAuthorized, "re-authentication: proof of possession: "+err.Error())
			return pk, nil
		}
		token = st.token
	default:
		b.End(s, packets.ErrProtocolViolation, fmt.Sprintf("unexpected AUTH reason 0x%02x", pk.ReasonCode))
		return pk, nil
	}
	var leaf *x509.Certificate
	if c, ok := cl.Net.Conn.(*tls.Conn); ok {
		if pc := c.ConnectionState().PeerCertificates; len(pc) > 0 {
			leaf = pc[0]
		}
	}
	gen := b.Gen.Load()
	p, err := b.Auth.Token(token, authn.Possession{Cert: leaf, JKT: proven}, s.ClientID)
	if testHookReauthChecked != nil {
		testHookReauthChecked()
	}
	if err == nil && p.Device.ID != s.Device {
		err = &authn.Error{Reason: authn.ReasonClientID, Detail: "a re-authentication token must be for the same device"}
	}
	if err != nil {
		b.Log.Warn("re-authentication refused", "device", s.Device, "client", s.ClientID, "remote", s.Remote,
			"reason", authn.ReasonOf(err), "detail", err.Error())
		b.End(s, packets.ErrNotAuthorized, "re-authentication refused: "+string(authn.ReasonOf(err)))
		return pk, nil
	}
	nw := b.newSession(cl, p)
	nw.ConnectedAt = s.ConnectedAt
	if !b.Sessions.replace(s, nw) {
		return pk, nil
	}
	s.timer.Stop()
	b.armTimer(nw)
	// A store change that landed between the token check and replace was
	// re-checked against s, not nw: check nw again, as a CONNECT is.
	if b.Gen.Load() != gen && b.Recheck != nil {
		b.Recheck(nw)
		if nw.ended.Load() {
			return pk, nil // ended by the re-check: no AUTH success after its DISCONNECT
		}
	}
	b.dropForbidden(nw)
	b.Log.Info("re-authenticated", "device", nw.Device, "client", nw.ClientID, "expires", nw.Expires)
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ReasonCode: packets.CodeSuccess.Code,
		Properties: packets.Properties{AuthenticationMethod: AuthMethodACE}})
	return pk, nil
}
