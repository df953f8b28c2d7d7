// Package uma is the gateway's side of UMA 2.0 as the resource server of
// its owners' devices: which shared resource (a device's topic group, as its
// class names it) a refused topic or filter is, and the permission ticket
// the client takes to the authority for a requesting party token (UMA 2.0
// Grant §3.2; the ticket comes from the authority's permission endpoint,
// UMA Federated Authorization §4, through Server.Ticket). Deciding what an
// RPT grants is edge/authn's (shares.go); this package only answers a
// refusal.
package uma

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Timeout bounds the ticket call: a client waits for the answer (an HTTP
// request, an MQTT SUBACK on the client's read loop).
const Timeout = 2 * time.Second

// Each requester (a token's subject; "" for requests with no credential,
// which share one bucket) may ask for ticketRate tickets a second, with a
// burst of ticketBurst: a client refused again and again costs the
// authority a call per second at most. At most maxAskers buckets are kept;
// past that they all start again (a new burst for everyone, bounded).
const (
	ticketRate  = 1
	ticketBurst = 10
	maxAskers   = 4096
)

// maxInflight bounds the ticket calls in progress at once over the gateway:
// past it a refusal gets no ticket (as if the authority were unreachable),
// so clients hammering refused topics cannot queue up calls to it.
const maxInflight = 16

// ErrNotShared says that a refused topic is no owner's shared resource:
// the refusal keeps its ordinary answer.
var ErrNotShared = errors.New("not a shared resource")

// ErrUnavailable wraps the reason a shared resource's refusal carries no
// ticket: the gateway is not enrolled, the authority is unreachable or
// refused, or too many ticket calls are in progress.
var ErrUnavailable = errors.New("no permission ticket")

// Challenge is what a refusal tells the client: the ticket and where to
// take it (the authority's URL, UMA's as_uri).
type Challenge struct {
	Ticket string
	ASURI  string
}

// Server answers refusals of shared resources with a permission ticket.
type Server struct {
	Store *store.Store
	// ASURI is the authority's URL ("" when not enrolled).
	ASURI string
	// Ticket asks the authority for a permission ticket (the enrolled
	// Syncer's Ticket); nil when not enrolled.
	Ticket func(context.Context, []cloudsync.PermissionRequest) (string, error)

	inflight chan struct{}
	once     sync.Once

	askMu  sync.Mutex
	askers map[string]*rate.Limiter

	// gen counts store changes that may change the index (Invalidate);
	// the index was built at builtGen (0: never).
	gen atomic.Uint64

	mu       sync.Mutex
	builtGen uint64
	index    []resource
}

// resource is one device's topic group, its filter expanded for the device.
type resource struct {
	id, owner, filter string
	pub, sub          bool // the scopes it may be shared with
}

// Invalidate marks the index stale: the store's devices or classes
// changed. It never waits (the store watcher calls it).
func (s *Server) Invalidate() { s.gen.Add(1) }

// Requests are the permission requests for an operation refused on
// filters (topic names for a publish or a read, filters for a
// subscription): one for each owned, active device's resource group whose
// filter covers one of them and that may be shared with the scope the
// operation needs (sub for subscribe, pub for publish). Resources owned by
// requester (the refused token's subject; "" for none) are left out: an
// owner needs no share of their own devices. A ticket names one owner's
// resources (the authority refuses more), so only the owner of the first
// match (by resource id) is asked for. None: no filter is a shared
// resource.
func (s *Server) Requests(act policy.Action, requester string, filters ...string) ([]cloudsync.PermissionRequest, error) {
	scope := store.ScopeSub
	if act == policy.Publish {
		scope = store.ScopePub
	}
	index, err := s.resources()
	if err != nil {
		return nil, err
	}
	var out []cloudsync.PermissionRequest
	owner := ""
	for _, r := range index {
		if (scope == store.ScopeSub && !r.sub) || (scope == store.ScopePub && !r.pub) || (requester != "" && r.owner == requester) ||
			(owner != "" && r.owner != owner) {
			continue
		}
		// A publish names a topic, which a filter covers when it matches
		// it; a subscription's filter must be inside the group's (a
		// filter wider than one device's group is no one's resource).
		for _, f := range filters {
			if policy.Subset(f, r.filter) {
				out = append(out, cloudsync.PermissionRequest{ResourceID: r.id, ResourceScopes: []string{scope}})
				owner = r.owner
				break
			}
		}
	}
	return out, nil
}

// Ask gets a permission ticket for reqs from the authority, within Timeout.
// Errors wrap ErrUnavailable.
func (s *Server) Ask(ctx context.Context, reqs []cloudsync.PermissionRequest) (Challenge, error) {
	if !s.Enabled() {
		return Challenge{}, fmt.Errorf("%w: the gateway is not enrolled with an authority", ErrUnavailable)
	}
	s.once.Do(func() { s.inflight = make(chan struct{}, maxInflight) })
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		return Challenge{}, fmt.Errorf("%w: %d ticket requests to the authority already in progress", ErrUnavailable, maxInflight)
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	t, err := s.Ticket(ctx, reqs)
	if err != nil {
		return Challenge{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return Challenge{Ticket: t, ASURI: s.ASURI}, nil
}

// Enabled reports whether the gateway is enrolled with an authority that
// can give tickets: without one there is no UMA challenge at all, and
// refusals keep their ordinary answers.
func (s *Server) Enabled() bool { return s != nil && s.Ticket != nil && s.ASURI != "" }

// Challenge is Requests then Ask: ErrNotShared when filter is no shared
// resource or the gateway is not enrolled (the authority is not called), an
// error wrapping ErrUnavailable when it is one but no ticket could be had,
// another error for a store error.
func (s *Server) Challenge(ctx context.Context, filter string, act policy.Action, requester string) (Challenge, error) {
	if !s.Enabled() {
		return Challenge{}, ErrNotShared
	}
	reqs, err := s.Requests(act, requester, filter)
	if err != nil {
		return Challenge{}, err
	}
	if len(reqs) == 0 {
		return Challenge{}, ErrNotShared
	}
	if !s.allow(requester) {
		return Challenge{}, fmt.Errorf("%w: %q asked for more than %d tickets a second", ErrUnavailable, requester, ticketRate)
	}
	return s.Ask(ctx, reqs)
}

// allow takes one ticket from requester's bucket.
func (s *Server) allow(requester string) bool {
	s.askMu.Lock()
	defer s.askMu.Unlock()
	l, ok := s.askers[requester]
	if !ok {
		if s.askers == nil || len(s.askers) >= maxAskers {
			s.askers = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(ticketRate, ticketBurst)
		s.askers[requester] = l
	}
	return l.Allow()
}

// resources is the index of shared resources, rebuilt from the store after
// a change. It lists every owned, active device's groups: at a home
// gateway a few dozen; a gateway with thousands of devices scans them once
// per change, when a refusal first needs the index, and then each refusal
// is a scan of memory.
func (s *Server) resources() ([]resource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen := s.gen.Load() + 1 // builtGen 0 is "never built"
	if s.builtGen == gen {
		return s.index, nil
	}
	classes, err := s.Store.Classes()
	if err != nil {
		return nil, fmt.Errorf("shared resources: %w", err)
	}
	byName := map[string]store.DeviceClass{}
	for _, c := range classes {
		if len(c.Resources) > 0 {
			byName[c.Name] = c
		}
	}
	var index []resource
	if len(byName) > 0 {
		devices, err := s.Store.Devices()
		if err != nil {
			return nil, fmt.Errorf("shared resources: %w", err)
		}
		for _, d := range devices {
			c, ok := byName[d.Class]
			if !ok || d.Owner == "" || d.Status != store.DeviceActive {
				continue
			}
			for _, g := range c.Resources {
				rules, err := policy.Expand([]policy.Rule{{Filter: g.Filter, Actions: policy.Subscribe}}, policy.Vars{Device: d.ID, Owner: d.Owner, Client: d.ID})
				if err != nil || len(rules) != 1 {
					continue // a value the template cannot take: no resource (as authn.Shares grants none)
				}
				index = append(index, resource{id: store.ResourceID(d.ID, g.Name), owner: d.Owner, filter: rules[0].Filter,
					pub: g.Allows(store.ScopePub), sub: g.Allows(store.ScopeSub)})
			}
		}
	}
	sort.Slice(index, func(i, j int) bool { return index[i].id < index[j].id })
	// A change applied while this was read bumped gen: the next use
	// rebuilds.
	s.index, s.builtGen = index, gen
	return index, nil
}
