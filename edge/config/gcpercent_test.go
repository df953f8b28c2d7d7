package config_test

import (
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/config"
)

// gateway.gc_percent ships at Go's 100 and is bounded, the error naming the key.
func TestGCPercent(t *testing.T) {
	c := config.Default()
	if c.Gateway.GCPercent != 100 {
		t.Fatalf("default gateway.gc_percent %d, want 100", c.Gateway.GCPercent)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, v := range []int{0, 9, -1, 1001} {
		c.Gateway.GCPercent = v
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "gateway.gc_percent") {
			t.Errorf("gc_percent %d: %v, want an error naming gateway.gc_percent", v, err)
		}
	}
}
