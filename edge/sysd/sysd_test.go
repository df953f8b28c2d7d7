package sysd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// notifySocket listens where sd_notify will write, as systemd does.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func read(t *testing.T, c *net.UnixConn, wait time.Duration) (string, bool) {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

func TestNotify(t *testing.T) {
	c := notifySocket(t)
	Ready("serving 3 listeners")
	if got, _ := read(t, c, 5*time.Second); got != "READY=1\nSTATUS=serving 3 listeners" {
		t.Fatalf("ready datagram %q", got)
	}
	Status("syncing")
	if got, _ := read(t, c, 5*time.Second); got != "STATUS=syncing" {
		t.Fatalf("status datagram %q", got)
	}
	Reloading()
	if got, _ := read(t, c, 5*time.Second); got != "RELOADING=1" {
		t.Fatalf("reloading datagram %q", got)
	}
	Stopping()
	if got, _ := read(t, c, 5*time.Second); got != "STOPPING=1" {
		t.Fatalf("stopping datagram %q", got)
	}
}

func TestWatchdogPingsOnlyWhenHealthy(t *testing.T) {
	c := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var healthy atomic.Bool
	healthy.Store(true)
	var checks atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watchdog(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) error {
			checks.Add(1)
			if healthy.Load() {
				return nil
			}
			return context.DeadlineExceeded
		})
	}()
	for i := 0; i < 2; i++ {
		if got, ok := read(t, c, 5*time.Second); !ok || got != "WATCHDOG=1" {
			t.Fatalf("ping %d: %q %v", i, got, ok)
		}
	}
	// A hung main loop: checks keep failing, and no ping may follow.
	healthy.Store(false)
	for _, ok := read(t, c, 200*time.Millisecond); ok; _, ok = read(t, c, 200*time.Millisecond) {
	} // drain a ping that raced with the switch
	start := checks.Load()
	for checks.Load() < start+3 {
		time.Sleep(10 * time.Millisecond)
	}
	if got, ok := read(t, c, 10*time.Millisecond); ok {
		t.Fatalf("pinged the watchdog while unhealthy: %q", got)
	}
	cancel()
	<-done
}

func TestJournalFields(t *testing.T) {
	var sent []map[string]string
	var prios []journal.Priority
	h := NewJournalHandler(slog.LevelInfo)
	h.send = func(msg string, p journal.Priority, f map[string]string) error {
		f["MESSAGE"] = msg
		sent = append(sent, f)
		prios = append(prios, p)
		return nil
	}
	log := slog.New(h).With("gateway", "gw-7")
	log.Warn("connect refused", "device", "speaker-42", "remote", "10.0.0.5:4711", "reason", "expired", "code", "0x86",
		slog.Group("tls", "peer cert", "abc"), "2fa", "x")
	log.Debug("not sent")
	log.WithGroup("sync").Error("batch refused", "reason", "rollback")
	if len(sent) != 2 {
		t.Fatalf("sent %d records, want 2 (debug is below the level)", len(sent))
	}
	want := map[string]string{"MESSAGE": "connect refused", "SYSLOG_IDENTIFIER": "edgeid", "GATEWAY": "gw-7",
		"DEVICE_ID": "speaker-42", "REMOTE": "10.0.0.5:4711", "REASON": "expired", "CODE": "0x86",
		"TLS_PEER_CERT": "abc", "EDGEID_2FA": "x"}
	for k, v := range want {
		if sent[0][k] != v {
			t.Errorf("field %s = %q, want %q (all: %v)", k, sent[0][k], v, sent[0])
		}
	}
	if prios[0] != journal.PriWarning || prios[1] != journal.PriErr {
		t.Errorf("priorities %v", prios)
	}
	if sent[1]["SYNC_REASON"] != "rollback" || sent[1]["GATEWAY"] != "gw-7" {
		t.Errorf("grouped record fields %v", sent[1])
	}
	for k := range sent[0] {
		if strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" || k[0] == '_' {
			t.Errorf("invalid journal field name %q", k)
		}
	}
}
