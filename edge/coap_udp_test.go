package edge_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Plain CoAP over UDP: off by default; when on, only requests that prove
// possession of a key-bound token are served. coap-client sends the token
// and the proof as options 65002 and 65006.

// udp-1's resources.
const (
	udpTemp = "/ps/devices/udp-1/telemetry/temp"
	udpCmd  = "/ps/devices/udp-1/commands/set"
)

type udpDevice struct {
	g     *gw
	id    string
	key   jwk.Key
	token string
}

// startUDPGateway starts a gateway with plain UDP on and registers udp-1
// (class thermostat) with its own key pair, and a token bound to that key.
func startUDPGateway(t testing.TB, opts ...gwOpt) (*gw, *udpDevice) {
	t.Helper()
	opts = append([]gwOpt{func(c *config.Config) { c.CoAP.UDPListen = "127.0.0.1:0" }}, opts...)
	g := startGatewayTB(t, opts...)
	if g.g.CoAP == nil || g.g.CoAP.UDPAddr() == "" {
		t.Fatal("gateway has no plain-UDP CoAP listener")
	}
	iss, _ := demo.NewIssuer("udp-1", "udp-1-key")
	d := &udpDevice{g: g, id: "udp-1", key: iss.Key}
	g.registerKey(d.id, d.key)
	d.token = d.boundToken(nil)
	return g, d
}

// registerKey registers device, an active thermostat of alice's, with the
// public half of priv.
func (g *gw) registerKey(device string, priv jwk.Key) {
	g.t.Helper()
	pub, _ := priv.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: device, Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: pubJSON}}}, nil); err != nil {
		g.t.Fatal(err)
	}
}

func jktOf(t testing.TB, priv jwk.Key) string {
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

// boundToken mints a token of alice's for the device, bound to its key,
// then lets mod change the claims.
func (d *udpDevice) boundToken(mod func(map[string]any)) string {
	return d.g.token(d.id, "alice", func(c map[string]any) {
		c["cnf"] = map[string]any{"jkt": jktOf(d.g.t, d.key)}
		if mod != nil {
			mod(c)
		}
	})
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

// textPlain marks a proof for a request that names Content-Format
// text/plain, as go-coap's Put and Post do.
func textPlain(r *coap.Request) { cf := message.TextPlain; r.ContentFormat = &cf }

// proofOpt and tokenOpt are coap-client's flags for a proof or an access
// token option.
func proofOpt(proof string) []string {
	return []string{"-O", strconv.Itoa(int(coap.OptionProof)) + "," + proof}
}

func tokenOpt(token string) []string {
	return []string{"-O", strconv.Itoa(int(coap.OptionAccessToken)) + "," + token}
}

// request runs coap-client with the given token and proof options ("" to
// leave one out) and returns what it printed.
func (d *udpDevice) request(t *testing.T, method, path, body, token, proof string, extra ...string) string {
	t.Helper()
	args := []string{"-m", method, "-B", "3"}
	if body != "" {
		args = append(args, "-e", body)
	}
	if token != "" {
		args = append(args, tokenOpt(token)...)
	}
	if proof != "" {
		args = append(args, proofOpt(proof)...)
	}
	return runCoAPClient(t, append(append(args, extra...), d.uri(path))...)
}

// put runs a PUT of body to path with a fresh proof for d.token.
func (d *udpDevice) put(t *testing.T, path, body string, extra ...string) string {
	t.Helper()
	return d.request(t, "put", path, body, "", d.proof(t, d.key, codes.PUT, path, d.token, body, time.Now()), extra...)
}

// authorize posts d.token to /authz-info.
func (d *udpDevice) authorize(t *testing.T) {
	t.Helper()
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
		t.Fatalf("authz-info: %q", out)
	}
}

// observe starts coap-client observing udp-1's commands for secs seconds
// under a proof naming token.
func (d *udpDevice) observe(t *testing.T, token, secs string) *observer {
	t.Helper()
	return d.g.observeAs(t, d.id, proofOpt(d.proof(t, d.key, codes.GET, udpCmd, token, "", time.Now(), observing)), d.uri(udpCmd), secs)
}

// goPut PUTs body to path with go-coap from a new source port and the
// given options.
func (d *udpDevice) goPut(t *testing.T, path, body string, opts ...message.Option) (*pool.Message, error) {
	t.Helper()
	cc, err := udp.Dial(d.g.g.CoAP.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cc.Put(ctx, path, message.TextPlain, strings.NewReader(body), opts...)
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
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g, d := startUDPGateway(t)
	svc := g.telemetry(t)
	const temp = udpTemp
	now := time.Now

	// A token and a proof together outgrow libcoap's 1152-byte PDU, so a
	// constrained device posts its token once and then sends proofs alone
	// (RFC 9200 §5.10.1); coap-client does that here.
	t.Run("a token posted to /authz-info, then proven publishes", func(t *testing.T) {
		if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
			t.Fatalf("authz-info refused the key-bound token: %q", out)
		}
		if out := d.put(t, temp, "20.5"); strings.Contains(out, "4.") {
			t.Fatalf("proven publish refused: %q", out)
		}
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "20.5")
	})

	t.Run("the token may ride in the request instead", func(t *testing.T) {
		fresh := d.boundToken(func(c map[string]any) { c["jti"] = "in-option" })
		resp, err := d.goPut(t, temp, "in-option",
			message.Option{ID: coap.OptionAccessToken, Value: []byte(fresh)},
			message.Option{ID: coap.OptionProof, Value: []byte(d.proof(t, d.key, codes.PUT, temp, fresh, "in-option", now(), textPlain))})
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
		unposted := d.boundToken(nil)
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
		if out := d.put(t, temp, "x", "-t", "json"); !strings.Contains(out, "4.01") {
			t.Errorf("a Content-Format the proof does not name: want 4.01, got %q", out)
		}
		if out := d.request(t, "get", udpCmd, "", "", d.proof(t, d.key, codes.GET, udpCmd, d.token, "", now()), "-s", "1"); !strings.Contains(out, "4.01") {
			t.Errorf("an Observe registration under a proof for a plain GET: want 4.01, got %q", out)
		}
		// None of them reached the broker: the next message after "once" is the marker.
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "once")
		d.put(t, temp, "marker")
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
		if out := d.put(t, "/ps/devices/thermo-1/telemetry/temp", "x"); !strings.Contains(out, "4.03") {
			t.Errorf("publish to another device's topic: want 4.03, got %q", out)
		}
	})

	t.Run("an idle observer's session ends when its token expires", func(t *testing.T) {
		short := d.boundToken(func(c map[string]any) {
			c["exp"] = time.Now().Add(2 * time.Second).Unix()
			c["jti"] = "short-lived"
		})
		if out := d.request(t, "post", "/authz-info", short, "", ""); strings.Contains(out, "4.") {
			t.Fatalf("authz-info: %q", out)
		}
		o := d.observe(t, short, "6")
		// Nothing is sent by the observer from now on; the session must
		// still end at exp.
		waitFor(t, "observation ended at token expiry", func() bool { return g.g.CoAP.Observations("udp-1") == 0 })
		svc.publish(t, "devices/udp-1/commands/set", "after-expiry", 1)
		o.waitDone(t, "after-expiry", "expired token still observed")
		if !strings.Contains(g.logs.String(), "credential expired") {
			t.Error("no expiry logged")
		}
	})

	t.Run("observe, then revocation ends it", func(t *testing.T) {
		o := d.observe(t, d.token, "3") // plain UDP has no close to end coap-client early
		svc.publish(t, "devices/udp-1/commands/set", "21.0", 1)
		o.waitFor(t, "21.0")
		g.revokeDevices(time.Now(), "udp-1")
		waitFor(t, "observation cancelled", func() bool { return g.g.CoAP.Observations("udp-1") == 0 })
		svc.publish(t, "devices/udp-1/commands/set", "after-revoke", 1)
		o.waitDone(t, "after-revoke", "revoked token still observed")
		if out := d.put(t, temp, "revoked"); !strings.Contains(out, "4.01") {
			t.Errorf("revoked token's publish: want 4.01, got %q", out)
		}
	})
}

// A plain-UDP session ends when the device's registered key changes: its
// proofs were checked with the old key, which no longer speaks for it.
func TestCoAPUDPKeyChange(t *testing.T) {
	g, d := startUDPGateway(t)
	d.authorize(t)
	if out := d.put(t, udpTemp, "1"); strings.Contains(out, "4.") {
		t.Fatalf("proven publish: %q", out)
	}
	if n := g.g.CoAP.Sessions("udp-1"); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	other, _ := demo.NewIssuer("x", "new-key")
	g.registerKey("udp-1", other.Key)
	waitFor(t, "the session to end", func() bool { return g.g.CoAP.Sessions("udp-1") == 0 })
	if !strings.Contains(g.logs.String(), "device key changed") {
		t.Error("no reason logged")
	}
	if out := d.put(t, udpTemp, "2"); !strings.Contains(out, "4.01") {
		t.Fatalf("a proof by the old key after the change: %q, want 4.01", out)
	}
}

// One device's sessions and observations are bounded across its source
// addresses: each coap-client run is a new address, hence a new session.
func TestCoAPUDPPerDeviceBounds(t *testing.T) {
	g, d := startUDPGateway(t, func(c *config.Config) { c.CoAP.MaxObservations = 1 })
	d.authorize(t)
	first := d.observe(t, d.token, "5")
	// A second observation from another address, over the device's cap of
	// 1: the newer session takes the older one's place (the device most
	// likely rebooted), and the older observer is told 5.03.
	out := d.request(t, "get", udpCmd, "", "", d.proof(t, d.key, codes.GET, udpCmd, d.token, "", time.Now(), observing), "-s", "1")
	if strings.Contains(out, "5.03") || strings.Contains(out, "4.") {
		t.Fatalf("a second observation of the device from another address: %q, want it taken", out)
	}
	first.waitFor(t, "5.03")
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations after the takeover, want 1", n)
	}
	// A device waking on a new port each time is never locked out: its
	// oldest idle sessions make room, and the observing one is kept.
	for i := range 12 {
		if out := d.put(t, udpTemp, strconv.Itoa(i)); strings.Contains(out, "4.") || strings.Contains(out, "5.") {
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

// A proof's JWS header must be what the gateway checks: the algorithm of
// the device key, and no crit (no extension is understood).
func TestCoAPUDPProofHeader(t *testing.T) {
	g, d := startUDPGateway(t)
	svc := g.telemetry(t)
	d.authorize(t)
	put := func(body, proof string) codes.Code {
		t.Helper()
		resp, err := d.goPut(t, udpTemp, body, message.Option{ID: coap.OptionProof, Value: []byte(proof)})
		if err != nil {
			t.Fatalf("put %q: %v", body, err)
		}
		return resp.Code()
	}
	typ := coap.UDPProofType
	for _, c := range []struct {
		body   string
		header map[string]any
		want   codes.Code
	}{
		{"es384", map[string]any{"alg": "ES384", "typ": typ}, codes.Unauthorized},
		{"crit", map[string]any{"alg": "ES256", "typ": typ, "crit": []string{"exp"}, "exp": 1}, codes.Unauthorized},
		{"b64", map[string]any{"alg": "ES256", "typ": typ, "crit": []string{"b64"}, "b64": true}, codes.Unauthorized},
		{"plain", map[string]any{"alg": "ES256", "typ": typ}, codes.Changed}, // the same signing, as the gateway wants it
	} {
		if code := put(c.body, craftProof(t, d.key, c.header, udpTemp, d.token, c.body)); code != c.want {
			t.Errorf("proof with header %v: %v, want %v", c.header, code, c.want)
		}
	}
	onlyMarker(t, svc, "devices/udp-1/telemetry/temp", "plain")
}

// craftProof signs a proof of a PUT of body to path with an ES256 key under
// any header: what coap.Prove would never make.
func craftProof(t *testing.T, key jwk.Key, header map[string]any, path, token, body string) string {
	t.Helper()
	var priv ecdsa.PrivateKey
	if err := jwk.Export(key, &priv); err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return b64(h[:]) }
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	cf := uint32(message.TextPlain)
	hb, _ := json.Marshal(header)
	pb, _ := json.Marshal(coap.Proof{Method: "PUT", URI: path, ATH: sum(token), PH: sum(body), IAT: time.Now().Unix(), JTI: b64(id), ContentFormat: &cf})
	in := b64(hb) + "." + b64(pb)
	h := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, &priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64(sig)
}
