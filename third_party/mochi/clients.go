// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/xid"

	"github.com/mochi-mqtt/server/v2/packets"
)

const (
	defaultKeepalive             uint16 = 10 // the default connection keepalive value in seconds.
	defaultClientProtocolVersion byte   = 4  // the default mqtt protocol version of connecting clients (if somehow unspecified).
	minimumKeepalive             uint16 = 5  // the minimum recommended keepalive - values under with display a warning.
)

var (
	ErrMinimumKeepalive = errors.New("client keepalive is below minimum recommended value and may exhibit connection instability")
)

// ReadFn is the function signature for the function used for reading and processing new packets.
type ReadFn func(*Client, packets.Packet) error

// Clients contains a map of the clients known by the broker.
type Clients struct {
	internal map[string]*Client // clients known by the broker, keyed on client id.
	sync.RWMutex
}

// NewClients returns an instance of Clients.
func NewClients() *Clients {
	return &Clients{
		internal: make(map[string]*Client),
	}
}

// Add adds a new client to the clients map, keyed on client id.
func (cl *Clients) Add(val *Client) {
	cl.Lock()
	defer cl.Unlock()
	cl.internal[val.ID] = val
}

// GetAll returns all the clients.
func (cl *Clients) GetAll() map[string]*Client {
	cl.RLock()
	defer cl.RUnlock()
	m := map[string]*Client{}
	for k, v := range cl.internal {
		m[k] = v
	}
	return m
}

// Get returns the value of a client if it exists.
func (cl *Clients) Get(id string) (*Client, bool) {
	cl.RLock()
	defer cl.RUnlock()
	val, ok := cl.internal[id]
	return val, ok
}

// Len returns the length of the clients map.
func (cl *Clients) Len() int {
	cl.RLock()
	defer cl.RUnlock()
	val := len(cl.internal)
	return val
}

// Delete removes a client from the internal map.
func (cl *Clients) Delete(id string) {
	cl.Lock()
	defer cl.Unlock()
	delete(cl.internal, id)
}

// GetByListener returns clients matching a listener id.
func (cl *Clients) GetByListener(id string) []*Client {
	cl.RLock()
	defer cl.RUnlock()
	clients := make([]*Client, 0, len(cl.internal)) // EdgeID: not cl.Len(), a second read lock: it deadlocks once a writer waits
	for _, client := range cl.internal {
		if client.Net.Listener == id && !client.Closed() {
			clients = append(clients, client)
		}
	}
	return clients
}

// Client contains information about a client known by the broker.
type Client struct {
	Properties   ClientProperties // client properties
	State        ClientState      // the operational state of the client.
	Net          ClientConnection // network connection state of the client
	ID           string           // the client id.
	ops          *ops             // ops provides a reference to server ops.
	sync.RWMutex                  // mutex
}

// ClientConnection contains the connection transport and metadata for the client.
type ClientConnection struct {
	Conn     net.Conn      // the net.Conn used to establish the connection
	bconn    *bufio.Reader // a buffered net.Conn for reading packets
	outbuf   *bytes.Buffer // a buffer for writing packets
	Remote   string        // the remote address of the client
	Listener string        // listener id of the client
	Inline   bool          // if true, the client is the built-in 'inline' embedded client
	lastRaw  []byte        // EdgeID: the packet being decoded, for a panic's digest
	// EdgeID: raw is the socket of a connection that can be waited on for
	// readability (see waitReadable); its bconn is taken from the server's
	// pool while a packet is read and given back when nothing is buffered.
	raw syscall.RawConn
	// EdgeID: tls is a TLS connection, which waits for its next packet in a
	// 1-byte read of the connection itself (first), with its bconn given
	// back like a socket's; see waitReadable.
	tls      bool
	first    [1]byte
	hasFirst bool
}

// waits reports whether the connection waits for its next packet without a
// read buffer (a socket or a TLS connection; EdgeID, see waitReadable).
func (c *ClientConnection) waits() bool { return c.raw != nil || c.tls }

// ClientProperties contains the properties which define the client behaviour.
type ClientProperties struct {
	Props           packets.Properties
	Will            Will
	Username        []byte
	ProtocolVersion byte
	Clean           bool
}

// Will contains the last will and testament details for a client connection.
type Will struct {
	Payload           []byte                 // -
	User              []packets.UserProperty // -
	TopicName         string                 // -
	Flag              uint32                 // 0,1
	WillDelayInterval uint32                 // -
	Qos               byte                   // -
	Retain            bool                   // -
}

// ClientState tracks the state of the client.
type ClientState struct {
	TopicAliases    TopicAliases       // a map of topic aliases
	stopCause       atomic.Value       // reason for stopping
	Inflight        *Inflight          // a map of in-flight qos messages
	Subscriptions   *Subscriptions     // a map of the subscription filters a client maintains
	disconnected    int64              // the time the client disconnected in unix time, for calculating expiry
	outbound        outboundQueue      // EdgeID: queue for pending outbound packets, allocated on demand (outbound.go)
	endOnce         sync.Once          // only end once
	isTakenOver     atomic.Bool        // used to identify orphaned clients
	packetID        uint32             // the current highest packetID
	open            context.Context    // indicate that the client is open for packet exchange
	cancelOpen      context.CancelFunc // cancel function for open context
	outboundQty     int32              // number of messages currently in the outbound queue
	Keepalive       uint16             // the number of seconds the connection can wait
	ServerKeepalive bool               // keepalive was set by the server
}

// newClient returns a new instance of Client. This is almost exclusively used by Server
// for creating new clients, but it lives here because it's not dependent.
func newClient(c net.Conn, o *ops) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Client{
		State: ClientState{
			Inflight:      newInflights(o.held),
			Subscriptions: NewSubscriptions(),
			TopicAliases:  NewTopicAliases(o.options.Capabilities.TopicAliasMaximum),
			open:          ctx,
			cancelOpen:    cancel,
			Keepalive:     defaultKeepalive,
		},
		Properties: ClientProperties{
			ProtocolVersion: defaultClientProtocolVersion, // default protocol version
		},
		ops: o,
	}

	if c != nil {
		cl.Net = ClientConnection{
			Conn:   c,
			Remote: c.RemoteAddr().String(),
		}
		// EdgeID: a socket's read buffer is taken when a packet arrives
		// (waitReadable); other connections (TLS, pipes) keep theirs.
		if sc, ok := c.(syscall.Conn); ok && o.readers != nil && peekReadable != nil {
			if raw, err := sc.SyscallConn(); err == nil {
				cl.Net.raw = raw
			}
		}
		if _, ok := c.(*tls.Conn); ok && o.readers != nil {
			cl.Net.tls = true
		}
		if !cl.Net.waits() {
			cl.Net.bconn = bufio.NewReaderSize(c, o.options.ClientNetReadBufferSize)
		}
	}

	return cl
}

// WriteLoop is kept for callers of upstream's API. EdgeID: queued packets
// are written by a goroutine started when there is something to write
// (Client.writeQueued), so no goroutine waits on an idle connection's
// queue; WriteLoop only waits until the client is closed.
func (cl *Client) WriteLoop() {
	<-cl.State.open.Done()
}

// ParseConnect parses the connect parameters and properties for a client.
func (cl *Client) ParseConnect(lid string, pk packets.Packet) {
	cl.Net.Listener = lid

	cl.Properties.ProtocolVersion = pk.ProtocolVersion
	// EdgeID: what the client keeps of the CONNECT is copied: the decoder's
	// strings and slices point into the packet's buffer, which would be kept
	// for the session's life by any one of them, password or token included.
	// Nor is the CONNECT's Authentication Data kept (a credential: the hooks
	// have it in the packet).
	cl.Properties.Username = bytes.Clone(pk.Connect.Username)
	cl.Properties.Clean = pk.Connect.Clean
	cl.Properties.Props = pk.Properties.Copy(false)
	cl.Properties.Props.AuthenticationData = nil
	cl.Properties.Props.AuthenticationMethod = strings.Clone(pk.Properties.AuthenticationMethod)
	cl.Properties.Props.User = cloneUser(pk.Properties.User)

	if cl.Properties.Props.ReceiveMaximum > cl.ops.options.Capabilities.MaximumInflight { // 3.3.4 Non-normative
		cl.Properties.Props.ReceiveMaximum = cl.ops.options.Capabilities.MaximumInflight
	}

	if pk.Connect.Keepalive <= minimumKeepalive {
		cl.ops.log.Warn(
			ErrMinimumKeepalive.Error(),
			"client", cl.ID,
			"keepalive", pk.Connect.Keepalive,
			"recommended", minimumKeepalive,
		)
	}

	cl.State.Keepalive = pk.Connect.Keepalive                                              // [MQTT-3.2.2-22]
	cl.State.Inflight.ResetReceiveQuota(int32(cl.ops.options.Capabilities.ReceiveMaximum)) // server receive max per client
	cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))            // client receive max
	cl.State.TopicAliases.Outbound = NewOutboundTopicAliases(cl.Properties.Props.TopicAliasMaximum)

	cl.ID = strings.Clone(pk.Connect.ClientIdentifier) // EdgeID: not a slice of the CONNECT
	if cl.ID == "" {
		cl.ID = xid.New().String() // [MQTT-3.1.3-6] [MQTT-3.1.3-7]
		cl.Properties.Props.AssignedClientID = cl.ID
	}

	if pk.Connect.WillFlag {
		cl.Properties.Will = Will{
			Qos:               pk.Connect.WillQos,
			Retain:            pk.Connect.WillRetain,
			Payload:           bytes.Clone(pk.Connect.WillPayload), // EdgeID: not a slice of the CONNECT
			TopicName:         strings.Clone(pk.Connect.WillTopic), // EdgeID: not a slice of the CONNECT
			WillDelayInterval: pk.Connect.WillProperties.WillDelayInterval,
			User:              cloneUser(pk.Connect.WillProperties.User),
		}
		if pk.Properties.SessionExpiryIntervalFlag &&
			pk.Properties.SessionExpiryInterval < pk.Connect.WillProperties.WillDelayInterval {
			cl.Properties.Will.WillDelayInterval = pk.Properties.SessionExpiryInterval
		}
		if pk.Connect.WillFlag {
			cl.Properties.Will.Flag = 1 // atomic for checking
		}
	}
}

// cloneUser copies user properties out of a packet's buffer (EdgeID).
func cloneUser(u []packets.UserProperty) []packets.UserProperty {
	if len(u) == 0 {
		return nil
	}
	out := make([]packets.UserProperty, len(u))
	for i, p := range u {
		out[i] = packets.UserProperty{Key: strings.Clone(p.Key), Val: strings.Clone(p.Val)}
	}
	return out
}

// refreshDeadline refreshes the read/write deadline for the net.Conn connection.
func (cl *Client) refreshDeadline(keepalive uint16) {
	var expiry time.Time // nil time can be used to disable deadline if keepalive = 0
	if keepalive > 0 {
		expiry = time.Now().Add(time.Duration(keepalive+(keepalive/2)) * time.Second) // [MQTT-3.1.2-22]
	}

	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetDeadline(expiry) // [MQTT-3.1.2-22]
	}
}

// NextPacketID returns the next available (unused) packet id for the client.
// If no unused packet ids are available, an error is returned and the client
// should be disconnected.
func (cl *Client) NextPacketID() (i uint32, err error) {
	cl.Lock()
	defer cl.Unlock()

	i = atomic.LoadUint32(&cl.State.packetID)
	started := i
	overflowed := false
	for {
		if overflowed && i == started {
			return 0, packets.ErrQuotaExceeded
		}

		if i >= cl.ops.options.Capabilities.maximumPacketID {
			overflowed = true
			i = 0
			continue
		}

		i++

		if _, ok := cl.State.Inflight.Get(uint16(i)); !ok {
			atomic.StoreUint32(&cl.State.packetID, i)
			return i, nil
		}
	}
}

// ResendInflightMessages attempts to resend any pending inflight messages to connected clients.
func (cl *Client) ResendInflightMessages(force bool) error {
	if cl.State.Inflight.Len() == 0 {
		return nil
	}

	for _, tk := range cl.State.Inflight.GetAll(false) {
		if tk.FixedHeader.Type == packets.Publish {
			tk.FixedHeader.Dup = true // [MQTT-3.3.1-1] [MQTT-3.3.1-3]

			// EdgeID: a resent PUBLISH goes out only if the (new) session may
			// still receive it; what it may not is discarded, never sent.
			if !cl.deliverable(tk) {
				continue
			}
			// EdgeID: and only as many as the client's Receive Maximum
			// allows; the rest wait for quota as new messages do (upstream
			// wrote the whole queue at once, MQTT 5 §4.9).
			cl.State.Inflight.Set(tk) // keep the DUP flag for a later send
			if left, max := cl.State.Inflight.SendQuota(); max > 0 && left <= 0 {
				cl.State.Inflight.SetWaiting(tk.PacketID, true)
				continue
			}
			cl.State.Inflight.SetWaiting(tk.PacketID, false)
			cl.State.Inflight.DecreaseSendQuota()
		}

		cl.ops.hooks.OnQosPublish(cl, tk, tk.Created, 0)
		err := cl.writeRecovered(tk) // EdgeID: a panic encoding a resend closes this client only
		if err != nil {
			return err
		}

		if tk.FixedHeader.Type == packets.Puback || tk.FixedHeader.Type == packets.Pubcomp {
			if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosComplete(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
			}
		}
	}

	return nil
}

// ClearInflights deletes all inflight messages for the client, e.g. for a disconnected user with a clean session.
func (cl *Client) ClearInflights() {
	for _, tk := range cl.State.Inflight.GetAll(false) {
		if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
			cl.ops.hooks.OnQosDropped(cl, tk)
			atomic.AddInt64(&cl.ops.info.Inflight, -1)
		}
	}
}

// ClearExpiredInflights deletes any inflight messages which have expired.
func (cl *Client) ClearExpiredInflights(now, maximumExpiry int64) []uint16 {
	deleted := []uint16{}
	for _, tk := range cl.State.Inflight.GetAll(false) {
		expired := tk.ProtocolVersion == 5 && tk.Expiry > 0 && tk.Expiry < now // [MQTT-3.3.2-5]

		// If the maximum message expiry interval is set (greater than 0), and the message
		// retention period exceeds the maximum expiry, the message will be forcibly removed.
		enforced := maximumExpiry > 0 && now-tk.Created > maximumExpiry

		if expired || enforced {
			if ok := cl.State.Inflight.Delete(tk.PacketID); ok {
				cl.ops.hooks.OnQosDropped(cl, tk)
				atomic.AddInt64(&cl.ops.info.Inflight, -1)
				deleted = append(deleted, tk.PacketID)
			}
		}
	}

	return deleted
}

// Read reads incoming packets from the connected client and transforms them into
// packets to be handled by the packetHandler.
//
// EdgeID: the goroutine that calls Read lasts as long as the connection, and
// the runtime never gives back the stack a goroutine grew while its wait
// needs more than a quarter of it; handling one packet (readOne alone is
// ~1.6 KB) grew it past the first 2 KiB for good. So a socket connection
// (Net.raw) only waits here, shallow (waitReadable, no read buffer), and
// what arrives is read and handled by readBurst on a goroutine of its own,
// waited for, until the read buffer is empty: an idle session holds 2 KiB
// of stack whether or not it has sent a packet (PINGREQs included), at the
// price of starting a goroutine per burst of packets. A TLS connection may
// hold decrypted bytes the socket no longer shows, so its readability
// cannot be asked of the socket: it waits in a 1-byte read of the TLS
// connection instead (waitFirstByte), and its bursts are read the same way.
// Other connections (pipes) read in place (readPackets), as upstream.
// Upstream waited about 6 KB deep, under two frames holding packets.Packet
// values, which kept 16 KB per connection.
//
// A panic while decoding or handling one client's packet ends that client's
// connection, never the process; it is logged once with the client and a
// digest of the packet (recoverRead).
func (cl *Client) Read(packetHandler ReadFn) error {
	if !cl.Net.waits() {
		_, err := cl.readPackets(packetHandler, false)
		return err
	}
	for {
		if cl.Closed() {
			return nil
		}
		// The read deadline for this wait was set by the burst before it,
		// or for the first by the CONNECT's goroutine (acceptConn).
		if err := cl.waitReadable(); err != nil {
			return err
		}
		if done, err := cl.readBurst(packetHandler); done || err != nil {
			return err
		}
	}
}

// readBurst runs readPackets for the packets that have arrived on a
// goroutine of its own and waits for it (EdgeID: see Read). done: the
// client is closed, or err ends it.
//
//go:noinline
func (cl *Client) readBurst(packetHandler ReadFn) (done bool, err error) {
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done, err = cl.readPackets(packetHandler, true)
	}()
	<-finished
	return done || err != nil, err
}

// readPackets reads and handles packets until the client is closed or a
// read or a handler fails; with burst, only until its read buffer is empty
// (done false). A burst sets the read deadline after each packet, for the
// next one or the wait that follows; its first packet's was set before the
// wait (EdgeID: see Read).
func (cl *Client) readPackets(packetHandler ReadFn, burst bool) (done bool, err error) {
	var fh packets.FixedHeader
	defer cl.recoverRead(&fh, &err)
	for {
		if cl.Closed() {
			return true, nil
		}
		fh = packets.FixedHeader{}
		if !burst {
			cl.refreshDeadline(cl.State.Keepalive)
		}
		if err = cl.ReadFixedHeader(&fh); err != nil {
			return true, err
		}
		if err = cl.readOne(&fh, packetHandler); err != nil {
			return true, err
		}
		if burst {
			cl.refreshDeadline(cl.State.Keepalive)
			if cl.Net.bconn == nil || cl.Net.bconn.Buffered() == 0 {
				return false, nil
			}
		}
	}
}

// waitReadable waits, for a socket or TLS connection with nothing
// buffered, until the socket has bytes to read (a TLS connection: until
// the first byte of the next packet is read, waitFirstByte) or its deadline
// passes or it is closed, without a read buffer: the buffer goes back to
// the server's pool while the connection is idle, and the wait is shallower
// than a read (EdgeID). Other connections return at once and are read as
// upstream.
func (cl *Client) waitReadable() error {
	if !cl.Net.waits() {
		return nil
	}
	if b := cl.Net.bconn; b != nil {
		if b.Buffered() > 0 {
			return nil
		}
		cl.releaseReader()
	}
	if cl.Net.raw == nil {
		return cl.waitFirstByte()
	}
	return cl.Net.raw.Read(peekReadable)
}

// waitFirstByte waits for a TLS connection's next packet by reading its
// first byte from the connection itself, without a read buffer (EdgeID).
// The TLS library decrypts a whole record and keeps what is left of it for
// the next read, which the burst makes through a buffer from the pool.
//
// A panic in the TLS library ends this client, never the process, as one
// while reading a packet does (recoverRead).
//
//go:noinline
func (cl *Client) waitFirstByte() (err error) {
	var fh packets.FixedHeader
	defer cl.recoverRead(&fh, &err)
	n, err := cl.Net.Conn.Read(cl.Net.first[:])
	if n == 1 {
		cl.Net.hasFirst = true
		return nil // an error with the byte comes again at the next read
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// releaseReader gives the client's read buffer back to the server's pool
// (EdgeID). Apart from waitReadable, whose frame is under the idle wait, so
// that the pool's code takes no room there.
//
//go:noinline
func (cl *Client) releaseReader() {
	cl.Net.bconn.Reset(nil)
	cl.ops.readers.Put(cl.Net.bconn)
	cl.Net.bconn = nil
}

// reader is the client's read buffer, taken from the server's pool for a
// socket connection that had given it back (EdgeID); nil when the client has
// no connection.
func (cl *Client) reader() *bufio.Reader {
	if cl.Net.bconn == nil && cl.Net.waits() {
		b, _ := cl.ops.readers.Get().(*bufio.Reader)
		if b == nil || b.Size() != cl.ops.options.ClientNetReadBufferSize {
			b = bufio.NewReaderSize(nil, cl.ops.options.ClientNetReadBufferSize)
		}
		b.Reset(cl.Net.Conn)
		cl.Net.bconn = b
	}
	return cl.Net.bconn
}

// ErrPacketPanicked ends a connection whose packet made the decoder or a
// handler panic.
var ErrPacketPanicked = errors.New("packet handling panicked; connection closed")

// readOne reads the body of the packet whose fixed header is fh, decodes it
// and hands it to packetHandler (EdgeID: apart from Read, see there).
//
//go:noinline
func (cl *Client) readOne(fh *packets.FixedHeader, packetHandler ReadFn) error {
	pk, err := cl.ReadPacket(fh)
	if err == nil {
		err = packetHandler(cl, pk) // Process inbound packet.
	}
	cl.Net.lastRaw = nil
	return err
}

// recoverRead, deferred by Read, turns a panic while reading or handling a
// packet into ErrPacketPanicked for this client (EdgeID).
func (cl *Client) recoverRead(fh *packets.FixedHeader, err *error) {
	r := recover()
	if r == nil {
		return
	}
	sum := sha256.Sum256(cl.Net.lastRaw)
	cl.ops.log.Error("packet handling panicked; connection closed", "client", cl.ID, "remote", cl.Net.Remote,
		"type", fh.Type, "size", fh.Remaining, "packet_sha256", hex.EncodeToString(sum[:]),
		"panic", fmt.Sprint(r), "stack", truncate(string(debug.Stack()), 2048))
	cl.Net.lastRaw = nil
	*err = ErrPacketPanicked
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// deliverable reports whether a PUBLISH queued for cl may still be written
// to it (EdgeID). Other packets always may. A PUBLISH refused here is
// discarded: removed from inflight with its send quota given back.
func (cl *Client) deliverable(pk packets.Packet) bool {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return true
	}
	// A message past its Message Expiry is not sent, even if the periodic
	// sweep has not removed it yet [MQTT-3.3.2-5].
	expired := pk.ProtocolVersion == 5 && pk.Expiry > 0 && pk.Expiry < time.Now().Unix()
	if !expired && cl.ops.hooks.OnACLCheck(cl, pk.TopicName, false) {
		return true
	}
	if pk.FixedHeader.Qos > 0 {
		cl.DiscardInflight(pk)
		cl.ops.hooks.OnQosDropped(cl, pk)
	}
	cl.ops.hooks.OnPublishDropped(cl, pk)
	return false
}

// DiscardInflight removes a stored outbound message that will not be sent
// (EdgeID). A message that held send quota gives it back; one that was
// waiting for quota never held any.
func (cl *Client) DiscardInflight(pk packets.Packet) bool {
	waiting := cl.State.Inflight.IsWaiting(pk.PacketID)
	if !cl.State.Inflight.Delete(pk.PacketID) {
		return false
	}
	atomic.AddInt64(&cl.ops.info.Inflight, -1)
	if !waiting {
		cl.State.Inflight.IncreaseSendQuota()
	}
	return true
}

// writeRecovered is WritePacket for the write loop (EdgeID): a panic while
// encoding one packet closes that client, never the process.
func (cl *Client) writeRecovered(pk packets.Packet) (err error) {
	defer func() {
		if r := recover(); r != nil {
			cl.ops.log.Error("packet encoding panicked; connection closed", "client", cl.ID, "remote", cl.Net.Remote,
				"type", pk.FixedHeader.Type, "panic", fmt.Sprint(r), "stack", truncate(string(debug.Stack()), 2048))
			cl.Stop(ErrPacketPanicked)
			err = ErrPacketPanicked
		}
	}()
	return cl.WritePacket(pk)
}

// Stop instructs the client to shut down all processing goroutines and disconnect.
func (cl *Client) Stop(err error) {
	cl.State.endOnce.Do(func() {

		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.Close() // omit close error
		}

		if err != nil {
			cl.State.stopCause.Store(err)
		}

		if cl.State.cancelOpen != nil {
			cl.State.cancelOpen()
		}

		atomic.StoreInt64(&cl.State.disconnected, time.Now().Unix())
	})
}

// StopCause returns the reason the client connection was stopped, if any.
func (cl *Client) StopCause() error {
	if cl.State.stopCause.Load() == nil {
		return nil
	}
	return cl.State.stopCause.Load().(error)
}

// StopTime returns the the time the client disconnected in unix time, else zero.
func (cl *Client) StopTime() int64 {
	return atomic.LoadInt64(&cl.State.disconnected)
}

// Closed returns true if client connection is closed.
func (cl *Client) Closed() bool {
	return cl.State.open == nil || cl.State.open.Err() != nil
}

func (cl *Client) IsTakenOver() bool {
	return cl.State.isTakenOver.Load()
}

// ReadFixedHeader reads in the values of the next packet's fixed header.
func (cl *Client) ReadFixedHeader(fh *packets.FixedHeader) error {
	if cl.reader() == nil {
		return ErrConnectionClosed
	}

	var b byte
	var err error
	if cl.Net.hasFirst { // EdgeID: read by waitFirstByte
		b, cl.Net.hasFirst = cl.Net.first[0], false
	} else if b, err = cl.Net.bconn.ReadByte(); err != nil {
		return err
	}

	err = fh.Decode(b)
	if err != nil {
		return err
	}

	var bu int
	fh.Remaining, bu, err = packets.DecodeLength(cl.Net.bconn)
	if err != nil {
		return err
	}

	if cl.ops.options.Capabilities.MaximumPacketSize > 0 && uint32(fh.Remaining+1) > cl.ops.options.Capabilities.MaximumPacketSize {
		return packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(bu+1))
	return nil
}

// ReadPacket reads the remaining buffer into an MQTT packet.
func (cl *Client) ReadPacket(fh *packets.FixedHeader) (pk packets.Packet, err error) {
	atomic.AddInt64(&cl.ops.info.PacketsReceived, 1)

	pk.ProtocolVersion = cl.Properties.ProtocolVersion // inherit client protocol version for decoding
	pk.FixedHeader = *fh
	p := make([]byte, pk.FixedHeader.Remaining)
	n, err := io.ReadFull(cl.Net.bconn, p)
	if err != nil {
		return pk, err
	}

	atomic.AddInt64(&cl.ops.info.BytesReceived, int64(n))

	// EdgeID: p is the packet's own buffer, made above: upstream decoded a
	// second copy of it, an allocation per packet for nothing.
	px := p
	cl.Net.lastRaw = px // EdgeID: for the digest if decoding panics
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(px)
	case packets.Disconnect:
		err = pk.DisconnectDecode(px)
	case packets.Connack:
		err = pk.ConnackDecode(px)
	case packets.Publish:
		err = pk.PublishDecode(px)
		if err == nil {
			atomic.AddInt64(&cl.ops.info.MessagesReceived, 1)
		}
	case packets.Puback:
		err = pk.PubackDecode(px)
	case packets.Pubrec:
		err = pk.PubrecDecode(px)
	case packets.Pubrel:
		err = pk.PubrelDecode(px)
	case packets.Pubcomp:
		err = pk.PubcompDecode(px)
	case packets.Subscribe:
		err = pk.SubscribeDecode(px)
	case packets.Suback:
		err = pk.SubackDecode(px)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(px)
	case packets.Unsuback:
		err = pk.UnsubackDecode(px)
	case packets.Pingreq:
	case packets.Pingresp:
	case packets.Auth:
		err = pk.AuthDecode(px)
	default:
		err = fmt.Errorf("invalid packet type; %v", pk.FixedHeader.Type)
	}

	if err != nil {
		return pk, err
	}

	pk, err = cl.ops.hooks.OnPacketRead(cl, pk)
	return
}

// WritePacket encodes and writes a packet to the client.
func (cl *Client) WritePacket(pk packets.Packet) error {
	if cl.Closed() {
		return ErrConnectionClosed
	}

	if cl.Net.Conn == nil {
		return nil
	}

	if pk.Expiry > 0 {
		expiry := pk.Expiry - time.Now().Unix()
		if expiry < 1 {
			expiry = 1
		}
		pk.Properties.MessageExpiryInterval = uint32(expiry) // [MQTT-3.3.2-6]
	}

	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 { // NB we use this statement to embed client packet sizes in tests
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}

	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0x0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29] strict, no problem info on any packet if set
	}

	if pk.FixedHeader.Type != packets.Connack || cl.Properties.Props.RequestResponseInfo == 0x1 || cl.ops.options.Capabilities.Compatibilities.AlwaysReturnResponseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28] we need to know which properties we can encode
	}

	pk = cl.ops.hooks.OnPacketEncode(cl, pk)

	var err error
	buf := new(bytes.Buffer)
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(buf)
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("%w: %v", packets.ErrNoValidPacketAvailable, pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}

	if pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}

	n, err := func() (int64, error) {
		cl.Lock()
		defer cl.Unlock()
		if cl.Closed() {
			return 0, ErrConnectionClosed // EdgeID: nothing is written once the client is closed
		}
		if cl.State.outbound.Len() == 0 {
			if cl.Net.outbuf == nil {
				return buf.WriteTo(cl.Net.Conn)
			}

			// first write to buffer, then flush buffer
			n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
			err = cl.flushOutbuf()
			return int64(n), err
		}

		// there are more writes in the queue
		if cl.Net.outbuf == nil {
			if buf.Len() >= cl.ops.options.ClientNetWriteBufferSize {
				return buf.WriteTo(cl.Net.Conn)
			}
			cl.Net.outbuf = new(bytes.Buffer)
		}

		n, _ := cl.Net.outbuf.Write(buf.Bytes()) // will always be successful
		if cl.Net.outbuf.Len() < cl.ops.options.ClientNetWriteBufferSize {
			return int64(n), nil
		}

		err = cl.flushOutbuf()
		return int64(n), err
	}()
	if err != nil {
		return err
	}

	atomic.AddInt64(&cl.ops.info.BytesSent, n)
	atomic.AddInt64(&cl.ops.info.PacketsSent, 1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&cl.ops.info.MessagesSent, 1)
	}

	cl.ops.hooks.OnPacketSent(cl, pk, buf.Bytes())

	return err
}

func (cl *Client) flushOutbuf() (err error) {
	if cl.Net.outbuf == nil {
		return
	}

	_, err = cl.Net.outbuf.WriteTo(cl.Net.Conn)
	if err == nil {
		cl.Net.outbuf = nil
	}
	return
}
