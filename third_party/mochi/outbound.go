// SPDX-License-Identifier: MIT

package mqtt

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/mochi-mqtt/server/v2/packets"
)

// EdgeID: outboundQueue is a client's queue of packets waiting to be
// written, and the switch of the goroutine that writes them.
//
// Upstream made a channel of MaximumClientWritesPending slots for every
// client (64 KiB at the default of 8,192) and parked a WriteLoop goroutine on
// it for the whole connection. This queue holds nothing while it is empty:
// its ring is allocated by the first push, grows by doubling up to the count
// bound, and is released when the writer has drained it. A writer goroutine
// runs only while there is something to write: push reports that one must be
// started when none runs, and the writer stops when it finds the queue empty
// (Client.writeQueued). Both decisions are taken under mu, so a push racing
// with the writer's last pop is either popped by that writer or starts a new
// one; there is never more than one writer.
//
// Besides the count, the queue may be bounded in bytes
// (Capabilities.MaximumClientWritesPendingBytes): the memory its packets
// hold, which is what a slow subscriber makes the broker keep. The byte bound
// refuses QoS 0 packets only: QoS 1 and 2 ones are already bounded by the
// client's Receive Maximum and the server's MaximumInflight, and refusing
// one loses it (it is rolled back from inflight). They are counted in the
// bytes all the same. An empty queue always takes a packet, whatever its
// size, so a large message is delayed, never refused, by a subscriber that
// keeps up.
type outboundQueue struct {
	mu      sync.Mutex
	ring    []*packets.Packet // nil while empty
	head    int               // index of the oldest packet in ring
	n       int               // packets queued
	bytes   int64             // their queuedSize together
	writing bool              // a writer runs (or has been asked to start)
	qty     atomic.Int32      // n, for Len without mu
}

// packetOverhead is the size of the packet structure each queued message is
// (a copy per subscriber, as its payload).
const packetOverhead = int64(unsafe.Sizeof(packets.Packet{}))

// queuedSize is what a queued packet counts against the byte bound: the
// memory it holds, its structure, topic, payload and the variable-length
// properties a PUBLISH carries.
func queuedSize(pk *packets.Packet) int64 {
	p := &pk.Properties
	n := len(pk.TopicName) + len(pk.Payload) + len(p.ContentType) + len(p.ResponseTopic) + len(p.CorrelationData)
	for _, u := range p.User {
		n += len(u.Key) + len(u.Val)
	}
	return packetOverhead + int64(n)
}

// push queues pk unless that would pass maxCount packets or, for a QoS 0
// packet when maxBytes > 0, maxBytes bytes. start reports that no writer runs and the caller must start
// one (go Client.writeQueued); the queue then counts it as running.
func (q *outboundQueue) push(pk *packets.Packet, maxCount int32, maxBytes int64) (ok, start bool) {
	size := queuedSize(pk)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= max(int(maxCount), 1) || (maxBytes > 0 && pk.FixedHeader.Qos == 0 && q.n > 0 && q.bytes+size > maxBytes) {
		return false, false
	}
	if q.n == len(q.ring) {
		q.grow(max(int(maxCount), 1))
	}
	q.ring[(q.head+q.n)%len(q.ring)] = pk
	q.n++
	q.bytes += size
	q.qty.Store(int32(q.n))
	if !q.writing {
		q.writing = true
		start = true
	}
	return true, start
}

// grow doubles the ring (from 8), to at most limit slots, keeping the order.
func (q *outboundQueue) grow(limit int) {
	size := min(max(2*len(q.ring), 8), limit)
	ring := make([]*packets.Packet, size)
	for i := 0; i < q.n; i++ {
		ring[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	q.ring, q.head = ring, 0
}

// pop takes the oldest packet, or nil when the queue is empty; the writer
// still counts as running until idle says otherwise.
func (q *outboundQueue) pop() *packets.Packet {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil
	}
	pk := q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	q.bytes -= queuedSize(pk)
	q.qty.Store(int32(q.n))
	return pk
}

// idle stops the writer if the queue is (still) empty, releasing the ring;
// false means packets came in and the writer must go on.
func (q *outboundQueue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n > 0 {
		return false
	}
	q.ring, q.head, q.bytes = nil, 0, 0
	q.writing = false
	return true
}

// clear discards every queued packet and stops the writer (the client has
// closed); it returns how many were discarded.
func (q *outboundQueue) clear() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.n
	q.ring, q.head, q.n, q.bytes = nil, 0, 0, 0
	q.qty.Store(0)
	q.writing = false
	return n
}

// Len is the number of packets queued, not counting one being written.
func (q *outboundQueue) Len() int { return int(q.qty.Load()) }

// Cap is the ring's capacity: 0 while nothing is queued.
func (q *outboundQueue) Cap() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ring)
}

// Bytes is the size (topic + payload) of the packets queued.
func (q *outboundQueue) Bytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// enqueue queues a PUBLISH for cl and starts the writer if none runs; false
// when a bound refuses it (the caller drops it).
func (cl *Client) enqueue(pk *packets.Packet) bool {
	caps := cl.ops.options.Capabilities
	atomic.AddInt32(&cl.State.outboundQty, 1)
	ok, start := cl.State.outbound.push(pk, caps.MaximumClientWritesPending, caps.MaximumClientWritesPendingBytes)
	if !ok {
		atomic.AddInt32(&cl.State.outboundQty, -1)
		return false
	}
	if start {
		go cl.writeQueued()
	}
	return true
}

// writeQueued writes cl's queued packets in order until the queue is empty
// or cl is closed, then returns: the writer goroutine lives only while there
// is something to write. A queued PUBLISH is checked again before it is
// written (deliverable): the recipient's permission may have gone while it
// waited. Once cl is closed nothing more is written and what is left is
// discarded (QoS > 0 messages stay in inflight for a resumed session, as
// upstream).
func (cl *Client) writeQueued() {
	q := &cl.State.outbound
	for {
		if cl.Closed() {
			atomic.AddInt32(&cl.State.outboundQty, -int32(q.clear()))
			return
		}
		pk := q.pop()
		if pk == nil {
			// WritePacket buffers while more packets are queued; the last
			// one may have been refused below, so flush what it left.
			cl.flushQueued()
			if q.idle() {
				return
			}
			continue
		}
		if cl.deliverable(*pk) {
			if err := cl.writeRecovered(*pk); err != nil {
				cl.ops.log.Debug("failed publishing packet", "error", err, "client", cl.ID, "type", pk.FixedHeader.Type)
			}
		}
		atomic.AddInt32(&cl.State.outboundQty, -1)
	}
}

// flushQueued writes what WritePacket left in the client's write buffer.
func (cl *Client) flushQueued() {
	cl.Lock()
	defer cl.Unlock()
	if cl.Net.outbuf != nil && !cl.Closed() {
		_ = cl.flushOutbuf()
	}
}
