package edge_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Plain CoAP over UDP: off by default; when on, only requests that prove
// possession of a key-bound token are served. coap-client sends the token
// and the proof as options 65002 and 65006.

type udpDevice struct {
	g     *gw
	id    string
	key   jwk.Key
	token string
}

// startUDPGateway starts a gateway with plain UDP on and registers udp-1
// (class thermostat) with its own key pair, and a token bound to that key.
func startUDPGateway(t *testing.T, opts ...gwOpt) (*gw, *udpDevice) {
	t.Helper()
	opts = append([]gwOpt{func(c *config.Config) { c.CoAP.UDPListen = "127.0.0.1:0" }}, opts...)
	g := startGateway(t, opts...)
	if g.g.CoAP == nil || g.g.CoAP.UDPAddr() == "" {
		t.Fatal("gateway has no plain-UDP CoAP listener")
	}
	iss, _ := demo.NewIssuer("udp-1", "udp-1-key")
	pub, _ := iss.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "udp-1", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: pubJSON}}}, nil); err != nil {
		t.Fatal(err)
	}
	tok := g.token("udp-1", "alice", func(c map[string]any) {
		c["cnf"] = map[string]any{"jkt": jktOf(t, iss.Key)}
	})
	return g, &udpDevice{g: g, id: "udp-1", key: iss.Key, token: tok}
}

func jktOf(t *testing.T, priv jwk.Key) string {
	t.Helper()
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(thumb)
}

func (d *udpDevice) uri(path string) string { return "coap://" + d.g.g.CoAP.UDPAddr() + path }

// proof signs a proof for one request.
func (d *udpDevice) proof(t *testing.T, key jwk.Key, method codes.Code, path, token, body string, at time.Time, mods ...func(*coap.Request)) string {
	t.Helper()
	r := coap.Request{Method: method, URI: path, Token: token, Body: []byte(body)}
	for _, m := range mods {
		m(&r)
	}
	p, err := coap.Prove(key, r, at)
	if err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// observing marks a proof for a GET that registers an observation.
func observing(r *coap.Request) { zero := uint32(0); r.Observe = &zero }

// request runs coap-client with the given token and proof options ("" to
// leave one out) and returns what it printed.
func (d *udpDevice) request(t *testing.T, method, path, body, token, proof string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-m", method, "-B", "3"}
	if body != "" {
		args = append(args, "-e", body)
	}
	if token != "" {
		args = append(args, "-O", strconv.Itoa(int(coap.OptionAccessToken))+","+token)
	}
	if proof != "" {
		args = append(args, "-O", strconv.Itoa(int(coap.OptionProof))+","+proof)
	}
	args = append(append(args, extra...), d.uri(path))
	out, _ := exec.CommandContext(ctx, coapClientBin(t), args...).CombinedOutput()
	return string(out)
}

func TestCoAPUDPOffByDefault(t *testing.T) {
	if c := config.Default(); c.CoAP.UDPListen != "" || c.CoAP.Enabled() {
		t.Fatalf("CoAP is on by default: %+v", c.CoAP)
	}
	g := startCoAPGateway(t) // DTLS on, UDP not configured
	if a := g.g.CoAP.UDPAddr(); a != "" {
		t.Fatalf("plain UDP listening at %s though coap.udp_listen is empty", a)
	}
}

func TestCoAPUDP(t *testing.T) {
	g, d := startUDPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	if rc := svc.subscribe(t, "devices/+/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}
	const temp = "/ps/devices/udp-1/telemetry/temp"
	now := time.Now

	// A token and a proof together outgrow libcoap's 1152-byte PDU, so a
	// constrained device posts its token once and then sends proofs alone
	// (RFC 9200 §5.10.1); coap-client does that here.
	t.Run("a token posted to /authz-info, then proven publishes", func(t *testing.T) {
		if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
			t.Fatalf("authz-info refused the key-bound token: %q", out)
		}
		out := d.request(t, "put", temp, "20.5", "", d.proof(t, d.key, codes.PUT, temp, d.token, "20.5", now()))
		if strings.Contains(out, "4.") {
			t.Fatalf("proven publish refused: %q", out)
		}
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "20.5")
	})

	t.Run("the token may ride in the request instead", func(t *testing.T) {
		fresh := g.token("udp-1", "alice", func(c map[string]any) {
			c["cnf"] = map[string]any{"jkt": jktOf(t, d.key)}
			c["jti"] = "in-option"
		})
		cc, err := udp.Dial(d.g.g.CoAP.UDPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cc.Put(ctx, temp, message.TextPlain, strings.NewReader("in-option"),
			message.Option{ID: coap.OptionAccessToken, Value: []byte(fresh)},
			message.Option{ID: coap.OptionProof, Value: []byte(d.proof(t, d.key, codes.PUT, temp, fresh, "in-option", now(), func(r *coap.Request) { cf := message.TextPlain; r.ContentFormat = &cf }))})
		if err != nil || resp.Code() != codes.Changed {
			t.Fatalf("publish with the token in option %d: %v %v", coap.OptionAccessToken, resp, err)
		}
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "in-option")
	})

	t.Run("every unproven request is refused with 4.01", func(t *testing.T) {
		other, _ := demo.NewIssuer("x", "other-key")
		bearer := g.token("udp-1", "alice", nil)
		if out := d.request(t, "post", "/authz-info", bearer, "", ""); !strings.Contains(out, "4.01") {
			t.Errorf("authz-info took a bearer token: %q", out)
		}
		unposted := g.token("udp-1", "alice", func(c map[string]any) { c["cnf"] = map[string]any{"jkt": jktOf(t, d.key)} })
		proof := d.proof(t, d.key, codes.PUT, temp, d.token, "x", now())
		replayed := d.proof(t, d.key, codes.PUT, temp, d.token, "once", now())
		if out := d.request(t, "put", temp, "once", "", replayed); strings.Contains(out, "4.") {
			t.Fatalf("first use of a proof refused: %q", out)
		}
		for _, c := range []struct {
			name, method, path, body, proof string
		}{
			{"no proof", "put", temp, "x", ""},
			{"proof naming a token never posted", "put", temp, "x", d.proof(t, d.key, codes.PUT, temp, unposted, "x", now())},
			{"proof naming a bearer token", "put", temp, "x", d.proof(t, d.key, codes.PUT, temp, bearer, "x", now())},
			{"proof by another key", "put", temp, "x", d.proof(t, other.Key, codes.PUT, temp, d.token, "x", now())},
			{"proof for another payload", "put", temp, "evil", proof},
			{"proof for another resource", "put", "/ps/devices/udp-1/telemetry/humidity", "x", proof},
			{"proof for another method", "post", temp, "x", proof},
			{"stale proof", "put", temp, "x", d.proof(t, d.key, codes.PUT, temp, d.token, "x", now().Add(-5*time.Minute))},
			{"replayed proof", "put", temp, "once", replayed},
			{"garbage proof", "put", temp, "x", "not-a-jws"},
		} {
			if out := d.request(t, c.method, c.path, c.body, "", c.proof); !strings.Contains(out, "4.01") {
				t.Errorf("%s: want 4.01, got %q", c.name, out)
			}
		}
		// The options that change what a request does are covered too.
		if out := d.request(t, "put", temp, "x", "", d.proof(t, d.key, codes.PUT, temp, d.token, "x", now()), "-t", "json"); !strings.Contains(out, "4.01") {
			t.Errorf("a Content-Format the proof does not name: want 4.01, got %q", out)
		}
		cmd := "/ps/devices/udp-1/commands/set"
		if out := d.request(t, "get", cmd, "", "", d.proof(t, d.key, codes.GET, cmd, d.token, "", now()), "-s", "1"); !strings.Contains(out, "4.01") {
			t.Errorf("an Observe registration under a proof for a plain GET: want 4.01, got %q", out)
		}
		// None of them reached the broker: the next message after "once" is the marker.
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "once")
		d.request(t, "put", temp, "marker", "", d.proof(t, d.key, codes.PUT, temp, d.token, "marker", now()))
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "marker")
		logs := g.logs.String()
		for _, want := range []string{"coap udp request refused", "already used", "another payload", "another resource",
			"does not verify with the device key", "no access token", "from the gateway's clock", "Content-Format", "Observe option"} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs lack %q", want)
			}
		}
		if strings.Contains(logs, d.token) {
			t.Error("the token appears in the logs")
		}
	})

	t.Run("class permissions apply", func(t *testing.T) {
		other := "/ps/devices/thermo-1/telemetry/temp"
		if out := d.request(t, "put", other, "x", "", d.proof(t, d.key, codes.PUT, other, d.token, "x", now())); !strings.Contains(out, "4.03") {
			t.Errorf("publish to another device's topic: want 4.03, got %q", out)
		}
	})

	t.Run("an idle observer's session ends when its token expires", func(t *testing.T) {
		short := g.token("udp-1", "alice", func(c map[string]any) {
			c["cnf"] = map[string]any{"jkt": jktOf(t, d.key)}
			c["exp"] = time.Now().Add(2 * time.Second).Unix()
			c["jti"] = "short-lived"
		})
		if out := d.request(t, "post", "/authz-info", short, "", ""); strings.Contains(out, "4.") {
			t.Fatalf("authz-info: %q", out)
		}
		cmd := "/ps/devices/udp-1/commands/set"
		o := g.observeAs(t, "udp-1", []string{
			"-O", strconv.Itoa(int(coap.OptionProof)) + "," + d.proof(t, d.key, codes.GET, cmd, short, "", now(), observing),
		}, d.uri(cmd), "6")
		// Nothing is sent by the observer from now on; the session must
		// still end at exp.
		waitFor(t, "observation ended at token expiry", func() bool { return g.g.CoAP.Observations("udp-1") == 0 })
		svc.publish(t, "devices/udp-1/commands/set", "after-expiry", 1)
		<-o.done
		if strings.Contains(o.String(), "after-expiry") {
			t.Fatalf("expired token still observed:\n%s", o.String())
		}
		if !strings.Contains(g.logs.String(), "credential expired") {
			t.Error("no expiry logged")
		}
	})

	t.Run("observe, then revocation ends it", func(t *testing.T) {
		cmd := "/ps/devices/udp-1/commands/set"
		o := g.observeAs(t, "udp-1", []string{
			"-O", strconv.Itoa(int(coap.OptionProof)) + "," + d.proof(t, d.key, codes.GET, cmd, d.token, "", now(), observing),
		}, d.uri(cmd), "3") // plain UDP has no close to end coap-client early
		svc.publish(t, "devices/udp-1/commands/set", "21.0", 1)
		o.waitFor(t, "21.0")
		if _, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "udp-1",
			RevokedAt: time.Now(), ExpiresAt: time.Now().Add(2 * time.Hour)}}}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "observation cancelled", func() bool { return g.g.CoAP.Observations("udp-1") == 0 })
		svc.publish(t, "devices/udp-1/commands/set", "after-revoke", 1)
		<-o.done
		if strings.Contains(o.String(), "after-revoke") {
			t.Fatalf("revoked token still observed:\n%s", o.String())
		}
		if out := d.request(t, "put", temp, "revoked", "", d.proof(t, d.key, codes.PUT, temp, d.token, "revoked", now())); !strings.Contains(out, "4.01") {
			t.Errorf("revoked token's publish: want 4.01, got %q", out)
		}
	})
}

// A plain-UDP session ends when the device's registered key changes: its
// proofs were checked with the old key, which no longer speaks for it.
func TestCoAPUDPKeyChange(t *testing.T) {
	g, d := startUDPGateway(t)
	const temp = "/ps/devices/udp-1/telemetry/temp"
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
		t.Fatalf("authz-info: %q", out)
	}
	if out := d.request(t, "put", temp, "1", "", d.proof(t, d.key, codes.PUT, temp, d.token, "1", time.Now())); strings.Contains(out, "4.") {
		t.Fatalf("proven publish: %q", out)
	}
	if n := g.g.CoAP.Sessions("udp-1"); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	other, _ := demo.NewIssuer("x", "new-key")
	pub, _ := other.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "udp-1", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: pubJSON}}}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to end", func() bool { return g.g.CoAP.Sessions("udp-1") == 0 })
	if !strings.Contains(g.logs.String(), "device key changed") {
		t.Error("no reason logged")
	}
	if out := d.request(t, "put", temp, "2", "", d.proof(t, d.key, codes.PUT, temp, d.token, "2", time.Now())); !strings.Contains(out, "4.01") {
		t.Fatalf("a proof by the old key after the change: %q, want 4.01", out)
	}
}

// One device's sessions and observations are bounded across its source
// addresses: each coap-client run is a new address, hence a new session.
func TestCoAPUDPPerDeviceBounds(t *testing.T) {
	g, d := startUDPGateway(t, func(c *config.Config) { c.CoAP.MaxObservations = 1 })
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
		t.Fatalf("authz-info: %q", out)
	}
	cmd := "/ps/devices/udp-1/commands/set"
	first := g.observeAs(t, "udp-1", []string{"-O", strconv.Itoa(int(coap.OptionProof)) + "," + d.proof(t, d.key, codes.GET, cmd, d.token, "", time.Now(), observing)}, d.uri(cmd), "5")
	// A second observation from another address, over the device's cap of
	// 1: the newer session takes the older one's place (the device most
	// likely rebooted), and the older observer is told 5.03.
	out := d.request(t, "get", cmd, "", "", d.proof(t, d.key, codes.GET, cmd, d.token, "", time.Now(), observing), "-s", "1")
	if strings.Contains(out, "5.03") || strings.Contains(out, "4.") {
		t.Fatalf("a second observation of the device from another address: %q, want it taken", out)
	}
	first.waitFor(t, "5.03")
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations after the takeover, want 1", n)
	}
	// A device waking on a new port each time is never locked out: its
	// oldest idle sessions make room, and the observing one is kept.
	const temp = "/ps/devices/udp-1/telemetry/temp"
	for i := range 12 {
		body := strconv.Itoa(i)
		if out := d.request(t, "put", temp, body, "", d.proof(t, d.key, codes.PUT, temp, d.token, body, time.Now())); strings.Contains(out, "4.") || strings.Contains(out, "5.") {
			t.Fatalf("publish %d from a new address: %q", i, out)
		}
	}
	if n := g.g.CoAP.Sessions("udp-1"); n > 8 {
		t.Fatalf("%d sessions of one device, want at most 8", n)
	}
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations after the old sessions made room, want the 1 kept", n)
	}
}

// Garbage and malformed requests on the plain-UDP listener are answered or
// dropped, make no session, and the listener keeps serving.
func TestCoAPUDPMalformedInput(t *testing.T) {
	g, d := startUDPGateway(t)
	addr, err := net.ResolveUDPAddr("udp", g.g.CoAP.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 60000)
	for i := range 40 {
		_, _ = rand.Read(junk)
		_, _ = raw.Write(junk[:1+i*1500])
	}
	raw.Close()
	const temp = "/ps/devices/udp-1/telemetry/temp"
	for name, opts := range map[string][]string{
		"a 1 KB proof of garbage":         {"-O", strconv.Itoa(int(coap.OptionProof)) + "," + strings.Repeat("x", 1000)},
		"a JWS with a garbage payload":    {"-O", strconv.Itoa(int(coap.OptionProof)) + ",eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln"},
		"a token option of binary junk":   {"-O", strconv.Itoa(int(coap.OptionAccessToken)) + ",0xd28443a10126a0f6", "-O", strconv.Itoa(int(coap.OptionProof)) + ",a.b.c"},
		"a CBOR byte string that is junk": {"-O", strconv.Itoa(int(coap.OptionAccessToken)) + ",0x58ff00"},
	} {
		if out := d.request(t, "put", temp, "x", "", "", opts...); !strings.Contains(out, "4.01") {
			t.Errorf("%s: want 4.01, got %q", name, out)
		}
	}
	if out := d.request(t, "post", "/authz-info", "", "", "", "-t", "61", "-f", writeFile(t, []byte{0x58, 0xff, 0x01})); !strings.Contains(out, "4.01") {
		t.Errorf("a truncated CBOR token at /authz-info: %q", out)
	}
	if n := g.g.CoAP.Sessions(""); n != 0 {
		t.Fatalf("%d sessions after malformed input, want none", n)
	}
	// Still serving.
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
		t.Fatalf("authz-info after the junk: %q", out)
	}
	if out := d.request(t, "put", temp, "ok", "", d.proof(t, d.key, codes.PUT, temp, d.token, "ok", time.Now())); strings.Contains(out, "4.") {
		t.Fatalf("a proven publish after the junk: %q", out)
	}
}
