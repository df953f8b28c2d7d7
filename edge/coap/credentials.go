package coap

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
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

// deviceByIdentity finds the active device holding a PSK identity through
// the store's x/psk/ index, which moves with the device records in the same
// transaction: an unknown identity costs one point read, so a stranger
// trying identities never makes the gateway scan its devices, and a device
// changed a moment ago is seen as it is now (no cache to invalidate).
func (s *Server) deviceByIdentity(identity string) (store.Device, error) {
	s.psks.lookups.Add(1)
	d, err := s.o.Store.DeviceByPSKIdentity(identity)
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, errors.New("unknown psk identity")
	}
	if err != nil {
		return store.Device{}, fmt.Errorf("store: %w", err)
	}
	if d.PSKIdentity != identity {
		// The index and the record are written in one transaction; this is
		// a damaged store, and fails closed.
		return store.Device{}, fmt.Errorf("device %q found by psk identity no longer holds it", d.ID)
	}
	if d.Status != store.DeviceActive {
		return store.Device{}, fmt.Errorf("device %q is %s", d.ID, d.Status)
	}
	if len(d.PSK) == 0 {
		return store.Device{}, fmt.Errorf("device %q has no psk", d.ID)
	}
	return d, nil
}

// pskIndex counts PSK identity lookups, for tests; the index itself is the
// store's (store.DeviceByPSKIdentity).
type pskIndex struct {
	lookups atomic.Uint64
}

// credentialGone says why the credential the session was opened with is no
// longer the device's, or "".
func (p *session) credentialGone(d store.Device) string {
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
