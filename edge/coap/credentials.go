package coap

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgeid/edgeid/store"
)

// pskFor is the DTLS PSK callback: the key of the device holding identity.
// An unknown identity gets a random key, so the handshake fails exactly as
// with a wrong key and identities cannot be probed.
func (s *Server) pskFor(identity []byte) ([]byte, error) {
	d, err := s.deviceByIdentity(string(identity))
	if err != nil {
		s.log.Warn("coap handshake refused", "psk_identity", printable(string(identity)), "reason", err.Error())
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return k, nil
	}
	s.mu.Lock()
	s.handed[d.PSKIdentity] = sha256.Sum256(d.PSK)
	s.mu.Unlock()
	return bytes.Clone(d.PSK), nil
}

// deviceByIdentity finds the active device holding a PSK identity.
func (s *Server) deviceByIdentity(identity string) (store.Device, error) {
	for attempt := 0; attempt < 2; attempt++ {
		ids, err := s.psks.lookup(identity, s.o.Store)
		if err != nil {
			return store.Device{}, err
		}
		switch len(ids) {
		case 0:
			return store.Device{}, errors.New("unknown psk identity")
		case 1:
		default:
			return store.Device{}, fmt.Errorf("psk identity is held by %d devices (%s); refusing all of them", len(ids), strings.Join(ids, ", "))
		}
		d, err := s.o.Store.Device(ids[0])
		if err != nil || d.PSKIdentity != identity {
			// Changed since the index was built, and InvalidatePSKs is yet
			// to come: build it again, once. Only a known identity gets here.
			s.psks.invalidate()
			continue
		}
		if d.Status != store.DeviceActive {
			return store.Device{}, fmt.Errorf("device %q is %s", d.ID, d.Status)
		}
		if len(d.PSK) == 0 {
			return store.Device{}, fmt.Errorf("device %q has no psk", d.ID)
		}
		return d, nil
	}
	return store.Device{}, errors.New("unknown psk identity")
}

// pskIndex maps PSK identities to devices. It is built from the store when
// first needed and trusted until invalidated (InvalidatePSKs, on every
// device change): an identity it lacks is unknown at the cost of a map
// lookup, so a stranger trying identities never makes the gateway scan its
// devices, and no lookup waits on Server.mu.
type pskIndex struct {
	cur    atomic.Pointer[pskEntry]
	gen    atomic.Uint64 // counts invalidations; an entry of an older one is stale
	build  sync.Mutex    // one build at a time
	builds atomic.Uint64 // how many builds, for tests
}

type pskEntry struct {
	gen uint64
	m   map[string][]string // PSK identity -> device ids
}

func (x *pskIndex) lookup(identity string, st *store.Store) ([]string, error) {
	if e := x.cur.Load(); e != nil && e.gen == x.gen.Load() {
		return e.m[identity], nil
	}
	x.build.Lock()
	defer x.build.Unlock()
	gen := x.gen.Load()
	if e := x.cur.Load(); e != nil && e.gen == gen {
		return e.m[identity], nil // built while this one waited
	}
	m, err := st.PSKIdentities()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	x.builds.Add(1)
	// Devices changed during the build bump gen: the entry is stale at once
	// and the next lookup builds again.
	x.cur.Store(&pskEntry{gen: gen, m: m})
	return m[identity], nil
}

func (x *pskIndex) invalidate() { x.gen.Add(1) }

// InvalidatePSKs drops the cached PSK identity index; call it when devices change.
func (s *Server) InvalidatePSKs() { s.psks.invalidate() }

// credentialGone says why the credential the session was opened with is no
// longer the device's, or "".
func (p *peer) credentialGone(d store.Device) string {
	switch p.method {
	case "token":
		// Plain UDP: Revalidate checked the token; the key its proofs are
		// checked with must still be the device's.
		if b := p.binding.Load(); b == nil || !bytes.Equal(b.keyRaw, d.PublicKey) {
			return "device key changed"
		}
		return ""
	case "certificate":
		byFP := d.CertSHA256 == p.certSHA256
		byIssuer := d.CertIssuer != "" && d.CertIssuer == p.certIssuer && d.CertSerial == p.certSerl
		if !byFP && !byIssuer {
			return "certificate no longer registered to the device"
		}
		return ""
	}
	if d.PSKIdentity != p.identity {
		return "psk identity changed"
	}
	sum := sha256.Sum256(d.PSK)
	if subtle.ConstantTimeCompare(sum[:], p.keySum[:]) != 1 {
		return "psk changed"
	}
	return ""
}

// verifyCert refuses, during the handshake, a client certificate that is
// not a registered device's; onNewConn binds the session to that device.
func (s *Server) verifyCert(raw [][]byte, _ [][]*x509.Certificate) error {
	chain, err := parseChain(raw)
	if err == nil {
		_, err = s.o.Auth.Certificate(chain, "")
	}
	if err != nil {
		s.log.Warn("coap handshake refused", "method", "certificate", "reason", err.Error())
		return errors.New("client certificate refused")
	}
	return nil
}

func parseChain(raw [][]byte) ([]*x509.Certificate, error) {
	chain := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no client certificate")
	}
	return chain, nil
}
