package httpapi

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/policy"
)

func peerCert(r *http.Request) *x509.Certificate {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0]
	}
	return nil
}

// topicOf is the topic or filter named by the path, checked: bad is the
// answer already written.
func topicOf(w http.ResponseWriter, r *http.Request, filter bool) (string, bool) {
	t := r.PathValue("topic")
	if err := checkPathTopic(t, filter); err != "" {
		fail(w, http.StatusBadRequest, "invalid_request", err)
		return "", false
	}
	return t, true
}

// checkPathTopic is why t is not a topic (or filter) a path may name; "" if
// it is one.
func checkPathTopic(t string, filter bool) string {
	if !utf8.ValidString(t) {
		return "the topic is not valid UTF-8"
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x20 || t[i] == 0x7f {
			return "the topic holds a control character"
		}
	}
	for level := range strings.SplitSeq(t, "/") {
		if level == "." || level == ".." {
			// A URL's dot segments are removed when a DPoP proof's htu is
			// compared: a proof for a/b must not publish on a/x/../b.
			return "a topic level may not be . or .. over HTTPS (URLs resolve them)"
		}
	}
	check, what := policy.ValidTopic, "topic"
	if filter {
		check, what = policy.ValidFilter, "topic filter"
	}
	if err := check(t); err != nil {
		hint := ""
		if !filter && strings.ContainsAny(t, "+#") {
			hint = "; wildcards name topics to subscribe to (GET with Accept: text/event-stream), not one to publish on"
		}
		return fmt.Sprintf("%s %q: %v%s", what, t, err, hint)
	}
	return ""
}

// throttled applies the same PUBLISH throttle as MQTT and CoAP (device,
// token subject, class) to a request of size bytes; it answers 429 itself.
func (s *Server) throttled(w http.ResponseWriter, p *authn.Principal, size int) bool {
	if !s.o.Throttle.Enabled() {
		return false
	}
	if s.o.Throttle.Decide(p.Device.ID, p.Device.Class, subjectOf(p), size, s.o.Now()) == throttle.Allow {
		return false
	}
	s.Throttled.Add(1)
	s.o.Counters.Throttled.Add(1)
	// draft-ietf-httpapi-ratelimit-headers: nothing is left in this window;
	// a token comes back within a second at any configured rate.
	w.Header().Set("Retry-After", "1")
	w.Header().Set("RateLimit", `"device";r=0;t=1`)
	fail(w, http.StatusTooManyRequests, "rate_limited", "message rate too high for this device, subject or class; retry after the time in Retry-After")
	return true
}

// publish is POST /v1/topics/<topic>: the body is the payload.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	topic, ok := topicOf(w, r, false)
	if !ok {
		return
	}
	q := r.URL.Query()
	qos, retain := byte(0), false
	switch v := q.Get("qos"); v {
	case "", "0":
	case "1":
		qos = 1
	default:
		fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("qos=%q: use 0 or 1", v))
		return
	}
	switch v := q.Get("retain"); v {
	case "", "0", "false":
	case "1", "true":
		retain = true
	default:
		fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("retain=%q: use 1 or 0", v))
		return
	}
	if !p.Perms.CanPublish(topic) {
		s.deny(w, r, p, topic, policy.Publish, fmt.Sprintf("device %q may not publish on %q", p.Device.ID, topic))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			fail(w, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("the body is larger than mqtt.max_packet_size (%d bytes)", mb.Limit))
			return
		}
		fail(w, http.StatusBadRequest, "invalid_request", "reading the body: "+err.Error())
		return
	}
	if s.throttled(w, p, len(body)+len(topic)) {
		return
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName: topic, Payload: body, PacketID: uint16(qos)}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if _, _, err := mime.ParseMediaType(ct); err != nil || !utf8.ValidString(ct) {
			fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("Content-Type %q is not a media type", ct))
			return
		}
		pk.Properties.ContentType = ct
	}
	switch err := s.o.Broker.Inject(p.Device.ID, pk); {
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "30")
		fail(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the gateway cannot keep the message now (its cloud queue is full); retry later")
		return
	case err != nil:
		s.log.Warn("https publish failed", "device", p.Device.ID, "topic", topic, "err", err)
		fail(w, http.StatusServiceUnavailable, "temporarily_unavailable", "publish failed: "+err.Error())
		return
	}
	// Counters.MessagesIn is not added to here: the broker counts an
	// injected PUBLISH as it counts a client's (its OnPublished hook).
	s.nonce(w)
	w.WriteHeader(http.StatusNoContent)
}

// get is GET /v1/topics/<topic>: the retained message, or with Accept:
// text/event-stream a subscription to <filter>.
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if acceptsEvents(r) {
		s.subscribe(w, r, p)
		return
	}
	topic, ok := s.readable(w, r, p, false)
	if !ok {
		return
	}
	msgs := s.o.Broker.Retained(topic)
	if len(msgs) == 0 {
		fail(w, http.StatusNotFound, "not_found", fmt.Sprintf("no retained message on %q", topic))
		return
	}
	m := msgs[0]
	ct := m.Properties.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	s.nonce(w)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff") // the publisher chose the type
	w.Header().Set("Content-Length", strconv.Itoa(len(m.Payload)))
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(m.Payload)
	s.o.Counters.MessagesOut.Add(1)
	s.o.Counters.BytesOut.Add(uint64(len(m.Payload)))
}

// readable is the topic (or, for an event stream, the filter) the path
// names, once checked, allowed to p for subscribe and within p's throttle;
// otherwise the answer is written and ok is false.
func (s *Server) readable(w http.ResponseWriter, r *http.Request, p *authn.Principal, filter bool) (string, bool) {
	t, ok := topicOf(w, r, filter)
	if !ok {
		return "", false
	}
	if !p.Perms.CanSubscribe(t) {
		verb := "read"
		if filter {
			verb = "subscribe to"
		}
		s.deny(w, r, p, t, policy.Subscribe, fmt.Sprintf("device %q may not %s %q", p.Device.ID, verb, t))
		return "", false
	}
	if s.throttled(w, p, 0) {
		return "", false
	}
	return t, true
}

func acceptsEvents(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// nonce sends the current DPoP nonce on a success, so the client has it
// for its next proof (RFC 9449 §8.2).
func (s *Server) nonce(w http.ResponseWriter) {
	if n := s.o.DPoP.Nonce(); n != "" {
		w.Header().Set("DPoP-Nonce", n)
	}
}
