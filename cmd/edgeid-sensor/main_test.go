package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// startGateway runs a real gateway on loopback (testenv.Gateway: plain MQTT
// only, no metrics) called id, with mod applied to its configuration.
func startGateway(t *testing.T, id string, mod func(*config.Config)) *edge.Gateway {
	t.Helper()
	return testenv.Gateway(t, func(c *config.Config) { c.Gateway.ID = id }, mod).G
}

func TestConnectAgainstGateway(t *testing.T) {
	g := startGateway(t, "sensor-test", nil)
	iss := testenv.Issuer(t)
	testenv.ApplyDemo(t, g, iss, "")
	tok, err := iss.Mint(iss.Claims("thermo-1", "alice", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	sensor := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"connect", "--broker", g.Addr("tcp"), "--timeout", "5s"}, args...), &out)
		return out.String(), err
	}

	out, err := sensor("--client-id", "thermo-1", "--token", tok, "--publish", "devices/thermo-1/telemetry/temp", "--message", "21.5", "--count", "2")
	if err != nil || !strings.Contains(out, "CONNACK 0x00 Success") || strings.Count(out, " 0x00 Success") != 3 {
		t.Fatalf("allowed publish: %v\n%s", err, out)
	}
	out, err = sensor("--client-id", "thermo-1", "--token", tok, "--publish", "devices/thermo-2/telemetry/temp", "--message", "99")
	var refused errRefused
	if !errors.As(err, &refused) || !strings.Contains(out, "PUBACK 1 0x87 Not authorized") {
		t.Fatalf("another device's topic: %v\n%s", err, out)
	}
	out, err = sensor("--client-id", "thermo-2", "--token", tok)
	if !errors.As(err, &refused) || !strings.Contains(out, "CONNACK 0x85 Client Identifier not valid") {
		t.Fatalf("token of another device: %v\n%s", err, out)
	}
	if _, err := sensor(); !errors.Is(err, errUsage) {
		t.Fatalf("no client id: %v", err)
	}
}

func TestLoadAgainstGateway(t *testing.T) {
	// All the simulated devices connect at once from one address.
	g := startGateway(t, "load-test", func(c *config.Config) { c.MQTT.ConnectRate, c.MQTT.MaxHalfOpenPerSource = 0, c.MQTT.MaxHalfOpen })
	iss := testenv.Issuer(t)
	b, _ := demo.Bundle(iss, "")
	var lines []string
	for i := 0; i < 20; i++ {
		id := "load-" + strings.Repeat("0", 2-len(strconv.Itoa(i))) + strconv.Itoa(i)
		b.Devices = append(b.Devices, store.Device{ID: id, Class: "thermostat", Status: store.DeviceActive})
		tok, _ := iss.Mint(iss.Claims(id, id, "edgeid", "publish:devices/"+id+"/telemetry/#", time.Hour), nil)
		lines = append(lines, id+" "+tok)
	}
	lines = append(lines, "ghost-1 not-a-token")
	if _, err := g.Store.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"load", "--broker", g.Addr("tcp"), "--tokens", file, "--rate", "10", "--duration", "1s"}, &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`devices 21 connected 20 refused 1 \| sent (\d+) acked (\d+) failed 0`).FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("load summary: %s", out.String())
	}
	acked, _ := strconv.ParseUint(m[2], 10, 64)
	if n := settledCount(&g.Broker.Counters.MessagesIn, acked); n != acked {
		t.Fatalf("gateway accepted %d messages, the load generator counted %s acked", n, m[2])
	}
}

// settledCount is c once it reaches want, or after a few seconds what it is
// then. mochi sends the PUBACK (and delivers) before its OnPublished hook
// counts the message, so a client can see its last message through before
// the gateway has counted it; the wait only ends a count that never comes.
func settledCount(c interface{ Load() uint64 }, want uint64) uint64 {
	deadline := time.Now().Add(5 * time.Second)
	for c.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return c.Load()
}
