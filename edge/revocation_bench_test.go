package edge_test

// Revocation latency, end to end:
//
//	go test -run '^$' -bench BenchmarkRevocationLatency -benchtime 200x ./edge/
//	EDGEID_BENCH_SESSIONS=10000 go test -run '^$' -bench BenchmarkRevocationLatency -benchtime 200x ./edge/

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// BenchmarkRevocationLatency measures how long a device revocation takes from
// the operator's call at the authority (POST /admin/v1/devices/{id}/revoke
// over HTTPS) to the revoked device's MQTT session receiving DISCONNECT from
// the gateway, through the signed feed's push stream, with the gateway
// holding 100,000 revocations and N live sessions (EDGEID_BENCH_SESSIONS,
// default 1,000). Each iteration revokes a different connected device, so
// -benchtime must be given as a count no larger than N (e.g. 200x).
//
// Metrics: p50-ms and p99-ms of the latency; call-p50-ms, the median of the
// HTTPS call alone (the authority's commit, before the push); rss-MB, the
// resident memory of the whole test process (authority, gateway and the N
// clients: both ends of every session are here) once the sessions are up, and
// rss-before-sessions-MB the same with the records loaded and no session yet.
// Both ends in one process need 2N open files: N=10,000 needs ulimit -n
// above 20,300.
func BenchmarkRevocationLatency(b *testing.B) {
	n := benchSessions(b)
	const (
		held     = 100_000
		perBatch = 4000 // under Badger's transaction limit
	)
	x := startBenchAuthority(b)
	iss, err := demo.NewIssuer("https://issuer.bench", "bench-1")
	if err != nil {
		b.Fatal(err)
	}
	rec, err := iss.Record()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := x.a.Apply(&store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec}}, "bench"); err != nil {
		b.Fatal(err)
	}

	// The gateway enrolls first and takes its snapshot while the authority is
	// small; the records then arrive as deltas (a snapshot of 100,000
	// revocations is one Badger transaction, too large to apply).
	g := startGatewayTB(b, func(c *configT) {
		c.Sync.Enrollment = x.enroll(b, "bench-gw")
		c.MQTT.MaxClients = int64(n) + 100
		c.MQTT.TLS.Listen = ""
	})
	waitCaughtUpTB(b, g, x, time.Minute)

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("sensor-%05d", i)
	}
	for chunk := range slices.Chunk(ids, 2000) {
		var ds []store.Device
		for _, id := range chunk {
			ds = append(ds, store.Device{ID: id, Class: "thermostat", Status: store.DeviceActive})
		}
		if _, err := x.a.Apply(&store.Batch{Devices: ds}, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	exp := time.Now().Add(time.Hour)
	for i := 0; i < held; i += perBatch {
		rs := make([]store.Revocation, 0, perBatch)
		for j := i; j < min(i+perBatch, held); j++ {
			rs = append(rs, store.Revocation{Kind: store.RevokeToken, Value: fmt.Sprintf("held-%06d", j), ExpiresAt: exp})
		}
		if _, err := x.a.Apply(&store.Batch{Revocations: rs}, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	waitCaughtUpTB(b, g, x, 2*time.Minute)
	if c, _ := g.g.Store.Counts(); c["revocations"] < held || c["devices"] != n {
		b.Fatalf("gateway holds %v, want %d revocations and %d devices", c, held, n)
	}

	var class store.DeviceClass
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			class = c
		}
	}
	base := residentMB(b)
	sessions := connectSensors(b, g.g.Addr("tcp"), ids, func(id string) (string, error) {
		return iss.Mint(iss.Claims(id, id, "edgeid", demo.Scope(class, id, ""), time.Hour), nil)
	})
	rss := residentMB(b)

	order := rand.Perm(n)
	samples := make([]time.Duration, 0, 256)
	calls := make([]time.Duration, 0, 256) // the HTTPS call alone: the authority's commit
	i := 0
	for b.Loop() {
		if i == n {
			b.Fatalf("more iterations than sessions (%d): use -benchtime %dx or fewer, or raise EDGEID_BENCH_SESSIONS", n, n)
		}
		s := sessions[order[i]]
		i++
		t0 := time.Now()
		x.revoke(b, s.id)
		calls = append(calls, time.Since(t0))
		select {
		case d := <-s.disconnect:
			samples = append(samples, d.at.Sub(t0))
			if d.code != 0x87 {
				b.Fatalf("%s: DISCONNECT 0x%02x, want 0x87", s.id, d.code)
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("%s: no DISCONNECT within 10s of its revocation", s.id)
		}
	}
	reportLatency(b, samples, calls)
	b.ReportMetric(rss, "rss-MB")
	b.ReportMetric(base, "rss-before-sessions-MB")
	b.ReportMetric(float64(n), "sessions")
}

// benchSessions is EDGEID_BENCH_SESSIONS (default 1,000), checked against
// the open-file limit: both ends of every session are in this process.
func benchSessions(b *testing.B) int {
	n := 1000
	if s := os.Getenv("EDGEID_BENCH_SESSIONS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("EDGEID_BENCH_SESSIONS=%q: want a positive number", s)
		}
		n = v
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(2*n+300) {
		b.Fatalf("%d sessions need about %d open files (both ends are in this process); the limit is %d (ulimit -n)", n, 2*n+300, lim.Cur)
	}
	return n
}

// reportLatency reports p50-ms and p99-ms of samples and call-p50-ms of calls.
func reportLatency(b *testing.B, samples, calls []time.Duration) {
	pct := func(ds []time.Duration, p float64) float64 {
		slices.Sort(ds)
		k := int(float64(len(ds))*p+0.999999) - 1
		return float64(ds[max(k, 0)]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(samples, 0.50), "p50-ms")
	b.ReportMetric(pct(samples, 0.99), "p99-ms")
	b.ReportMetric(pct(calls, 0.50), "call-p50-ms")
}

// benchAuthority is startAuthority for a testing.TB: a real authority on
// loopback HTTPS, in-process.
type benchAuthority struct {
	a   *authority.Authority
	srv *httptest.Server
	fp  string
	hc  *http.Client
}

const benchAdminToken = "admin-secret-for-benchmarks"

func startBenchAuthority(tb testing.TB) *benchAuthority {
	tb.Helper()
	st, err := store.Open(store.Options{Dir: tb.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() }) // last: after the server has stopped
	var h http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	x := &benchAuthority{srv: srv}
	tb.Cleanup(func() {
		if x.a != nil {
			x.a.Close()
		}
		srv.Close()
	})
	x.a, err = authority.New(authority.Config{URL: srv.URL, TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour}, st, slog.New(slog.NewTextHandler(testWriter{tb}, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	h = authority.NewHandler(x.a, benchAdminToken)
	sum := sha256.Sum256(srv.Certificate().Raw)
	x.fp = hex.EncodeToString(sum[:])
	x.hc = syncclient.HTTPClient(x.fp)
	return x
}

// enroll makes an enrollment for a gateway called name and saves it.
func (x *benchAuthority) enroll(tb testing.TB, name string) string {
	tb.Helper()
	code, _, err := x.a.AddGateway(name, "bench")
	if err != nil {
		tb.Fatal(err)
	}
	e, err := syncclient.Enroll(context.Background(), x.srv.URL, x.fp, code, "bench-board")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "enrollment.json")
	if err := e.Save(path); err != nil {
		tb.Fatal(err)
	}
	return path
}

// revoke is the operator's call: POST /admin/v1/devices/{id}/revoke.
func (x *benchAuthority) revoke(tb testing.TB, id string) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, x.srv.URL+"/admin/v1/devices/"+id+"/revoke?reason=bench", nil)
	req.Header.Set("Authorization", "Bearer "+benchAdminToken)
	resp, err := x.hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("revoke %s: %s %s", id, resp.Status, data)
	}
}

// waitCaughtUpTB waits until the gateway's cursor is at the authority's rev.
func waitCaughtUpTB(tb testing.TB, g *gw, x *benchAuthority, limit time.Duration) {
	tb.Helper()
	want, err := x.a.Store.Rev()
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(limit)
	for {
		cur, err := g.g.Store.Cursor()
		if err == nil && cur.Seq == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("gateway cursor %+v (err %v), authority at rev %d after %s", cur, err, want, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchSensor is one connected MQTT 5 client.
type benchSensor struct {
	id         string
	c          *paho.Client
	conn       net.Conn
	disconnect chan serverDisconnect
}

// serverDisconnect is a DISCONNECT from the gateway and when it arrived.
type serverDisconnect struct {
	code byte
	at   time.Time
}

// connectSensors connects one client per id (token with method "ace"), a
// few at a time, and disconnects them when the benchmark ends.
func connectSensors(tb testing.TB, addr string, ids []string, token func(id string) (string, error)) []*benchSensor {
	tb.Helper()
	out := make([]*benchSensor, len(ids))
	tb.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range out {
			if s != nil {
				wg.Go(func() { _ = s.c.Disconnect(&paho.Disconnect{}); s.conn.Close() })
			}
		}
		wg.Wait()
		clear(out) // testing keeps cleanup funcs reachable after the run
	})
	work := make(chan int)
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				tok, err := token(ids[i])
				if err != nil {
					errs <- err
					continue
				}
				s, err := connectSensor(addr, ids[i], tok)
				if err != nil {
					errs <- err
					continue
				}
				out[i] = s
			}
		})
	}
	for i := range ids {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatalf("connecting %d sessions: %v", len(ids), err)
	}
	return out
}

func connectSensor(addr, id, token string) (*benchSensor, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	s := &benchSensor{id: id, conn: conn, disconnect: make(chan serverDisconnect, 1)}
	s.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case s.disconnect <- serverDisconnect{d.ReasonCode, time.Now()}:
			default:
			}
		},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A small Receive Maximum: paho sizes a per-client channel by it (65,535
	// by default, 512 KB each), which would dominate the memory measured.
	recvMax := uint16(16)
	ca, err := s.c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 300, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(token), ReceiveMaximum: &recvMax}})
	if err != nil || ca.ReasonCode != 0 {
		conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("%s: CONNACK 0x%02x", id, ca.ReasonCode)
		}
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	return s, nil
}

// residentMB is this process's resident set (VmRSS) in MB, after a GC that
// returns free memory to the OS (so that it measures what is live, and runs
// with -count do not see the memory of the run before).
func residentMB(tb testing.TB) float64 {
	debug.FreeOSMemory()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Logf("no /proc/self/status: %v", err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
