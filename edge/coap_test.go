package edge_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/store"
)

// CoAP over DTLS-PSK, end to end: a real gateway, Debian's libcoap3-bin
// coap-client as the device and paho as the MQTT side. .ci/run installs
// libcoap3-bin. This file holds what the edge/coap*_test.go files share;
// what needs only a coap.Server is tested in edge/coap.

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
func startCoAPGateway(t testing.TB, opts ...gwOpt) *gw {
	t.Helper()
	opts = append([]gwOpt{func(c *config.Config) { c.CoAP.DTLSListen = "127.0.0.1:0" }}, opts...)
	g := startGatewayTB(t, opts...)
	if g.g.CoAP == nil || g.g.CoAP.Addr() == "" {
		t.Fatal("gateway has no CoAP listener")
	}
	g.addPSKDevice(coapDevice, coapID, coapKey)
	return g
}

// addPSKDevice registers an active thermostat of alice's with a PSK.
func (g *gw) addPSKDevice(id, identity, key string) {
	g.t.Helper()
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: id, Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PSKIdentity: identity, PSK: []byte(key)}}}, nil); err != nil {
		g.t.Fatal(err)
	}
}

// pskOptions are a DTLS client's options for a PSK session as identity.
func pskOptions(identity, key string) []piondtls.ClientOption {
	return []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
}

// dialPSK opens a go-coap DTLS session to the gateway as coap-1; the caller
// closes it.
func (g *gw) dialPSK(t *testing.T, opts ...udp.Option) *udpClient.Conn {
	t.Helper()
	cc, err := coapdtls.Dial(g.g.CoAP.Addr(), coapdtls.NewDTLSClientOptions(pskOptions(coapID, coapKey)...), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// service connects acme-cloud, the MQTT side of the tests.
func (g *gw) service() *client {
	g.t.Helper()
	return g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
}

// telemetry connects acme-cloud subscribed to every device's telemetry.
func (g *gw) telemetry(t *testing.T) *client {
	t.Helper()
	svc := g.service()
	if rc := svc.subscribe(t, "devices/+/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}
	return svc
}

// onlyMarker reads what svc receives until the marker and fails on
// anything else: nothing before it was published.
func onlyMarker(t *testing.T, svc *client, markerTopic, marker string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m := <-svc.msgs:
			if m.Topic == markerTopic && string(m.Payload) == marker {
				return
			}
			t.Errorf("published %q on %s", m.Payload, m.Topic)
		case <-timeout:
			t.Fatalf("marker %q never arrived", marker)
		}
	}
}

// revokeDevices revokes devices as of at, for two hours.
func (g *gw) revokeDevices(at time.Time, devices ...string) {
	g.t.Helper()
	var b store.Batch
	for _, d := range devices {
		b.Revocations = append(b.Revocations, store.Revocation{Kind: store.RevokeDevice, Value: d, RevokedAt: at, ExpiresAt: time.Now().Add(2 * time.Hour)})
	}
	if _, err := g.g.Store.Apply(&b, nil); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gw) coapURI(topic string) string { return "coaps://" + g.g.CoAP.Addr() + "/ps/" + topic }

// authzURI is the DTLS listener's /authz-info.
func (g *gw) authzURI() string { return "coaps://" + g.g.CoAP.Addr() + "/authz-info" }

// tokensBound counts the tokens bound to CoAP sessions so far.
func (g *gw) tokensBound() int { return strings.Count(g.logs.String(), "coap token bound to session") }

// coap runs one coap-client request as coap-1 (or with the given identity
// and key) and returns what it printed.
func (g *gw) coap(t *testing.T, identity, key string, args ...string) string {
	t.Helper()
	return runCoAPClient(t, append([]string{"-u", identity, "-k", key, "-B", "5"}, args...)...)
}

// runCoAPClient runs coap-client with args and returns what it printed.
func runCoAPClient(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, coapClientBin(t), args...).CombinedOutput()
	return string(out)
}

// observer is a running coap-client -s that observes a topic.
type observer struct {
	syncBuf
	done chan struct{}
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

// waitDone waits for the observer to exit and fails if it printed
// forbidden: what it must not have been sent.
func (o *observer) waitDone(t *testing.T, forbidden, what string) {
	t.Helper()
	<-o.done
	if out := o.String(); strings.Contains(out, forbidden) {
		t.Fatalf("%s:\n%s", what, out)
	}
}

func TestCoAP(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startCoAPGateway(t)
	svc := g.telemetry(t)

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
		o.waitDone(t, "after-revoke", "revoked device still received a command")
		out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "revoked", g.coapURI("devices/coap-1/telemetry/temp"))
		if strings.Contains(out, "2.04") {
			t.Errorf("revoked device's publish answered: %q", out)
		}
		if strings.Contains(g.logs.String(), coapKey) {
			t.Error("the PSK appears in the logs")
		}
	})
}
