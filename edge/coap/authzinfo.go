package coap

import (
	"bytes"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/edge/authn"
)

// PathAuthzInfo is RFC 9200's resource for posting an access token.
const PathAuthzInfo = device.PathAuthzInfo

// authzInfo takes an access token (a JWT, as text) for this DTLS session:
// validated as for MQTT (issuer keys, claims, revocation, the device and its
// owner), it must be the session's own device's (client_id). The session's
// permissions become the class's intersected with the token's scope, and the
// token's expiry and revocation end the session. A token bound to a public
// key (cnf jkt) is refused here: the DTLS session cannot prove that key; one
// bound to a certificate (cnf x5t#S256) or a PSK (cnf kid) must be the
// session's.
func (s *Server) authzInfo(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *session) {
	if r.Code() != codes.POST {
		reply(w, codes.MethodNotAllowed, "POST the access token")
		return
	}
	// A token too large for one datagram may come block-wise (RFC 7959).
	body, echo, done := s.block1(w, r, p, maxTokenPost)
	if !done {
		return
	}
	if len(body) > maxTokenPost {
		tooLarge(w, maxTokenPost)
		return
	}
	var opts []message.Option
	if echo != 0 {
		opts = append(opts, message.Option{ID: message.Block1, Value: encodeUint(echo)})
	}
	tok, why := tokenOf(body)
	if why != "" {
		s.unauthorized(w, why)
		return
	}
	c, err := s.o.Auth.Verifier.Verify(tok)
	// A token bound to the session's certificate (cnf x5t#S256) or PSK
	// (cnf kid = the PSK identity, RFC 9202) is proven by the handshake, as
	// Token checks; one bound to a public key (jkt) cannot be proven here.
	if err == nil && c.Cnf.JKT != "" {
		err = &authn.Error{Reason: authn.ReasonPoPRequired, Detail: "a token bound to a public key (cnf jkt) cannot be proven over DTLS: use plain UDP with proofs, or MQTT 5"}
	}
	if err == nil && c.ClientID != p.device {
		err = &authn.Error{Reason: authn.ReasonClientID, Detail: "the token is for another device"}
	}
	if err == nil {
		_, err = s.o.Auth.Token(tok, authn.Possession{Cert: p.leaf, PSKIdentity: p.identity}, p.device)
	}
	if err != nil {
		s.log.Warn("coap token refused", "device", p.device, "remote", p.remote, "reason", authn.ReasonOf(err), "detail", err.Error())
		s.unauthorized(w, "token refused: "+string(authn.ReasonOf(err)))
		return
	}
	p.claims.Store(c)
	s.armExpiry(p)
	s.check(p)
	if p.ended.Load() {
		s.unauthorized(w, "token refused")
		return
	}
	s.log.Info("coap token bound to session", "device", p.device, "expires", c.Expiry)
	_ = w.SetResponse(codes.Created, message.TextPlain, bytes.NewReader(nil), opts...)
}

// maxTokenPost bounds the body of a POST to /authz-info.
const maxTokenPost = 8192

// tokenOf is the access token a POST to /authz-info carries: the body
// itself (a JWT, or a CWT as CBOR), or the token inside a CBOR byte string
// (RFC 9200 posts tokens as application/ace+cbor byte strings); else "" and
// why not.
func tokenOf(body []byte) (tok, why string) {
	ok := len(body) > 0
	if ok && body[0]>>5 == 2 { // CBOR major type 2: a byte string
		var inner []byte
		ok = cbor.Unmarshal(body, &inner) == nil && len(inner) > 0
		body = inner
	}
	if !ok {
		return "", "post the access token (a JWT, or a CWT, bare or as a CBOR byte string) as the body"
	}
	return string(body), ""
}
