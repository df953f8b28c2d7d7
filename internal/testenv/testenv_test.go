package testenv_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// A gateway enrolled at a testenv authority syncs its records; a standalone
// one takes the demo bundle.
func TestSyncEnrolledGateway(t *testing.T) {
	x := testenv.Authority(t, nil)
	if _, err := x.A.Apply(&store.Batch{Classes: demo.Classes(), Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive}}}, "test"); err != nil {
		t.Fatal(err)
	}
	x.Admin(http.MethodGet, "/admin/v1/gateways", nil)
	enrollment := x.Enroll("gw-t", "test-board")
	g := testenv.Gateway(t, func(c *config.Config) { c.Gateway.ID, c.Sync.Enrollment = "gw-t", enrollment })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := g.G.Store.Device("dev-1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never synced the device; log:\n%s", g.Logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	s := testenv.Gateway(t)
	testenv.ApplyDemo(t, s.G, testenv.Issuer(t), "")
	if _, err := s.G.Store.Device("thermo-1"); err != nil {
		t.Fatal(err)
	}
	if s.G.Addr("tcp") == "" || s.Config.Metrics.Listen != "" || s.Config.MQTT.ConnectRate != 0 {
		t.Fatalf("addr %q metrics %q connect rate %v", s.G.Addr("tcp"), s.Config.Metrics.Listen, s.Config.MQTT.ConnectRate)
	}
}
