// Package synctest is a man in the middle for sync tests: an HTTPS server
// that presents the certificate gateways pin (as a TLS-terminating load
// balancer holding the authority's certificate would) and forwards to a real
// authority, and that can withhold deltas, strip heartbeats, go silent after
// the response headers, or answer 503 as a load balancer does while the
// authority is away. It cannot forge anything signed: that is what the
// gateway's checks rest on.
package synctest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgeid/edgeid/cloudsync"
)

// Down is how the proxy answers every sync request while the authority is
// "away": a status and, if not empty, a Retry-After header.
type Down struct {
	Code       int
	RetryAfter string
}

// Proxy sits between gateways and an authority.
type Proxy struct {
	// URL is the proxy's public address: the authority's URL as gateways
	// know it. Fingerprint is the SHA-256 of its certificate, for pinning.
	URL, Fingerprint string

	// WithholdFrom drops every delta with to >= its value (0: none) from
	// pull answers and from the stream.
	WithholdFrom atomic.Uint64
	// StripHeartbeats drops signed heartbeats from the stream and from pull
	// answers; the stream's unsigned pings still pass.
	StripHeartbeats atomic.Bool
	// Silent forwards nothing more on event streams (response headers are
	// sent; then the stream is held open and quiet).
	Silent atomic.Bool
	// DemandSnapshot sets need_snapshot in every pull answer (it is
	// unsigned, so anyone on the path can).
	DemandSnapshot atomic.Bool
	// Streams counts event-stream requests that reached the proxy;
	// Snapshots, snapshot requests.
	Streams, Snapshots atomic.Int64
	// Withheld counts deltas dropped.
	Withheld atomic.Int64

	front, back *httptest.Server
	client      *http.Client
	down        atomic.Pointer[Down]
	mu          sync.Mutex
	cut         chan struct{} // closed to end the open streams
	done        chan struct{}
}

// Start starts a proxy; backend is called with the proxy's URL (the
// authority's public URL) and returns the authority's handler. The proxy
// is closed when the test ends.
func Start(t testing.TB, backend func(publicURL string) http.Handler) *Proxy {
	t.Helper()
	p := &Proxy{cut: make(chan struct{}), done: make(chan struct{}), client: &http.Client{Transport: &http.Transport{}}}
	var h http.Handler
	p.back = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	p.front = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.front.EnableHTTP2 = true
	p.front.StartTLS()
	p.URL = p.front.URL
	sum := sha256.Sum256(p.front.Certificate().Raw)
	p.Fingerprint = hex.EncodeToString(sum[:])
	h = backend(p.URL)
	t.Cleanup(p.Close)
	return p
}

// Server is the proxy's front: the HTTPS server gateways talk to.
func (p *Proxy) Server() *httptest.Server { return p.front }

// Close ends the open streams and stops the proxy.
func (p *Proxy) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.front.Close()
	p.back.Close()
}

// SetDown makes the proxy answer every sync request with d, and ends the
// open streams, as a load balancer does when its backend goes away; nil
// forwards again.
func (p *Proxy) SetDown(d *Down) {
	p.down.Store(d)
	if d != nil {
		p.Cut()
	}
}

// Cut ends the event streams open now.
func (p *Proxy) Cut() {
	p.mu.Lock()
	close(p.cut)
	p.cut = make(chan struct{})
	p.mu.Unlock()
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if d := p.down.Load(); d != nil && strings.HasPrefix(r.URL.Path, "/sync/") {
		if d.RetryAfter != "" {
			w.Header().Set("Retry-After", d.RetryAfter)
		}
		http.Error(w, "upstream unavailable", d.Code)
		return
	}
	switch r.URL.Path {
	case cloudsync.PathEvents:
		p.Streams.Add(1)
	case cloudsync.PathSnapshot:
		p.Snapshots.Add(1)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.back.URL+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	case r.URL.Path == cloudsync.PathChanges:
		p.changes(w, resp.Body)
	case r.URL.Path == cloudsync.PathEvents:
		p.events(w, r, resp.Body)
	default:
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}
}

// withhold reports whether a signed batch is a delta the proxy drops. It
// reads the payload without verifying it: the proxy has no keys.
func (p *Proxy) withhold(raw string) bool {
	n := p.WithholdFrom.Load()
	if n == 0 {
		return false
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var b cloudsync.Batch
	if json.Unmarshal(payload, &b) != nil || b.Snapshot || b.To < n {
		return false
	}
	p.Withheld.Add(1)
	return true
}

func (p *Proxy) changes(w http.ResponseWriter, body io.Reader) {
	var ch cloudsync.ChangesResponse
	if err := json.NewDecoder(body).Decode(&ch); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	kept := []string{}
	for _, b := range ch.Batches {
		if !p.withhold(b) {
			kept = append(kept, b)
		}
	}
	ch.Batches = kept
	if p.StripHeartbeats.Load() {
		ch.Heartbeat = ""
	}
	if p.DemandSnapshot.Load() {
		ch = cloudsync.ChangesResponse{Batches: []string{}, NeedSnapshot: true}
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(ch)
}

// events forwards an event stream block by block, dropping what the knobs
// say, until either side goes away, the stream is cut or the proxy closes.
func (p *Proxy) events(w http.ResponseWriter, r *http.Request, body io.ReadCloser) {
	fl, _ := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Closing the upstream body ends the read loop below.
		select {
		case <-cut:
		case <-p.done:
		case <-r.Context().Done():
		case <-stop:
		}
		body.Close()
	}()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	var block bytes.Buffer
	event, data := "", ""
	for sc.Scan() {
		line := sc.Text()
		block.WriteString(line + "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "":
			drop := p.Silent.Load() ||
				(event == "batch" && p.withhold(data)) ||
				(event == "heartbeat" && p.StripHeartbeats.Load())
			if !drop {
				if _, err := w.Write(block.Bytes()); err != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
			}
			block.Reset()
			event, data = "", ""
		}
	}
	if p.Silent.Load() {
		// Quiet to the end: hold the stream open until the gateway gives up.
		select {
		case <-cut:
		case <-p.done:
		case <-r.Context().Done():
		}
	}
}
