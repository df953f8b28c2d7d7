// Package client is the gateway's side of the sync protocol: enrollment, and
// the Syncer that keeps the local store in step with the authority (snapshot,
// deltas, then a push stream), applying only batches signed by the pinned
// feed key, meant for this gateway, and continuing its cursor.
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
)

// Enrollment is what a gateway keeps after enrolling (state_dir/enrollment.json, mode 0600).
type Enrollment struct {
	Authority string `json:"authority"`
	// Fingerprint pins the authority's TLS certificate (SHA-256 hex); empty
	// means the system's CA roots decide.
	Fingerprint string          `json:"fingerprint,omitempty"`
	Gateway     string          `json:"gateway"`
	Audience    string          `json:"audience"`
	FeedKey     json.RawMessage `json:"feed_key"`
	Key         json.RawMessage `json:"key"` // the gateway's private key
	Enrolled    time.Time       `json:"enrolled"`
}

// HTTPClient returns a client that trusts the authority as the enrollment says.
func HTTPClient(fingerprint string) *http.Client {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if fingerprint != "" {
		want, _ := hex.DecodeString(strings.ToLower(strings.ReplaceAll(fingerprint, ":", "")))
		// Pinning replaces chain validation: the authority may run on a
		// self-signed certificate, and only this one is accepted.
		tc.InsecureSkipVerify = true
		tc.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("authority sent no certificate")
			}
			got := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(got[:], want) != 1 {
				return fmt.Errorf("authority certificate sha256 %x is not the pinned %s", got, fingerprint)
			}
			return nil
		}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true,
		ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second}}
}

// Enroll makes the gateway's key and registers it with a one-time code.
func Enroll(ctx context.Context, authority, fingerprint, code, hardware string) (*Enrollment, error) {
	k, err := cloudsync.NewES256Key()
	if err != nil {
		return nil, err
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	pubJSON, _ := json.Marshal(pub)
	body, _ := json.Marshal(cloudsync.EnrollRequest{Code: code, Key: pubJSON, Hardware: hardware})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(authority, "/")+cloudsync.PathEnroll, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := HTTPClient(fingerprint).Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", authority, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll at %s: %s: %s", authority, resp.Status, strings.TrimSpace(string(data)))
	}
	var er cloudsync.EnrollResponse
	if err := json.Unmarshal(data, &er); err != nil {
		return nil, fmt.Errorf("enroll: bad answer: %w", err)
	}
	if _, err := jwk.ParseKey(er.FeedKey); err != nil {
		return nil, fmt.Errorf("enroll: feed key: %w", err)
	}
	privJSON, _ := json.Marshal(k)
	return &Enrollment{Authority: strings.TrimRight(authority, "/"), Fingerprint: fingerprint, Gateway: er.Gateway,
		Audience: er.Audience, FeedKey: er.FeedKey, Key: privJSON, Enrolled: time.Now()}, nil
}

// Save writes the enrollment with owner-only permissions.
func (e *Enrollment) Save(path string) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadEnrollment reads an enrollment; os.ErrNotExist if the gateway is not enrolled.
func LoadEnrollment(path string) (*Enrollment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Enrollment
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if e.Authority == "" || e.Gateway == "" || len(e.FeedKey) == 0 || len(e.Key) == 0 {
		return nil, fmt.Errorf("%s: incomplete enrollment; enroll again", path)
	}
	return &e, nil
}

// Relay sends a device's pairing step to the authority on its behalf (for
// devices that cannot speak HTTPS) and returns the authority's JSON answer
// and HTTP status. It fails when the authority cannot be reached: pairing
// needs the uplink.
func (s *Syncer) Relay(ctx context.Context, req cloudsync.PairRelayRequest) (map[string]any, int, error) {
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.E.Authority+cloudsync.PathPairRelay, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	a, err := cloudsync.SignAssertion(s.key, s.E.Gateway, s.E.Authority, time.Now())
	if err != nil {
		return nil, 0, err
	}
	r.Header.Set("Authorization", "EdgeID-GW "+a)
	r.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(r)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return nil, resp.StatusCode, fmt.Errorf("pair relay: %s", resp.Status)
	}
	return m, resp.StatusCode, nil
}

// ReportSeen tells the authority when devices were last connected here (for
// the owners' "My devices" page). Best effort: presence is not security.
func (s *Syncer) ReportSeen(ctx context.Context, seen cloudsync.Seen) error {
	if len(seen) == 0 {
		return nil
	}
	body, _ := json.Marshal(seen)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.E.Authority+cloudsync.PathSeen, bytes.NewReader(body))
	if err != nil {
		return err
	}
	a, err := cloudsync.SignAssertion(s.key, s.E.Gateway, s.E.Authority, time.Now())
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", "EdgeID-GW "+a)
	r.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(r)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("report presence: %s", resp.Status)
	}
	return nil
}
