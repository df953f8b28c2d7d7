package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
)

func TestTimeZone(t *testing.T) {
	c := config.Default()
	if loc, err := c.Gateway.Location(); err != nil || loc != time.Local {
		t.Errorf("default: %v %v, want the system's", loc, err)
	}
	c.Gateway.TimeZone = "UTC"
	if loc, err := c.Gateway.Location(); err != nil || loc.String() != "UTC" {
		t.Errorf("UTC: %v %v", loc, err)
	}
	c.Gateway.TimeZone = "Mars/Olympus_Mons"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "gateway.time_zone") {
		t.Errorf("unknown zone: %v, want an error naming gateway.time_zone", err)
	}
}
