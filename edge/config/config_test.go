package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/edge/config"
)

func writeYAML(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgeid.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultValidates(t *testing.T) {
	d := config.Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if d.MQTT.TCP != ":1883" || d.Auth.MaxTokenSize != 8<<10 || !reflect.DeepEqual(d.Auth.Audiences, []string{"edgeid"}) {
		t.Errorf("Default() = %+v, want mqtt.tcp :1883, auth.max_token_size 8192, auth.audiences [edgeid]", d)
	}
}

func TestLoadEmptyFileIsDefault(t *testing.T) {
	p := writeYAML(t, "# nothing set\n")
	c, err := config.Load(nil, p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := config.Default(); !reflect.DeepEqual(c, want) {
		t.Errorf("Load of an empty file = %+v, want Default() %+v", c, want)
	}
}

func TestLoadFileOverridesDefaults(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "server.crt")
	key := filepath.Join(dir, "server.key")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := writeYAML(t, `
gateway:
  id: gw-7
state_dir: /tmp/edgeid-state
log:
  level: debug
  format: json
mqtt:
  tcp: 127.0.0.1:1999
  connect_timeout: 3s
  max_clients: 50
  tls:
    listen: :8883
    cert: `+cert+`
    key: `+key+`
auth:
  audiences: [gw-7, edgeid]
  clock_skew: 5s
  max_token_lifetime: 2h
  max_token_size: 4096
  token_cache_size: 0
`)
	c, err := config.Load(nil, p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := config.Default()
	want.Gateway.ID = "gw-7"
	want.StateDir = "/tmp/edgeid-state"
	want.Log = config.Log{Level: "debug", Format: "json"}
	want.MQTT.TCP = "127.0.0.1:1999"
	want.MQTT.ConnectTimeout = 3 * time.Second
	want.MQTT.MaxClients = 50
	want.MQTT.TLS = config.TLS{Listen: ":8883", Cert: cert, Key: key}
	want.Auth = config.Auth{Audiences: []string{"gw-7", "edgeid"}, ClockSkew: 5 * time.Second, MaxTokenLifetime: 2 * time.Hour, MaxTokenSize: 4096, TokenCacheSize: 0}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load =\n%+v\nwant\n%+v", c, want)
	}
}

func TestEnvOverridesFile(t *testing.T) {
	p := writeYAML(t, "mqtt:\n  tcp: :1999\nlog:\n  level: warn\n")
	t.Setenv("EDGEID_MQTT_TCP", "127.0.0.1:2883")
	t.Setenv("EDGEID_AUTH_AUDIENCES", "a,b")
	t.Setenv("EDGEID_MQTT_CONNECT_TIMEOUT", "7s")
	c, err := config.Load(nil, p)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.MQTT.TCP != "127.0.0.1:2883" {
		t.Errorf("mqtt.tcp = %q, want the environment's 127.0.0.1:2883 over the file's :1999", c.MQTT.TCP)
	}
	if c.Log.Level != "warn" {
		t.Errorf("log.level = %q, want the file's warn", c.Log.Level)
	}
	if !reflect.DeepEqual(c.Auth.Audiences, []string{"a", "b"}) {
		t.Errorf("auth.audiences = %q, want [a b] from EDGEID_AUTH_AUDIENCES", c.Auth.Audiences)
	}
	if c.MQTT.ConnectTimeout != 7*time.Second {
		t.Errorf("mqtt.connect_timeout = %s, want 7s from the environment", c.MQTT.ConnectTimeout)
	}
}

func TestEnvInvalidValueRefused(t *testing.T) {
	p := writeYAML(t, "mqtt:\n  tcp: :1999\n")
	t.Setenv("EDGEID_MQTT_TCP", "nope")
	c, err := config.Load(nil, p)
	if err == nil || !strings.Contains(err.Error(), "mqtt.tcp") {
		t.Fatalf("Load with EDGEID_MQTT_TCP=nope: %v, want an error naming mqtt.tcp", err)
	}
	if !reflect.DeepEqual(c, config.Config{}) {
		t.Errorf("Load returned a config with its error: %+v", c)
	}
}

func TestCallerDefaultsWin(t *testing.T) {
	v := viper.New()
	v.SetDefault("mqtt.tcp", "127.0.0.1:1884")
	c, err := config.Load(v, writeYAML(t, "log:\n  level: error\n"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.MQTT.TCP != "127.0.0.1:1884" || c.Log.Level != "error" {
		t.Errorf("mqtt.tcp = %q, log.level = %q; want the caller's default 127.0.0.1:1884 and the file's error", c.MQTT.TCP, c.Log.Level)
	}
}

func TestLoadRefusesInvalidValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		key  string // the key the error must name
	}{
		{"log level", "log:\n  level: verbose\n", "log.level"},
		{"log format", "log:\n  format: xml\n", "log.format"},
		{"tcp not host:port", "mqtt:\n  tcp: nope\n", "mqtt.tcp"},
		{"tcp without port", "mqtt:\n  tcp: \"127.0.0.1:\"\n", "mqtt.tcp"},
		{"tls listen not host:port", "mqtt:\n  tls:\n    listen: nope\n    cert: /x\n    key: /y\n", "mqtt.tls.listen"},
		{"no listener at all", "mqtt:\n  tcp: \"\"\n  tls:\n    listen: \"\"\n", "mqtt: both mqtt.tcp and mqtt.tls.listen are empty"},
		{"connect timeout zero", "mqtt:\n  connect_timeout: 0s\n", "mqtt.connect_timeout"},
		{"connect timeout too long", "mqtt:\n  connect_timeout: 1h\n", "mqtt.connect_timeout"},
		{"connect timeout not a duration", "mqtt:\n  connect_timeout: soon\n", "mqtt.connect_timeout"},
		{"max packet size", "mqtt:\n  max_packet_size: 10\n", "mqtt.max_packet_size"},
		{"max clients", "mqtt:\n  max_clients: 0\n", "mqtt.max_clients"},
		{"max pending writes", "mqtt:\n  max_pending_writes: 8\n", "mqtt.max_pending_writes"},
		{"max pending bytes too small", "mqtt:\n  max_pending_bytes: 1000\n", "mqtt.max_pending_bytes"},
		{"max pending bytes negative", "mqtt:\n  max_pending_bytes: -1\n", "mqtt.max_pending_bytes"},
		{"max pending bytes too large", "mqtt:\n  max_pending_bytes: 2147483648\n", "mqtt.max_pending_bytes"},
		{"connect rate negative", "mqtt:\n  connect_rate: -1\n", "mqtt.connect_rate"},
		{"connect burst zero with a rate", "mqtt:\n  connect_rate: 2\n  connect_burst: 0\n", "mqtt.connect_burst"},
		{"audiences empty", "auth:\n  audiences: []\n", "auth.audiences"},
		{"audience blank", "auth:\n  audiences: [edgeid, \" \"]\n", "auth.audiences[1]"},
		{"clock skew negative", "auth:\n  clock_skew: -1s\n", "auth.clock_skew"},
		{"clock skew too large", "auth:\n  clock_skew: 11m\n", "auth.clock_skew"},
		{"max token lifetime", "auth:\n  max_token_lifetime: 30s\n", "auth.max_token_lifetime"},
		{"max token size", "auth:\n  max_token_size: 10\n", "auth.max_token_size"},
		{"token cache negative", "auth:\n  token_cache_size: -1\n", "auth.token_cache_size"},
		{"tls cert without key", "mqtt:\n  tls:\n    listen: :8883\n    cert: /x\n", "mqtt.tls.key"},
		{"tls cert missing file", "mqtt:\n  tls:\n    listen: :8883\n    cert: /nonexistent/edgeid.crt\n    key: /nonexistent/edgeid.key\n", "mqtt.tls.cert"},
		{"state dir empty", "state_dir: \"\"\n", "state_dir"},
		{"gateway id empty", "gateway:\n  id: \"\"\n", "gateway.id"},
		{"admin socket empty", "admin:\n  socket: \"\"\n", "admin.socket"},
		{"throttle class burst missing", "throttle:\n  class:\n    messages_per_second: 5\n", "throttle.class.message_burst"},
		{"throttle class negative", "throttle:\n  class:\n    bytes_per_second: -1\n", "throttle.class: rates must not be negative"},
		{"unknown key", "mqtt:\n  tpc: :1883\n", "'mqtt' has invalid keys: tpc"},
		{"unknown top-level key", "loglevel: debug\n", "invalid keys: loglevel"},
		{"not yaml", "mqtt: [\n", "read config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeYAML(t, tt.yaml)
			c, err := config.Load(nil, path)
			if err == nil {
				t.Fatalf("Load accepted:\n%s", tt.yaml)
			}
			// The temporary path holds the test's name: keep it out of the match.
			msg := strings.ReplaceAll(err.Error(), path, "FILE")
			if !strings.Contains(msg, tt.key) {
				t.Errorf("error %q does not name %q", err, tt.key)
			}
			if !reflect.DeepEqual(c, config.Config{}) {
				t.Errorf("Load returned a partly filled config with its error: %+v", c)
			}
		})
	}
}

func TestConnectRateOffNeedsNoBurst(t *testing.T) {
	c, err := config.Load(nil, writeYAML(t, "mqtt:\n  connect_rate: 0\n  connect_burst: 0\n"))
	if err != nil {
		t.Fatalf("connect_rate 0 (limit off) with connect_burst 0 refused: %v", err)
	}
	if c.MQTT.ConnectRate != 0 || c.MQTT.ConnectBurst != 0 {
		t.Errorf("connect_rate %g, connect_burst %d; want 0, 0", c.MQTT.ConnectRate, c.MQTT.ConnectBurst)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := config.Default()
	c.Log.Level = "loud"
	c.MQTT.TCP = "nope"
	c.Auth.Audiences = nil
	c.StateDir = ""
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted four bad keys")
	}
	for _, key := range []string{"log.level: ", "mqtt.tcp: ", "auth.audiences: ", "state_dir: "} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %q", err, key)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(nil, filepath.Join(t.TempDir(), "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("Load of a missing file: %v, want an error naming the file", err)
	}
}

func TestLoadThrottleClass(t *testing.T) {
	c, err := config.Load(nil, writeYAML(t, "throttle:\n  class:\n    messages_per_second: 20\n    message_burst: 40\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (config.Rates{MessagesPerSecond: 20, MessageBurst: 40}); c.Throttle.Class != want {
		t.Errorf("throttle.class = %+v, want %+v", c.Throttle.Class, want)
	}
	if d := config.Default().Throttle.Class; d != (config.Rates{}) {
		t.Errorf("default throttle.class = %+v, want unlimited", d)
	}
}

// configs/edgeid.yaml is the reference for operators: it names every key, and
// loads to exactly the defaults it documents.
func TestSampleConfigDocumentsEveryKey(t *testing.T) {
	const sample = "../../configs/edgeid.yaml"
	v := viper.New()
	v.SetConfigFile(sample)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, k := range v.AllKeys() {
		documented[k] = true
	}
	all := viper.New()
	c, err := config.Load(all, sample)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all.AllKeys() {
		if !documented[k] {
			t.Errorf("key %s is not in %s", k, sample)
		}
	}
	want := config.Default()
	want.Gateway.ID = c.Gateway.ID // the host name by default; the sample names a board
	if !reflect.DeepEqual(c, want) {
		t.Errorf("%s loads to\n%+v\nnot the defaults\n%+v", sample, c, want)
	}
}

func TestCoAPListeners(t *testing.T) {
	for _, c := range []struct {
		dtls, udp string
		want      string // "" valid
	}{
		{"", "", ""},
		{":5684", ":5683", ""},
		{"127.0.0.1:0", "127.0.0.1:0", ""}, // each gets its own free port
		{":5684", ":5684", "coap.udp_listen: :5684 is also coap.dtls_listen"},
		{"", "nope", "coap.udp_listen"},
	} {
		cfg := config.Default()
		cfg.CoAP.DTLSListen, cfg.CoAP.UDPListen = c.dtls, c.udp
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("dtls %q udp %q: %v", c.dtls, c.udp, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("dtls %q udp %q: %v, want an error naming %q", c.dtls, c.udp, err, c.want)
		}
		if enabled := c.dtls != "" || c.udp != ""; cfg.CoAP.Enabled() != enabled {
			t.Errorf("dtls %q udp %q: Enabled() = %v", c.dtls, c.udp, cfg.CoAP.Enabled())
		}
	}
}
