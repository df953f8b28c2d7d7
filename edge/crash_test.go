package edge_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// The real edgeid daemon is SIGKILLed again and again while it syncs large
// batches of revocations from the authority. Whatever instant the kill lands
// on (start-up, the HTTPS fetch, the Badger commit, the fsync), the store must
// open again, hold exactly the batches up to its cursor (a batch is all there
// or not there at all), and, once the daemon has caught up, hold every
// revocation the authority ever issued with the cursor at the authority's
// last rev.
func TestSIGKILLDuringSyncLosesNoRevocation(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	if testing.Short() {
		t.Skip("builds and runs the daemon 40 times")
	}
	const (
		iterations = 20
		perBatch   = 3000 // most of one transaction of a gateway store (~600 KB, 6,500 entries)
		maxKill    = 300 * time.Millisecond
		waitLimit  = 30 * time.Second
	)
	testDeadline := time.Now().Add(85 * time.Second)
	bin := buildEdgeid(t)

	x := startAuthority(t)
	setup := store.Batch{Classes: demo.Classes(), Users: []store.User{{ID: "alice", Status: store.UserActive}}}
	for i := range 5 {
		setup.Devices = append(setup.Devices, store.Device{ID: fmt.Sprintf("crash-dev-%d", i), Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
	}
	if _, err := x.a.Apply(&setup, "test"); err != nil {
		t.Fatal(err)
	}
	enrollment := x.enroll("crash-gw")

	stateDir := filepath.Join(t.TempDir(), "state")
	sockDir, err := os.MkdirTemp("", "eid") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "admin.sock")
	// The admin socket serves root and the admin group: make it our group.
	group := "root"
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getgid())); err == nil {
		group = g.Name
	}
	cfgPath := filepath.Join(t.TempDir(), "edgeid.yaml")
	cfgYAML := fmt.Sprintf(`gateway:
  id: crash-gw
state_dir: %q
log:
  level: info
mqtt:
  tcp: 127.0.0.1:0
  tls:
    listen: ""
admin:
  socket: %q
  group: %q
sync:
  enrollment: %q
metrics:
  listen: ""
`, stateDir, sock, group, enrollment)
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}

	byRev := map[uint64][]string{} // authority rev -> the jti values it revoked
	var all []string
	phases := map[string]int{}
	var catchUp time.Duration
	for i := range iterations {
		if time.Now().After(testDeadline) {
			t.Fatalf("out of time after %d of %d iterations", i, iterations)
		}
		rs := make([]store.Revocation, perBatch)
		for j := range rs {
			rs[j] = store.Revocation{Kind: store.RevokeToken, Value: fmt.Sprintf("crash-%02d-%04d", i, j), Reason: "crash test"}
		}
		rev, err := x.a.Apply(&store.Batch{Revocations: rs}, "test")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			byRev[rev] = append(byRev[rev], r.Value)
			all = append(all, r.Value)
		}

		// Run 1: killed at a random instant, from start-up to about when
		// the last run had caught up (a slow machine takes longer than 300 ms).
		d := startDaemon(t, bin, cfgPath)
		delay := rand.N(max(maxKill, catchUp*5/4))
		time.Sleep(delay)
		d.kill(t)
		phase := d.phase(rev)

		// On odd iterations, look at the killed daemon's store directly: it
		// must be exactly the batches up to its cursor. On even ones the
		// daemon itself is the first to open the crashed store.
		if i%2 == 1 {
			seq := checkCrashedStore(t, stateDir, byRev, x.a.Epoch(), fmt.Sprintf("after the kill of iteration %d (%s); daemon log:\n%s", i, phase, d.logs.String()))
			if seq == rev && phase == "syncing" {
				phase = "committed, not yet logged"
			}
		}
		phases[phase]++
		t.Logf("iteration %2d: authority rev %d, SIGKILL after %3dms (%s)", i, rev, delay.Milliseconds(), phase)

		// Run 2: starts on the crashed store, catches up, stops cleanly.
		t0 := time.Now()
		d = startDaemon(t, bin, cfgPath)
		d.waitCaughtUp(t, sock, stateDir, len(all), min(waitLimit, time.Until(testDeadline)))
		catchUp = time.Since(t0)
		d.stop(t, max(min(waitLimit, time.Until(testDeadline)), 5*time.Second))
	}
	t.Logf("kills by phase: %v", phases)

	st, err := store.Open(store.Options{Dir: stateDir})
	if err != nil {
		t.Fatalf("open the gateway store after the last run: %v", err)
	}
	defer st.Close()
	held, err := st.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range held {
		have[r.Value] = true
	}
	var missing []string
	for _, v := range all {
		if !have[v] {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 || len(held) != len(all) {
		t.Errorf("gateway holds %d revocations, the authority issued %d; %d missing (first: %v)",
			len(held), len(all), len(missing), missing[:min(len(missing), 5)])
	}
	cur, err := st.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	last, err := x.a.Store.Rev()
	if err != nil {
		t.Fatal(err)
	}
	if cur.Seq != last || cur.Epoch != x.a.Epoch() {
		t.Errorf("gateway cursor %+v, want seq %d of epoch %s", cur, last, x.a.Epoch())
	}
}

// buildEdgeid builds the daemon once for the test.
func buildEdgeid(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edgeid")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/edgeid").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ../cmd/edgeid: %v\n%s", err, out)
	}
	return bin
}

// daemonProc is one `edgeid serve` subprocess.
type daemonProc struct {
	cmd    *exec.Cmd
	logs   *syncBuf
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

func startDaemon(t *testing.T, bin, cfg string) *daemonProc {
	t.Helper()
	d := &daemonProc{logs: &syncBuf{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, "serve", "-c", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

func (d *daemonProc) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the daemon, which must still be running (an early exit is a
// failure to start), and waits for it.
func (d *daemonProc) kill(t *testing.T) {
	t.Helper()
	if !d.running() {
		t.Fatalf("daemon exited before it was killed: %v; log:\n%s", d.err, d.logs.String())
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not die of SIGKILL")
	}
}

// stop asks the daemon to stop (SIGTERM) and wants a clean exit.
func (d *daemonProc) stop(t *testing.T, limit time.Duration) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(limit):
		t.Fatalf("daemon did not stop within %s of SIGTERM; log:\n%s", limit, d.logs.String())
	}
	if d.err != nil {
		t.Fatalf("daemon stopped with %v; log:\n%s", d.err, d.logs.String())
	}
}

var crashAppliedRe = regexp.MustCompile(`sync batch applied from=\d+ to=(\d+)`)

// phase says how far the killed daemon had logged it got with rev.
func (d *daemonProc) phase(rev uint64) string {
	logs := d.logs.String()
	switch {
	case !strings.Contains(logs, "gateway ready"):
		return "starting"
	case slices.ContainsFunc(crashAppliedRe.FindAllStringSubmatch(logs, -1), func(m []string) bool { return m[1] == fmt.Sprint(rev) }):
		return "caught up"
	default:
		return "syncing"
	}
}

// waitCaughtUp polls the admin socket until the store holds want revocations.
func (d *daemonProc) waitCaughtUp(t *testing.T, sock, stateDir string, want int, limit time.Duration) {
	t.Helper()
	c := admin.NewClient(sock)
	deadline := time.Now().Add(limit)
	var last admin.Status
	var lastErr error
	for {
		if !d.running() {
			t.Fatalf("daemon exited on a restart after a kill (store corrupt?): %v; log:\n%s\nstate_dir:\n%s", d.err, d.logs.String(), listDir(stateDir))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := c.Status(ctx)
		cancel()
		if err == nil && s.Records["revocations"] == want {
			return
		}
		if err == nil {
			last = s
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not catch up within %s: %d of %d revocations (last error %v); log:\n%s",
				limit, last.Records["revocations"], want, lastErr, d.logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// listDir lists a directory's files and sizes (Badger's, for a failure report).
func listDir(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			fmt.Fprintf(&b, "  %10d %s\n", fi.Size(), e.Name())
		}
	}
	return b.String()
}

// checkCrashedStore opens the (stopped) gateway's store and checks it holds exactly
// the revocations of the authority's batches up to its cursor: as many as
// those batches carry, and from each batch (all values are distinct) its
// first, middle and last value, none from a later batch. It returns the
// cursor's seq.
func checkCrashedStore(t *testing.T, dir string, byRev map[uint64][]string, epoch, where string) uint64 {
	t.Helper()
	st, err := store.Open(store.Options{Dir: dir})
	if err != nil {
		t.Fatalf("store does not open %s: %v", where, err)
	}
	defer st.Close()
	cur, err := st.Cursor()
	if err != nil {
		t.Fatalf("cursor %s: %v", where, err)
	}
	if cur.Epoch != "" && cur.Epoch != epoch {
		t.Fatalf("cursor epoch %q is not the authority's %q %s", cur.Epoch, epoch, where)
	}
	counts, err := st.Counts()
	if err != nil {
		t.Fatalf("counts %s: %v", where, err)
	}
	want := 0
	for rev, vals := range byRev {
		if rev <= cur.Seq {
			want += len(vals)
		}
		for _, v := range []string{vals[0], vals[len(vals)/2], vals[len(vals)-1]} {
			_, ok, err := st.Revocation(store.RevokeToken, v)
			if err != nil {
				t.Fatalf("revocation %s %s: %v", v, where, err)
			}
			if ok != (rev <= cur.Seq) {
				t.Fatalf("store at cursor %d: revocation %s of rev %d held=%v %s", cur.Seq, v, rev, ok, where)
			}
		}
	}
	if got := counts["revocations"]; got != want {
		t.Fatalf("store at cursor %d holds %d revocations, its batches carry %d %s", cur.Seq, got, want, where)
	}
	return cur.Seq
}
