package uma_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/edge/uma"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

func testStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Apply(&store.Batch{Classes: demo.Classes(), Devices: []store.Device{
		{ID: "thermo-1", Class: "thermostat", Owner: "alice", Status: store.DeviceActive},
		{ID: "thermo-2", Class: "thermostat", Owner: "alice", Status: store.DeviceSuspended},
		{ID: "thermo-3", Class: "thermostat", Status: store.DeviceActive}, // not paired: no one's resource
		{ID: "acme-cloud", Class: "service", Status: store.DeviceActive},
	}}, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRequests(t *testing.T) {
	s := &uma.Server{Store: testStore(t)}
	for _, c := range []struct {
		filter    string
		act       policy.Action
		requester string
		want      string // resource id, "" for none
	}{
		{"devices/thermo-1/telemetry/#", policy.Subscribe, "bob", "thermo-1/telemetry"},
		{"devices/thermo-1/telemetry/temp", policy.Subscribe, "bob", "thermo-1/telemetry"},
		{"devices/thermo-1/telemetry/+/x", policy.Subscribe, "", "thermo-1/telemetry"},
		{"devices/thermo-1/status", policy.Subscribe, "bob", "thermo-1/status"},
		{"devices/thermo-1/commands/set", policy.Publish, "bob", "thermo-1/commands"},
		{"devices/thermo-1/commands/set", policy.Subscribe, "bob", ""},  // commands are shared with pub only
		{"devices/thermo-1/telemetry/temp", policy.Publish, "bob", ""},  // telemetry with sub only
		{"devices/thermo-1/telemetry/#", policy.Subscribe, "alice", ""}, // the owner's own
		{"devices/+/telemetry/#", policy.Subscribe, "bob", ""},          // wider than one device's group
		{"devices/thermo-2/telemetry/#", policy.Subscribe, "bob", ""},   // suspended
		{"devices/thermo-3/telemetry/#", policy.Subscribe, "bob", ""},   // no owner
		{"firmware/thermostat/#", policy.Subscribe, "bob", ""},
	} {
		reqs, err := s.Requests(c.act, c.requester, c.filter)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if len(reqs) == 1 {
			got = reqs[0].ResourceID
		}
		if len(reqs) > 1 || got != c.want {
			t.Errorf("%s %s for %q: %+v, want %q", c.act, c.filter, c.requester, reqs, c.want)
		}
	}
}

// The index follows the store once invalidated.
func TestRequestsFollowTheStore(t *testing.T) {
	st := testStore(t)
	s := &uma.Server{Store: st}
	if reqs, _ := s.Requests(policy.Subscribe, "bob", "devices/thermo-3/status"); len(reqs) != 0 {
		t.Fatalf("unpaired: %+v", reqs)
	}
	if _, err := st.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-3", Class: "thermostat", Owner: "dave", Status: store.DeviceActive}}}, nil); err != nil {
		t.Fatal(err)
	}
	s.Invalidate()
	if reqs, _ := s.Requests(policy.Subscribe, "bob", "devices/thermo-3/status"); len(reqs) != 1 || reqs[0].ResourceID != "thermo-3/status" || reqs[0].ResourceScopes[0] != "sub" {
		t.Fatalf("paired: %+v", reqs)
	}
	// One SUBSCRIBE's refused filters: one ticket, so one owner's resources.
	reqs, _ := s.Requests(policy.Subscribe, "bob", "devices/thermo-3/status", "devices/thermo-1/status", "devices/thermo-1/telemetry/#")
	if len(reqs) != 2 || reqs[0].ResourceID != "thermo-1/status" || reqs[1].ResourceID != "thermo-1/telemetry" {
		t.Errorf("filters of two owners: %+v, want alice's two", reqs)
	}
}

func TestChallenge(t *testing.T) {
	var calls atomic.Int32
	var fail error
	s := &uma.Server{Store: testStore(t), ASURI: "https://authority.test", Ticket: func(_ context.Context, reqs []cloudsync.PermissionRequest) (string, error) {
		calls.Add(1)
		return "t-" + reqs[0].ResourceID, fail
	}}
	ch, err := s.Challenge(context.Background(), "devices/thermo-1/telemetry/#", policy.Subscribe, "bob")
	if err != nil || ch.Ticket != "t-thermo-1/telemetry" || ch.ASURI != "https://authority.test" {
		t.Fatalf("%+v %v", ch, err)
	}
	if _, err := s.Challenge(context.Background(), "firmware/#", policy.Subscribe, "bob"); !errors.Is(err, uma.ErrNotShared) || calls.Load() != 1 {
		t.Errorf("not shared: %v, %d calls", err, calls.Load())
	}
	fail = errors.New("connection refused")
	if _, err := s.Challenge(context.Background(), "devices/thermo-1/telemetry/#", policy.Subscribe, "bob"); !errors.Is(err, uma.ErrUnavailable) {
		t.Errorf("authority down: %v", err)
	}
	// Not enrolled: no UMA at all.
	if _, err := (&uma.Server{Store: s.Store}).Challenge(context.Background(), "devices/thermo-1/telemetry/#", policy.Subscribe, "bob"); !errors.Is(err, uma.ErrNotShared) {
		t.Errorf("not enrolled: %v", err)
	}
}

// A requester refused again and again gets a burst of tickets, then none
// (the authority is not called), while another requester still gets one.
func TestChallengeRatePerRequester(t *testing.T) {
	var calls atomic.Int32
	s := &uma.Server{Store: testStore(t), ASURI: "https://authority.test", Ticket: func(context.Context, []cloudsync.PermissionRequest) (string, error) {
		calls.Add(1)
		return "t", nil
	}}
	refused := 0
	for range 30 {
		if _, err := s.Challenge(context.Background(), "devices/thermo-1/telemetry/#", policy.Subscribe, "mallory"); errors.Is(err, uma.ErrUnavailable) {
			refused++
		}
	}
	// 30 asks within well under a second: the burst of 10 (and perhaps one
	// more refilled) get tickets.
	if refused < 15 || int(calls.Load())+refused != 30 {
		t.Fatalf("%d of 30 asks refused, %d authority calls", refused, calls.Load())
	}
	if _, err := s.Challenge(context.Background(), "devices/thermo-1/telemetry/#", policy.Subscribe, "bob"); err != nil {
		t.Fatalf("another requester: %v", err)
	}
}
