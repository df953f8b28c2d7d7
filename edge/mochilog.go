package edge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// quietMochi is the handler of mochi's own log. It drops the per-packet
// "publish packet error" records (a refused or throttled publish is
// answered with its reason code and counted in the metrics), and limits
// mochi's warnings and errors per client: a device sending malformed packets
// in a loop, reconnecting each time, must not fill a journal on an SD card.
// (Patched mochi already logs a bounded line, never the packet.)
type quietMochi struct {
	slog.Handler
	lim *clientLimits
}

// clientLimits holds a token bucket per client id: a burst of
// mochiLogBurst lines, then one per mochiLogEvery.
type clientLimits struct {
	mu         sync.Mutex
	byClient   *lru.Cache[string, *rate.Limiter]
	suppressed map[string]int
}

const (
	mochiLogBurst = 5
	mochiLogEvery = 10 * time.Second
)

func newQuietMochi(h slog.Handler) quietMochi {
	c, _ := lru.New[string, *rate.Limiter](4096)
	return quietMochi{Handler: h, lim: &clientLimits{byClient: c, suppressed: map[string]int{}}}
}

func (q quietMochi) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet error" || r.Message == "publish packet rejected" {
		return nil
	}
	if r.Level >= slog.LevelWarn {
		client := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "client" {
				client = a.Value.String()
				return false
			}
			return true
		})
		ok, dropped := q.lim.allow(client, r.Message)
		if !ok {
			return nil
		}
		if dropped > 0 {
			r.AddAttrs(slog.Int("suppressed_before", dropped))
		}
	}
	return q.Handler.Handle(ctx, r)
}

// allow reports whether a line for client may be written, and how many
// were suppressed since the last one written.
func (l *clientLimits) allow(client, msg string) (bool, int) {
	key := client + "\x00" + msg
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.byClient.Get(key)
	if !ok {
		lim = rate.NewLimiter(rate.Every(mochiLogEvery), mochiLogBurst)
		l.byClient.Add(key, lim)
	}
	if !lim.Allow() {
		if len(l.suppressed) < 4096 {
			l.suppressed[key]++
		}
		return false, 0
	}
	n := l.suppressed[key]
	delete(l.suppressed, key)
	return true, n
}

func (q quietMochi) WithAttrs(a []slog.Attr) slog.Handler {
	return quietMochi{Handler: q.Handler.WithAttrs(a), lim: q.lim}
}
func (q quietMochi) WithGroup(n string) slog.Handler {
	return quietMochi{Handler: q.Handler.WithGroup(n), lim: q.lim}
}
