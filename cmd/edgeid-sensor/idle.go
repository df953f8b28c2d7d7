package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
)

// idle opens N MQTT 5 sessions and holds them, idle (a PINGREQ each half
// keep-alive), so that a broker's memory per session can be read from
// another process. Once every connection has its CONNACK (or was refused)
// it prints one JSON line, "event":"connected", with the connects per second;
// when the hold ends (--hold, or SIGINT/SIGTERM) it closes them all and
// prints "event":"end" with the sessions the broker dropped meanwhile.
//
// `load --rate 0` also holds sessions, but only with tokens, from one source
// address, and reports only when it ends; the bench needs the count at the
// moment all are connected, while they are still held.
func idle(ctx context.Context, args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("idle", pflag.ContinueOnError)
	addr := fs.String("broker", "127.0.0.1:1883", "broker MQTT address (plain TCP)")
	sessions := fs.Int("sessions", 1000, "sessions to open")
	tokensFile := fs.String("tokens", "", `file of "client_id token" lines: its first N clients connect, each with its token (method ace)`)
	username := fs.String("username", "", `username to send; "{id}" is replaced by the client id`)
	password := fs.String("password", "", `password to send; "{id}" is replaced by the client id`)
	prefix := fs.String("id-prefix", "lean-idle-", "without --tokens, client ids are <prefix>00000, <prefix>00001, ...")
	sources := fs.Int("sources", 0, "spread the connections over this many loopback source addresses (127.1.0.1, ...); 0: the system's")
	concurrency := fs.Int("concurrency", 100, "connections in progress at once at most")
	hold := fs.Duration("hold", 0, "hold the sessions this long once connected (0: until interrupted)")
	keepAlive := fs.Duration("keepalive", 60*time.Second, "MQTT keep-alive (a PINGREQ is sent every half of it)")
	timeout := fs.Duration("timeout", 30*time.Second, "time allowed for each connection's CONNACK")
	reconnect := fs.Bool("reconnect", false, `once all are connected, end every session (DISCONNECT) and connect them all again with the same credentials; a second line, "event":"reconnected", reports that pass`)
	tlsCA := fs.String("tls-ca", "", "connect over TLS, trusting this PEM certificate (the broker's own self-signed one, or its CA)")
	tlsName := fs.String("tls-server-name", "localhost", "with --tls-ca, the name the broker's certificate must carry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tlsConf *tls.Config
	if *tlsCA != "" {
		pem, err := os.ReadFile(*tlsCA)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-ca %s: no PEM certificate in it", *tlsCA)
		}
		tlsConf = &tls.Config{RootCAs: pool, ServerName: *tlsName, MinVersion: tls.VersionTLS12}
	}
	if *sessions < 1 || *concurrency < 1 || fs.NArg() > 0 || *keepAlive < time.Second || *keepAlive > 65535*time.Second ||
		(*tokensFile != "" && (*username != "" || *password != "")) {
		return errUsage
	}
	var tokens map[string]string
	ids := make([]string, 0, *sessions)
	if *tokensFile != "" {
		var order []string
		var err error
		if tokens, order, err = readTokens(*tokensFile); err != nil {
			return err
		}
		if len(order) < *sessions {
			return fmt.Errorf("--tokens %s: %d clients, --sessions %d", *tokensFile, len(order), *sessions)
		}
		ids = order[:*sessions]
	} else {
		for i := range *sessions {
			ids = append(ids, fmt.Sprintf("%s%05d", *prefix, i))
		}
	}

	var mu sync.Mutex
	// connectAll opens every session, concurrency at a time, and reports.
	connectAll := func(event string) ([]*rawConn, idleResult, error) {
		conns := make([]*rawConn, len(ids))
		var connected, refused, failed atomic.Int64
		codes := map[string]int{}
		var firstErr string
		var last time.Time
		sem := make(chan struct{}, *concurrency)
		var wg sync.WaitGroup
		start := time.Now()
		for i, id := range ids {
			cr, err := credsFor(id, tokens, *username, *password)
			if err != nil {
				wg.Wait()
				return conns, idleResult{}, err
			}
			sem <- struct{}{}
			wg.Add(1)
			go func(i int, id string, cr creds) {
				defer wg.Done()
				c, err := dialRaw(ctx, *addr, sourceIP(i, *sources), id, cr, uint16(keepAlive.Seconds()), *timeout, tlsConf)
				<-sem
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					var ca errConnack
					if errors.As(err, &ca) {
						refused.Add(1)
						codes[fmt.Sprintf("0x%02x", ca.code)]++
					} else {
						failed.Add(1)
					}
					if firstErr == "" {
						firstErr = id + ": " + err.Error()
					}
					return
				}
				conns[i] = c
				connected.Add(1)
				last = time.Now()
			}(i, id, cr)
		}
		wg.Wait()
		res := idleResult{Event: event, Broker: *addr, Sessions: len(ids), Connected: connected.Load(),
			Refused: refused.Load(), Failed: failed.Load(), Codes: codes, FirstError: firstErr}
		if res.Connected > 0 {
			res.Seconds = last.Sub(start).Seconds()
			res.ConnectsPerS = float64(res.Connected) / res.Seconds
		}
		return conns, res, nil
	}
	conns, res, err := connectAll("connected")
	if err != nil {
		return err
	}
	firstErr := res.FirstError
	if *reconnect && res.Connected == int64(len(ids)) {
		// A reconnect storm (a Wi-Fi access point back, the uplink back):
		// every session ends with a DISCONNECT and comes back at once with
		// the same credentials, which a gateway has seen (and cached) once.
		if err := printJSON(out, res); err != nil {
			return err
		}
		for _, c := range conns {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte{0xe0, 0})
			c.Close()
		}
		if conns, res, err = connectAll("reconnected"); err != nil {
			return err
		}
		firstErr = res.FirstError
	}
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	if err := printJSON(out, res); err != nil {
		closeAll()
		return err
	}
	if res.Connected != int64(len(ids)) {
		closeAll()
		return errRefused{fmt.Sprintf("%d of %d sessions not connected (first: %s)", len(ids)-int(res.Connected), len(ids), firstErr)}
	}

	// Hold: a reader per connection notices the broker ending it.
	var closing atomic.Bool
	var lost atomic.Int64
	var lostWhy string
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Add(1)
		go func(c *rawConn) {
			defer readers.Done()
			err := drainConn(c.r) // returns when the connection ends
			if !closing.Load() {
				lost.Add(1)
				mu.Lock()
				if lostWhy == "" {
					lostWhy = err.Error()
				}
				mu.Unlock()
			}
		}(c)
	}
	held := time.Now()
	var end <-chan time.Time
	if *hold > 0 {
		t := time.NewTimer(*hold)
		defer t.Stop()
		end = t.C
	}
	ping := time.NewTicker(*keepAlive / 2)
	defer ping.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-end:
			break wait
		case <-ping.C:
			for _, c := range conns {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte{0xc0, 0})
			}
		}
	}
	closing.Store(true)
	closeAll()
	readers.Wait()
	return printJSON(out, idleEnd{Event: "end", HeldS: time.Since(held).Seconds(), Lost: lost.Load(), FirstLost: lostWhy})
}

type idleResult struct {
	Event        string         `json:"event"`
	Broker       string         `json:"broker"`
	Sessions     int            `json:"sessions"`
	Connected    int64          `json:"connected"`
	Refused      int64          `json:"refused"` // CONNACK with a failure reason code
	Failed       int64          `json:"failed"`  // no CONNACK (dial error, timeout, closed)
	Codes        map[string]int `json:"refusal_codes,omitempty"`
	Seconds      float64        `json:"seconds"` // first dial to the last CONNACK
	ConnectsPerS float64        `json:"connects_per_s"`
	FirstError   string         `json:"first_error,omitempty"`
}

type idleEnd struct {
	Event string  `json:"event"`
	HeldS float64 `json:"held_s"`
	Lost  int64   `json:"lost"` // sessions the broker ended during the hold
	// FirstLost is why the first of them ended.
	FirstLost string `json:"first_lost,omitempty"`
}

// drainConn reads and discards packets until the connection ends, and says
// how it ended (a DISCONNECT's reason code, or the read error).
func drainConn(r *bufio.Reader) error {
	for {
		typ, _, rem, err := readHeader(r)
		if err != nil {
			return err
		}
		if typ == ptDisconnect {
			return fmt.Errorf("DISCONNECT 0x%02x", disconnectCode(r, rem))
		}
		if _, err := r.Discard(rem); err != nil {
			return err
		}
	}
}

func printJSON(out io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}

// readTokens reads a file of "client_id token" lines: the tokens by client
// id, and the ids in file order.
func readTokens(path string) (map[string]string, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--tokens: %w", err)
	}
	defer f.Close()
	m := map[string]string{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if id, tok, ok := strings.Cut(strings.TrimSpace(sc.Text()), " "); ok {
			if _, dup := m[id]; !dup {
				order = append(order, id)
			}
			m[id] = tok
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("--tokens %s: %w", path, err)
	}
	if len(order) == 0 {
		return nil, nil, fmt.Errorf("--tokens %s: no \"client_id token\" lines", path)
	}
	return m, order, nil
}
