package edge_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/store"
)

// Publish throughput: the EdgeID gateway (authenticated clients, every PUBLISH
// and every delivery authorized) against the same mochi-mqtt broker with only
// its allow-all hook, in the same run, with the same clients and load:
// P publishers sending QoS 1 to their own telemetry topics, one subscriber
// receiving all of it at QoS 0. The metric is delivered messages per second.
//
//	go test -run '^$' -bench BenchmarkPublishThroughput -benchtime 20000x -count 5 ./edge/

const benchPublishers = 8

func BenchmarkPublishThroughput(b *testing.B) {
	b.Run("mochi-allow-all", func(b *testing.B) {
		srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InlineClient: false})
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			b.Fatal(err)
		}
		l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
		if err := srv.AddListener(l); err != nil {
			b.Fatal(err)
		}
		if err := srv.Serve(); err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		runThroughput(b, l.Address(), func(id string) *paho.Connect {
			return &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
		})
	})
	b.Run("mosquitto-passwd-acl", func(b *testing.B) {
		addr := startMosquitto(b)
		runThroughput(b, addr, func(id string) *paho.Connect {
			return &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
				Username: id, UsernameFlag: true, Password: []byte("pw-" + id), PasswordFlag: true}
		})
	})
	edgeid := func(b *testing.B, opts ...gwOpt) {
		g := startBenchGateway(b, opts...)
		runThroughput(b, g.g.Addr("tcp"), func(id string) *paho.Connect {
			dev := id
			sub := "alice"
			if id == "acme-cloud" {
				sub = "acme-cloud"
			}
			return &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
				Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(g.token(dev, sub, nil))}}
		})
	}
	b.Run("edgeid", func(b *testing.B) { edgeid(b) })
	// Throttling on with limits the load never reaches: the cost of checking.
	b.Run("edgeid-throttle-on", func(b *testing.B) {
		edgeid(b, func(c *configT) {
			r := config.Rates{MessagesPerSecond: 1e9, MessageBurst: 1 << 30, BytesPerSecond: 1e12, ByteBurst: 1 << 30}
			c.Throttle = config.Throttle{Device: r, Subject: r, Class: r, Persist: 100}
		})
	})
}

// startBenchGateway is startGateway for benchmarks, with bench devices added.
func startBenchGateway(b *testing.B, opts ...gwOpt) *gw {
	// mochi's own queue of pending writes per client (the baseline's), not
	// EdgeID's default of 256: the QoS 0 subscriber must get every message,
	// and a busy machine could otherwise overflow its queue.
	opts = append([]gwOpt{func(c *configT) { c.MQTT.MaxPendingWrites = 1024 * 8 }}, opts...)
	g := startGatewayTB(b, opts...)
	var ds []store.Device
	for i := 0; i < benchPublishers; i++ {
		ds = append(ds, store.Device{ID: fmt.Sprintf("bench-%d", i), Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
	}
	if _, err := g.g.Store.Apply(&store.Batch{Devices: ds}, nil); err != nil {
		b.Fatal(err)
	}
	return g
}

func runThroughput(b *testing.B, addr string, connect func(id string) *paho.Connect) {
	var received atomic.Int64
	target := int64(b.N)
	done := make(chan struct{})
	var once sync.Once
	dial := func(id string, onMsg func()) *paho.Client {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		cfg := paho.ClientConfig{Conn: conn, OnClientError: func(error) {}}
		if onMsg != nil {
			cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(paho.PublishReceived) (bool, error) {
				onMsg()
				return true, nil
			}}
		}
		c := paho.NewClient(cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ca, err := c.Connect(ctx, connect(id)); err != nil || ca.ReasonCode != 0 {
			b.Fatalf("connect %s: %v", id, err)
		}
		return c
	}
	sub := dial("acme-cloud", func() {
		if received.Add(1) == target {
			once.Do(func() { close(done) })
		}
	})
	defer sub.Disconnect(&paho.Disconnect{})
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/+/telemetry/#", QoS: 0}}}); err != nil {
		b.Fatal(err)
	}
	pubs := make([]*paho.Client, benchPublishers)
	for i := range pubs {
		pubs[i] = dial(fmt.Sprintf("bench-%d", i), nil)
		defer pubs[i].Disconnect(&paho.Disconnect{})
	}
	payload := []byte(`{"t":21.5,"h":40}`)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range pubs {
		n := b.N / benchPublishers
		if i < b.N%benchPublishers {
			n++
		}
		wg.Add(1)
		go func(p *paho.Client, topic string, n int) {
			defer wg.Done()
			for j := 0; j < n; j++ {
				if _, err := p.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
					b.Error(err)
					return
				}
			}
		}(p, fmt.Sprintf("devices/bench-%d/telemetry/env", i), n)
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("subscriber got %d of %d messages", received.Load(), target)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
}

// Token connects per second: TCP connect, MQTT 5 CONNECT with an ES256 token
// (method ace), CONNACK, DISCONNECT. "fresh" presents a new token every time
// (signature verified), "cached" the same token (verified once, then found by
// hash); "mochi-allow-all" is the same exchange with no authentication at all.
//
//	go test -run '^$' -bench BenchmarkTokenConnect -benchtime 2000x -count 5 ./edge/
func BenchmarkTokenConnect(b *testing.B) {
	connectOnce := func(b *testing.B, addr string, cp *paho.Connect) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
		ca, err := c.Connect(context.Background(), cp)
		if err != nil || ca.ReasonCode != 0 {
			b.Fatalf("connect: %v", err)
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}
	b.Run("mochi-allow-all", func(b *testing.B) {
		srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		_ = srv.AddHook(new(auth.AllowHook), nil)
		l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
		_ = srv.AddListener(l)
		if err := srv.Serve(); err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			connectOnce(b, l.Address(), &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true})
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
	})
	g := startBenchGateway(b)
	b.Run("edgeid-fresh", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			toks[i] = g.token("thermo-1", "alice", nil)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			connectOnce(b, g.g.Addr("tcp"), &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true,
				Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(toks[i])}})
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
	})
	b.Run("edgeid-cached", func(b *testing.B) {
		tok := []byte(g.token("thermo-1", "alice", nil))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			connectOnce(b, g.g.Addr("tcp"), &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true,
				Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: tok}})
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
	})
}

// startMosquitto runs Debian's Mosquitto 2 with a password file and an ACL
// file granting what the EdgeID classes grant, as a second baseline.
func startMosquitto(b *testing.B) string {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		b.Skip("mosquitto not installed (Debian package mosquitto)")
	}
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	pw := filepath.Join(dir, "passwd")
	users := []string{"acme-cloud"}
	for i := 0; i < benchPublishers; i++ {
		users = append(users, fmt.Sprintf("bench-%d", i))
	}
	for i, u := range users {
		args := []string{"-b", pw, u, "pw-" + u}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			b.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	acl := "user acme-cloud\ntopic read devices/+/telemetry/#\ntopic write devices/+/commands/#\n\n" +
		"pattern write devices/%u/telemetry/#\npattern read devices/%u/commands/#\n"
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\nuser root\npersistence false\nlog_type error\n", port, pw, filepath.Join(dir, "acl"))
	if err := os.WriteFile(filepath.Join(dir, "acl"), []byte(acl), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatal("mosquitto did not start")
	return ""
}
