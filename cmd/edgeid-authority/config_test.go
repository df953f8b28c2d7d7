package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testToken = "cmd-test-admin-token-0123456789"

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// load is what serve and check-config do with their arguments.
func load(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	l, err := loadArgs("serve", args)
	return l.cfg, err
}

func TestDefaultValidates(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	c, err := load(t)
	if err != nil {
		t.Fatalf("load with nothing set: %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("nothing set = %+v, want Default() %+v", c, Default())
	}
}

// The shipped file documents every key, and sets each to its default but
// the admin token file, which the package points at its postinst's token.
func TestShippedConfig(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "edgeid-authority.yaml")
	c, err := load(t, "--config", path)
	if err != nil {
		t.Fatalf("configs/edgeid-authority.yaml: %v", err)
	}
	want := Default()
	want.AdminTokenFile = "/etc/edgeid-authority/admin.token"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("shipped config = %+v\nwant the defaults with admin_token_file set: %+v", c, want)
	}
	text, _ := os.ReadFile(path)
	for _, key := range Keys() {
		name := key[strings.LastIndex(key, ".")+1:]
		indent := strings.Repeat("  ", strings.Count(key, "."))
		if !regexp.MustCompile(`(?m)^` + indent + regexp.QuoteMeta(name) + `:`).Match(text) {
			t.Errorf("configs/edgeid-authority.yaml does not show %s", key)
		}
	}
}

// Flags win over EDGEID_AUTHORITY_* variables, which win over the file,
// which wins over the defaults; the flags of before the file keep working.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for _, f := range []string{cert, key} {
		_ = os.WriteFile(f, []byte("x"), 0o600)
	}
	file := writeFile(t, "authority.yaml", `
listen: 127.0.0.1:1001
url: https://file.example
token_ttl: 2h
max_token_lifetime: 12h
pairing_code_ttl: 5m
uma_ticket_ttl: 2m
sweep_interval: 1m
log:
  level: debug
metrics: off
`)
	t.Setenv("EDGEID_AUTHORITY_LISTEN", "127.0.0.1:1002")
	t.Setenv("EDGEID_AUTHORITY_TOKEN_TTL", "3h")
	t.Setenv("EDGEID_AUTHORITY_LOG_FORMAT", "json")
	t.Setenv("EDGEID_AUTHORITY_METRICS", "on")
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", testToken) // not a key: allowed, and not read here
	c, err := load(t, "--config", file, "--listen", "127.0.0.1:1003", "--log-level=warn")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		key       string
		got, want any
	}{
		{"listen (flag over env and file)", c.Listen, "127.0.0.1:1003"},
		{"token_ttl (env over file)", c.TokenTTL, 3 * time.Hour},
		{"log.level (flag over file)", c.Log.Level, "warn"},
		{"log.format (env over default)", c.Log.Format, "json"},
		{"metrics (env over file)", c.Metrics, true},
		{"url (file)", c.URL, "https://file.example"},
		{"max_token_lifetime (file)", c.MaxTokenLifetime, 12 * time.Hour},
		{"pairing_code_ttl (file)", c.PairingCodeTTL, 5 * time.Minute},
		{"uma_ticket_ttl (file)", c.UMATicketTTL, 2 * time.Minute},
		{"sweep_interval (file)", c.SweepInterval, time.Minute},
		{"enroll_code_ttl (default)", c.EnrollCodeTTL, 24 * time.Hour},
		{"state_dir (default)", c.StateDir, "/var/lib/edgeid-authority"},
	} {
		if !reflect.DeepEqual(x.got, x.want) {
			t.Errorf("%s = %v, want %v", x.key, x.got, x.want)
		}
	}

	// The flags serve took before there was a file, as the systemd unit
	// and README pass them.
	c, err = load(t, "--listen", ":9443", "--url", "https://authority.example.com:9443", "--state-dir", dir,
		"--admin-token-file", "/etc/x/admin.token", "--tls-cert", cert, "--tls-key", key, "--token-audience", "site-7",
		"--key-publish-ahead", "30m", "--max-token-lifetime", "48h")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":9443" || c.URL != "https://authority.example.com:9443" || c.StateDir != dir || c.AdminTokenFile != "/etc/x/admin.token" ||
		c.TLSCert != cert || c.TLSKey != key || c.TokenAudience != "site-7" || c.KeyPublishAhead != 30*time.Minute || c.MaxTokenLifetime != 48*time.Hour {
		t.Errorf("old flags = %+v", c)
	}
	ac := c.Authority("https://x.example")
	if ac.URL != "https://x.example" || ac.TokenTTL != c.TokenTTL || ac.MaxTokenLifetime != 48*time.Hour || ac.KeyPublishAhead != 30*time.Minute ||
		ac.TokenAudience != "site-7" || ac.StateDir != dir || ac.EnrollCodeTTL != c.EnrollCodeTTL || ac.PairingCodeTTL != c.PairingCodeTTL ||
		ac.PairingPollInterval != c.PairingPollInterval || ac.HeartbeatInterval != c.HeartbeatInterval || ac.UMATicketTTL != c.UMATicketTTL ||
		ac.SweepInterval != c.SweepInterval {
		t.Errorf("authority.Config = %+v from %+v", ac, c)
	}
}

// Each bad value is refused with an error that starts with its key and
// says what is wrong; file, environment and flags alike.
func TestConfigErrorsNameTheKey(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.pem")
	type configCase struct {
		name string
		yaml string
		env  map[string]string
		args []string
		want string
	}
	cases := []configCase{
		{name: "duration", yaml: "token_ttl: 5x\n", want: `token_ttl: "5x" is not a duration (e.g. 15m)`},
		{name: "duration env", env: map[string]string{"EDGEID_AUTHORITY_TOKEN_TTL": "5x"}, want: `token_ttl: "5x" is not a duration (e.g. 15m)`},
		{name: "duration flag", args: []string{"--heartbeat-interval", "soon"}, want: `heartbeat_interval: "soon" is not a duration (e.g. 15m)`},
		{name: "duration without unit", yaml: "max_token_lifetime: 3600\n", want: `max_token_lifetime: 3600 is not a duration: give a unit`},
		{name: "token_ttl over max", yaml: "token_ttl: 48h\n", want: `token_ttl: 48h is longer than max_token_lifetime (24h)`},
		{name: "url http", yaml: "url: http://authority.example\n", want: `url: "http://authority.example" is not an https URL`},
		{name: "url no host", yaml: "url: https://\n", want: `url: "https://" is not an https URL`},
		{name: "url query", yaml: "url: https://a.example/?x=1\n", want: `url: "https://a.example/?x=1" has a user, query or fragment`},
		{name: "url slash", yaml: "url: https://a.example/\n", want: `url: "https://a.example/" ends with /`},
		{name: "listen port only", yaml: "listen: 8443\n", want: `listen: "8443" is not host:port`},
		{name: "listen bad port", yaml: "listen: \":http-ish\"\n", want: `listen: ":http-ish" is not host:port`},
		{name: "listen empty", yaml: "listen: \"\"\n", want: `listen: is empty; give host:port`},
		{name: "state_dir", yaml: "state_dir: \"\"\n", want: `state_dir: is empty`},
		{name: "token_audience", yaml: "token_audience: \" \"\n", want: `token_audience: is empty`},
		{name: "tls half", yaml: "tls_cert: " + missing + "\n", want: `tls_key: set tls_cert and tls_key together`},
		{name: "tls missing", yaml: "tls_cert: " + missing + "\ntls_key: " + missing + "\n", want: `tls_cert: cannot read ` + missing},
		{name: "poll not whole", yaml: "pairing_poll_interval: 1500ms\n", want: `pairing_poll_interval: 1.5s is not a whole number of seconds`},
		{name: "code not longer than poll", yaml: "pairing_code_ttl: 5s\n", want: `pairing_code_ttl: 5s is not longer than pairing_poll_interval (5s)`},
		{name: "log.level", yaml: "log:\n  level: loud\n", want: `log.level: "loud" is not one of debug, info, warn, error`},
		{name: "log.format", yaml: "log:\n  format: xml\n", want: `log.format: "xml" is not one of auto, text, json, journald`},
		{name: "metrics", yaml: "metrics: maybe\n", want: `metrics: "maybe" is not on or off`},
		{name: "metrics flag", args: []string{"--metrics=sometimes"}, want: `metrics: "sometimes" is not on or off`},
		{name: "metrics_listen", yaml: "metrics_listen: localhost\n", want: `metrics_listen: "localhost" is not host:port`},
		{name: "metrics_listen is listen", yaml: "listen: 127.0.0.1:8443\nmetrics_listen: 127.0.0.1:8443\n", want: `metrics_listen: "127.0.0.1:8443" is also listen`},
		{name: "a group for a value", yaml: "listen:\n  port: 8443\n", want: `listen.port: is not a key`},
		{name: "a list for a value", yaml: "token_audience: [a, b]\n", want: `token_audience: is a list; want a single value`},
		{name: "storage", yaml: "storage: mysql\n", want: `storage: "mysql" is not one of badger, postgres`},
		{name: "postgres without dsn", yaml: "storage: postgres\n", want: `postgres.dsn: is empty; give the database's connection string`},
		{name: "postgres bad dsn", yaml: "storage: postgres\npostgres:\n  dsn: \"postgres://u:sekrit@h:notaport/db\"\n", want: `postgres.dsn: is not a PostgreSQL connection string`},
		{name: "postgres max_conns", yaml: "postgres:\n  max_conns: lots\n", want: `postgres.max_conns: "lots" is not a number from 1 to 1000`},
	}
	for _, key := range []string{"token_ttl", "max_token_lifetime", "enroll_code_ttl", "key_publish_ahead", "pairing_code_ttl", "pairing_poll_interval", "heartbeat_interval", "uma_ticket_ttl", "sweep_interval"} {
		cases = append(cases, configCase{name: key + " zero", yaml: key + ": 0s\n", want: key + ": 0s must be positive"},
			configCase{name: key + " negative", yaml: key + ": -1m\n", want: key + ": -1m must be positive"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.yaml != "" {
				args = append(args, "--config", writeFile(t, "authority.yaml", tc.yaml))
			}
			_, err := load(t, args...)
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			lines := strings.Split(err.Error(), "\n")
			found := false
			for i, l := range lines {
				if i == 0 {
					_, l, _ = strings.Cut(l, ": ") // "config FILE: " before the first
				}
				if strings.HasPrefix(l, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("error:\n%v\nwant a line starting %q", err, tc.want)
			}
		})
	}
}

// All problems are reported at once, each once.
func TestConfigErrorsAllAtOnce(t *testing.T) {
	_, err := load(t, "--config", writeFile(t, "a.yaml", "token_ttl: 5x\nurl: http://a\nlog:\n  level: loud\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`token_ttl: "5x"`, `url: "http://a"`, `log.level: "loud"`} {
		if strings.Count(err.Error(), want) != 1 {
			t.Errorf("error %q: want %q once", err, want)
		}
	}
	if strings.Contains(err.Error(), "token_ttl: 0s") {
		t.Errorf("error %q: a value that did not decode is also reported as zero", err)
	}
}

// A key or variable that is no setting stops start-up, with the nearest key
// when it looks like a slip.
func TestUnknownKeyRefused(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"token_tll: 1h\n", "token_tll: is not a key; did you mean token_ttl?"},
		{"metrics.listen: 127.0.0.1:1\n", "metrics.listen: is not a key; did you mean metrics_listen?"},
		{"log:\n  levle: debug\n", "log.levle: is not a key; did you mean log.level?"},
		{"log_level: debug\n", "log_level: is not a key; did you mean log.level?"},
		{"colour: blue\n", "colour: is not a key (configs/edgeid-authority.yaml lists every key)"},
	} {
		_, err := load(t, "--config", writeFile(t, "a.yaml", tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
	t.Setenv("EDGEID_AUTHORITY_TOKEN_TLL", "1h")
	_, err := load(t)
	if err == nil || !strings.Contains(err.Error(), "EDGEID_AUTHORITY_TOKEN_TLL: is not a setting; did you mean EDGEID_AUTHORITY_TOKEN_TTL?") {
		t.Errorf("unknown variable: %v", err)
	}
	// The unit's EDGEID_AUTHORITY_ARGS and the admin token are not keys, and not refused.
	os.Unsetenv("EDGEID_AUTHORITY_TOKEN_TLL")
	t.Setenv("EDGEID_AUTHORITY_ARGS", "--listen :8443")
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", testToken)
	if _, err := load(t); err != nil {
		t.Errorf("EDGEID_AUTHORITY_ARGS, EDGEID_AUTHORITY_ADMIN_TOKEN refused: %v", err)
	}
}

// check-config prints the effective configuration, each value with its
// source, and never the admin token (from the environment or its file).
func TestCheckConfig(t *testing.T) {
	file := writeFile(t, "authority.yaml", "token_ttl: 2h\nadmin_token_file: /nonexistent/admin.token\n")
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", testToken)
	t.Setenv("EDGEID_AUTHORITY_LOG_LEVEL", "debug")
	var out bytes.Buffer
	if err := checkConfig([]string{"--config", file, "--listen", "127.0.0.1:7443"}, &out); err != nil {
		t.Fatalf("check-config: %v", err)
	}
	got := out.String()
	for _, want := range []string{
		"# " + file + ": valid\n",
		`listen: "127.0.0.1:7443"  # flag --listen` + "\n",
		"token_ttl: 2h  # file\n",
		"max_token_lifetime: 24h  # default\n",
		"log:\n  level: \"debug\"  # env EDGEID_AUTHORITY_LOG_LEVEL\n",
		"metrics: on  # default\n",
		"# admin token: from EDGEID_AUTHORITY_ADMIN_TOKEN (admin_token_file is not read), not shown\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, testToken) {
		t.Errorf("check-config printed the admin token:\n%s", got)
	}

	// From a file: read (so a bad one is caught), and not printed either.
	os.Unsetenv("EDGEID_AUTHORITY_ADMIN_TOKEN")
	secret := "file-held-admin-token-abcdef0123"
	tokFile := writeFile(t, "admin.token", secret+"\n")
	out.Reset()
	if err := checkConfig([]string{"--admin-token-file", tokFile}, &out); err != nil {
		t.Fatalf("check-config: %v", err)
	}
	if strings.Contains(out.String(), secret) || !strings.Contains(out.String(), "# admin token: read from "+tokFile+", not shown") {
		t.Errorf("check-config with a token file:\n%s", out.String())
	}
	if err := checkConfig([]string{"--config", file}, &out); err == nil || !strings.Contains(err.Error(), "admin_token_file:") {
		t.Errorf("check-config with an unreadable admin_token_file: %v", err)
	}
	if err := checkConfig([]string{"--admin-token-file", tokFile, "--token-ttl", "5x"}, &out); err == nil || !strings.Contains(err.Error(), `token_ttl: "5x"`) {
		t.Errorf("check-config of a bad value: %v", err)
	}
}

// Every field of authority.Config has a key: a field added there without
// one here would run at its zero value whatever the operator wrote.
func TestEveryAuthorityFieldHasAKey(t *testing.T) {
	ac := reflect.ValueOf(Default().Authority("https://authority.example"))
	for i := range ac.NumField() {
		if ac.Field(i).IsZero() {
			t.Errorf("authority.Config.%s is not set from the configuration: add a key for it (config.go, configs/edgeid-authority.yaml)", ac.Type().Field(i).Name)
		}
	}
}

// A connection string is printed with its password masked, in both forms,
// and a refused one does not quote its password either.
func TestDSNPasswordNeverPrinted(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://edgeid:sekrit@db:5432/edgeid?sslmode=require": "postgres://edgeid:xxxxx@db:5432/edgeid?sslmode=require",
		"host=db user=edgeid password=sekrit dbname=edgeid":       "host=db user=edgeid password=xxxxx dbname=edgeid",
		"host=db password='sek rit' dbname=edgeid":                "host=db password=xxxxx dbname=edgeid",
		"postgres://edgeid@db/edgeid":                             "postgres://edgeid@db/edgeid",
	} {
		if got := RedactDSN(in); got != want {
			t.Errorf("RedactDSN(%q) = %q, want %q", in, got, want)
		}
	}
	_, err := load(t, "--config", writeFile(t, "a.yaml", "storage: postgres\npostgres:\n  dsn: \"postgres://u:sekrit@h:notaport/db\"\n"))
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("bad dsn: %v; want an error without the password", err)
	}
	var out strings.Builder
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", testToken)
	if err := checkConfig([]string{"--config", writeFile(t, "b.yaml", "storage: postgres\npostgres:\n  dsn: \"postgres://u:sekrit@h/db\"\n")}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "sekrit") || !strings.Contains(out.String(), "postgres://u:xxxxx@h/db") {
		t.Errorf("check-config printed:\n%s\nwant the dsn with its password masked", out.String())
	}
}
