package edge_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Interop with Debian's mosquitto-clients, the tools technicians and device
// makers reach for first. .ci/run installs them.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install Debian's mosquitto-clients (.ci/run does)", name)
	}
	return p
}

func (g *gw) hostPort(proto string) (string, string) {
	a := g.g.Addr(proto)
	i := strings.LastIndex(a, ":")
	return a[:i], a[i+1:]
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, needTool(t, name), args...).CombinedOutput()
	return string(out), err
}

// startSub runs mosquitto_sub and returns once the gateway holds its
// subscription, with a function that waits for it to exit and returns what it
// printed. (Its -d output is block-buffered on a pipe, so it cannot tell us.)
func (g *gw) startSub(t *testing.T, clientID, filter string, args ...string) func() (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	cmd := exec.CommandContext(ctx, needTool(t, "mosquitto_sub"), append(args, "-i", clientID, "-t", filter)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for !g.subscribed(clientID, filter) {
		select {
		case err := <-exited:
			cancel()
			t.Fatalf("mosquitto_sub exited before subscribing: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() (string, error) {
		defer cancel()
		err := <-exited
		return out.String(), err
	}
}

// subscribed reports whether clientID has a live session holding filter.
func (g *gw) subscribed(clientID, filter string) bool {
	for _, s := range g.g.Broker.Sessions.All() {
		if s.ClientID == clientID {
			if _, ok := s.Client().State.Subscriptions.Get(filter); ok {
				return true
			}
		}
	}
	return false
}

func TestMosquittoClients(t *testing.T) {
	g := startGateway(t)
	host, port := g.hostPort("tcp")
	svcTok := g.token("acme-cloud", "acme-cloud", nil)
	devTok := g.token("thermo-1", "alice", nil)

	t.Run("3.1.1 publish reaches a 5 subscriber", func(t *testing.T) {
		wait := g.startSub(t, "acme-cloud", "devices/+/telemetry/#", "-h", host, "-p", port, "-V", "5", "-u", "acme-cloud", "-P", svcTok,
			"-C", "1", "-W", "15", "-v")
		out, err := run(t, "mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv311", "-i", "thermo-1", "-u", "thermo-1", "-P", devTok,
			"-t", "devices/thermo-1/telemetry/temp", "-m", "21.5", "-q", "1")
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		got, err := wait()
		if err != nil || !strings.Contains(got, "devices/thermo-1/telemetry/temp 21.5") {
			t.Fatalf("mosquitto_sub did not print the message (err %v):\n%s", err, got)
		}
	})

	t.Run("3.1.1 refused connects", func(t *testing.T) {
		out, err := run(t, "mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv311", "-i", "thermo-1", "-u", "thermo-1", "-P", devTok+"x",
			"-t", "devices/thermo-1/telemetry/temp", "-m", "1")
		if err == nil || !strings.Contains(out, "bad user name or password") {
			t.Errorf("tampered token: err %v, output %q; want refused with bad user name or password", err, out)
		}
		out, err = run(t, "mosquitto_pub", "-h", host, "-p", port, "-V", "mqttv311", "-i", "thermo-3", "-u", "thermo-3",
			"-P", g.token("thermo-3", "alice", nil), "-t", "devices/thermo-3/telemetry/temp", "-m", "1")
		if err == nil || !strings.Contains(out, "not authorised") {
			t.Errorf("suspended device: err %v, output %q; want refused, not authorised", err, out)
		}
	})

	t.Run("5 publish to a forbidden topic is refused", func(t *testing.T) {
		out, _ := run(t, "mosquitto_pub", "-h", host, "-p", port, "-V", "5", "-i", "thermo-1", "-u", "thermo-1", "-P", devTok,
			"-t", "devices/thermo-2/telemetry/temp", "-m", "1", "-q", "1", "-d")
		if !strings.Contains(out, "Not authorized") {
			t.Errorf("want a PUBACK Not authorized, got:\n%s", out)
		}
	})

	t.Run("3.1.1 forbidden subscription is denied", func(t *testing.T) {
		out, _ := run(t, "mosquitto_sub", "-h", host, "-p", port, "-V", "mqttv311", "-i", "thermo-1", "-u", "thermo-1", "-P", devTok,
			"-t", "devices/#", "-W", "5")
		if !strings.Contains(out, "denied") {
			t.Errorf("want the subscription denied, got:\n%s", out)
		}
	})

	t.Run("certificate over TLS", func(t *testing.T) {
		thost, tport := g.hostPort("tls")
		wait := g.startSub(t, "acme-cloud", "devices/thermo-2/telemetry/#", "-h", host, "-p", port, "-V", "5", "-u", "acme-cloud", "-P", svcTok,
			"-C", "1", "-W", "15", "-v")
		out, err := run(t, "mosquitto_pub", "-h", thost, "-p", tport, "--cafile", g.files.CACert, "--cert", g.files.DeviceCert,
			"--key", g.files.DeviceKey, "-i", "thermo-2", "-t", "devices/thermo-2/telemetry/temp", "-m", "19.0", "-q", "1")
		if err != nil {
			t.Fatalf("mosquitto_pub over TLS: %v\n%s", err, out)
		}
		if got, err := wait(); err != nil || !strings.Contains(got, "devices/thermo-2/telemetry/temp 19.0") {
			t.Fatalf("subscriber did not get the TLS device's message (err %v):\n%s", err, got)
		}
	})
}
