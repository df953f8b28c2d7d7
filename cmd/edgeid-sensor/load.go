package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/spf13/pflag"
)

// load is the load generator: many devices at once, each connecting with its
// token and publishing telemetry at a rate, from a process of its own (so the
// gateway's memory and CPU can be measured apart from the clients').
func load(ctx context.Context, args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("load", pflag.ContinueOnError)
	addr := fs.String("broker", "127.0.0.1:1883", "gateway MQTT address")
	tokens := fs.String("tokens", "", `file of "client_id token" lines, one device a line`)
	rate := fs.Float64("rate", 1, "messages per second per device (0: connect only)")
	dur := fs.Duration("duration", 10*time.Second, "how long to publish")
	hold := fs.Duration("hold", 0, "keep the connections open this long after publishing")
	qos := fs.Int("qos", 1, "publish QoS (0 or 1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*tokens)
	if err != nil {
		return fmt.Errorf("--tokens: %w", err)
	}
	type dev struct{ id, tok string }
	var devs []dev
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if id, tok, ok := strings.Cut(strings.TrimSpace(sc.Text()), " "); ok {
			devs = append(devs, dev{id, tok})
		}
	}
	f.Close()
	if len(devs) == 0 {
		return fmt.Errorf("--tokens %s: no \"client_id token\" lines", *tokens)
	}
	var connected, refused, sent, acked, failed atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(*dur)
	sem := make(chan struct{}, 200) // connect at most this many at once
	for _, d := range devs {
		wg.Add(1)
		go func(d dev) {
			defer wg.Done()
			sem <- struct{}{}
			conn, err := net.DialTimeout("tcp", *addr, 10*time.Second)
			if err != nil {
				<-sem
				refused.Add(1)
				return
			}
			c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			ca, err := c.Connect(cctx, &paho.Connect{ClientID: d.id, KeepAlive: 60, CleanStart: true,
				Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(d.tok)}})
			cancel()
			<-sem
			if err != nil || ca.ReasonCode != 0 {
				refused.Add(1)
				return
			}
			connected.Add(1)
			defer c.Disconnect(&paho.Disconnect{})
			if *rate > 0 {
				tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
				for time.Now().Before(stop) {
					select {
					case <-ctx.Done():
						tick.Stop()
						return
					case <-tick.C:
					}
					t0 := time.Now()
					sent.Add(1)
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					r, err := c.Publish(pctx, &paho.Publish{Topic: "devices/" + d.id + "/telemetry/load", QoS: byte(*qos), Payload: []byte(`{"t":21.5}`)})
					cancel()
					if err != nil || (r != nil && r.ReasonCode >= 0x80) {
						failed.Add(1)
						continue
					}
					acked.Add(1)
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
				tick.Stop()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(stop) + *hold):
			}
		}(d)
	}
	wg.Wait()
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	_, err = fmt.Fprintf(out, "devices %d connected %d refused %d | sent %d acked %d failed %d in %s (%.0f msgs/s) | latency p50 %s p99 %s\n",
		len(devs), connected.Load(), refused.Load(), sent.Load(), acked.Load(), failed.Load(), el.Round(time.Millisecond),
		float64(acked.Load())/el.Seconds(), pct(0.5).Round(time.Microsecond), pct(0.99).Round(time.Microsecond))
	return err
}
