package edge_test

import (
	"sync"
	"testing"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// A re-evaluation of a session that starts after a change installs that
// change, whatever re-evaluations of the session that started before it
// are still running: they used to install their older permission after it
// (a store change's re-check against the share clock's, say), and a share's
// topic outside its window was delivered again. Here the device's class
// flips between one that lets it publish its telemetry and one that does
// not, while other goroutines keep re-evaluating its session; after each
// flip, a re-evaluation started after it must leave the new permission.
func TestRecheckAfterAChangeIsNotUndoneByAnOlderOne(t *testing.T) {
	g := startGateway(t)
	g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	ss := g.g.Broker.Sessions.ByDevice("thermo-1")
	if len(ss) != 1 {
		t.Fatalf("%d sessions of thermo-1", len(ss))
	}
	s := ss[0]
	mustApply := func(b *store.Batch) {
		t.Helper()
		if _, err := g.g.Store.Apply(b, nil); err != nil {
			t.Fatal(err)
		}
	}
	mustApply(&store.Batch{Classes: []store.DeviceClass{{Name: "muted", Permissions: []policy.Rule{{Filter: "devices/{device}/status", Actions: policy.Publish}}}}})
	dev, err := g.g.Store.Device("thermo-1")
	if err != nil {
		t.Fatal(err)
	}
	const topic = "devices/thermo-1/telemetry/temp"
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					g.g.Broker.Revalidate(s)
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	classes := []string{"muted", dev.Class}
	for i := 0; i < 1000; i++ {
		class := classes[i%2]
		d := dev
		d.Class = class
		mustApply(&store.Batch{Devices: []store.Device{d}})
		g.g.Broker.Revalidate(s)
		if got, want := s.Perms().CanPublish(topic), class != "muted"; got != want {
			t.Fatalf("flip %d to class %s: may publish %s: %v, want %v", i, class, topic, got, want)
		}
	}
}
