package edge

import (
	"fmt"

	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/store"
)

// loadClassLimits hands the throttle every class record's own rate limits,
// so that no PUBLISH (MQTT or CoAP) reads the store to find them.
func loadClassLimits(st *store.Store, b *broker.Broker) error {
	cs, err := st.Classes()
	if err != nil {
		return fmt.Errorf("load class limits: %w", err)
	}
	m := map[string]throttle.ClassLimits{}
	for _, c := range cs {
		if c.Limits != nil {
			m[c.Name] = throttle.ClassLimits{Device: storeLimits(c.Limits.Device), Class: storeLimits(c.Limits.Class)}
		}
	}
	b.Throttle.SetClasses(m)
	return nil
}

// storeLimits are a class record's rates as the throttle takes them.
func storeLimits(r store.Rates) throttle.Limits {
	return throttle.Limits{Messages: throttle.Limit{Rate: r.MessagesPerSecond, Burst: r.MessageBurst},
		Bytes: throttle.Limit{Rate: r.BytesPerSecond, Burst: r.ByteBurst}}
}
