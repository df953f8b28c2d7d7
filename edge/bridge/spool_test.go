package bridge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTest(t *testing.T, dir string, o SpoolOptions) *Spool {
	t.Helper()
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = 64 << 10
	}
	s, err := OpenSpool(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func msg(i int) Message {
	return Message{Topic: fmt.Sprintf("devices/d%d/telemetry", i%3), Payload: fmt.Appendf(nil, "reading %d", i), QoS: 1, Device: fmt.Sprintf("d%d", i%3)}
}

// readN reads n records and checks they are i0, i0+1, ... in order.
func readN(t *testing.T, r *Reader, i0, n int) []Record {
	t.Helper()
	stop := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { close(stop) })
	defer timer.Stop()
	var out []Record
	for k := range n {
		rec, ok, err := r.Next(stop)
		if err != nil || !ok {
			t.Fatalf("record %d: ok %v err %v", k, ok, err)
		}
		if want := msg(i0 + k); string(rec.Msg.Payload) != string(want.Payload) || rec.Msg.Topic != want.Topic || rec.Msg.Device != want.Device {
			t.Fatalf("record %d is %+v, want %+v", k, rec.Msg, want)
		}
		out = append(out, rec)
	}
	return out
}

func TestSpoolOrderAckReopen(t *testing.T) {
	for _, fsync := range []bool{true, false} {
		t.Run(fmt.Sprintf("fsync=%v", fsync), func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, SpoolOptions{Fsync: fsync, SyncInterval: time.Millisecond})
			for i := range 3000 { // several segments of 64 KiB
				if _, err := s.Append(msg(i)); err != nil {
					t.Fatal(err)
				}
			}
			r := s.NewReader()
			recs := readN(t, r, 0, 1000)
			s.Ack(recs[len(recs)-1].Seq)
			r.Close()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, SpoolOptions{Fsync: fsync})
			defer s.Close()
			if st := s.Stats(); st.Messages != 2000 {
				t.Fatalf("after reopen %d messages waiting, want 2000", st.Messages)
			}
			r = s.NewReader()
			defer r.Close()
			readN(t, r, 1000, 2000)
			if _, err := s.Append(msg(3000)); err != nil {
				t.Fatal(err)
			}
			readN(t, r, 3000, 1)
			// A rewind (reconnect) sends again from after the acked ones.
			r.Rewind()
			readN(t, r, 1000, 5)
		})
	}
}

// An ack the cursor file never got (a crash between the remote's PUBACK and
// the next save) sends those messages again: duplicates, never a loss.
func TestSpoolUnsavedAckResends(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, SpoolOptions{SyncInterval: time.Hour}) // write mode: no sync but on Append
	for i := range 10 {
		if _, err := s.Append(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Ack(4)
	// Simulate a crash: no Close (which would save the cursor); copy the
	// files as a crash leaves them.
	crash := t.TempDir()
	copyDir(t, dir, crash)
	s.Close()
	s2 := openTest(t, crash, SpoolOptions{})
	defer s2.Close()
	if st := s2.Stats(); st.Messages != 10 {
		t.Fatalf("%d messages after the crash, want all 10 again", st.Messages)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A power cut mid-write leaves a torn record: it is cut off at open, every
// whole record before it is kept, and appends go on after it.
func TestSpoolTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, SpoolOptions{Fsync: true})
	for i := range 20 {
		if _, err := s.Append(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := segs[len(segs)-1]
	st, _ := os.Stat(last)
	for _, cut := range []int64{3, 12} { // inside the header; inside the body
		if err := os.Truncate(last, st.Size()-cut); err != nil {
			t.Fatal(err)
		}
		s = openTest(t, dir, SpoolOptions{Fsync: true})
		if got := s.Stats().Messages; got != 19 {
			t.Fatalf("cut %d: %d messages kept, want 19", cut, got)
		}
		s.Close()
		// Put the 20th back for the next round.
		s = openTest(t, dir, SpoolOptions{Fsync: true})
		if _, err := s.Append(msg(19)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		st, _ = os.Stat(last)
	}
	// A flipped bit in the last record fails its checksum: cut too.
	b, _ := os.ReadFile(last)
	b[len(b)-2] ^= 0x40
	if err := os.WriteFile(last, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, SpoolOptions{})
	defer s.Close()
	r := s.NewReader()
	defer r.Close()
	readN(t, r, 0, 19)
}

func TestSpoolFullPolicies(t *testing.T) {
	t.Run("drop_oldest", func(t *testing.T) {
		s := openTest(t, t.TempDir(), SpoolOptions{MaxBytes: 256 << 10, SegmentBytes: 64 << 10})
		defer s.Close()
		const n = 20000
		for i := range n {
			if _, err := s.Append(msg(i)); err != nil {
				t.Fatal(err)
			}
		}
		st := s.Stats()
		if st.Dropped == 0 || st.Messages+st.Dropped != n {
			t.Fatalf("kept %d, dropped %d: want drops and kept+dropped = %d", st.Messages, st.Dropped, n)
		}
		if st.Bytes > 256<<10 {
			t.Fatalf("queue holds %d bytes, over max_bytes", st.Bytes)
		}
		// What is left is the newest, in order.
		r := s.NewReader()
		defer r.Close()
		readN(t, r, int(st.Dropped), int(st.Messages))
	})
	t.Run("refuse_new", func(t *testing.T) {
		s := openTest(t, t.TempDir(), SpoolOptions{MaxBytes: 256 << 10, SegmentBytes: 64 << 10, RefuseNew: true})
		defer s.Close()
		refused, kept := 0, 0
		for i := range 20000 {
			if _, err := s.Append(msg(i)); errors.Is(err, ErrFull) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			} else {
				kept++
			}
		}
		st := s.Stats()
		if refused == 0 || st.Dropped != 0 || int(st.Messages) != kept {
			t.Fatalf("refused %d, kept %d, stats %+v", refused, kept, st)
		}
		r := s.NewReader()
		defer r.Close()
		readN(t, r, 0, kept) // the oldest are kept
	})
}

func TestSpoolMaxAge(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	s := openTest(t, t.TempDir(), SpoolOptions{MaxAge: time.Hour, Now: clock})
	defer s.Close()
	for i := range 3 {
		if _, err := s.Append(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Hour)
	if _, err := s.Append(msg(3)); err != nil {
		t.Fatal(err)
	}
	r := s.NewReader()
	defer r.Close()
	recs := readN(t, r, 0, 4)
	for i, rec := range recs {
		if rec.Expired != (i < 3) {
			t.Errorf("record %d expired %v", i, rec.Expired)
		}
	}
	if st := s.Stats(); st.Dropped != 3 {
		t.Errorf("dropped %d, want 3", st.Dropped)
	}
}

// An ack cursor behind the first segment (the ack file lost or damaged after
// acknowledged segments were deleted) and a segment missing in the middle
// must not stop the queue: the reader goes on from the first record kept.
func TestSpoolGapsDoNotStall(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, SpoolOptions{SyncInterval: time.Millisecond})
	for i := range 6000 {
		if _, err := s.Append(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Ack(1500)
	s.Close() // saves the cursor and deletes the acknowledged segments
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("want several segments left, have %d", len(segs))
	}
	if err := os.Remove(filepath.Join(dir, "ack")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(segs[1]); err != nil { // a hole in the middle
		t.Fatal(err)
	}
	s = openTest(t, dir, SpoolOptions{})
	defer s.Close()
	r := s.NewReader()
	defer r.Close()
	stop := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { close(stop) })
	defer timer.Stop()
	last := uint64(0)
	for {
		rec, ok, err := r.Next(stop)
		if err != nil || !ok {
			t.Fatalf("after %d: ok %v err %v (the queue stalled)", last, ok, err)
		}
		if rec.Seq <= last {
			t.Fatalf("record %d after %d", rec.Seq, last)
		}
		last = rec.Seq
		if last == 6000 {
			break
		}
	}
	if st := s.Stats(); st.Dropped == 0 {
		t.Errorf("the hole was not counted: %+v", st)
	}
}
