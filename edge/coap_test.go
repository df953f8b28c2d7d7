package edge_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/store"
)

// CoAP over DTLS-PSK, end to end: a real gateway, Debian's libcoap3-bin
// coap-client as the device and paho as the MQTT side. .ci/run installs
// libcoap3-bin.

const (
	coapDevice = "coap-1"
	coapID     = "coap-1-identity"
	coapKey    = "coap-1-secret-key-0123456789abcd" // 32 bytes
)

func coapClientBin(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"coap-client", "coap-client-openssl", "coap-client-gnutls"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Fatal("coap-client not found: install Debian's libcoap3-bin (.ci/run does)")
	return ""
}

// startCoAPGateway starts a gateway with CoAP on loopback and adds the
// thermostat coap-1 with a PSK.
func startCoAPGateway(t *testing.T, opts ...gwOpt) *gw {
	t.Helper()
	opts = append([]gwOpt{func(c *config.Config) { c.CoAP.DTLSListen = "127.0.0.1:0" }}, opts...)
	g := startGateway(t, opts...)
	if g.g.CoAP == nil || g.g.CoAP.Addr() == "" {
		t.Fatal("gateway has no CoAP listener")
	}
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: coapDevice, Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PSKIdentity: coapID, PSK: []byte(coapKey)}}}, nil); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *gw) coapURI(topic string) string { return "coaps://" + g.g.CoAP.Addr() + "/ps/" + topic }

// coap runs one coap-client request as coap-1 (or with the given identity
// and key) and returns what it printed.
func (g *gw) coap(t *testing.T, identity, key string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := append([]string{"-u", identity, "-k", key, "-B", "5"}, args...)
	out, _ := exec.CommandContext(ctx, coapClientBin(t), all...).CombinedOutput()
	return string(out)
}

// observer is a running coap-client -s that observes a topic.
type observer struct {
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (o *observer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out.Write(p)
}

func (o *observer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out.String()
}

// observe starts coap-client observing topic for secs seconds and returns
// once the gateway holds the observation.
func (g *gw) observe(t *testing.T, topic string, secs string) *observer {
	t.Helper()
	return g.observeAs(t, coapDevice, []string{"-u", coapID, "-k", coapKey}, g.coapURI(topic), secs)
}

// observeAs observes uri as device, with coap-client's credential flags.
func (g *gw) observeAs(t *testing.T, device string, cred []string, uri string, secs string) *observer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	o := &observer{done: make(chan struct{})}
	before := g.g.CoAP.Observations(device)
	args := append(append([]string{"-oL", "-eL", coapClientBin(t)}, cred...), "-s", secs, "-w", "-m", "get", uri)
	cmd := exec.CommandContext(ctx, "stdbuf", args...)
	cmd.Stdout, cmd.Stderr = o, o
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(o.done); cancel() }()
	t.Cleanup(func() { cancel(); <-o.done })
	for g.g.CoAP.Observations(device) <= before {
		select {
		case <-o.done:
			t.Fatalf("coap-client exited before observing:\n%s", o.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return o
}

// waitFor waits until the observer printed want.
func (o *observer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for !strings.Contains(o.String(), want) {
		select {
		case <-deadline:
			t.Fatalf("observer never printed %q; it printed:\n%s", want, o.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestCoAP(t *testing.T) {
	g := startCoAPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	if rc := svc.subscribe(t, "devices/+/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}

	t.Run("PSK publish reaches an MQTT subscriber", func(t *testing.T) {
		if out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "21.5", g.coapURI("devices/coap-1/telemetry/temp")); strings.Contains(out, "4.") {
			t.Fatalf("publish refused: %q", out)
		}
		svc.expectMsg(t, "devices/coap-1/telemetry/temp", "21.5")
	})

	t.Run("forbidden publish and subscribe get 4.03", func(t *testing.T) {
		out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "x", g.coapURI("devices/thermo-1/telemetry/temp"))
		if !strings.Contains(out, "4.03") {
			t.Errorf("publish to another device's topic: want 4.03, got %q", out)
		}
		out = g.coap(t, coapID, coapKey, "-s", "2", "-m", "get", g.coapURI("devices/thermo-1/commands/set"))
		if !strings.Contains(out, "4.03") {
			t.Errorf("observe another device's commands: want 4.03, got %q", out)
		}
		// The refused publish never reached the broker: a later allowed one arrives first.
		g.coap(t, coapID, coapKey, "-m", "post", "-e", "marker", g.coapURI("devices/coap-1/telemetry/temp"))
		svc.expectNoMsgBefore(t, "devices/thermo-1/telemetry/temp", "devices/coap-1/telemetry/temp", "marker")
	})

	t.Run("wrong PSK or identity fails the handshake", func(t *testing.T) {
		for _, c := range []struct{ id, key string }{{coapID, "wrong-key-wrong-key-wrong-key-00"}, {"nobody", coapKey}} {
			out := g.coap(t, c.id, c.key, "-B", "2", "-m", "put", "-e", "evil", g.coapURI("devices/coap-1/telemetry/temp"))
			if strings.Contains(out, "2.04") {
				t.Errorf("identity %q: request answered: %q", c.id, out)
			}
		}
		g.coap(t, coapID, coapKey, "-m", "put", "-e", "after-bad-psk", g.coapURI("devices/coap-1/telemetry/temp"))
		svc.expectNoMsgBefore(t, "never", "devices/coap-1/telemetry/temp", "after-bad-psk")
		if n := g.g.CoAP.Sessions(""); n > 1 {
			t.Errorf("%d CoAP sessions after failed handshakes", n)
		}
	})

	t.Run("observe receives MQTT publishes", func(t *testing.T) {
		o := g.observe(t, "devices/coap-1/commands/set", "8")
		if rc := svc.publish(t, "devices/coap-1/commands/set", "22.0", 1); rc >= 0x80 {
			t.Fatalf("publish command: %s", hexCode(rc))
		}
		o.waitFor(t, "22.0")
	})

	t.Run("revoking the device cancels its observation", func(t *testing.T) {
		o := g.observe(t, "devices/coap-1/commands/set", "8")
		svc.publish(t, "devices/coap-1/commands/set", "before", 1)
		o.waitFor(t, "before")
		if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: coapDevice, Class: "thermostat", Owner: "alice",
			Status: store.DeviceRevoked, PSKIdentity: coapID, PSK: []byte(coapKey)}}}, nil); err != nil {
			t.Fatal(err)
		}
		if n := g.g.CoAP.Observations(coapDevice); n != 0 {
			t.Fatalf("%d observations left after revocation", n)
		}
		svc.publish(t, "devices/coap-1/commands/set", "after-revoke", 1)
		<-o.done
		if out := o.String(); strings.Contains(out, "after-revoke") {
			t.Fatalf("revoked device still received a command:\n%s", out)
		}
		out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "revoked", g.coapURI("devices/coap-1/telemetry/temp"))
		if strings.Contains(out, "2.04") {
			t.Errorf("revoked device's publish answered: %q", out)
		}
		if strings.Contains(g.logs.String(), coapKey) {
			t.Error("the PSK appears in the logs")
		}
	})
}

func TestCoAPThrottle(t *testing.T) {
	g := startCoAPGateway(t, func(c *config.Config) {
		// 3 at once, then one per 1000 s: the test never waits for a refill.
		c.Throttle.Device = config.Rates{MessagesPerSecond: 0.001, MessageBurst: 3}
	})
	counts := map[string]int{}
	for range 6 {
		out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "1", g.coapURI("devices/coap-1/telemetry/temp"))
		switch {
		case strings.Contains(out, "4.29"):
			counts["4.29"]++
		case strings.Contains(out, "4.03"):
			counts["4.03"]++
		default:
			counts["ok"]++
		}
	}
	if counts["ok"] != 3 || counts["4.29"] != 3 {
		t.Fatalf("responses %v; want 3 accepted and 3 refused with 4.29", counts)
	}
}

func TestCoAPPSKValidation(t *testing.T) {
	g := startGateway(t)
	dev := func(id, identity string, key []byte) store.Device {
		return store.Device{ID: id, Class: "thermostat", Status: store.DeviceActive, PSKIdentity: identity, PSK: key}
	}
	long := []byte(coapKey)
	for _, c := range []struct {
		name string
		b    store.Batch
		want string
	}{
		{"short key", store.Batch{Devices: []store.Device{dev("p1", "id1", []byte("short"))}}, ".psk must be 16 to 64 bytes"},
		{"key without identity", store.Batch{Devices: []store.Device{dev("p1", "", long)}}, ".psk_identity is empty"},
		{"identity without key", store.Batch{Devices: []store.Device{dev("p1", "id1", nil)}}, ".psk is empty"},
		{"shared identity", store.Batch{Devices: []store.Device{dev("p1", "same", long), dev("p2", "same", long)}}, "PSK identities must be unique"},
	} {
		_, err := g.g.Store.Apply(&c.b, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), coapKey) {
			t.Errorf("%s: the error shows the key", c.name)
		}
	}
}
