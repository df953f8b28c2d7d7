// Package admin holds the gateway's local admin API contract: the route paths,
// the wire types and a typed client over the unix socket with one method per
// route, used by the technician CLI (as tailscale's CLI uses its LocalAPI).
// The server is package adminserver; the gateway backs it (edge/adminbackend.go).
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

// The routes of the admin API. GET routes read; POST routes change the
// gateway and need the write role (see adminserver).
const (
	PathStatus      = "/v1/status"      // GET: Status
	PathSessions    = "/v1/sessions"    // GET: []Session
	PathDevices     = "/v1/devices"     // GET: []Device; ?online=1 keeps devices with a live session
	PathRevocations = "/v1/revocations" // GET: []store.Revocation
	PathBridge      = "/v1/bridge"      // GET: []BridgeRemote (empty without bridge.remotes)
	PathKick        = "/v1/kick"        // POST KickRequest: KickResult
	PathSync        = "/v1/sync"        // POST: Status, after a retry of the authority at once
	PathPair        = "/v1/pair"        // POST PairRequest: PairResult
	PathImport      = "/v1/import"      // POST store.Batch: ImportResult
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
	// Transport is "mqtt", "coaps" (CoAP over DTLS), "coap" (plain UDP) or
	// "https" (an event stream).
	Transport string `json:"transport"`
	// Filter is what an https event stream is subscribed to.
	Filter string `json:"filter,omitempty"`
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

// BridgeRemote is one cloud bridge remote in GET /v1/bridge: its link, its
// queue and its counters since the daemon started.
type BridgeRemote struct {
	Remote    string `json:"remote"`
	Address   string `json:"address"`
	Principal string `json:"principal"`
	// State is connecting, connected, down or stopped, since Since;
	// LastError says why it is not connected.
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	// Queued and QueuedBytes are the QoS 1 messages waiting on disk, Oldest
	// when the oldest of them was queued (zero: none); Memory is the QoS 0
	// messages waiting in memory.
	Queued      uint64    `json:"queued"`
	QueuedBytes int64     `json:"queued_bytes"`
	Oldest      time.Time `json:"oldest,omitzero"`
	Memory      int       `json:"memory_queued"`
	// Forwarded: acknowledged by the remote (QoS 1) or sent (QoS 0);
	// Resent: sent again after a reconnect; Dropped: lost to a full or
	// expired queue; RefusedOut: not sent, the bridge class may not;
	// Received: from the remote, published locally; RefusedIn: from the
	// remote, refused by the bridge class.
	Forwarded    uint64 `json:"forwarded"`
	Resent       uint64 `json:"resent"`
	Dropped      uint64 `json:"dropped"`
	RefusedOut   uint64 `json:"refused_out"`
	Received     uint64 `json:"received"`
	RefusedIn    uint64 `json:"refused_in"`
	Connects     uint64 `json:"connects"`
	BytesWritten uint64 `json:"queue_bytes_written"`
	QueueError   string `json:"queue_error,omitempty"`
	// Class is the device class bounding the bridge principal; ClassError
	// says why it cannot be used (then nothing crosses).
	Class      string `json:"class,omitempty"`
	ClassError string `json:"class_error,omitempty"`
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

// APIError is a non-2xx answer: Code is the HTTP status (403: the caller's
// role may not use the route), Message the server's explanation.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string { return e.Message }

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
			return &APIError{Code: resp.StatusCode, Message: e.Error}
		}
		return &APIError{Code: resp.StatusCode, Message: fmt.Sprintf("%s %s: %s", method, path, resp.Status)}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.Do(ctx, http.MethodGet, PathStatus, nil, &s)
}

// Sessions lists live sessions, MQTT and CoAP.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	var s []Session
	return s, c.Do(ctx, http.MethodGet, PathSessions, nil, &s)
}

// Devices lists the devices in the store; online keeps only those with a
// live session.
func (c *Client) Devices(ctx context.Context, online bool) ([]Device, error) {
	path := PathDevices
	if online {
		path += "?online=1"
	}
	var ds []Device
	return ds, c.Do(ctx, http.MethodGet, path, nil, &ds)
}

// Revocations lists the revocations the store holds.
func (c *Client) Revocations(ctx context.Context) ([]store.Revocation, error) {
	var rs []store.Revocation
	return rs, c.Do(ctx, http.MethodGet, PathRevocations, nil, &rs)
}

// Bridge lists the cloud bridge's remotes (none without bridge.remotes).
func (c *Client) Bridge(ctx context.Context) ([]BridgeRemote, error) {
	var rs []BridgeRemote
	return rs, c.Do(ctx, http.MethodGet, PathBridge, nil, &rs)
}

// Kick disconnects sessions.
func (c *Client) Kick(ctx context.Context, r KickRequest) (KickResult, error) {
	var k KickResult
	return k, c.Do(ctx, http.MethodPost, PathKick, r, &k)
}

// Import applies a batch (raw JSON of store.Batch).
func (c *Client) Import(ctx context.Context, batch json.RawMessage) (ImportResult, error) {
	var r ImportResult
	return r, c.Do(ctx, http.MethodPost, PathImport, batch, &r)
}

// SyncNow makes a waiting syncer retry the authority at once and returns
// the status after it.
func (c *Client) SyncNow(ctx context.Context) (Status, error) {
	var s Status
	return s, c.Do(ctx, http.MethodPost, PathSync, nil, &s)
}

// Pair opens the pairing window for window (0 closes it).
func (c *Client) Pair(ctx context.Context, window time.Duration) (PairResult, error) {
	var r PairResult
	return r, c.Do(ctx, http.MethodPost, PathPair, PairRequest{Window: window.String()}, &r)
}
