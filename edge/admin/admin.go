// Package admin holds the gateway's local admin API contract: the wire types
// and a small typed client over the unix socket, used by the technician CLI
// (as tailscale's CLI uses its LocalAPI). The daemon side lives in package edge.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/edgeid/edgeid/store"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Gateway    string         `json:"gateway"`
	Version    string         `json:"version"`
	StartedAt  time.Time      `json:"started_at"`
	Listeners  []string       `json:"listeners"`
	Sessions   int            `json:"sessions"`
	StoreRev   uint64         `json:"store_rev"`
	Records    map[string]int `json:"records"`
	TokenCache int            `json:"token_cache"`
	Sync       *SyncStatus    `json:"sync,omitempty"`
	// PairingUntil is when the pairing window closes (zero: closed).
	PairingUntil time.Time `json:"pairing_until,omitzero"`
	// LED is the status LED's pattern; Hardware is false without GPIO.
	LED      string `json:"led"`
	Hardware bool   `json:"hardware"`
}

// PairRequest opens the pairing window for Window (a duration; "0s" closes it).
type PairRequest struct {
	Window string `json:"window"`
}

// PairResult says until when the window is open.
type PairResult struct {
	Until time.Time `json:"until,omitzero"`
}

// SyncStatus is the link to the authority, when the gateway is enrolled.
type SyncStatus struct {
	Authority string    `json:"authority"`
	Gateway   string    `json:"gateway"`
	Online    bool      `json:"online"`
	Epoch     string    `json:"epoch"`
	Cursor    uint64    `json:"cursor"`
	SyncedAt  time.Time `json:"synced_at,omitzero"`
	// LagSeconds is the time since the last signed heartbeat whose head the
	// store had reached (-1: never).
	LagSeconds float64 `json:"lag_seconds"`
	// Stale: the store is not known to hold the authority's signed head;
	// Reason says why. HeardAt is the last signed contact, Head the
	// authority's last signed head, HeartbeatSeconds its interval.
	Stale            bool      `json:"stale"`
	Reason           string    `json:"reason,omitempty"`
	HeardAt          time.Time `json:"heard_at,omitzero"`
	Head             uint64    `json:"head,omitempty"`
	HeartbeatSeconds float64   `json:"heartbeat_seconds,omitempty"`
	// NextTry is when a waiting syncer tries again; Failures counts failed
	// rounds in a row, LastError says why the last one ended.
	NextTry   time.Time `json:"next_try,omitzero"`
	Failures  int       `json:"failures,omitempty"`
	LastError string    `json:"last_error,omitempty"`
}

// Session is one live session in GET /v1/sessions.
type Session struct {
	// Transport is "mqtt", "coaps" (CoAP over DTLS) or "coap" (plain UDP).
	Transport string `json:"transport"`
	// ClientID is the MQTT client id ("" for CoAP).
	ClientID string `json:"client_id,omitempty"`
	Device   string `json:"device"`
	Method   string `json:"method"`
	Subject  string `json:"subject,omitempty"`
	Remote   string `json:"remote"`
	// Protocol is the MQTT protocol version (0 for CoAP).
	Protocol    byte      `json:"protocol,omitempty"`
	ConnectedAt time.Time `json:"connected_at"`
	Expires     time.Time `json:"expires,omitzero"`
	// Observations is how many CoAP observations the session holds.
	Observations int `json:"observations,omitempty"`
	// Offline marks an MQTT persistent session kept while its device is
	// away; Queued is how many messages wait for it.
	Offline bool  `json:"offline,omitempty"`
	Queued  int64 `json:"queued,omitempty"`
}

// Device is a device in GET /v1/devices, with its live session count.
type Device struct {
	store.Device
	Sessions int `json:"sessions"`
}

// KickRequest names what to disconnect; exactly one field is set.
type KickRequest struct {
	Device  string `json:"device,omitempty"`
	Subject string `json:"subject,omitempty"`
	JTI     string `json:"jti,omitempty"`
}

// KickResult says how many sessions were ended.
type KickResult struct {
	Kicked int `json:"kicked"`
}

// ImportResult is the answer of POST /v1/import.
type ImportResult struct {
	Rev     uint64 `json:"rev"`
	Records int    `json:"records"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// Client talks to the daemon's admin socket.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, http: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Do sends a request and decodes the JSON answer into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://edgeid"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w (is edgeid serve running, and are you root or in the edgeid group?)", c.Socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Sessions lists live sessions.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	var s []Session
	return s, c.Do(ctx, http.MethodGet, "/v1/sessions", nil, &s)
}

// Kick disconnects sessions.
func (c *Client) Kick(ctx context.Context, r KickRequest) (KickResult, error) {
	var k KickResult
	return k, c.Do(ctx, http.MethodPost, "/v1/kick", r, &k)
}

// Import applies a batch (raw JSON of store.Batch).
func (c *Client) Import(ctx context.Context, batch json.RawMessage) (ImportResult, error) {
	var r ImportResult
	return r, c.Do(ctx, http.MethodPost, "/v1/import", batch, &r)
}
