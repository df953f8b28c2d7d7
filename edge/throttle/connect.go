package throttle

import (
	"net"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// ConnectLimiter holds off a source address that hammers CONNECTs (password
// guessing, a device in a reconnect loop). Memory is bounded: the least
// recently seen addresses are forgotten first.
type ConnectLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	by    *lru.Cache[string, *rate.Limiter]
}

// NewConnectLimiter allows perSecond connects per source address with burst;
// perSecond 0 turns limiting off (nil limiter).
func NewConnectLimiter(perSecond float64, burst, maxSources int) *ConnectLimiter {
	if perSecond <= 0 {
		return nil
	}
	c, _ := lru.New[string, *rate.Limiter](maxSources)
	return &ConnectLimiter{limit: rate.Limit(perSecond), burst: burst, by: c}
}

// Allow reports whether a CONNECT from remote (host:port) may proceed now.
func (l *ConnectLimiter) Allow(remote string, now time.Time) bool {
	if l == nil {
		return true
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	l.mu.Lock()
	lim, ok := l.by.Get(host)
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.by.Add(host, lim)
	}
	l.mu.Unlock()
	return lim.AllowN(now, 1)
}
