package store

import (
	"encoding/json"
	"time"

	"github.com/edgeid/edgeid/policy"
)

// DeviceStatus is the lifecycle state of a device. Only active devices may connect.
type DeviceStatus string

// Device states.
const (
	DeviceActive    DeviceStatus = "active"
	DeviceSuspended DeviceStatus = "suspended"
	DeviceRevoked   DeviceStatus = "revoked"
)

// Device is one registered device, as the manufacturer registered it.
type Device struct {
	// ID is the device's identity: its MQTT client ID and its token's client_id.
	ID string `json:"id"`
	// Name is what the owner calls the device ("kitchen speaker").
	Name string `json:"name,omitempty"`
	// Serial and MAC are informational (shown to technicians and owners).
	Serial string `json:"serial,omitempty"`
	MAC    string `json:"mac,omitempty"`
	// Class names the DeviceClass whose permission template applies.
	Class string `json:"class"`
	// Owner is the user the device is paired to; empty until paired.
	Owner  string       `json:"owner,omitempty"`
	Status DeviceStatus `json:"status"`
	// CertSHA256 is the lowercase hex SHA-256 of the factory certificate (DER).
	CertSHA256 string `json:"cert_sha256,omitempty"`
	// CertIssuer and CertSerial identify a certificate issued by a trusted CA:
	// the issuer's distinguished name (RFC 4514 string) and the serial in lowercase hex.
	CertIssuer string `json:"cert_issuer,omitempty"`
	CertSerial string `json:"cert_serial,omitempty"`
	// PublicKey is the device's own public key (JWK): it signs the device's
	// client assertions (RFC 7523) and proves possession of key-bound tokens.
	PublicKey json.RawMessage `json:"public_key,omitempty"`
	// PSKIdentity and PSK are the device's DTLS pre-shared key for CoAP
	// (coaps://): the identity the device sends in the handshake and the
	// secret key, 16..64 bytes (base64 in JSON). Both or neither. The key is
	// a secret: never log it.
	PSKIdentity string `json:"psk_identity,omitempty"`
	PSK         []byte `json:"psk,omitempty"`
	// Site is the site whose gateways hold the device (sites.go): set by
	// the manufacturer, or the owner's gateway's when paired; empty: every
	// gateway.
	Site string `json:"site,omitempty"`
	// Rev is the store batch that last wrote this record (set by the store).
	Rev uint64 `json:"rev,omitempty"`
}

// DeviceClass is a kind of device and the topics every device of that kind may use.
type DeviceClass struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Permissions is a template: filters may use {device}, {owner} and {client}.
	Permissions []policy.Rule `json:"permissions"`
	// Resources are the class's topic groups an owner can share (UMA
	// resources: one per device and group).
	Resources []ResourceGroup `json:"resources,omitempty"`
	// Limits are the class's own PUBLISH rate limits; nil keeps the
	// gateway's configured ones (throttle.device, throttle.class).
	Limits *ClassLimits `json:"limits,omitempty"`
	Rev    uint64       `json:"rev,omitempty"`
}

// ClassLimits are a class's rate limits. Each rate a field sets (messages or
// bytes, with its burst) replaces the gateway's configured one; a rate left
// at 0 keeps the configured one.
type ClassLimits struct {
	// Device limits each device of the class on its own (instead of the
	// gateway's throttle.device).
	Device Rates `json:"device,omitzero"`
	// Class limits all devices of the class together, on one gateway
	// (instead of the gateway's throttle.class).
	Class Rates `json:"class,omitzero"`
}

// Rates are a message rate and a byte rate, each with a burst; 0 is unset.
type Rates struct {
	MessagesPerSecond float64 `json:"messages_per_second,omitempty"`
	MessageBurst      int     `json:"message_burst,omitempty"`
	BytesPerSecond    float64 `json:"bytes_per_second,omitempty"`
	ByteBurst         int     `json:"byte_burst,omitempty"`
}

// UserStatus is the state of an owner account.
type UserStatus string

// User states.
const (
	UserActive   UserStatus = "active"
	UserDisabled UserStatus = "disabled"
)

// User is an owner account, as far as a gateway needs to know it.
type User struct {
	ID     string     `json:"id"`
	Name   string     `json:"name,omitempty"`
	Status UserStatus `json:"status"`
	// Manager is the owner who manages this account (a household member):
	// it has only the shares it is given, and its manager can remove it.
	Manager string `json:"manager,omitempty"`
	// Site is the user's home site (their gateway's); with the sites of
	// the devices they own, where the record is synced (sites.go).
	Site string `json:"site,omitempty"`
	Rev  uint64 `json:"rev,omitempty"`
}

// Grant is an owner's share of some of their devices' topic groups with
// another party: a registered user, a household member or a registered
// client (UMA 2.0; shares.go has its conditions). The gateway reads it each
// time it decides for a requesting party's token (RPT), so an edit or a
// delete applies to live sessions at once.
type Grant struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	// Device is the device the share was made from (pages list it there);
	// Resources may name more of the owner's devices (a room).
	Device string `json:"device"`
	// Grantee is a user id (GranteeKind user) or a client id (client: a
	// service or app registered as a device of a class of its own).
	Grantee     string      `json:"grantee"`
	GranteeKind GranteeKind `json:"grantee_kind"`
	// Resources are the shared topic groups and, for each, the scopes.
	Resources []SharedResource `json:"resources"`
	// Expires is when the share ends; zero means it lasts until revoked.
	Expires time.Time `json:"expires,omitzero"`
	// Window, when set, limits the share to a daily time window in the
	// gateway's time zone.
	Window  *Window   `json:"window,omitempty"`
	Created time.Time `json:"created,omitzero"`
	Rev     uint64    `json:"rev,omitempty"`
}

// Issuer is a token issuer the gateway trusts and its public keys.
type Issuer struct {
	// Issuer is the exact `iss` value of its tokens.
	Issuer string `json:"issuer"`
	// JWKS is the issuer's public key set (RFC 7517). Every key needs kid and alg.
	JWKS JWKS   `json:"jwks"`
	Rev  uint64 `json:"rev,omitempty"`
}

// RevocationKind says what a revocation applies to.
type RevocationKind string

// Revocation kinds.
const (
	// RevokeToken revokes one token by its jti.
	RevokeToken RevocationKind = "jti"
	// RevokeDevice revokes every token whose client_id is the device, issued at or before RevokedAt.
	RevokeDevice RevocationKind = "device"
	// RevokeSubject revokes every token whose sub is the subject, issued at or before RevokedAt.
	RevokeSubject RevocationKind = "subject"
)

// Revocation refuses tokens. It is kept until every token it could apply to
// has expired (ExpiresAt), then dropped by TTL, as RFC 9770 suggests.
type Revocation struct {
	Kind  RevocationKind `json:"kind"`
	Value string         `json:"value"`
	// RevokedAt: for device and subject revocations, tokens issued (iat) at or
	// before this instant are refused; tokens issued later are not.
	RevokedAt time.Time `json:"revoked_at"`
	// ExpiresAt is when the entry may be forgotten; zero means never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

// Key returns the storage key suffix identifying the revocation.
func (r Revocation) Key() string { return string(r.Kind) + "/" + r.Value }

// Cursor is the sync position of this gateway at the authority.
type Cursor struct {
	Epoch    string    `json:"epoch"`
	Seq      uint64    `json:"seq"`
	SyncedAt time.Time `json:"synced_at"`
	// SnapshotIssued is the iat of the last snapshot applied: an older one,
	// from any epoch, is a replay and is refused.
	SnapshotIssued int64 `json:"snapshot_issued,omitempty"`
}

// JWKS is a JSON Web Key Set kept as the issuer published it.
type JWKS = json.RawMessage
