package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// HTTP configures the HTTPS front end: topics as resources (publish, read
// retained, subscribe as server-sent events) and protected routes to local
// services, each request authorized by the same policy and throttle as MQTT
// and CoAP.
type HTTP struct {
	// Listen is the HTTPS address (the gateway's certificate, as for MQTT
	// over TLS); "" (the default) turns it off.
	Listen string `mapstructure:"listen"`
	// DPoPNonce makes DPoP proofs carry a server nonce (RFC 9449 §8): a
	// proof without the current one is answered 401 use_dpop_nonce with a
	// DPoP-Nonce header. DPoPMaxAge is how old a proof's iat may be.
	DPoPNonce  bool          `mapstructure:"dpop_nonce"`
	DPoPMaxAge time.Duration `mapstructure:"dpop_max_age"`
	// MaxStreams bounds open event streams over the gateway, and per device.
	MaxStreams          int `mapstructure:"max_streams"`
	MaxStreamsPerDevice int `mapstructure:"max_streams_per_device"`
	// MaxHeaderBytes bounds a request's headers (431 past it).
	MaxHeaderBytes int `mapstructure:"max_header_bytes"`
	// Routes are protected local services.
	Routes []HTTPRoute `mapstructure:"routes"`
}

// HTTPRoute maps a path prefix to a local upstream.
type HTTPRoute struct {
	// Prefix is the path the route serves, e.g. /api/heating/ (it must start
	// and end with '/' and not be under /v1/).
	Prefix string `mapstructure:"prefix"`
	// Upstream is the service's base URL (http://127.0.0.1:8123/); the
	// path after Prefix is appended to it.
	Upstream string `mapstructure:"upstream"`
	// Scope is the scope value a token must hold; "" takes any valid
	// credential of the gateway (token or certificate).
	Scope string `mapstructure:"scope"`
}

func defaultHTTP() HTTP {
	return HTTP{DPoPMaxAge: time.Minute, MaxStreams: 1000, MaxStreamsPerDevice: 8, MaxHeaderBytes: 16 << 10}
}

func (h HTTP) validate(bad func(key, format string, args ...any), checkAddr func(key, addr string)) {
	checkAddr("http.listen", h.Listen)
	if h.DPoPMaxAge < 5*time.Second || h.DPoPMaxAge > 10*time.Minute {
		bad("http.dpop_max_age", "%s is outside 5s..10m", h.DPoPMaxAge)
	}
	if h.MaxStreams < 1 {
		bad("http.max_streams", "%d must be at least 1", h.MaxStreams)
	}
	if h.MaxStreamsPerDevice < 1 || h.MaxStreamsPerDevice > h.MaxStreams {
		bad("http.max_streams_per_device", "%d is outside 1..http.max_streams (%d)", h.MaxStreamsPerDevice, h.MaxStreams)
	}
	if h.MaxHeaderBytes < 1024 || h.MaxHeaderBytes > 1<<20 {
		bad("http.max_header_bytes", "%d is outside 1024..1048576", h.MaxHeaderBytes)
	}
	seen := map[string]bool{}
	for i, r := range h.Routes {
		key := fmt.Sprintf("http.routes[%d]", i)
		if !strings.HasPrefix(r.Prefix, "/") || !strings.HasSuffix(r.Prefix, "/") || strings.HasPrefix(r.Prefix, "/v1/") || r.Prefix == "/" {
			bad(key+".prefix", "%q must start and end with '/', not be '/' and not be under /v1/ (the topics API)", r.Prefix)
		} else if seen[r.Prefix] {
			bad(key+".prefix", "%q is served by two routes", r.Prefix)
		}
		seen[r.Prefix] = true
		u, err := url.Parse(r.Upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(key+".upstream", "%q is not http(s)://host:port/path", r.Upstream)
		}
		if strings.ContainsAny(r.Scope, " \t") {
			bad(key+".scope", "%q must be one scope value, without spaces", r.Scope)
		}
	}
}
