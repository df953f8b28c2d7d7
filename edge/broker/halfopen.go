package broker

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// HalfOpen counts the MQTT connections that have not yet sent their whole
// CONNECT — from accept, through the TLS handshake, until the CONNECT has
// been read — over every listener that shares it, and refuses a new
// connection past a gateway-wide cap or a per-source cap. Such connections
// are unauthenticated, and each holds a goroutine, buffers and (before
// mqtt.max_connect_size bounds it) the CONNECT's declared length.
//
// A connection is admitted by the Listener when it is accepted (before any
// TLS handshake) and leaves the count when the broker reports that its
// CONNECT was read (ConnectRead, wired to Broker.ConnectRead) or when the
// connection ends, whichever is first. A refused connection is closed at
// once, counted in Refused, and logged at most once per source every
// halfOpenLogEvery.
//
// The source is the IP address for IPv4 and the /64 prefix for IPv6 (one
// host usually holds a whole /64). A nil *HalfOpen admits everything.
type HalfOpen struct {
	max, perSource int
	log            *slog.Logger

	// Refused counts connections closed at accept for being over a cap
	// (metric edgeid_mqtt_half_open_refused_total).
	Refused atomic.Uint64

	mu       sync.Mutex
	total    int
	bySource map[string]int
	byRemote map[string][]*halfSlot // usually one slot per remote address
	logged   *lru.Cache[string, *halfLog]
	logRate  *rate.Limiter // all sources together
	unlogged uint64        // refusals whose line was suppressed by logRate
}

// halfOpenLogEvery is how often at most one source's refusals are logged.
const halfOpenLogEvery = 5 * time.Second

type halfSlot struct {
	remote, source string
	done           bool
}

type halfLog struct {
	at         time.Time
	suppressed uint64
}

// NewHalfOpen caps half-open connections at max over all listeners sharing
// it and perSource from one source; a cap of 0 or less is no cap. Refusals
// are logged on log (nil: not logged).
func NewHalfOpen(max, perSource int, log *slog.Logger) *HalfOpen {
	c, _ := lru.New[string, *halfLog](4096)
	return &HalfOpen{max: max, perSource: perSource, log: log,
		bySource: map[string]int{}, byRemote: map[string][]*halfSlot{},
		logged: c, logRate: rate.NewLimiter(rate.Every(time.Second), 10)}
}

// Len is the number of half-open connections now (metric edgeid_mqtt_half_open).
func (h *HalfOpen) Len() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

// sourceOf is the key a remote address is counted under.
func sourceOf(addr net.Addr) string {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(addr.String())
		if err != nil {
			return addr.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return (&net.IPNet{IP: ip.Mask(net.CIDRMask(64, 128)), Mask: net.CIDRMask(64, 128)}).String()
}

// admit counts a new connection from remote, or reports false (and counts
// and logs the refusal) when a cap is reached. listener names the listener
// in the log.
func (h *HalfOpen) admit(remote net.Addr, listener string) (*halfSlot, bool) {
	if h == nil {
		return nil, true
	}
	src := sourceOf(remote)
	h.mu.Lock()
	n := h.bySource[src]
	var reason string
	var limit int
	switch {
	case h.perSource > 0 && n >= h.perSource:
		reason, limit = "per_source", h.perSource
	case h.max > 0 && h.total >= h.max:
		reason, limit = "total", h.max
	}
	if reason != "" {
		total := h.total
		line, suppressed, others := h.shouldLog(src)
		h.mu.Unlock()
		h.Refused.Add(1)
		if line && h.log != nil {
			h.log.Warn("connection refused: too many half-open connections (no CONNECT yet)", "listener", listener,
				"source", src, "reason", reason, "limit", limit, "from_source", n, "half_open", total,
				"refused_since_last_line", suppressed, "other_lines_suppressed", others)
		}
		return nil, false
	}
	s := &halfSlot{remote: remote.String(), source: src}
	h.bySource[src] = n + 1
	h.total++
	h.byRemote[s.remote] = append(h.byRemote[s.remote], s)
	h.mu.Unlock()
	return s, true
}

// shouldLog decides, with h.mu held, whether a refusal from src is logged:
// at most once per source every halfOpenLogEvery, and a few lines a second
// over all sources. It returns how many refusals from src went unlogged
// since its last line, and how many lines were suppressed overall.
func (h *HalfOpen) shouldLog(src string) (bool, uint64, uint64) {
	now := time.Now()
	l, ok := h.logged.Get(src)
	if ok && now.Sub(l.at) < halfOpenLogEvery {
		l.suppressed++
		return false, 0, 0
	}
	if !h.logRate.AllowN(now, 1) {
		h.unlogged++
		if ok {
			l.suppressed++
		}
		return false, 0, 0
	}
	var suppressed uint64
	if ok {
		suppressed = l.suppressed
	}
	others := h.unlogged
	h.unlogged = 0
	h.logged.Add(src, &halfLog{at: now})
	return true, suppressed, others
}

// release takes s out of the count if it is still in it.
func (h *HalfOpen) release(s *halfSlot) {
	if h == nil || s == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.done {
		return
	}
	slots := h.byRemote[s.remote]
	for i, x := range slots {
		if x == s {
			h.drop(s.remote, slots, i)
			return
		}
	}
}

// drop removes slots[i] (of remote) from the count, with h.mu held.
func (h *HalfOpen) drop(remote string, slots []*halfSlot, i int) {
	s := slots[i]
	s.done = true
	if len(slots) == 1 {
		delete(h.byRemote, remote)
	} else {
		h.byRemote[remote] = append(slots[:i:i], slots[i+1:]...)
	}
	h.total--
	if n := h.bySource[s.source] - 1; n > 0 {
		h.bySource[s.source] = n
	} else {
		delete(h.bySource, s.source)
	}
}

// ConnectRead takes the connection from remote (its RemoteAddr().String(),
// as mochi's Client.Net.Remote) out of the count: it has sent its whole
// CONNECT. Wire it to Broker.ConnectRead. An unknown remote is ignored.
//
// Two live connections can share a remote address only across listeners
// (the same source port to two gateway ports); then either one's slot is
// released first, which keeps the per-source and total counts right.
func (h *HalfOpen) ConnectRead(remote string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if slots := h.byRemote[remote]; len(slots) > 0 {
		h.drop(remote, slots, 0)
	}
}
