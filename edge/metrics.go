package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/bridge"
	"github.com/edgeid/edgeid/edge/throttle"
)

// metrics are the gateway's Prometheus series, served on metrics.listen
// (localhost by default: the box's own agent scrapes it).
type metrics struct {
	reg      *prometheus.Registry
	sessions *prometheus.GaugeVec
	auth     *prometheus.CounterVec
	kicks    *prometheus.CounterVec
	kickLat  prometheus.Histogram
	rejects  *prometheus.CounterVec
	srv      *http.Server
	ln       net.Listener
}

func protocolName(p byte) string {
	if p == 5 {
		return "mqtt5"
	}
	return "mqtt3"
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.sessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgeid_sessions", Help: "Live device sessions by protocol."}, []string{"protocol"})
	m.auth = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeid_auth_results_total",
		Help: "Connect authentication results by method and reason (reason ok for success)."}, []string{"method", "reason"})
	m.kicks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeid_sessions_ended_total",
		Help: "Sessions ended by the gateway (revoked, expired, kicked, changed)."}, []string{"reason"})
	m.kickLat = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgeid_kick_seconds",
		Help:    "Time from a store change being applied to the affected sessions being disconnected.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}})
	m.rejects = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeid_sync_batches_refused_total",
		Help: "Sync batches and heartbeats refused, by reason."}, []string{"reason"})
	c := &g.Broker.Counters
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.sessions, m.auth, m.kicks, m.kickLat, m.rejects,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		counter("edgeid_messages_in_total", "PUBLISH packets accepted from clients.", func() float64 { return float64(c.MessagesIn.Load()) }),
		counter("edgeid_messages_out_total", "PUBLISH packets delivered to clients.", func() float64 { return float64(c.MessagesOut.Load()) }),
		counter("edgeid_bytes_in_total", "Payload bytes accepted from clients.", func() float64 { return float64(c.BytesIn.Load()) }),
		counter("edgeid_bytes_out_total", "Payload bytes delivered to clients.", func() float64 { return float64(c.BytesOut.Load()) }),
		counter("edgeid_throttled_total", "Publishes refused or dropped for going over a rate limit.", func() float64 { return float64(c.Throttled.Load()) }),
		counter("edgeid_acl_denied_total", "Publishes, subscriptions and deliveries refused by authorization.", func() float64 { return float64(c.Denied.Load()) }),
		gauge("edgeid_mqtt_half_open", "MQTT connections that have not yet sent their whole CONNECT.", func() float64 { return float64(g.halfOpen.Len()) }),
		counter("edgeid_mqtt_half_open_refused_total", "MQTT connections closed at accept for being over a half-open cap.", func() float64 { return float64(g.halfOpen.Refused.Load()) }),
		// mochi counts what a client's full write queue refused
		// (mqtt.max_pending_writes, mqtt.max_pending_bytes).
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edgeid_mqtt_dropped_total",
			Help:        "Messages not delivered to an MQTT client, by reason: slow_subscriber, its queue of pending writes was full.",
			ConstLabels: prometheus.Labels{"reason": "slow_subscriber"}},
			func() float64 { return float64(atomic.LoadInt64(&g.Broker.Server.Info.MessagesDropped)) }),
		gauge("edgeid_qos2_held", "QoS 2 PUBLISHes received and not yet released (PUBREL), over all clients.", func() float64 { return float64(g.Broker.Server.QoS2Held.Load()) }),
		gauge("edgeid_offline_sessions", "Persistent MQTT sessions kept while their device is away.", func() float64 { return float64(g.Broker.Sessions.Offline()) }),
		gauge("edgeid_offline_queued", "Messages held for offline sessions.", func() float64 { return float64(g.Broker.OfflineQueued()) }),
		counter("edgeid_offline_queued_total", "Messages queued for offline sessions.", func() float64 { return float64(c.OfflineQueued.Load()) }),
		counter("edgeid_offline_dropped_total", "Messages dropped from a full offline queue, oldest first.", func() float64 { return float64(c.OfflineDropped.Load()) }),
		gauge("edgeid_token_cache_entries", "Verified tokens cached.", func() float64 { return float64(g.Verifier.CacheLen()) }),
		gauge("edgeid_revocations_held", "Revocations held in the store.", func() float64 {
			n, _ := g.Store.Counts()
			return float64(n["revocations"])
		}),
		gauge("edgeid_sync_stale", "1 while the store is not known to hold the authority's signed head.", func() float64 {
			if g.Syncer == nil {
				return 0
			}
			if ss, err := g.Syncer.Status(); err != nil || ss.Stale {
				return 1
			}
			return 0
		}),
		gauge("edgeid_sync_head", "The authority's last signed head revision.", func() float64 {
			if g.Syncer == nil {
				return 0
			}
			ss, _ := g.Syncer.Status()
			return float64(ss.Head)
		}),
		gauge("edgeid_sync_next_try_seconds", "Seconds until a waiting syncer tries the authority again (0: not waiting).", func() float64 {
			if g.Syncer == nil {
				return 0
			}
			ss, _ := g.Syncer.Status()
			if ss.NextTry.IsZero() {
				return 0
			}
			return max(0, time.Until(ss.NextTry).Seconds())
		}),
		gauge("edgeid_sync_online", "1 while the push stream is connected and its last signed heartbeat found the store current.", func() float64 {
			if g.Syncer != nil && g.Syncer.Online() {
				return 1
			}
			return 0
		}),
		gauge("edgeid_sync_cursor", "Sequence number of the last applied sync batch.", func() float64 {
			cur, _ := g.Store.Cursor()
			return float64(cur.Seq)
		}),
		gauge("edgeid_sync_lag_seconds", "Seconds since the last signed heartbeat whose head the store had reached (-1: never).", func() float64 {
			if g.Syncer == nil {
				return -1
			}
			last := g.Syncer.LastContact()
			if last.IsZero() {
				cur, _ := g.Store.Cursor()
				last = cur.SyncedAt
			}
			if last.IsZero() {
				return -1
			}
			return time.Since(last).Seconds()
		}),
	)
	if cs := g.CoAP; cs != nil {
		for _, tr := range []string{"coaps", "coap"} {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edgeid_coap_sessions",
				Help: "Live CoAP sessions by transport: coaps (DTLS) or coap (plain UDP, proven per request).", ConstLabels: prometheus.Labels{"transport": tr}},
				func() float64 { n, _ := cs.Counts(); return float64(n[tr]) }))
		}
		m.reg.MustRegister(
			gauge("edgeid_coap_observations", "Live CoAP observations (subscriptions).", func() float64 { _, o := cs.Counts(); return float64(o) }),
			counter("edgeid_coap_unauthorized_total", "CoAP requests answered 4.01: tokens and proofs of possession refused.",
				func() float64 { return float64(cs.Unauthorized.Load()) }),
		)
	}
	if g.Bridge != nil {
		m.reg.MustRegister(bridgeCollector{g.Bridge})
	}
	if hs := g.HTTP; hs != nil {
		m.reg.MustRegister(
			counter("edgeid_http_requests_total", "HTTPS requests received.", func() float64 { return float64(hs.Requests.Load()) }),
			counter("edgeid_http_refused_total", "HTTPS requests answered 401 or 403 (credential or permission refused).", func() float64 { return float64(hs.Refused.Load()) }),
			counter("edgeid_http_throttled_total", "HTTPS requests answered 429.", func() float64 { return float64(hs.Throttled.Load()) }),
			gauge("edgeid_http_streams", "Open HTTPS event streams (subscriptions).", func() float64 { return float64(len(hs.Streams(""))) }),
		)
	}
	// Which limit refused, from the throttles' own counts (a refusal that
	// ended the session included); edgeid_throttled_total stays the total
	// of refused and dropped publishes.
	for limit, th := range map[string]*throttle.Throttle{"device": g.Broker.Throttle.Devices, "subject": g.Broker.Throttle.Subjects, "class": g.Broker.Throttle.Classes} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "edgeid_throttle_refusals_total",
			Help:        "Publishes refused by each rate limit: device, subject, or class (all devices of a class together).",
			ConstLabels: prometheus.Labels{"limit": limit}}, func() float64 {
			r, d := th.Stats()
			return float64(r + d)
		}))
	}
	b := g.Broker
	b.Events.AuthResult = func(method string, r authn.Reason) {
		if r == "" {
			r = "ok"
		}
		m.auth.WithLabelValues(method, string(r)).Inc()
	}
	b.Events.Kicked = func(reason string) {
		// "revoked: device" and the like: keep the label set small.
		for i, ch := range reason {
			if ch == ':' {
				reason = reason[:i]
				break
			}
		}
		m.kicks.WithLabelValues(reason).Inc()
	}
	b.Events.Session = func(p byte, d int) { m.sessions.WithLabelValues(protocolName(p)).Add(float64(d)) }
	return m
}

// bridgeCollector is the cloud bridge's series, one set per remote (label
// remote), from one Status of the bridge per scrape.
type bridgeCollector struct{ b *bridge.Bridge }

var (
	bridgeConnected = prometheus.NewDesc("edgeid_bridge_connected", "1 while the bridge is connected to the remote.", []string{"remote"}, nil)
	bridgeQueued    = prometheus.NewDesc("edgeid_bridge_queue_messages", "QoS 1 messages waiting on disk for the remote.", []string{"remote"}, nil)
	bridgeQBytes    = prometheus.NewDesc("edgeid_bridge_queue_bytes", "Bytes of the remote's queue on disk.", []string{"remote"}, nil)
	bridgeOldest    = prometheus.NewDesc("edgeid_bridge_queue_oldest_seconds", "Age of the oldest message waiting on disk for the remote (0: none).", []string{"remote"}, nil)
	bridgeForwarded = prometheus.NewDesc("edgeid_bridge_forwarded_total", "Messages the remote acknowledged (QoS 1) or was sent (QoS 0).", []string{"remote"}, nil)
	bridgeResent    = prometheus.NewDesc("edgeid_bridge_resent_total", "QoS 1 messages sent to the remote again after a reconnect.", []string{"remote"}, nil)
	bridgeDropped   = prometheus.NewDesc("edgeid_bridge_dropped_total", "Messages for the remote dropped from a full or expired queue.", []string{"remote"}, nil)
	bridgeRefused   = prometheus.NewDesc("edgeid_bridge_refused_total", "Messages the bridge class refused: out (to the remote) or in (from it).", []string{"remote", "direction"}, nil)
	bridgeReceived  = prometheus.NewDesc("edgeid_bridge_received_total", "Messages from the remote published locally.", []string{"remote"}, nil)
	bridgeWritten   = prometheus.NewDesc("edgeid_bridge_queue_written_bytes_total", "Bytes written to the remote's queue on disk.", []string{"remote"}, nil)
)

func (bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{bridgeConnected, bridgeQueued, bridgeQBytes, bridgeOldest, bridgeForwarded, bridgeResent,
		bridgeDropped, bridgeRefused, bridgeReceived, bridgeWritten} {
		ch <- d
	}
}

func (c bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range c.b.Status() {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Remote)
		}
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{s.Remote}, labels...)...)
		}
		connected, oldest := 0.0, 0.0
		if s.State == "connected" {
			connected = 1
		}
		if !s.Oldest.IsZero() {
			oldest = max(0, now.Sub(s.Oldest).Seconds())
		}
		gauge(bridgeConnected, connected)
		gauge(bridgeQueued, float64(s.Queued))
		gauge(bridgeQBytes, float64(s.QueuedBytes))
		gauge(bridgeOldest, oldest)
		counter(bridgeForwarded, s.Forwarded)
		counter(bridgeResent, s.Resent)
		counter(bridgeDropped, s.Dropped)
		counter(bridgeRefused, s.RefusedOut, "out")
		counter(bridgeRefused, s.RefusedIn, "in")
		counter(bridgeReceived, s.Received)
		counter(bridgeWritten, s.BytesWritten)
	}
}

func (m *metrics) serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	// Profiles for field diagnosis, on the same localhost-only listener.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.ln = ln
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	return nil
}

func (m *metrics) close() error {
	if m.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}

// MetricsAddr is the bound metrics address ("" when off).
func (g *Gateway) MetricsAddr() string {
	if g.metrics == nil || g.metrics.ln == nil {
		return ""
	}
	return g.metrics.ln.Addr().String()
}
