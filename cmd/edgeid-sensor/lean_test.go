package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/internal/pki"
	"github.com/edgeid/edgeid/store"
)

// provisionInto runs `provision` and applies its batches to g's store.
func provisionInto(t *testing.T, g *edge.Gateway, pairs, sessions int) string {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	// --batch 10: several files, as the bench's 10,000 devices are.
	if err := run(context.Background(), []string{"provision", "--out", dir, "--pairs", itoa(pairs), "--sessions", itoa(sessions), "--batch", "10"}, &out); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "batch-*.json"))
	if want := (2*pairs + sessions + 3 + 9) / 10; len(files) != want { // + the 3 demo devices
		t.Fatalf("%d batch files, want %d: %s", len(files), want, out.String())
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var b store.Batch
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Store.Apply(&b, nil); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return dir
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func decodeLine[T any](t *testing.T, line string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("not a JSON line: %q: %v", line, err)
	}
	return v
}

// The bench's pubsub against a real gateway on its shipped throttle: the
// provisioned publishers' class limits keep it from refusing anything, each
// subscriber gets exactly what its publisher sent, at QoS 1 (every PUBLISH
// acknowledged) and QoS 0 (a subscriber's queue holds more than one
// publisher's messages here, so nothing may be dropped), with both clients.
func TestPubsubAgainstGateway(t *testing.T) {
	g := startGateway(t, "pubsub-test", nil) // throttle as shipped: 50 messages/s a device
	if !g.Broker.Throttle.Enabled() {
		t.Fatal("the test gateway has no throttle")
	}
	dir := provisionInto(t, g, 2, 0)
	for _, tc := range []struct {
		client     string
		qos, count int
	}{{"raw", 1, 600}, {"raw", 0, 200}, {"paho", 1, 50}, {"paho", 0, 200}} {
		in := g.Broker.Counters.MessagesIn.Load()
		var out bytes.Buffer
		err := run(context.Background(), []string{"pubsub", "--broker", g.Addr("tcp"), "--pairs", "2", "--qos", itoa(tc.qos),
			"--messages", itoa(tc.count), "--size", "64", "--tokens", filepath.Join(dir, "pubsub.tokens"), "--sources", "4",
			"--client", tc.client, "--drain", "10s"}, &out)
		if err != nil {
			t.Fatalf("%s QoS %d: %v\n%s", tc.client, tc.qos, err, out.String())
		}
		r := decodeLine[pubsubResult](t, out.String())
		want := int64(2 * tc.count)
		if r.Sent != want || r.Delivered != want || r.Failed != 0 || len(r.Errors) != 0 || len(r.PerPair) != 2 {
			t.Fatalf("%s QoS %d: %+v", tc.client, tc.qos, r)
		}
		if tc.qos == 1 && r.Acked != want {
			t.Fatalf("%s QoS 1: %d acknowledged, want %d", tc.client, r.Acked, want)
		}
		for i, p := range r.PerPair {
			if p.Sent != int64(tc.count) || p.Delivered != int64(tc.count) {
				t.Fatalf("%s QoS %d: pair %d sent %d, delivered %d, want %d", tc.client, tc.qos, i, p.Sent, p.Delivered, tc.count)
			}
		}
		if got := settledCount(&g.Broker.Counters.MessagesIn, in+uint64(want)) - in; got != uint64(want) {
			t.Fatalf("%s QoS %d: the gateway took %d messages, the sensor sent %d", tc.client, tc.qos, got, want)
		}
	}
	if got := g.Broker.Counters.Throttled.Load(); got != 0 {
		t.Fatalf("%d messages throttled", got)
	}
}

// The bench's idle sessions against a real gateway: every token connects,
// the gateway holds exactly those sessions while the sensor says so, and
// none is lost before the sensor closes them; clients without a token are
// counted as refused.
func TestIdleAgainstGateway(t *testing.T) {
	g := startGateway(t, "idle-test", nil)
	dir := provisionInto(t, g, 0, 30)
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuf{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"idle", "--broker", g.Addr("tcp"), "--sessions", "25", "--tokens", filepath.Join(dir, "idle.tokens"),
			"--sources", "5", "--concurrency", "4"}, out)
	}()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "\n") {
		select {
		case err := <-done:
			t.Fatalf("idle ended: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no report from idle")
		}
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	r := decodeLine[idleResult](t, first)
	if r.Event != "connected" || r.Sessions != 25 || r.Connected != 25 || r.Refused != 0 || r.Failed != 0 || r.ConnectsPerS <= 0 {
		t.Fatalf("report: %s", first)
	}
	if n := g.Broker.Sessions.Len(); n != 25 {
		t.Fatalf("gateway holds %d sessions, want 25", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("output: %s", out.String())
	}
	if e := decodeLine[idleEnd](t, lines[1]); e.Event != "end" || e.Lost != 0 {
		t.Fatalf("end: %s", lines[1])
	}

	// No credentials: the gateway refuses each CONNECT.
	var buf bytes.Buffer
	err := run(context.Background(), []string{"idle", "--broker", g.Addr("tcp"), "--sessions", "3", "--hold", "1ms"}, &buf)
	var refused errRefused
	if !errors.As(err, &refused) {
		t.Fatalf("without tokens: %v\n%s", err, buf.String())
	}
	if r := decodeLine[idleResult](t, strings.TrimSpace(buf.String())); r.Connected != 0 || r.Refused != 3 || len(r.Codes) != 1 {
		t.Fatalf("without tokens: %s", buf.String())
	}
}

// Username and password (as Mosquitto gets them) and no credentials (mochi),
// against mochi with the allow-all hook, with --duration: the counts add up.
func TestPubsubAndIdleAgainstMochi(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"pubsub", "--broker", l.Address(), "--pairs", "3", "--qos", "1", "--duration", "300ms",
		"--username", "{id}", "--password", "pw-{id}"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	r := decodeLine[pubsubResult](t, out.String())
	var sent, delivered int64
	for _, p := range r.PerPair {
		sent += p.Sent
		delivered += p.Delivered
	}
	if r.Sent == 0 || r.Acked != r.Sent || r.Delivered != r.Sent || sent != r.Sent || delivered != r.Delivered {
		t.Fatalf("pubsub: %s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"idle", "--broker", l.Address(), "--sessions", "40", "--hold", "10ms"}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || decodeLine[idleResult](t, lines[0]).Connected != 40 || decodeLine[idleEnd](t, lines[1]).Lost != 0 {
		t.Fatalf("idle: %s", out.String())
	}
}

// provision's Mosquitto files name every client the generators use.
func TestProvisionMosquittoFiles(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), []string{"provision", "--out", dir, "--pairs", "2", "--sessions", "3"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	passwd := read("mosquitto.passwd")
	for _, id := range []string{"lean-pub-0", "lean-sub-1", "lean-idle-00002"} {
		if !strings.Contains(passwd, "\n"+id+":pw-"+id+"\n") && !strings.HasPrefix(passwd, id+":pw-"+id+"\n") {
			t.Errorf("mosquitto.passwd lacks %s", id)
		}
	}
	if n := strings.Count(passwd, "\n"); n != 7 {
		t.Errorf("mosquitto.passwd has %d lines, want 7", n)
	}
	if acl := read("mosquitto.acl"); !strings.Contains(acl, "user lean-sub-1\ntopic read devices/lean-pub-1/telemetry/#\n") ||
		!strings.Contains(acl, "pattern write devices/%u/telemetry/#\n") {
		t.Errorf("mosquitto.acl:\n%s", acl)
	}
	if n := strings.Count(read("idle.tokens"), "\n"); n != 3 {
		t.Errorf("idle.tokens has %d lines", n)
	}
}

// Idle sessions over TLS, trusting the gateway's own self-signed
// certificate: each token connects and the gateway holds the sessions on
// its TLS listener; a certificate the sensor does not trust fails every
// handshake.
func TestIdleOverTLS(t *testing.T) {
	var stateDir string
	g := startGateway(t, "idle-tls", func(c *config.Config) {
		c.MQTT.TLS.Listen = "127.0.0.1:0"
		stateDir = c.StateDir
	})
	dir := provisionInto(t, g, 0, 10)
	var out bytes.Buffer
	err := run(context.Background(), []string{"idle", "--broker", g.Addr("tls"), "--sessions", "10", "--tokens", filepath.Join(dir, "idle.tokens"),
		"--tls-ca", filepath.Join(stateDir, "tls", "server.crt"), "--hold", "10ms"}, &out)
	if err != nil {
		t.Fatalf("idle over TLS: %v\n%s", err, out.String())
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	if r := decodeLine[idleResult](t, first); r.Connected != 10 || r.Failed != 0 {
		t.Fatalf("report: %s", first)
	}
	other := filepath.Join(t.TempDir(), "other.crt")
	if _, _, err := pki.SelfSigned(filepath.Dir(other), "someone-else"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(context.Background(), []string{"idle", "--broker", g.Addr("tls"), "--sessions", "2", "--tokens", filepath.Join(dir, "idle.tokens"),
		"--tls-ca", filepath.Join(filepath.Dir(other), "server.crt"), "--hold", "10ms"}, &out)
	if err == nil || !strings.Contains(out.String(), "TLS handshake") {
		t.Fatalf("untrusted certificate: %v\n%s", err, out.String())
	}
}

// --reconnect: every session ends and comes back with the same token; both
// passes are reported, and the gateway holds the second.
func TestIdleReconnect(t *testing.T) {
	g := startGateway(t, "idle-reconnect", nil)
	dir := provisionInto(t, g, 0, 12)
	var out bytes.Buffer
	err := run(context.Background(), []string{"idle", "--broker", g.Addr("tcp"), "--sessions", "12", "--tokens", filepath.Join(dir, "idle.tokens"),
		"--sources", "3", "--reconnect", "--hold", "10ms"}, &out)
	if err != nil {
		t.Fatalf("idle --reconnect: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("output: %s", out.String())
	}
	for i, event := range []string{"connected", "reconnected"} {
		if r := decodeLine[idleResult](t, lines[i]); r.Event != event || r.Connected != 12 || r.ConnectsPerS <= 0 {
			t.Fatalf("line %d: %s", i+1, lines[i])
		}
	}
	if e := decodeLine[idleEnd](t, lines[2]); e.Event != "end" || e.Lost != 0 {
		t.Fatalf("end: %s", lines[2])
	}
}
