// Package bridge is the gateway's outbound bridge to cloud MQTT brokers: a
// connection per remote under the gateway's own identity, a durable queue
// per remote for what goes out at QoS 1 (a device's PUBACK follows the
// disk; a record goes only at the cloud's PUBACK), and the principal
// "bridge:<remote>" whose class bounds both directions: subscribe
// permission for what the cloud may receive, publish permission for what it
// may send in. The bridge is a front end of edge/enforce: a class change
// re-reads its permissions, which every message is checked against at the
// moment it crosses, queued ones included.
package bridge

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/enforce"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Options build a Bridge.
type Options struct {
	Config  config.Bridge
	Gateway string // the gateway id: the default client id and {gateway} in prefixes
	Dir     string // queue directory: Config.Queue.Dir or <state_dir>/bridge
	Store   *store.Store
	Log     *slog.Logger
	// Inject publishes a message from the cloud into the local broker
	// (authorized here, before the call).
	Inject func(packets.Packet) error
	// EnrolledKey is the gateway's enrolled private key (JWK), for a remote
	// whose cert is set and key is not.
	EnrolledKey json.RawMessage
	// MaxPacketSize bounds a packet read from a remote.
	MaxPacketSize uint32
}

// Bridge holds the remotes.
type Bridge struct {
	Remotes []*Remote
	store   *store.Store
	log     *slog.Logger
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New opens every remote's queue and reads its TLS material; Start connects.
func New(o Options) (*Bridge, error) {
	b := &Bridge{store: o.Store, log: o.Log}
	o.Config = o.Config.WithDefaults(o.Gateway)
	q := o.Config.Queue
	for _, rc := range o.Config.Remotes {
		r, err := newRemote(rc, q, o)
		if err != nil {
			b.closeSpools()
			return nil, fmt.Errorf("bridge remote %q: %w", rc.Name, err)
		}
		b.Remotes = append(b.Remotes, r)
	}
	b.refresh()
	return b, nil
}

func newRemote(rc config.Remote, q config.BridgeQueue, o Options) (*Remote, error) {
	u, err := url.Parse(rc.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	r := &Remote{Name: rc.Name, cfg: rc, addr: u.Host, version: 5, inject: o.Inject, maxPkt: o.MaxPacketSize,
		log: o.Log.With("component", "bridge"), state: "stopped", since: time.Now()}
	if r.maxPkt == 0 {
		r.maxPkt = 256 << 10
	}
	if rc.Protocol == "3.1.1" {
		r.version = 4
	}
	if u.Scheme == "mqtts" {
		if r.tls, err = ClientTLS(rc, u.Hostname(), o.EnrolledKey); err != nil {
			return nil, err
		}
	}
	if rc.PasswordFile != "" {
		pw, err := os.ReadFile(rc.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("password_file: %w", err)
		}
		r.password = []byte(strings.TrimRight(string(pw), "\r\n"))
	}
	for _, ru := range rc.Rules {
		if ru.Direction == "in" {
			r.in = append(r.in, rule{ru})
		} else {
			r.out = append(r.out, rule{ru})
		}
	}
	r.spool, err = OpenSpool(filepath.Join(o.Dir, rc.Name), SpoolOptions{MaxBytes: q.MaxBytes, MaxAge: q.MaxAge,
		RefuseNew: q.WhenFull == "refuse_new", Fsync: q.Sync == "batch", SyncInterval: q.SyncInterval,
		SegmentBytes: q.SegmentBytes, Log: r.log.With("remote", rc.Name)})
	if err != nil {
		return nil, err
	}
	r.mem = newMemQueue(q.MemoryMessages, &r.Counters.DroppedMem)
	return r, nil
}

// ClientTLS is the gateway's TLS configuration towards remote rc at host:
// the CA bundle (or the system's roots), the server name, and the client
// certificate with its key file or the enrolled key. edgeid doctor checks
// a remote with the same configuration.
func ClientTLS(rc config.Remote, host string, enrolled json.RawMessage) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if rc.ServerName != "" {
		tc.ServerName = rc.ServerName
	}
	if rc.CA != "" {
		pem, err := os.ReadFile(rc.CA)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no PEM certificates found", rc.CA)
		}
		tc.RootCAs = pool
	}
	switch {
	case rc.Cert != "" && rc.Key != "":
		cert, err := tls.LoadX509KeyPair(rc.Cert, rc.Key)
		if err != nil {
			return nil, fmt.Errorf("cert/key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	case rc.Cert != "":
		cert, err := enrolledCert(rc.Cert, enrolled)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// enrolledCert pairs a certificate with the gateway's enrolled key.
func enrolledCert(certFile string, enrolled json.RawMessage) (tls.Certificate, error) {
	if len(enrolled) == 0 {
		return tls.Certificate{}, errors.New("cert is set without key, but the gateway is not enrolled (run edgeid enroll, or set key)")
	}
	k, err := jwk.ParseKey(enrolled)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("enrolled key: %w", err)
	}
	var raw any
	if err := jwk.Export(k, &raw); err != nil {
		return tls.Certificate{}, fmt.Errorf("enrolled key: %w", err)
	}
	signer, ok := raw.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, errors.New("enrolled key is not a private key")
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cert: %w", err)
	}
	var chain tls.Certificate
	for rest := pemBytes; ; {
		var der []byte
		der, rest = nextPEMCert(rest)
		if der == nil {
			break
		}
		chain.Certificate = append(chain.Certificate, der)
	}
	if len(chain.Certificate) == 0 {
		return tls.Certificate{}, fmt.Errorf("cert %s: no PEM certificate found", certFile)
	}
	leaf, err := x509.ParseCertificate(chain.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cert %s: %w", certFile, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := leaf.PublicKey.(equaler); !ok || !pub.Equal(signer.Public()) {
		return tls.Certificate{}, fmt.Errorf("cert %s is not for the gateway's enrolled key; give the key file in key", certFile)
	}
	chain.PrivateKey, chain.Leaf = signer, leaf
	return chain, nil
}

// refresh reads each remote's class and installs its permissions; a class
// that cannot be read, or is missing, allows nothing (fail closed).
func (b *Bridge) refresh() {
	for _, r := range b.Remotes {
		p := policy.NewPerms()
		class, err := b.store.Class(r.cfg.Class)
		if err == nil {
			var rules []policy.Rule
			rules, err = policy.Expand(class.Permissions, policy.Vars{Client: r.Principal()})
			if err == nil {
				var set *policy.Set
				if set, err = policy.Compile(rules); err == nil {
					p = policy.NewPerms(set)
				}
			}
		}
		if err != nil {
			b.log.Warn("bridge: the bridge class cannot be read; nothing crosses until it can", "remote", r.Name,
				"principal", r.Principal(), "class", r.cfg.Class, "err", err)
		}
		r.perms.Store(&p)
	}
}

// Start connects every remote; Stop (or ctx) ends them.
func (b *Bridge) Start(ctx context.Context) {
	ctx, b.cancel = context.WithCancel(ctx)
	for _, r := range b.Remotes {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			r.run(ctx)
		}()
	}
}

// Stop disconnects and closes the queues (they are synced first).
func (b *Bridge) Stop() {
	if b.cancel != nil {
		b.cancel()
	}
	b.wg.Wait()
	b.closeSpools()
}

func (b *Bridge) closeSpools() {
	for _, r := range b.Remotes {
		if r.spool != nil {
			_ = r.spool.Close()
		}
	}
}

// Out takes one message published locally by device (before the device is
// acknowledged). For each remote with an out rule matching the topic that
// the bridge class may send, a QoS 1 message (at the rule's QoS) is
// written to the remote's durable queue, QoS 0 to its memory buffer. The
// returned code is what the device's PUBLISH is answered with when a queue
// cannot take it (0x97 when full under refuse_new, 0x80 on a disk error);
// success is the zero Code.
func (b *Bridge) Out(device string, pk *packets.Packet) (packets.Code, error) {
	for _, r := range b.Remotes {
		ru, ok := r.outRule(pk.TopicName)
		if !ok {
			continue
		}
		if !r.allowedOut(pk.TopicName) {
			r.Counters.RefusedOut.Add(1)
			continue
		}
		m := Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: min(pk.FixedHeader.Qos, ru.QoS), Retain: pk.FixedHeader.Retain,
			Device: device, ContentType: pk.Properties.ContentType}
		if m.QoS == 0 {
			r.mem.push(m)
			continue
		}
		if _, err := r.spool.Append(m); errors.Is(err, ErrFull) {
			return packets.ErrQuotaExceeded, fmt.Errorf("bridge %q: %w", r.Name, err)
		} else if err != nil {
			return packets.ErrUnspecifiedError, fmt.Errorf("bridge %q: %w", r.Name, err)
		}
	}
	return packets.Code{}, nil
}

// Wants reports whether any remote has an out rule for topic (cheap: no
// queue is touched).
func (b *Bridge) Wants(topic string) bool {
	for _, r := range b.Remotes {
		if _, ok := r.outRule(topic); ok {
			return true
		}
	}
	return false
}

// Status is one remote as `edgeid bridge` shows it.
type Status struct {
	Remote       string    `json:"remote"`
	Address      string    `json:"address"`
	Principal    string    `json:"principal"`
	State        string    `json:"state"`
	Since        time.Time `json:"since"`
	LastError    string    `json:"last_error,omitempty"`
	Queued       uint64    `json:"queued"`
	QueuedBytes  int64     `json:"queued_bytes"`
	Oldest       time.Time `json:"oldest,omitzero"`
	Memory       int       `json:"memory_queued"`
	Forwarded    uint64    `json:"forwarded"`
	Resent       uint64    `json:"resent"`
	Dropped      uint64    `json:"dropped"`
	RefusedOut   uint64    `json:"refused_out"`
	Received     uint64    `json:"received"`
	RefusedIn    uint64    `json:"refused_in"`
	Connects     uint64    `json:"connects"`
	BytesWritten uint64    `json:"queue_bytes_written"`
	QueueError   string    `json:"queue_error,omitempty"`
}

// Status reports every remote.
func (b *Bridge) Status() []Status {
	var out []Status
	for _, r := range b.Remotes {
		st := r.spool.Stats()
		r.mu.Lock()
		s := Status{Remote: r.Name, Address: r.cfg.Address, Principal: r.Principal(), State: r.state, Since: r.since, LastError: r.lastErr}
		r.mu.Unlock()
		s.Queued, s.QueuedBytes, s.Oldest, s.BytesWritten, s.QueueError = st.Messages, st.Bytes, st.Oldest, st.BytesWritten, st.Err
		s.Memory = r.mem.len()
		s.Dropped = st.Dropped + r.Counters.DroppedMem.Load()
		s.Forwarded, s.Resent, s.RefusedOut = r.Counters.Forwarded.Load(), r.Counters.Resent.Load(), r.Counters.RefusedOut.Load()
		s.Received, s.RefusedIn, s.Connects = r.Counters.Received.Load(), r.Counters.RefusedIn.Load(), r.Counters.Connects.Load()
		out = append(out, s)
	}
	return out
}

// FrontEnd is the bridge as edge/enforce sees it. Its principals hold no
// device credential, so no revocation names them; a re-check (a class
// changed, the store replaced) re-reads the bridge classes.
type FrontEnd struct{ B *Bridge }

var _ enforce.FrontEnd = FrontEnd{}

// End ends nothing: a bridge principal is not a device session.
func (FrontEnd) End(enforce.Selector, enforce.Match, string) int { return 0 }

// Recheck re-reads the bridge classes when every principal is re-checked.
func (f FrontEnd) Recheck(sel enforce.Selector, _ enforce.Match) {
	if sel == enforce.All {
		f.B.refresh()
	}
}

func nextPEMCert(rest []byte) ([]byte, []byte) {
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, nil
		}
		if blk.Type == "CERTIFICATE" {
			return blk.Bytes, rest
		}
	}
}
