package coap

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// queueLen is how many messages may wait for one observer; more are dropped
// (a CoAP observer only needs the latest state, RFC 7641 §4.5.2).
const queueLen = 32

// observation is one Observe registration: an inline MQTT subscription whose
// messages are sent to the observer as notifications.
type observation struct {
	s     *Server
	p     *session
	token []byte
	topic string
	id    int

	seq     atomic.Uint32 // last Observe sequence number used
	queue   chan packets.Packet
	stop    chan struct{}
	once    sync.Once
	skip    atomic.Pointer[[]byte] // retained payload already sent with the registration
	dropped atomic.Uint64
}

// register subscribes an observation of topic for p under token. It returns
// nil and the code to answer when it cannot.
func (s *Server) register(p *session, token []byte, topic string, retained *packets.Packet) (*observation, codes.Code) {
	o := &observation{s: s, p: p, token: bytes.Clone(token), topic: topic, id: int(s.subID.Add(1)),
		queue: make(chan packets.Packet, queueLen), stop: make(chan struct{})}
	o.seq.Store(2) // the registration answer carries 2; notifications count up
	if retained != nil {
		pl := bytes.Clone(retained.Payload)
		o.skip.Store(&pl)
	}
	// MaxObservations is per device, across all its sessions (a plain-UDP
	// device may talk from several addresses). At the cap, this session
	// takes the place of the observations of the device's other sessions,
	// used longest ago first: a device that registers again from a new
	// session has most likely rebooted and lost the old one, whose
	// observations would otherwise hold its share until
	// observe_idle_timeout. The session's own observations alone never
	// exceed the cap.
	s.mu.Lock()
	n := 0
	var others []*session
	for q := range s.sessions[p.device] {
		q.mu.Lock()
		n += len(q.obs)
		if q != p && len(q.obs) > 0 {
			others = append(others, q)
		}
		q.mu.Unlock()
	}
	p.mu.Lock()
	if p.ended.Load() {
		p.mu.Unlock()
		s.mu.Unlock()
		return nil, codes.Unauthorized
	}
	old := p.obs[string(o.token)]
	if old != nil {
		n--
	}
	own := len(p.obs)
	if old != nil {
		own--
	}
	if own >= s.o.MaxObservations {
		p.mu.Unlock()
		s.mu.Unlock()
		return nil, codes.ServiceUnavailable
	}
	p.obs[string(o.token)] = o
	p.mu.Unlock()
	var taken []*observation
	if n >= s.o.MaxObservations {
		slices.SortFunc(others, func(a, b *session) int { return cmp.Compare(a.used.Load(), b.used.Load()) })
		for _, q := range others {
			q.mu.Lock()
			for k, v := range q.obs {
				if n < s.o.MaxObservations {
					break
				}
				// Out of the count at once; unsubscribed below, outside s.mu.
				delete(q.obs, k)
				taken = append(taken, v)
				n--
			}
			q.mu.Unlock()
		}
	}
	s.mu.Unlock()
	for _, v := range taken {
		s.log.Info("coap observation cancelled", "device", p.device, "topic", v.topic, "reason", "taken over by a newer session of the device")
		s.unsubscribe(v)
		go v.final(codes.ServiceUnavailable, "observation cancelled: taken over by a newer session of the device")
	}
	if old != nil {
		s.unsubscribe(old)
	}
	if err := s.o.Broker.Subscribe(topic, o.id, o.offer); err != nil {
		s.unsubscribe(o)
		s.log.Warn("coap observe failed", "device", p.device, "topic", topic, "err", err)
		return nil, codes.InternalServerError
	}
	o.skip.Store(nil) // retained replay is over
	select {
	case <-o.stop:
		// The session ended (or the observation was replaced) between the
		// registration and the subscription, and its Unsubscribe came
		// first: undo this one, which nothing else would.
		_ = s.o.Broker.Unsubscribe(topic, o.id)
		return nil, codes.Unauthorized
	default:
	}
	go o.run()
	s.log.Info("coap observing", "device", p.device, "topic", topic)
	return o, codes.Content
}

// deregister cancels p's observation under token (GET with Observe 1).
func (s *Server) deregister(p *session, token []byte) {
	p.mu.Lock()
	o := p.obs[string(token)]
	p.mu.Unlock()
	if o != nil {
		s.unsubscribe(o)
	}
}

// unsubscribe removes the observation from the broker and the session. No
// message is queued for it after it returns.
func (s *Server) unsubscribe(o *observation) {
	o.once.Do(func() {
		_ = s.o.Broker.Unsubscribe(o.topic, o.id)
		close(o.stop)
		o.p.mu.Lock()
		if o.p.obs[string(o.token)] == o {
			delete(o.p.obs, string(o.token))
		}
		o.p.mu.Unlock()
	})
}

// cancel ends an observation and tells the observer with code (a non-2.xx
// notification ends an observation, RFC 7641 §3.2), without blocking.
func (s *Server) cancel(o *observation, code codes.Code) {
	s.unsubscribe(o)
	go o.final(code, "observation cancelled: not authorized")
}

// final sends the closing notification, with diag as its payload.
func (o *observation) final(code codes.Code, diag string) {
	cc := o.p.conn()
	m := cc.AcquireMessage(context.Background())
	defer cc.ReleaseMessage(m)
	m.SetCode(code)
	m.SetToken(o.token)
	m.SetType(message.NonConfirmable)
	m.SetContentFormat(message.TextPlain)
	m.SetBody(bytes.NewReader([]byte(diag)))
	_ = cc.WriteMessage(m)
}

// offer is the inline subscription handler. mochi calls it on the
// publisher's goroutine: it must never block.
func (o *observation) offer(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	if sk := o.skip.Load(); sk != nil && pk.FixedHeader.Retain && bytes.Equal(*sk, pk.Payload) {
		return // the registration answer already carries it
	}
	select {
	case <-o.stop:
	case o.queue <- pk:
	default:
		o.dropped.Add(1)
	}
}

// run sends queued messages as notifications until the observation ends.
func (o *observation) run() {
	for {
		select {
		case <-o.stop:
			return
		case pk := <-o.queue:
			select {
			case <-o.stop:
				return
			default:
			}
			// Authorize every delivery, as the MQTT ACL does.
			p := o.p
			if p.ended.Load() {
				return
			}
			if !p.perms.Load().CanSubscribe(pk.TopicName) {
				o.s.o.Counters.Denied.Add(1)
				continue
			}
			err := o.notify(pk)
			if err != nil && o.s.revive(p) {
				err = o.notify(pk) // on the session's new connection
			}
			if err != nil {
				o.s.log.Info("coap observation ended", "device", p.device, "topic", o.topic, "reason", "notification failed: "+err.Error())
				o.s.unsubscribe(o)
				return
			}
			o.s.o.Counters.MessagesOut.Add(1)
			o.s.o.Counters.BytesOut.Add(uint64(len(pk.Payload)))
		}
	}
}

func (o *observation) notify(pk packets.Packet) error {
	cc := o.p.conn()
	ctx, cancel := context.WithTimeout(cc.Context(), time.Minute)
	defer cancel()
	m := cc.AcquireMessage(ctx)
	defer cc.ReleaseMessage(m)
	m.SetCode(codes.Content)
	m.SetToken(o.token)
	m.SetObserve(o.seq.Add(1) & 0xffffff)
	cf := formatOf(pk)
	m.SetContentFormat(cf)
	// A notification larger than a block carries its first block; the
	// observer GETs the rest (RFC 7959 §3.4).
	part, opts, _ := blockOf(pk.Payload, maxBlockSZX, 0)
	o.p.rememberRepr(o.topic, pk.Payload, cf)
	for _, opt := range opts {
		m.SetOptionBytes(opt.ID, opt.Value)
	}
	m.SetBody(bytes.NewReader(part))
	// Confirmable: an observer that stopped answering is noticed and dropped.
	m.SetType(message.Confirmable)
	return cc.WriteMessage(m)
}

// Content-Format numbers (RFC 7252 §12.3 registry) for MQTT 5 content types.
var formats = map[string]message.MediaType{
	"text/plain":                message.TextPlain,
	"text/plain;charset=utf-8":  message.TextPlain,
	"text/plain; charset=utf-8": message.TextPlain,
	"application/link-format":   message.AppLinkFormat,
	"application/xml":           message.AppXML,
	"application/octet-stream":  message.AppOctets,
	"application/exi":           message.AppExi,
	"application/json":          message.AppJSON,
	"application/cbor":          message.AppCBOR,
	"application/senml+json":    message.AppSenmlJSON,
	"application/senml+cbor":    message.AppSenmlCbor,
}

// formatOf is the Content-Format of an MQTT message: its content type when
// it has a CoAP number, else text/plain for UTF-8 and octet-stream otherwise.
func formatOf(pk packets.Packet) message.MediaType {
	if f, ok := formats[pk.Properties.ContentType]; ok {
		return f
	}
	if utf8.Valid(pk.Payload) {
		return message.TextPlain
	}
	return message.AppOctets
}

// mimeOf is the MQTT content type of a CoAP Content-Format ("" if unknown).
func mimeOf(f message.MediaType) string {
	switch f {
	case message.TextPlain:
		return "text/plain;charset=utf-8"
	case message.AppSenmlJSON:
		return "application/senml+json"
	case message.AppSenmlCbor:
		return "application/senml+cbor"
	}
	for k, v := range formats {
		if v == f && k != "text/plain" && k != "text/plain; charset=utf-8" {
			return k
		}
	}
	return ""
}
