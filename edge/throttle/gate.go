package throttle

import (
	"sync/atomic"
	"time"
)

// ClassLimits are a class record's own limits: Device for each of its
// devices, Class for all of them together. A zero rate keeps the configured
// default.
type ClassLimits struct{ Device, Class Limits }

// Gate is the one rate decision for a PUBLISH, shared by every front end
// (MQTT's throttle hook, CoAP's publish): the device, subject and class
// throttles, with the configured limits as defaults, and the class records'
// own limits (SetClasses). A nil Gate, or one with no limit anywhere, allows
// everything.
type Gate struct {
	// Devices, Subjects and Classes throttle per device, per token subject
	// and per device class (all its devices together). nil or unlimited
	// throttles allow everything.
	Devices, Subjects, Classes *Throttle

	classes atomic.Pointer[classTable]
}

// classTable holds the class records' own limits, by class name. Built once
// per store change: a PUBLISH pays one map lookup, never a store read.
type classTable map[string]ClassLimits

// over puts own over def rate by rate: a rate own leaves at 0 keeps def's.
func over(own, def Limits) Limits {
	if own.Messages.Rate > 0 {
		def.Messages = own.Messages
	}
	if own.Bytes.Rate > 0 {
		def.Bytes = own.Bytes
	}
	return def
}

// SetClasses replaces the class records' own limits (class name to limits;
// classes absent use the configured defaults). The gateway calls it at start
// and whenever a batch touching classes is applied; live sessions follow at
// their next PUBLISH.
func (g *Gate) SetClasses(m map[string]ClassLimits) {
	t := classTable{}
	for name, l := range m {
		if l.Device.Enabled() || l.Class.Enabled() {
			t[name] = l
		}
	}
	if len(t) == 0 {
		t = nil // nothing to look up: keeps the no-limit fast path
	}
	g.classes.Store(&t)
}

// Enabled reports whether any limit at all is set, so that a gateway without
// limits skips the session lookup and the clock on every PUBLISH.
func (g *Gate) Enabled() bool {
	if g == nil {
		return false
	}
	if g.Devices.Enabled() || g.Subjects.Enabled() || g.Classes.Enabled() {
		return true
	}
	t := g.classes.Load()
	return t != nil && *t != nil
}

// Decide decides one PUBLISH of size payload bytes at now from device, of
// class, acting for subject ("" or the device itself: none), against every
// limit that applies: the device's own (its class record's limits.device,
// else throttle.device), the subject's (throttle.subject) and the class's,
// shared by all its devices (limits.class, else throttle.class). Limits are
// checked from the narrowest out and the first that refuses decides, so a
// message refused for one device does not use up what its owner or its class
// share with others. The caller answers the verdict: Refuse with 0x97 (MQTT 5
// QoS > 0), a drop or 4.29; Disconnect by ending the session with 0x96.
func (g *Gate) Decide(device, class, subject string, size int, now time.Time) Verdict {
	if !g.Enabled() {
		return Allow
	}
	var own ClassLimits
	if t := g.classes.Load(); t != nil {
		own = (*t)[class]
	}
	if v := g.Devices.CheckLimits(device, over(own.Device, g.Devices.Limits()), size, now); v != Allow {
		return v
	}
	if subject != "" && subject != device {
		if v := g.Subjects.Check(subject, size, now); v != Allow {
			return v
		}
	}
	return g.Classes.CheckLimits(class, over(own.Class, g.Classes.Limits()), size, now)
}
