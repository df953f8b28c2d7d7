package edge_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// coapCert runs one coap-client request with a client certificate over
// coaps://, verifying the gateway's certificate against the demo CA.
func (g *gw) coapCert(t *testing.T, certFile, keyFile string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := append([]string{"-c", certFile, "-j", keyFile, "-C", g.files.CACert, "-B", "5"}, args...)
	out, _ := exec.CommandContext(ctx, coapClientBin(t), all...).CombinedOutput()
	return string(out)
}

func certURI(g *gw, topic string) string {
	return "coaps://127.0.0.1:" + portOf(g.g.CoAP.Addr()) + "/ps/" + topic
}

func portOf(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// TestCoAPCertificate: a device authenticates over DTLS with its factory
// certificate (thermo-2, registered by fingerprint), as it would over MQTT.
func TestCoAPCertificate(t *testing.T) {
	g := startCoAPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	if rc := svc.subscribe(t, "devices/+/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}
	cert, key := g.files.DeviceCert, g.files.DeviceKey
	mine := func(path string) string { return certURI(g, "devices/thermo-2/"+path) }

	t.Run("certificate publish reaches MQTT", func(t *testing.T) {
		if out := g.coapCert(t, cert, key, "-m", "put", "-e", "18.5", mine("telemetry/temp")); strings.Contains(out, "4.") || strings.Contains(out, "rror") {
			t.Fatalf("publish refused: %q", out)
		}
		svc.expectMsg(t, "devices/thermo-2/telemetry/temp", "18.5")
		if !strings.Contains(g.logs.String(), `"method":"certificate"`) && !strings.Contains(g.logs.String(), "method=certificate") {
			t.Errorf("the session was not logged as a certificate session:\n%s", g.logs.String())
		}
	})

	t.Run("the class permissions apply", func(t *testing.T) {
		if out := g.coapCert(t, cert, key, "-m", "put", "-e", "x", certURI(g, "devices/thermo-1/telemetry/temp")); !strings.Contains(out, "4.03") {
			t.Errorf("publish to another device's topic: want 4.03, got %q", out)
		}
	})

	t.Run("an unregistered certificate fails the handshake", func(t *testing.T) {
		files2, err := demo.WriteTLS(t.TempDir(), "thermo-2")
		if err != nil {
			t.Fatal(err)
		}
		out := g.coapCert(t, files2.DeviceCert, files2.DeviceKey, "-B", "2", "-m", "put", "-e", "evil", mine("telemetry/temp"))
		if strings.Contains(out, "2.04") {
			t.Errorf("unregistered certificate answered: %q", out)
		}
		// Neither does a client without any credential get a session.
		g.coapCert(t, "", "", "-B", "2", "-m", "put", "-e", "evil", mine("telemetry/temp"))
		g.coapCert(t, cert, key, "-m", "put", "-e", "after-stranger", mine("telemetry/temp"))
		svc.expectNoMsgBefore(t, "never", "devices/thermo-2/telemetry/temp", "after-stranger")
		if !strings.Contains(g.logs.String(), "is not registered to any device") {
			t.Errorf("no refusal reason logged:\n%s", g.logs.String())
		}
	})

	t.Run("a token bound to the certificate is taken over that certificate only", func(t *testing.T) {
		leaf := leafOf(t, cert)
		sum := sha256.Sum256(leaf.Raw)
		tok := g.token("thermo-2", "alice", func(c map[string]any) {
			c["cnf"] = map[string]any{"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}
			c["scope"] = "publish:devices/thermo-2/telemetry/humidity"
		})
		bound := strings.Count(g.logs.String(), "coap token bound to session")
		if out := g.coapCert(t, cert, key, "-m", "post", "-e", tok, "coaps://127.0.0.1:"+portOf(g.g.CoAP.Addr())+"/authz-info"); strings.Contains(out, "4.01") {
			t.Fatalf("certificate-bound token refused: %q", out)
		}
		if n := strings.Count(g.logs.String(), "coap token bound to session"); n != bound+1 {
			t.Fatalf("the token was not bound to the certificate session:\n%s", g.logs.String())
		}
		// The same token over a PSK session (no certificate to prove) is refused.
		out := g.coap(t, coapID, coapKey, "-m", "post", "-e", tok, "coaps://"+g.g.CoAP.Addr()+"/authz-info")
		if !strings.Contains(out, "4.01") {
			t.Errorf("certificate-bound token over PSK: want 4.01, got %q", out)
		}
	})

	t.Run("deregistering the certificate ends the observation", func(t *testing.T) {
		o := g.observeAs(t, "thermo-2", []string{"-c", cert, "-j", key, "-C", g.files.CACert}, mine("commands/set"), "10")
		svc.publish(t, "devices/thermo-2/commands/set", "before", 1)
		o.waitFor(t, "before")
		if _, err := g.importJSON(store.Batch{Devices: []store.Device{{ID: "thermo-2", Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, CertSHA256: strings.Repeat("ab", 32)}}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "observation cancelled", func() bool { return g.g.CoAP.Observations("thermo-2") == 0 })
		svc.publish(t, "devices/thermo-2/commands/set", "after", 1)
		<-o.done
		if strings.Contains(o.String(), "after") {
			t.Fatalf("deregistered certificate still received a command:\n%s", o.String())
		}
		if !strings.Contains(g.logs.String(), "certificate no longer registered to the device") {
			t.Errorf("no reason logged")
		}
	})
}

func leafOf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM in " + path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
