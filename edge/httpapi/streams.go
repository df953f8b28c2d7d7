package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/enforce"
	"github.com/edgeid/edgeid/policy"
)

// stream is one open event stream: a session of the HTTP front end.
type stream struct {
	// recheck serializes re-evaluations of the stream against the store
	// and the share clock, reads and install together: two that overlapped
	// (a store change's and the share clock's, say) could install the
	// older one's permission last, and a share's topic outside its window
	// was delivered again.
	recheck sync.Mutex
	id      int
	device  string
	claims  *authn.Claims
	method  string
	remote  string
	filter  string
	since   time.Time
	expires time.Time
	perms   atomic.Pointer[policy.Perms]
	msgs    chan packets.Packet
	done    chan struct{}
	once    sync.Once
	reason  atomic.Pointer[string]
	dropped atomic.Uint64
}

func (st *stream) end(reason string) bool {
	ended := false
	st.once.Do(func() {
		st.reason.Store(&reason)
		close(st.done)
		ended = true
	})
	return ended
}

// streams is the registry of open event streams.
type streams struct {
	mu        sync.Mutex
	all       map[int]*stream
	perDevice map[string]int
	max, per  int
}

func newStreams(max, per int) *streams {
	return &streams{all: map[int]*stream{}, perDevice: map[string]int{}, max: max, per: per}
}

func (ss *streams) add(st *stream) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.all) >= ss.max {
		return fmt.Errorf("the gateway has %d event streams open, its http.max_streams", len(ss.all))
	}
	if ss.perDevice[st.device] >= ss.per {
		return fmt.Errorf("device %q has %d event streams open, its http.max_streams_per_device", st.device, ss.per)
	}
	ss.all[st.id] = st
	ss.perDevice[st.device]++
	return nil
}

func (ss *streams) remove(st *stream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.all[st.id]; !ok {
		return
	}
	delete(ss.all, st.id)
	if ss.perDevice[st.device]--; ss.perDevice[st.device] <= 0 {
		delete(ss.perDevice, st.device)
	}
}

func (ss *streams) list() []*stream {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	out := make([]*stream, 0, len(ss.all))
	for _, st := range ss.all {
		out = append(out, st)
	}
	return out
}

func (ss *streams) endAll(reason string) {
	for _, st := range ss.list() {
		st.end(reason)
	}
}

// selects reports whether sel names st (the zero Selector names all).
func selects(sel enforce.Selector, st *stream) bool {
	switch {
	case sel.Device != "":
		return st.device == sel.Device
	case sel.Subject != "":
		return st.claims != nil && st.claims.Subject == sel.Subject
	case sel.JTI != "":
		return st.claims != nil && st.claims.JTI == sel.JTI
	}
	return true
}

// names reports whether sel names st and match (nil: any) accepts it.
func names(sel enforce.Selector, match enforce.Match, st *stream) bool {
	return selects(sel, st) && (match == nil || match(enforce.Principal{Device: st.device, Claims: st.claims, Since: st.since}))
}

// event is one server-sent event's data: the message as JSON, its payload
// as text when it is UTF-8, else base64.
type event struct {
	Topic       string `json:"topic"`
	Payload     string `json:"payload"`
	Encoding    string `json:"encoding"` // "utf-8" or "base64"
	Retain      bool   `json:"retain,omitempty"`
	ContentType string `json:"content_type,omitempty"`
}

// streamBuffer bounds the messages waiting for one slow stream; past it the
// newest are dropped (counted), as MQTT drops QoS 0 for a slow reader.
const streamBuffer = 256

// subscribe serves GET /v1/topics/<filter> with Accept: text/event-stream.
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request, p *authn.Principal) {
	filter, ok := s.readable(w, r, p, true)
	if !ok {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, "server_error", "streaming unsupported")
		return
	}
	st := &stream{id: s.o.SubscriptionIDs(), device: p.Device.ID, claims: p.Claims, method: string(p.Method), remote: r.RemoteAddr,
		filter: filter, since: s.o.Now(), expires: p.Expires, msgs: make(chan packets.Packet, streamBuffer), done: make(chan struct{})}
	perms := p.Perms
	st.perms.Store(&perms)
	if err := s.streams.add(st); err != nil {
		w.Header().Set("Retry-After", "30")
		fail(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Error())
		return
	}
	defer s.streams.remove(st)
	// A revocation applied between authenticate and add found no stream to
	// end: decide this one again now that it is registered.
	FrontEnd{S: s}.recheck(st)
	// Each delivery is checked against the stream's permissions of the
	// moment (a re-check narrows them): the inline subscription bypasses
	// the broker's ACL hook.
	offer := func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if !st.perms.Load().CanSubscribe(pk.TopicName) {
			s.o.Counters.Denied.Add(1)
			return
		}
		select {
		case <-st.done:
		case st.msgs <- pk:
		default:
			st.dropped.Add(1)
		}
	}
	// Subscribed before the client is told so: a message published once
	// the client read ": subscribed" was lost when the subscription came
	// after it (CI: TestHTTPStreamMQTTAndCoAP). What arrives meanwhile
	// waits in st.msgs. A stream reads nothing more: no read deadline (the
	// guard set one, which must not fire while the broker's hooks run).
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	if err := s.o.Broker.Subscribe(filter, st.id, offer); err != nil {
		s.log.Warn("https subscribe failed", "device", p.Device.ID, "filter", filter, "err", err)
		fail(w, http.StatusInternalServerError, "server_error", "the gateway could not subscribe to "+filter)
		return
	}
	defer func() { _ = s.o.Broker.Unsubscribe(filter, st.id) }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s.nonce(w)
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprintf(w, ": subscribed to %s as %s\n\n", filter, p.Device.ID)
	fl.Flush()
	s.log.Info("https event stream opened", "device", p.Device.ID, "subject", subjectOf(p), "filter", filter, "remote", r.RemoteAddr)

	var expiry <-chan time.Time
	if !st.expires.IsZero() {
		t := time.NewTimer(time.Until(st.expires))
		defer t.Stop()
		expiry = t.C
	}
	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	rc := http.NewResponseController(w)
	n := 0
	for {
		select {
		case <-r.Context().Done():
			s.log.Info("https event stream closed by the client", "device", st.device, "filter", filter)
			return
		case <-expiry:
			st.end("credential expired")
		case <-st.done:
			reason := *st.reason.Load()
			b, _ := json.Marshal(map[string]string{"reason": reason})
			_, _ = fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
			fl.Flush()
			s.log.Info("https event stream ended", "device", st.device, "filter", filter, "reason", reason)
			return
		case <-ping.C:
			_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			fl.Flush()
		case pk := <-st.msgs:
			// Checked again as it is written: the stream may have ended, or
			// its permission narrowed or its credential run out, since the
			// message was queued for it.
			select {
			case <-st.done:
				continue
			default:
			}
			if !st.expires.IsZero() && !s.o.Now().Before(st.expires) {
				st.end("credential expired")
				continue
			}
			if !st.perms.Load().CanSubscribe(pk.TopicName) {
				s.o.Counters.Denied.Add(1)
				continue
			}
			n++
			ev := event{Topic: pk.TopicName, Retain: pk.FixedHeader.Retain, ContentType: pk.Properties.ContentType}
			if utf8.Valid(pk.Payload) {
				ev.Payload, ev.Encoding = string(pk.Payload), "utf-8"
			} else {
				ev.Payload, ev.Encoding = base64.StdEncoding.EncodeToString(pk.Payload), "base64"
			}
			b, _ := json.Marshal(ev)
			_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprintf(w, "id: %d\nevent: message\ndata: %s\n\n", n, b); err != nil {
				return
			}
			fl.Flush()
			s.o.Counters.MessagesOut.Add(1)
			s.o.Counters.BytesOut.Add(uint64(len(pk.Payload)))
		}
	}
}

// Stream is an open event stream as the admin API lists it.
type Stream struct {
	Device, Method, Subject, Remote, Filter string
	ConnectedAt, Expires                    time.Time
}

// Streams lists the open event streams; device "" for all.
func (s *Server) Streams(device string) []Stream {
	var out []Stream
	for _, st := range s.streams.list() {
		if device != "" && st.device != device {
			continue
		}
		sub := ""
		if st.claims != nil {
			sub = st.claims.Subject
		}
		out = append(out, Stream{Device: st.device, Method: st.method, Subject: sub, Remote: st.remote, Filter: st.filter,
			ConnectedAt: st.since, Expires: st.expires})
	}
	return out
}

// FrontEnd is the HTTP front end as edge/enforce sees it: its principals
// are the open event streams (a plain request is decided whole when it
// arrives, with the store of that moment).
type FrontEnd struct{ S *Server }

var _ enforce.FrontEnd = FrontEnd{}

// End ends the streams sel names that match accepts.
func (f FrontEnd) End(sel enforce.Selector, match enforce.Match, reason string) int {
	n := 0
	for _, st := range f.S.streams.list() {
		if !names(sel, match, st) {
			continue
		}
		if st.end(reason) {
			n++
		}
	}
	return n
}

// Recheck re-decides the streams sel names against the store, as a new
// request would be: each is ended (the device or token is no longer good,
// or the filter no longer allowed) or narrowed. A store error ends it.
func (f FrontEnd) Recheck(sel enforce.Selector, match enforce.Match) {
	for _, st := range f.S.streams.list() {
		if !names(sel, match, st) {
			continue
		}
		f.recheck(st)
	}
}

func (f FrontEnd) recheck(st *stream) {
	st.recheck.Lock()
	defer st.recheck.Unlock()
	_, perms, err := f.S.o.Auth.Revalidate(st.device, st.claims, "")
	if err != nil {
		st.end("no longer authorized: " + string(authn.ReasonOf(err)))
		return
	}
	// Held (a share's topics outside its hours): the stream stays open and
	// each delivery is refused until the window opens (offer and the write
	// loop check CanSubscribe).
	if !perms.Holds(st.filter) {
		st.end("the permission to subscribe to " + st.filter + " was withdrawn")
		return
	}
	st.perms.Store(&perms)
}
