// Package edge wires the gateway together: store, token verifier, MQTT broker
// with its hooks, reactions to store changes, and the admin API.
package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/bridge"
	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/enforce"
	"github.com/edgeid/edgeid/edge/httpapi"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/edge/uma"
	"github.com/edgeid/edgeid/hw"
	"github.com/edgeid/edgeid/internal/clock"
	"github.com/edgeid/edgeid/internal/pki"
	"github.com/edgeid/edgeid/store"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// Gateway is a running edgeid daemon.
type Gateway struct {
	cfg config.Config
	// cert is the server certificate of MQTT over TLS and CoAP over DTLS.
	certOnce sync.Once
	cert     tls.Certificate
	certErr  error
	log      *slog.Logger
	Store    *store.Store
	Verifier *authn.Verifier
	Auth     *authn.Authenticator
	Broker   *broker.Broker
	// CoAP is the CoAP front end (coaps:// and coap://); nil when neither
	// coap.dtls_listen nor coap.udp_listen is set.
	CoAP *coap.Server
	// Bridge is the cloud bridge; nil without bridge.remotes.
	Bridge *bridge.Bridge
	// HTTP is the HTTPS front end; nil without http.listen.
	HTTP *httpapi.Server

	halfOpen *broker.HalfOpen
	enforce  *enforce.Enforcer
	started  time.Time

	// Sharing (UMA): uma answers refusals of owners' shared resources with
	// permission tickets; the share clock (shareclock.go) judges shares'
	// windows and expiry in loc and re-checks their sessions at each
	// boundary.
	uma             *uma.Server
	loc             *time.Location
	clk             atomic.Pointer[clockBox]
	sharesChanged   chan struct{}
	stopShares      context.CancelFunc
	sharesDone      chan struct{}
	sharesCheckedAt atomic.Int64 // unix nanos on the share clock

	listeners []*broker.Listener
	Syncer    *client.Syncer
	stopSync  context.CancelFunc
	admin     *adminServer
	wg        sync.WaitGroup
	stopGC    context.CancelFunc
	metrics   *metrics
	board     *hw.Board
	stopBoard context.CancelFunc
	stopSeen  context.CancelFunc
	pairUntil atomic.Int64 // unix nanos; the pairing window is open before it
	closeOnce sync.Once
	closeErr  error
}

// New opens the store and builds the gateway; Start runs it.
func New(cfg config.Config, log *slog.Logger) (*Gateway, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("create state_dir %s: %w", cfg.StateDir, err)
	}
	st, err := store.Open(store.Options{Dir: cfg.StateDir, Logger: log, Gateway: true})
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: log, Store: st, sharesChanged: make(chan struct{}, 1)}
	g.clk.Store(&clockBox{clock.Real{}})
	if err := g.build(); err != nil {
		if g.Bridge != nil {
			g.Bridge.Stop()
		}
		st.Close()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) build() error {
	cfg := g.cfg
	g.Verifier = authn.NewVerifier(authn.VerifierConfig{
		Audiences: cfg.Auth.Audiences, Skew: cfg.Auth.ClockSkew, ExpLeeway: cfg.Auth.ExpLeeway, MaxLifetime: cfg.Auth.MaxTokenLifetime,
		MaxSize: cfg.Auth.MaxTokenSize, CacheSize: cfg.Auth.TokenCacheSize,
	})
	if err := g.loadIssuers(); err != nil {
		return err
	}
	// A token signed with a key the verifier does not have yet (a sync
	// that brought the key has committed but onApplied has not run) gets a
	// second look after a reload, rate-limited.
	g.Verifier.SetReload(g.loadIssuers)
	loc, err := cfg.Gateway.Location()
	if err != nil {
		return fmt.Errorf("gateway.time_zone: %w", err)
	}
	g.loc = loc
	// Auth.Now is the share clock: what an RPT grants depends on the time
	// of day (a share's window) in the gateway's time zone.
	g.Auth = &authn.Authenticator{Store: g.Store, Verifier: g.Verifier, Skew: cfg.Auth.ClockSkew, ExpLeeway: cfg.Auth.ExpLeeway, Now: g.shareNow}
	if cfg.MQTT.TLS.ClientCA != "" {
		pem, err := os.ReadFile(cfg.MQTT.TLS.ClientCA)
		if err != nil {
			return fmt.Errorf("mqtt.tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("mqtt.tls.client_ca %s: no PEM certificates found", cfg.MQTT.TLS.ClientCA)
		}
		g.Auth.ClientCAs = pool
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MQTT.MaxPacketSize
	caps.MaximumClients = cfg.MQTT.MaxClients
	caps.MaximumSessionExpiryInterval = 24 * 3600
	caps.MaximumClientWritesPending = cfg.MQTT.MaxPendingWrites
	caps.MaximumClientWritesPendingBytes = cfg.MQTT.MaxPendingBytes
	caps.MaximumConnectSize = cfg.MQTT.MaxConnectSize
	caps.ReceiveMaximum = cfg.MQTT.ReceiveMaximum
	// Room for the offline queue, whose own bound (oldest dropped) is
	// enforced first by the broker; mochi's would drop the newest.
	caps.MaximumInflight = uint16(min(cfg.MQTT.OfflineQueue.Messages+64, 65535))
	// No topic aliases either way: CONNACK advertises none, so a PUBLISH
	// that uses one is answered DISCONNECT 0x94 (MQTT 5 §3.3.2.3.4).
	caps.TopicAliasMaximum = 0
	// Acks carry no properties of the PUBLISH back: strict clients reject
	// them, and a held PUBREC would keep the whole received packet alive.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	server := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: slog.New(newQuietMochi(g.log.Handler())).With("component", "mochi"), InlineClient: cfg.CoAP.Enabled() || len(cfg.Bridge.Remotes) > 0 || cfg.HTTP.Listen != "" /* CoAP, HTTP and the bridge publish through it, authorized by their packages */})
	b, err := broker.New(server, g.Auth, g.log.With("component", "mqtt"))
	if err != nil {
		return err
	}
	b.Recheck = b.Revalidate
	b.MaxQoS2 = cfg.MQTT.MaxInflightQoS2
	b.Offline = broker.OfflineQueue{Messages: cfg.MQTT.OfflineQueue.Messages, Bytes: cfg.MQTT.OfflineQueue.Bytes}
	b.Connects = throttle.NewConnectLimiter(cfg.MQTT.ConnectRate, cfg.MQTT.ConnectBurst, 10000)
	if err := g.loadEnrollment(); err != nil {
		return err
	}
	b.Gate = g.gate
	b.PairRelay = g.pairRelay
	g.buildUMA(b)
	rates := func(r config.Rates) throttle.Limits {
		return throttle.Limits{Messages: throttle.Limit{Rate: r.MessagesPerSecond, Burst: r.MessageBurst},
			Bytes: throttle.Limit{Rate: r.BytesPerSecond, Burst: r.ByteBurst}}
	}
	b.Throttle = &throttle.Gate{
		Devices:  throttle.New(rates(cfg.Throttle.Device), cfg.Throttle.Persist, 50000),
		Subjects: throttle.New(rates(cfg.Throttle.Subject), cfg.Throttle.Persist, 50000),
		// A class's limit is shared by all its devices: a refusal there says
		// nothing about the one device that met it, so it never disconnects.
		Classes: throttle.New(rates(cfg.Throttle.Class), 0, 10000),
	}
	if err := loadClassLimits(g.Store, b); err != nil {
		return err
	}
	g.Broker = b
	if err := g.buildBridge(server); err != nil {
		return err
	}
	// --- CoAP ---
	if cfg.CoAP.Enabled() {
		cert, err := g.serverCert()
		if err != nil {
			return err
		}
		inline, err := coap.NewInline(server)
		if err != nil {
			return err
		}
		g.CoAP, err = coap.New(coap.Options{DTLSListen: cfg.CoAP.DTLSListen, UDPListen: cfg.CoAP.UDPListen, IdleTimeout: cfg.CoAP.IdleTimeout,
			ObserveIdleTimeout: cfg.CoAP.ObserveIdleTimeout, MaxObservations: cfg.CoAP.MaxObservations,
			BlockBudget: cfg.CoAP.BlockBudget, BlockTimeout: cfg.CoAP.BlockTimeout,
			Store: g.Store, Auth: g.Auth, Broker: bridgedInline{inline, g.Bridge}, Log: g.log.With("component", "coap"),
			MaxPacketSize: int(caps.MaximumPacketSize), Throttle: b.Throttle, Connects: b.Connects, Now: b.Now,
			Counters: coap.Counters{Denied: &b.Counters.Denied, Throttled: &b.Counters.Throttled,
				MessagesOut: &b.Counters.MessagesOut, BytesOut: &b.Counters.BytesOut},
			PairRelay: g.pairRelay, PairingOpen: g.PairingOpen, ASHint: g.authorityURL(),
			Certificate: &cert})
		if err != nil {
			return err
		}
	}
	// --- end CoAP ---
	if err := g.buildHTTP(server); err != nil {
		return err
	}
	// The one enforcement point: every front end's principals, reached by
	// every store change (see edge/enforce).
	g.enforce = enforce.New(g.log, broker.FrontEnd{B: b})
	if g.CoAP != nil {
		g.enforce.Add(coap.FrontEnd{S: g.CoAP})
	}
	if g.Bridge != nil {
		g.enforce.Add(bridge.FrontEnd{B: g.Bridge})
	}
	if g.HTTP != nil {
		g.enforce.Add(httpapi.FrontEnd{S: g.HTTP})
	}
	g.Store.Watch(g.onApplied)
	g.metrics = newMetrics(g)

	if cfg.MQTT.TCP != "" {
		g.listeners = append(g.listeners, broker.NewListener("mqtt-tcp", cfg.MQTT.TCP, nil, cfg.MQTT.ConnectTimeout))
	}
	if cfg.MQTT.TLS.Listen != "" {
		cert, err := g.serverCert()
		if err != nil {
			return err
		}
		tc := &tls.Config{
			Certificates: []tls.Certificate{cert},
			// Devices are matched by fingerprint or by issuer+serial in the hook,
			// so the handshake only asks for a certificate; the hook decides.
			ClientAuth: tls.RequestClientCert,
			MinVersion: tls.VersionTLS12,
		}
		g.listeners = append(g.listeners, broker.NewListener("mqtt-tls", cfg.MQTT.TLS.Listen, tc, cfg.MQTT.ConnectTimeout))
	}
	// One count of half-open connections over both listeners: a socket that
	// never finishes its CONNECT holds memory whichever port it came to.
	half := broker.NewHalfOpen(cfg.MQTT.MaxHalfOpen, cfg.MQTT.MaxHalfOpenPerSource, g.log.With("component", "mqtt"))
	g.Broker.ConnectRead = half.ConnectRead
	g.halfOpen = half
	for _, l := range g.listeners {
		l.SetHalfOpen(half)
		if err := server.AddListener(l); err != nil {
			return fmt.Errorf("listen %s: %w", l.Address(), err)
		}
	}
	return nil
}

func (g *Gateway) loadIssuers() error {
	iss, err := g.Store.Issuers()
	if err != nil {
		return fmt.Errorf("load issuers: %w", err)
	}
	return g.Verifier.SetIssuers(iss)
}

// Start serves MQTT and the admin API. It returns once listeners are up.
func (g *Gateway) Start(ctx context.Context) error {
	g.started = time.Now()
	if err := g.Broker.Server.Serve(); err != nil {
		return fmt.Errorf("start mqtt: %w", err)
	}
	shareCtx, stopShares := context.WithCancel(context.Background())
	g.stopShares, g.sharesDone = stopShares, make(chan struct{})
	go func() { defer close(g.sharesDone); g.runShares(shareCtx) }()
	// --- CoAP ---
	if g.CoAP != nil {
		if err := g.CoAP.Start(); err != nil {
			_ = g.Broker.Server.Close()
			return err
		}
	}
	// --- end CoAP ---
	if g.HTTP != nil {
		g.HTTP.Start()
	}
	a, err := newAdminServer(g)
	if err != nil {
		_ = g.Broker.Server.Close()
		return err
	}
	g.admin = a
	if g.cfg.Metrics.Listen != "" {
		if err := g.metrics.serve(g.cfg.Metrics.Listen); err != nil {
			_ = a.close()
			_ = g.Broker.Server.Close()
			return err
		}
	}
	gcCtx, cancel := context.WithCancel(context.Background())
	g.wg.Add(2)
	go func() { defer g.wg.Done(); a.serve() }()
	go func() { defer g.wg.Done(); g.Store.RunGC(gcCtx, 10*time.Minute) }()
	g.stopGC = cancel
	board, err := hw.Open(hw.Config{LEDPin: g.cfg.HW.LEDPin, ButtonPin: g.cfg.HW.ButtonPin, LongPress: g.cfg.HW.LongPress}, g.log.With("component", "hw"))
	if err != nil {
		g.log.Error("hardware: pair button and status LED unavailable", "err", err)
	} else {
		g.board = board
		bctx, stop := context.WithCancel(context.Background())
		g.stopBoard = stop
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.runBoard(bctx, board) }()
	}
	if g.Bridge != nil {
		g.Bridge.Start(context.Background())
	}
	if g.Syncer != nil {
		seenCtx, stopSeen := context.WithCancel(context.Background())
		g.stopSeen = stopSeen
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.reportSeen(seenCtx) }()
		syncCtx, stop := context.WithCancel(context.Background())
		g.stopSync = stop
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.Syncer.Run(syncCtx) }()
	}
	g.log.Info("gateway ready", "gateway", g.cfg.Gateway.ID, "listeners", g.ListenerAddrs(), "admin", g.cfg.Admin.Socket)
	return nil
}

// ListenerAddrs lists the bound MQTT addresses.
func (g *Gateway) ListenerAddrs() []string {
	var out []string
	for _, l := range g.listeners {
		out = append(out, l.Protocol()+"://"+l.Address())
	}
	if g.HTTP != nil {
		out = append(out, "https://"+g.HTTP.Addr())
	}
	return out
}

// Addr returns the bound address of the listener with the given protocol (tcp or tls).
func (g *Gateway) Addr(protocol string) string {
	for _, l := range g.listeners {
		if l.Protocol() == protocol {
			return l.Address()
		}
	}
	return ""
}

// Close stops serving and closes the store. It may be called more than once.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() { g.closeErr = g.close() })
	return g.closeErr
}

func (g *Gateway) close() error {
	var errs []error
	if g.stopShares != nil { // first: its re-checks reach every front end
		g.stopShares()
		<-g.sharesDone
	}
	if g.admin != nil {
		errs = append(errs, g.admin.close())
	}
	errs = append(errs, g.metrics.close())
	if g.CoAP != nil { // --- CoAP ---
		errs = append(errs, g.CoAP.Close())
	}
	if g.HTTP != nil {
		errs = append(errs, g.HTTP.Close())
	}
	if g.Broker != nil {
		errs = append(errs, g.Broker.Server.Close())
	}
	if g.Bridge != nil { // after the broker: no more publishes to queue
		g.Bridge.Stop()
	}
	if g.stopGC != nil {
		g.stopGC()
	}
	if g.stopSync != nil {
		g.stopSync()
	}
	if g.stopBoard != nil {
		g.stopBoard()
	}
	if g.stopSeen != nil {
		g.stopSeen()
	}
	g.wg.Wait()
	if g.board != nil {
		errs = append(errs, g.board.Close())
	}
	errs = append(errs, g.Store.Close())
	return errors.Join(errs...)
}

// onApplied runs after every committed batch: caches follow the store, and
// every live session the batch touches is re-checked at once.
func (g *Gateway) onApplied(a store.Applied) {
	start := time.Now()
	defer func() { g.metrics.kickLat.Observe(time.Since(start).Seconds()) }()
	b := a.Batch
	g.Broker.Gen.Add(1)
	// Caches first, so that the re-checks below see the new state.
	if a.Replaced || len(b.Classes) > 0 || len(b.Delete.Classes) > 0 {
		if err := loadClassLimits(g.Store, g.Broker); err != nil {
			g.log.Error("reload class limits failed; keeping the previous ones", "err", err)
		}
	}
	if a.Replaced || len(b.Issuers) > 0 || len(b.Delete.Issuers) > 0 {
		if err := g.loadIssuers(); err != nil {
			// Fail closed: trust no key rather than keys that may be gone.
			g.log.Error("reload issuers failed; trusting no token issuer until the next change", "err", err)
			_ = g.Verifier.SetIssuers(nil)
		}
		// A CONNECT verified against the old keys after the first bump is
		// re-checked when it registers.
		g.Broker.Gen.Add(1)
	}
	if a.Replaced || len(b.Devices) > 0 || len(b.Delete.Devices) > 0 || len(b.Classes) > 0 || len(b.Delete.Classes) > 0 {
		g.uma.Invalidate() // the shared resources: owned devices' topic groups
	}
	if a.Replaced || len(b.Grants) > 0 || len(b.Delete.Grants) > 0 {
		g.wakeShares() // the next window boundary or expiry may have moved
	}
	dropped := 0
	if len(b.Revocations) > 0 {
		dropped = g.forgetRevoked(b.Revocations)
	}
	// Then every principal the batch names, on every front end.
	ended := g.enforce.Applied(a)
	if len(b.Revocations) > 0 {
		g.log.Info("revocations applied", "count", len(b.Revocations), "sessions_ended", ended, "cached_tokens_dropped", dropped)
	}
}

// forgetRevoked drops the cached tokens a batch's revocations cover, in one
// pass over the cache for the whole batch: a snapshot may carry 100,000.
func (g *Gateway) forgetRevoked(rs []store.Revocation) int {
	byKind := map[store.RevocationKind]map[string]store.Revocation{}
	for _, r := range rs {
		if byKind[r.Kind] == nil {
			byKind[r.Kind] = map[string]store.Revocation{}
		}
		byKind[r.Kind][r.Value] = r
	}
	return g.Verifier.Forget(func(c *authn.Claims) bool {
		r, ok := byKind[store.RevokeToken][c.JTI]
		if ok && authn.RevocationCovers(r, c) {
			return true
		}
		if r, ok = byKind[store.RevokeDevice][c.ClientID]; ok && authn.RevocationCovers(r, c) {
			return true
		}
		r, ok = byKind[store.RevokeSubject][c.Subject]
		return ok && authn.RevocationCovers(r, c)
	})
}

// serverCert is the certificate MQTT over TLS and CoAP over DTLS present:
// mqtt.tls.cert and key, or the gateway's own self-signed one, made once and
// kept in the state directory.
func (g *Gateway) serverCert() (tls.Certificate, error) {
	g.certOnce.Do(func() {
		cfg := g.cfg
		if cfg.MQTT.TLS.Cert != "" {
			if g.cert, g.certErr = tls.LoadX509KeyPair(cfg.MQTT.TLS.Cert, cfg.MQTT.TLS.Key); g.certErr != nil {
				g.certErr = fmt.Errorf("mqtt.tls.cert/key: %w", g.certErr)
			}
			return
		}
		var fp string
		dir := filepath.Join(cfg.StateDir, "tls")
		if g.cert, fp, g.certErr = pki.SelfSigned(dir, cfg.Gateway.ID); g.certErr != nil {
			g.certErr = fmt.Errorf("mqtt.tls: self-signed certificate: %w", g.certErr)
			return
		}
		g.log.Info("tls: using the gateway's self-signed certificate; set mqtt.tls.cert and key for one from your CA",
			"sha256", fp, "dir", dir)
	})
	return g.cert, g.certErr
}

// kick ends the sessions a request names, on every front end.
func (g *Gateway) kick(device, subject, jti, why string) int {
	sel := enforce.Selector{Device: device, Subject: subject, JTI: jti}
	if sel == enforce.All {
		return 0 // a kick names something; never everything
	}
	return g.enforce.Kick(sel, why)
}

// coapSessions is the number of live CoAP sessions (0 without CoAP).
func (g *Gateway) httpStreams() int {
	if g.HTTP == nil {
		return 0
	}
	return len(g.HTTP.Streams(""))
}

func (g *Gateway) coapSessions() int {
	if g.CoAP == nil {
		return 0
	}
	return g.CoAP.Sessions("")
}

// completeRevocations fills what an operator may leave out of a revocation:
// revoked_at defaults to now, and expires_at to the moment after which no
// token it covers could still be accepted here (auth.max_token_lifetime plus
// skew later), so the entry is kept exactly as long as it matters (RFC 9770).
func (g *Gateway) completeRevocations(rs []store.Revocation) {
	now := time.Now()
	for i := range rs {
		if rs[i].RevokedAt.IsZero() && rs[i].Kind == store.RevokeToken {
			rs[i].RevokedAt = now
		}
		if rs[i].ExpiresAt.IsZero() && !rs[i].RevokedAt.IsZero() {
			rs[i].ExpiresAt = rs[i].RevokedAt.Add(g.cfg.Auth.MaxTokenLifetime + g.cfg.Auth.ClockSkew + g.cfg.Auth.ExpLeeway)
		}
	}
}

// EnrollmentPath is where the gateway's enrollment is kept.
func EnrollmentPath(cfg config.Config) string {
	if cfg.Sync.Enrollment != "" {
		return cfg.Sync.Enrollment
	}
	return filepath.Join(cfg.StateDir, "enrollment.json")
}

// loadEnrollment sets up the syncer when the gateway is enrolled.
func (g *Gateway) loadEnrollment() error {
	e, err := client.LoadEnrollment(EnrollmentPath(g.cfg))
	if errors.Is(err, os.ErrNotExist) {
		g.log.Info("not enrolled with an authority: deciding from imported records only; run edgeid enroll to sync")
		return nil
	}
	if err != nil {
		return err
	}
	s, err := client.NewSyncer(e, g.Store, g.log.With("component", "sync"))
	if err != nil {
		return err
	}
	s.OnReject = func(reason string) { g.metrics.rejects.WithLabelValues(reason).Inc() }
	s.Prepare = func(b *store.Batch) { g.extendRevocations(b.Revocations) }
	g.Syncer = s
	g.log.Info("enrolled", "gateway", e.Gateway, "authority", e.Authority)
	return nil
}

// Healthy answers whether the daemon's main parts respond: the store reads,
// and the session registry's lock can be taken. The watchdog pings systemd
// only when it does, so a hung gateway is restarted.
func (g *Gateway) Healthy(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		if _, err := g.Store.Rev(); err != nil {
			done <- fmt.Errorf("store: %w", err)
			return
		}
		_ = g.Broker.Sessions.All()
		done <- nil
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("health check timed out: %w", ctx.Err())
	}
}

// StatusLine is the one-line state systemd shows.
func (g *Gateway) StatusLine() string {
	sync := "not enrolled"
	if g.Syncer != nil {
		sync = "authority offline"
		if ss, err := g.Syncer.Status(); err == nil && ss.Stale && ss.Reason != "" {
			sync = "authority stale: " + ss.Reason
		} else if g.Syncer.Online() {
			sync = "authority online"
		}
	}
	return fmt.Sprintf("%d sessions; %s", g.Broker.Sessions.Len(), sync)
}

// gate refuses token connects while their times cannot be judged: the clock
// is before this build (a Pi without RTC before NTP answers: a 1970 clock
// would accept every expired token), or the store is older than
// sync.max_staleness.
func (g *Gateway) gate() *authn.Error {
	if now := time.Now(); now.Before(ClockFloor) {
		return &authn.Error{Reason: "clock_unsynchronized", Detail: fmt.Sprintf(
			"the clock says %s, before this edgeid was built; token connects wait for NTP", now.UTC().Format(time.RFC3339))}
	}
	if g.cfg.Sync.MaxStaleness <= 0 || g.Syncer == nil {
		return nil
	}
	last := g.Syncer.LastContact()
	if last.IsZero() {
		c, err := g.Store.Cursor()
		if err != nil {
			return &authn.Error{Reason: authn.ReasonStore, Detail: err.Error()}
		}
		last = c.SyncedAt
	}
	if time.Since(last) > g.cfg.Sync.MaxStaleness {
		return &authn.Error{Reason: "stale_sync", Detail: "no signed heartbeat from the authority that found the store current for longer than sync.max_staleness; token connects refused until it syncs"}
	}
	return nil
}

// extendRevocations keeps synced revocations at least as long as this
// gateway could still accept a token they cover: its own max token lifetime
// and clock skew may be longer than the authority assumed.
func (g *Gateway) extendRevocations(rs []store.Revocation) {
	// A covered token is taken until its exp plus exp_leeway, and its iat
	// may be up to clock_skew ahead: keep the entry for both.
	skew, life := g.cfg.Auth.ClockSkew+g.cfg.Auth.ExpLeeway, g.cfg.Auth.MaxTokenLifetime
	for i := range rs {
		r := &rs[i]
		if r.ExpiresAt.IsZero() {
			continue // kept forever
		}
		min := r.ExpiresAt.Add(skew)
		if r.Kind != store.RevokeToken && !r.RevokedAt.IsZero() {
			if m := r.RevokedAt.Add(life + skew); m.After(min) {
				min = m
			}
		}
		if min.After(r.ExpiresAt) {
			r.ExpiresAt = min
		}
	}
}

// reportSeen tells the authority, now and then, which devices are connected
// and when the others left, for the owners' "My devices" page.
func (g *Gateway) reportSeen(ctx context.Context) {
	t := time.NewTicker(g.cfg.Sync.PresenceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seen := cloudsync.Seen{}
		for d, s := range g.Broker.Sessions.Seen(time.Now()) {
			seen[d] = cloudsync.SeenAt{At: s.At, Online: s.Online}
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := g.Syncer.ReportSeen(rctx, seen); err != nil {
			g.log.Debug("presence report not sent", "err", err)
		}
		cancel()
	}
}

// authorityURL is where devices get tokens ("" when not enrolled).
func (g *Gateway) authorityURL() string {
	if g.Syncer == nil {
		return ""
	}
	return g.Syncer.E.Authority
}
