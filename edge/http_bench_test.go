package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/config"
)

// The HTTPS front end's cost, each beside its baseline in the same run:
//
//	go test -run '^$' -bench 'BenchmarkHTTP' -benchtime 20000x -count 6 ./edge/
//
// BenchmarkHTTPRoute: GET requests per second through a protected route
// (TLS, Bearer token, scope check, identity headers, reverse proxy) to an
// httptest upstream, against the same upstream asked directly (plain HTTP,
// and over TLS). BenchmarkHTTPPublish: authorized publishes per second as
// HTTPS POSTs (Bearer) against MQTT QoS 0 PUBLISHes (paho.golang), from the
// same number of clients, each to its own topic; a run ends when the broker
// has taken every message. Go's http client with keep-alive; N workers
// (httpBenchWorkers), each with its own connection.

const httpBenchWorkers = benchPublishers

var benchPayload = []byte(`{"t":21.5,"h":40}`)

func benchUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"room":1,"setpoint":21.0}`))
	})
}

// benchClient is a keep-alive client with a connection per worker.
func benchClient(tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc,
		MaxIdleConns: httpBenchWorkers * 2, MaxIdleConnsPerHost: httpBenchWorkers * 2, IdleConnTimeout: time.Minute}}
}

// caConfig trusts the gateway's demo CA.
func (g *gw) caConfig(b *testing.B) *tls.Config {
	pem, err := os.ReadFile(g.files.CACert)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool}
}

// runHTTPLoad runs b.N calls of do over httpBenchWorkers goroutines and
// reports what per second; done, when set, waits for the work to land.
func runHTTPLoad(b *testing.B, what string, do func(worker int) error, done func()) {
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range httpBenchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := do(w); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if done != nil {
		done()
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), what)
}

// get is one request, its body read (so the connection is kept).
func get(c *http.Client, url string, hdr http.Header, want int) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header = hdr
	return do(c, req, want)
}

func do(c *http.Client, req *http.Request, want int) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s, want %d", req.Method, req.URL, resp.Status, want)
	}
	return nil
}

func BenchmarkHTTPRoute(b *testing.B) {
	b.Run("upstream-direct", func(b *testing.B) {
		up := httptest.NewServer(benchUpstream())
		defer up.Close()
		c := benchClient(nil)
		runHTTPLoad(b, "req/s", func(int) error { return get(c, up.URL+"/svc/rooms/1", http.Header{}, 200) }, nil)
	})
	b.Run("upstream-direct-tls", func(b *testing.B) {
		up := httptest.NewTLSServer(benchUpstream())
		defer up.Close()
		c := up.Client()
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = httpBenchWorkers * 2
		runHTTPLoad(b, "req/s", func(int) error { return get(c, up.URL+"/svc/rooms/1", http.Header{}, 200) }, nil)
	})
	b.Run("edgeid-route", func(b *testing.B) {
		up := httptest.NewServer(benchUpstream())
		defer up.Close()
		g := startBenchGateway(b, func(c *config.Config) {
			c.HTTP.Listen = "127.0.0.1:0"
			c.HTTP.Routes = []config.HTTPRoute{{Prefix: "/api/heating/", Upstream: up.URL + "/svc/", Scope: "heating:read"}}
		})
		tok := g.token("thermo-1", "alice", func(c map[string]any) { c["scope"] = c["scope"].(string) + " heating:read" })
		c := benchClient(g.caConfig(b))
		url := "https://" + g.g.HTTP.Addr() + "/api/heating/rooms/1"
		runHTTPLoad(b, "req/s", func(int) error {
			return get(c, url, http.Header{"Authorization": {"Bearer " + tok}}, 200)
		}, nil)
	})
}

func BenchmarkHTTPPublish(b *testing.B) {
	// waitIn waits until the broker has taken n more messages than before.
	waitIn := func(b *testing.B, g *gw, before uint64) func() {
		return func() {
			deadline := time.Now().Add(30 * time.Second)
			for g.g.Broker.Counters.MessagesIn.Load()-before < uint64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("the broker took %d of %d messages", g.g.Broker.Counters.MessagesIn.Load()-before, b.N)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	b.Run("https-post-bearer", func(b *testing.B) {
		g := startBenchGateway(b, func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:0" })
		c := benchClient(g.caConfig(b))
		toks, urls := make([]string, httpBenchWorkers), make([]string, httpBenchWorkers)
		for i := range toks {
			toks[i] = "Bearer " + g.token(fmt.Sprintf("bench-%d", i), "alice", nil)
			urls[i] = fmt.Sprintf("https://%s/v1/topics/devices/bench-%d/telemetry/env", g.g.HTTP.Addr(), i)
		}
		before := g.g.Broker.Counters.MessagesIn.Load()
		runHTTPLoad(b, "msgs/s", func(w int) error {
			req, err := http.NewRequest(http.MethodPost, urls[w], bytes.NewReader(benchPayload))
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", toks[w])
			req.Header.Set("Content-Type", "application/json")
			return do(c, req, http.StatusNoContent)
		}, waitIn(b, g, before))
	})
	b.Run("mqtt-qos0", func(b *testing.B) {
		g := startBenchGateway(b, func(c *config.Config) { c.HTTP.Listen = "127.0.0.1:0" })
		pubs := make([]*paho.Client, httpBenchWorkers)
		topics := make([]string, httpBenchWorkers)
		for i := range pubs {
			id := fmt.Sprintf("bench-%d", i)
			conn, err := net.Dial("tcp", g.g.Addr("tcp"))
			if err != nil {
				b.Fatal(err)
			}
			pubs[i] = paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ca, err := pubs[i].Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
				Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(g.token(id, "alice", nil))}})
			cancel()
			if err != nil || ca.ReasonCode != 0 {
				b.Fatalf("connect %s: %v", id, err)
			}
			defer pubs[i].Disconnect(&paho.Disconnect{})
			topics[i] = "devices/" + id + "/telemetry/env"
		}
		before := g.g.Broker.Counters.MessagesIn.Load()
		runHTTPLoad(b, "msgs/s", func(w int) error {
			_, err := pubs[w].Publish(context.Background(), &paho.Publish{Topic: topics[w], QoS: 0, Payload: benchPayload})
			return err
		}, waitIn(b, g, before))
	})
}
