package bridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/policy"
)

// The bridge speaks MQTT to the cloud through mochi's packet codec (both
// 3.1.1 and 5, the same code the local broker decodes devices with) rather
// than a client library: the queue needs PUBLISHes written in order with many
// in flight and each PUBACK tied back to its queue record, which paho.golang
// (5 only) does not expose, and one code path serves both protocol versions.

// DeviceProperty is the MQTT 5 user property that carries the publishing
// device's id to the cloud.
const DeviceProperty = "edgeid-device"

// maxInflight bounds QoS 1 PUBLISHes sent and not yet acknowledged, below
// the remote's Receive Maximum.
const maxInflight = 256

// Counters are one remote's, read by metrics and `edgeid bridge`.
type Counters struct {
	Forwarded  atomic.Uint64 // messages the remote acknowledged (QoS 1) or was sent (QoS 0)
	Resent     atomic.Uint64 // QoS 1 messages sent again after a reconnect: the duplicates QoS 1 allows
	DroppedMem atomic.Uint64 // QoS 0 messages dropped from the full memory buffer
	RefusedOut atomic.Uint64 // messages the bridge class may not send to the cloud (queued or live)
	Received   atomic.Uint64 // messages from the cloud published locally
	RefusedIn  atomic.Uint64 // messages from the cloud the bridge class may not publish
	// RefusedByCloud counts QoS 1 messages the cloud answered with a
	// permanent error reason code (MQTT 5 PUBACK >= 0x80): dropped, logged.
	RefusedByCloud atomic.Uint64
	Connects       atomic.Uint64
}

type rule struct {
	config.BridgeRule
}

// Remote is one cloud broker connection and its queues.
type Remote struct {
	Name     string
	cfg      config.Remote
	tls      *tls.Config // nil for mqtt://
	addr     string
	version  byte
	password []byte
	out, in  []rule
	spool    *Spool
	mem      *memQueue
	perms    atomic.Pointer[policy.Perms]
	inject   func(packets.Packet) error
	log      *slog.Logger
	maxPkt   uint32
	Counters Counters

	mu      sync.Mutex
	state   string // connecting, connected, down
	lastErr string
	since   time.Time
	maxSent uint64 // highest seq ever written to a connection (for DUP and Resent)
}

// Principal is the bridge principal's name: what logs and class templates
// ({client}) call this remote.
func (r *Remote) Principal() string { return "bridge:" + r.Name }

func (r *Remote) setState(state, why string) {
	r.mu.Lock()
	r.state, r.lastErr, r.since = state, why, time.Now()
	r.mu.Unlock()
}

// allowedOut reports whether the bridge principal may send topic to the
// cloud now (the cloud is the recipient: its class's subscribe permission).
func (r *Remote) allowedOut(topic string) bool {
	p := r.perms.Load()
	return p != nil && p.CanSubscribe(topic)
}

func (r *Remote) allowedIn(topic string) bool {
	p := r.perms.Load()
	return p != nil && p.CanPublish(topic)
}

// outRule is the first out rule whose filter matches topic.
func (r *Remote) outRule(topic string) (rule, bool) {
	for _, ru := range r.out {
		if policy.Match(ru.Filter, topic) {
			return ru, true
		}
	}
	return rule{}, false
}

func (r *Remote) remoteTopic(ru rule, m Message) string {
	if ru.DeviceInTopic && m.Device != "" {
		return ru.RemotePrefix + m.Device + "/" + m.Topic
	}
	return ru.RemotePrefix + m.Topic
}

// run keeps the connection up until ctx ends: reconnect with exponential
// backoff and full jitter, capped at 30 s.
func (r *Remote) run(ctx context.Context) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		r.setState("connecting", "")
		start := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		r.setState("down", err.Error())
		r.log.Warn("bridge: disconnected from the cloud broker", "remote", r.Name, "address", r.cfg.Address, "reason", err)
		if time.Since(start) > time.Minute {
			backoff = 500 * time.Millisecond // it had been up: start over
		}
		wait := time.Duration(rand.Int64N(int64(backoff))) + 100*time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// conn is one connection's writer side.
type conn struct {
	nc      net.Conn
	mu      sync.Mutex
	w       *bufio.Writer
	version byte
}

func (c *conn) write(pk *packets.Packet, flush bool) error {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("bridge cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.w.Write(buf.Bytes()); err != nil {
		return err
	}
	if flush {
		return c.w.Flush()
	}
	return nil
}

func (c *conn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Flush()
}

// readPacket reads one packet, refusing one longer than limit.
func readPacket(br *bufio.Reader, version byte, limit uint32) (packets.Packet, error) {
	hb, err := br.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	var fh packets.FixedHeader
	if err := fh.Decode(hb); err != nil {
		return packets.Packet{}, fmt.Errorf("fixed header: %w", err)
	}
	var n, shift uint32
	for i := 0; ; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return packets.Packet{}, err
		}
		if i == 4 {
			return packets.Packet{}, errors.New("remaining length longer than 4 bytes")
		}
		n |= uint32(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	if n > limit {
		return packets.Packet{}, fmt.Errorf("packet of %d bytes is over the limit of %d", n, limit)
	}
	fh.Remaining = int(n)
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: version}
	switch fh.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Pingresp:
	case packets.Disconnect:
		if len(body) > 0 {
			err = pk.DisconnectDecode(body)
		}
	default:
		err = fmt.Errorf("unexpected packet type %d from the cloud broker", fh.Type)
	}
	return pk, err
}

type inflight struct {
	seq   uint64
	pid   uint16
	acked bool
}

// session runs one connection until it fails or ctx ends.
func (r *Remote) session(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	var nc net.Conn
	var err error
	if r.tls != nil {
		nc, err = (&tls.Dialer{NetDialer: &d, Config: r.tls}).DialContext(ctx, "tcp", r.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", r.addr)
	}
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer nc.Close()
	c := &conn{nc: nc, w: bufio.NewWriterSize(nc, 32<<10), version: r.version}
	br := bufio.NewReaderSize(nc, 32<<10)

	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: r.version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: r.cfg.ClientID,
			Keepalive: uint16(r.cfg.KeepAlive / time.Second), Clean: r.cfg.SessionExpiry == 0}}
	if r.cfg.Username != "" {
		connect.Connect.UsernameFlag, connect.Connect.Username = true, []byte(r.cfg.Username)
	}
	if r.password != nil {
		connect.Connect.PasswordFlag, connect.Connect.Password = true, r.password
	}
	if r.version == 5 {
		connect.Properties.MaximumPacketSize = r.maxPkt
		connect.Properties.ReceiveMaximum = maxInflight
		if r.cfg.SessionExpiry > 0 {
			connect.Properties.SessionExpiryInterval = uint32(r.cfg.SessionExpiry / time.Second)
			connect.Properties.SessionExpiryIntervalFlag = true
		}
	}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	if err := c.write(&connect, true); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	ack, err := readPacket(br, r.version, r.maxPkt)
	if err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	if ack.FixedHeader.Type != packets.Connack {
		return fmt.Errorf("the cloud broker answered CONNECT with packet type %d", ack.FixedHeader.Type)
	}
	if ack.ReasonCode != 0 {
		return fmt.Errorf("the cloud broker refused the connection: CONNACK %s", connackReason(r.version, ack.ReasonCode))
	}
	_ = nc.SetDeadline(time.Time{})
	window := maxInflight
	if rm := int(ack.Properties.ReceiveMaximum); r.version == 5 && rm > 0 {
		window = min(window, rm)
	}
	var remoteMax uint32 = 256 << 20
	if mp := ack.Properties.MaximumPacketSize; r.version == 5 && mp > 0 {
		remoteMax = mp
	}

	var pid uint16 = 1
	nextID := func() uint16 {
		pid++
		if pid == 0 {
			pid = 1
		}
		return pid
	}
	if len(r.in) > 0 {
		sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: r.version, PacketID: nextID()}
		for _, ru := range r.in {
			sub.Filters = append(sub.Filters, packets.Subscription{Filter: ru.RemotePrefix + ru.Filter, Qos: ru.QoS, NoLocal: true})
		}
		if err := c.write(&sub, true); err != nil {
			return fmt.Errorf("send SUBSCRIBE: %w", err)
		}
	}
	r.Counters.Connects.Add(1)
	r.setState("connected", "")
	r.log.Info("bridge: connected to the cloud broker", "remote", r.Name, "address", r.cfg.Address, "client_id", r.cfg.ClientID,
		"protocol", r.cfg.Protocol, "session_present", ack.SessionPresent, "queued", r.spool.Stats().Messages)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	// Every goroutine of the session is joined before session returns, so
	// none touches the spool, the broker or the reader after it.
	var wg sync.WaitGroup
	var fl struct {
		sync.Mutex
		list  []inflight // in send order
		space *sync.Cond
	}
	fl.space = sync.NewCond(&fl.Mutex)
	wg.Add(4)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		_ = nc.Close()
		fl.Lock()
		fl.space.Broadcast()
		fl.Unlock()
	}()

	// Reader: acks, the cloud's publishes, pings.
	go func() {
		defer wg.Done()
		for {
			_ = nc.SetReadDeadline(time.Now().Add(r.cfg.KeepAlive * 3 / 2))
			pk, err := readPacket(br, r.version, r.maxPkt)
			if err != nil {
				errc <- fmt.Errorf("read: %w", err)
				return
			}
			switch pk.FixedHeader.Type {
			case packets.Puback:
				if pk.ReasonCode == packets.ErrQuotaExceeded.Code || pk.ReasonCode == packets.ErrServerBusy.Code {
					// Transient: send it again after a reconnect.
					errc <- fmt.Errorf("the cloud broker answered a PUBLISH with 0x%02x %s; resending after a reconnect", pk.ReasonCode, pk.Properties.ReasonString)
					return
				}
				if pk.ReasonCode >= 0x80 {
					r.Counters.RefusedByCloud.Add(1)
					r.log.Warn("bridge: the cloud broker refused a message (not resent)", "remote", r.Name,
						"code", fmt.Sprintf("0x%02x", pk.ReasonCode), "reason", pk.Properties.ReasonString)
				}
				fl.Lock()
				var done uint64
				for i := range fl.list {
					if !fl.list[i].acked && fl.list[i].pid == pk.PacketID {
						fl.list[i].acked = true
						if pk.ReasonCode < 0x80 {
							r.Counters.Forwarded.Add(1)
						}
						break
					}
				}
				n := 0
				for n < len(fl.list) && fl.list[n].acked {
					done = fl.list[n].seq
					n++
				}
				if n > 0 {
					fl.list = fl.list[n:]
					fl.space.Broadcast()
				}
				fl.Unlock()
				if done > 0 {
					r.spool.Ack(done)
				}
			case packets.Publish:
				if err := r.receive(c, pk); err != nil {
					errc <- err
					return
				}
			case packets.Suback:
				for i, code := range pk.ReasonCodes {
					if code >= 0x80 && i < len(r.in) {
						r.log.Warn("bridge: the cloud broker refused a subscription", "remote", r.Name,
							"filter", r.in[i].RemotePrefix+r.in[i].Filter, "code", fmt.Sprintf("0x%02x", code))
					}
				}
			case packets.Disconnect:
				errc <- fmt.Errorf("the cloud broker sent DISCONNECT 0x%02x %s", pk.ReasonCode, pk.Properties.ReasonString)
				return
			}
		}
	}()

	// Pinger.
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.cfg.KeepAlive / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}, true); err != nil {
					errc <- fmt.Errorf("ping: %w", err)
					return
				}
			}
		}
	}()

	// Writer: QoS 0 from memory first (it is the freshest and cheapest to
	// lose), then the durable queue from the first unacknowledged record.
	go func() {
		defer wg.Done()
		rd := r.spool.NewReader()
		recs := make(chan Record, 64)
		rerr := make(chan error, 1)
		var rwg sync.WaitGroup
		// The reader is not safe for two goroutines: close it only once
		// the one reading it has stopped (it stops when ctx ends).
		defer func() { rwg.Wait(); rd.Close() }()
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			defer close(recs)
			for {
				rec, ok, err := rd.Next(ctx.Done())
				if err != nil {
					rerr <- err
					return
				}
				if !ok {
					return
				}
				select {
				case recs <- rec:
				case <-ctx.Done():
					return
				}
			}
		}()
		for {
			var m0 []Message
			var rec Record
			var ok bool
			select {
			case <-ctx.Done():
				return
			case err := <-rerr:
				errc <- err
				return
			case <-r.mem.ready():
				m0 = r.mem.take()
			case rec, ok = <-recs:
				if !ok {
					return
				}
			}
			for _, m := range m0 {
				ru, found := r.outRule(m.Topic)
				if !found || !r.allowedOut(m.Topic) {
					r.Counters.RefusedOut.Add(1)
					continue
				}
				pk := r.publishPacket(ru, m, 0, 0)
				if err := c.write(&pk, false); err != nil {
					errc <- fmt.Errorf("write: %w", err)
					return
				}
				r.Counters.Forwarded.Add(1)
			}
			if rec.Seq != 0 {
				if err := r.sendRecord(c, rec, window, remoteMax, nextID, &fl.Mutex, fl.space, &fl.list, ctx); err != nil {
					errc <- err
					return
				}
			}
			// Flush when nothing more is ready at once: batches writes
			// under load, sends at once when idle.
			if len(recs) == 0 && r.mem.len() == 0 {
				if err := c.flush(); err != nil {
					errc <- fmt.Errorf("write: %w", err)
					return
				}
			}
		}
	}()

	var end error
	select {
	case <-ctx.Done():
		end = ctx.Err()
	case end = <-errc:
	}
	cancel()
	wg.Wait()
	return end
}

// sendRecord writes one queued record, waiting for room in the window. A
// record the bridge may no longer send, or that expired, is acked in turn
// without being sent.
func (r *Remote) sendRecord(c *conn, rec Record, window int, remoteMax uint32, nextID func() uint16,
	mu *sync.Mutex, space *sync.Cond, list *[]inflight, ctx context.Context) error {
	ru, found := r.outRule(rec.Msg.Topic)
	skip := rec.Expired
	if !skip && (!found || !r.allowedOut(rec.Msg.Topic)) {
		r.Counters.RefusedOut.Add(1)
		r.log.Warn("bridge: a queued message is no longer allowed out; dropped", "remote", r.Name, "topic", rec.Msg.Topic,
			"device", rec.Msg.Device, "principal", r.Principal())
		skip = true
	}
	var pk packets.Packet
	if !skip {
		pk = r.publishPacket(ru, rec.Msg, min(rec.Msg.QoS, ru.QoS, 1), 0)
		if uint32(len(pk.Payload)+len(pk.TopicName)+len(pk.Properties.ContentType)+len(rec.Msg.Device)+len(DeviceProperty)+64) > remoteMax {
			r.log.Warn("bridge: a message is larger than the cloud broker takes; dropped", "remote", r.Name, "topic", rec.Msg.Topic, "bytes", len(pk.Payload))
			skip = true
		}
	}
	mu.Lock()
	for len(*list) >= window && ctx.Err() == nil {
		// Flush what is buffered without holding the window's lock: the
		// reader takes it for each PUBACK, and a cloud that cannot write
		// its PUBACKs to us may stop reading what we write.
		mu.Unlock()
		if err := c.flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		mu.Lock()
		if len(*list) >= window && ctx.Err() == nil {
			space.Wait()
		}
	}
	if ctx.Err() != nil {
		mu.Unlock()
		return ctx.Err()
	}
	if skip || pk.FixedHeader.Qos == 0 {
		// Nothing will ack it: acked in turn (a QoS 0 rule sends it once).
		// With an earlier record still waiting for its PUBACK, the
		// PUBACK handler acks past this one when that comes.
		*list = append(*list, inflight{seq: rec.Seq, acked: true})
		n := 0
		for n < len(*list) && (*list)[n].acked {
			n++
		}
		var done uint64
		if n > 0 {
			done = (*list)[n-1].seq
			*list = (*list)[n:]
		}
		mu.Unlock()
		if !skip {
			if err := c.write(&pk, false); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			r.Counters.Forwarded.Add(1)
		}
		if done > 0 {
			r.spool.Ack(done)
		}
		return nil
	}
	pk.PacketID = nextID()
	*list = append(*list, inflight{seq: rec.Seq, pid: pk.PacketID})
	mu.Unlock()
	r.mu.Lock()
	if rec.Seq <= r.maxSent {
		pk.FixedHeader.Dup = true
		r.Counters.Resent.Add(1)
	} else {
		r.maxSent = rec.Seq
	}
	r.mu.Unlock()
	if err := c.write(&pk, false); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (r *Remote) publishPacket(ru rule, m Message, qos byte, id uint16) packets.Packet {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: m.Retain},
		ProtocolVersion: r.version, TopicName: r.remoteTopic(ru, m), Payload: m.Payload, PacketID: id}
	if r.version == 5 {
		pk.Properties.ContentType = m.ContentType
		if m.Device != "" {
			pk.Properties.User = []packets.UserProperty{{Key: DeviceProperty, Val: m.Device}}
		}
	}
	return pk
}

// receive publishes one message from the cloud locally, as the bridge
// principal, and acknowledges it: a refused one too, or the cloud would
// send it again for ever.
func (r *Remote) receive(c *conn, pk packets.Packet) error {
	topic, ok := "", false
	for _, ru := range r.in {
		if rest, cut := strings.CutPrefix(pk.TopicName, ru.RemotePrefix); cut && policy.Match(ru.Filter, rest) {
			topic, ok = rest, true
			break
		}
	}
	switch {
	case !ok:
		r.Counters.RefusedIn.Add(1)
		r.log.Warn("bridge: refused a message from the cloud outside every in rule", "remote", r.Name, "topic", pk.TopicName)
	case !r.allowedIn(topic):
		r.Counters.RefusedIn.Add(1)
		r.log.Warn("bridge: refused a message from the cloud the bridge class may not publish", "remote", r.Name,
			"topic", topic, "principal", r.Principal(), "class", r.cfg.Class)
	default:
		local := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: min(pk.FixedHeader.Qos, 1), Retain: pk.FixedHeader.Retain},
			TopicName: topic, Payload: pk.Payload, PacketID: 1}
		local.Properties.ContentType = pk.Properties.ContentType
		if err := r.inject(local); err != nil {
			// Not acknowledged: the cloud sends it again after reconnect.
			return fmt.Errorf("publish a cloud message locally: %w", err)
		}
		r.Counters.Received.Add(1)
	}
	if pk.FixedHeader.Qos > 0 {
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: r.version, PacketID: pk.PacketID}
		if err := c.write(&ack, true); err != nil {
			return fmt.Errorf("write PUBACK: %w", err)
		}
	}
	return nil
}

func connackReason(version, code byte) string {
	if version == 5 {
		return fmt.Sprintf("0x%02x %s", code, packets.Code{Code: code}.Reason)
	}
	switch code {
	case 1:
		return "1 (unacceptable protocol version)"
	case 2:
		return "2 (identifier rejected)"
	case 3:
		return "3 (server unavailable)"
	case 4:
		return "4 (bad user name or password)"
	case 5:
		return "5 (not authorized: check the client certificate and the broker's ACL)"
	}
	return fmt.Sprint(code)
}

// memQueueBytes bounds the payload bytes of one remote's QoS 0 buffer, beside
// its message count (bridge.queue.memory_messages).
const memQueueBytes = 4 << 20

// memQueue is a remote's bounded in-memory buffer of QoS 0 messages.
type memQueue struct {
	mu      sync.Mutex
	q       []Message
	bytes   int
	max     int
	sig     chan struct{}
	dropped *atomic.Uint64
}

func newMemQueue(max int, dropped *atomic.Uint64) *memQueue {
	return &memQueue{max: max, sig: make(chan struct{}, 1), dropped: dropped}
}

func (m *memQueue) push(msg Message) {
	m.mu.Lock()
	if m.max == 0 || len(msg.Payload) > memQueueBytes {
		m.mu.Unlock()
		m.dropped.Add(1)
		return
	}
	for len(m.q) > 0 && (len(m.q) >= m.max || m.bytes+len(msg.Payload) > memQueueBytes) {
		m.bytes -= len(m.q[0].Payload)
		m.q = m.q[1:]
		m.dropped.Add(1)
	}
	m.q = append(m.q, msg)
	m.bytes += len(msg.Payload)
	m.mu.Unlock()
	select {
	case m.sig <- struct{}{}:
	default:
	}
}

func (m *memQueue) ready() <-chan struct{} { return m.sig }

func (m *memQueue) take() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.q
	m.q, m.bytes = nil, 0
	return q
}

func (m *memQueue) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.q)
}
