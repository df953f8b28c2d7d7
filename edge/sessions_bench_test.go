package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// BenchmarkSessionsMemory measures the gateway's resident memory with N
// token sessions, the gateway and the clients in separate processes
// (edgeid serve, and edgeid-sensor load):
//
//	EDGEID_BENCH_SESSIONS=10000 go test -run '^$' -bench BenchmarkSessionsMemory -benchtime 1x ./edge/
func BenchmarkSessionsMemory(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("EDGEID_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	for _, cmd := range []string{"edgeid", "edgeid-sensor"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "../cmd/"+cmd).CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", cmd, err, out)
		}
	}
	sockDir, _ := os.MkdirTemp("", "eidmem")
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "admin.sock")
	cfg := filepath.Join(dir, "edgeid.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("gateway:\n  id: mem\nstate_dir: %s\nlog:\n  level: warn\nmqtt:\n  tcp: 127.0.0.1:18830\n  tls:\n    listen: \"\"\n  connect_rate: 0\n  max_clients: %d\nadmin:\n  socket: %s\nmetrics:\n  listen: 127.0.0.1:19464\nthrottle:\n  device:\n    messages_per_second: 0\n  subject:\n    messages_per_second: 0\n",
		filepath.Join(dir, "state"), n+100, sock)), 0o600)
	gw := exec.Command(filepath.Join(dir, "edgeid"), "serve", "-c", cfg)
	gw.Env = append(os.Environ(), "GOMEMLIMIT="+os.Getenv("EDGEID_BENCH_GOMEMLIMIT"), "GODEBUG="+os.Getenv("EDGEID_BENCH_GODEBUG"))
	gw.Stderr = os.Stderr
	if err := gw.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = gw.Process.Kill(); _ = gw.Wait() }()
	ac := admin.NewClient(sock)
	waitUntil := func(what string, f func() bool) {
		for i := 0; !f(); i++ {
			if i > 6000 {
				b.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitUntil("the gateway", func() bool { _, err := ac.Status(context.Background()); return err == nil })

	iss, _ := demo.NewIssuer("https://issuer.test", "k1")
	bundle, _ := demo.Bundle(iss, "")
	var lines []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("mem-%05d", i)
		bundle.Devices = append(bundle.Devices, store.Device{ID: id, Class: "thermostat", Status: store.DeviceActive})
		tok, _ := iss.Mint(iss.Claims(id, id, "edgeid", "publish:devices/"+id+"/telemetry/#", time.Hour), nil)
		lines = append(lines, id+" "+tok)
	}
	for i := 0; i < len(bundle.Devices); i += 4000 { // one transaction each
		part := *bundle
		part.Devices = bundle.Devices[i:min(i+4000, len(bundle.Devices))]
		if i > 0 {
			part.Classes, part.Issuers, part.Users = nil, nil, nil
		}
		raw, _ := json.Marshal(part)
		if _, err := ac.Import(context.Background(), raw); err != nil {
			b.Fatal(err)
		}
	}
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(strings.Join(lines, "\n")), 0o600)
	rss := func(pid int) float64 {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
		return 0
	}
	before := rss(gw.Process.Pid)
	b.ResetTimer()
	load := exec.Command(filepath.Join(dir, "edgeid-sensor"), "load", "--broker", "127.0.0.1:18830", "--tokens", tokens, "--rate", "0", "--duration", "1s", "--hold", "10m")
	if err := load.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = load.Process.Kill(); _ = load.Wait() }()
	start := time.Now()
	waitUntil("all sessions", func() bool { s, err := ac.Status(context.Background()); return err == nil && s.Sessions == n })
	connectTime := time.Since(start)
	time.Sleep(2 * time.Second) // let allocations settle
	if dst := os.Getenv("EDGEID_BENCH_HEAP"); dst != "" {
		_ = exec.Command("curl", "-s", "-o", dst, "http://127.0.0.1:19464/debug/pprof/heap").Run()
		_ = exec.Command("curl", "-s", "-o", dst+".metrics", "http://127.0.0.1:19464/metrics").Run()
	}
	b.StopTimer()
	b.ReportMetric(float64(n), "sessions")
	b.ReportMetric(rss(gw.Process.Pid), "gateway-rss-MB")
	// Settled: after the connect burst, two collections (each shrinks idle
	// goroutine stacks by up to half) and a while for the scavenger.
	for range 2 {
		_ = exec.Command("curl", "-s", "-o", "/dev/null", "http://127.0.0.1:19464/debug/pprof/heap?gc=1").Run()
	}
	time.Sleep(5 * time.Second)
	b.ReportMetric(rss(gw.Process.Pid), "settled-rss-MB")
	if out, err := exec.Command("curl", "-s", "http://127.0.0.1:19464/metrics").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && (f[0] == "go_memstats_stack_inuse_bytes" || f[0] == "go_memstats_heap_inuse_bytes") {
				v, _ := strconv.ParseFloat(f[1], 64)
				b.ReportMetric(v/(1<<20), "settled-"+strings.TrimPrefix(strings.TrimSuffix(f[0], "_bytes"), "go_memstats_")+"-MB")
			}
		}
	}
	b.ReportMetric(before, "rss-before-MB")
	b.ReportMetric(float64(n)/connectTime.Seconds(), "connects/s")
}
