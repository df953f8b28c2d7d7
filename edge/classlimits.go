package edge

import (
	"fmt"

	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/store"
)

// loadClassLimits hands the broker every class record's own rate limits, so
// that no PUBLISH reads the store to find them.
func loadClassLimits(st *store.Store, b *broker.Broker) error {
	cs, err := st.Classes()
	if err != nil {
		return fmt.Errorf("load class limits: %w", err)
	}
	m := map[string]store.ClassLimits{}
	for _, c := range cs {
		if c.Limits != nil {
			m[c.Name] = *c.Limits
		}
	}
	b.SetClassLimits(m)
	return nil
}
