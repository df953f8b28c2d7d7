package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/device"
)

// keygen makes a device key pair: the private JWK goes to the file, the
// public JWK to stdout (register it as the device's public_key).
func keygen(args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("keygen", pflag.ContinueOnError)
	path := fs.String("out", "device.jwk", "file for the private key (JWK, mode 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	k, err := jwk.Import(priv)
	if err != nil {
		return err
	}
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256())
	b, _ := json.Marshal(k)
	if err := os.WriteFile(*path, b, 0o600); err != nil {
		return err
	}
	pub, _ := k.PublicKey()
	pb, _ := json.Marshal(pub)
	_, err = fmt.Fprintf(out, "%s\n", pb)
	return err
}

// simDevice is the simulated device's identity towards the authority.
type simDevice struct {
	id, authority string
	key           jwk.Key
	http          *http.Client
}

func (d *simDevice) post(ctx context.Context, path string, form url.Values) (map[string]any, int, error) {
	now := time.Now()
	payload, _ := json.Marshal(map[string]any{"iss": d.id, "sub": d.id, "aud": d.authority + "/oauth/token",
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprintf("%d", now.UnixNano())})
	assertion, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), d.key))
	if err != nil {
		return nil, 0, err
	}
	form.Set("client_id", d.id)
	form.Set("client_assertion_type", device.ClientAssertionType)
	form.Set("client_assertion", string(assertion))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.authority+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%s: %s", path, resp.Status)
	}
	return m, resp.StatusCode, nil
}

// pairJourney walks the seed's story as a device: ask for a code, show it,
// poll until the owner approves, connect to the gateway proving its key,
// publish telemetry and print the commands it receives.
func pairJourney(ctx context.Context, args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("pair", pflag.ContinueOnError)
	auth := fs.String("authority", "", "the authority's base URL")
	fp := fs.String("fingerprint", "", "the authority's TLS certificate sha256 (self-signed authority)")
	id := fs.String("device", "", "device id (registered with its public key)")
	keyPath := fs.String("key", "device.jwk", "the device's private key (from edgeid-sensor keygen)")
	gw := fs.String("broker", "127.0.0.1:1883", "gateway MQTT address")
	count := fs.Int("count", 3, "telemetry messages to publish after pairing (0: none)")
	wait := fs.Duration("listen", 0, "how long to print incoming commands after publishing")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up pairing after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *auth == "" || *id == "" {
		return errUsage
	}
	kb, err := os.ReadFile(*keyPath)
	if err != nil {
		return err
	}
	key, err := jwk.ParseKey(kb)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyPath, err)
	}
	d := &simDevice{id: *id, authority: strings.TrimRight(*auth, "/"), key: key, http: client.HTTPClient(*fp)}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// Call home: the factory identity alone reaches the class's topics.
	home, code, err := d.post(ctx, "/oauth/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil || code != 200 {
		return fmt.Errorf("call home: %d %v %v", code, home, err)
	}
	if err := connectOnce(ctx, *gw, *id, key, home["access_token"].(string), out); err != nil {
		return fmt.Errorf("call home connect: %w", err)
	}

	da, code, err := d.post(ctx, "/oauth/device_authorization", url.Values{})
	if err != nil || code != 200 {
		return fmt.Errorf("device authorization: %d %v %v", code, da, err)
	}
	fmt.Fprintf(out, "To pair %s, go to %v and enter the code\n\n    %v\n\nor open %v\n", *id, da["verification_uri"], da["user_code"], da["verification_uri_complete"])
	interval := time.Duration(da["interval"].(float64)) * time.Second
	var tok string
	for tok == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no approval: %w", ctx.Err())
		case <-time.After(interval):
		}
		m, _, err := d.post(ctx, "/oauth/token", url.Values{"grant_type": {device.DeviceCodeGrant}, "device_code": {da["device_code"].(string)}})
		if err != nil {
			return err
		}
		switch m["error"] {
		case nil:
			tok, _ = m["access_token"].(string)
		case "authorization_pending":
		case "slow_down":
			interval += 5 * time.Second
		default:
			return fmt.Errorf("pairing ended: %v (%v)", m["error"], m["error_description"])
		}
	}
	fmt.Fprintln(out, "paired: got an access token bound to this device's key")

	conn, err := net.DialTimeout("tcp", *gw, 10*time.Second)
	if err != nil {
		return err
	}
	cmds := make(chan *paho.Publish, 16)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, AuthHandler: &prover{key: key, clientID: *id},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cmds <- pr.Packet
			return true, nil
		}}, OnClientError: func(error) {}})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: *id, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}})
	if ca == nil {
		return fmt.Errorf("connect: %w", err)
	}
	fmt.Fprintf(out, "CONNACK 0x%02x %s\n", ca.ReasonCode, connackReason(ca.ReasonCode))
	if ca.ReasonCode != 0 {
		return errRefused{"connection refused"}
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + *id + "/commands/#", QoS: 1}}}); err != nil {
		return err
	}
	for i := 0; i < *count; i++ {
		r, err := c.Publish(ctx, &paho.Publish{Topic: "devices/" + *id + "/telemetry/temp", QoS: 1, Payload: []byte(fmt.Sprintf("%.1f", 20+float64(i)/10))})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "PUBACK %d 0x%02x %s\n", i+1, r.ReasonCode, pubackReason(r.ReasonCode))
	}
	end := time.After(*wait)
	for {
		select {
		case m := <-cmds:
			fmt.Fprintf(out, "command %s %s\n", m.Topic, m.Payload)
		case <-end:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// prover answers the gateway's proof-of-possession challenge.
type prover struct {
	key      jwk.Key
	clientID string
}

func (p *prover) Authenticate(a *paho.Auth) *paho.Auth {
	proof, _ := device.ProveMQTT(p.key, a.Properties.AuthData, p.clientID)
	return &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: "ace", AuthData: proof}}
}

func (p *prover) Authenticated() {}

// connectOnce connects with a call-home token (proving the device key), says
// how it went, and disconnects.
func connectOnce(ctx context.Context, addr, id string, key jwk.Key, tok string, out io.Writer) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, AuthHandler: &prover{key: key, clientID: id}, OnClientError: func(error) {}})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}})
	if ca == nil {
		return err
	}
	fmt.Fprintf(out, "called home: CONNACK 0x%02x %s\n", ca.ReasonCode, connackReason(ca.ReasonCode))
	if ca.ReasonCode != 0 {
		return errRefused{"call-home connection refused"}
	}
	return c.Disconnect(&paho.Disconnect{})
}
