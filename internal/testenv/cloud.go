package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
)

// Cloud is Debian's Mosquitto as the manufacturer's cloud broker: one TLS
// listener on loopback that requires a client certificate and takes its
// common name as the user name, and an ACL file that confines the gateway
// to gateways/<gateway>/# and lets the cloud application ("cloud-app") use
// gateways/#.
type Cloud struct {
	t       testing.TB
	Addr    string // 127.0.0.1:port
	Dir     string
	CA      string // PEM files
	GWCert  string
	GWKey   string
	AppCert string
	AppKey  string
	Log     Buf // mosquitto's stderr
	conf    string
	path    string
	cmd     *exec.Cmd
}

// StartCloud starts the cloud broker for gateway; it is killed at cleanup.
// It keeps nothing across a restart.
func StartCloud(t testing.TB, gateway string) *Cloud { return startCloud(t, gateway, false) }

// StartPersistentCloud is StartCloud with Mosquitto's persistence on: what
// Shutdown saves (sessions, subscriptions, queued messages) is there after
// Start.
func StartPersistentCloud(t testing.TB, gateway string) *Cloud { return startCloud(t, gateway, true) }

func startCloud(t testing.TB, gateway string, persist bool) *Cloud {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/mosquitto"); e != nil {
			t.Fatal("mosquitto not found: install Debian's mosquitto (.ci/run does)")
		}
		bin = "/usr/sbin/mosquitto"
	}
	dir := t.TempDir()
	c := &Cloud{t: t, Dir: dir}
	caKey, caCert := writeCA(t, dir)
	c.CA = filepath.Join(dir, "ca.crt")
	srvCert, srvKey := writeLeaf(t, dir, "server", caKey, caCert, true)
	c.GWCert, c.GWKey = writeLeaf(t, dir, gateway, caKey, caCert, false)
	c.AppCert, c.AppKey = writeLeaf(t, dir, "cloud-app", caKey, caCert, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Addr = ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(c.Addr)
	acl := fmt.Sprintf("user %s\ntopic readwrite gateways/%s/#\n\nuser cloud-app\ntopic readwrite gateways/#\n", gateway, gateway)
	if err := os.WriteFile(filepath.Join(dir, "acl"), []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	persistence := "persistence false\n"
	if persist {
		persistence = fmt.Sprintf("persistence true\npersistence_location %s/\nautosave_interval 0\n", dir)
	}
	conf := fmt.Sprintf("per_listener_settings false\nallow_anonymous false\nacl_file %s\n"+persistence+"log_type error\nlog_dest stderr\n"+
		"max_queued_messages 0\nmax_inflight_messages 0\n"+
		"listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
		filepath.Join(dir, "acl"), port, c.CA, srvCert, srvKey)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	c.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(c.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c.path = bin
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// Start (re)starts the broker on its address and waits until it listens.
func (c *Cloud) Start() {
	c.t.Helper()
	c.cmd = exec.Command(c.path, "-c", c.conf)
	c.cmd.Stderr = &c.Log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if nc, err := net.Dial("tcp", c.Addr); err == nil {
			nc.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("mosquitto did not listen on %s:\n%s", c.Addr, c.Log.String())
}

// Stop kills the broker (an outage: nothing is said to its clients).
func (c *Cloud) Stop() {
	if c.cmd != nil && c.cmd.Process != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// Shutdown stops the broker with SIGTERM, so that a persistent one saves
// its state first.
func (c *Cloud) Shutdown() {
	if c.cmd != nil && c.cmd.Process != nil && c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		_ = c.cmd.Wait()
	}
}

// AppTLS is the cloud application's TLS configuration.
func (c *Cloud) AppTLS() *tls.Config {
	c.t.Helper()
	cert, err := tls.LoadX509KeyPair(c.AppCert, c.AppKey)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(c.CA)
	pool.AppendCertsFromPEM(b)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Remote is a bridge remote to this cloud with the gateway's certificate.
func (c *Cloud) Remote(name string, rules ...config.BridgeRule) config.Remote {
	return config.Remote{Name: name, Address: "mqtts://" + c.Addr, CA: c.CA, ServerName: "localhost",
		Cert: c.GWCert, Key: c.GWKey, Rules: rules}
}

func writeCA(t testing.TB, dir string) (*ecdsa.PrivateKey, *x509.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cloud test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", der)
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

var serial int64 = 100

func writeLeaf(t testing.TB, dir, cn string, caKey *ecdsa.PrivateKey, ca *x509.Certificate, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	kb, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// LockedConn makes c a sync.Locker, which paho.golang takes around each
// packet it writes. Without it a packet written as several buffers goes out
// as several TLS records, and two goroutines' packets (a SUBSCRIBE and the
// PUBACK of a message the broker sends at once) can interleave.
func LockedConn(c net.Conn) net.Conn { return &lockedConn{Conn: c} }

type lockedConn struct {
	net.Conn
	sync.Mutex
}
