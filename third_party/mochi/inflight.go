// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]packets.Packet // internal contains the inflight packets
	order               map[uint16]uint64         // EdgeID: insertion sequence of each packet id
	seq                 uint64                    // EdgeID: the last sequence given
	held                *atomic.Int64             // EdgeID: the server's count of stored PUBRECs, or nil
	waiting             map[uint16]bool           // EdgeID: stored PUBLISHes waiting for send quota
	receiveQuota        int32                     // remaining inbound qos quota for flow control
	sendQuota           int32                     // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                     // maximum allowed receive quota
	maximumSendQuota    int32                     // maximum allowed send quota
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight { return newInflights(nil) }

// EdgeID: the maps are made by the first write (reading a nil map is
// reading an empty one): most sessions never hold an inflight message, and
// three empty maps were ~150 bytes of every idle session.
func newInflights(held *atomic.Int64) *Inflight {
	return &Inflight{held: held}
}

// countHeld adds d to the server's PUBREC count for a packet of type t.
func (i *Inflight) countHeld(t byte, d int64) {
	if i.held != nil && t == packets.Pubrec {
		i.held.Add(d)
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	if i.internal == nil {
		i.internal, i.order = map[uint16]packets.Packet{}, map[uint16]uint64{}
	}
	old, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	if !ok {
		i.seq++
		i.order[m.PacketID] = i.seq
		i.countHeld(m.FixedHeader.Type, 1)
	} else if old.FixedHeader.Type != m.FixedHeader.Type {
		i.countHeld(old.FixedHeader.Type, -1)
		i.countHeld(m.FixedHeader.Type, 1)
	}
	return !ok
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := newInflights(i.held)
	i.RLock()
	defer i.RUnlock()
	if len(i.internal) > 0 {
		c.internal, c.order = make(map[uint16]packets.Packet, len(i.internal)), make(map[uint16]uint64, len(i.internal))
	}
	if len(i.waiting) > 0 {
		c.waiting = make(map[uint16]bool, len(i.waiting))
	}
	for k, v := range i.internal {
		c.internal[k] = v
		c.order[k] = i.order[k]
		c.countHeld(v.FixedHeader.Type, 1)
		if i.waiting[k] {
			c.waiting[k] = true
		}
	}
	c.seq = i.seq
	return c
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || i.waiting[v.PacketID] {
			m = append(m, v)
		}
	}

	// EdgeID: in the order they were stored. Upstream sorted by
	// uint16(Created), seconds truncated to 16 bits, so queued messages were
	// resent out of order within a second and whenever the clock wrapped.
	sort.Slice(m, func(a, b int) bool {
		return i.order[m[a].PacketID] < i.order[m[b].PacketID]
	})

	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	// EdgeID: GetAll takes the read lock itself; taking it twice deadlocks
	// once a writer waits in between.
	m := i.GetAll(true)
	if len(m) > 0 {
		return m[0], true
	}

	return packets.Packet{}, false
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	old, ok := i.internal[id]
	delete(i.internal, id)
	delete(i.order, id)
	delete(i.waiting, id)
	if ok {
		i.countHeld(old.FixedHeader.Type, -1)
	}

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}

// EdgeID: a PUBLISH waiting for send quota was marked by upstream with
// Expiry -1, which lost its Message Expiry; it is a flag of its own here.

// SetWaiting marks (or unmarks) a stored packet as waiting for send quota.
func (i *Inflight) SetWaiting(id uint16, w bool) {
	i.Lock()
	defer i.Unlock()
	if _, ok := i.internal[id]; !ok {
		return
	}
	if w {
		if i.waiting == nil {
			i.waiting = map[uint16]bool{}
		}
		i.waiting[id] = true
	} else {
		delete(i.waiting, id)
	}
}

// IsWaiting reports whether a stored packet waits for send quota.
func (i *Inflight) IsWaiting(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	return i.waiting[id]
}

// CountType is how many stored packets are of type t.
func (i *Inflight) CountType(t byte) int {
	i.RLock()
	defer i.RUnlock()
	n := 0
	for _, v := range i.internal {
		if v.FixedHeader.Type == t {
			n++
		}
	}
	return n
}

// Oldest is the first stored packet of type t, without copying the rest.
func (i *Inflight) Oldest(t byte) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()
	var best packets.Packet
	var seq uint64
	found := false
	for k, v := range i.internal {
		if v.FixedHeader.Type == t && (!found || i.order[k] < seq) {
			best, seq, found = v, i.order[k], true
		}
	}
	return best, found
}

// SendQuota is the send quota left (for resends, EdgeID).
func (i *Inflight) SendQuota() (left, max int32) {
	return atomic.LoadInt32(&i.sendQuota), atomic.LoadInt32(&i.maximumSendQuota)
}
