package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
)

// metrics are the authority's Prometheus metrics. /metrics is served on its
// own listener (metrics_listen, loopback by default), never on the public
// one: it tells anyone who can read it how many gateways there are, which
// routes and grants fail and how often, which is a map for an attacker, and
// Prometheus has no credential to present that the public listener would check.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	streams  prometheus.Gauge
}

func newMetrics(a *authority.Authority, log *slog.Logger) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeid_authority_http_requests_total",
			Help: "HTTP requests answered, by route (the matched pattern, unmatched for none) and status code."}, []string{"route", "code"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeid_authority_token_requests_total",
			Help: "Token endpoint requests, by grant type (none if missing, other if unknown) and result (ok or the OAuth error code)."}, []string{"grant_type", "result"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgeid_authority_event_streams",
			Help: "Gateway event streams (GET " + cloudsync.PathEvents + ") open now."}),
	}
	m.reg.MustRegister(m.requests, m.tokens, m.streams, stateCollector{a: a, log: log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves /metrics; a store that cannot be read leaves its two
// gauges out (and is logged) rather than failing the scrape.
func (m *metrics) handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, ErrorLog: promLog{log}})
}

type promLog struct{ log *slog.Logger }

func (l promLog) Println(v ...any) { l.log.Warn("metrics: " + fmt.Sprint(v...)) }

var (
	descFeedHead = prometheus.NewDesc("edgeid_authority_feed_head",
		"The sync feed's head: the revision of the last change applied to the store (sampled on scrape).", nil, nil)
	descGateways = prometheus.NewDesc("edgeid_authority_gateways",
		"Gateways enrolled (sampled on scrape).", nil, nil)
	descFeedLag = prometheus.NewDesc("edgeid_authority_feed_lag",
		"Changes not yet sent to the gateway furthest behind, among those that asked for changes or held a stream in the last 10 minutes (sampled on scrape).", nil, nil)
)

// feedLagWindow is how recently a gateway must have asked for changes to
// count in the feed lag: one that did not is offline, not lagging.
const feedLagWindow = 10 * time.Minute

// stateCollector reads the store at each scrape.
type stateCollector struct {
	a   *authority.Authority
	log *slog.Logger
}

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descFeedHead
	ch <- descGateways
	ch <- descFeedLag
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	if rev, err := c.a.Store.Rev(); err != nil {
		ch <- prometheus.NewInvalidMetric(descFeedHead, fmt.Errorf("store: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(descFeedHead, prometheus.GaugeValue, float64(rev))
	}
	if lag, err := c.a.FeedLag(feedLagWindow); err != nil {
		ch <- prometheus.NewInvalidMetric(descFeedLag, fmt.Errorf("store: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(descFeedLag, prometheus.GaugeValue, float64(lag))
	}
	if gws, err := c.a.Gateways(); err != nil {
		ch <- prometheus.NewInvalidMetric(descGateways, fmt.Errorf("gateways: %w", err))
	} else {
		ch <- prometheus.MustNewConstMetric(descGateways, prometheus.GaugeValue, float64(len(gws)))
	}
}

// Token endpoint label values are a fixed set, whatever a client sends.
var (
	grantTypes = map[string]bool{"client_credentials": true, authority.DeviceCodeGrant: true, "refresh_token": true,
		"urn:ietf:params:oauth:grant-type:uma-ticket": true, "urn:ietf:params:oauth:grant-type:jwt-bearer": true,
		"urn:ietf:params:oauth:grant-type:token-exchange": true, "authorization_code": true, "password": true}
	oauthErrors = map[string]bool{"invalid_request": true, "invalid_client": true, "invalid_grant": true,
		"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
		"authorization_pending": true, "slow_down": true, "access_denied": true, "expired_token": true,
		"invalid_dpop_proof": true, "use_dpop_nonce": true, "invalid_token": true, "server_error": true,
		"temporarily_unavailable": true, "request_submitted": true, "request_denied": true, "need_info": true}
)

// peekLimit is how much of a token request's body the wrapper reads to
// find grant_type. A token request is a few KiB (an assertion, a code); a
// longer body is passed on untouched and counted as grant_type none, and
// the handler applies its own limit to all of it.
const peekLimit = 64 << 10

// peekGrant returns the grant_type of a form-encoded token request,
// leaving r.Body as it was for the real handler.
func peekGrant(r *http.Request) string {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" || r.Body == nil {
		return "none"
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, peekLimit+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if err != nil || len(buf) > peekLimit {
		return "none"
	}
	f, err := url.ParseQuery(string(buf))
	if err != nil {
		return "none"
	}
	switch gt := f.Get("grant_type"); {
	case gt == "":
		return "none"
	case grantTypes[gt]:
		return gt
	}
	return "other"
}

type readCloser struct {
	io.Reader
	io.Closer
}

// tokenResult is ok for a 200, else the OAuth error code of the answer
// (other if it has none of the known ones).
func tokenResult(code int, body []byte) string {
	if code == http.StatusOK {
		return "ok"
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && oauthErrors[e.Error] {
		return e.Error
	}
	return "other"
}

// ops is what cmd/edgeid-authority puts in front of authority.NewHandler:
// /healthz, and (when m is set) the counts of each answer.
type ops struct {
	next http.Handler
	a    *authority.Authority
	m    *metrics
}

func (o ops) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		if o.m == nil {
			healthz(o.a).ServeHTTP(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w}
		healthz(o.a).ServeHTTP(rec, r)
		o.m.requests.WithLabelValues("/healthz", strconv.Itoa(rec.status())).Inc()
		return
	}
	if o.m == nil {
		o.next.ServeHTTP(w, r)
		return
	}
	rec := &recorder{ResponseWriter: w}
	token := r.Method == http.MethodPost && r.URL.Path == "/oauth/token"
	grant := ""
	if token {
		grant = peekGrant(r)
		rec.keep = 1 << 10
	}
	if r.Method == http.MethodGet && r.URL.Path == cloudsync.PathEvents {
		// A stream counts once it is answered 200, until its handler returns.
		rec.onOK = o.m.streams.Inc
		defer func() {
			if rec.code == http.StatusOK {
				o.m.streams.Dec()
			}
		}()
	}
	o.next.ServeHTTP(rec, r)
	// The ServeMux inside sets r.Pattern on this very request: a bounded
	// set of routes, never the raw path.
	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	code := rec.status()
	o.m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if token {
		o.m.tokens.WithLabelValues(grant, tokenResult(code, rec.body.Bytes())).Inc()
	}
}

// healthz answers 200 "ok" while the store answers a read and the authority
// is not closing, else 503 with the reason.
func healthz(a *authority.Authority) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		select {
		case <-a.Done():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		default:
		}
		if _, err := a.Store.Rev(); err != nil {
			http.Error(w, "store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
}

// recorder notes the status code and, when keep is set, the start of an
// error answer's body; it flushes through (event streams need it).
type recorder struct {
	http.ResponseWriter
	code int
	keep int // bytes of a non-200 body to keep
	body bytes.Buffer
	onOK func()
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
		if code == http.StatusOK && r.onOK != nil {
			r.onOK()
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if r.code != http.StatusOK && r.body.Len() < r.keep {
		r.body.Write(b[:min(len(b), r.keep-r.body.Len())])
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
