package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// TestStress32 drives the store with its own kind of workload (device
// upserts that move indexes, revocations with short and long TTLs, deletions,
// logged batches, snapshots, value-log GC, reopens) until it has written
// EDGEID_STRESS_MB megabytes of records, checking the store against a model
// on the way. It exists to qualify Badger on 32-bit targets (armhf, 386),
// where compaction has been reported to panic after a few hundred MB:
//
//	EDGEID_STRESS=1 go test -run TestStress32 -count=1 -timeout 30m -v ./store/
//	GOARCH=386 go test -c -o /tmp/store386.test ./store/ &&
//	  EDGEID_STRESS=1 /tmp/store386.test -test.run TestStress32 -test.v -test.timeout 30m
//
// EDGEID_STRESS_MB (default 400) sets the volume, EDGEID_STRESS_SEED the
// random seed (logged, so a failing run can be repeated).
func TestStress32(t *testing.T) {
	if os.Getenv("EDGEID_STRESS") != "1" {
		t.Skip("store stress test; run it with EDGEID_STRESS=1 go test -run TestStress32 -count=1 -timeout 30m -v ./store/ " +
			"(32-bit: GOARCH=386 go test -c -o /tmp/store386.test ./store/ && EDGEID_STRESS=1 /tmp/store386.test -test.run TestStress32 -test.v -test.timeout 30m); " +
			"EDGEID_STRESS_MB sets the volume (default 400)")
	}
	targetMB := int64(400)
	if v := os.Getenv("EDGEID_STRESS_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("EDGEID_STRESS_MB=%q: want a positive number of megabytes", v)
		}
		targetMB = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("EDGEID_STRESS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("EDGEID_STRESS_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	const budget = 15 * time.Minute
	start := time.Now()
	deadline := start.Add(budget)
	if d, ok := t.Deadline(); ok && d.Add(-30*time.Second).Before(deadline) {
		deadline = d.Add(-30 * time.Second) // leave time to report instead of being killed by -timeout
	}
	t.Logf("stress: target %d MB of records, GOARCH=%s, seed %d, deadline %v", targetMB, runtime.GOARCH, seed, deadline.Sub(start).Round(time.Second))

	w := newStressWorkload(t, seed)
	w.dir, w.start = t.TempDir(), start
	w.open()
	defer func() {
		if w.s != nil {
			w.close()
		}
	}()
	w.setup()

	target := targetMB << 20
	const (
		progressEvery = 50 << 20
		snapshotEvery = 90 << 20
	)
	var (
		nextProgress = int64(progressEvery)
		nextSnapshot = int64(snapshotEvery)
		nextVerify   = target / 4
		reopenAt     = []int64{target / 3, 2 * target / 3}
	)
	for w.written < target {
		if time.Now().After(deadline) {
			t.Fatalf("stress: wrote only %d of %d MB of records in %v (%d rounds): the store is too slow for this workload on %s, or stuck",
				w.written>>20, targetMB, time.Since(start).Round(time.Second), w.rounds, runtime.GOARCH)
		}
		w.round()
		if w.written >= nextSnapshot {
			nextSnapshot += snapshotEvery
			w.replace()
		}
		if w.written >= nextProgress {
			nextProgress += progressEvery
			w.progress(start)
		}
		if len(reopenAt) > 0 && w.written >= reopenAt[0] {
			reopenAt = reopenAt[1:]
			w.close()
			w.open()
			w.reopens++
			w.verify("after reopen " + strconv.Itoa(w.reopens))
		} else if w.written >= nextVerify {
			nextVerify += target / 4
			w.verify(fmt.Sprintf("at %d MB", w.written>>20))
		}
	}
	if w.progressAt != w.written {
		w.progress(start)
	}
	w.verify("at the end")
	w.close()
	w.open()
	w.reopens++
	w.verify("after the final reopen")
	t.Logf("stress: done: %d MB of records (+%d MB change log) in %v: %d rounds, %d device writes, %d device deletions, %d short-TTL and %d long revocations written, %d snapshots, %d logged batches, %d reopens, %d verifications",
		w.written>>20, w.logBytes>>20, time.Since(start).Round(time.Second), w.rounds, w.deviceWrites, w.deviceDeletes,
		w.shortRevs, w.longRevWrites, w.snapshots, len(w.logged), w.reopens, w.verifications)
}

const (
	stressDevices     = 20000 // rotating set of device ids
	stressOwners      = 400
	stressLongRevs    = 1500 // pool of long-lived revocation keys
	stressSnapshotDev = 1000 // devices kept by a Replace snapshot
	stressCertIssuer  = "CN=EdgeID Stress CA,O=EdgeID Test"
	// Badger refuses a transaction over 15% of the memtable (2.4 MB with 16 MB
	// memtables) or 26k entries; a device upsert is up to 7 entries and ~1 KB.
	stressMaxDevicesPerBatch = 2000
)

var stressClasses = []store.DeviceClass{
	{Name: "sensor", Description: "stress sensor", Permissions: []policy.Rule{
		{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
		{Filter: "devices/{device}/commands/+", Actions: policy.Subscribe},
	}},
	{Name: "camera", Description: "stress camera", Permissions: []policy.Rule{
		{Filter: "devices/{device}/video/#", Actions: policy.Publish},
		{Filter: "owners/{owner}/alerts", Actions: policy.Publish | policy.Subscribe},
	}},
	{Name: "lock", Description: "stress lock", Permissions: []policy.Rule{
		{Filter: "devices/{device}/state", Actions: policy.Publish},
		{Filter: "devices/{device}/commands/+", Actions: policy.Subscribe},
	}},
}

type stressShortRev struct {
	key     string // kind/value
	expires time.Time
}

// stressWorkload is the store under test and the model of what it must hold.
type stressWorkload struct {
	t     *testing.T
	rng   *mrand.Rand
	dir   string
	s     *store.Store
	start time.Time

	gcStop context.CancelFunc
	gcDone sync.WaitGroup

	keys [][]byte // public JWKs for devices

	// Model.
	devices   map[string]store.Device     // by id, with the Rev the store stamped
	longRevs  map[string]store.Revocation // by kind/value
	shortLive []stressShortRev            // short-TTL revocations that may still be held
	retiredFP []string                    // fingerprints no device holds any more (most recent last)
	cursor    store.Cursor
	lastRev   uint64
	logged    []uint64 // revs written with ApplyLogged
	loggedN   map[uint64]int

	// Counters.
	pos, certSeq                                   int
	written, logBytes, progressAt                  int64
	rounds, deviceWrites, deviceDeletes, shortRevs int
	longRevWrites, snapshots, reopens              int
	verifications                                  int
}

func newStressWorkload(t *testing.T, seed uint64) *stressWorkload {
	w := &stressWorkload{
		t:        t,
		rng:      mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		devices:  map[string]store.Device{},
		longRevs: map[string]store.Revocation{},
		loggedN:  map[uint64]int{},
	}
	for i := 0; i < 16; i++ {
		var key any
		if i%2 == 0 {
			pub, _, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			key = pub
		} else {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			key = &k.PublicKey
		}
		k, err := jwk.Import(key)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		w.keys = append(w.keys, raw)
	}
	return w
}

func (w *stressWorkload) open() {
	w.t.Helper()
	s, err := store.Open(store.Options{Dir: w.dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		w.t.Fatalf("stress: open store: %v", err)
	}
	w.s = s
	// Value-log GC the way the gateway runs it, but often.
	ctx, cancel := context.WithCancel(context.Background())
	w.gcStop = cancel
	w.gcDone.Add(1)
	go func() {
		defer w.gcDone.Done()
		s.RunGC(ctx, 2*time.Second)
	}()
}

func (w *stressWorkload) close() {
	w.t.Helper()
	w.gcStop()
	w.gcDone.Wait()
	if err := w.s.Close(); err != nil {
		w.t.Fatalf("stress: close store: %v", err)
	}
	w.s = nil
}

func stressJSONSize(v any) int64 {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return int64(len(b))
}

// account adds the JSON size of every record of b to the bytes written.
func (w *stressWorkload) account(b *store.Batch) {
	for _, v := range b.Classes {
		w.written += stressJSONSize(v)
	}
	for _, v := range b.Devices {
		w.written += stressJSONSize(v)
	}
	for _, v := range b.Users {
		w.written += stressJSONSize(v)
	}
	for _, v := range b.Revocations {
		w.written += stressJSONSize(v)
	}
	d := b.Delete
	for _, l := range [][]string{d.Devices, d.Revocations} {
		for _, k := range l {
			w.written += int64(len(k))
		}
	}
}

func (w *stressWorkload) apply(what string, b *store.Batch, mode string) uint64 {
	w.t.Helper()
	var (
		rev uint64
		err error
	)
	switch mode {
	case "apply":
		w.cursor = store.Cursor{Epoch: "stress", Seq: w.cursor.Seq + 1, SyncedAt: time.Now().UTC().Truncate(time.Second)}
		rev, err = w.s.Apply(b, &w.cursor)
	case "logged":
		rev, err = w.s.ApplyLogged(b)
		if err == nil {
			w.logged = append(w.logged, rev)
			w.loggedN[rev] = b.Size()
			w.logBytes += stressJSONSize(b)
		}
	case "replace":
		w.cursor = store.Cursor{Epoch: "stress-snapshot", Seq: w.cursor.Seq + 1, SyncedAt: time.Now().UTC().Truncate(time.Second)}
		rev, err = w.s.Replace(b, &w.cursor)
	}
	if err != nil {
		// A batch refused for unknown classes means the store lost the
		// classes written by the first batch: say so before the details.
		lost := ""
		for _, c := range stressClasses {
			if _, cerr := w.s.Class(c.Name); cerr != nil {
				lost += fmt.Sprintf("\n  Class(%s) written at rev 1: %v", c.Name, cerr)
			}
		}
		if lost != "" {
			lost = "\nthe store has lost records it acknowledged:" + lost
		}
		w.t.Fatalf("stress: %s %s (%d records) after %d MB (%v): %v%s", mode, what, b.Size(), w.written>>20, time.Since(w.start).Round(time.Millisecond), err, lost)
	}
	if rev != w.lastRev+1 {
		w.t.Fatalf("stress: %s %s returned rev %d, want %d", mode, what, rev, w.lastRev+1)
	}
	w.lastRev = rev
	w.account(b)
	return rev
}

func (w *stressWorkload) setup() {
	users := make([]store.User, 0, stressOwners)
	for i := range stressOwners {
		users = append(users, store.User{ID: stressOwner(i), Name: "Stress Owner " + strconv.Itoa(i), Status: store.UserActive})
	}
	w.apply("classes and users", &store.Batch{Classes: stressClasses, Users: users}, "apply")
}

func stressDeviceID(i int) string { return fmt.Sprintf("dev-%05d", i%stressDevices) }
func stressOwner(i int) string    { return fmt.Sprintf("owner-%03d", i) }

// nextDevice is a new version of device id: a new owner most of the time (so
// the owner index moves), and often a new certificate (so the cert indexes move).
func (w *stressWorkload) nextDevice(id string) store.Device {
	old, had := w.devices[id]
	d := store.Device{
		ID:        id,
		Serial:    "SN-" + id[4:] + "-" + strconv.Itoa(w.rng.IntN(1000)),
		MAC:       fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", w.rng.IntN(256), w.rng.IntN(256), w.rng.IntN(256), w.rng.IntN(256)),
		Class:     stressClasses[w.rng.IntN(len(stressClasses))].Name,
		Status:    store.DeviceActive,
		PublicKey: w.keys[w.rng.IntN(len(w.keys))],
	}
	switch r := w.rng.IntN(20); {
	case r == 0:
		d.Status = store.DeviceSuspended
	case r == 1:
		d.Status = store.DeviceRevoked
	}
	if w.rng.IntN(10) > 0 {
		d.Owner = stressOwner(w.rng.IntN(stressOwners))
	}
	switch r := w.rng.IntN(10); {
	case had && old.CertSHA256 != "" && r < 4:
		d.CertSHA256 = old.CertSHA256 // keep the certificate
	case r < 8:
		w.certSeq++
		h := sha256.Sum256([]byte(id + "/" + strconv.Itoa(w.certSeq)))
		d.CertSHA256 = hex.EncodeToString(h[:])
	}
	if had && old.CertSHA256 != "" && old.CertSHA256 != d.CertSHA256 {
		w.retire(old.CertSHA256)
	}
	switch r := w.rng.IntN(10); {
	case had && old.CertIssuer != "" && r < 3:
		d.CertIssuer, d.CertSerial = old.CertIssuer, old.CertSerial
	case r < 6:
		w.certSeq++
		d.CertIssuer, d.CertSerial = stressCertIssuer, fmt.Sprintf("%x", 0x10000000+w.certSeq)
	}
	return d
}

func (w *stressWorkload) retire(fp string) {
	w.retiredFP = append(w.retiredFP, fp)
	if len(w.retiredFP) > 4000 {
		w.retiredFP = slices.Clone(w.retiredFP[2000:])
	}
}

func (w *stressWorkload) newShortRev(now time.Time) store.Revocation {
	w.shortRevs++
	r := store.Revocation{
		Kind:      store.RevokeToken,
		Value:     fmt.Sprintf("short-%d-%08x", w.shortRevs, w.rng.Uint32()),
		RevokedAt: now.UTC().Truncate(time.Millisecond),
		ExpiresAt: now.UTC().Add(time.Second + time.Duration(w.rng.IntN(4000))*time.Millisecond).Truncate(time.Millisecond),
		Reason:    "token reported stolen (stress)",
	}
	w.shortLive = append(w.shortLive, stressShortRev{key: r.Key(), expires: r.ExpiresAt})
	return r
}

var stressKinds = []store.RevocationKind{store.RevokeToken, store.RevokeDevice, store.RevokeSubject}

// stressLongKey is the kind/value key of long-lived revocation i.
func stressLongKey(i int) string {
	return string(stressKinds[i%len(stressKinds)]) + fmt.Sprintf("/long-%04d", i)
}

func (w *stressWorkload) newLongRev(now time.Time, i int) store.Revocation {
	r := store.Revocation{
		Kind:      stressKinds[i%len(stressKinds)],
		Value:     fmt.Sprintf("long-%04d", i),
		RevokedAt: now.UTC().Truncate(time.Millisecond),
		Reason:    "decommissioned (stress)",
	}
	if w.rng.IntN(2) == 0 {
		r.ExpiresAt = now.UTC().Add(time.Duration(30+w.rng.IntN(300)) * 24 * time.Hour).Truncate(time.Millisecond)
	}
	return r
}

// round writes one batch of devices and one of revocations.
func (w *stressWorkload) round() {
	w.rounds++
	now := time.Now()

	// Devices: the next slice of the rotating id set, plus some deletions
	// half a rotation away, and a few revocations in the same transaction.
	n := 500 + w.rng.IntN(stressMaxDevicesPerBatch-500+1)
	b := &store.Batch{}
	in := map[string]bool{}
	for range n {
		id := stressDeviceID(w.pos)
		w.pos++
		in[id] = true
		b.Devices = append(b.Devices, w.nextDevice(id))
	}
	for range w.rng.IntN(80) {
		id := stressDeviceID(w.pos + stressDevices/2 + w.rng.IntN(stressDevices/4))
		if _, ok := w.devices[id]; ok && !in[id] && !slices.Contains(b.Delete.Devices, id) {
			b.Delete.Devices = append(b.Delete.Devices, id)
		}
	}
	for range w.rng.IntN(50) {
		b.Revocations = append(b.Revocations, w.newShortRev(now))
	}
	mode := "apply"
	if w.rounds%5 == 0 {
		mode = "logged"
	}
	rev := w.apply("devices", b, mode)
	for _, d := range b.Devices {
		d.Rev = rev
		w.devices[d.ID] = d
	}
	for _, id := range b.Delete.Devices {
		if fp := w.devices[id].CertSHA256; fp != "" {
			w.retire(fp)
		}
		delete(w.devices, id)
	}
	w.deviceWrites += len(b.Devices)
	w.deviceDeletes += len(b.Delete.Devices)

	// Revocations: short TTLs (1-5 s) that expire under the workload, long
	// ones (no expiry or months) that must survive everything, and some lifts.
	b = &store.Batch{}
	for range 100 + w.rng.IntN(400) {
		b.Revocations = append(b.Revocations, w.newShortRev(now))
	}
	written := map[string]bool{}
	for range 10 + w.rng.IntN(60) {
		r := w.newLongRev(now, w.rng.IntN(stressLongRevs))
		if !written[r.Key()] {
			written[r.Key()] = true
			b.Revocations = append(b.Revocations, r)
		}
	}
	for range w.rng.IntN(15) {
		k := stressLongKey(w.rng.IntN(stressLongRevs))
		if _, held := w.longRevs[k]; held && !written[k] && !slices.Contains(b.Delete.Revocations, k) {
			b.Delete.Revocations = append(b.Delete.Revocations, k)
		}
	}
	mode = "apply"
	if w.rounds%3 == 0 {
		mode = "logged"
	}
	w.apply("revocations", b, mode)
	for _, r := range b.Revocations {
		if strings.HasPrefix(r.Value, "long-") {
			w.longRevs[r.Key()] = r
			w.longRevWrites++
		}
	}
	for _, k := range b.Delete.Revocations {
		delete(w.longRevs, k)
	}
	w.pruneShort(now)
}

// pruneShort forgets short revocations that have certainly expired.
func (w *stressWorkload) pruneShort(now time.Time) {
	i := 0
	for i < len(w.shortLive) && w.shortLive[i].expires.Add(2*time.Second).Before(now) {
		i++
	}
	if i > 0 {
		w.shortLive = slices.Delete(w.shortLive, 0, i)
	}
}

// replace shrinks the store with deletions, then replaces it with a smaller
// snapshot: a gateway resyncing from its authority. The snapshot is applied in
// one transaction that also deletes every record, so the store must first be
// small enough for Badger's transaction limit.
func (w *stressWorkload) replace() {
	now := time.Now()
	ids := make([]string, 0, len(w.devices))
	for id := range w.devices {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	w.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	keep, drop := ids[:min(stressSnapshotDev, len(ids))], ids[min(stressSnapshotDev, len(ids)):]
	// Lift the short revocations still held too, so the snapshot's transaction stays small.
	var lift []string
	for _, r := range w.shortLive {
		if r.expires.After(now) {
			lift = append(lift, r.key)
		}
	}
	for len(drop) > 0 || len(lift) > 0 {
		b := &store.Batch{}
		n := min(len(drop), 2000)
		b.Delete.Devices, drop = drop[:n], drop[n:]
		m := min(len(lift), 3000-n)
		b.Delete.Revocations, lift = lift[:m], lift[m:]
		w.apply("shrink before snapshot", b, "apply")
		for _, id := range b.Delete.Devices {
			if fp := w.devices[id].CertSHA256; fp != "" {
				w.retire(fp)
			}
			delete(w.devices, id)
		}
		w.deviceDeletes += len(b.Delete.Devices)
	}
	w.shortLive = nil

	snap := &store.Batch{Classes: stressClasses}
	for i := range stressOwners {
		snap.Users = append(snap.Users, store.User{ID: stressOwner(i), Status: store.UserActive})
	}
	for _, id := range keep {
		snap.Devices = append(snap.Devices, w.nextDevice(id))
	}
	for _, r := range w.longRevs {
		snap.Revocations = append(snap.Revocations, r)
	}
	rev := w.apply("snapshot", snap, "replace")
	clear(w.devices)
	for _, d := range snap.Devices {
		d.Rev = rev
		w.devices[d.ID] = d
	}
	w.deviceWrites += len(snap.Devices)
	w.snapshots++
	w.verify(fmt.Sprintf("after snapshot %d", w.snapshots))
}

func (w *stressWorkload) progress(start time.Time) {
	w.progressAt = w.written
	var sst, vlog, mem int64
	_ = filepath.WalkDir(w.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		switch filepath.Ext(p) {
		case ".sst":
			sst += info.Size()
		case ".vlog":
			vlog += info.Size()
		case ".mem":
			mem += info.Size()
		}
		return nil
	})
	el := time.Since(start)
	w.t.Logf("stress: %4d MB written in %v (%.1f MB/s), %d rounds, rev %d: %d devices, %d long revocations, %d short maybe held; files (apparent size; vlog and memtable files are preallocated) sst %d MB, vlog %d MB, mem %d MB",
		w.written>>20, el.Round(time.Second), float64(w.written)/(1<<20)/el.Seconds(), w.rounds, w.lastRev,
		len(w.devices), len(w.longRevs), len(w.shortLive), sst>>20, vlog>>20, mem>>20)
}

// verify checks the store against the model.
func (w *stressWorkload) verify(when string) {
	t := w.t
	t.Helper()
	w.verifications++
	began := time.Now()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("stress: verify %s (%d MB written): %s", when, w.written>>20, fmt.Sprintf(format, args...))
	}

	if rev, err := w.s.Rev(); err != nil || rev != w.lastRev {
		fail("Rev() = %d, %v; want %d", rev, err, w.lastRev)
	}
	if c, err := w.s.Cursor(); err != nil || c.Seq != w.cursor.Seq || c.Epoch != w.cursor.Epoch || !c.SyncedAt.Equal(w.cursor.SyncedAt) {
		fail("Cursor() = %+v, %v; want %+v", c, err, w.cursor)
	}

	// Devices: the same set, the same records.
	devs, err := w.s.Devices()
	if err != nil {
		fail("Devices(): %v", err)
	}
	if len(devs) != len(w.devices) {
		fail("Devices() holds %d devices, the model %d", len(devs), len(w.devices))
	}
	for _, d := range devs {
		want, ok := w.devices[d.ID]
		if !ok {
			fail("Devices() has %q, which the model deleted", d.ID)
		}
		got, _ := json.Marshal(d)
		exp, _ := json.Marshal(want)
		if string(got) != string(exp) {
			fail("device %q is\n  %s\nwant\n  %s", d.ID, got, exp)
		}
	}
	if counts, err := w.s.Counts(); err != nil || counts["devices"] != len(w.devices) {
		fail("Counts() = %v, %v; want %d devices", counts, err, len(w.devices))
	}

	// Indexes: every certificate finds its device, retired ones find nothing,
	// and every owner lists exactly its devices.
	owned := map[string][]string{}
	for id, d := range w.devices {
		if d.CertSHA256 != "" {
			got, err := w.s.DeviceByCertFingerprint(d.CertSHA256)
			if err != nil || got.ID != id {
				fail("DeviceByCertFingerprint(%s) = %q, %v; want %q", d.CertSHA256, got.ID, err, id)
			}
		}
		if d.CertIssuer != "" {
			got, err := w.s.DeviceByCertIssuer(d.CertIssuer, d.CertSerial)
			if err != nil || got.ID != id {
				fail("DeviceByCertIssuer(%s) = %q, %v; want %q", d.CertSerial, got.ID, err, id)
			}
		}
		if d.Owner != "" {
			owned[d.Owner] = append(owned[d.Owner], id)
		}
	}
	held := map[string]bool{}
	for _, d := range w.devices {
		held[d.CertSHA256] = true
	}
	for _, fp := range w.retiredFP {
		if held[fp] {
			continue
		}
		if got, err := w.s.DeviceByCertFingerprint(fp); !errors.Is(err, store.ErrNotFound) {
			fail("retired fingerprint %s still finds device %q (err %v)", fp, got.ID, err)
		}
	}
	for i := range stressOwners {
		o := stressOwner(i)
		got, err := w.s.DevicesOfOwner(o)
		if err != nil {
			fail("DevicesOfOwner(%s): %v", o, err)
		}
		want := owned[o]
		slices.Sort(want)
		if !slices.Equal(got, want) {
			fail("DevicesOfOwner(%s) = %d devices, want %d (first difference near %v vs %v)", o, len(got), len(want), stressHead(got), stressHead(want))
		}
	}

	// Revocations: every long one is there, unchanged; nothing expired is listed.
	for k, want := range w.longRevs {
		got, ok, err := w.s.Revocation(want.Kind, want.Value)
		if err != nil || !ok {
			fail("long-lived revocation %s is gone (ok=%v, err=%v)", k, ok, err)
		}
		if !got.RevokedAt.Equal(want.RevokedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || got.Reason != want.Reason {
			fail("revocation %s is %+v, want %+v", k, got, want)
		}
	}
	before := time.Now()
	revs, err := w.s.Revocations()
	if err != nil {
		fail("Revocations(): %v", err)
	}
	long := 0
	for _, r := range revs {
		if strings.HasPrefix(r.Value, "long-") {
			long++
			if _, ok := w.longRevs[r.Key()]; !ok {
				fail("revocation %s was lifted but is still held", r.Key())
			}
			continue
		}
		// Badger drops an entry once its expiry second (rounded up) has passed.
		if !r.ExpiresAt.IsZero() && r.ExpiresAt.Before(before.Add(-2*time.Second)) {
			fail("revocation %s expired at %v but is still listed at %v", r.Key(), r.ExpiresAt, before)
		}
	}
	if long != len(w.longRevs) {
		fail("Revocations() lists %d long-lived revocations, the model holds %d", long, len(w.longRevs))
	}

	// Change log: every logged batch is still readable (they live in the value log, which GC rewrites).
	// LogSince(from) wants rev from+1 to be logged, so each page starts just
	// before the next logged rev (the other batches were applied unlogged).
	entries := 0
	for entries < len(w.logged) {
		from := w.logged[entries] - 1
		page, err := w.s.LogSince(from, 8)
		if err != nil {
			fail("LogSince(%d): %v", from, err)
		}
		if len(page) == 0 {
			fail("LogSince(%d) is empty; logged batch %d is gone", from, w.logged[entries])
		}
		for _, e := range page {
			if entries >= len(w.logged) || e.Rev != w.logged[entries] {
				fail("change log has rev %d where rev %v was logged", e.Rev, w.logged[min(entries, len(w.logged)-1)])
			}
			if n := w.loggedN[e.Rev]; e.Batch.Size() != n {
				fail("change log rev %d holds %d records, want %d", e.Rev, e.Batch.Size(), n)
			}
			entries++
		}
	}
	if extra, err := w.s.LogSince(w.lastRev, 1); err != nil || len(extra) != 0 {
		fail("LogSince(last rev %d) = %d entries, %v; want none", w.lastRev, len(extra), err)
	}
	t.Logf("stress: verified %s in %v: %d devices, %d long revocations (%d listed in all), %d logged batches",
		when, time.Since(began).Round(time.Millisecond), len(devs), len(w.longRevs), len(revs), entries)
}

func stressHead(s []string) []string { return s[:min(len(s), 3)] }
