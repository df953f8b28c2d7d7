// Package httpapi is the gateway's HTTPS front end, an OAuth 2.0 resource
// server: topics as resources (POST publishes, GET reads the retained
// message, GET with Accept: text/event-stream subscribes as server-sent
// events) and protected routes to local services. A request carries a
// Bearer token (RFC 6750), a DPoP-bound token with its proof (RFC 9449) or
// a client certificate (RFC 8705 for cnf x5t#S256 tokens, or a device
// registered by certificate); it is decided by the same authenticator,
// class ∩ scope permissions and throttle as MQTT and CoAP. Event streams
// are sessions: edge/enforce ends them on revocation, kick and credential
// end, and re-checks them on store changes.
package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/net/netutil"

	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/edge/uma"
)

// Broker is what the HTTP front end needs of the MQTT broker (the same
// three-and-one methods CoAP uses): a publish put into the topic space with
// the device that sent it, an inline subscription (retained messages first)
// and its end, and a topic's retained messages.
type Broker interface {
	Inject(device string, pk packets.Packet) error
	Subscribe(filter string, id int, handler mqtt.InlineSubFn) error
	Unsubscribe(filter string, id int) error
	Retained(topic string) []packets.Packet
}

// ErrBusy is what Broker.Inject returns when the message cannot be kept
// now (the cloud bridge's queue is full): 503 with Retry-After.
var ErrBusy = errors.New("gateway queue full")

// Counters are the gateway's message counters this front end adds to.
// MessagesIn is the broker's to count: a publish through Broker.Inject
// reaches its hooks as a client's PUBLISH does.
type Counters struct {
	Denied, Throttled, MessagesIn, MessagesOut, BytesOut *atomic.Uint64
}

// Options build a Server.
type Options struct {
	Config      config.HTTP
	Certificate *tls.Certificate
	Auth        *authn.Authenticator
	DPoP        *dpop.Verifier
	Broker      Broker
	Throttle    *throttle.Gate
	// Gate, when it returns an error, refuses token requests with 503 (the
	// store is too stale or the clock cannot be trusted), as MQTT's 0x88.
	Gate          func() *authn.Error
	MaxPacketSize int
	Log           *slog.Logger
	Counters      Counters
	Now           func() time.Time
	// UMA answers a refusal of an owner's shared resource (a device's
	// topic group) with a permission ticket: 401 with WWW-Authenticate:
	// UMA, or 403 without a ticket when the authority cannot be reached.
	// nil: refusals keep their ordinary answers.
	UMA *uma.Server
	// SubscriptionIDs gives each event stream an inline subscription id
	// that no other user of the broker's inline client holds.
	SubscriptionIDs func() int
}

// bodyTimeout bounds reading a request's body; maxConns the connections
// open at once (past it, new ones wait in the kernel's backlog).
const (
	bodyTimeout = 30 * time.Second
	maxConns    = 2048
)

// Server is the HTTPS front end.
type Server struct {
	o       Options
	log     *slog.Logger
	srv     *http.Server
	ln      net.Listener
	streams *streams
	// Requests counts requests by outcome, for metrics.
	Requests, Refused, Throttled atomic.Uint64
}

// New builds the server and binds its listener; Start serves.
func New(o Options) (*Server, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, p := range []**atomic.Uint64{&o.Counters.Denied, &o.Counters.Throttled, &o.Counters.MessagesIn, &o.Counters.MessagesOut, &o.Counters.BytesOut} {
		if *p == nil {
			*p = new(atomic.Uint64)
		}
	}
	if o.SubscriptionIDs == nil {
		var n atomic.Int64
		n.Store(1 << 30)
		o.SubscriptionIDs = func() int { return int(n.Add(1)) }
	}
	s := &Server{o: o, log: o.Log, streams: newStreams(o.Config.MaxStreams, o.Config.MaxStreamsPerDevice)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/topics/{topic...}", s.publish)
	mux.HandleFunc("GET /v1/topics/{topic...}", s.get)
	for _, r := range o.Config.Routes {
		h, err := s.route(r)
		if err != nil {
			return nil, err
		}
		mux.Handle(r.Prefix, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "not_found", "no resource here: /v1/topics/<topic> or a configured route")
	})
	tc := &tls.Config{Certificates: []tls.Certificate{*o.Certificate}, MinVersion: tls.VersionTLS12,
		// The certificate is asked for, not required: a token alone is a
		// credential; one bound to a certificate (cnf x5t#S256) needs it.
		ClientAuth: tls.RequestClientCert}
	s.srv = &http.Server{Handler: s.guard(mux), TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: o.Config.MaxHeaderBytes,
		ErrorLog: slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug)}
	ln, err := net.Listen("tcp", o.Config.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", o.Config.Listen, err)
	}
	s.ln = netutil.LimitListener(ln, maxConns)
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Start serves until Close.
func (s *Server) Start() {
	go func() {
		if err := s.srv.ServeTLS(s.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("https front end stopped", "err", err)
		}
	}()
}

// Close ends every stream and stops the server.
func (s *Server) Close() error {
	s.streams.endAll("gateway stopping")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// guard counts requests and bounds what a request may hold before any
// handler: its body (the largest MQTT packet), and a panic in a handler
// answered 500 rather than dropping the connection silently.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		defer func() {
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				s.log.Error("https handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				fail(w, http.StatusInternalServerError, "server_error", "internal error")
			}
		}()
		r.Body = http.MaxBytesReader(w, r.Body, int64(s.o.MaxPacketSize))
		// The whole body within bodyTimeout: a client that announces a body
		// and never sends it does not hold the connection (event streams
		// clear it once they start).
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyTimeout))
		h.ServeHTTP(w, r)
	})
}
