package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// daemon starts a real gateway with the demo bundle and returns its socket.
func daemon(t *testing.T) (*edge.Gateway, *demo.Issuer, string) {
	t.Helper()
	env := testenv.Gateway(t, func(c *config.Config) { c.Gateway.ID = "cli-test" })
	iss := testenv.Issuer(t)
	testenv.ApplyDemo(t, env.G, iss, "")
	return env.G, iss, env.Config.Admin.Socket
}

// cli runs one CLI command in-process and returns what it printed.
func cli(t *testing.T, fn func(context.Context, []string) error, args ...string) (string, error) {
	t.Helper()
	var buf bytes.Buffer
	stdout = &buf
	defer func() { stdout = os.Stdout }()
	err := fn(context.Background(), args)
	return buf.String(), err
}

func TestCLIAgainstDaemon(t *testing.T) {
	g, iss, sock := daemon(t)

	out, err := cli(t, runStatus, "--socket", sock)
	if err != nil || !strings.Contains(out, "cli-test") || !strings.Contains(out, "devices=3") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = cli(t, runStatus, "--socket", sock, "--json")
	var st admin.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Gateway != "cli-test" || st.Records["classes"] != len(demo.Classes()) {
		t.Fatalf("status --json: %v\n%s", err, out)
	}

	out, err = cli(t, runDevices, "--socket", sock)
	if err != nil || !strings.Contains(out, "thermo-1") || !strings.Contains(out, "acme-cloud") {
		t.Fatalf("devices: %v\n%s", err, out)
	}

	out, err = cli(t, runImport, "--socket", sock, "../../testdata/provisioning.json")
	if err != nil || !strings.Contains(out, "imported 7 record(s)") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if d, err := g.Store.Device("speaker-42"); err != nil || d.Owner != "bob" {
		t.Fatalf("speaker-42 after import: %+v %v", d, err)
	}
	out, err = cli(t, runRevocations, "--socket", sock, "--json")
	var revs []store.Revocation
	if err != nil || json.Unmarshal([]byte(out), &revs) != nil || len(revs) != 2 {
		t.Fatalf("revocations --json: %v\n%s", err, out)
	}

	// A bad file is refused with the field named, and changes nothing.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"devices":[{"id":"x","class":"nope","status":"active"}]}`), 0o600)
	if _, err := cli(t, runImport, "--socket", sock, bad); err == nil || !strings.Contains(err.Error(), `class "nope" is not known`) {
		t.Fatalf("bad import: %v", err)
	}
	if _, err := g.Store.Device("x"); err == nil {
		t.Fatal("a rejected import created a device")
	}

	// A live session shows up, and kick ends it.
	conn, err := net.Dial("tcp", g.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	disc := make(chan byte, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { disc <- d.ReasonCode }, OnClientError: func(error) {}})
	tok, _ := iss.Mint(iss.Claims("thermo-1", "alice", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
	if ca, err := c.Connect(context.Background(), &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v", err)
	}
	out, err = cli(t, runSessions, "--socket", sock)
	if err != nil || !strings.Contains(out, "thermo-1") || !strings.Contains(out, "token") {
		t.Fatalf("sessions: %v\n%s", err, out)
	}
	out, err = cli(t, runSessions, "--socket", sock, "--json")
	var ss []admin.Session
	if err != nil || json.Unmarshal([]byte(out), &ss) != nil || len(ss) != 1 || ss[0].Device != "thermo-1" || ss[0].Protocol != 5 {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	out, err = cli(t, runDevices, "--socket", sock, "--json", "--online")
	var ds []admin.Device
	if err != nil || json.Unmarshal([]byte(out), &ds) != nil || len(ds) != 1 || ds[0].ID != "thermo-1" || ds[0].Sessions != 1 {
		t.Fatalf("devices --json --online: %v\n%s", err, out)
	}
	out, err = cli(t, runPair, "--socket", sock, "--window", "5m")
	if err != nil || !strings.Contains(out, "pairing window open until") {
		t.Fatalf("pair: %v\n%s", err, out)
	}
	out, err = cli(t, runStatus, "--socket", sock, "--json")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.PairingUntil.IsZero() || st.LED != "pairing" {
		t.Fatalf("status after pair: %v\n%s", err, out)
	}
	out, err = cli(t, runPair, "--socket", sock, "--window", "0s")
	if err != nil || !strings.Contains(out, "pairing window closed") {
		t.Fatalf("pair --window 0s: %v\n%s", err, out)
	}
	if _, err := cli(t, runPair, "--socket", sock, "--window", "5h"); err == nil || !strings.Contains(err.Error(), "0s (close) to 1h") {
		t.Fatalf("pair with a 5h window: %v", err)
	}
	out, err = cli(t, runDevices, "--socket", sock, "--online")
	if err != nil || !strings.Contains(out, "thermo-1") || strings.Contains(out, "acme-cloud") || strings.Contains(out, "speaker-42") {
		t.Fatalf("devices --online: %v\n%s", err, out)
	}
	if _, err := cli(t, runSync, "--socket", sock, "--now"); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("sync --now on an unenrolled gateway: %v", err)
	}
	out, err = cli(t, runKick, "--socket", sock, "thermo-1")
	if err != nil || !strings.Contains(out, "kicked 1 session(s)") {
		t.Fatalf("kick: %v\n%s", err, out)
	}
	select {
	case code := <-disc:
		if code != 0x87 {
			t.Fatalf("kick DISCONNECT 0x%02x, want 0x87", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kicked client was not disconnected")
	}
	if _, err := cli(t, runKick, "--socket", sock); err == nil {
		t.Fatal("kick without a target was accepted")
	}
}

func TestCLIWithoutDaemon(t *testing.T) {
	_, err := cli(t, runStatus, "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if err == nil || !strings.Contains(err.Error(), "is edgeid serve running") {
		t.Fatalf("status without a daemon: %v", err)
	}
}

func TestDoctorCommand(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "edgeid.yaml")
	os.WriteFile(bad, []byte("mqtt:\n  tcp: nope\n"), 0o600)
	out, err := cli(t, runDoctor, "-c", bad)
	if err == nil || !strings.Contains(out, "configuration") || !strings.Contains(out, "FAIL") || !strings.Contains(out, "mqtt.tcp") {
		t.Fatalf("doctor with a broken config: err %v\n%s", err, out)
	}
}
