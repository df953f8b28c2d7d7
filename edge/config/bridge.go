package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/edgeid/edgeid/policy"
)

// Bridge configures the outbound bridges to cloud MQTT brokers: each remote
// is one connection the gateway opens under its own identity, carrying the
// topics its rules name, out to the cloud and in from it.
type Bridge struct {
	Remotes []Remote    `mapstructure:"remotes"`
	Queue   BridgeQueue `mapstructure:"queue"`
}

// BridgeQueue bounds and tunes what waits for a remote. QoS 1 messages wait
// on disk (one queue per remote under Dir), QoS 0 ones in memory.
type BridgeQueue struct {
	// Dir holds the queues; "" is <state_dir>/bridge.
	Dir string `mapstructure:"dir"`
	// MaxBytes bounds one remote's queue on disk; MaxAge drops what has
	// waited longer. Past MaxBytes, WhenFull says what gives: drop_oldest
	// (the oldest segment of messages goes, counted) or refuse_new (the
	// device's PUBLISH is refused with 0x97, so it keeps the message).
	MaxBytes int64         `mapstructure:"max_bytes"`
	MaxAge   time.Duration `mapstructure:"max_age"`
	WhenFull string        `mapstructure:"when_full"`
	// Sync is when a message is acknowledged to its device: "batch" (the
	// default) once its write is fsynced, so it survives a power cut;
	// "write" once it is written to the kernel, so it survives a crash or
	// SIGKILL of edgeid but not a power cut, and is fsynced every
	// SyncInterval (at least 10 ms). In "batch" the messages that arrive
	// while an fsync runs share the next one (group commit); a SyncInterval
	// above 0 is also the shortest time between two fsyncs, so that more
	// share each (fewer fsyncs, slower PUBACKs).
	Sync         string        `mapstructure:"sync"`
	SyncInterval time.Duration `mapstructure:"sync_interval"`
	// SegmentBytes is the size of one queue file; a file is deleted when
	// the cloud has acknowledged all of it.
	SegmentBytes int64 `mapstructure:"segment_bytes"`
	// MemoryMessages bounds the QoS 0 messages kept in memory per remote
	// while it is away; past it the oldest is dropped.
	MemoryMessages int `mapstructure:"memory_messages"`
}

// Remote is one cloud broker.
type Remote struct {
	// Name names the remote in logs, metrics, `edgeid bridge` and the
	// principal "bridge:<name>".
	Name string `mapstructure:"name"`
	// Address is mqtts://host:port (or mqtt://host:port on a trusted link).
	Address string `mapstructure:"address"`
	// Protocol is "5" (MQTT 5, the default) or "3.1.1".
	Protocol string `mapstructure:"protocol"`
	// CA is the PEM bundle the remote's certificate must chain to; "" is the
	// system's roots. ServerName overrides the name checked (default: the
	// address's host).
	CA         string `mapstructure:"ca"`
	ServerName string `mapstructure:"server_name"`
	// Cert is the gateway's client certificate (PEM) at the remote, Key its
	// private key (PEM); Key "" uses the gateway's enrolled key, whose public
	// key the certificate must hold. Both "" connects without one.
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
	// Username and PasswordFile, for clouds that take them (the password is
	// read from the file, never from this one).
	Username     string `mapstructure:"username"`
	PasswordFile string `mapstructure:"password_file"`
	// ClientID at the remote; "" is the gateway id.
	ClientID  string        `mapstructure:"client_id"`
	KeepAlive time.Duration `mapstructure:"keepalive"`
	// SessionExpiry keeps the gateway's session at the remote across short
	// outages, so that commands sent meanwhile are kept for it (3.1.1: a
	// non-zero value is clean_session=0).
	SessionExpiry time.Duration `mapstructure:"session_expiry"`
	// Class names the device class record whose permissions bound the
	// bridge principal: publish for what comes in, subscribe for what goes
	// out. Its templates are expanded with {client} = "bridge:<name>".
	Class string       `mapstructure:"class"`
	Rules []BridgeRule `mapstructure:"rules"`
}

// BridgeRule carries one filter in one direction.
type BridgeRule struct {
	// Filter is a local topic filter.
	Filter string `mapstructure:"filter"`
	// Direction is "out" (local to cloud) or "in" (cloud to local).
	Direction string `mapstructure:"direction"`
	// RemotePrefix is put before the local topic at the remote; {gateway}
	// is the gateway id. Default "gateways/{gateway}/".
	RemotePrefix string `mapstructure:"remote_prefix"`
	// QoS is the highest QoS used at the remote, 0 or 1.
	QoS byte `mapstructure:"qos"`
	// DeviceInTopic (out only) puts the publishing device's id after the
	// prefix: gateways/gw-1/<device>/<topic>. The id always travels as the
	// MQTT 5 user property "edgeid-device".
	DeviceInTopic bool `mapstructure:"device_in_topic"`
}

// DefaultRemotePrefix is a rule's remote_prefix when it sets none.
const DefaultRemotePrefix = "gateways/{gateway}/"

func defaultBridgeQueue() BridgeQueue {
	return BridgeQueue{MaxBytes: 64 << 20, MaxAge: 7 * 24 * time.Hour, WhenFull: "drop_oldest", Sync: "batch",
		SyncInterval: 0, SegmentBytes: 1 << 20, MemoryMessages: 1000}
}

// WithDefaults fills what a remote or rule leaves unset: viper's defaults do
// not reach into list items.
func (b Bridge) WithDefaults(gateway string) Bridge {
	out := b
	if len(b.Remotes) == 0 {
		out.Remotes = nil // "remotes: []" is no remotes, as the default
		return out
	}
	out.Remotes = make([]Remote, len(b.Remotes))
	for i, r := range b.Remotes {
		if r.Protocol == "" {
			r.Protocol = "5"
		}
		if r.ClientID == "" {
			r.ClientID = gateway
		}
		if r.KeepAlive == 0 {
			r.KeepAlive = 60 * time.Second
		}
		if r.Class == "" {
			r.Class = "bridge"
		}
		rules := make([]BridgeRule, len(r.Rules))
		for j, ru := range r.Rules {
			if ru.RemotePrefix == "" {
				ru.RemotePrefix = DefaultRemotePrefix
			}
			ru.RemotePrefix = strings.ReplaceAll(ru.RemotePrefix, "{gateway}", gateway)
			rules[j] = ru
		}
		r.Rules = rules
		out.Remotes[i] = r
	}
	return out
}

func (b Bridge) validate(bad func(key, format string, args ...any)) {
	q := b.Queue
	if q.MaxBytes < 4*q.SegmentBytes {
		bad("bridge.queue.max_bytes", "%d must be at least 4 × bridge.queue.segment_bytes (%d)", q.MaxBytes, q.SegmentBytes)
	}
	if q.SegmentBytes < 64<<10 || q.SegmentBytes > 64<<20 {
		bad("bridge.queue.segment_bytes", "%d is outside 65536..67108864", q.SegmentBytes)
	}
	if q.MaxAge < time.Minute {
		bad("bridge.queue.max_age", "%s is shorter than 1m", q.MaxAge)
	}
	if q.WhenFull != "drop_oldest" && q.WhenFull != "refuse_new" {
		bad("bridge.queue.when_full", "%q is not one of drop_oldest, refuse_new", q.WhenFull)
	}
	if q.Sync != "batch" && q.Sync != "write" {
		bad("bridge.queue.sync", "%q is not one of batch (fsync before the device's PUBACK), write", q.Sync)
	}
	if q.SyncInterval < 0 || q.SyncInterval > 10*time.Second {
		bad("bridge.queue.sync_interval", "%s is outside 0..10s", q.SyncInterval)
	}
	if q.MemoryMessages < 0 {
		bad("bridge.queue.memory_messages", "%d must not be negative", q.MemoryMessages)
	}
	names := map[string]bool{}
	for i, r := range b.Remotes {
		key := fmt.Sprintf("bridge.remotes[%d]", i)
		if r.Name == "" || strings.ContainsAny(r.Name, "/\\ .:") {
			bad(key+".name", "%q must be a non-empty name without '/', '\\', '.', ':' or spaces (it names a directory)", r.Name)
		} else if names[r.Name] {
			bad(key+".name", "%q names two remotes", r.Name)
		}
		names[r.Name] = true
		u, err := url.Parse(r.Address)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "mqtts" && u.Scheme != "mqtt"):
			bad(key+".address", "%q is not mqtts://host:port (or mqtt://host:port)", r.Address)
		case u.Port() == "":
			bad(key+".address", "%q has no port (8883 for mqtts)", r.Address)
		}
		if r.Protocol != "5" && r.Protocol != "3.1.1" {
			bad(key+".protocol", "%q is not one of 5, 3.1.1", r.Protocol)
		}
		for k, f := range map[string]string{".ca": r.CA, ".cert": r.Cert, ".key": r.Key, ".password_file": r.PasswordFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				bad(key+k, "cannot read %s: %v", f, err)
			}
		}
		if r.Key != "" && r.Cert == "" {
			bad(key+".cert", "is empty while .key is set; give the client certificate for the key")
		}
		if r.KeepAlive < 5*time.Second || r.KeepAlive > 18*time.Hour {
			bad(key+".keepalive", "%s is outside 5s..18h", r.KeepAlive)
		}
		if r.SessionExpiry < 0 {
			bad(key+".session_expiry", "%s must not be negative", r.SessionExpiry)
		}
		if len(r.Rules) == 0 {
			bad(key+".rules", "is empty; give at least one rule (filter, direction)")
		}
		for j, ru := range r.Rules {
			rk := fmt.Sprintf("%s.rules[%d]", key, j)
			if err := policy.ValidFilter(ru.Filter); err != nil {
				bad(rk+".filter", "%v", err)
			}
			if ru.Direction != "out" && ru.Direction != "in" {
				bad(rk+".direction", "%q is not one of out, in", ru.Direction)
			}
			if ru.QoS > 1 {
				bad(rk+".qos", "%d: the bridge carries QoS 0 or 1", ru.QoS)
			}
			if strings.ContainsAny(ru.RemotePrefix, "+#") {
				bad(rk+".remote_prefix", "%q must not hold wildcards", ru.RemotePrefix)
			}
			if ru.DeviceInTopic && ru.Direction == "in" {
				bad(rk+".device_in_topic", "applies to out rules only")
			}
		}
	}
}
