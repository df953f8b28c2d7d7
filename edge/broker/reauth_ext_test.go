package broker_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// A class edit that lands between a re-authentication's token check and the
// switch to its session must bind the new session too: otherwise it keeps
// the permissions the class had when the token was checked.
//
// Not parallel: the hook is package-wide, and no other test may re-authenticate
// while it is set.
func TestReauthRechecksStoreChangeDuringTokenCheck(t *testing.T) {
	env := testenv.Gateway(t)
	iss := testenv.Issuer(t)
	testenv.ApplyDemo(t, env.G, iss, "")
	var class store.DeviceClass
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			class = c
		}
	}
	const topic = "devices/thermo-1/telemetry/t"
	mint := func() []byte { // no cnf: no proof-of-possession round trip
		tok, err := iss.Mint(iss.Claims("thermo-1", "alice", "edgeid", demo.Scope(class, "thermo-1", "alice"), time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(tok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := net.Dial("tcp", env.G.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: mint()}})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %+v %v", ca, err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	publish := func() byte {
		t.Helper()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte("1"), QoS: 1})
		if pr == nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		return pr.ReasonCode
	}
	if code := publish(); code != 0 {
		t.Fatalf("publish before the class edit: PUBACK 0x%02x, want 0", code)
	}

	// The edit: thermostats may no longer publish telemetry.
	narrowed := class
	narrowed.Permissions = slices.DeleteFunc(slices.Clone(class.Permissions), func(r policy.Rule) bool {
		return r.Filter == "devices/{device}/telemetry/#"
	})
	var once sync.Once
	restore := broker.SetTestHookReauthChecked(func() {
		once.Do(func() {
			if _, err := env.G.Store.Apply(&store.Batch{Classes: []store.DeviceClass{narrowed}}, nil); err != nil {
				t.Error(err)
			}
		})
	})
	r, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "ace", AuthData: mint()}})
	restore()
	if err != nil || !r.Success {
		t.Fatalf("re-authentication: %+v %v", r, err)
	}
	if code := publish(); code < 0x80 {
		t.Fatalf("publish after the class edit: PUBACK 0x%02x, want a refusal (>= 0x80)", code)
	}
}
