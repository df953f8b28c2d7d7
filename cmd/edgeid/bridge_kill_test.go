package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// TestBridgeSurvivesSIGKILL is issue 12's outage: the cloud broker is down
// while 100,000 QoS 1 readings are published by 50 devices; edgeid (the
// shipped binary, not the test process) is killed with SIGKILL and
// restarted twice during the backlog; then the broker comes back. Every
// message a device got a PUBACK for arrives at the cloud application, the
// first arrivals of each device in the order it published them; duplicates
// (a message sent again after a kill, by the device or by the bridge) are
// counted, never a loss.
func TestBridgeSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 100,000 messages")
	}
	const devices, perDevice = 50, 2000
	total := devices * perDevice
	dir := t.TempDir()
	bin := filepath.Join(dir, "edgeid")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	cloud := testenv.StartPersistentCloud(t, "kill-gw")
	// The cloud application subscribes with a session the broker keeps
	// across its restart, then the broker goes down.
	appSession(t, cloud, nil)
	cloud.Shutdown()

	sockDir, err := os.MkdirTemp("", "eid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "admin.sock")
	mqttAddr := freeAddr(t)
	cfg := fmt.Sprintf(`gateway: {id: kill-gw}
state_dir: %s
mqtt: {tcp: "%s", tls: {listen: ""}, connect_rate: 0, max_half_open_per_source: 512}
throttle: {device: {messages_per_second: 0, bytes_per_second: 0}, subject: {messages_per_second: 0, bytes_per_second: 0}}
admin: {socket: %s}
metrics: {listen: ""}
bridge:
  remotes:
    - name: cloud
      address: mqtts://%s
      ca: %s
      server_name: localhost
      cert: %s
      key: %s
      rules:
        - {filter: "devices/+/telemetry/#", direction: out, qos: 1}
`, filepath.Join(dir, "state"), mqttAddr, sock, cloud.Addr, cloud.CA, cloud.GWCert, cloud.GWKey)
	cfgPath := filepath.Join(dir, "edgeid.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buf{}
	var proc *exec.Cmd
	start := func() {
		t.Helper()
		proc = exec.Command(bin, "serve", "-c", cfgPath)
		proc.Stderr = logs
		if err := proc.Start(); err != nil {
			t.Fatal(err)
		}
		c := admin.NewClient(sock)
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := c.Status(ctx)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("edgeid did not come up: %v\n%s", err, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	kill := func() {
		_ = proc.Process.Kill() // SIGKILL: no shutdown, no final sync
		_ = proc.Wait()
	}
	start()
	t.Cleanup(kill)

	iss := testenv.Issuer(t)
	b, err := demo.Bundle(iss, "")
	if err != nil {
		t.Fatal(err)
	}
	var thermo store.DeviceClass
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			thermo = c
		}
	}
	tokens := make([]string, devices)
	for i := range devices {
		id := fmt.Sprintf("kill-%02d", i)
		b.Devices = append(b.Devices, store.Device{ID: id, Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
		tok, err := iss.Mint(iss.Claims(id, "alice", "edgeid", demo.Scope(thermo, id, "alice"), 2*time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok
	}
	raw, _ := json.Marshal(b)
	if _, err := admin.NewClient(sock).Import(context.Background(), raw); err != nil {
		t.Fatal(err)
	}

	// Publishers: each sends its readings one after another, and after a
	// lost connection sends again the one it had no PUBACK for.
	var acked atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for i := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("kill-%02d", i)
			var pc *paho.Client
			for seq := 0; seq < perDevice; {
				if pc == nil {
					if pc = dialDevice(mqttAddr, id, tokens[i]); pc == nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				r, err := pc.Publish(ctx, &paho.Publish{Topic: "devices/" + id + "/telemetry/seq", QoS: 1, Payload: []byte(strconv.Itoa(seq))})
				cancel()
				if err != nil || r == nil {
					_ = pc.Disconnect(&paho.Disconnect{})
					pc = nil
					continue
				}
				if r.ReasonCode != 0 {
					errs <- fmt.Errorf("%s seq %d: PUBACK 0x%02x", id, seq, r.ReasonCode)
					return
				}
				seq++
				acked.Add(1)
			}
			_ = pc.Disconnect(&paho.Disconnect{})
		}()
	}
	for _, at := range []int64{int64(total) * 3 / 10, int64(total) * 6 / 10} {
		for acked.Load() < at {
			time.Sleep(5 * time.Millisecond)
		}
		kill()
		t.Logf("SIGKILL at %d acknowledged", acked.Load())
		start()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	cloud.Start()
	got := make(chan *paho.Publish, 4096)
	appSession(t, cloud, got)
	first := make([]int, devices) // next seq each device's first arrivals must show
	dups := 0
	timeout := time.After(5 * time.Minute)
	for unique := 0; unique < total; {
		select {
		case m := <-got:
			var dev, seq int
			if _, err := fmt.Sscanf(strings.TrimPrefix(m.Topic, "gateways/kill-gw/devices/kill-"), "%d/telemetry/seq", &dev); err != nil {
				t.Fatalf("unexpected topic %s", m.Topic)
			}
			seq, _ = strconv.Atoi(string(m.Payload))
			switch {
			case seq == first[dev]:
				first[dev]++
				unique++
			case seq < first[dev]:
				dups++
			default:
				t.Fatalf("device %d: message %d arrived before %d (lost or out of order)", dev, seq, first[dev])
			}
		case <-timeout:
			st := bridgeStatus(t, sock)
			t.Fatalf("only %d of %d arrived; bridge %s\nlogs:\n%s", unique, total, st, tail(logs.String(), 4000))
		}
	}
	t.Logf("all %d acknowledged messages arrived in order per device; %d duplicates (QoS 1 after SIGKILL); bridge %s", total, dups, bridgeStatus(t, sock))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func bridgeStatus(t *testing.T, sock string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := admin.NewClient(sock).Bridge(ctx)
	if err != nil {
		return err.Error()
	}
	out, _ := json.Marshal(rs)
	return string(out)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// dialDevice connects a device with its token, or returns nil.
func dialDevice(addr, id, token string) *paho.Client {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil
	}
	pc := paho.NewClient(paho.ClientConfig{Conn: nc, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(token)}})
	if err != nil || ca == nil || ca.ReasonCode != 0 {
		nc.Close()
		return nil
	}
	return pc
}

// appSession connects the cloud application with a session Mosquitto keeps
// (clean start off, an hour's expiry) and its subscription; with got it
// stays and delivers, else it disconnects (the broker queues for it).
func appSession(t *testing.T, cloud *testenv.Cloud, got chan<- *paho.Publish) {
	t.Helper()
	nc, err := tlsDial(cloud)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: nc, OnClientError: func(error) {}}
	if got != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}}
	}
	pc := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expiry := uint32(3600)
	if ca, err := pc.Connect(ctx, &paho.Connect{ClientID: "cloud-app", KeepAlive: 30, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: ptr(uint16(1000))}}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("cloud app connect: %v %+v", err, ca)
	}
	if got == nil {
		if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "gateways/kill-gw/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		_ = pc.Disconnect(&paho.Disconnect{})
		return
	}
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
}

func ptr[T any](v T) *T { return &v }

func tlsDial(cloud *testenv.Cloud) (net.Conn, error) {
	c, err := tls.Dial("tcp", cloud.Addr, cloud.AppTLS())
	if err != nil {
		return nil, err
	}
	// paho.golang over TLS: the application's PUBACKs and its SUBSCRIBE
	// would interleave (see testenv.LockedConn); mosquitto then drops it
	// as malformed and the drain stalls.
	return testenv.LockedConn(c), nil
}
