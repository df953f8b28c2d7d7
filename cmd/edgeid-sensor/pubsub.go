package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/spf13/pflag"
)

// pubsub is the throughput generator: P publisher/subscriber pairs, each
// subscriber on its own publisher's topic (devices/<prefix>pub-<i>/telemetry/lean),
// the publishers sending as fast as the broker takes it for a duration (or
// a fixed count each). It prints one JSON line: what was sent, acknowledged
// (QoS 1) and delivered, and delivered messages per second, the time taken
// from the first PUBLISH to the last delivery seen.
//
// The default client writes PUBLISH packets straight to the socket, many
// per write (QoS 0), or as many as the broker's Receive Maximum allows in
// flight (QoS 1); subscribers count PUBLISHes off a buffered reader and
// answer PUBACKs in batches. --client paho runs paho.golang clients instead,
// to compare.
func pubsub(ctx context.Context, args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("pubsub", pflag.ContinueOnError)
	addr := fs.String("broker", "127.0.0.1:1883", "broker MQTT address (plain TCP)")
	pairs := fs.Int("pairs", 8, "publisher/subscriber pairs")
	qos := fs.Int("qos", 0, "QoS of the publishes and subscriptions (0 or 1)")
	size := fs.Int("size", 64, "payload bytes")
	dur := fs.Duration("duration", 5*time.Second, "how long the publishers send (unless --messages)")
	messages := fs.Int("messages", 0, "each publisher sends this many and stops (0: as many as it can for --duration)")
	tokensFile := fs.String("tokens", "", `file of "client_id token" lines holding the clients' tokens (method ace)`)
	username := fs.String("username", "", `username to send; "{id}" is replaced by the client id`)
	password := fs.String("password", "", `password to send; "{id}" is replaced by the client id`)
	prefix := fs.String("id-prefix", "lean-", "client ids are <prefix>pub-<i> and <prefix>sub-<i>")
	sources := fs.Int("sources", 0, "spread the clients over this many loopback source addresses (127.1.0.1, ...); 0: the system's")
	drain := fs.Duration("drain", time.Second, "after the publishers stop, wait until nothing was delivered for this long")
	client := fs.String("client", "raw", "raw (packets written to the socket directly) or paho (paho.golang clients)")
	timeout := fs.Duration("timeout", 10*time.Second, "time allowed for each connection and subscription")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pairs < 1 || (*qos != 0 && *qos != 1) || *size < 0 || *messages < 0 || (*messages == 0 && *dur <= 0) || fs.NArg() > 0 ||
		(*client != "raw" && *client != "paho") || (*tokensFile != "" && (*username != "" || *password != "")) {
		return errUsage
	}
	var tokens map[string]string
	if *tokensFile != "" {
		var err error
		if tokens, _, err = readTokens(*tokensFile); err != nil {
			return err
		}
	}
	ps := &pubsubRun{addr: *addr, qos: byte(*qos), payload: bytes.Repeat([]byte{'x'}, *size), messages: *messages,
		dur: *dur, drain: *drain, sources: *sources, timeout: *timeout, pairs: make([]pairStats, *pairs)}
	for i := range ps.pairs {
		p := &ps.pairs[i]
		p.pub, p.sub = fmt.Sprintf("%spub-%d", *prefix, i), fmt.Sprintf("%ssub-%d", *prefix, i)
		p.topic = "devices/" + p.pub + "/telemetry/lean"
		var err error
		if p.pubCreds, err = credsFor(p.pub, tokens, *username, *password); err != nil {
			return err
		}
		if p.subCreds, err = credsFor(p.sub, tokens, *username, *password); err != nil {
			return err
		}
	}
	var err error
	if *client == "paho" {
		err = ps.runPaho(ctx)
	} else {
		err = ps.runRaw(ctx)
	}
	if err != nil {
		return err
	}
	res := ps.result(*addr, *client, *size)
	b, _ := json.Marshal(res)
	if _, err := fmt.Fprintf(out, "%s\n", b); err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return errRefused{fmt.Sprintf("%d client(s) failed: %s", len(res.Errors), res.Errors[0])}
	}
	return nil
}

// pairStats is one publisher, its subscriber and their counts.
type pairStats struct {
	pub, sub, topic    string
	pubCreds, subCreds creds
	sent, acked        atomic.Int64 // PUBLISHes written; PUBACKs with success
	failed             atomic.Int64 // PUBACKs with a failure reason code
	delivered          atomic.Int64 // PUBLISHes the subscriber read
}

type pubsubRun struct {
	addr     string
	qos      byte
	payload  []byte
	messages int
	dur      time.Duration
	drain    time.Duration
	sources  int
	timeout  time.Duration
	pairs    []pairStats

	start, pubEnd  time.Time
	lastDelivery   time.Time
	deliveredByEnd int64 // delivered when the publishers stopped

	// closing is set once the run is over: what the clients report after
	// it (their connections closing) is not a failure.
	closing atomic.Bool

	mu     sync.Mutex
	errors []string
}

func (ps *pubsubRun) fail(format string, a ...any) {
	if ps.closing.Load() {
		return
	}
	ps.mu.Lock()
	ps.errors = append(ps.errors, fmt.Sprintf(format, a...))
	ps.mu.Unlock()
}

func (ps *pubsubRun) totals() (sent, acked, failed, delivered int64) {
	for i := range ps.pairs {
		p := &ps.pairs[i]
		sent += p.sent.Load()
		acked += p.acked.Load()
		failed += p.failed.Load()
		delivered += p.delivered.Load()
	}
	return
}

// stopped records the end of the sending.
func (ps *pubsubRun) stopped() {
	ps.pubEnd = time.Now()
	_, _, _, ps.deliveredByEnd = ps.totals()
}

// wait blocks until every message is accounted for (QoS 1: acknowledged and
// delivered; --messages: all delivered) or until nothing has been delivered
// for drain, and records when the last delivery was seen.
func (ps *pubsubRun) wait(ctx context.Context) {
	_, _, _, last := ps.totals()
	ps.lastDelivery = time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		sent, acked, failed, delivered := ps.totals()
		now := time.Now()
		if delivered != last {
			last, ps.lastDelivery = delivered, now
		}
		if ps.qos > 0 && acked+failed == sent && delivered >= acked {
			return
		}
		if ps.qos == 0 && ps.messages > 0 && delivered == sent {
			return
		}
		if now.Sub(ps.lastDelivery) >= ps.drain || now.Sub(ps.pubEnd) > time.Minute {
			return
		}
	}
}

// pubsubResult is the JSON line pubsub prints.
type pubsubResult struct {
	Broker    string  `json:"broker"`
	Client    string  `json:"client"`
	Pairs     int     `json:"pairs"`
	QoS       int     `json:"qos"`
	Size      int     `json:"size"`
	PublishS  float64 `json:"publish_s"` // how long the publishers sent
	ElapsedS  float64 `json:"elapsed_s"` // first PUBLISH to the last delivery
	Sent      int64   `json:"sent"`
	Acked     int64   `json:"acked"`
	Failed    int64   `json:"failed"`
	Delivered int64   `json:"delivered"`
	SentPerS  float64 `json:"sent_per_s"`
	// DeliveredPerS is what the subscribers read while the publishers
	// sent, per second of sending: the broker's rate under full load.
	DeliveredPerS float64 `json:"delivered_per_s"`
	// DrainedPerS is all that was delivered over first PUBLISH to last
	// delivery: it includes the backlog the broker worked off after the
	// publishers stopped (what the sockets' buffers held).
	DrainedPerS float64 `json:"drained_per_s"`
	// ClientCPUS is the CPU time (user + system) this process used.
	ClientCPUS float64      `json:"client_cpu_s"`
	PerPair    []pairResult `json:"per_pair"`
	Errors     []string     `json:"errors,omitempty"`
}

type pairResult struct {
	Sent      int64 `json:"sent"`
	Delivered int64 `json:"delivered"`
}

func (ps *pubsubRun) result(addr, client string, size int) pubsubResult {
	sent, acked, failed, delivered := ps.totals()
	r := pubsubResult{Broker: addr, Client: client, Pairs: len(ps.pairs), QoS: int(ps.qos), Size: size,
		PublishS: ps.pubEnd.Sub(ps.start).Seconds(), Sent: sent, Acked: acked, Failed: failed, Delivered: delivered}
	end := ps.lastDelivery
	if end.Before(ps.pubEnd) {
		end = ps.pubEnd
	}
	r.ElapsedS = end.Sub(ps.start).Seconds()
	if r.PublishS > 0 {
		r.SentPerS = float64(sent) / r.PublishS
		r.DeliveredPerS = float64(ps.deliveredByEnd) / r.PublishS
	}
	if r.ElapsedS > 0 {
		r.DrainedPerS = float64(delivered) / r.ElapsedS
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.ClientCPUS = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	for i := range ps.pairs {
		r.PerPair = append(r.PerPair, pairResult{ps.pairs[i].sent.Load(), ps.pairs[i].delivered.Load()})
	}
	ps.mu.Lock()
	r.Errors = append(r.Errors, ps.errors...)
	ps.mu.Unlock()
	return r
}

// runRaw runs the pairs with bare connections.
func (ps *pubsubRun) runRaw(ctx context.Context) error {
	n := len(ps.pairs)
	subs, pubs := make([]*rawConn, n), make([]*rawConn, n)
	defer func() {
		for _, c := range append(subs, pubs...) {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range ps.pairs {
		p := &ps.pairs[i]
		c, err := dialRaw(ctx, ps.addr, sourceIP(2*i, ps.sources), p.sub, p.subCreds, 60, ps.timeout, nil)
		if err != nil {
			return fmt.Errorf("subscriber %s: %w", p.sub, err)
		}
		subs[i] = c
		if err := c.subscribe(p.topic, ps.qos, ps.timeout); err != nil {
			return fmt.Errorf("subscriber %s: %w", p.sub, err)
		}
		if pubs[i], err = dialRaw(ctx, ps.addr, sourceIP(2*i+1, ps.sources), p.pub, p.pubCreds, 60, ps.timeout, nil); err != nil {
			return fmt.Errorf("publisher %s: %w", p.pub, err)
		}
	}
	var readers, senders sync.WaitGroup
	closing := &ps.closing
	for i := range ps.pairs {
		readers.Add(1)
		go func(p *pairStats, c *rawConn) {
			defer readers.Done()
			if err := ps.subscriberLoop(p, c); !closing.Load() { // it returns when the connection ends
				ps.fail("subscriber %s: %v", p.sub, err)
			}
		}(&ps.pairs[i], subs[i])
	}
	ps.start = time.Now()
	stop := ps.start.Add(ps.dur)
	for i := range ps.pairs {
		senders.Add(1)
		go func(p *pairStats, c *rawConn) {
			defer senders.Done()
			var err error
			if ps.qos == 0 {
				err = ps.publishQoS0(ctx, p, c, stop)
			} else {
				err = ps.publishQoS1(ctx, p, c, stop, &readers, closing)
			}
			if err != nil && !closing.Load() {
				ps.fail("publisher %s: %v", p.pub, err)
			}
		}(&ps.pairs[i], pubs[i])
	}
	senders.Wait()
	ps.stopped()
	ps.wait(ctx)
	closing.Store(true)
	for _, c := range append(subs, pubs...) {
		_, _ = c.Write([]byte{ptDisconnect << 4, 0})
		c.Close()
	}
	readers.Wait()
	return nil
}

// subscriberLoop counts the PUBLISHes read and acknowledges QoS 1 ones,
// flushing the PUBACKs whenever the reader has no more bytes buffered,
// until the connection ends; it says how it ended.
func (ps *pubsubRun) subscriberLoop(p *pairStats, c *rawConn) error {
	w := bufio.NewWriterSize(c, 4096)
	var ack [4]byte
	for {
		if c.r.Buffered() == 0 && w.Buffered() > 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		typ, flags, rem, err := readHeader(c.r)
		if err != nil {
			return err
		}
		switch typ {
		case ptPublish:
			p.delivered.Add(1)
			if (flags>>1)&3 == 0 {
				if _, err := c.r.Discard(rem); err != nil {
					return err
				}
				continue
			}
			id, err := readPublishID(c.r, rem)
			if err != nil {
				return err
			}
			ack = [4]byte{ptPuback << 4, 2, byte(id >> 8), byte(id)}
			if _, err := w.Write(ack[:]); err != nil {
				return err
			}
		case ptDisconnect:
			return fmt.Errorf("DISCONNECT 0x%02x", disconnectCode(c.r, rem))
		default:
			if _, err := c.r.Discard(rem); err != nil {
				return err
			}
		}
	}
}

// disconnectCode reads a DISCONNECT's reason code (0 when it has none).
func disconnectCode(r *bufio.Reader, rem int) byte {
	if rem == 0 {
		return 0
	}
	b, _ := r.ReadByte()
	_, _ = r.Discard(rem - 1)
	return b
}

// publishQoS0 writes PUBLISHes as fast as the socket takes them, about
// 16 KiB a write.
func (ps *pubsubRun) publishQoS0(ctx context.Context, p *pairStats, c *rawConn, stop time.Time) error {
	pk, _ := publishPacket(p.topic, 0, ps.payload)
	batch := max(1, 16384/len(pk))
	buf := bytes.Repeat(pk, batch)
	// Anything the broker says (a DISCONNECT) ends the publisher.
	said := make(chan error, 1)
	go func() {
		for {
			typ, _, rem, err := readHeader(c.r)
			if err != nil {
				said <- err
				return
			}
			if typ == ptDisconnect {
				said <- fmt.Errorf("DISCONNECT 0x%02x", disconnectCode(c.r, rem))
				return
			}
			if _, err := c.r.Discard(rem); err != nil {
				said <- err
				return
			}
		}
	}()
	if ps.messages == 0 {
		// A write blocked on a full socket ends at the stop time; the
		// packet it leaves half written is not counted.
		_ = c.SetWriteDeadline(stop)
	}
	left := ps.messages
	for {
		k := batch
		if ps.messages > 0 {
			if left == 0 {
				return nil
			}
			k = min(k, left)
			left -= k
		} else if !time.Now().Before(stop) {
			return nil
		}
		select {
		case err := <-said:
			return err
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		n, err := c.Write(buf[:k*len(pk)])
		p.sent.Add(int64(n / len(pk)))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// publishQoS1 keeps up to the broker's Receive Maximum PUBLISHes in flight,
// writing as many as there are free slots at once; a reader takes the
// PUBACKs. It returns once the sending is over; the reader (in readers)
// runs until the connection is closed.
func (ps *pubsubRun) publishQoS1(ctx context.Context, p *pairStats, c *rawConn, stop time.Time, readers *sync.WaitGroup, closing *atomic.Bool) error {
	pk, idAt := publishPacket(p.topic, 1, ps.payload)
	window := min(c.recvMax, 65535)
	slots := make(chan struct{}, window)
	for range window {
		slots <- struct{}{}
	}
	var mu sync.Mutex
	inUse := make([]bool, 65536) // packet identifiers awaiting their PUBACK
	said := make(chan error, 1)
	readers.Add(1)
	go func() {
		defer readers.Done()
		var b [3]byte
		for {
			typ, _, rem, err := readHeader(c.r)
			if err == nil && typ == ptPuback && rem >= 2 {
				n := min(rem, 3)
				if _, err = io.ReadFull(c.r, b[:n]); err == nil {
					_, err = c.r.Discard(rem - n)
				}
				if err == nil {
					id := uint16(b[0])<<8 | uint16(b[1])
					if n == 3 && b[2] >= 0x80 {
						p.failed.Add(1)
					} else {
						p.acked.Add(1)
					}
					mu.Lock()
					was := inUse[id]
					inUse[id] = false
					mu.Unlock()
					if was { // a PUBACK for nothing in flight frees no slot
						slots <- struct{}{}
					}
					continue
				}
			} else if err == nil && typ == ptDisconnect {
				err = fmt.Errorf("DISCONNECT 0x%02x", disconnectCode(c.r, rem))
			} else if err == nil {
				_, err = c.r.Discard(rem)
				if err == nil {
					continue
				}
			}
			select {
			case said <- err:
			default:
			}
			if !closing.Load() && !errors.Is(err, net.ErrClosed) {
				ps.fail("publisher %s: %v", p.pub, err)
			}
			return
		}
	}()
	buf := make([]byte, 0, 64*len(pk))
	next := uint16(0)
	left := ps.messages
	var deadline <-chan time.Time
	if ps.messages == 0 {
		t := time.NewTimer(time.Until(stop))
		defer t.Stop()
		deadline = t.C
	}
	for ps.messages == 0 || left > 0 {
		select {
		case <-slots:
		case <-deadline:
			return nil
		case err := <-said:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		k := 1
	more:
		for k < 64 && (ps.messages == 0 || k < left) {
			select {
			case <-slots:
				k++
			default:
				break more
			}
		}
		buf = buf[:0]
		mu.Lock()
		for range k {
			for next++; next == 0 || inUse[next]; next++ {
			}
			inUse[next] = true
			pk[idAt], pk[idAt+1] = byte(next>>8), byte(next)
			buf = append(buf, pk...)
		}
		mu.Unlock()
		p.sent.Add(int64(k))
		if ps.messages > 0 {
			left -= k
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// runPaho runs the pairs with paho.golang clients: QoS 0 publishes one
// Publish call after another, QoS 1 one in flight per publisher.
func (ps *pubsubRun) runPaho(ctx context.Context) error {
	var clients []*paho.Client
	defer func() {
		for _, c := range clients {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}()
	dial := func(i int, id string, cr creds, onMsg func()) (*paho.Client, error) {
		d := net.Dialer{Timeout: ps.timeout}
		if src := sourceIP(i, ps.sources); src != nil {
			d.LocalAddr = &net.TCPAddr{IP: src}
		}
		conn, err := d.DialContext(ctx, "tcp", ps.addr)
		if err != nil {
			return nil, err
		}
		cfg := paho.ClientConfig{Conn: conn, OnClientError: func(err error) { ps.fail("%s: %v", id, err) },
			OnServerDisconnect: func(d *paho.Disconnect) { ps.fail("%s: DISCONNECT 0x%02x", id, d.ReasonCode) }}
		if onMsg != nil {
			cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) {
				onMsg()
				return true, nil
			}}
		}
		c := paho.NewClient(cfg)
		cp := &paho.Connect{ClientID: id, KeepAlive: 60, CleanStart: true}
		if cr.token != "" {
			cp.Properties = &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(cr.token)}
		}
		if cr.username != "" {
			cp.UsernameFlag, cp.Username = true, cr.username
		}
		if cr.password != "" {
			cp.PasswordFlag, cp.Password = true, []byte(cr.password)
		}
		cctx, cancel := context.WithTimeout(ctx, ps.timeout)
		defer cancel()
		ca, err := c.Connect(cctx, cp)
		if ca == nil {
			conn.Close()
			return nil, err
		}
		if ca.ReasonCode >= 0x80 {
			return nil, errConnack{"CONNECT", ca.ReasonCode}
		}
		clients = append(clients, c)
		return c, nil
	}
	pubs := make([]*paho.Client, len(ps.pairs))
	for i := range ps.pairs {
		p := &ps.pairs[i]
		s, err := dial(2*i, p.sub, p.subCreds, func() { p.delivered.Add(1) })
		if err != nil {
			return fmt.Errorf("subscriber %s: %w", p.sub, err)
		}
		sctx, cancel := context.WithTimeout(ctx, ps.timeout)
		sa, err := s.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: p.topic, QoS: ps.qos}}})
		cancel()
		if err != nil {
			return fmt.Errorf("subscriber %s: %w", p.sub, err)
		}
		if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
			return fmt.Errorf("subscriber %s: SUBACK %v", p.sub, sa.Reasons)
		}
		if pubs[i], err = dial(2*i+1, p.pub, p.pubCreds, nil); err != nil {
			return fmt.Errorf("publisher %s: %w", p.pub, err)
		}
	}
	ps.start = time.Now()
	stop := ps.start.Add(ps.dur)
	var wg sync.WaitGroup
	for i := range ps.pairs {
		wg.Add(1)
		go func(p *pairStats, c *paho.Client) {
			defer wg.Done()
			for j := 0; ps.messages == 0 || j < ps.messages; j++ {
				if ps.messages == 0 && !time.Now().Before(stop) || ctx.Err() != nil {
					return
				}
				p.sent.Add(1)
				r, err := c.Publish(ctx, &paho.Publish{Topic: p.topic, QoS: ps.qos, Payload: ps.payload})
				switch {
				case err != nil:
					ps.fail("publisher %s: %v", p.pub, err)
					return
				case ps.qos == 0:
				case r != nil && r.ReasonCode >= 0x80:
					p.failed.Add(1)
				default:
					p.acked.Add(1)
				}
			}
		}(&ps.pairs[i], pubs[i])
	}
	wg.Wait()
	ps.stopped()
	ps.wait(ctx)
	ps.closing.Store(true)
	return nil
}
