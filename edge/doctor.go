package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/bridge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/store"
)

// Check is one line of `edgeid doctor`.
type Check struct {
	Name   string `json:"name"`
	Result string `json:"result"` // ok, warn, fail
	Detail string `json:"detail"`
}

// ClockFloor is the earliest time the gateway's clock may plausibly show:
// the build date of this binary. A Raspberry Pi has no RTC and boots in
// 1970 until NTP answers.
var ClockFloor = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// DoctorOptions lets tests point the doctor at a fake clock.
type DoctorOptions struct {
	Now func() time.Time
}

// Doctor checks what a technician would check by hand, in order, and says
// what to do about each problem. It works whether or not the daemon runs.
func Doctor(ctx context.Context, cfg config.Config, cfgErr error, o DoctorOptions) []Check {
	if o.Now == nil {
		o.Now = time.Now
	}
	var out []Check
	add := func(name, result, format string, args ...any) {
		out = append(out, Check{Name: name, Result: result, Detail: fmt.Sprintf(format, args...)})
	}
	if cfgErr != nil {
		add("configuration", "fail", "%v", cfgErr)
		return out
	}
	add("configuration", "ok", "valid")

	var raw json.RawMessage
	var st admin.Status
	err := admin.NewClient(cfg.Admin.Socket).Do(ctx, http.MethodGet, admin.PathStatus, nil, &raw)
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	running := err == nil
	// bridgeClass is why each remote's bridge class cannot be used ("": it
	// can), from the daemon or from the store; absent: not known.
	bridgeClass := map[string]string{}
	if running {
		add("daemon", "ok", "running: %d sessions, store rev %d", st.Sessions, st.StoreRev)
		add("store", "ok", "open in the daemon (%s)", cfg.StateDir)
		var w struct {
			Sync *syncWire `json:"sync"`
		}
		if json.Unmarshal(raw, &w) == nil && w.Sync != nil {
			out = append(out, checkSync(cfg, w.Sync))
		}
		if len(cfg.Bridge.Remotes) > 0 {
			if rs, err := admin.NewClient(cfg.Admin.Socket).Bridge(ctx); err == nil {
				for _, r := range rs {
					bridgeClass[r.Remote] = r.ClassError
				}
			}
		}
	} else {
		add("daemon", "warn", "not answering on %s (systemctl status edgeid)", cfg.Admin.Socket)
		if s, err := store.Open(store.Options{Dir: cfg.StateDir, Gateway: true}); err != nil {
			add("store", "fail", "%v", err)
		} else {
			rev, _ := s.Rev()
			for _, rc := range cfg.Bridge.WithDefaults(cfg.Gateway.ID).Remotes {
				bridgeClass[rc.Name] = ""
				if _, err := s.Class(rc.Class); errors.Is(err, store.ErrNotFound) {
					bridgeClass[rc.Name] = fmt.Sprintf("class %q is not in the store: nothing crosses until it is imported or synced", rc.Class)
				} else if err != nil {
					bridgeClass[rc.Name] = fmt.Sprintf("class %q: %v", rc.Class, err)
				}
			}
			_ = s.Close()
			add("store", "ok", "opens (%s, rev %d)", cfg.StateDir, rev)
		}
		for key, addr := range map[string]string{"mqtt.tcp": cfg.MQTT.TCP, "mqtt.tls.listen": cfg.MQTT.TLS.Listen, "metrics.listen": cfg.Metrics.Listen} {
			if addr == "" {
				continue
			}
			if ln, err := net.Listen("tcp", addr); err != nil {
				add("listener "+key, "fail", "%s: %v (another program holds the port?)", addr, err)
			} else {
				ln.Close()
				add("listener "+key, "ok", "%s can be bound", addr)
			}
		}
	}

	now := o.Now()
	if now.Before(ClockFloor) {
		add("clock", "fail", "the clock says %s, before this edgeid was built: not synchronized yet (no RTC); token connects are refused until it is", now.UTC().Format(time.RFC3339))
	} else if _, err := os.Stat("/run/systemd/timesync/synchronized"); err != nil {
		add("clock", "warn", "%s; systemd-timesyncd has not confirmed synchronization (timedatectl status)", now.UTC().Format(time.RFC3339))
	} else {
		add("clock", "ok", "%s, synchronized", now.UTC().Format(time.RFC3339))
	}

	e, err := client.LoadEnrollment(EnrollmentPath(cfg))
	switch {
	case errors.Is(err, os.ErrNotExist):
		add("enrollment", "warn", "not enrolled: deciding from imported records only (edgeid enroll --authority URL --code CODE)")
	case err != nil:
		add("enrollment", "fail", "%v", err)
	default:
		add("enrollment", "ok", "gateway %q at %s since %s", e.Gateway, e.Authority, e.Enrolled.Format(time.RFC3339))
		out = append(out, checkAuthority(ctx, e, now)...)
	}

	certs := map[string]string{"mqtt.tls.cert": cfg.MQTT.TLS.Cert}
	if cfg.MQTT.TLS.Listen != "" && cfg.MQTT.TLS.Cert == "" {
		certs["mqtt.tls (self-signed)"] = filepath.Join(cfg.StateDir, "tls", "server.crt")
	}
	for name, path := range certs {
		if path == "" {
			continue
		}
		out = append(out, checkCert(name, path, now))
	}

	if len(cfg.Bridge.Remotes) > 0 {
		var enrolled json.RawMessage
		if e != nil {
			enrolled = e.Key
		}
		for i, rc := range cfg.Bridge.WithDefaults(cfg.Gateway.ID).Remotes {
			out = append(out, checkRemote(ctx, i, rc, enrolled))
			name := "bridge " + rc.Name + " class"
			switch why, known := bridgeClass[rc.Name]; {
			case !known:
				add(name, "warn", "the daemon did not say whether class %q is usable (edgeid bridge)", rc.Class)
			case why != "":
				add(name, "fail", "%s (principal bridge:%s; see bridge.remotes[%d].class)", why, rc.Name, i)
			default:
				add(name, "ok", "class %q bounds principal bridge:%s", rc.Class, rc.Name)
			}
		}
	}

	var fs syscall.Statfs_t
	if err := syscall.Statfs(cfg.StateDir, &fs); err != nil {
		add("disk", "warn", "state_dir %s: %v", cfg.StateDir, err)
	} else {
		free := int64(fs.Bavail) * int64(fs.Bsize)
		switch {
		case free < 20<<20:
			add("disk", "fail", "%d MB free under %s: the store cannot grow; free space now", free>>20, cfg.StateDir)
		case free < 200<<20:
			add("disk", "warn", "%d MB free under %s", free>>20, cfg.StateDir)
		default:
			add("disk", "ok", "%d MB free under %s", free>>20, cfg.StateDir)
		}
	}
	return out
}

// syncWire is the daemon's sync status as the doctor reads it: the fields of
// admin.SyncStatus it needs, by their JSON names. Stale, Reason and NextTry
// come from daemons that judge freshness by signed heartbeats; from an
// older one they are zero and the doctor goes by online and lag alone.
type syncWire struct {
	Online     bool      `json:"online"`
	Cursor     uint64    `json:"cursor"`
	LagSeconds float64   `json:"lag_seconds"`
	Stale      bool      `json:"stale"`
	Reason     string    `json:"reason"`
	Head       uint64    `json:"head"`
	NextTry    time.Time `json:"next_try"`
}

// checkSync says whether the store is known to hold what the authority
// has. The lag is the time since the last signed heartbeat whose head the
// store had reached: an unsigned ping or a bare 200 does not count, so a
// man in the middle withholding a revocation shows here as growing lag.
func checkSync(cfg config.Config, w *syncWire) Check {
	lag := time.Duration(w.LagSeconds * float64(time.Second)).Round(time.Second)
	heard := "never since start"
	if w.LagSeconds >= 0 {
		heard = lag.String() + " ago"
	}
	var why []string
	if w.Reason != "" {
		why = append(why, w.Reason)
	}
	if w.Head > w.Cursor {
		why = append(why, fmt.Sprintf("cursor %d, authority's signed head %d", w.Cursor, w.Head))
	}
	if !w.NextTry.IsZero() {
		why = append(why, "next try "+w.NextTry.UTC().Format(time.RFC3339))
	}
	detail := strings.Join(why, "; ")
	if detail != "" {
		detail = " (" + detail + ")"
	}
	switch {
	case cfg.Sync.MaxStaleness > 0 && (w.LagSeconds < 0 || lag > cfg.Sync.MaxStaleness):
		return Check{"sync", "fail", fmt.Sprintf("last signed word from the authority %s, over sync.max_staleness (%s): token connects are refused until it syncs%s; see edgeid sync, and check the path to the authority (proxies, load balancers)",
			heard, cfg.Sync.MaxStaleness, detail)}
	case !w.Online || w.Stale:
		state := "offline"
		if w.Stale {
			state = "stale"
		}
		return Check{"sync", "warn", fmt.Sprintf("%s: last signed word from the authority %s%s; deciding from the local store", state, heard, detail)}
	}
	return Check{"sync", "ok", fmt.Sprintf("online: cursor %d, last signed heartbeat %s", w.Cursor, heard)}
}

func checkAuthority(ctx context.Context, e *client.Enrollment, now time.Time) []Check {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.Authority+"/.well-known/oauth-authorization-server", nil)
	resp, err := client.HTTPClient(e.Fingerprint).Do(req)
	if err != nil {
		return []Check{{"authority", "fail", fmt.Sprintf("%s unreachable: %v (the gateway keeps deciding from its store)", e.Authority, err)}}
	}
	resp.Body.Close()
	out := []Check{{"authority", "ok", fmt.Sprintf("%s answers (%s)", e.Authority, resp.Status)}}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		skew := now.Sub(d)
		if skew < 0 {
			skew = -skew
		}
		if skew > time.Minute {
			out = append(out, Check{"clock vs authority", "fail", fmt.Sprintf("off by %s from the authority's clock: token times will be judged wrongly; fix NTP", skew.Round(time.Second))})
		} else {
			out = append(out, Check{"clock vs authority", "ok", fmt.Sprintf("within %s of the authority", skew.Round(time.Second))})
		}
	}
	return out
}

// remoteTimeout bounds the doctor's connection to one bridge remote: it
// must not hang on a gateway without a network.
const remoteTimeout = 3 * time.Second

// checkRemote connects to bridge remote i as the bridge would: TCP, then
// (mqtts://) a TLS handshake with the remote's CA, server name and client
// certificate. It sends no MQTT CONNECT, so the daemon's own session at the
// remote is left alone.
func checkRemote(ctx context.Context, i int, rc config.Remote, enrolled json.RawMessage) Check {
	name, key := "bridge "+rc.Name, fmt.Sprintf("bridge.remotes[%d]", i)
	fail := func(format string, args ...any) Check {
		return Check{name, "fail", fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(rc.Address)
	if err != nil {
		return fail("%s.address %q: %v", key, rc.Address, err)
	}
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fail("%s unreachable: %v (check %s.address, DNS, the firewall and the route to the cloud; messages wait in the queue meanwhile)", u.Host, err, key)
	}
	defer nc.Close()
	if u.Scheme != "mqtts" {
		return Check{name, "ok", fmt.Sprintf("%s answers (plain TCP: mqtt:// has no TLS)", u.Host)}
	}
	tc, err := bridge.ClientTLS(rc, u.Hostname(), enrolled)
	if err != nil {
		return fail("%s: %v", key, err)
	}
	conn := tls.Client(nc, tc)
	if err := conn.HandshakeContext(ctx); err != nil {
		return fail("%s: TLS handshake: %v (%s)", u.Host, err, tlsHint(err, key, rc, tc))
	}
	// Under TLS 1.3 a server refuses a client certificate after the
	// client's handshake is done: its alert is the first thing to read.
	// A server waiting for CONNECT sends nothing.
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var one [1]byte
	if _, err := conn.Read(one[:]); err != nil && !isTimeout(err) {
		if errors.Is(err, io.EOF) {
			err = errors.New("closed the connection after the handshake")
		}
		return fail("%s: TLS: %v (%s)", u.Host, err, tlsHint(err, key, rc, tc))
	}
	cs := conn.ConnectionState()
	detail := fmt.Sprintf("%s: TLS handshake ok (%s)", u.Host, tls.VersionName(cs.Version))
	if len(cs.PeerCertificates) > 0 {
		leaf := cs.PeerCertificates[0]
		detail += fmt.Sprintf(", server certificate %q valid until %s", leaf.Subject.CommonName, leaf.NotAfter.Format(time.DateOnly))
	}
	if len(tc.Certificates) > 0 {
		detail += ", client certificate sent"
	}
	return Check{name, "ok", detail}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsHint says what to fix for a failed TLS connection to a remote.
func tlsHint(err error, key string, rc config.Remote, tc *tls.Config) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var op *net.OpError
	roots := "the system's roots"
	if rc.CA != "" {
		roots = rc.CA
	}
	switch {
	case errors.As(err, &ua):
		return fmt.Sprintf("the cloud's certificate does not chain to %s: set %s.ca to the CA bundle that signed it", roots, key)
	case errors.As(err, &he):
		return fmt.Sprintf("the cloud's certificate is not for %q: fix the host in %s.address or set %s.server_name", tc.ServerName, key, key)
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "the cloud's certificate is expired or not yet valid: check the clock (edgeid doctor's clock line), then the cloud's certificate"
	case errors.As(err, &ci):
		return fmt.Sprintf("the cloud's certificate is refused: %v", ci)
	case len(tc.Certificates) == 0 && (errors.As(err, &op) && op.Op == "remote error" || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "closed the connection")):
		return fmt.Sprintf("the cloud may want a client certificate: set %s.cert (and %s.key, or enroll the gateway)", key, key)
	case errors.As(err, &op) && op.Op == "remote error" || strings.Contains(err.Error(), "closed the connection"):
		return fmt.Sprintf("the cloud refused the gateway's client certificate %s: is it signed by a CA the cloud trusts, for this gateway, and not expired?", rc.Cert)
	}
	return fmt.Sprintf("check %s.address, .ca and .server_name", key)
}

func checkCert(name, path string, now time.Time) Check {
	b, err := os.ReadFile(path)
	if err != nil {
		return Check{"certificate " + name, "warn", fmt.Sprintf("%s: %v", path, err)}
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return Check{"certificate " + name, "fail", path + ": no PEM certificate"}
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return Check{"certificate " + name, "fail", fmt.Sprintf("%s: %v", path, err)}
	}
	left := c.NotAfter.Sub(now)
	switch {
	case left < 0:
		return Check{"certificate " + name, "fail", fmt.Sprintf("%s expired on %s", path, c.NotAfter.Format(time.DateOnly))}
	case left < 30*24*time.Hour:
		return Check{"certificate " + name, "warn", fmt.Sprintf("%s expires on %s (in %d days)", path, c.NotAfter.Format(time.DateOnly), int(left.Hours()/24))}
	}
	return Check{"certificate " + name, "ok", fmt.Sprintf("valid until %s", c.NotAfter.Format(time.DateOnly))}
}
