package fleetbench_test

// The fleet-scale benchmark of issue 16, on both storage backends in one run:
//
//   - badger: one Authority on a Badger store in t.TempDir() (on disk), one
//     HTTPS server;
//   - postgres: two Authorities (replicas), each with its own pgstore handle
//     on one PostgreSQL database (internal/pgtest's server, with durability
//     switched back on: see postgresDurable), each with its own HTTPS server.
//
// For each, in order:
//
//  1. import: the classes, then EDGEID_FLEET_SITES sites of devices (each
//     site an owner user and EDGEID_FLEET_DEVICES/EDGEID_FLEET_SITES
//     devices owned by them), through Authority.Apply in batches of whole
//     sites of about EDGEID_FLEET_BATCH devices (on PostgreSQL, at the
//     first replica);
//  2. snapshot: Authority.Snapshot for a gateway enrolled in the first site,
//     five times (signed bytes, median time);
//  3. streams: EDGEID_FLEET_GATEWAYS simulated gateways, each in its own
//     site, enrolled for real (AddSiteGateway, then client.Enroll over
//     HTTPS with a fresh key), each takes its signed site snapshot and
//     holds GET /sync/v1/events with its own assertion on its own TLS
//     connection (on PostgreSQL, gateway i at replica i%2), verifying every
//     batch (cloudsync.Verify, then cloudsync.Check against its cursor) and
//     heartbeat; then EDGEID_FLEET_ROUNDS device revocations (admin API over
//     HTTPS) and as many token revocations (POST /oauth/revoke with the
//     admin key, over HTTPS), each timed from just before the HTTPS call
//     until the last gateway it reaches has verified the batch carrying it;
//  4. writes: EDGEID_FLEET_WRITERS goroutines calling
//     Authority.SetDeviceStatus (suspend, activate, …) on their own devices
//     for EDGEID_FLEET_WRITE_SECONDS, first with the gateways' streams
//     open, then with them closed (on PostgreSQL, half the writers at each
//     replica).
//
// It prints a Markdown table at the end. Nothing here asserts a time: the
// test fails only on errors.
//
// Other knobs: EDGEID_FLEET_BACKENDS (badger,postgres), EDGEID_FLEET_BATCH
// (1000), EDGEID_FLEET_ROUNDS (20), EDGEID_FLEET_WRITERS (8),
// EDGEID_FLEET_WRITE_SECONDS (10), EDGEID_FLEET_PG_MAX_CONNS (each
// replica's pool; unset: pgx's default, as the product's),
// EDGEID_FLEET_PG_DURABLE=0 (keep pgtest's fsync off), EDGEID_FLEET_IMPORT_ONLY=1
// (stop after the import) and EDGEID_FLEET_PROFILE_DIR (a CPU profile per
// phase).

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/internal/pgtest"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
	"github.com/edgeid/edgeid/store/pgstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// publicURL is the authorities' issuer URL (the audience of gateway
// assertions and client assertions), as a load balancer's name would be:
// clients connect to each server's own address.
const publicURL = "https://authority.fleet.test"

// params is the benchmark's scale, from the environment.
type params struct {
	devices, sites, gateways int
	perSite                  int // devices per site
	batch                    int // devices per import batch (whole sites)
	rounds                   int
	writers                  int
	writeFor                 time.Duration
	backends                 []string
	pgMaxConns               int
	pgDurable                bool
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func loadParams(t *testing.T) params {
	p := params{
		devices:   envInt(t, "EDGEID_FLEET_DEVICES", 1_000_000),
		sites:     envInt(t, "EDGEID_FLEET_SITES", 10_000),
		gateways:  envInt(t, "EDGEID_FLEET_GATEWAYS", 1_000),
		batch:     envInt(t, "EDGEID_FLEET_BATCH", 1_000),
		rounds:    envInt(t, "EDGEID_FLEET_ROUNDS", 20),
		writers:   envInt(t, "EDGEID_FLEET_WRITERS", 8),
		writeFor:  time.Duration(envInt(t, "EDGEID_FLEET_WRITE_SECONDS", 10)) * time.Second,
		pgDurable: os.Getenv("EDGEID_FLEET_PG_DURABLE") != "0",
		backends:  strings.Split(cmpOr(os.Getenv("EDGEID_FLEET_BACKENDS"), "badger,postgres"), ","),
	}
	if v := os.Getenv("EDGEID_FLEET_PG_MAX_CONNS"); v != "" { // unset: pgx's default, as the product's
		p.pgMaxConns = envInt(t, "EDGEID_FLEET_PG_MAX_CONNS", 0)
	}
	if p.devices%p.sites != 0 {
		t.Fatalf("EDGEID_FLEET_DEVICES %d is not a multiple of EDGEID_FLEET_SITES %d", p.devices, p.sites)
	}
	p.perSite = p.devices / p.sites
	if p.perSite < 4 {
		t.Fatalf("%d devices per site: want at least 4", p.perSite)
	}
	if p.gateways > p.sites || p.rounds > p.gateways {
		t.Fatalf("want EDGEID_FLEET_ROUNDS (%d) <= EDGEID_FLEET_GATEWAYS (%d) <= EDGEID_FLEET_SITES (%d)", p.rounds, p.gateways, p.sites)
	}
	p.batch = max(p.batch/p.perSite, 1) * p.perSite
	return p
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Names. Site s has the owner ownerID(s) and devices s*perSite … (s+1)*perSite-1.
func siteName(s int) string { return fmt.Sprintf("site-%05d", s) }
func ownerID(s int) string  { return fmt.Sprintf("owner-%05d", s) }
func deviceID(i int) string { return fmt.Sprintf("dev-%07d", i) }
func gwName(i int) string   { return fmt.Sprintf("gw-%04d", i) }

// gwSite is the site of simulated gateway i: spread over the fleet.
func (p params) gwSite(i int) int { return i * (p.sites / p.gateways) }

// keyPool are the devices' keys: device i has key i%len. Records are as
// large as with a key each; only 64 keys are made.
type keyPool struct {
	priv []jwk.Key
	pub  []json.RawMessage
}

func newKeyPool(t *testing.T, n int) *keyPool {
	kp := &keyPool{}
	for range n {
		k, err := cloudsync.NewES256Key()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := k.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(pub)
		if err != nil {
			t.Fatal(err)
		}
		kp.priv, kp.pub = append(kp.priv, k), append(kp.pub, raw)
	}
	return kp
}

func classes() []store.DeviceClass {
	return []store.DeviceClass{
		{Name: "thermostat", Description: "room thermostat", Permissions: []policy.Rule{
			{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
			{Filter: "devices/{device}/commands/#", Actions: policy.Subscribe},
			{Filter: "devices/{device}/status", Actions: policy.Publish | policy.Subscribe},
			{Filter: "owners/{owner}/alerts", Actions: policy.Publish},
		}},
		{Name: "sensor", Description: "environment sensor", Permissions: []policy.Rule{
			{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
			{Filter: "devices/{device}/status", Actions: policy.Publish},
		}},
	}
}

// siteBatch is the import of sites first … first+n-1: each site's owner and
// its devices.
func (p params) siteBatch(kp *keyPool, first, n int) *store.Batch {
	b := &store.Batch{}
	for s := first; s < first+n; s++ {
		b.Users = append(b.Users, store.User{ID: ownerID(s), Name: "Owner " + strconv.Itoa(s), Status: store.UserActive, Site: siteName(s)})
		for j := range p.perSite {
			i := s*p.perSite + j
			class := "thermostat"
			if j%2 == 1 {
				class = "sensor"
			}
			b.Devices = append(b.Devices, store.Device{ID: deviceID(i), Name: fmt.Sprintf("%s %d", class, j),
				Serial: fmt.Sprintf("SN-%07d", i), MAC: fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)),
				Class: class, Owner: ownerID(s), Status: store.DeviceActive, PublicKey: kp.pub[i%len(kp.pub)], Site: siteName(s)})
		}
	}
	return b
}

// backend is one storage backend's authorities and their HTTPS servers.
type backend struct {
	name   string
	auths  []*authority.Authority
	srvs   []*httptest.Server
	admins []*http.Client // one keep-alive client per server
	fp     string
	info   string
}

var adminToken = func() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

func logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", name)
}

// serve starts an Authority on st and its HTTPS server (requesting, not
// requiring, client certificates, as the product's listener); closed with t.
func (b *backend) serve(t *testing.T, st authority.Storage, name string) {
	cfg := authority.Config{URL: publicURL, TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour}
	a, err := authority.New(cfg, st, logger(b.name+"/"+name))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(authority.NewHandler(a, adminToken))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.Config.ErrorLog = nil
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(a.Close) // before srv.Close: it ends the event streams
	b.auths, b.srvs = append(b.auths, a), append(b.srvs, srv)
	b.fp = fingerprint(srv)
	b.admins = append(b.admins, syncclient.HTTPClient(b.fp))
}

func fingerprint(srv *httptest.Server) string {
	sum := sha256.Sum256(srv.Certificate().Raw)
	return hex.EncodeToString(sum[:])
}

func startBadger(t *testing.T) *backend {
	b := &backend{name: "badger"}
	dir := t.TempDir()
	st, err := store.Open(store.Options{Dir: dir, Logger: logger("badger-store")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b.serve(t, st, "a")
	b.info = "Badger store in " + dir
	return b
}

// postgresDurable turns durability back on on pgtest's server (it starts
// with fsync, synchronous_commit and full_page_writes off): the Badger
// store fsyncs each commit, so PostgreSQL must flush its WAL at each commit
// too for the two columns to compare. The server is this test binary's own.
func postgresDurable(t *testing.T, dsn string, on bool) string {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if on {
		for _, set := range []string{"fsync = on", "synchronous_commit = on", "full_page_writes = on"} {
			if _, err := c.Exec(ctx, "ALTER SYSTEM SET "+set); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // the postmaster's SIGHUP reaches new sessions
	}
	var out []string
	for _, name := range []string{"server_version", "fsync", "synchronous_commit", "full_page_writes", "shared_buffers"} {
		var v string
		if err := c.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, name+"="+v)
	}
	return strings.Join(out, " ")
}

func startPostgres(t *testing.T, p params) *backend {
	b := &backend{name: "postgres"}
	dsn := pgtest.DSN(t)
	settings := postgresDurable(t, dsn, p.pgDurable)
	if err := pgstore.Migrate(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"r1", "r2"} {
		st, err := pgstore.Open(context.Background(), dsn, pgstore.Options{Logger: logger("pg-" + name), MaxConns: int32(p.pgMaxConns)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		b.serve(t, st, name)
	}
	conns := "pgx default"
	if p.pgMaxConns > 0 {
		conns = strconv.Itoa(p.pgMaxConns)
	}
	b.info = fmt.Sprintf("PostgreSQL %s; pool per replica: %s", settings, conns)
	return b
}

// adminDo calls the admin API of server i with the admin key; it returns
// the body of a 200 answer.
func (b *backend) adminDo(i int, method, path, contentType string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequest(method, b.srvs[i].URL+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := b.admins[i].Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, data)
	}
	return data, nil
}

// result is one backend's figures.
type result struct {
	backend                   string
	info                      string
	importTime                time.Duration
	importBatches             int
	batchP50, batchMax        time.Duration
	firstTenth, lastTenth     time.Duration // mean batch time of the first and last tenth
	snapBytes                 int
	snapMedian                time.Duration
	snapDevices, snapUsers    int
	snapRevocations           int
	gwStart                   time.Duration
	gwSnapBytes               int // median size of the gateways' own snapshots
	devLat, devAll, devCall   []time.Duration
	devAffected               int
	tokLat, tokCall           []time.Duration
	tokVerify                 []time.Duration // the gateways' verification time, summed, per round
	writesOpen, writesClosed  writeResult
	drain                     time.Duration // after the writes with streams open: until every gateway held the head
	maxFDs, heapMB, goroutine int
}

type writeResult struct {
	commits int
	elapsed time.Duration
	lat     []time.Duration
	errs    int
}

func (w writeResult) rate() float64 { return float64(w.commits) / w.elapsed.Seconds() }

func TestFleetBenchmark(t *testing.T) {
	if os.Getenv("EDGEID_FLEET_BENCH") != "1" {
		t.Skip("the fleet-scale benchmark runs with EDGEID_FLEET_BENCH=1 (make bench-fleet)")
	}
	p := loadParams(t)
	raiseFDLimit(t)
	kp := newKeyPool(t, 64)
	t.Logf("scale: %d devices in %d sites (%d a site, 1 owner each), %d gateways, import batches of %d devices, %d rounds, %d writers for %s; load %s",
		p.devices, p.sites, p.perSite, p.gateways, p.batch, p.rounds, p.writers, p.writeFor, loadavg())
	var results []result
	for _, name := range p.backends {
		t.Run(name, func(t *testing.T) {
			var b *backend
			switch name {
			case "badger":
				b = startBadger(t)
			case "postgres":
				b = startPostgres(t, p)
			default:
				t.Fatalf("EDGEID_FLEET_BACKENDS: unknown backend %q (badger, postgres)", name)
			}
			results = append(results, runFleet(t, p, kp, b))
		})
	}
	printTable(p, results)
}

func raiseFDLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("open files limit: %d", lim.Cur)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func runFleet(t *testing.T, p params, kp *keyPool, b *backend) result {
	r := result{backend: b.name, info: b.info}
	t.Logf("%s: %s; load %s", b.name, b.info, loadavg())

	stop := profile(t, b.name, "import")
	importFleet(t, p, kp, b, &r)
	stop()
	if os.Getenv("EDGEID_FLEET_IMPORT_ONLY") == "1" {
		return r
	}
	measureSnapshot(t, p, b, &r)

	// Tokens for the token revocations, from one device's call home (the
	// last site's second device), before the gateways connect.
	tokens := callHomeTokens(t, p, kp, b)

	tr := newTracker()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gws := startGateways(t, ctx, p, b, tr, &r)
	defer stopGateways(cancel, gws)

	stop = profile(t, b.name, "revocations")
	deviceRounds(t, p, b, tr, gws, &r)
	tokenRounds(t, p, b, tr, gws, tokens, &r)
	stop()
	r.maxFDs = openFDs()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMB, r.goroutine = int(ms.HeapInuse>>20), runtime.NumGoroutine()

	w := newWriters(p)
	// With the streams open: every commit is a batch (empty or not) for
	// every gateway. Then until the gateways hold the head again.
	tr.track(true)
	stop = profile(t, b.name, "writes-streams")
	r.writesOpen = w.run(t, p, b)
	stop()
	head, err := b.auths[0].Store.Rev()
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := tr.wait(2*time.Minute, func() bool { return tr.atRev(head) >= len(gws) }); err != nil {
		t.Fatalf("after the writes: %v", err)
	}
	r.drain = time.Since(stopped)
	tr.track(false)
	t.Logf("%s: writes with %d streams open: %.0f commits/s (%d in %s, %d errors); every gateway at the head %s after",
		b.name, len(gws), r.writesOpen.rate(), r.writesOpen.commits, r.writesOpen.elapsed.Round(time.Millisecond), r.writesOpen.errs, r.drain.Round(time.Millisecond))

	stopGateways(cancel, gws)
	time.Sleep(time.Second)
	stop = profile(t, b.name, "writes")
	r.writesClosed = w.run(t, p, b)
	stop()
	t.Logf("%s: writes, no streams: %.0f commits/s (%d in %s, %d errors); load %s",
		b.name, r.writesClosed.rate(), r.writesClosed.commits, r.writesClosed.elapsed.Round(time.Millisecond), r.writesClosed.errs, loadavg())
	return r
}

// profile writes a CPU profile of one phase into EDGEID_FLEET_PROFILE_DIR
// (unset: none) as <backend>-<phase>.pprof; call the function it returns
// at the end of the phase.
func profile(t *testing.T, backend, phase string) func() {
	dir := os.Getenv("EDGEID_FLEET_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, backend+"-"+phase+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// --- 1. import ---

func importFleet(t *testing.T, p params, kp *keyPool, b *backend, r *result) {
	a := b.auths[0]
	start := time.Now()
	if _, err := a.Apply(&store.Batch{Classes: classes()}, "admin:fleet-import"); err != nil {
		t.Fatalf("classes: %v", err)
	}
	perBatch := p.batch / p.perSite
	var times []time.Duration
	next := 10
	for s := 0; s < p.sites; s += perBatch {
		n := min(perBatch, p.sites-s)
		bt := p.siteBatch(kp, s, n)
		t0 := time.Now()
		if _, err := a.Apply(bt, "admin:fleet-import"); err != nil {
			t.Fatalf("import of sites %d..%d: %v", s, s+n-1, err)
		}
		times = append(times, time.Since(t0))
		if done := (s + n) * 100 / p.sites; done >= next {
			t.Logf("%s: import %d%% (%d devices) after %s, last batch %s; load %s", b.name, done, (s+n)*p.perSite,
				time.Since(start).Round(time.Second), times[len(times)-1].Round(time.Millisecond), loadavg())
			next = done/10*10 + 10
		}
	}
	r.importTime = time.Since(start)
	r.importBatches = len(times)
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	r.batchP50, r.batchMax = pct(sorted, 50), sorted[len(sorted)-1]
	tenth := max(len(times)/10, 1)
	r.firstTenth, r.lastTenth = mean(times[:tenth]), mean(times[len(times)-tenth:])
	t.Logf("%s: import of %d devices: %s (%.0f devices/s), %d batches: p50 %s, max %s, first tenth %s, last tenth %s",
		b.name, p.devices, r.importTime.Round(time.Millisecond), float64(p.devices)/r.importTime.Seconds(), r.importBatches,
		r.batchP50.Round(time.Millisecond), r.batchMax.Round(time.Millisecond), r.firstTenth.Round(time.Millisecond), r.lastTenth.Round(time.Millisecond))
}

// --- 2. snapshot ---

func measureSnapshot(t *testing.T, p params, b *backend, r *result) {
	a := b.auths[0]
	code, _, err := a.AddSiteGateway("snapshot-gw", siteName(0), "admin:fleet")
	if err != nil {
		t.Fatal(err)
	}
	k, err := cloudsync.NewES256Key()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	enr, err := a.Enroll(cloudsync.EnrollRequest{Code: code, Key: pubJSON, Hardware: "fleet-bench"})
	if err != nil {
		t.Fatal(err)
	}
	feed, err := jwk.ParseKey(enr.FeedKey)
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Duration
	for range 5 {
		t0 := time.Now()
		s, err := a.Snapshot("snapshot-gw")
		times = append(times, time.Since(t0))
		if err != nil {
			t.Fatal(err)
		}
		r.snapBytes = len(s)
		sb, err := cloudsync.Verify(s, feed)
		if err != nil {
			t.Fatal(err)
		}
		r.snapDevices, r.snapUsers, r.snapRevocations = len(sb.Changes.Devices), len(sb.Changes.Users), len(sb.Changes.Revocations)
	}
	slices.Sort(times)
	r.snapMedian = times[2]
	if r.snapDevices != p.perSite || r.snapUsers != 1 {
		t.Fatalf("snapshot of %s: %d devices and %d users, want %d and 1", siteName(0), r.snapDevices, r.snapUsers, p.perSite)
	}
	t.Logf("%s: snapshot of one site: %d bytes (%d devices, %d users, %d revocations), %v (sorted: %v)",
		b.name, r.snapBytes, r.snapDevices, r.snapUsers, r.snapRevocations, r.snapMedian.Round(time.Microsecond), times)
}

// --- tokens to revoke ---

func callHomeTokens(t *testing.T, p params, kp *keyPool, b *backend) []string {
	i := (p.sites-1)*p.perSite + 1
	dev := deviceID(i)
	var out []string
	for k := range p.rounds {
		now := time.Now()
		tok, err := jwt.NewBuilder().Issuer(dev).Subject(dev).Audience([]string{publicURL + "/oauth/token"}).
			IssuedAt(now).Expiration(now.Add(time.Minute)).JwtID(fmt.Sprintf("fleet-%d-%d", k, now.UnixNano())).Build()
		if err != nil {
			t.Fatal(err)
		}
		signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), kp.priv[i%len(kp.priv)]))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := b.auths[k%len(b.auths)].CallHome(dev, authority.ClientAssertionType, string(signed), publicURL+"/oauth/token", nil)
		if err != nil {
			t.Fatalf("call home of %s: %v", dev, err)
		}
		out = append(out, resp.AccessToken)
	}
	return out
}

// --- 3. gateways on event streams ---

// tracker collects the simulated gateways' verified batches.
type tracker struct {
	mu     sync.Mutex
	cond   *sync.Cond
	on     bool
	revs   map[uint64]*arrival // batches by rev (To), while on
	keys   map[string]*arrival // batches carrying each revocation (Revocation.Key)
	failed []string
	// verifying sums the time the gateways spent verifying batches (ns):
	// the simulated gateways' share of the machine.
	verifying atomic.Int64
}

// arrival counts gateways that verified a batch, and when the last did.
type arrival struct {
	n    int
	last time.Time
}

func newTracker() *tracker {
	tr := &tracker{revs: map[uint64]*arrival{}, keys: map[string]*arrival{}}
	tr.cond = sync.NewCond(&tr.mu)
	return tr
}

func (tr *tracker) track(on bool) {
	tr.mu.Lock()
	tr.on = on
	tr.revs = map[uint64]*arrival{}
	tr.mu.Unlock()
}

func bump(m map[string]*arrival, k string, at time.Time) {
	a := m[k]
	if a == nil {
		a = &arrival{}
		m[k] = a
	}
	a.n++
	a.last = at
}

// applied is called by gateway gw when it has verified batch b.
func (tr *tracker) applied(b *cloudsync.Batch, at time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.on {
		a := tr.revs[b.To]
		if a == nil {
			a = &arrival{}
			tr.revs[b.To] = a
		}
		a.n++
		a.last = at
	}
	for _, rv := range b.Changes.Revocations {
		bump(tr.keys, rv.Key(), at)
	}
	tr.cond.Broadcast()
}

func (tr *tracker) fail(gw string, err error) {
	tr.mu.Lock()
	tr.failed = append(tr.failed, gw+": "+err.Error())
	tr.cond.Broadcast()
	tr.mu.Unlock()
}

// atRev and atKey are read under tr.mu (in wait's condition).
func (tr *tracker) atRev(rev uint64) int {
	if a := tr.revs[rev]; a != nil {
		return a.n
	}
	return 0
}

func (tr *tracker) arrival(m map[string]*arrival, k string) arrival {
	if a := m[k]; a != nil {
		return *a
	}
	return arrival{}
}

// wait waits until cond (called under tr.mu) holds; an error if a gateway
// failed meanwhile or timeout passed.
func (tr *tracker) wait(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		tr.mu.Lock()
		tr.cond.Broadcast()
		tr.mu.Unlock()
	})
	defer timer.Stop()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for !cond() {
		if len(tr.failed) > 0 {
			return fmt.Errorf("%d gateway streams failed, the first: %s", len(tr.failed), tr.failed[0])
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		tr.cond.Wait()
	}
	return nil
}

// simGW is a simulated gateway: an enrolled identity, its own TLS
// connection, its cursor; it verifies what it receives and keeps no store.
type simGW struct {
	id, site string
	key      jwk.Key // its private key (assertions)
	feed     jwk.Key // the pinned feed key
	base     string  // the server it talks to
	hc       *http.Client
	cur      store.Cursor
	tr       *tracker
	snapLen  int
	done     chan struct{}
}

func (g *simGW) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	as, err := cloudsync.SignAssertion(g.key, g.id, publicURL, time.Now())
	if err != nil {
		return nil, err
	}
	u := g.base + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "EdgeID-GW "+as)
	resp, err := g.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s %s", path, resp.Status, data)
	}
	return resp, nil
}

// snapshot takes the gateway's signed site snapshot, as a gateway does first.
func (g *simGW) snapshot(ctx context.Context) error {
	resp, err := g.get(ctx, cloudsync.PathSnapshot, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Batch string `json:"batch"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	b, err := cloudsync.Verify(body.Batch, g.feed)
	if err != nil {
		return err
	}
	if err := cloudsync.Check(b, g.id, g.cur); err != nil {
		return err
	}
	g.cur = b.Cursor(g.cur, time.Now())
	g.snapLen = len(body.Batch)
	return nil
}

// follow holds the event stream, verifying each batch and heartbeat; ready
// gets nil at the first heartbeat (the gateway is online), or the error
// that kept it from getting one.
func (g *simGW) follow(ctx context.Context, ready chan<- error) {
	defer close(g.done)
	resp, err := g.get(ctx, cloudsync.PathEvents, url.Values{"epoch": {g.cur.Epoch}, "from": {strconv.FormatUint(g.cur.Seq, 10)}})
	if err != nil {
		ready <- err
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 16<<10), 64<<20)
	event, online := "", false
	failed := func(err error) {
		if !online {
			ready <- err
			return
		}
		g.tr.fail(g.id, err)
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			switch event {
			case "batch":
				t0 := time.Now()
				b, err := cloudsync.Verify(data, g.feed)
				if err == nil {
					err = cloudsync.Check(b, g.id, g.cur)
				}
				if err != nil {
					failed(err)
					return
				}
				now := time.Now()
				g.tr.verifying.Add(int64(now.Sub(t0)))
				g.cur = b.Cursor(g.cur, now)
				g.tr.applied(b, now)
			case "heartbeat":
				// The first is verified: the gateway is online. The
				// others are left alone: a real gateway verifies them on
				// its own CPU, these would take the authority's.
				if online {
					break
				}
				h, err := cloudsync.VerifyHeartbeat(data, g.feed)
				if err == nil && h.Gateway != g.id {
					err = fmt.Errorf("heartbeat for %q", h.Gateway)
				}
				if err != nil {
					failed(err)
					return
				}
				online = true
				ready <- nil
			case "snapshot-required":
				failed(errors.New("the authority asks for a snapshot"))
				return
			}
		case line == "":
			event = ""
		}
	}
	if ctx.Err() == nil {
		failed(fmt.Errorf("stream ended: %v", sc.Err()))
	}
}

func startGateways(t *testing.T, ctx context.Context, p params, b *backend, tr *tracker, r *result) []*simGW {
	gws := make([]*simGW, p.gateways)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, p.gateways)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= p.gateways {
					return
				}
				g, err := startGateway(ctx, p, b, tr, i)
				if err != nil {
					errs <- fmt.Errorf("gateway %d: %w", i, err)
					return
				}
				gws[i] = g
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r.gwStart = time.Since(start)
	lens := make([]int, len(gws))
	for i, g := range gws {
		lens[i] = g.snapLen
	}
	slices.Sort(lens)
	r.gwSnapBytes = lens[len(lens)/2]
	t.Logf("%s: %d gateways enrolled, snapshot taken (median %d bytes), streams open with a verified heartbeat: %s; %d open files, load %s",
		b.name, len(gws), r.gwSnapBytes, r.gwStart.Round(time.Millisecond), openFDs(), loadavg())
	return gws
}

func startGateway(ctx context.Context, p params, b *backend, tr *tracker, i int) (*simGW, error) {
	si := i % len(b.srvs)
	site := siteName(p.gwSite(i))
	code, _, err := b.auths[si].AddSiteGateway(gwName(i), site, "admin:fleet")
	if err != nil {
		return nil, err
	}
	e, err := syncclient.Enroll(ctx, b.srvs[si].URL, b.fp, code, "fleet-sim")
	if err != nil {
		return nil, err
	}
	g := &simGW{id: e.Gateway, site: site, base: b.srvs[si].URL, hc: syncclient.HTTPClient(b.fp), tr: tr, done: make(chan struct{})}
	if g.key, err = jwk.ParseKey(e.Key); err != nil {
		return nil, err
	}
	if g.feed, err = jwk.ParseKey(e.FeedKey); err != nil {
		return nil, err
	}
	if err := g.snapshot(ctx); err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go g.follow(ctx, ready)
	select {
	case err := <-ready:
		if err != nil {
			return nil, err
		}
	case <-time.After(time.Minute):
		return nil, errors.New("no heartbeat within a minute of opening the stream")
	}
	return g, nil
}

func stopGateways(cancel context.CancelFunc, gws []*simGW) {
	cancel()
	for _, g := range gws {
		if g != nil {
			<-g.done
			g.hc.CloseIdleConnections()
		}
	}
}

// deviceRounds revokes one device of a gateway's site per round, through
// the admin API over HTTPS (at the servers in turn), and times until the
// site's gateways have verified the batch carrying it, and until every
// gateway has verified that rev's batch (empty for the other sites).
func deviceRounds(t *testing.T, p params, b *backend, tr *tracker, gws []*simGW, r *result) {
	tr.track(true)
	defer tr.track(false)
	for k := range p.rounds {
		gi := k * p.gateways / p.rounds
		site := p.gwSite(gi)
		dev := deviceID(site * p.perSite)
		want := 0
		for _, g := range gws {
			if g.site == siteName(site) {
				want++
			}
		}
		r.devAffected = want
		key := store.Revocation{Kind: store.RevokeDevice, Value: dev}.Key()
		si := k % len(b.srvs)
		t0 := time.Now()
		body, err := b.adminDo(si, http.MethodPost, "/admin/v1/devices/"+dev+"/revoke?reason=fleet-bench", "", nil)
		call := time.Since(t0)
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			Rev uint64 `json:"rev"`
		}
		if err := json.Unmarshal(body, &ans); err != nil || ans.Rev == 0 {
			t.Fatalf("revoke %s: answer %s", dev, body)
		}
		var lat, all time.Duration
		if err := tr.wait(time.Minute, func() bool { return tr.arrival(tr.keys, key).n >= want }); err != nil {
			t.Fatalf("device revocation %d (%s): %v", k, dev, err)
		}
		if err := tr.wait(time.Minute, func() bool { return tr.atRev(ans.Rev) >= len(gws) }); err != nil {
			t.Fatalf("device revocation %d (%s) at every gateway: %v", k, dev, err)
		}
		tr.mu.Lock()
		lat, all = tr.keys[key].last.Sub(t0), tr.revs[ans.Rev].last.Sub(t0)
		tr.mu.Unlock()
		r.devLat, r.devAll, r.devCall = append(r.devLat, lat), append(r.devAll, all), append(r.devCall, call)
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%s: device revocation to its site's %d gateway(s): p50 %s p99 %s; to every gateway's batch of that rev: p50 %s p99 %s; HTTPS call p50 %s",
		b.name, r.devAffected, ms(pct(sortedCopy(r.devLat), 50)), ms(pct(sortedCopy(r.devLat), 99)),
		ms(pct(sortedCopy(r.devAll), 50)), ms(pct(sortedCopy(r.devAll), 99)), ms(pct(sortedCopy(r.devCall), 50)))
	t.Logf("%s: device revocations, in order: %v; every gateway: %v", b.name, rounded(r.devLat), rounded(r.devAll))
}

// tokenRounds revokes one token per round with the admin key at POST
// /oauth/revoke over HTTPS (RFC 7009; the servers in turn): a jti
// revocation, which reaches every gateway.
func tokenRounds(t *testing.T, p params, b *backend, tr *tracker, gws []*simGW, tokens []string, r *result) {
	for k, tok := range tokens {
		parsed, err := jwt.ParseInsecure([]byte(tok))
		if err != nil {
			t.Fatal(err)
		}
		jti, _ := parsed.JwtID()
		key := store.Revocation{Kind: store.RevokeToken, Value: jti}.Key()
		si := k % len(b.srvs)
		form := url.Values{"token": {tok}}.Encode()
		t0 := time.Now()
		if _, err := b.adminDo(si, http.MethodPost, "/oauth/revoke", "application/x-www-form-urlencoded", strings.NewReader(form)); err != nil {
			t.Fatal(err)
		}
		call := time.Since(t0)
		v0 := tr.verifying.Load()
		if err := tr.wait(time.Minute, func() bool { return tr.arrival(tr.keys, key).n >= len(gws) }); err != nil {
			t.Fatalf("token revocation %d: %v", k, err)
		}
		tr.mu.Lock()
		lat := tr.keys[key].last.Sub(t0)
		tr.mu.Unlock()
		r.tokLat, r.tokCall = append(r.tokLat, lat), append(r.tokCall, call)
		r.tokVerify = append(r.tokVerify, time.Duration(tr.verifying.Load()-v0))
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%s: token revocation to all %d gateways: p50 %s p99 %s; HTTPS call p50 %s; the gateways' verification, summed, p50 %s a round",
		b.name, len(gws), ms(pct(sortedCopy(r.tokLat), 50)), ms(pct(sortedCopy(r.tokLat), 99)), ms(pct(sortedCopy(r.tokCall), 50)),
		ms(pct(sortedCopy(r.tokVerify), 50)))
	t.Logf("%s: token revocations, in order: %v", b.name, rounded(r.tokLat))
}

// --- 4. sustained writes ---

// writers are the write phases' goroutines' devices and where each stands,
// kept across phases so each call changes its device's status.
type writers struct {
	devs [][]string
	next []int
}

func newWriters(p params) *writers {
	w := &writers{devs: make([][]string, p.writers), next: make([]int, p.writers)}
	per := min(64, p.sites/p.writers)
	off := p.perSite / 2 // not the first (revoked) nor the second (calls home) of a site
	for i := range p.writers {
		for j := range per {
			s := (i + p.writers*j) % p.sites
			w.devs[i] = append(w.devs[i], deviceID(s*p.perSite+off))
		}
	}
	return w
}

func (w *writers) run(t *testing.T, p params, b *backend) writeResult {
	var res writeResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(p.writeFor)
	for i := range p.writers {
		a := b.auths[i%len(b.auths)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			devs := w.devs[i]
			for time.Now().Before(end) {
				n := w.next[i]
				st := store.DeviceSuspended
				if (n/len(devs))%2 == 1 {
					st = store.DeviceActive
				}
				t0 := time.Now()
				_, err := a.SetDeviceStatus(devs[n%len(devs)], st, "admin:fleet-writer")
				if err != nil {
					errs++
					if errs == 1 {
						t.Logf("writer %d: %v", i, err)
					}
					continue
				}
				lat = append(lat, time.Since(t0))
				w.next[i]++
			}
			mu.Lock()
			res.commits += len(lat)
			res.lat = append(res.lat, lat...)
			res.errs += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.lat)
	if res.errs > 0 {
		t.Errorf("%s: %d writes failed", b.name, res.errs)
	}
	return res
}

// --- figures ---

func sortedCopy(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

func rounded(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, x := range d {
		out[i] = x.Round(time.Millisecond)
	}
	return out
}

// pct is the nearest-rank percentile of sorted (p99 of 20 is the largest).
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

func num(n float64) string {
	s := strconv.FormatInt(int64(n+0.5), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func printTable(p params, rs []result) {
	if len(rs) == 0 {
		return
	}
	label := map[string]string{"badger": "Badger (1 process)", "postgres": "PostgreSQL (2 replicas, 1 database)"}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nFleet: %s devices in %s sites (%d a site, one owner user each), %s gateways in as many sites; load %s\n\n",
		num(float64(p.devices)), num(float64(p.sites)), p.perSite, num(float64(p.gateways)), loadavg())
	sb.WriteString("| |")
	for _, r := range rs {
		sb.WriteString(" " + label[r.backend] + " |")
	}
	sb.WriteString("\n|---|")
	for range rs {
		sb.WriteString("---|")
	}
	sb.WriteString("\n")
	row := func(name string, f func(r result) string) {
		sb.WriteString("| " + name + " |")
		for _, r := range rs {
			sb.WriteString(" " + f(r) + " |")
		}
		sb.WriteString("\n")
	}
	row(fmt.Sprintf("import of %s devices (Authority.Apply, %d-device batches), total", num(float64(p.devices)), p.batch), func(r result) string {
		return fmt.Sprintf("%.1f s", r.importTime.Seconds())
	})
	row("import, devices/s", func(r result) string { return num(float64(p.devices) / r.importTime.Seconds()) })
	row("import, one batch: p50 / max / mean of first and last tenth", func(r result) string {
		return fmt.Sprintf("%s / %s / %s → %s", ms(r.batchP50), ms(r.batchMax), ms(r.firstTenth), ms(r.lastTenth))
	})
	row("snapshot of one site (Authority.Snapshot), signed bytes", func(r result) string {
		return fmt.Sprintf("%s (%d devices, %d user, %d revocations)", num(float64(r.snapBytes)), r.snapDevices, r.snapUsers, r.snapRevocations)
	})
	row("snapshot of one site, median of 5", func(r result) string { return ms(r.snapMedian) })
	row(fmt.Sprintf("%s gateways enrolled, snapshot taken, stream open (8 at a time)", num(float64(p.gateways))), func(r result) string {
		return fmt.Sprintf("%.1f s", r.gwStart.Seconds())
	})
	row(fmt.Sprintf("device revoked (admin API, HTTPS) → verified by its site's gateway, p50 / p99 of %d", p.rounds), func(r result) string {
		return fmt.Sprintf("%s / %s", ms(pct(sortedCopy(r.devLat), 50)), ms(pct(sortedCopy(r.devLat), 99)))
	})
	row(fmt.Sprintf("… that rev's batch verified by all %s gateways, p50 / p99", num(float64(p.gateways))), func(r result) string {
		return fmt.Sprintf("%s / %s", ms(pct(sortedCopy(r.devAll), 50)), ms(pct(sortedCopy(r.devAll), 99)))
	})
	row("… the HTTPS revoke call alone, p50", func(r result) string { return ms(pct(sortedCopy(r.devCall), 50)) })
	row(fmt.Sprintf("token (jti) revoked (POST /oauth/revoke, HTTPS) → verified by all %s gateways, p50 / p99 of %d", num(float64(p.gateways)), p.rounds), func(r result) string {
		return fmt.Sprintf("%s / %s", ms(pct(sortedCopy(r.tokLat), 50)), ms(pct(sortedCopy(r.tokLat), 99)))
	})
	row("… the HTTPS revoke call alone, p50", func(r result) string { return ms(pct(sortedCopy(r.tokCall), 50)) })
	row("… the simulated gateways' batch verification in that time, summed over them, p50", func(r result) string {
		return ms(pct(sortedCopy(r.tokVerify), 50))
	})
	row(fmt.Sprintf("admin writes (SetDeviceStatus, %d writers, %s), no streams: commits/s", p.writers, p.writeFor), func(r result) string {
		return num(r.writesClosed.rate())
	})
	row("… commit latency p50 / p99", func(r result) string {
		return fmt.Sprintf("%s / %s", ms(pct(r.writesClosed.lat, 50)), ms(pct(r.writesClosed.lat, 99)))
	})
	row(fmt.Sprintf("admin writes with the %s streams open: commits/s", num(float64(p.gateways))), func(r result) string {
		return num(r.writesOpen.rate())
	})
	row("… commit latency p50 / p99", func(r result) string {
		return fmt.Sprintf("%s / %s", ms(pct(r.writesOpen.lat, 50)), ms(pct(r.writesOpen.lat, 99)))
	})
	row("… every gateway at the head, after the writes stopped", func(r result) string { return ms(r.drain) })
	row("process: open files / Go heap in use / goroutines, streams open", func(r result) string {
		return fmt.Sprintf("%s / %d MB / %s", num(float64(r.maxFDs)), r.heapMB, num(float64(r.goroutine)))
	})
	sb.WriteString("\n")
	for _, r := range rs {
		fmt.Fprintf(&sb, "- %s: %s\n", r.backend, r.info)
	}
	fmt.Print(sb.String())
}
