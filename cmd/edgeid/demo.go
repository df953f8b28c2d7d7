//go:build !nodemo

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/pki"
	"github.com/edgeid/edgeid/store"
)

// The embedded demo (`edgeid serve --demo`, what `make run` runs) is the
// whole system on loopback: an authority in this process on HTTPS with a
// self-signed certificate, this gateway enrolled to it through the real
// enroll call (the certificate pinned), the demo classes, devices and issuer
// registered at the authority and synced to the gateway through the feed,
// a demo owner account, and a device waiting to be paired. The authority
// runs in-process (not edgeid-authority as a child) so that one `go run`
// builds and starts everything and it stops with the gateway.

const (
	defaultDemoAuthority = "127.0.0.1:9443"
	demoOwner            = "alice"
	demoPairDevice       = "thermo-4"
	demoGatewayName      = "demo-gateway"
)

// demoOptions are what a test changes of the demo.
type demoOptions struct {
	// AuthorityListen is the authority's HTTPS address (127.0.0.1:0 for any port).
	AuthorityListen string
	// Started, when set, is called with the running system once its
	// instructions are printed (tests watch the gateway's sessions).
	Started func(*demoSystem)
}

// demoSystem is a running demo.
type demoSystem struct {
	Dir         string // the throwaway directory
	Gateway     *edge.Gateway
	Authority   *authority.Authority
	URL         string // the authority's base URL
	Fingerprint string // SHA-256 of its TLS certificate, hex
	pin         string // curl --pinnedpubkey value for that certificate
	tokenFile   string // the authority's admin token
	password    string // the demo owner's
	pairKey     string // thermo-4's private key (JWK)
	pskKey      string // thermo-3's pre-shared key
	issuer      *demo.Issuer
	files       demo.Files
}

// serveDemo runs the demo until ctx ends and prints how to use it on out.
func serveDemo(ctx context.Context, v *viper.Viper, out io.Writer, opts demoOptions) error {
	if opts.AuthorityListen == "" {
		opts.AuthorityListen = defaultDemoAuthority
	}
	dir := filepath.Join(os.TempDir(), "edgeid-demo")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	files, err := demo.WriteTLS(filepath.Join(dir, "tls"), "thermo-2")
	if err != nil {
		return fmt.Errorf("demo certificates: %w", err)
	}
	v.SetDefault("gateway.id", demoGatewayName)
	v.SetDefault("state_dir", filepath.Join(dir, "state"))
	v.SetDefault("mqtt.tcp", "127.0.0.1:1883")
	v.SetDefault("mqtt.tls.listen", "127.0.0.1:8883")
	v.SetDefault("mqtt.tls.cert", files.ServerCert)
	v.SetDefault("mqtt.tls.key", files.ServerKey)
	v.SetDefault("admin.socket", filepath.Join(dir, "admin.sock"))
	v.SetDefault("coap.dtls_listen", "127.0.0.1:5684")
	v.SetDefault("http.listen", "127.0.0.1:8443")
	cfg, err := config.Load(v, "")
	if err != nil {
		return err
	}
	sys := &demoSystem{Dir: dir, files: files}

	// The authority.
	stop, err := sys.startAuthority(opts.AuthorityListen, cfg)
	if err != nil {
		return fmt.Errorf("demo authority: %w", err)
	}
	defer stop()

	// What the manufacturer and the owner did before: an owner account, and
	// the devices registered at the authority.
	if err := sys.register(cfg); err != nil {
		return fmt.Errorf("demo devices at the authority: %w", err)
	}

	// The technician enrolls the gateway (edgeid enroll, through HTTPS).
	code, _, err := sys.Authority.AddGateway(demoGatewayName, "demo")
	if err != nil {
		return err
	}
	e, err := syncclient.Enroll(ctx, sys.URL, sys.Fingerprint, code, "demo-board")
	if err != nil {
		return fmt.Errorf("demo enrollment: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return err
	}
	if err := e.Save(edge.EnrollmentPath(cfg)); err != nil {
		return err
	}

	return serve(ctx, cfg, nil, func(g *edge.Gateway) error {
		sys.Gateway = g
		// The gateway learns the devices and the issuers from the
		// authority's feed. The store has them before the token verifier
		// does (it reloads after the commit): wait for both.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, derr := g.Store.Device(demoPairDevice)
			_, uerr := g.Store.User(demoOwner)
			keyed := g.Verifier.HasKey(sys.issuer.URL, sys.issuer.Kid)
			if derr == nil && uerr == nil && keyed {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the gateway did not sync the demo from the authority at %s within 30 s (device: %v; owner: %v; demo issuer's key known: %v)", sys.URL, derr, uerr, keyed)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		if err := printDemo(out, sys, cfg); err != nil {
			return err
		}
		if opts.Started != nil {
			opts.Started(sys)
		}
		return nil
	})
}

// startAuthority serves a fresh authority on listen with a self-signed
// certificate, its state under the demo directory; stop ends it.
func (s *demoSystem) startAuthority(listen string, cfg config.Config) (stop func(), err error) {
	dir := filepath.Join(s.Dir, "authority")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})).With("authority", "demo")
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w (another demo running? edgeid serve --demo --demo-authority picks another address)", err)
	}
	cert, fp, err := pki.SelfSigned(filepath.Join(dir, "tls"), "localhost")
	if err != nil {
		ln.Close()
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		ln.Close()
		return nil, err
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "store"), Logger: log})
	if err != nil {
		ln.Close()
		return nil, err
	}
	url := "https://" + ln.Addr().String()
	a, err := authority.New(authority.Config{URL: url, StateDir: dir, TokenAudience: cfg.Auth.Audiences[0],
		TokenTTL: time.Hour, MaxTokenLifetime: cfg.Auth.MaxTokenLifetime, EnrollCodeTTL: 10 * time.Minute,
		KeyPublishAhead: time.Hour}, st, log)
	if err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	adminToken := base64.RawURLEncoding.EncodeToString(tok)
	s.tokenFile = filepath.Join(dir, "admin.token")
	if err := os.WriteFile(s.tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		ln.Close()
		st.Close()
		return nil, err
	}
	srv := &http.Server{Handler: authority.NewHandler(a, adminToken), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	log.Info("demo authority ready", "url", url, "tls_sha256", fp)
	s.Authority, s.URL, s.Fingerprint = a, url, fp
	s.pin = "sha256//" + base64.StdEncoding.EncodeToString(spki[:])
	return func() {
		a.Close() // ends the event streams, which Shutdown would wait for
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("demo authority shutdown", "err", err)
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("demo authority listener", "err", err)
		}
		st.Close()
	}, nil
}

// register makes the demo owner and registers the demo at the authority:
// the classes, the demo token issuer (the printed tokens are its), thermo-1
// (token), thermo-2 (certificate), thermo-3 (CoAP, pre-shared key),
// acme-cloud (the manufacturer's service), all of them alice's, and
// thermo-4, nobody's yet, with its own key for pin & pair.
func (s *demoSystem) register(cfg config.Config) error {
	pw := make([]byte, 6)
	if _, err := rand.Read(pw); err != nil {
		return err
	}
	s.password = "demo-" + hex.EncodeToString(pw)
	if err := s.Authority.RegisterOwner(demoOwner, demoOwner+"@example.com", s.password); err != nil {
		return err
	}
	iss, err := demo.NewIssuer("https://demo.edgeid.local", "demo-1")
	if err != nil {
		return err
	}
	s.issuer = iss
	b, err := demo.Bundle(iss, s.files.DeviceFingerprint)
	if err != nil {
		return err
	}
	psk := make([]byte, 16)
	if _, err := rand.Read(psk); err != nil {
		return err
	}
	s.pskKey = hex.EncodeToString(psk)
	pub, err := writeDeviceKey(filepath.Join(s.Dir, demoPairDevice+".jwk"))
	if err != nil {
		return err
	}
	s.pairKey = filepath.Join(s.Dir, demoPairDevice+".jwk")
	b.Devices = append(b.Devices,
		store.Device{ID: "thermo-3", Name: "CoAP thermostat", Class: "thermostat", Owner: demoOwner,
			Status: store.DeviceActive, PSKIdentity: "thermo-3", PSK: []byte(s.pskKey)},
		store.Device{ID: demoPairDevice, Name: "new thermostat", Serial: "TH-0004", Class: "thermostat",
			Status: store.DeviceActive, PublicKey: pub})
	_, err = s.Authority.Apply(b, "demo")
	return err
}

// writeDeviceKey makes a device key as `edgeid-sensor keygen` does: the
// private JWK to path (0600); it returns the public JWK to register.
func writeDeviceKey(path string) (json.RawMessage, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := jwk.Import(priv)
	if err != nil {
		return nil, err
	}
	if err := k.Set(jwk.AlgorithmKey, jwa.ES256()); err != nil {
		return nil, err
	}
	b, err := json.Marshal(k)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	return json.Marshal(pub)
}

func printDemo(out io.Writer, s *demoSystem, cfg config.Config) error {
	g, iss, f := s.Gateway, s.issuer, s.files
	classes := map[string]store.DeviceClass{}
	for _, c := range demo.Classes() {
		classes[c.Name] = c
	}
	mint := func(device, sub, class string) (string, error) {
		scope := demo.Scope(classes[class], device, demoOwner)
		return iss.Mint(iss.Claims(device, sub, cfg.Auth.Audiences[0], scope, 12*time.Hour), nil)
	}
	t1, err := mint("thermo-1", demoOwner, "thermostat")
	if err != nil {
		return err
	}
	svc, err := mint("acme-cloud", "acme-cloud", "service")
	if err != nil {
		return err
	}
	host, port := splitAddr(g.Addr("tcp"))
	thost, tport := splitAddr(g.Addr("tls"))
	var b strings.Builder
	fmt.Fprintf(&b, "\nEdgeID demo is up on loopback:\n")
	fmt.Fprintf(&b, "  authority %s (self-signed TLS certificate sha256 %s)\n", s.URL, s.Fingerprint)
	fmt.Fprintf(&b, "  gateway %s enrolled to it: MQTT %s, TLS %s, admin socket %s\n", cfg.Gateway.ID, g.Addr("tcp"), g.Addr("tls"), cfg.Admin.Socket)
	fmt.Fprintf(&b, "  devices registered at the authority and synced to the gateway; files under %s\n", s.Dir)
	fmt.Fprintf(&b, "Demo credentials below are valid for 12 hours and only for this run.\n\n")

	fmt.Fprintf(&b, "# owner pages (accept the self-signed certificate): log in as %s with password %s\n", demoOwner, s.password)
	fmt.Fprintf(&b, "%s/login\n\n", s.URL)

	fmt.Fprintf(&b, "# acme-cloud (service, token as password, MQTT 5): receive every thermostat's telemetry\n")
	fmt.Fprintf(&b, "mosquitto_sub -h %s -p %s -V 5 -i acme-cloud -u acme-cloud -P '%s' -t 'devices/+/telemetry/#' -v\n\n", host, port, svc)
	fmt.Fprintf(&b, "# thermo-1 (token as password, MQTT 3.1.1): publish a reading\n")
	fmt.Fprintf(&b, "mosquitto_pub -h %s -p %s -V mqttv311 -i thermo-1 -u thermo-1 -P '%s' -t devices/thermo-1/telemetry/temp -m 21.5\n\n", host, port, t1)
	fmt.Fprintf(&b, "# thermo-1 refused: another device's topic (PUBACK 0x87 Not authorized)\n")
	fmt.Fprintf(&b, "mosquitto_pub -h %s -p %s -V 5 -q 1 -i thermo-1 -u thermo-1 -P '%s' -t devices/thermo-2/telemetry/temp -m 99\n\n", host, port, t1)
	fmt.Fprintf(&b, "# thermo-2 (client certificate over TLS, no token): publish a reading\n")
	fmt.Fprintf(&b, "mosquitto_pub -h %s -p %s --cafile %s --cert %s --key %s -i thermo-2 -t devices/thermo-2/telemetry/temp -m 19.0\n\n", thost, tport, f.CACert, f.DeviceCert, f.DeviceKey)
	if g.CoAP != nil && g.CoAP.Addr() != "" {
		caddr := g.CoAP.Addr()
		fmt.Fprintf(&b, "# thermo-3 (CoAP over DTLS, pre-shared key; Debian's libcoap3-bin): publish a reading, then observe its setpoint\n")
		fmt.Fprintf(&b, "coap-client-openssl -m put -u thermo-3 -k %s -e 20.5 coaps://%s/ps/devices/thermo-3/telemetry/temp\n", s.pskKey, caddr)
		fmt.Fprintf(&b, "coap-client-openssl -s 60 -u thermo-3 -k %s coaps://%s/ps/devices/thermo-3/commands/setpoint\n\n", s.pskKey, caddr)
		fmt.Fprintf(&b, "# thermo-2 over CoAP with its client certificate\n")
		fmt.Fprintf(&b, "coap-client-openssl -m put -c %s -j %s -C %s -e 19.5 coaps://%s/ps/devices/thermo-2/telemetry/temp\n\n", f.DeviceCert, f.DeviceKey, f.CACert, caddr)
	}
	if g.HTTP != nil {
		haddr := g.HTTP.Addr()
		fmt.Fprintf(&b, "# HTTPS (curl): thermo-1 publishes with its token as a Bearer; acme-cloud reads it back, then subscribes (server-sent events)\n")
		fmt.Fprintf(&b, "curl --cacert %s -H 'Authorization: Bearer %s' --data 21.7 'https://%s/v1/topics/devices/thermo-1/telemetry/temp?retain=1'\n", f.CACert, t1, haddr)
		fmt.Fprintf(&b, "curl --cacert %s -H 'Authorization: Bearer %s' https://%s/v1/topics/devices/thermo-1/telemetry/temp\n", f.CACert, svc, haddr)
		fmt.Fprintf(&b, "curl -N --cacert %s -H 'Accept: text/event-stream' -H 'Authorization: Bearer %s' 'https://%s/v1/topics/devices/+/telemetry/%%23'\n\n", f.CACert, svc, haddr)
	}

	fmt.Fprintf(&b, "# %s (pin & pair: registered with its key %s, nobody's yet): call home, ask for a code, wait for the owner, then publish with a key-bound token\n", demoPairDevice, s.pairKey)
	fmt.Fprintf(&b, "go run ./cmd/edgeid-sensor pair --authority %s --fingerprint %s --device %s --key %s --broker %s --listen 10m\n", s.URL, s.Fingerprint, demoPairDevice, s.pairKey, g.Addr("tcp"))
	fmt.Fprintf(&b, "# then, logged in as %s, enter the code it prints at %s/device and Approve; Unpair it on %s/devices and the gateway cuts it off\n\n", demoOwner, s.URL, s.URL)

	fmt.Fprintf(&b, "# admin API: revoke thermo-1 at the authority (the gateway disconnects it and refuses its token)\n")
	fmt.Fprintf(&b, "curl -sSk --pinnedpubkey '%s' -X POST -H \"Authorization: Bearer $(cat %s)\" %s/admin/v1/devices/thermo-1/revoke\n\n", s.pin, s.tokenFile, s.URL)

	fmt.Fprintf(&b, "# technician: sessions, kick\n")
	fmt.Fprintf(&b, "go run ./cmd/edgeid sessions --socket %s\n", cfg.Admin.Socket)
	fmt.Fprintf(&b, "go run ./cmd/edgeid kick --socket %s --device thermo-1\n\n", cfg.Admin.Socket)
	_, err = io.WriteString(out, b.String())
	return err
}

func splitAddr(a string) (string, string) {
	i := strings.LastIndex(a, ":")
	if i < 0 {
		return a, ""
	}
	return a[:i], a[i+1:]
}
