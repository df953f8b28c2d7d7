package coap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/throttle"
)

// handle serves one request over DTLS: the session's device is the one
// whose PSK or certificate the handshake used.
func (s *Server) handle(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if why := badOption(r); why != "" {
		if r.Type() == message.Confirmable {
			reply(w, codes.BadOption, why)
		}
		return // a non-confirmable one is rejected: ignored (RFC 7252 §4.3)
	}
	p, _ := w.Conn().Context().Value(sessionKey{}).(*session)
	if p == nil || p.ended.Load() {
		reply(w, codes.Unauthorized, "no authenticated session")
		return
	}
	s.serve(w, r, p)
}

// serve answers an authenticated request of p.
func (s *Server) serve(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *session) {
	p.used.Store(time.Now().UnixNano())
	// An expired credential ends the session whatever the request (the
	// timer of armExpiry may not have fired yet).
	if p.leaf != nil && s.o.Now().After(p.leaf.NotAfter) {
		s.end(p, "client certificate expired", true)
		reply(w, codes.Unauthorized, "the client certificate has expired")
		return
	}
	if c := p.claims.Load(); c != nil && s.o.Auth.Verifier.CheckTime(c) != nil {
		s.end(p, "token expired", false)
		reply(w, codes.Unauthorized, "the access token of this session has expired; open a new session with a new token")
		return
	}
	path, err := r.Options().Path()
	if err == nil && path == PathPair {
		if p.method == "token" {
			// The relay waits on the authority; on the shared plain-UDP
			// socket that would hold up every device behind it.
			reply(w, codes.NotFound, "pair over coaps://")
			return
		}
		s.pair(w, r, p)
		return
	}
	if err == nil && path == PathAuthzInfo {
		s.authzInfo(w, r, p)
		return
	}
	if err != nil || !strings.HasPrefix(path, PathPrefix) {
		reply(w, codes.NotFound, "resources are under "+PathPrefix+"<topic>")
		return
	}
	topic := path[len(PathPrefix):]
	if why := badTopic(topic); why != "" {
		reply(w, codes.BadRequest, why)
		return
	}
	switch r.Code() {
	case codes.PUT, codes.POST:
		s.publish(w, r, p, topic)
	case codes.GET:
		s.get(w, r, p, topic)
	default:
		reply(w, codes.MethodNotAllowed, "use PUT or POST to publish, GET (with Observe to subscribe)")
	}
}

// badTopic refuses what is not an MQTT topic name a device may use.
func badTopic(t string) string {
	switch {
	case t == "":
		return "empty topic"
	case len(t) > 65535:
		return "topic longer than 65535 bytes"
	case !utf8.ValidString(t):
		return "topic is not UTF-8"
	case strings.ContainsAny(t, "+#\x00"):
		return "topic must not contain + # or NUL (wildcards are not supported over CoAP)"
	case strings.HasPrefix(t, "$"):
		return "topics starting with $ are reserved"
	}
	return ""
}

func (s *Server) publish(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *session, topic string) {
	if !p.perms.Load().CanPublish(topic) {
		s.o.Counters.Denied.Add(1)
		s.log.Info("coap publish denied", "device", p.device, "topic", topic)
		reply(w, codes.Forbidden, "not allowed to publish to this topic")
		return
	}
	// The same bound as an MQTT packet: block-wise transfer must not let a
	// CoAP device publish what an MQTT one could not.
	limit := s.o.MaxPacketSize
	payload, echo, done := s.block1(w, r, p, limit)
	if !done {
		return
	}
	if max := limit; max > 0 && len(payload) > max {
		s.log.Warn("coap publish refused", "device", p.device, "topic", topic, "reason", "payload too large", "bytes", len(payload))
		tooLarge(w, max)
		return
	}
	subject := ""
	if c := p.claims.Load(); c != nil {
		subject = c.Subject
	}
	// Device, subject and class limits, as for MQTT.
	if v := s.o.Throttle.Decide(p.device, *p.class.Load(), subject, len(payload), s.o.Now()); v != throttle.Allow {
		s.o.Counters.Throttled.Add(1)
		_ = w.SetResponse(codes.TooManyRequests, message.TextPlain, bytes.NewReader([]byte("message rate too high")),
			message.Option{ID: message.MaxAge, Value: []byte{1}})
		if v == throttle.Disconnect {
			s.end(p, "message rate too high", true)
		}
		return
	}
	retain := false
	if qs, err := r.Options().Queries(); err == nil {
		for _, q := range qs {
			if q == "retain" || q == "retain=1" || q == "retain=true" {
				retain = true
			}
		}
	}
	var qos byte
	if r.Type() == message.Confirmable {
		qos = 1
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // as mochi's Server.Publish: a valid id for QoS 1
	}
	if cf, err := r.ContentFormat(); err == nil {
		pk.Properties.ContentType = mimeOf(cf)
	}
	// Authorized above: the inline client itself is allowed everything.
	if err := s.o.Broker.Inject(p.device, pk); errors.Is(err, ErrNotReady) {
		reply(w, codes.ServiceUnavailable, "broker not ready")
		return
	} else if errors.Is(err, ErrBusy) {
		_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, bytes.NewReader([]byte("queue full, try later")),
			message.Option{ID: message.MaxAge, Value: []byte{30}})
		return
	} else if err != nil {
		s.log.Warn("coap publish failed", "device", p.device, "topic", topic, "err", err)
		reply(w, codes.InternalServerError, "publish failed")
		return
	}
	var opts []message.Option
	if echo != 0 {
		opts = append(opts, message.Option{ID: message.Block1, Value: encodeUint(echo)})
	}
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil, opts...)
}

func (s *Server) get(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *session, topic string) {
	obs, obsErr := r.Options().Observe()
	if obsErr == nil && obs == 1 {
		s.deregister(p, r.Token())
	}
	if !p.perms.Load().CanSubscribe(topic) {
		s.o.Counters.Denied.Add(1)
		s.log.Info("coap subscribe denied", "device", p.device, "topic", topic)
		reply(w, codes.Forbidden, "not allowed to subscribe to this topic")
		return
	}
	var retained *packets.Packet
	if ms := s.o.Broker.Retained(topic); len(ms) > 0 {
		retained = &ms[0]
	}
	szx, num := requestedBlock2(r)
	if num > 0 {
		// A Block2 follow-up: the rest of the large representation this
		// session was last sent for the topic, else of the retained message.
		rp, ok := p.lastRepr(topic)
		if !ok && retained != nil {
			rp, ok = repr{body: retained.Payload, cf: formatOf(*retained)}, true
		}
		if !ok {
			reply(w, codes.NotFound, "no representation to continue")
			return
		}
		part, opts, ok := blockOf(rp.body, szx, num)
		if !ok {
			reply(w, codes.BadOption, "block number past the end of the representation")
			return
		}
		_ = w.SetResponse(codes.Content, rp.cf, bytes.NewReader(part), opts...)
		return
	}
	if obsErr != nil || obs != 0 {
		if retained == nil {
			reply(w, codes.NotFound, "no retained message on this topic")
			return
		}
		s.answer(w, p, topic, codes.Content, formatOf(*retained), retained.Payload, szx)
		return
	}
	o, code := s.register(p, r.Token(), topic, retained)
	if o == nil {
		reply(w, code, "cannot observe: too many observations")
		return
	}
	var body []byte
	cf := message.TextPlain
	if retained != nil {
		body, cf = retained.Payload, formatOf(*retained)
	}
	s.answer(w, p, topic, codes.Content, cf, body, szx, message.Option{ID: message.Observe, Value: encodeUint(2)})
}

// answer sets a response with body, or with its first block when it is
// larger than a block (the client asks for the rest, RFC 7959 §2.4).
func (s *Server) answer(w *responsewriter.ResponseWriter[*udpClient.Conn], p *session, topic string, code codes.Code, cf message.MediaType,
	body []byte, szx blockwise.SZX, extra ...message.Option) {
	part, opts, _ := blockOf(body, szx, 0)
	p.rememberRepr(topic, body, cf)
	_ = w.SetResponse(code, cf, bytes.NewReader(part), append(extra, opts...)...)
}

// reply sets a response with a short diagnostic payload (RFC 7252 §5.5.2).
func reply(w *responsewriter.ResponseWriter[*udpClient.Conn], code codes.Code, diag string) {
	_ = w.SetResponse(code, message.TextPlain, bytes.NewReader([]byte(diag)))
}

func encodeUint(v uint32) []byte {
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v)
	return buf[:n]
}

// printable shortens an untrusted identity for a log line.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// tooLarge answers 4.13 with the limit in Size1 (RFC 7959 §4).
func tooLarge(w *responsewriter.ResponseWriter[*udpClient.Conn], limit int) {
	_ = w.SetResponse(codes.RequestEntityTooLarge, message.TextPlain, bytes.NewReader([]byte("payload larger than the gateway accepts")),
		message.Option{ID: message.Size1, Value: encodeUint(uint32(limit))})
}

// unauthorized answers 4.01 with AS Request Creation Hints (as JSON).
func (s *Server) unauthorized(w *responsewriter.ResponseWriter[*udpClient.Conn], why string) {
	s.Unauthorized.Add(1)
	hint, _ := json.Marshal(map[string]string{"AS": s.o.ASHint, "error": why})
	_ = w.SetResponse(codes.Unauthorized, message.AppJSON, bytes.NewReader(hint))
}
