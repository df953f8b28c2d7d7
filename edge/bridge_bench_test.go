package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// The cloud bridge under load, EdgeID beside a Mosquitto-to-Mosquitto bridge
// in the same run, both to the same kind of cloud (testenv.StartCloud: Debian's
// Mosquitto, TLS with the gateway's client certificate, an ACL confining it to
// gateways/test-gw/#):
//
//   - mosquitto-bridge: a local Mosquitto (anonymous, plain TCP on loopback)
//     with a `connection` section `topic devices/# out 1 "" gateways/test-gw/`
//     to the cloud, with the gateway's certificate.
//   - edgeid-sync-batch / edgeid-sync-write: the gateway with one remote and
//     the out rule devices/+/telemetry/# at QoS 1, bridge.queue.sync batch
//     (the default: fsync before the device's PUBACK) or write.
//
// N publishers (paho.golang, QoS 1, one PUBLISH in flight each, as every
// device does) send M messages of bridgeBenchPayload bytes in all; a cloud
// application subscribed to gateways/test-gw/# at QoS 1 counts distinct
// arrivals (the payload carries the message's number).
//
//	go test -run '^$' -bench BenchmarkBridge -benchtime 1x ./edge/
//
// EDGEID_BRIDGE_BENCH_M changes M (default 20000).

const (
	bridgeBenchPublishers = 10
	bridgeBenchPayload    = 64
	bridgeBenchPrefix     = "gateways/test-gw/"
)

func bridgeBenchM(b *testing.B) int {
	if s := os.Getenv("EDGEID_BRIDGE_BENCH_M"); s != "" {
		m, err := strconv.Atoi(s)
		if err != nil || m < bridgeBenchPublishers {
			b.Fatalf("EDGEID_BRIDGE_BENCH_M=%q", s)
		}
		return m
	}
	return 20000
}

// BenchmarkBridgeForward: the cloud is up; messages per second from the
// first PUBLISH until the cloud application has all M.
func BenchmarkBridgeForward(b *testing.B) {
	for _, s := range bridgeBenchSetups() {
		b.Run(s.name, func(b *testing.B) {
			m := bridgeBenchM(b)
			e := s.start(b)
			pubs := e.publishers(b)
			arr := newArrivals(m)
			app := dialBenchApp(b, e.cloud, arr)
			defer app.Disconnect(&paho.Disconnect{})
			e.probe(b, pubs[0], arr)
			w0, d0, p0, f0 := e.bytesWritten(), procWriteBytes(b, "self"), e.localWriteBytes(b), e.forwarded()
			b.ResetTimer()
			start := time.Now()
			pubDone := publishAll(b, pubs, m)
			arr.wait(b, e.what(), 60*time.Second)
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(m)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(m)/pubDone.Seconds(), "puback-msgs/s")
			b.ReportMetric(float64(arr.dups.Load()), "dups")
			if e.g != nil {
				st := e.g.g.Bridge.Status()[0]
				b.ReportMetric(float64(st.BytesWritten-w0)/float64(m), "queue-bytes/msg")
				b.ReportMetric(float64(procWriteBytes(b, "self")-d0)/float64(m), "proc-write-bytes/msg")
				// The cloud delivers before it acknowledges the bridge:
				// Forwarded (counted at the PUBACK) may trail a little.
				for deadline := time.Now().Add(5 * time.Second); e.forwarded()-f0 < uint64(m) && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				if f := e.forwarded() - f0; f != uint64(m) {
					b.Errorf("forwarded %d, want %d", f, m)
				}
			} else {
				b.ReportMetric(float64(e.localWriteBytes(b)-p0)/float64(m), "proc-write-bytes/msg")
			}
		})
	}
}

// BenchmarkBridgeDrain: the cloud is stopped (killed), M messages are
// published (queued at the bridge), the cloud is started and the cloud
// application connects at once. drain-msgs/s is M over the time from the
// start of the cloud until the application has all M; that time includes
// the bridge's reconnect back-off, reported as first-s (seconds until the
// first arrival); after-first-msgs/s is the rate from the first arrival on.
func BenchmarkBridgeDrain(b *testing.B) {
	for _, s := range bridgeBenchSetups() {
		b.Run(s.name, func(b *testing.B) {
			m := bridgeBenchM(b)
			e := s.start(b)
			pubs := e.publishers(b)
			warm := newArrivals(0)
			app := dialBenchApp(b, e.cloud, warm)
			e.probe(b, pubs[0], warm)
			_ = app.Disconnect(&paho.Disconnect{})
			e.cloud.Stop()
			e.waitDown(b)
			w0, d0 := e.bytesWritten(), procWriteBytes(b, "self")
			pubDone := publishAll(b, pubs, m)
			if e.g != nil {
				if st := e.g.g.Bridge.Status()[0]; st.Queued != uint64(m) {
					b.Fatalf("%d queued during the outage, want %d: %+v", st.Queued, m, st)
				}
			}
			arr := newArrivals(m)
			b.ResetTimer()
			start := time.Now()
			e.cloud.Start()
			app = dialBenchApp(b, e.cloud, arr)
			defer app.Disconnect(&paho.Disconnect{})
			subscribed := time.Since(start)
			lost := arr.wait(b, e.what(), 45*time.Second)
			el := time.Since(start)
			b.StopTimer()
			got := arr.unique.Load()
			if lost {
				b.Logf("%s: the cloud application got %d of %d queued messages (no arrival for 45 s)", s.name, got, m)
			}
			first := time.Duration(arr.first.Load()) - time.Duration(start.UnixNano())
			last := time.Duration(arr.last.Load()) - time.Duration(start.UnixNano())
			b.ReportMetric(float64(got)/el.Seconds(), "drain-msgs/s")
			b.ReportMetric(first.Seconds(), "first-s")
			if got > 1 && last > first {
				b.ReportMetric(float64(got-1)/(last-first).Seconds(), "after-first-msgs/s")
			}
			b.ReportMetric(float64(m-int(got)), "lost")
			b.ReportMetric(float64(arr.dups.Load()), "dups")
			b.ReportMetric(float64(m)/pubDone.Seconds(), "offline-puback-msgs/s")
			b.Logf("%s: cloud app subscribed %v after the cloud's start", s.name, subscribed.Round(time.Millisecond))
			if e.g != nil {
				st := e.g.g.Bridge.Status()[0]
				b.ReportMetric(float64(st.BytesWritten-w0)/float64(m), "queue-bytes/msg")
				b.ReportMetric(float64(procWriteBytes(b, "self")-d0)/float64(m), "proc-write-bytes/msg")
			}
		})
	}
}

type bridgeBenchSetup struct {
	name  string
	start func(b *testing.B) *bridgeBenchEnv
}

func bridgeBenchSetups() []bridgeBenchSetup {
	edgeid := func(sync string, interval time.Duration) func(b *testing.B) *bridgeBenchEnv {
		return func(b *testing.B) *bridgeBenchEnv { return startEdgeIDBridge(b, sync, interval) }
	}
	return []bridgeBenchSetup{
		{"mosquitto-bridge", startMosquittoBridge},
		{"edgeid-sync-batch", edgeid("batch", config.Default().Bridge.Queue.SyncInterval)},
		{"edgeid-sync-batch-10ms", edgeid("batch", 10*time.Millisecond)},
		{"edgeid-sync-write", edgeid("write", config.Default().Bridge.Queue.SyncInterval)},
	}
}

// bridgeBenchEnv is one bridge under test: a gateway (g) or a local
// Mosquitto (localPid, localAddr), and its cloud.
type bridgeBenchEnv struct {
	cloud     *testenv.Cloud
	g         *gw
	localAddr string
	localPid  int
	localLog  *testenv.Buf
}

func (e *bridgeBenchEnv) what() string {
	if e.g != nil {
		return fmt.Sprintf("bridge %+v\ngateway logs:\n%s\ncloud log:\n%s", e.g.g.Bridge.Status()[0], e.g.logs.String(), e.cloud.Log.String())
	}
	return fmt.Sprintf("local mosquitto log:\n%s\ncloud log:\n%s", e.localLog.String(), e.cloud.Log.String())
}

func (e *bridgeBenchEnv) bytesWritten() uint64 {
	if e.g == nil {
		return 0
	}
	return e.g.g.Bridge.Status()[0].BytesWritten
}

func (e *bridgeBenchEnv) forwarded() uint64 {
	if e.g == nil {
		return 0
	}
	return e.g.g.Bridge.Status()[0].Forwarded
}

func (e *bridgeBenchEnv) localWriteBytes(b *testing.B) int64 {
	if e.g != nil {
		return 0
	}
	return procWriteBytes(b, strconv.Itoa(e.localPid))
}

func skipWithoutMosquitto(b *testing.B) {
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if _, err := os.Stat("/usr/sbin/mosquitto"); err != nil {
			b.Skip("mosquitto not installed (Debian package mosquitto)")
		}
	}
}

func startEdgeIDBridge(b *testing.B, sync string, interval time.Duration) *bridgeBenchEnv {
	skipWithoutMosquitto(b)
	cloud := testenv.StartCloud(b, "test-gw")
	r := cloud.Remote("cloud", config.BridgeRule{Filter: "devices/+/telemetry/#", Direction: "out", QoS: 1})
	g := startGatewayTB(b, func(c *config.Config) {
		c.Bridge.Remotes = []config.Remote{r}
		c.Bridge.Queue.Sync, c.Bridge.Queue.SyncInterval = sync, interval
	})
	var ds []store.Device
	for i := 0; i < bridgeBenchPublishers; i++ {
		ds = append(ds, store.Device{ID: fmt.Sprintf("bench-%d", i), Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
	}
	if _, err := g.g.Store.Apply(&store.Batch{Devices: ds}, nil); err != nil {
		b.Fatal(err)
	}
	e := &bridgeBenchEnv{cloud: cloud, g: g}
	e.waitBridgeState(b, "connected", func(s string) bool { return s == "connected" })
	return e
}

func (e *bridgeBenchEnv) waitBridgeState(b *testing.B, what string, ok func(string) bool) {
	deadline := time.Now().Add(opTimeout)
	for !ok(e.g.g.Bridge.Status()[0].State) {
		if time.Now().After(deadline) {
			b.Fatalf("bridge never %s: %s", what, e.what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDown waits until the bridge has noticed that the cloud is gone.
func (e *bridgeBenchEnv) waitDown(b *testing.B) {
	if e.g != nil {
		e.waitBridgeState(b, "noticed the outage", func(s string) bool { return s != "connected" })
		return
	}
	// Mosquitto sees the connection close at once; give it a moment.
	time.Sleep(500 * time.Millisecond)
}

// startMosquittoBridge starts a local Mosquitto bridged to a new cloud.
func startMosquittoBridge(b *testing.B) *bridgeBenchEnv {
	skipWithoutMosquitto(b)
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	cloud := testenv.StartCloud(b, "test-gw")
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	// persistence false, as the cloud's: the bridge's queue is in memory.
	// max_queued_messages high so that the outage's M messages are kept;
	// max_inflight_messages 256, EdgeID's window (Mosquitto's default is 20).
	conf := fmt.Sprintf("per_listener_settings false\nallow_anonymous true\npersistence false\nlog_type error\nlog_type warning\nlog_dest stderr\n"+
		"max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 256\n"+
		"listener %s 127.0.0.1\n"+
		"\nconnection cloud\naddress %s\nbridge_protocol_version mqttv50\nremote_clientid test-gw\ncleansession false\nnotifications false\n"+
		"bridge_cafile %s\nbridge_certfile %s\nbridge_keyfile %s\n"+
		"topic devices/# out 1 \"\" %s\n",
		port, cloud.Addr, cloud.CA, cloud.GWCert, cloud.GWKey, bridgeBenchPrefix)
	if os.Geteuid() == 0 {
		conf = "user root\n" + conf
	}
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	e := &bridgeBenchEnv{cloud: cloud, localAddr: addr, localLog: &testenv.Buf{}}
	cmd := exec.Command(bin, "-c", path)
	cmd.Stderr = e.localLog
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	e.localPid = cmd.Process.Pid
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i == 200 {
			b.Fatalf("local mosquitto did not listen: %s", e.what())
		}
		time.Sleep(25 * time.Millisecond)
	}
	return e
}

// publishers connects the N publishers: bench-<i> with demo tokens at the
// gateway, anonymous at the local Mosquitto.
func (e *bridgeBenchEnv) publishers(b *testing.B) []*paho.Client {
	pubs := make([]*paho.Client, bridgeBenchPublishers)
	for i := range pubs {
		id := fmt.Sprintf("bench-%d", i)
		if e.g != nil {
			pubs[i] = e.g.mustConnect(connOpts{clientID: id, token: e.g.token(id, "alice", nil)}).c
			continue
		}
		nc, err := net.Dial("tcp", e.localAddr)
		if err != nil {
			b.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc, OnClientError: func(error) {}})
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
		cancel()
		if err != nil || ca.ReasonCode != 0 {
			b.Fatalf("connect %s: %v", id, err)
		}
		b.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		pubs[i] = c
	}
	return pubs
}

// probe publishes through the bridge until the cloud application has one:
// the bridge is up end to end.
func (e *bridgeBenchEnv) probe(b *testing.B, p *paho.Client, arr *arrivals) {
	deadline := time.Now().Add(60 * time.Second)
	for arr.probes.Load() == 0 {
		if time.Now().After(deadline) {
			b.Fatalf("no probe reached the cloud: %s", e.what())
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := p.Publish(ctx, &paho.Publish{Topic: "devices/bench-0/telemetry/probe", QoS: 1, Payload: []byte("probe")})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < 20 && arr.probes.Load() == 0; i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// publishAll sends m messages from the publishers, each its share in turn,
// and returns when the last PUBACK came.
func publishAll(b *testing.B, pubs []*paho.Client, m int) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("devices/bench-%d/telemetry/env", i)
			for k := i; k < m; k += len(pubs) {
				payload := fmt.Appendf(nil, "%08d ", k)
				payload = append(payload, strings.Repeat("x", bridgeBenchPayload-len(payload))...)
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				r, err := p.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
				cancel()
				if err != nil {
					b.Errorf("publish %d: %v", k, err)
					return
				}
				if r != nil && r.ReasonCode >= 0x80 {
					b.Errorf("publish %d: reason 0x%02x", k, r.ReasonCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return time.Since(start)
}

// arrivals counts what the cloud application receives.
type arrivals struct {
	mu          sync.Mutex
	seen        []bool
	unique      atomic.Int64
	dups        atomic.Int64
	probes      atomic.Int64
	first, last atomic.Int64 // UnixNano
	progress    chan struct{}
	done        chan struct{}
}

func newArrivals(m int) *arrivals {
	return &arrivals{seen: make([]bool, m), progress: make(chan struct{}, 1), done: make(chan struct{})}
}

func (a *arrivals) add(p *paho.Publish) {
	if !strings.HasPrefix(p.Topic, bridgeBenchPrefix+"devices/bench-") {
		return
	}
	if string(p.Payload) == "probe" {
		a.probes.Add(1)
		return
	}
	k, err := strconv.Atoi(strings.TrimSpace(string(p.Payload[:min(9, len(p.Payload))])))
	if err != nil || k < 0 || k >= len(a.seen) {
		return
	}
	now := time.Now().UnixNano()
	a.mu.Lock()
	dup := a.seen[k]
	a.seen[k] = true
	a.mu.Unlock()
	if dup {
		a.dups.Add(1)
		return
	}
	a.first.CompareAndSwap(0, now)
	a.last.Store(now)
	if a.unique.Add(1) == int64(len(a.seen)) {
		close(a.done)
	}
	select {
	case a.progress <- struct{}{}:
	default:
	}
}

// missing describes the messages that have not arrived.
func (a *arrivals) missing() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ks []string
	n := 0
	for k, ok := range a.seen {
		if !ok {
			if n < 10 {
				ks = append(ks, strconv.Itoa(k))
			}
			n++
		}
	}
	return fmt.Sprintf("%d (first: %s)", n, strings.Join(ks, " "))
}

// wait waits until every message arrived; it fails the benchmark when none
// arrives for idle, unless the bridge is Mosquitto's, for which it returns
// true (messages lost) so that the loss is reported.
func (a *arrivals) wait(b *testing.B, what string, idle time.Duration) (lost bool) {
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case <-a.done:
			return false
		case <-a.progress:
			t.Reset(idle)
		case <-t.C:
			if strings.Contains(what, "local mosquitto") {
				return true
			}
			dump := filepath.Join(os.TempDir(), fmt.Sprintf("bridge-bench-stall-%d.txt", time.Now().UnixNano()))
			if f, err := os.Create(dump); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 2)
				f.Close()
			}
			b.Fatalf("the cloud application has %d of %d messages, none for %s; missing %s; goroutines in %s: %s",
				a.unique.Load(), len(a.seen), idle, a.missing(), dump, what)
		}
	}
}

// dialBenchApp connects the cloud application and subscribes it to
// gateways/test-gw/# at QoS 1.
func dialBenchApp(b *testing.B, cloud *testenv.Cloud, arr *arrivals) *paho.Client {
	tc, err := tls.Dial("tcp", cloud.Addr, cloud.AppTLS())
	if err != nil {
		b.Fatal(err)
	}
	nc := testenv.LockedConn(tc) // see testenv.LockedConn: paho.golang over TLS
	pc := paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			arr.add(pr.Packet)
			return true, nil
		}},
		OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if ca, err := pc.Connect(ctx, &paho.Connect{ClientID: "cloud-app", KeepAlive: 30, CleanStart: true}); err != nil || ca.ReasonCode != 0 {
		b.Fatalf("cloud app connect: %v %+v", err, ca)
	}
	sa, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: bridgeBenchPrefix + "#", QoS: 1}}})
	if err != nil || sa.Reasons[0] >= 0x80 {
		b.Fatalf("cloud app subscribe: %v %+v", err, sa)
	}
	return pc
}

// procWriteBytes is write_bytes of /proc/<pid>/io: what the process caused
// to be written to storage (for "self", the whole test process).
func procWriteBytes(b *testing.B, pid string) int64 {
	f, err := os.Open("/proc/" + pid + "/io")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}
