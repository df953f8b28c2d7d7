package broker

import (
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/store"
)

// classTable holds the class records' own limits, by class name, as the
// throttle takes them. Built once per store change: a PUBLISH pays one map
// lookup, never a store read.
type classTable map[string]struct{ device, class throttle.Limits }

func limitsOf(r store.Rates) throttle.Limits {
	return throttle.Limits{Messages: throttle.Limit{Rate: r.MessagesPerSecond, Burst: r.MessageBurst},
		Bytes: throttle.Limit{Rate: r.BytesPerSecond, Burst: r.ByteBurst}}
}

// over puts own over def rate by rate: a rate own leaves at 0 keeps def's.
func over(own, def throttle.Limits) throttle.Limits {
	if own.Messages.Rate > 0 {
		def.Messages = own.Messages
	}
	if own.Bytes.Rate > 0 {
		def.Bytes = own.Bytes
	}
	return def
}

// SetClassLimits replaces the class records' own limits (class name to
// limits; classes absent use the configured defaults). The gateway calls it
// at start and whenever a batch touching classes is applied; live sessions
// follow at their next PUBLISH.
func (b *Broker) SetClassLimits(m map[string]store.ClassLimits) {
	t := classTable{}
	for name, l := range m {
		e := struct{ device, class throttle.Limits }{limitsOf(l.Device), limitsOf(l.Class)}
		if e.device.Enabled() || e.class.Enabled() {
			t[name] = e
		}
	}
	if len(t) == 0 {
		t = nil // nothing to look up: keeps the no-limit fast path
	}
	b.classLimits.Store(&t)
}

// throttling reports whether any limit at all is set, so that a gateway
// without limits skips the session lookup and the clock on every PUBLISH.
func (b *Broker) throttling() bool {
	if b.Devices.Enabled() || b.Subjects.Enabled() || b.Classes.Enabled() {
		return true
	}
	t := b.classLimits.Load()
	return t != nil && *t != nil
}

// Throttle decides one PUBLISH of size payload bytes from device, of class,
// acting for subject ("" or the device itself: none), against every limit
// that applies: the device's own (its class record's limits.device, else
// throttle.device), the subject's (throttle.subject) and the class's, shared
// by all its devices (limits.class, else throttle.class). Limits are checked
// from the narrowest out and the first that refuses decides, so a message
// refused for one device does not use up what its owner or its class share
// with others. The MQTT throttle hook and CoAP both call it; the caller
// answers the verdict: Refuse with 0x97 (MQTT 5 QoS > 0), a drop or 4.29,
// counted in Counters.Throttled; Disconnect by ending the session with 0x96.
func (b *Broker) Throttle(device, class, subject string, size int) throttle.Verdict {
	if !b.throttling() {
		return throttle.Allow
	}
	var own struct{ device, class throttle.Limits }
	if t := b.classLimits.Load(); t != nil {
		own = (*t)[class]
	}
	now := b.Now()
	if v := b.Devices.CheckLimits(device, over(own.device, b.Devices.Limits()), size, now); v != throttle.Allow {
		return v
	}
	if subject != "" && subject != device {
		if v := b.Subjects.Check(subject, size, now); v != throttle.Allow {
			return v
		}
	}
	return b.Classes.CheckLimits(class, over(own.class, b.Classes.Limits()), size, now)
}
