package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// The device's side of the journey, as edgeid-sensor walks it against a real
// authority and gateway: keygen, pair (the owner approves), connect with
// proof of possession, publish telemetry.
func TestPairJourney(t *testing.T) {
	x := testenv.Authority(t, nil)
	a, srv, fp := x.A, x.Srv, x.FP

	dir := t.TempDir()
	var pubOut bytes.Buffer
	if err := run(context.Background(), []string{"keygen", "--out", filepath.Join(dir, "device.jwk")}, &pubOut); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(&store.Batch{Classes: demo.Classes(), Devices: []store.Device{{ID: "speaker-9", Class: "thermostat",
		Status: store.DeviceActive, PublicKey: json.RawMessage(bytes.TrimSpace(pubOut.Bytes()))}}}, "test"); err != nil {
		t.Fatal(err)
	}

	enrollment := x.Enroll("gw-s", "")
	g := startGateway(t, "gw-s", func(c *config.Config) { c.Sync.Enrollment = enrollment })

	for i := 0; ; i++ { // the gateway's first sync brings the device and the authority's keys
		if _, err := g.Store.Device("speaker-9"); err == nil {
			break
		}
		if i > 1000 {
			t.Fatal("the gateway never synced the device")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := &lockedBuf{}
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"pair", "--authority", srv.URL, "--fingerprint", fp, "--device", "speaker-9",
			"--key", filepath.Join(dir, "device.jwk"), "--broker", g.Addr("tcp"), "--count", "2", "--timeout", "60s"}, out)
	}()
	codeRE := regexp.MustCompile(`enter the code\s+([A-Z]{4}-[A-Z]{4})`)
	deadline := time.Now().Add(30 * time.Second)
	var userCode string
	for userCode == "" && time.Now().Before(deadline) {
		if m := codeRE.FindStringSubmatch(out.String()); m != nil {
			userCode = m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	if userCode == "" {
		t.Fatalf("no user code printed:\n%s", out.String())
	}
	if err := a.DecidePairing(userCode, "alice", true); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("pair journey: %v\n%s", err, out.String())
	}
	for _, want := range []string{"called home: CONNACK 0x00", "paired: got an access token bound to this device's key", "CONNACK 0x00", "PUBACK 1 0x00", "PUBACK 2 0x00"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
