package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/admin/adminserver"
	"github.com/edgeid/edgeid/store"
)

// adminBackend is the gateway as the admin API sees it
// (adminserver.Backend): each method calls the Gateway and shapes the answer.
type adminBackend struct{ g *Gateway }

var _ adminserver.Backend = adminBackend{}

// adminServer is the admin API on admin.socket, as the gateway starts and stops it.
type adminServer struct {
	s   *adminserver.Server
	log *slog.Logger
}

func newAdminServer(g *Gateway) (*adminServer, error) {
	log := g.log.With("component", "admin")
	s, err := adminserver.New(adminserver.Config{Socket: g.cfg.Admin.Socket, Group: g.cfg.Admin.Group, ReadGroup: g.cfg.Admin.ReadGroup,
		Backend: adminBackend{g}, Log: log})
	if err != nil {
		return nil, err
	}
	return &adminServer{s: s, log: log}, nil
}

func (a *adminServer) serve() {
	if err := a.s.Serve(); err != nil {
		a.log.Error("admin api stopped", "err", err)
	}
}

func (a *adminServer) close() error { return a.s.Close() }

func (b adminBackend) Status(context.Context) (admin.Status, error) {
	g := b.g
	rev, err := g.Store.Rev()
	if err != nil {
		return admin.Status{}, err
	}
	counts, err := g.Store.Counts()
	if err != nil {
		return admin.Status{}, err
	}
	st := admin.Status{Gateway: g.cfg.Gateway.ID, Version: Version, StartedAt: g.started, Listeners: g.ListenerAddrs(),
		Sessions: g.Broker.Sessions.Len() + g.coapSessions() + g.httpStreams(), StoreRev: rev, Records: counts, TokenCache: g.Verifier.CacheLen(),
		PairingUntil: g.PairingUntil(), LED: g.ledPattern().String(), Hardware: g.board != nil && g.board.Enabled()}
	if s := g.Syncer; s != nil {
		cur, err := g.Store.Cursor()
		if err != nil {
			return admin.Status{}, err
		}
		ss, err := s.Status()
		if err != nil {
			return admin.Status{}, err
		}
		last := ss.HeardAt
		if last.IsZero() {
			last = cur.SyncedAt
		}
		lag := -1.0
		if !last.IsZero() {
			lag = time.Since(last).Seconds()
		}
		st.Sync = &admin.SyncStatus{Authority: s.E.Authority, Gateway: s.E.Gateway, Online: ss.Online, Epoch: cur.Epoch,
			Cursor: cur.Seq, SyncedAt: cur.SyncedAt, LagSeconds: lag, Stale: ss.Stale, Reason: ss.Reason, HeardAt: ss.HeardAt,
			Head: ss.Head, HeartbeatSeconds: ss.Interval.Seconds(), NextTry: ss.NextTry, Failures: ss.Failures, LastError: ss.LastError}
	}
	return st, nil
}

func (b adminBackend) Sessions(context.Context) ([]admin.Session, error) {
	out := []admin.Session{}
	for _, s := range b.g.Broker.Sessions.All() {
		out = append(out, admin.Session{Transport: "mqtt", ClientID: s.ClientID, Device: s.Device, Method: string(s.Method), Subject: s.Subject,
			Remote: s.Remote, Protocol: s.Protocol, ConnectedAt: s.ConnectedAt, Expires: s.Expires, Offline: s.Offline(), Queued: s.Queued()})
	}
	if b.g.CoAP != nil {
		for _, s := range b.g.CoAP.List() {
			out = append(out, admin.Session{Transport: s.Transport, Device: s.Device, Method: s.Method, Subject: s.Subject,
				Remote: s.Remote, ConnectedAt: s.ConnectedAt, Expires: s.Expires, Observations: s.Observations})
		}
	}
	if b.g.HTTP != nil {
		for _, s := range b.g.HTTP.Streams("") {
			out = append(out, admin.Session{Transport: "https", Device: s.Device, Method: s.Method, Subject: s.Subject,
				Remote: s.Remote, ConnectedAt: s.ConnectedAt, Expires: s.Expires, Filter: s.Filter})
		}
	}
	return out, nil
}

func (b adminBackend) Devices(_ context.Context, online bool) ([]admin.Device, error) {
	ds, err := b.g.Store.Devices()
	if err != nil {
		return nil, err
	}
	out := []admin.Device{}
	for _, d := range ds {
		n := 0
		for _, s := range b.g.Broker.Sessions.ByDevice(d.ID) {
			if !s.Offline() {
				n++
			}
		}
		if b.g.CoAP != nil {
			n += b.g.CoAP.Sessions(d.ID)
		}
		if b.g.HTTP != nil {
			n += len(b.g.HTTP.Streams(d.ID))
		}
		if online && n == 0 {
			continue
		}
		d.PSK = nil // a secret: never over the admin socket
		out = append(out, admin.Device{Device: d, Sessions: n})
	}
	return out, nil
}

func (b adminBackend) Revocations(context.Context) ([]store.Revocation, error) {
	return b.g.Store.Revocations()
}

// Bridge is the cloud bridge's remotes as the admin API shows them, each
// with whether its class can be read (a missing one lets nothing cross).
func (b adminBackend) Bridge(context.Context) ([]admin.BridgeRemote, error) {
	out := []admin.BridgeRemote{}
	if b.g.Bridge == nil {
		return out, nil
	}
	classes := map[string]string{}
	for _, rc := range b.g.cfg.Bridge.WithDefaults(b.g.cfg.Gateway.ID).Remotes {
		classes[rc.Name] = rc.Class
	}
	for _, s := range b.g.Bridge.Status() {
		r := admin.BridgeRemote{Remote: s.Remote, Address: s.Address, Principal: s.Principal, State: s.State, Since: s.Since,
			LastError: s.LastError, Queued: s.Queued, QueuedBytes: s.QueuedBytes, Oldest: s.Oldest, Memory: s.Memory,
			Forwarded: s.Forwarded, Resent: s.Resent, Dropped: s.Dropped, RefusedOut: s.RefusedOut, Received: s.Received,
			RefusedIn: s.RefusedIn, Connects: s.Connects, BytesWritten: s.BytesWritten, QueueError: s.QueueError, Class: classes[s.Remote]}
		if _, err := b.g.Store.Class(r.Class); errors.Is(err, store.ErrNotFound) {
			r.ClassError = fmt.Sprintf("class %q is not in the store: nothing crosses until it is imported or synced", r.Class)
		} else if err != nil {
			r.ClassError = fmt.Sprintf("class %q: %v", r.Class, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (b adminBackend) Kick(_ context.Context, device, subject, jti string) int {
	return b.g.kick(device, subject, jti, "kicked by technician")
}

func (b adminBackend) Import(_ context.Context, batch *store.Batch) (uint64, error) {
	b.g.completeRevocations(batch.Revocations)
	return b.g.Store.Apply(batch, nil)
}

func (b adminBackend) SyncNow(context.Context) error {
	if b.g.Syncer == nil {
		return adminserver.ErrNotEnrolled
	}
	b.g.Syncer.Now()
	return nil
}

func (b adminBackend) OpenPairing(d time.Duration) time.Time { return b.g.OpenPairing(d) }

func (b adminBackend) PairingUntil() time.Time { return b.g.PairingUntil() }
