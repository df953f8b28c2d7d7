// Package config is the gateway's configuration: one typed tree with its
// defaults in one place, loaded from /etc/edgeid/edgeid.yaml, EDGEID_*
// environment variables and flags (viper), and validated as a whole so that a
// bad key stops start-up with its name rather than failing at 3 a.m.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// DefaultPath is where the packaged gateway reads its configuration.
const DefaultPath = "/etc/edgeid/edgeid.yaml"

// Config is the whole gateway configuration.
type Config struct {
	Gateway Gateway `mapstructure:"gateway"`
	// StateDir holds the Badger store.
	StateDir string   `mapstructure:"state_dir"`
	Log      Log      `mapstructure:"log"`
	MQTT     MQTT     `mapstructure:"mqtt"`
	Auth     Auth     `mapstructure:"auth"`
	Admin    Admin    `mapstructure:"admin"`
	Sync     Sync     `mapstructure:"sync"`
	Metrics  Metrics  `mapstructure:"metrics"`
	HW       HW       `mapstructure:"hw"`
	Throttle Throttle `mapstructure:"throttle"`
	Pairing  Pairing  `mapstructure:"pairing"`
	CoAP     CoAP     `mapstructure:"coap"`
	Bridge   Bridge   `mapstructure:"bridge"`
	HTTP     HTTP     `mapstructure:"http"`
}

// CoAP configures the CoAP (RFC 7252) front end: devices publish and observe
// the MQTT topic space under /ps/<topic> over DTLS (with a pre-shared key or
// a certificate) or over plain UDP (with a proof of possession per request).
type CoAP struct {
	// DTLSListen is the coaps:// (DTLS 1.2) UDP address; "" for none. The
	// IANA port is 5684.
	DTLSListen string `mapstructure:"dtls_listen"`
	// UDPListen is the plain coap:// address; "" (the default) for none. The
	// IANA port is 5683. It only takes requests that prove possession of a
	// key-bound token (see docs/ARCHITECTURE.md); CoAP is off when both
	// addresses are "".
	UDPListen string `mapstructure:"udp_listen"`
	// IdleTimeout closes a DTLS session without observations after this long
	// without a message; sessions holding observations are kept for
	// ObserveIdleTimeout (go-coap's own default would drop them after 16 s).
	IdleTimeout        time.Duration `mapstructure:"idle_timeout"`
	ObserveIdleTimeout time.Duration `mapstructure:"observe_idle_timeout"`
	// MaxObservations caps the observations one device may hold at once.
	MaxObservations int `mapstructure:"max_observations"`
	// BlockBudget bounds, in bytes, the bodies of all block-wise (Block1)
	// uploads in progress over the gateway (5.03 past it); BlockTimeout
	// drops an upload not finished this long after its first block.
	BlockBudget  int64         `mapstructure:"block_budget"`
	BlockTimeout time.Duration `mapstructure:"block_timeout"`
}

// Enabled reports whether any CoAP listener is configured.
func (c CoAP) Enabled() bool { return c.DTLSListen != "" || c.UDPListen != "" }

// HW names the board's GPIO pins (periph names, e.g. GPIO17); empty means
// not fitted. Without GPIO the gateway runs with them off.
type HW struct {
	LEDPin    string        `mapstructure:"led_pin"`
	ButtonPin string        `mapstructure:"button_pin"`
	LongPress time.Duration `mapstructure:"long_press"`
}

// Throttle configures PUBLISH rate limits.
type Throttle struct {
	// Device limits each device; Subject limits each token subject (an owner
	// or service) across all the devices acting for it; Class limits all the
	// devices of one class together. A class record's own limits replace
	// Device and Class for its devices.
	Device  Rates `mapstructure:"device"`
	Subject Rates `mapstructure:"subject"`
	Class   Rates `mapstructure:"class"`
	// Persist is how many refusals in a row end the session with 0x96.
	Persist int `mapstructure:"persist"`
}

// Rates are a message rate and a byte rate, each with a burst; 0 is unlimited.
type Rates struct {
	MessagesPerSecond float64 `mapstructure:"messages_per_second"`
	MessageBurst      int     `mapstructure:"message_burst"`
	BytesPerSecond    float64 `mapstructure:"bytes_per_second"`
	ByteBurst         int     `mapstructure:"byte_burst"`
}

// Pairing configures the pairing window a press of the pair button opens.
type Pairing struct {
	Window time.Duration `mapstructure:"window"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is the address of /metrics; "" turns it off. Keep it on
	// localhost unless the network in between is trusted.
	Listen string `mapstructure:"listen"`
}

// Sync configures the link to the cloud authority.
type Sync struct {
	// Enrollment is the file `edgeid enroll` writes; empty means
	// <state_dir>/enrollment.json. Without it the gateway runs on imports alone.
	Enrollment string `mapstructure:"enrollment"`
	// MaxStaleness refuses new token connects once the authority has not been
	// heard from for this long; 0 (the default) keeps deciding from the store
	// however long the uplink is down.
	MaxStaleness time.Duration `mapstructure:"max_staleness"`
	// PresenceInterval is how often the gateway tells the authority which
	// devices are connected (shown as "last seen" to owners).
	PresenceInterval time.Duration `mapstructure:"presence_interval"`
}

// Gateway identifies this gateway.
type Gateway struct {
	// ID names the gateway in logs and, later, at the authority.
	ID string `mapstructure:"id"`
	// TimeZone is the IANA time zone (Europe/Paris) in which shares'
	// daily windows are read; "" is the system's local time zone (TZ,
	// /etc/localtime).
	TimeZone string `mapstructure:"time_zone"`
	// GCPercent is the Go collector's GOGC for the daemon: how much garbage
	// may pile up, in percent of the live heap, before a collection. Go's
	// 100 ships: lower values save a few MiB of idle sessions for a sixth
	// of the delivered msg/s (docs/BENCHMARKS.md), a board short of memory's
	// choice. GOGC in the environment, as for any Go program, wins over it.
	GCPercent int `mapstructure:"gc_percent"`
}

// Location is the time zone of gateway.time_zone (time.Local for "").
func (g Gateway) Location() (*time.Location, error) {
	if g.TimeZone == "" {
		return time.Local, nil
	}
	return time.LoadLocation(g.TimeZone)
}

// Log configures log/slog output.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text or json (journald is used by itself under systemd).
	Format string `mapstructure:"format"`
}

// MQTT configures the broker's listeners.
type MQTT struct {
	// TCP is the plain MQTT listen address; empty turns it off.
	TCP string `mapstructure:"tcp"`
	TLS TLS    `mapstructure:"tls"`
	// ConnectTimeout bounds the TLS handshake and the CONNECT packet of a new
	// connection, so idle sockets cannot hold goroutines.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	// MaxPacketSize caps an MQTT packet in bytes.
	MaxPacketSize uint32 `mapstructure:"max_packet_size"`
	// MaxClients caps concurrent sessions.
	MaxClients int64 `mapstructure:"max_clients"`
	// MaxPendingWrites is how many messages may wait to be written to one
	// client, MaxPendingBytes how much memory they may hold (each message
	// counts its payload, topic and properties and the ~800 bytes of its
	// packet structure; 0 is no byte bound). Past either, a QoS 0 message to
	// that client is dropped (counted in
	// edgeid_mqtt_dropped_total{reason="slow_subscriber"}); QoS 1 and 2
	// messages, bounded by the client's Receive Maximum, are refused only by
	// the count (and then not delivered either, as in mochi). The queue is
	// allocated as messages wait and released when written, so an idle
	// client costs nothing for either bound.
	MaxPendingWrites int32 `mapstructure:"max_pending_writes"`
	MaxPendingBytes  int64 `mapstructure:"max_pending_bytes"`

	// ConnectRate is the CONNECTs per second allowed from one source address
	// (0 turns the limit off); ConnectBurst is how many may come at once.
	ConnectRate  float64 `mapstructure:"connect_rate"`
	ConnectBurst int     `mapstructure:"connect_burst"`

	// MaxConnectSize caps the CONNECT packet (its declared remaining
	// length) before any of it is read: mochi would allocate the declared
	// length up front, so unauthenticated sockets could hold max_packet_size
	// each. A CONNECT holds a client id, a token and a Will: tens of KiB.
	MaxConnectSize uint32 `mapstructure:"max_connect_size"`
	// MaxHalfOpen caps connections that have not yet sent a whole CONNECT,
	// gateway-wide; MaxHalfOpenPerSource caps them per source address.
	// Past either, a new connection is closed at once.
	MaxHalfOpen          int `mapstructure:"max_half_open"`
	MaxHalfOpenPerSource int `mapstructure:"max_half_open_per_source"`
	// ReceiveMaximum is how many QoS 1 and 2 PUBLISHes one client may have
	// unacknowledged towards the gateway (advertised in CONNACK); it bounds
	// what unreleased QoS 2 messages can hold per client. MaxInflightQoS2 caps
	// them over the whole gateway: past it a QoS 2 PUBLISH is answered
	// PUBREC 0x97 (quota exceeded).
	ReceiveMaximum  uint16 `mapstructure:"receive_maximum"`
	MaxInflightQoS2 int64  `mapstructure:"max_inflight_qos2"`
	// OfflineQueue bounds what is queued for a persistent session
	// (clean_start=0, session expiry > 0) while its device is away.
	OfflineQueue OfflineQueue `mapstructure:"offline_queue"`
}

// OfflineQueue bounds the QoS 1 and 2 messages kept for one disconnected
// persistent session; past either bound the oldest is dropped (logged and
// counted in edgeid_offline_dropped_total).
type OfflineQueue struct {
	Messages int   `mapstructure:"messages"`
	Bytes    int64 `mapstructure:"bytes"`
}

// TLS configures the MQTT-over-TLS listener.
type TLS struct {
	// Listen is the address; empty turns TLS off.
	Listen string `mapstructure:"listen"`
	// Cert and Key are PEM files of the gateway's server certificate. Both
	// empty: the gateway makes a self-signed certificate on first start, keeps
	// it under state_dir/tls, and logs its fingerprint for devices to pin.
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
	// ClientCA is a PEM bundle of CAs whose client certificates are mapped to
	// devices by issuer and serial. Certificates registered by fingerprint need no CA.
	ClientCA string `mapstructure:"client_ca"`
}

// Auth configures token validation.
type Auth struct {
	// Audiences: a token's aud must contain one of these.
	Audiences []string `mapstructure:"audiences"`
	// ClockSkew tolerates an issuer whose clock is ahead of the gateway's:
	// it is the leeway applied to nbf and iat, never to exp.
	ClockSkew time.Duration `mapstructure:"clock_skew"`
	// ExpLeeway is how long past its exp a token is still taken (and its
	// session kept); 0, the default, ends a session at exp by the gateway's clock.
	ExpLeeway time.Duration `mapstructure:"exp_leeway"`
	// MaxTokenLifetime refuses tokens whose exp - iat is longer; it also
	// bounds how long device and subject revocations must be kept.
	MaxTokenLifetime time.Duration `mapstructure:"max_token_lifetime"`
	// MaxTokenSize refuses larger tokens before any parsing.
	MaxTokenSize int `mapstructure:"max_token_size"`
	// TokenCacheSize bounds the number of verified tokens kept.
	TokenCacheSize int `mapstructure:"token_cache_size"`
}

// Admin configures the technician's local API.
type Admin struct {
	// Socket is the unix socket path of the admin API.
	Socket string `mapstructure:"socket"`
	// Group may use the socket besides root: read and write (kick, import,
	// sync, pair).
	Group string `mapstructure:"group"`
	// ReadGroup may only read (status, sessions, devices, revocations).
	ReadGroup string `mapstructure:"read_group"`
}

// Default returns the configuration used when a key is not set.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Gateway:  Gateway{ID: host, GCPercent: 100},
		StateDir: "/var/lib/edgeid",
		Log:      Log{Level: "info", Format: "text"},
		MQTT: MQTT{
			TCP:              ":1883",
			TLS:              TLS{Listen: ":8883"},
			ConnectTimeout:   10 * time.Second,
			MaxPacketSize:    256 << 10,
			MaxClients:       20000,
			MaxPendingWrites: 65536,
			MaxPendingBytes:  16 << 20,
			ConnectRate:      5,
			ConnectBurst:     20,

			MaxConnectSize:       32 << 10,
			MaxHalfOpen:          512,
			MaxHalfOpenPerSource: 16,
			ReceiveMaximum:       32,
			MaxInflightQoS2:      4096,
			OfflineQueue:         OfflineQueue{Messages: 1000, Bytes: 1 << 20},
		},
		Auth: Auth{
			Audiences:        []string{"edgeid"},
			ClockSkew:        30 * time.Second,
			MaxTokenLifetime: 24 * time.Hour,
			MaxTokenSize:     8 << 10,
			TokenCacheSize:   20000,
		},
		Admin:   Admin{Socket: "/run/edgeid/admin.sock", Group: "edgeid", ReadGroup: "edgeid-view"},
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		HW:      HW{LongPress: 3 * time.Second},
		Sync:    Sync{PresenceInterval: 30 * time.Second},
		Throttle: Throttle{
			Device:  Rates{MessagesPerSecond: 50, MessageBurst: 200, BytesPerSecond: 256 << 10, ByteBurst: 1 << 20},
			Subject: Rates{MessagesPerSecond: 500, MessageBurst: 2000, BytesPerSecond: 2 << 20, ByteBurst: 8 << 20},
			Persist: 100,
		},
		Pairing: Pairing{Window: 5 * time.Minute},
		CoAP: CoAP{IdleTimeout: 5 * time.Minute, ObserveIdleTimeout: 24 * time.Hour, MaxObservations: 16,
			BlockBudget: 8 << 20, BlockTimeout: 2 * time.Minute},
		Bridge: Bridge{Queue: defaultBridgeQueue()},
		HTTP:   defaultHTTP(),
	}
}

// Load reads the file at path (if path is empty, DefaultPath when it exists),
// then EDGEID_* environment variables (EDGEID_MQTT_TCP for mqtt.tcp), over the
// defaults, and validates the result. v may carry flags already bound to keys.
func Load(v *viper.Viper, path string) (Config, error) {
	if v == nil {
		v = viper.New()
	}
	def := Default()
	setDefaults(v, def)
	v.SetEnvPrefix("EDGEID")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path == "" {
		if _, err := os.Stat(DefaultPath); err == nil {
			path = DefaultPath
		}
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	var c Config
	err := v.UnmarshalExact(&c, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w (see configs/edgeid.yaml for every key)", orDefaults(path), err)
	}
	c.Bridge = c.Bridge.WithDefaults(c.Gateway.ID)
	if len(c.HTTP.Routes) == 0 {
		c.HTTP.Routes = nil // "routes: []" is no routes, as the default
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", orDefaults(path), err)
	}
	return c, nil
}

func orDefaults(path string) string {
	if path == "" {
		return "(defaults and environment)"
	}
	return path
}

// setDefaults registers every key so that environment variables and
// UnmarshalExact see the whole tree.
func setDefaults(v *viper.Viper, c Config) {
	m := map[string]any{}
	if err := mapstructure.Decode(c, &m); err != nil {
		panic(err)
	}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			key := prefix + k
			if sub, ok := val.(map[string]any); ok {
				walk(key+".", sub)
				continue
			}
			if !v.IsSet(key) { // a caller's default (the demo's) wins over ours
				v.SetDefault(key, val)
			}
		}
	}
	walk("", m)
}

// Validate checks every key and reports all problems, each naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Gateway.ID == "" {
		bad("gateway.id", "is empty; name this gateway (for example its board serial)")
	}
	if _, err := c.Gateway.Location(); err != nil {
		bad("gateway.time_zone", "%q is not a time zone this system knows (an IANA name such as Europe/Paris, or \"\" for the system's): %v", c.Gateway.TimeZone, err)
	}
	if c.Gateway.GCPercent < 10 || c.Gateway.GCPercent > 1000 {
		bad("gateway.gc_percent", "%d is out of range; give 10 to 1000 (the Go collector's GOGC: lower keeps less garbage resident and collects more often; default 100)", c.Gateway.GCPercent)
	}
	if c.StateDir == "" {
		bad("state_dir", "is empty; give a writable directory for the store (default /var/lib/edgeid)")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	checkAddr := func(key, addr string) {
		if addr == "" {
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad(key, "%q is not host:port (for example :1883 or 127.0.0.1:1883)", addr)
		}
	}
	checkAddr("mqtt.tcp", c.MQTT.TCP)
	checkAddr("mqtt.tls.listen", c.MQTT.TLS.Listen)
	checkAddr("metrics.listen", c.Metrics.Listen)
	if c.MQTT.TCP == "" && c.MQTT.TLS.Listen == "" {
		bad("mqtt", "both mqtt.tcp and mqtt.tls.listen are empty; devices could not connect")
	}
	if c.MQTT.TLS.Listen != "" {
		if (c.MQTT.TLS.Cert == "") != (c.MQTT.TLS.Key == "") {
			bad("mqtt.tls.key", "set mqtt.tls.cert and mqtt.tls.key together, or neither for a self-signed certificate")
		}
		for key, f := range map[string]string{"mqtt.tls.cert": c.MQTT.TLS.Cert, "mqtt.tls.key": c.MQTT.TLS.Key, "mqtt.tls.client_ca": c.MQTT.TLS.ClientCA} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				bad(key, "cannot read %s: %v", f, errors.Unwrap(err))
			}
		}
	}
	if c.MQTT.ConnectTimeout < time.Second || c.MQTT.ConnectTimeout > 5*time.Minute {
		bad("mqtt.connect_timeout", "%s is outside 1s..5m", c.MQTT.ConnectTimeout)
	}
	if c.MQTT.MaxPacketSize < 1024 || c.MQTT.MaxPacketSize > 256<<20 {
		bad("mqtt.max_packet_size", "%d is outside 1024..268435456 bytes", c.MQTT.MaxPacketSize)
	}
	if c.MQTT.MaxClients < 1 {
		bad("mqtt.max_clients", "%d must be at least 1", c.MQTT.MaxClients)
	}
	if c.MQTT.MaxPendingWrites < 16 || c.MQTT.MaxPendingWrites > 65536 {
		bad("mqtt.max_pending_writes", "%d is outside 16..65536", c.MQTT.MaxPendingWrites)
	}
	if c.MQTT.MaxPendingBytes != 0 && (c.MQTT.MaxPendingBytes < 16<<10 || c.MQTT.MaxPendingBytes > 1<<30) {
		bad("mqtt.max_pending_bytes", "%d is outside 16384..1073741824 bytes (0 turns the byte bound off)", c.MQTT.MaxPendingBytes)
	}
	if c.MQTT.ConnectRate < 0 {
		bad("mqtt.connect_rate", "%g must not be negative (0 turns the limit off)", c.MQTT.ConnectRate)
	}
	if c.MQTT.ConnectRate > 0 && c.MQTT.ConnectBurst < 1 {
		bad("mqtt.connect_burst", "%d must be at least 1 when mqtt.connect_rate is set", c.MQTT.ConnectBurst)
	}
	if c.MQTT.MaxConnectSize < 256 || c.MQTT.MaxConnectSize > c.MQTT.MaxPacketSize {
		bad("mqtt.max_connect_size", "%d is outside 256..mqtt.max_packet_size (%d) bytes", c.MQTT.MaxConnectSize, c.MQTT.MaxPacketSize)
	}
	if c.MQTT.MaxHalfOpen < 1 {
		bad("mqtt.max_half_open", "%d must be at least 1", c.MQTT.MaxHalfOpen)
	}
	if c.MQTT.MaxHalfOpenPerSource < 1 || c.MQTT.MaxHalfOpenPerSource > c.MQTT.MaxHalfOpen {
		bad("mqtt.max_half_open_per_source", "%d is outside 1..mqtt.max_half_open (%d)", c.MQTT.MaxHalfOpenPerSource, c.MQTT.MaxHalfOpen)
	}
	if c.MQTT.ReceiveMaximum < 1 {
		bad("mqtt.receive_maximum", "%d must be at least 1 (MQTT 5 forbids 0)", c.MQTT.ReceiveMaximum)
	}
	if c.MQTT.MaxInflightQoS2 < 1 {
		bad("mqtt.max_inflight_qos2", "%d must be at least 1", c.MQTT.MaxInflightQoS2)
	}
	if c.MQTT.OfflineQueue.Messages < 0 || c.MQTT.OfflineQueue.Bytes < 0 {
		bad("mqtt.offline_queue", "messages and bytes must not be negative (0 keeps nothing for a device that is away)")
	}
	if len(c.Auth.Audiences) == 0 {
		bad("auth.audiences", "is empty; tokens must name this gateway in aud")
	}
	for i, a := range c.Auth.Audiences {
		if strings.TrimSpace(a) == "" {
			bad(fmt.Sprintf("auth.audiences[%d]", i), "is empty")
		}
	}
	if c.Auth.ClockSkew < 0 || c.Auth.ClockSkew > 10*time.Minute {
		bad("auth.clock_skew", "%s is outside 0..10m", c.Auth.ClockSkew)
	}
	if c.Auth.ExpLeeway < 0 || c.Auth.ExpLeeway > 10*time.Minute {
		bad("auth.exp_leeway", "%s is outside 0..10m", c.Auth.ExpLeeway)
	}
	if c.Auth.MaxTokenLifetime < time.Minute || c.Auth.MaxTokenLifetime > 30*24*time.Hour {
		bad("auth.max_token_lifetime", "%s is outside 1m..720h", c.Auth.MaxTokenLifetime)
	}
	if c.Auth.MaxTokenSize < 256 || c.Auth.MaxTokenSize > 64<<10 {
		bad("auth.max_token_size", "%d is outside 256..65536 bytes", c.Auth.MaxTokenSize)
	}
	if c.Auth.TokenCacheSize < 0 {
		bad("auth.token_cache_size", "%d must not be negative (0 turns the cache off)", c.Auth.TokenCacheSize)
	}
	for key, r := range map[string]Rates{"throttle.device": c.Throttle.Device, "throttle.subject": c.Throttle.Subject, "throttle.class": c.Throttle.Class} {
		if r.MessagesPerSecond < 0 || r.BytesPerSecond < 0 {
			bad(key, "rates must not be negative (0 is unlimited)")
		}
		if r.MessagesPerSecond > 0 && r.MessageBurst < 1 {
			bad(key+".message_burst", "must be at least 1 when messages_per_second is set")
		}
		if r.BytesPerSecond > 0 && r.ByteBurst < 1 {
			bad(key+".byte_burst", "must be at least 1 when bytes_per_second is set")
		}
	}
	if c.Throttle.Persist < 0 {
		bad("throttle.persist", "%d must not be negative (0: never disconnect)", c.Throttle.Persist)
	}
	if c.HW.LongPress < 500*time.Millisecond || c.HW.LongPress > time.Minute {
		bad("hw.long_press", "%s is outside 500ms..1m", c.HW.LongPress)
	}
	if c.Pairing.Window < 10*time.Second || c.Pairing.Window > time.Hour {
		bad("pairing.window", "%s is outside 10s..1h", c.Pairing.Window)
	}
	if c.Sync.PresenceInterval < time.Second || c.Sync.PresenceInterval > time.Hour {
		bad("sync.presence_interval", "%s is outside 1s..1h", c.Sync.PresenceInterval)
	}
	if c.Sync.MaxStaleness < 0 {
		bad("sync.max_staleness", "%s must not be negative (0 turns it off)", c.Sync.MaxStaleness)
	}
	// --- CoAP ---
	checkAddr("coap.dtls_listen", c.CoAP.DTLSListen)
	checkAddr("coap.udp_listen", c.CoAP.UDPListen)
	if c.CoAP.UDPListen != "" && c.CoAP.UDPListen == c.CoAP.DTLSListen && !strings.HasSuffix(c.CoAP.UDPListen, ":0") {
		bad("coap.udp_listen", "%s is also coap.dtls_listen: give plain UDP its own port (the IANA one is 5683)", c.CoAP.UDPListen)
	}
	if c.CoAP.IdleTimeout < 10*time.Second || c.CoAP.IdleTimeout > 24*time.Hour {
		bad("coap.idle_timeout", "%s is outside 10s..24h", c.CoAP.IdleTimeout)
	}
	if c.CoAP.ObserveIdleTimeout < c.CoAP.IdleTimeout || c.CoAP.ObserveIdleTimeout > 30*24*time.Hour {
		bad("coap.observe_idle_timeout", "%s is outside coap.idle_timeout..720h", c.CoAP.ObserveIdleTimeout)
	}
	if c.CoAP.MaxObservations < 1 || c.CoAP.MaxObservations > 1024 {
		bad("coap.max_observations", "%d is outside 1..1024", c.CoAP.MaxObservations)
	}
	if c.CoAP.BlockBudget < 64<<10 || c.CoAP.BlockBudget > 1<<30 {
		bad("coap.block_budget", "%d is outside 65536..1073741824 bytes", c.CoAP.BlockBudget)
	}
	if c.CoAP.BlockTimeout < time.Second || c.CoAP.BlockTimeout > time.Hour {
		bad("coap.block_timeout", "%s is outside 1s..1h", c.CoAP.BlockTimeout)
	}
	// --- end CoAP ---
	c.Bridge.WithDefaults(c.Gateway.ID).validate(bad)
	c.HTTP.validate(bad, checkAddr)
	if c.Admin.Socket == "" {
		bad("admin.socket", "is empty; give a unix socket path such as /run/edgeid/admin.sock")
	}
	if c.Admin.ReadGroup != "" && c.Admin.ReadGroup == c.Admin.Group {
		bad("admin.read_group", "%q is also admin.group; give the read-only group its own name such as edgeid-view", c.Admin.ReadGroup)
	}
	return errors.Join(errs...)
}
