package bridge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The spool is one remote's store-and-forward queue of QoS 1 messages: an
// append-only log cut into segment files, and an ack file holding the
// highest sequence number the remote has acknowledged (with all below it).
//
//	<dir>/<first seq, 20 digits>.seg   records, oldest file first
//	<dir>/ack                          8-byte seq + CRC-32C
//
// A record is u32 body length | u32 CRC-32C of body | body, and the body is
// u64 seq | i64 unix nanoseconds enqueued | message. Appends are written and
// synced in groups (group commit): Append returns once its record is
// durable as Sync says, so the device's PUBACK follows the disk. The ack file
// is rewritten (in place, 12 bytes) at most once a sync interval: after a
// crash the records acked since are sent again, a duplicate QoS 1 allows,
// never a loss. A torn or corrupt tail (power cut mid-write) is cut off at
// open; it was never acknowledged to a device, since its sync had not
// returned.

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const (
	recHeader = 8  // length, CRC
	recFixed  = 16 // seq, time
	// maxRecord bounds one record's body: an MQTT packet the gateway takes
	// is at most 256 MiB, but the bridge carries what fits a segment.
	maxRecord = 64 << 20
)

// ErrFull is Append's error when the queue is at max_bytes and the policy is
// refuse_new.
var ErrFull = errors.New("bridge queue full")

// SpoolOptions tune a spool.
type SpoolOptions struct {
	MaxBytes     int64
	MaxAge       time.Duration
	RefuseNew    bool // when full: refuse the new message instead of dropping the oldest segment
	Fsync        bool // fsync before Append returns ("batch"); else write(2) only, fsync in the background
	SyncInterval time.Duration
	SegmentBytes int64
	Log          *slog.Logger
	Now          func() time.Time
}

// Record is one queued message as read back.
type Record struct {
	Seq      uint64
	Enqueued time.Time
	Msg      Message
	// Expired: it waited longer than max_age. It is not to be sent; the
	// sender acks it in turn (and it is counted as dropped).
	Expired bool
}

type segment struct {
	first, last uint64 // seqs held (last < first: empty)
	size        int64
	newest      time.Time
	path        string
}

// Spool is safe for concurrent use. Readers see only durable records.
type Spool struct {
	dir string
	o   SpoolOptions

	mu       sync.Mutex
	cond     *sync.Cond // durable or closed changed
	segs     []*segment
	active   *os.File
	w        *bufio.Writer
	toSync   []*os.File // rolled-over files written since the last sync
	next     uint64     // seq of the next append
	written  uint64     // last seq handed to the writer
	durable  uint64     // last seq durable as Fsync says
	synced   uint64     // last seq fsynced
	acked    uint64     // every seq <= acked is done
	ackSaved uint64     // acked as the ack file holds it
	bytes    int64      // bytes of the segment files: what max_bytes bounds
	closed   bool
	closing  bool
	err      error // a write or sync failed: the spool refuses appends from then on
	dropped  uint64
	// BytesWritten counts what the spool wrote to disk: records and ack file.
	bytesWritten uint64

	notify chan struct{} // closed and replaced when durable advances or the spool closes
	kick   chan struct{} // wakes the syncer
	done   chan struct{}
	wg     sync.WaitGroup
}

// OpenSpool opens (or creates) the spool in dir, cutting off a torn tail.
func OpenSpool(dir string, o SpoolOptions) (*Spool, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 1 << 20
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("bridge queue: %w", err)
	}
	s := &Spool{dir: dir, o: o, kick: make(chan struct{}, 1), done: make(chan struct{}), notify: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("bridge queue %s: %w", dir, err)
	}
	s.wg.Add(1)
	go s.syncer()
	return s, nil
}

func (s *Spool) load() error {
	s.acked = readAck(filepath.Join(s.dir, "ack"))
	s.ackSaved = s.acked
	names, err := filepath.Glob(filepath.Join(s.dir, "*.seg"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	expect := uint64(0)
	for i, name := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".seg"), 10, 64)
		if err != nil {
			continue
		}
		if expect != 0 && first != expect {
			s.o.Log.Warn("bridge queue: a segment is missing; messages between were lost", "dir", s.dir, "want", expect, "found", first)
		}
		seg := &segment{first: first, last: first - 1, path: name}
		good, err := scan(name, func(r Record, end int64) bool {
			if r.Seq != seg.last+1 {
				return false // out of sequence: treat as corrupt from here
			}
			seg.last, seg.size, seg.newest = r.Seq, end, r.Enqueued
			return true
		})
		if err != nil {
			return err
		}
		if st, err := os.Stat(name); err == nil && st.Size() > good {
			s.o.Log.Warn("bridge queue: cut a torn or corrupt tail (never acknowledged to a device)",
				"file", name, "kept_bytes", good, "cut_bytes", st.Size()-good)
			if err := os.Truncate(name, good); err != nil {
				return err
			}
			if i != len(names)-1 {
				// Later segments follow a hole; keep them (their records
				// were acknowledged to devices) and say so.
				s.o.Log.Warn("bridge queue: corruption before the last segment", "file", name)
			}
		}
		if seg.last < seg.first && i != len(names)-1 {
			_ = os.Remove(name)
			continue
		}
		s.segs = append(s.segs, seg)
		expect = seg.last + 1
	}
	s.next = 1
	if n := len(s.segs); n > 0 {
		s.next = s.segs[n-1].last + 1
	}
	if s.acked >= s.next {
		// The ack file is ahead of the log (the log's tail was cut): nothing
		// after it was ever acknowledged to a device either.
		s.acked = s.next - 1
	}
	if len(s.segs) > 0 && s.acked+1 < s.segs[0].first {
		// The ack file is behind the first segment (damaged, missing, or
		// older than the deletion of acknowledged segments): what is gone
		// was acknowledged by the cloud; start at the first record kept.
		s.acked = s.segs[0].first - 1
	}
	s.written, s.durable, s.synced = s.next-1, s.next-1, s.next-1
	s.dropAcked()
	for _, g := range s.segs {
		s.bytes += g.size
	}
	return s.openActive()
}

// openActive opens the last segment for appending, or starts one.
func (s *Spool) openActive() error {
	if n := len(s.segs); n > 0 && s.segs[n-1].size < s.o.SegmentBytes {
		f, err := os.OpenFile(s.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		s.active, s.w = f, bufio.NewWriterSize(f, 64<<10)
		return nil
	}
	return s.roll()
}

// roll starts a new segment at s.next. Called with mu held (or at load).
func (s *Spool) roll() error {
	if s.active != nil {
		if err := s.w.Flush(); err != nil {
			return err
		}
		s.toSync = append(s.toSync, s.active)
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", s.next))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	s.segs = append(s.segs, &segment{first: s.next, last: s.next - 1, path: path})
	s.active, s.w = f, bufio.NewWriterSize(f, 64<<10)
	syncDir(s.dir)
	return nil
}

// scan reads the records of one file, calling fn with each and the offset
// after it, until fn returns false, the file ends or a record is damaged. It
// returns the offset after the last good record.
func scan(path string, fn func(Record, int64) bool) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	for {
		rec, n, err := readRecord(r)
		if err != nil {
			return off, nil // io.EOF, a torn or a corrupt record: stop here
		}
		if !fn(rec, off+n) {
			return off, nil
		}
		off += n
	}
}

func readRecord(r *bufio.Reader) (Record, int64, error) {
	var h [recHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Record{}, 0, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n < recFixed || n > maxRecord {
		return Record{}, 0, errors.New("bad record length")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Record{}, 0, err
	}
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(h[4:8]) {
		return Record{}, 0, errors.New("bad record checksum")
	}
	rec := Record{Seq: binary.BigEndian.Uint64(body[0:8]), Enqueued: time.Unix(0, int64(binary.BigEndian.Uint64(body[8:16])))}
	m, err := decodeMessage(body[recFixed:])
	if err != nil {
		return Record{}, 0, err
	}
	rec.Msg = m
	return rec, int64(recHeader) + int64(n), nil
}

// Append queues m and returns its seq once it is durable (see SpoolOptions.Fsync).
func (s *Spool) Append(m Message) (uint64, error) {
	body := make([]byte, recHeader+recFixed, recHeader+recFixed+m.size())
	body = m.appendTo(body)
	if len(body)-recHeader > maxRecord || int64(len(body)) > s.o.SegmentBytes {
		return 0, fmt.Errorf("bridge queue: a message of %d bytes is larger than a segment (bridge.queue.segment_bytes %d)", len(body), s.o.SegmentBytes)
	}
	s.mu.Lock()
	if s.closed || s.err != nil {
		err := s.err
		s.mu.Unlock()
		if err == nil {
			err = errors.New("bridge queue closed")
		}
		return 0, err
	}
	if s.bytes+int64(len(body)) > s.o.MaxBytes {
		if s.o.RefuseNew {
			s.mu.Unlock()
			return 0, ErrFull
		}
		s.dropOldest(int64(len(body)))
	}
	seq := s.next
	binary.BigEndian.PutUint32(body[0:4], uint32(len(body)-recHeader))
	binary.BigEndian.PutUint64(body[8:16], seq)
	now := s.o.Now()
	binary.BigEndian.PutUint64(body[16:24], uint64(now.UnixNano()))
	binary.BigEndian.PutUint32(body[4:8], crc32.Checksum(body[recHeader:], crcTable))
	act := s.segs[len(s.segs)-1]
	if act.size > 0 && act.size+int64(len(body)) > s.o.SegmentBytes {
		if err := s.roll(); err != nil {
			s.fail(err)
			s.mu.Unlock()
			return 0, err
		}
		act = s.segs[len(s.segs)-1]
	}
	if _, err := s.w.Write(body); err != nil {
		s.fail(err)
		s.mu.Unlock()
		return 0, err
	}
	s.next++
	s.written = seq
	act.last, act.size, act.newest = seq, act.size+int64(len(body)), now
	s.bytes += int64(len(body))
	s.bytesWritten += uint64(len(body))
	select {
	case s.kick <- struct{}{}:
	default:
	}
	for s.durable < seq && s.err == nil && !s.closed {
		s.cond.Wait()
	}
	err := s.err
	if err == nil && s.durable < seq {
		err = errors.New("bridge queue closed before the message was written")
	}
	s.mu.Unlock()
	return seq, err
}

// fail marks the spool broken (mu held): a disk that refused a write is not
// trusted with later ones; appends are refused and devices keep their messages.
func (s *Spool) fail(err error) {
	if s.err == nil {
		s.err = err
		s.o.Log.Error("bridge queue: write failed; refusing new messages", "dir", s.dir, "err", err)
	}
	s.cond.Broadcast()
}

// dropOldest drops whole segments from the front until need fits (mu held).
// The active segment is never dropped.
func (s *Spool) dropOldest(need int64) {
	for s.bytes+need > s.o.MaxBytes && len(s.segs) > 1 {
		g := s.segs[0]
		if g.last >= g.first && g.last > s.acked {
			from := max(g.first, s.acked+1)
			n := g.last - from + 1
			s.dropped += n
			s.o.Log.Warn("bridge queue full: dropped the oldest messages", "dir", s.dir, "messages", n, "first_seq", from, "last_seq", g.last)
			s.acked = g.last
		}
		s.removeFirst()
	}
}

func (s *Spool) removeFirst() {
	g := s.segs[0]
	s.bytes -= g.size
	_ = os.Remove(g.path)
	s.segs = s.segs[1:]
}

// dropAcked removes the segments every record of which is acked (mu held),
// never the active one.
func (s *Spool) dropAcked() {
	for len(s.segs) > 1 && s.segs[0].last <= s.acked {
		s.removeFirst()
	}
}

// syncer flushes and syncs appends in groups, and saves the ack cursor.
func (s *Spool) syncer() {
	defer s.wg.Done()
	tick := time.NewTicker(max(s.o.SyncInterval, 10*time.Millisecond))
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-s.done:
			s.flush(true)
			return
		case <-s.kick:
		case <-tick.C:
			s.flush(true)
			continue
		}
		if wait := s.o.SyncInterval - time.Since(last); s.o.Fsync && wait > 0 {
			// Batch: messages arriving during the wait share this sync.
			select {
			case <-time.After(wait):
			case <-s.done:
				s.flush(true)
				return
			}
		}
		last = time.Now()
		s.flush(s.o.Fsync)
	}
}

// flush writes what is buffered and, with fsync, syncs it; then it makes
// the appends durable and saves the ack cursor if it moved.
func (s *Spool) flush(fsync bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	upto := s.written
	if upto == s.synced && len(s.toSync) == 0 && s.acked == s.ackSaved {
		s.mu.Unlock()
		return // nothing new: an idle queue costs no fsync
	}
	err := s.w.Flush()
	files := append(s.toSync, s.active)
	s.toSync = nil
	acked := s.acked
	s.mu.Unlock()
	if err == nil && fsync && upto == s.syncedSeq() && len(files) == 1 {
		fsync = false // only the ack cursor moved: its write below needs no file sync
	}
	if err == nil && fsync {
		for _, f := range files {
			if e := f.Sync(); e != nil && err == nil {
				err = e
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if fsync || err != nil {
		for _, f := range files[:len(files)-1] {
			_ = f.Close()
		}
	} else {
		// Written, not yet synced: the next syncing flush syncs them.
		s.toSync = append(files[:len(files)-1:len(files)-1], s.toSync...)
	}
	if err != nil {
		s.fail(err)
		return
	}
	if fsync && upto > s.synced {
		s.synced = upto
	}
	if upto > s.durable {
		s.durable = upto
		s.cond.Broadcast()
		close(s.notify)
		s.notify = make(chan struct{})
	}
	if acked != s.ackSaved {
		// The cursor must be on disk before the segments it lets go are
		// deleted, or a power cut could leave an old cursor and no files.
		deletes := len(s.segs) > 1 && s.segs[0].last <= acked
		if err := writeAck(filepath.Join(s.dir, "ack"), acked, fsync || deletes); err != nil {
			s.o.Log.Warn("bridge queue: saving the ack cursor failed (messages may be sent again)", "err", err)
		} else {
			s.ackSaved = acked
			s.bytesWritten += 12
		}
		s.dropAcked()
	}
}

func (s *Spool) syncedSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Ack marks every record up to seq as delivered.
func (s *Spool) Ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq <= s.acked || seq > s.durable {
		return
	}
	s.acked = seq
	s.cond.Broadcast()
}

// Stats are what the spool holds.
type Stats struct {
	Messages     uint64
	Bytes        int64
	Oldest       time.Time // zero when empty
	Dropped      uint64
	BytesWritten uint64
	Err          string
}

// Stats reports the spool's state.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Messages: s.written - s.acked, Bytes: max(s.bytes, 0), Dropped: s.dropped, BytesWritten: s.bytesWritten}
	if s.err != nil {
		st.Err = s.err.Error()
	}
	if st.Messages > 0 {
		// The oldest waiting message is in the first segment holding one;
		// its newest record bounds it from above, which is what max_age uses.
		for _, g := range s.segs {
			if g.last > s.acked && g.last >= g.first {
				st.Oldest = g.newest
				break
			}
		}
	}
	return st
}

// Reader reads durable records from after seq, in order.
type Reader struct {
	s   *Spool
	pos uint64 // last seq returned
	f   *os.File
	br  *bufio.Reader
	seg uint64 // first seq of the open segment
}

// NewReader returns a reader positioned after the acked records.
func (s *Spool) NewReader() *Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Reader{s: s, pos: s.acked}
}

// Acked is the highest seq acknowledged with all below it.
func (s *Spool) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// Rewind makes the next record returned the first one after the acked ones,
// for a resend after reconnect.
func (r *Reader) Rewind() {
	r.s.mu.Lock()
	r.pos = r.s.acked
	r.s.mu.Unlock()
	r.closeFile()
}

// Pos is the seq of the last record returned.
func (r *Reader) Pos() uint64 { return r.pos }

func (r *Reader) closeFile() {
	if r.f != nil {
		_ = r.f.Close()
		r.f, r.br = nil, nil
	}
}

// Close releases the reader's file.
func (r *Reader) Close() { r.closeFile() }

// Next returns the next durable record, waiting until there is one or stop
// is closed (ok false). Records older than max_age are skipped and counted.
func (r *Reader) Next(stop <-chan struct{}) (Record, bool, error) {
	s := r.s
	for {
		s.mu.Lock()
		if r.pos < s.acked { // dropped from under us (queue full)
			r.pos = s.acked
			r.closeFile()
		}
		for r.pos >= s.durable && !s.closed {
			ch := s.notify
			s.mu.Unlock()
			select {
			case <-stop:
				return Record{}, false, nil
			case <-ch:
			}
			s.mu.Lock()
		}
		if s.closed {
			s.mu.Unlock()
			return Record{}, false, nil
		}
		var seg *segment
		for _, g := range s.segs {
			if r.pos+1 >= g.first && r.pos+1 <= g.last {
				seg = g
				break
			}
			if g.first > r.pos+1 && g.last >= g.first {
				// A hole (a segment lost to the disk): go on after it,
				// counted as lost, rather than stop the queue for ever.
				s.o.Log.Warn("bridge queue: records missing; going on after them", "dir", s.dir, "from", r.pos+1, "to", g.first-1)
				s.dropped += g.first - (r.pos + 1)
				r.pos = g.first - 1
				r.closeFile()
				seg = g
				break
			}
		}
		s.mu.Unlock()
		if seg == nil {
			return Record{}, false, fmt.Errorf("bridge queue: record %d is in no segment", r.pos+1)
		}
		if r.f == nil || r.seg != seg.first {
			r.closeFile()
			f, err := os.Open(seg.path)
			if err != nil {
				return Record{}, false, err
			}
			r.f, r.br, r.seg = f, bufio.NewReaderSize(f, 64<<10), seg.first
		}
		rec, _, err := readRecord(r.br)
		if err != nil {
			r.closeFile()
			return Record{}, false, fmt.Errorf("bridge queue: read record %d of %s: %w", r.pos+1, seg.path, err)
		}
		if rec.Seq <= r.pos {
			continue // positioning after a rewind or a reopen
		}
		if rec.Seq != r.pos+1 {
			r.closeFile()
			return Record{}, false, fmt.Errorf("bridge queue: record %d where %d was due in %s", rec.Seq, r.pos+1, seg.path)
		}
		r.pos = rec.Seq
		if s.o.MaxAge > 0 && s.o.Now().Sub(rec.Enqueued) > s.o.MaxAge {
			rec.Expired = true
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
		}
		return rec, true, nil
	}
}

// Close syncs and closes the spool; waiting appends fail.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed || s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()
	close(s.done)
	s.wg.Wait()
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	close(s.notify)
	s.notify = make(chan struct{})
	err := s.active.Close()
	s.mu.Unlock()
	return err
}

func readAck(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 12 || crc32.Checksum(b[:8], crcTable) != binary.BigEndian.Uint32(b[8:]) {
		return 0 // none, or damaged: resend from the start (duplicates, not loss)
	}
	return binary.BigEndian.Uint64(b[:8])
}

func writeAck(path string, seq uint64, fsync bool) error {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], seq)
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[:8], crcTable))
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if statErr != nil && fsync {
		defer syncDir(filepath.Dir(path)) // a new file: its directory entry too
	}
	if _, err := f.WriteAt(b[:], 0); err != nil {
		_ = f.Close()
		return err
	}
	if fsync {
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
