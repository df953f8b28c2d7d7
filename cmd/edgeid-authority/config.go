package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
)

// DefaultConfigPath is where the packaged authority reads its configuration
// (the package's own directory, beside admin.token).
const DefaultConfigPath = "/etc/edgeid-authority/authority.yaml"

// envPrefix names the environment variables of the keys:
// EDGEID_AUTHORITY_TOKEN_TTL for token_ttl, EDGEID_AUTHORITY_LOG_LEVEL for log.level.
const envPrefix = "EDGEID_AUTHORITY"

// envOwn are EDGEID_AUTHORITY_* variables that are not keys: the admin
// token itself, and the extra arguments the systemd unit passes.
var envOwn = map[string]bool{envPrefix + "_ADMIN_TOKEN": true, envPrefix + "_ARGS": true}

// Config is the whole authority configuration: one key per field (the
// mapstructure tag; nested structs are dotted groups), its defaults in
// Default, its checks in Validate. configs/edgeid-authority.yaml shows each key.
type Config struct {
	// Listen is the HTTPS address of the API, the sync feed and the owners' pages.
	Listen string `mapstructure:"listen"`
	// URL is the public base URL and the iss of its tokens; "" is
	// https://localhost:<port of listen>.
	URL string `mapstructure:"url"`
	// StateDir holds the Badger store, the signing keys and the self-signed TLS pair.
	StateDir string `mapstructure:"state_dir"`
	// Storage is where the registry, the change log and the authority's
	// documents live: badger (embedded, under state_dir/store: one
	// process) or postgres (postgres.dsn: any number of replicas).
	Storage  string   `mapstructure:"storage"`
	Postgres Postgres `mapstructure:"postgres"`
	// AdminTokenFile holds the admin API's bearer token; the
	// EDGEID_AUTHORITY_ADMIN_TOKEN variable, when set, is used instead.
	AdminTokenFile string `mapstructure:"admin_token_file"`
	// TLSCert and TLSKey are the server's certificate and key (PEM); both
	// empty: a self-signed pair kept under state_dir/tls.
	TLSCert string `mapstructure:"tls_cert"`
	TLSKey  string `mapstructure:"tls_key"`

	// The rest map onto authority.Config (see its fields).
	TokenAudience       string        `mapstructure:"token_audience"`
	TokenTTL            time.Duration `mapstructure:"token_ttl"`
	MaxTokenLifetime    time.Duration `mapstructure:"max_token_lifetime"`
	EnrollCodeTTL       time.Duration `mapstructure:"enroll_code_ttl"`
	KeyPublishAhead     time.Duration `mapstructure:"key_publish_ahead"`
	PairingCodeTTL      time.Duration `mapstructure:"pairing_code_ttl"`
	PairingPollInterval time.Duration `mapstructure:"pairing_poll_interval"`
	HeartbeatInterval   time.Duration `mapstructure:"heartbeat_interval"`
	UMATicketTTL        time.Duration `mapstructure:"uma_ticket_ttl"`
	// SweepInterval is how often expired refresh tokens, codes, tickets
	// and replay entries are deleted.
	SweepInterval time.Duration `mapstructure:"sweep_interval"`

	Log Log `mapstructure:"log"`
	// Metrics turns the Prometheus endpoint on; it is served at
	// MetricsListen, apart from the public listener.
	Metrics       bool   `mapstructure:"metrics"`
	MetricsListen string `mapstructure:"metrics_listen"`
}

// Postgres is the shared database of storage: postgres.
type Postgres struct {
	// DSN names the database (a postgres:// URL or key=value words). Keep
	// the password out of it: libpq's PGPASSFILE or a client certificate
	// (sslcert, sslkey) are read as usual.
	DSN string `mapstructure:"dsn"`
	// MaxConns is the connection pool's size per process ("" is 16, or
	// the dsn's pool_max_conns).
	MaxConns string `mapstructure:"max_conns"`
}

// Log configures log/slog output.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text or json (on stderr), journald (structured fields), or
	// auto: journald when systemd connected stderr to the journal
	// (JOURNAL_STREAM), else text.
	Format string `mapstructure:"format"`
}

// Default returns the configuration used where a key is not set.
func Default() Config {
	return Config{
		Listen:              ":8443",
		StateDir:            "/var/lib/edgeid-authority",
		Storage:             "badger",
		TokenAudience:       "edgeid",
		TokenTTL:            time.Hour,
		MaxTokenLifetime:    24 * time.Hour,
		EnrollCodeTTL:       24 * time.Hour,
		KeyPublishAhead:     time.Hour,
		PairingCodeTTL:      10 * time.Minute,
		PairingPollInterval: 5 * time.Second,
		HeartbeatInterval:   cloudsync.DefaultHeartbeatInterval,
		UMATicketTTL:        5 * time.Minute,
		SweepInterval:       10 * time.Minute,
		Log:                 Log{Level: "info", Format: "auto"},
		Metrics:             true,
		MetricsListen:       "127.0.0.1:9465",
	}
}

// Authority is the authority.Config this configuration runs; url is the
// public base URL (URL, or the one derived from the listener).
func (c Config) Authority(url string) authority.Config {
	return authority.Config{URL: url, StateDir: c.StateDir, TokenAudience: c.TokenAudience,
		TokenTTL: c.TokenTTL, MaxTokenLifetime: c.MaxTokenLifetime, EnrollCodeTTL: c.EnrollCodeTTL,
		KeyPublishAhead: c.KeyPublishAhead, PairingCodeTTL: c.PairingCodeTTL,
		PairingPollInterval: c.PairingPollInterval, HeartbeatInterval: c.HeartbeatInterval, UMATicketTTL: c.UMATicketTTL,
		SweepInterval: c.SweepInterval}
}

// leaf is one key of the tree and the field that holds it.
type leaf struct {
	key string
	val reflect.Value
}

// leaves lists c's keys in declaration order, each with its (settable) field.
func leaves(c *Config) []leaf {
	var out []leaf
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			key := prefix + t.Field(i).Tag.Get("mapstructure")
			if f := v.Field(i); f.Kind() == reflect.Struct {
				walk(key+".", f)
			} else {
				out = append(out, leaf{key, f})
			}
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

// Keys are every key, dotted (log.level), in declaration order.
func Keys() []string {
	var c Config
	var keys []string
	for _, l := range leaves(&c) {
		keys = append(keys, l.key)
	}
	return keys
}

func envName(key string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func flagName(key string) string { return strings.NewReplacer(".", "-", "_", "-").Replace(key) }

// flagHelp is each key's flag usage.
var flagHelp = map[string]string{
	"listen":                "HTTPS listen address (host:port)",
	"url":                   "public base URL, the iss of its tokens (default https://localhost:<port>)",
	"state_dir":             "state directory (Badger store, keys, TLS)",
	"admin_token_file":      "file holding the admin API bearer token (or EDGEID_AUTHORITY_ADMIN_TOKEN)",
	"storage":               "badger (embedded, one process) or postgres (postgres.dsn, shared by replicas)",
	"postgres.dsn":          "PostgreSQL connection string (URL or key=value; password from PGPASSFILE, not here)",
	"postgres.max_conns":    "connection pool size per process (empty: 16, or the dsn's pool_max_conns)",
	"tls_cert":              "TLS certificate (PEM); empty: a self-signed one kept in the state directory",
	"tls_key":               "TLS key (PEM)",
	"token_audience":        "aud of the device tokens it issues (the gateways' auth.audiences)",
	"token_ttl":             "lifetime of the tokens it issues (at most max-token-lifetime)",
	"max_token_lifetime":    "the gateways' auth.max_token_lifetime (how long revocations are kept)",
	"enroll_code_ttl":       "how long a gateway enrollment code stays valid",
	"key_publish_ahead":     "how long a rotated token key is published before it signs",
	"pairing_code_ttl":      "how long a device's pairing codes live (RFC 8628)",
	"pairing_poll_interval": "the polling interval devices are told while pairing (whole seconds)",
	"heartbeat_interval":    "how often each gateway event stream carries a signed heartbeat",
	"uma_ticket_ttl":        "how long a UMA permission ticket lives (longer while its share request waits)",
	"sweep_interval":        "how often expired refresh tokens, codes, tickets and replay entries are deleted",
	"log.level":             "debug, info, warn or error",
	"log.format":            "auto, text, json or journald",
	"metrics":               "serve Prometheus /metrics at metrics-listen: --metrics=on or --metrics=off",
	"metrics_listen":        "address of /metrics and /healthz, apart from the public listener (host:port)",
}

// configFlags is the flag set of serve and check-config: --config and one
// flag per key (log.level is --log-level). Every flag is a string, decoded
// like the file's value, so a bad one is reported under its key.
func configFlags(name string) (*pflag.FlagSet, *string) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	path := fs.StringP("config", "c", "", "configuration file (default "+DefaultConfigPath+" when it exists)")
	def := Default()
	for _, l := range leaves(&def) {
		typ := "string"
		switch {
		case l.val.Type() == durationType:
			typ = "duration"
		case l.val.Kind() == reflect.Bool:
			typ = "on|off"
		}
		f := fs.VarPF(&stringValue{s: formatValue(l.val), typ: typ}, flagName(l.key), "", flagHelp[l.key]+" ("+l.key+")")
		if l.val.Kind() == reflect.Bool {
			f.NoOptDefVal = "on"
		}
	}
	return fs, path
}

// stringValue is a pflag.Value that keeps the text as given (Load decodes it).
type stringValue struct{ s, typ string }

func (s *stringValue) String() string     { return s.s }
func (s *stringValue) Set(v string) error { s.s = v; return nil }
func (s *stringValue) Type() string       { return s.typ }

// bindFlags makes the flags given on the command line win over the
// environment and the file.
func bindFlags(v *viper.Viper, fs *pflag.FlagSet) error {
	for _, key := range Keys() {
		if f := fs.Lookup(flagName(key)); f != nil && f.Changed {
			if err := v.BindPFlag(key, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// Load reads the file at path (if path is empty, DefaultConfigPath when it
// exists), then EDGEID_AUTHORITY_* variables, over the defaults; v may carry
// flags already bound to keys (they win). Every bad key is reported at once,
// each naming the key, what is wrong and what to give instead.
func Load(v *viper.Viper, path string) (Config, string, error) {
	if v == nil {
		v = viper.New()
	}
	def := Default()
	for _, l := range leaves(&def) {
		if !v.IsSet(l.key) { // a caller's default wins over ours
			v.SetDefault(l.key, l.val.Interface())
		}
	}
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path == "" {
		if _, err := os.Stat(DefaultConfigPath); err == nil {
			path = DefaultConfigPath
		}
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, path, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	var c Config
	var errs []error
	known, undecoded := map[string]bool{}, map[string]bool{}
	for _, l := range leaves(&c) {
		known[l.key] = true
		if err := decodeInto(l.val, v.Get(l.key)); err != nil {
			errs = append(errs, keyError{l.key, err.Error()})
			undecoded[l.key] = true
		}
	}
	for _, k := range v.AllKeys() {
		if !known[k] {
			errs = append(errs, keyError{k, "is not a key" + suggest(k, Keys()) + " (configs/edgeid-authority.yaml lists every key)"})
		}
	}
	envKeys := Keys()
	for i, k := range envKeys {
		envKeys[i] = envName(k)
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") && !envOwn[name] && !known[envKeyOf(name)] {
			errs = append(errs, keyError{name, "is not a setting" + suggest(name, envKeys)})
		}
	}
	for _, e := range c.problems() { // a key that did not decode is reported once
		if !undecoded[e.key] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return Config{}, path, fmt.Errorf("config %s: %w", orDefaults(path), errors.Join(errs...))
	}
	return c, path, nil
}

// envKeyOf is the key an EDGEID_AUTHORITY_* name stands for, if any.
func envKeyOf(name string) string {
	for _, k := range Keys() {
		if envName(k) == name {
			return k
		}
	}
	return ""
}

func orDefaults(path string) string {
	if path == "" {
		return "(defaults, environment and flags)"
	}
	return path
}

// suggest names the candidate nearest to got, if one is near enough to be
// a slip (an edit distance of at most a third of its length, or the same
// key spelled with _ for . or the other way round).
func suggest(got string, candidates []string) string {
	flat := func(s string) string { return strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToLower(s)) }
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := editDistance(flat(got), flat(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(1, len(got)/3) {
		return ""
	}
	return fmt.Sprintf("; did you mean %s?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var durationType = reflect.TypeFor[time.Duration]()

// decodeInto sets field f from raw (a default, a YAML value, an
// environment variable or a flag), with an error saying what is wrong.
func decodeInto(f reflect.Value, raw any) error {
	switch raw.(type) {
	case map[string]any:
		return errors.New("is a group of keys; want a single value")
	case []any:
		return errors.New("is a list; want a single value")
	}
	switch {
	case f.Type() == durationType:
		switch x := raw.(type) {
		case time.Duration:
			f.SetInt(int64(x))
		case string:
			d, err := time.ParseDuration(strings.TrimSpace(x))
			if err != nil {
				return fmt.Errorf("%q is not a duration (e.g. 15m)", x)
			}
			f.SetInt(int64(d))
		default:
			return fmt.Errorf("%v is not a duration: give a unit (e.g. 15m, 1h)", raw)
		}
	case f.Kind() == reflect.Bool:
		switch x := raw.(type) {
		case bool:
			f.SetBool(x)
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "on", "true", "yes", "1":
				f.SetBool(true)
			case "off", "false", "no", "0":
				f.SetBool(false)
			default:
				return fmt.Errorf("%q is not on or off", x)
			}
		default:
			return fmt.Errorf("%v is not on or off", raw)
		}
	case f.Kind() == reflect.String:
		switch x := raw.(type) {
		case nil:
			f.SetString("")
		case string:
			f.SetString(x)
		default: // a YAML number or boolean: checked as the text it is
			f.SetString(fmt.Sprint(x))
		}
	default:
		panic("config: no decoder for " + f.Type().String())
	}
	return nil
}

// formatValue writes a field as it would be written in the file.
func formatValue(f reflect.Value) string {
	switch {
	case f.Type() == durationType:
		return formatDuration(time.Duration(f.Int()))
	case f.Kind() == reflect.Bool:
		if f.Bool() {
			return "on"
		}
		return "off"
	}
	return f.String()
}

// formatDuration writes 24h rather than 24h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// keyError is a problem with one key's value.
type keyError struct{ key, msg string }

func (e keyError) Error() string { return e.key + ": " + e.msg }

// Validate checks every key and reports all problems, each naming its key,
// what is wrong and what to give instead.
func (c Config) Validate() error {
	var errs []error
	for _, e := range c.problems() {
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

func (c Config) problems() []keyError {
	var errs []keyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, keyError{key, fmt.Sprintf(format, args...)})
	}
	checkAddr := func(key, addr, example string) {
		if addr == "" {
			bad(key, "is empty; give host:port (e.g. %s)", example)
			return
		}
		_, port, err := net.SplitHostPort(addr)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			bad(key, "%q is not host:port (e.g. %s)", addr, example)
		}
	}
	checkAddr("listen", c.Listen, ":8443 or 0.0.0.0:8443")
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil || u.Scheme != "https" || u.Host == "" || u.Opaque != "":
			bad("url", "%q is not an https URL (e.g. https://authority.example.com:8443); gateways and devices reach the authority over TLS", c.URL)
		case u.User != nil || u.RawQuery != "" || u.Fragment != "":
			bad("url", "%q has a user, query or fragment; give the base URL alone (e.g. https://authority.example.com)", c.URL)
		case strings.HasSuffix(u.Path, "/"):
			bad("url", "%q ends with /; give it without (it is the iss of tokens and the prefix of every endpoint)", c.URL)
		}
	}
	if c.StateDir == "" {
		bad("state_dir", "is empty; give a writable directory (default /var/lib/edgeid-authority)")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls_key", "set tls_cert and tls_key together, or neither for a self-signed certificate")
	}
	for _, f := range []struct{ key, path string }{{"tls_cert", c.TLSCert}, {"tls_key", c.TLSKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.key, "cannot read %s: %v", f.path, errors.Unwrap(err))
		}
	}
	if strings.TrimSpace(c.TokenAudience) == "" {
		bad("token_audience", "is empty; give the audience the gateways accept (their auth.audiences, default edgeid)")
	}
	for _, d := range []struct {
		key string
		d   time.Duration
	}{{"token_ttl", c.TokenTTL}, {"max_token_lifetime", c.MaxTokenLifetime}, {"enroll_code_ttl", c.EnrollCodeTTL},
		{"key_publish_ahead", c.KeyPublishAhead}, {"pairing_code_ttl", c.PairingCodeTTL},
		{"pairing_poll_interval", c.PairingPollInterval}, {"heartbeat_interval", c.HeartbeatInterval},
		{"uma_ticket_ttl", c.UMATicketTTL}, {"sweep_interval", c.SweepInterval}} {
		if d.d <= 0 {
			bad(d.key, "%s must be positive (e.g. %s)", formatDuration(d.d), formatDuration(Default().durationOf(d.key)))
		}
	}
	if c.TokenTTL > 0 && c.MaxTokenLifetime > 0 && c.TokenTTL > c.MaxTokenLifetime {
		bad("token_ttl", "%s is longer than max_token_lifetime (%s): gateways refuse such tokens; shorten token_ttl, or raise max_token_lifetime together with the gateways' auth.max_token_lifetime",
			formatDuration(c.TokenTTL), formatDuration(c.MaxTokenLifetime))
	}
	if p := c.PairingPollInterval; p > 0 && (p < time.Second || p%time.Second != 0) {
		bad("pairing_poll_interval", "%s is not a whole number of seconds (RFC 8628 tells devices the interval in seconds; e.g. 5s)", formatDuration(p))
	}
	if c.PairingPollInterval > 0 && c.PairingCodeTTL > 0 && c.PairingCodeTTL <= c.PairingPollInterval {
		bad("pairing_code_ttl", "%s is not longer than pairing_poll_interval (%s): a device could not poll once; give minutes (e.g. 10m)",
			formatDuration(c.PairingCodeTTL), formatDuration(c.PairingPollInterval))
	}
	switch c.Storage {
	case "badger":
	case "postgres":
		if strings.TrimSpace(c.Postgres.DSN) == "" {
			bad("postgres.dsn", "is empty; give the database's connection string (e.g. postgres://edgeid@db.internal/edgeid?sslmode=verify-full)")
		} else if _, err := pgconn.ParseConfig(c.Postgres.DSN); err != nil {
			bad("postgres.dsn", "is not a PostgreSQL connection string: %s", redactDSNError(err))
		}
	default:
		bad("storage", "%q is not one of badger, postgres", c.Storage)
	}
	if m := c.Postgres.MaxConns; m != "" {
		if n, err := strconv.Atoi(m); err != nil || n < 1 || n > 1000 {
			bad("postgres.max_conns", "%q is not a number from 1 to 1000", m)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "auto", "text", "json", "journald":
	default:
		bad("log.format", "%q is not one of auto, text, json, journald", c.Log.Format)
	}
	if c.Metrics {
		checkAddr("metrics_listen", c.MetricsListen, "127.0.0.1:9465")
		if c.MetricsListen != "" && c.MetricsListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			bad("metrics_listen", "%q is also listen; give /metrics its own address, on loopback or a private network (e.g. 127.0.0.1:9465)", c.MetricsListen)
		}
	}
	return errs
}

// durationOf is the duration key's value in c.
func (c Config) durationOf(key string) time.Duration {
	for _, l := range leaves(&c) {
		if l.key == key {
			return time.Duration(l.val.Int())
		}
	}
	return 0
}

// source says where key's value came from: flag, env, file or default.
func source(v *viper.Viper, fs *pflag.FlagSet, key string) string {
	switch {
	case fs != nil && fs.Lookup(flagName(key)) != nil && fs.Lookup(flagName(key)).Changed:
		return "flag --" + flagName(key)
	case os.Getenv(envName(key)) != "":
		return "env " + envName(key)
	case v.InConfig(key):
		return "file"
	}
	return "default"
}

// writeConfig prints c as YAML, each key with where its value came from.
// It holds no secret: the admin token is in its own file or variable, and
// only where it comes from is said.
func writeConfig(w io.Writer, c Config, v *viper.Viper, fs *pflag.FlagSet) error {
	var b strings.Builder
	group := ""
	for _, l := range leaves(&c) {
		g, name := "", l.key
		if i := strings.LastIndex(l.key, "."); i >= 0 {
			g, name = l.key[:i], l.key[i+1:]
		}
		if g != group {
			if g != "" {
				fmt.Fprintf(&b, "%s:\n", g)
			}
			group = g
		}
		indent := ""
		if g != "" {
			indent = "  "
		}
		val := formatValue(l.val)
		if l.key == "postgres.dsn" {
			val = RedactDSN(val)
		}
		if l.val.Kind() == reflect.String {
			val = strconv.Quote(val)
		}
		note := source(v, fs, l.key)
		if l.key == "url" && c.URL == "" {
			note += "; https://localhost:<port of listen> at start"
		}
		fmt.Fprintf(&b, "%s%s: %s  # %s\n", indent, name, val, note)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// RedactDSN is dsn with any password replaced by "xxxxx", for printing.
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
		return dsn
	}
	return dsnPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// dsnPassword is the password word of a key=value connection string.
var dsnPassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactDSNError is pgconn's parse error without the connection string
// (which it may quote, password and all).
func redactDSNError(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		return msg[i+3:]
	}
	return "check its syntax"
}
