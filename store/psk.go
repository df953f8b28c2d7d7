package store

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	badger "github.com/dgraph-io/badger/v4"
)

// PSK length bounds, in bytes: below 16 a key can be brute-forced offline
// from one recorded handshake; above 64 nothing is gained and some DTLS
// stacks refuse it.
const (
	MinPSKLen = 16
	MaxPSKLen = 64
	// MaxPSKIdentityLen is the longest PSK identity accepted (RFC 4279
	// allows 2^16-1; constrained devices use short ones).
	MaxPSKIdentityLen = 128
)

// checkPSK returns a problem with d's DTLS pre-shared key, starting with the
// field name, or "". It never includes the key itself.
func checkPSK(d Device) string {
	switch {
	case d.PSKIdentity == "" && len(d.PSK) == 0:
		return ""
	case d.PSKIdentity == "":
		return ".psk_identity is empty; a psk needs the identity the device sends with it"
	case len(d.PSK) == 0:
		return ".psk is empty; set psk_identity and psk (base64) together, or neither"
	case len(d.PSKIdentity) > MaxPSKIdentityLen:
		return ".psk_identity is longer than 128 bytes"
	case !utf8.ValidString(d.PSKIdentity) || strings.ContainsAny(d.PSKIdentity, "\x00\r\n"):
		return ".psk_identity must be UTF-8 without NUL or line breaks"
	case len(d.PSK) < MinPSKLen || len(d.PSK) > MaxPSKLen:
		return ".psk must be 16 to 64 bytes (base64 in JSON); generate it with e.g. openssl rand -base64 32"
	}
	return ""
}

// DeviceByPSKIdentity finds the device holding this DTLS PSK identity,
// through the x/psk/ index: one point read for an unknown identity, two for
// a known one, in one consistent view; never a scan. The error wraps
// ErrNotFound when no device holds it.
func (s *Store) DeviceByPSKIdentity(identity string) (Device, error) {
	var d Device
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(pIdxPSK + identity))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		id, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		d, err = getDevice(txn, string(id))
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("device for psk identity: %w", err)
	}
	return d, nil
}
