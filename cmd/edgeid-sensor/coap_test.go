package main

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// The thermostat journey over CoAP: readings reach the manufacturer's MQTT
// service; the setpoint it publishes reaches the thermostat's observation.
func TestThermostatOverCoAP(t *testing.T) { thermostatJourney(t, false) }

// The same journey over plain coap://, with a token bound to the
// thermostat's own key and a proof of possession on every request.
func TestThermostatOverCoAPUDP(t *testing.T) { thermostatJourney(t, true) }

func thermostatJourney(t *testing.T, udp bool) {
	g := startGateway(t, "coap-gw", func(c *config.Config) {
		if udp {
			c.CoAP.UDPListen = "127.0.0.1:0"
		} else {
			c.CoAP.DTLSListen = "127.0.0.1:0"
		}
	})
	iss := testenv.Issuer(t)
	b, _ := demo.Bundle(iss, "")
	const key = "thermostat-c-psk-0123456789abcdef"
	devKey, _ := demo.NewIssuer("thermo-c", "thermo-c-key") // the thermostat's own key pair
	pub, _ := devKey.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	privJSON, _ := json.Marshal(devKey.Key)
	keyFile := filepath.Join(t.TempDir(), "device.jwk")
	if err := os.WriteFile(keyFile, privJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	b.Devices = append(b.Devices, store.Device{ID: "thermo-c", Class: "thermostat", Owner: "alice", Status: store.DeviceActive,
		PSKIdentity: "thermo-c", PSK: []byte(key), PublicKey: pubJSON})
	if _, err := g.Store.Apply(b, nil); err != nil {
		t.Fatal(err)
	}

	// The manufacturer's service over MQTT.
	conn, err := net.Dial("tcp", g.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	svc := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet.Topic + " " + string(pr.Packet.Payload)
			return true, nil
		}}})
	tok, _ := iss.Mint(iss.Claims("acme-cloud", "acme-cloud", "edgeid", "subscribe:devices/+/telemetry/# publish:devices/+/commands/#", time.Hour), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ca, err := svc.Connect(ctx, &paho.Connect{ClientID: "acme-cloud", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("service connect: %v", err)
	}
	if _, err := svc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/+/telemetry/#"}}}); err != nil {
		t.Fatal(err)
	}

	out := &lockedBuf{}
	done := make(chan error, 1)
	go func() {
		args := []string{"coap", "--gateway", g.CoAP.Addr(), "--identity", "thermo-c", "--key", key}
		if udp {
			thumb, _ := pub.Thumbprint(crypto.SHA256)
			var scope string
			for _, c := range demo.Classes() {
				if c.Name == "thermostat" {
					scope = demo.Scope(c, "thermo-c", "alice")
				}
			}
			claims := iss.Claims("thermo-c", "alice", "edgeid", scope, time.Hour)
			claims["cnf"] = map[string]any{"jkt": base64.RawURLEncoding.EncodeToString(thumb)}
			bound, err := iss.Mint(claims, nil)
			if err != nil {
				done <- err
				return
			}
			args = []string{"coap", "--udp", "--gateway", g.CoAP.UDPAddr(), "--token", bound, "--device-key", keyFile}
		}
		done <- run(ctx, append(args, "--publish", "devices/thermo-c/telemetry/temp", "--count", "2",
			"--observe", "devices/thermo-c/commands/setpoint", "--listen", "5s"), out)
	}()
	for i := 0; i < 2; i++ {
		select {
		case m := <-got:
			if !strings.HasPrefix(m, "devices/thermo-c/telemetry/temp ") {
				t.Fatalf("service got %q", m)
			}
		case <-ctx.Done():
			t.Fatalf("readings never reached the service:\n%s", out.String())
		}
	}
	// The thermostat's observation is registered by now (it observes before publishing).
	if _, err := svc.Publish(ctx, &paho.Publish{Topic: "devices/thermo-c/commands/setpoint", QoS: 1, Payload: []byte("22.5")}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "22.5") {
		select {
		case <-ctx.Done():
			t.Fatalf("the setpoint never reached the thermostat:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("coap journey: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "PUT 2 Changed") {
		t.Fatalf("output:\n%s", out.String())
	}
}
