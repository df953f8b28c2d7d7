package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/store"
)

// adminServer is the local admin API: HTTP over a unix socket, each request
// authorized by the peer's credentials (SO_PEERCRED): root or the admin group.
type adminServer struct {
	g     *Gateway
	ln    net.Listener
	srv   *http.Server
	gid   int // -1 when the group does not exist: root only
	log   *slog.Logger
	route map[string]adminRoute
}

type adminRoute struct {
	method string
	write  bool
	h      func(w http.ResponseWriter, r *http.Request) (any, error)
}

type peerKey struct{}

// peer is the credentials of the process on the other end of the socket.
type peer struct {
	uid, gid uint32
	pid      int32
}

func newAdminServer(g *Gateway) (*adminServer, error) {
	path := g.cfg.Admin.Socket
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("admin.socket: create %s: %w", filepath.Dir(path), err)
	}
	// A socket left by a crashed daemon would make Listen fail.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin.socket: %w", err)
	}
	a := &adminServer{g: g, ln: ln, gid: -1, log: g.log.With("component", "admin")}
	if grp, err := user.LookupGroup(g.cfg.Admin.Group); err == nil {
		a.gid, _ = strconv.Atoi(grp.Gid)
		_ = os.Chown(path, -1, a.gid) // keep the owner: the daemon may not run as root
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin.socket: chmod: %w", err)
	}
	a.route = map[string]adminRoute{
		"/v1/status":      {http.MethodGet, false, a.status},
		"/v1/sessions":    {http.MethodGet, false, a.sessions},
		"/v1/devices":     {http.MethodGet, false, a.devices},
		"/v1/revocations": {http.MethodGet, false, a.revocations},
		"/v1/kick":        {http.MethodPost, true, a.kick},
		"/v1/sync":        {http.MethodPost, true, a.syncNow},
		"/v1/pair":        {http.MethodPost, true, a.pair},
		"/v1/import":      {http.MethodPost, true, a.importBatch},
	}
	a.srv = &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if p, err := peerOf(c); err == nil {
				return context.WithValue(ctx, peerKey{}, p)
			}
			return ctx
		},
	}
	return a, nil
}

func peerOf(c net.Conn) (peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return peer{}, err
	}
	if serr != nil {
		return peer{}, serr
	}
	return peer{uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}, nil
}

// allowed: root, or a process whose primary or supplementary group is the admin group.
func (a *adminServer) allowed(p peer) bool {
	if p.uid == 0 {
		return true
	}
	if a.gid < 0 {
		return false
	}
	if int(p.gid) == a.gid {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(int(p.uid)))
	if err != nil {
		return false
	}
	gids, err := u.GroupIds()
	return err == nil && slices.Contains(gids, strconv.Itoa(a.gid))
}

func (a *adminServer) serve() {
	if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("admin api stopped", "err", err)
	}
}

func (a *adminServer) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := a.srv.Shutdown(ctx)
	_ = os.Remove(a.g.cfg.Admin.Socket)
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ServeHTTP checks the caller first, then runs the route.
func (a *adminServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := r.Context().Value(peerKey{}).(peer)
	if !ok || !a.allowed(p) {
		a.log.Warn("admin request refused", "path", r.URL.Path, "uid", p.uid, "gid", p.gid, "reason", "not root or in group "+a.g.cfg.Admin.Group)
		writeJSON(w, http.StatusForbidden, admin.Error{Error: "forbidden: run as root or as a member of group " + a.g.cfg.Admin.Group})
		return
	}
	rt, ok := a.route[r.URL.Path]
	if !ok {
		writeJSON(w, http.StatusNotFound, admin.Error{Error: "no such endpoint " + r.URL.Path})
		return
	}
	if r.Method != rt.method {
		writeJSON(w, http.StatusMethodNotAllowed, admin.Error{Error: r.URL.Path + " takes " + rt.method})
		return
	}
	out, err := rt.h(w, r)
	if err != nil {
		code := http.StatusInternalServerError
		var ve *store.ValidationError
		var be badRequest
		if errors.As(err, &ve) || errors.As(err, &be) {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, admin.Error{Error: err.Error()})
		return
	}
	if rt.write {
		a.log.Info("admin action", "path", r.URL.Path, "uid", p.uid, "pid", p.pid)
	}
	writeJSON(w, http.StatusOK, out)
}

type badRequest struct{ msg string }

func (b badRequest) Error() string { return b.msg }

func (a *adminServer) status(w http.ResponseWriter, r *http.Request) (any, error) {
	g := a.g
	rev, err := g.Store.Rev()
	if err != nil {
		return nil, err
	}
	counts, err := g.Store.Counts()
	if err != nil {
		return nil, err
	}
	st := admin.Status{Gateway: g.cfg.Gateway.ID, Version: Version, StartedAt: g.started, Listeners: g.ListenerAddrs(),
		Sessions: g.Broker.Sessions.Len() + g.coapSessions(), StoreRev: rev, Records: counts, TokenCache: g.Verifier.CacheLen(),
		PairingUntil: g.PairingUntil(), LED: g.ledPattern().String(), Hardware: g.board != nil && g.board.Enabled()}
	if s := g.Syncer; s != nil {
		cur, err := g.Store.Cursor()
		if err != nil {
			return nil, err
		}
		ss, err := s.Status()
		if err != nil {
			return nil, err
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

func (a *adminServer) sessions(w http.ResponseWriter, r *http.Request) (any, error) {
	out := []admin.Session{}
	for _, s := range a.g.Broker.Sessions.All() {
		out = append(out, admin.Session{Transport: "mqtt", ClientID: s.ClientID, Device: s.Device, Method: string(s.Method), Subject: s.Subject,
			Remote: s.Remote, Protocol: s.Protocol, ConnectedAt: s.ConnectedAt, Expires: s.End, Offline: s.Offline(), Queued: s.Queued()})
	}
	if a.g.CoAP != nil {
		for _, s := range a.g.CoAP.List() {
			out = append(out, admin.Session{Transport: s.Transport, Device: s.Device, Method: s.Method, Subject: s.Subject,
				Remote: s.Remote, ConnectedAt: s.ConnectedAt, Expires: s.Expires, Observations: s.Observations})
		}
	}
	return out, nil
}

func (a *adminServer) devices(w http.ResponseWriter, r *http.Request) (any, error) {
	ds, err := a.g.Store.Devices()
	if err != nil {
		return nil, err
	}
	online := r.URL.Query().Get("online") != ""
	out := []admin.Device{}
	for _, d := range ds {
		n := 0
		for _, s := range a.g.Broker.Sessions.ByDevice(d.ID) {
			if !s.Offline() {
				n++
			}
		}
		if a.g.CoAP != nil {
			n += a.g.CoAP.Sessions(d.ID)
		}
		if online && n == 0 {
			continue
		}
		d.PSK = nil // a secret: never over the admin socket
		out = append(out, admin.Device{Device: d, Sessions: n})
	}
	return out, nil
}

// syncNow makes a waiting syncer retry at once and reports where it stands.
func (a *adminServer) syncNow(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.g.Syncer == nil {
		return nil, badRequest{"not enrolled with an authority: run edgeid enroll first"}
	}
	a.g.Syncer.Now()
	return a.status(w, r)
}

func (a *adminServer) revocations(w http.ResponseWriter, r *http.Request) (any, error) {
	rs, err := a.g.Store.Revocations()
	if rs == nil {
		rs = []store.Revocation{}
	}
	return rs, err
}

func (a *adminServer) kick(w http.ResponseWriter, r *http.Request) (any, error) {
	var k admin.KickRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		return nil, badRequest{"kick request: " + err.Error()}
	}
	set := 0
	for _, v := range []string{k.Device, k.Subject, k.JTI} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return nil, badRequest{"kick request: set exactly one of device, subject, jti"}
	}
	n := a.g.kick(k.Device, k.Subject, k.JTI, "kicked by technician")
	return admin.KickResult{Kicked: n}, nil
}

func (a *adminServer) importBatch(w http.ResponseWriter, r *http.Request) (any, error) {
	b, err := DecodeBatch(io.LimitReader(r.Body, 256<<20))
	if err != nil {
		return nil, badRequest{err.Error()}
	}
	a.g.completeRevocations(b.Revocations)
	rev, err := a.g.Store.Apply(b, nil)
	if err != nil {
		return nil, err
	}
	return admin.ImportResult{Rev: rev, Records: b.Size()}, nil
}

// DecodeBatch reads an import file strictly: unknown fields are errors, so a
// typo does not silently import half a record.
func DecodeBatch(r io.Reader) (*store.Batch, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var b store.Batch
	if err := dec.Decode(&b); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("import file: JSON syntax error at byte %d: %v", se.Offset, err)
		}
		return nil, fmt.Errorf("import file: %v (see docs/OPERATIONS.md for the format)", err)
	}
	if dec.More() {
		return nil, errors.New("import file: trailing data after the JSON object")
	}
	if b.Empty() {
		return nil, errors.New("import file: no records (expected classes, devices, users, grants, issuers, revocations or delete)")
	}
	return &b, nil
}

// pair opens (or, with window 0, closes) the pairing window.
func (a *adminServer) pair(w http.ResponseWriter, r *http.Request) (any, error) {
	var req admin.PairRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest{"pair request: " + err.Error()}
	}
	d, err := time.ParseDuration(req.Window)
	if err != nil || d < 0 || d > time.Hour {
		return nil, badRequest{fmt.Sprintf("window %q: give a duration from 0s (close) to 1h, e.g. 5m", req.Window)}
	}
	until := a.g.OpenPairing(d)
	a.log.Info("pairing window set", "until", until.Format(time.RFC3339))
	return admin.PairResult{Until: a.g.PairingUntil()}, nil
}
