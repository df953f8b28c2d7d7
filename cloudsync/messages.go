package cloudsync

import (
	"encoding/json"
	"time"
)

// EnrollRequest is what a gateway sends with its one-time code.
type EnrollRequest struct {
	Code string `json:"code"`
	// Key is the gateway's public key (JWK); its requests are signed with it.
	Key json.RawMessage `json:"key"`
	// Hardware is the board's serial number, for the operator's records.
	Hardware string `json:"hardware,omitempty"`
}

// EnrollResponse tells the gateway who it is and which key signs its feed.
type EnrollResponse struct {
	Gateway string `json:"gateway"`
	// FeedKey is the public key the gateway pins for feed batches.
	FeedKey json.RawMessage `json:"feed_key"`
	// Audience is the aud of device tokens meant for this gateway.
	Audience string `json:"audience"`
}

// Paths of the sync API, relative to the authority's base URL.
const (
	PathEnroll   = "/sync/v1/enroll"
	PathSnapshot = "/sync/v1/snapshot"
	PathChanges  = "/sync/v1/changes"
	PathEvents   = "/sync/v1/events"
	// PathPairRelay is where a gateway relays a device's pairing.
	PathPairRelay = "/sync/v1/pair"
	// PathSeen is where a gateway reports when its devices were last connected.
	PathSeen = "/sync/v1/seen"
	// PathPermission is the UMA permission endpoint: a gateway, as resource
	// server, asks for a permission ticket (UMA Federated Authorization §4).
	PathPermission = "/uma/permission"
)

// PermissionRequest is one requested permission (UMA Federated
// Authorization §4.1): a resource ("<device>/<group>") and its scopes
// ("sub", "pub"). The permission endpoint takes one or an array of them.
type PermissionRequest struct {
	ResourceID     string   `json:"resource_id"`
	ResourceScopes []string `json:"resource_scopes"`
}

// TicketResponse is the permission endpoint's 201 answer.
type TicketResponse struct {
	Ticket string `json:"ticket"`
}

// PairRelayRequest is a device's pairing step relayed by its gateway.
type PairRelayRequest struct {
	Op         string `json:"op"` // start or poll
	Device     string `json:"device"`
	DeviceCode string `json:"device_code,omitempty"`
}

// ChangesResponse carries signed batches; Snapshot is set when the gateway
// must start again from a snapshot (another epoch, or the log was trimmed).
// Heartbeat is a signed Heartbeat made before the log was read: once the
// gateway has applied Batches its cursor must reach the heartbeat's head, or
// batches were withheld (or more remain, when Batches is a full page).
type ChangesResponse struct {
	Batches      []string `json:"batches"`
	NeedSnapshot bool     `json:"need_snapshot,omitempty"`
	Heartbeat    string   `json:"heartbeat,omitempty"`
}

// AssertionType is the JWS typ of a gateway's signed request assertion.
const AssertionType = "edgeid-gw+jwt"

// AssertionLifetime bounds how long a signed request stays usable.
const AssertionLifetime = 2 * time.Minute

// Seen is a gateway's report of device presence: device id -> last seen.
type Seen map[string]SeenAt

// SeenAt is when a device was last connected, and whether it still is.
type SeenAt struct {
	At     time.Time `json:"at"`
	Online bool      `json:"online"`
}
