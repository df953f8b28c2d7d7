package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/internal/testenv"
)

// bridgedDaemon starts a real gateway with the demo bundle and a bridge
// remote "cloud" to Mosquitto, and waits until the bridge is connected.
func bridgedDaemon(t *testing.T) (*edge.Gateway, string) {
	t.Helper()
	cloud := testenv.StartCloud(t, "cli-test")
	env := testenv.Gateway(t, func(c *config.Config) {
		c.Gateway.ID = "cli-test"
		c.Bridge.Remotes = []config.Remote{cloud.Remote("cloud", config.BridgeRule{Filter: "devices/+/telemetry/#", Direction: "out", QoS: 1})}
		c.Bridge = c.Bridge.WithDefaults(c.Gateway.ID)
	})
	iss := testenv.Issuer(t)
	testenv.ApplyDemo(t, env.G, iss, "")
	waitBridge(t, env.G, "connected", func(s admin.BridgeRemote) bool { return s.State == "connected" })

	// One reading, forwarded.
	conn, err := net.Dial("tcp", env.G.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	tok, _ := iss.Mint(iss.Claims("thermo-1", "alice", "edgeid", "publish:devices/thermo-1/telemetry/#", time.Hour), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ca, err := c.Connect(ctx, &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v", err)
	}
	if pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/thermo-1/telemetry/temp", QoS: 1, Payload: []byte("21.5")}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, pr)
	}
	waitBridge(t, env.G, "forwarded the reading", func(s admin.BridgeRemote) bool { return s.Forwarded == 1 && s.Queued == 0 })
	return env.G, env.Config.Admin.Socket
}

func waitBridge(t *testing.T, g *edge.Gateway, what string, ok func(admin.BridgeRemote) bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		st := g.Bridge.Status()[0]
		if ok(admin.BridgeRemote{State: st.State, Forwarded: st.Forwarded, Queued: st.Queued}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge never %s: %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBridgeCommand(t *testing.T) {
	_, sock := bridgedDaemon(t)

	out, err := cli(t, runBridge, "--socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("bridge: want a header and one row:\n%s", out)
	}
	if h := strings.Fields(lines[0]); strings.Join(h, " ") != "REMOTE STATE QUEUED BYTES OLDEST FORWARDED RESENT DROPPED REFUSED OUT RECEIVED REFUSED IN" {
		t.Errorf("bridge header: %q", lines[0])
	}
	row := strings.Fields(lines[1])
	// cloud, connected, since, <time>, then queued 0, bytes, oldest -, forwarded 1, resent 0, dropped 0, refused out 0, received 0, refused in 0
	if len(row) != 13 || row[0] != "cloud" || row[1] != "connected" || row[2] != "since" || row[4] != "0" || row[6] != "-" ||
		strings.Join(row[7:], " ") != "1 0 0 0 0 0" {
		t.Errorf("bridge row: %q\n%s", lines[1], out)
	}

	out, err = cli(t, runBridge, "--socket", sock, "--json")
	var rs []admin.BridgeRemote
	if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 {
		t.Fatalf("bridge --json: %v\n%s", err, out)
	}
	if r := rs[0]; r.Remote != "cloud" || r.Principal != "bridge:cloud" || r.State != "connected" || r.Forwarded != 1 || r.Class != "bridge" || r.ClassError != "" {
		t.Errorf("bridge --json: %+v", r)
	}
	if !strings.Contains(out, `"forwarded": 1`) || !strings.Contains(out, `"refused_out": 0`) {
		t.Errorf("bridge --json field names:\n%s", out)
	}
}

// Without bridge.remotes: an empty table, and [] in JSON.
func TestBridgeCommandWithoutBridge(t *testing.T) {
	_, _, sock := daemon(t)
	out, err := cli(t, runBridge, "--socket", sock, "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("bridge --json without a bridge: %v\n%s", err, out)
	}
	out, err = cli(t, runBridge, "--socket", sock)
	if err != nil || !strings.HasPrefix(out, "REMOTE") || strings.Count(out, "\n") != 1 {
		t.Fatalf("bridge without a bridge: %v\n%s", err, out)
	}
}

// A row during an outage says since when and why.
func TestBridgeRowDown(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	row := bridgeRow(admin.BridgeRemote{Remote: "cloud", State: "down", Since: now.Add(-time.Minute), LastError: "dial tcp: connection refused",
		Queued: 3, QueuedBytes: 120, Oldest: now.Add(-90 * time.Second), Memory: 2}, now)
	if row[1] != "down since 2026-12-01T11:59:00Z: dial tcp: connection refused" || row[2] != "3 (+2 QoS 0)" || row[3] != "120" || row[4] != "1m30s" {
		t.Errorf("row during an outage: %q", row)
	}
}
