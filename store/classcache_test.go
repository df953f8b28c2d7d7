package store_test

import (
	"errors"
	"testing"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Class keeps decoded classes, but what it returns is always what is stored
// now, and a caller changing its copy changes nothing for the next one.
func TestClassIsNeverStale(t *testing.T) {
	s := newStore(t)
	mustApply(t, s, &store.Batch{Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules,
		Resources: []store.ResourceGroup{{Name: "telemetry", Filter: "devices/{device}/telemetry/#", Scopes: []string{"sub"}}},
		Limits:    &store.ClassLimits{Device: store.Rates{MessagesPerSecond: 5, MessageBurst: 5}}}}}, nil)
	c, err := s.Class("sensor")
	if err != nil || len(c.Permissions) != len(sensorRules) {
		t.Fatalf("Class: %+v, %v", c, err)
	}
	// The caller's copy is its own.
	c.Permissions[0].Filter = "changed/#"
	c.Resources[0].Scopes[0] = "pub"
	c.Limits.Device.MessagesPerSecond = 99
	again, _ := s.Class("sensor")
	if again.Permissions[0].Filter != sensorRules[0].Filter || again.Resources[0].Scopes[0] != "sub" || again.Limits.Device.MessagesPerSecond != 5 {
		t.Fatalf("a caller's change reached the next read: %+v", again)
	}
	// A change of the stored class is seen at once.
	mustApply(t, s, &store.Batch{Classes: []store.DeviceClass{{Name: "sensor", Permissions: []policy.Rule{{Filter: "only/#", Actions: policy.Publish}}}}}, nil)
	now, err := s.Class("sensor")
	if err != nil || len(now.Permissions) != 1 || now.Permissions[0].Filter != "only/#" || now.Limits != nil {
		t.Fatalf("after the update Class returns %+v, %v", now, err)
	}
	// And so is its deletion.
	mustApply(t, s, &store.Batch{Delete: store.Deletions{Classes: []string{"sensor"}}}, nil)
	if _, err := s.Class("sensor"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the deletion Class returns %v, want ErrNotFound", err)
	}
}

// BenchmarkClass is the class read of every MQTT CONNECT.
//
//	go test -run '^$' -bench BenchmarkClass -benchmem ./store/
func BenchmarkClass(b *testing.B) {
	s := openStore(b, b.TempDir())
	defer s.Close()
	if _, err := s.Apply(&store.Batch{Classes: []store.DeviceClass{{Name: "sensor", Permissions: sensorRules}}}, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Class("sensor"); err != nil {
			b.Fatal(err)
		}
	}
}
