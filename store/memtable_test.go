package store_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// crashHelperEnv makes the test binary, run again by a test below, write
// into a store and exit without closing it (as a power cut leaves it: the
// memtable's records only in its write-ahead file).
const crashHelperEnv = "EDGEID_STORE_CRASH_HELPER"

func init() {
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		os.Exit(crashHelper(dir))
	}
}

// crashHelper writes revocations (1 KB values) totalling ~8 MB with 16 MB
// memtables, where they all stay in the memtable, then exits unclosed.
func crashHelper(dir string) int {
	s, err := store.Open(store.Options{Dir: dir, MemTableSize: 16 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := range revBatches {
		if _, err := s.Apply(&store.Batch{Revocations: bigRevocations(i)}, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

const revBatches, revPerBatch = 4, 2000

func bigRevocations(batch int) []store.Revocation {
	rs := make([]store.Revocation, revPerBatch)
	for j := range rs {
		rs[j] = store.Revocation{Kind: store.RevokeToken, Value: fmt.Sprintf("%d-%d-%s", batch, j, strings.Repeat("x", 1000)),
			RevokedAt: time.Unix(1700000000, 0).UTC()}
	}
	return rs
}

// A gateway upgraded from 16 MB memtables to GatewayMemTableSize after a
// power cut opens its store with every record: Badger alone would replay
// the 8 MB memtable file into a 4 MB memtable and exit the process.
func TestOpenReplaysALargerMemtableAfterACrash(t *testing.T) {
	dir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), crashHelperEnv+"="+dir)
	if out, err := helper.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	// Opened in another process too: Badger's log.Fatal would end this one.
	check := exec.Command(os.Args[0], "-test.run=^TestOpenWithGatewayMemtables$", "-test.v")
	check.Env = append(os.Environ(), "EDGEID_STORE_OPEN_DIR="+dir)
	out, err := check.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestOpenWithGatewayMemtables") {
		t.Fatalf("open with gateway memtables: %v\n%s", err, out)
	}
}

// TestOpenWithGatewayMemtables is the second half of the test above (run
// by it, in its own process): the store opens and holds every revocation.
func TestOpenWithGatewayMemtables(t *testing.T) {
	dir := os.Getenv("EDGEID_STORE_OPEN_DIR")
	if dir == "" {
		t.Skip("run by TestOpenReplaysALargerMemtableAfterACrash")
	}
	s, err := store.Open(store.Options{Dir: dir, Gateway: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range revBatches {
		for _, r := range []store.Revocation{bigRevocations(i)[0], bigRevocations(i)[revPerBatch-1]} {
			if _, ok, err := s.Revocation(r.Kind, r.Value); err != nil || !ok {
				t.Fatalf("revocation %.12s… after reopening: revoked=%v err=%v", r.Value, ok, err)
			}
		}
	}
}

// A snapshot far larger than one transaction of a gateway's store is
// applied, in chunks, halved when a chunk of large records does not fit; a
// delta that large is refused whole with ErrTooLarge (the syncer then asks
// for a snapshot).
func TestGatewayStoreTakesLargeSnapshotsInChunks(t *testing.T) {
	s, err := store.Open(store.Options{Dir: t.TempDir(), Gateway: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// ~1.5 KB a device in the transaction (values of 1 KB and more go to
	// the value log and cost only their key there): 500 are over one.
	b := store.Batch{Classes: []store.DeviceClass{{Name: "big", Permissions: []policy.Rule{{Filter: "devices/{device}/#", Actions: policy.Publish}}}}}
	for i := range 3000 {
		b.Devices = append(b.Devices, store.Device{ID: fmt.Sprintf("%04d-%s", i, strings.Repeat("d", 240)), Class: "big",
			Owner: fmt.Sprintf("%04d-%s", i, strings.Repeat("o", 240)), Status: store.DeviceActive, Name: strings.Repeat("n", 300)})
	}
	_, err = s.Apply(&b, nil)
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("apply of %d devices: err %v, want ErrTooLarge", len(b.Devices), err)
	}
	if _, err := s.Device(b.Devices[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused batch left a record: %v", err)
	}
	if _, err := s.Replace(&b, &store.Cursor{Seq: 7}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []store.Device{b.Devices[0], b.Devices[len(b.Devices)/2], b.Devices[len(b.Devices)-1]} {
		if got, err := s.Device(d.ID); err != nil || got.Owner != d.Owner {
			t.Fatalf("device %.8s… after the snapshot: %+v, %v", d.ID, got, err)
		}
	}
	if c, err := s.Cursor(); err != nil || c.Seq != 7 {
		t.Fatalf("cursor %+v, %v", c, err)
	}
	// A second snapshot over the first deletes what it no longer holds:
	// 3,000 devices' long keys and owner indexes, and 1 KB revocations,
	// each far more bytes than one transaction holds.
	next := store.Batch{Classes: b.Classes, Devices: b.Devices[:1]}
	for i := range 1500 {
		next.Revocations = append(next.Revocations, store.Revocation{Kind: store.RevokeToken,
			Value: fmt.Sprintf("%04d-%s", i, strings.Repeat("j", 1000)), RevokedAt: time.Unix(1700000000, 0).UTC()})
	}
	if _, err := s.Replace(&next, &store.Cursor{Seq: 8}); err != nil {
		t.Fatalf("second snapshot: %v", err)
	}
	if _, err := s.Device(b.Devices[1].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a device the second snapshot left out: %v", err)
	}
	if _, err := s.Replace(&store.Batch{Classes: b.Classes}, &store.Cursor{Seq: 9}); err != nil {
		t.Fatalf("third snapshot (drops the revocations): %v", err)
	}
	if rs, err := s.Revocations(); err != nil || len(rs) != 0 {
		t.Fatalf("%d revocations after a snapshot without them, %v", len(rs), err)
	}
	if in, err := s.ReplaceInterrupted(); err != nil || in {
		t.Fatalf("replace left marked interrupted: %v %v", in, err)
	}
}

// A gateway's store written by an earlier edgeid (compressed tables, read
// through a block cache) opens with the gateway's options (uncompressed,
// no cache) and reads every record, old tables and new.
func TestGatewayOptionsReadCompressedTables(t *testing.T) {
	dir := t.TempDir()
	devices := func(from, n int) store.Batch {
		b := store.Batch{Classes: []store.DeviceClass{{Name: "c", Permissions: []policy.Rule{{Filter: "devices/{device}/#", Actions: policy.Publish}}}}}
		for i := from; i < from+n; i++ {
			b.Devices = append(b.Devices, store.Device{ID: fmt.Sprintf("dev-%05d", i), Class: "c", Status: store.DeviceActive, Name: strings.Repeat("n", 200)})
		}
		return b
	}
	old, err := store.Open(store.Options{Dir: dir}) // an authority's options: what gateways had
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		b := devices(i*1000, 1000)
		if _, err := old.Apply(&b, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil { // flushes the memtable to compressed tables
		t.Fatal(err)
	}
	for round := range 2 {
		s, err := store.Open(store.Options{Dir: dir, Gateway: true})
		if err != nil {
			t.Fatal(err)
		}
		b := devices(4000+round*500, 500)
		if _, err := s.Apply(&b, nil); err != nil {
			t.Fatal(err)
		}
		ds, err := s.Devices()
		if err != nil || len(ds) != 4500+round*500 {
			t.Fatalf("round %d: %d devices, %v", round, len(ds), err)
		}
		for _, id := range []string{"dev-00000", "dev-03999", fmt.Sprintf("dev-%05d", 4499+round*500)} {
			if d, err := s.Device(id); err != nil || len(d.Name) != 200 {
				t.Fatalf("round %d: device %s: %+v, %v", round, id, d, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
