package edge_test

// Share revocation latency, end to end:
//
//	go test -run '^$' -bench BenchmarkShareRevocationLatency -benchtime 200x ./edge/

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// BenchmarkShareRevocationLatency measures how long an owner's revocation of
// a share takes from the call at the authority (Authority.RevokeShare, what
// the "Shared by me" page's Revoke does) to the requesting party's MQTT
// session, subscribed to the shared telemetry with an RPT naming the
// share, receiving DISCONNECT from the gateway, through the signed feed's
// push stream, with N shared sessions live (EDGEID_BENCH_SESSIONS, default
// 1,000: N friends, each with an app client and a share of thermo-1's
// telemetry). Each iteration revokes a different friend's share, so
// -benchtime must be a count no larger than N.
//
// Metrics: p50-ms and p99-ms of the latency; call-p50-ms the median of the
// revocation call alone (validation and the authority's commit).
func BenchmarkShareRevocationLatency(b *testing.B) {
	n := benchSessions(b)
	x := startBenchAuthority(b)
	iss, err := demo.NewIssuer("https://issuer.bench", "bench-1")
	if err != nil {
		b.Fatal(err)
	}
	rec, err := iss.Record()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := x.a.Apply(&store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec},
		Users:   []store.User{{ID: "alice", Status: store.UserActive}},
		Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}}, "bench"); err != nil {
		b.Fatal(err)
	}
	g := startGatewayTB(b, func(c *configT) {
		c.Sync.Enrollment = x.enroll(b, "bench-gw")
		c.MQTT.MaxClients = int64(n) + 100
		c.MQTT.TLS.Listen = ""
	})
	apps := make([]string, n)
	for i := range apps {
		apps[i] = fmt.Sprintf("app-%05d", i)
	}
	for chunk := range slices.Chunk(apps, 1000) {
		var b2 store.Batch
		for _, app := range chunk {
			friend := "friend-" + app[4:]
			b2.Users = append(b2.Users, store.User{ID: friend, Status: store.UserActive})
			b2.Devices = append(b2.Devices, store.Device{ID: app, Class: "app", Owner: friend, Status: store.DeviceActive})
			b2.Grants = append(b2.Grants, store.Grant{ID: "share-" + app[4:], Owner: "alice", Device: "thermo-1", Grantee: friend,
				GranteeKind: store.GranteeUser, Resources: []store.SharedResource{{Device: "thermo-1", Group: "telemetry", Scopes: []string{"sub"}}}})
		}
		if _, err := x.a.Apply(&b2, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	waitCaughtUpTB(b, g, x, 2*time.Minute)

	sessions := connectSensors(b, g.g.Addr("tcp"), apps, func(app string) (string, error) {
		c := iss.Claims(app, "friend-"+app[4:], "edgeid", "", time.Hour)
		c["permissions"] = []map[string]any{{"resource_id": "thermo-1/telemetry", "resource_scopes": []string{"sub"}, "share": "share-" + app[4:]}}
		return iss.Mint(c, nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range sessions {
		sa, err := s.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/thermo-1/telemetry/#"}}})
		if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0 {
			b.Fatalf("%s: subscribe to the shared telemetry: %v %+v", s.id, err, sa)
		}
	}

	order := rand.Perm(n)
	samples := make([]time.Duration, 0, 256)
	calls := make([]time.Duration, 0, 256)
	i := 0
	for b.Loop() {
		if i == n {
			b.Fatalf("more iterations than sessions (%d): use -benchtime %dx or fewer, or raise EDGEID_BENCH_SESSIONS", n, n)
		}
		s := sessions[order[i]]
		i++
		t0 := time.Now()
		if err := x.a.RevokeShare("alice", "share-"+s.id[4:], "bench"); err != nil {
			b.Fatal(err)
		}
		calls = append(calls, time.Since(t0))
		select {
		case d := <-s.disconnect:
			samples = append(samples, d.at.Sub(t0))
			if d.code != 0x87 {
				b.Fatalf("%s: DISCONNECT 0x%02x, want 0x87", s.id, d.code)
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("%s: no DISCONNECT within 10s of its share's revocation", s.id)
		}
	}
	reportLatency(b, samples, calls)
	b.ReportMetric(float64(n), "sessions")
}
