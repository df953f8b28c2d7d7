package store

import (
	"strings"
	"unicode/utf8"
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

// PSKIdentities maps every DTLS PSK identity in the store to the devices
// that carry it (normally one: an identity held by two devices is ambiguous
// and must be refused by the caller). It scans all devices; callers cache
// the result and rebuild it when devices change.
func (s *Store) PSKIdentities() (map[string][]string, error) {
	ds, err := s.Devices()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, d := range ds {
		if d.PSKIdentity != "" {
			out[d.PSKIdentity] = append(out[d.PSKIdentity], d.ID)
		}
	}
	return out, nil
}
