package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
)

// The daemon tells systemd READY only once it serves, and STOPPING on the way out.
func TestServeNotifiesSystemd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	sockDir, _ := os.MkdirTemp("", "eidsd")
	defer os.RemoveAll(sockDir)
	cfg := config.Default()
	cfg.Gateway.ID = "sd-test"
	cfg.StateDir = t.TempDir()
	cfg.MQTT.TCP, cfg.MQTT.TLS.Listen = "127.0.0.1:0", ""
	cfg.Admin.Socket = filepath.Join(sockDir, "admin.sock")
	cfg.Log.Level = "error"
	cfg.Metrics.Listen = ""
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, nil, nil) }()
	read := func() string {
		buf := make([]byte, 4096)
		_ = sock.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("no sd_notify datagram: %v", err)
		}
		return string(buf[:n])
	}
	if got := read(); !strings.HasPrefix(got, "READY=1\nSTATUS=0 sessions; not enrolled") {
		t.Fatalf("first datagram %q, want READY=1 with a status", got)
	}
	// READY means serving: the admin socket answers now.
	if _, err := os.Stat(cfg.Admin.Socket); err != nil {
		t.Fatalf("READY before the admin socket exists: %v", err)
	}
	cancel()
	for {
		got := read()
		if got == "STOPPING=1" {
			break
		}
		if !strings.HasPrefix(got, "STATUS=") {
			t.Fatalf("unexpected datagram %q", got)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
