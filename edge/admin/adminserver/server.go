// Package adminserver is the daemon side of the local admin API (package
// admin holds its paths, wire types and client): HTTP over a unix socket, a
// table of routes that each declare whether they read or write, and one
// permission check per request from the socket peer's credentials
// (SO_PEERCRED). The gateway's state comes through Backend, which package
// edge implements.
package adminserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/store"
)

// Backend is what the routes need from the gateway.
type Backend interface {
	// Status is the gateway's status (GET /v1/status).
	Status(ctx context.Context) (admin.Status, error)
	// Sessions lists live sessions on every front end.
	Sessions(ctx context.Context) ([]admin.Session, error)
	// Devices lists the store's devices with their live session counts
	// (online: only those with one), secrets removed.
	Devices(ctx context.Context, online bool) ([]admin.Device, error)
	// Revocations lists the revocations held.
	Revocations(ctx context.Context) ([]store.Revocation, error)
	// Bridge lists the cloud bridge's remotes (none without a bridge).
	Bridge(ctx context.Context) ([]admin.BridgeRemote, error)
	// Kick ends the sessions of a device, a subject or a token id (exactly
	// one is set) and says how many it ended.
	Kick(ctx context.Context, device, subject, jti string) int
	// Import applies a batch and returns the store's new revision.
	Import(ctx context.Context, b *store.Batch) (uint64, error)
	// SyncNow makes a waiting syncer retry at once; ErrNotEnrolled when
	// the gateway has no authority.
	SyncNow(ctx context.Context) error
	// OpenPairing opens the pairing window for d (0 closes it) and returns
	// when it closes; PairingUntil is that time, zero once closed.
	OpenPairing(d time.Duration) time.Time
	PairingUntil() time.Time
}

// ErrNotEnrolled is the answer of POST /v1/sync on a gateway with no authority.
var ErrNotEnrolled = errors.New("not enrolled with an authority: run edgeid enroll first")

// Config is what New needs.
type Config struct {
	// Socket is the unix socket path (admin.socket).
	Socket string
	// Group may write, ReadGroup may only read (admin.group,
	// admin.read_group); root may write. The socket file belongs to Group.
	Group, ReadGroup string
	// Role gives a peer its rights; nil uses LookupGroups(Group, ReadGroup).
	Role    func(Peer) Role
	Backend Backend
	Log     *slog.Logger
}

// Server is the admin API on its socket.
type Server struct {
	cfg    Config
	role   func(Peer) Role
	ln     net.Listener
	srv    *http.Server
	log    *slog.Logger
	routes map[string]route
}

// route is one endpoint: its method, the role it needs and its handler.
type route struct {
	method string
	need   Role
	h      func(r *http.Request) (any, error)
}

// New creates the socket and the server; Serve runs it. The socket is
// group Group (when it exists) and mode 0660, or 0666 when a read-only
// group is configured: then every local user may connect and the peer
// check (SO_PEERCRED, once per request) decides, as tailscale's LocalAPI
// does; a caller in neither group gets 403.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	path := cfg.Socket
	dirMode := os.FileMode(0o750)
	if cfg.ReadGroup != "" {
		dirMode = 0o755 // readers must reach the socket; the peer check decides
	}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
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
	if grp, err := user.LookupGroup(cfg.Group); err == nil {
		gid, _ := strconv.Atoi(grp.Gid)
		_ = os.Chown(path, -1, gid) // keep the owner: the daemon may not run as root
	}
	mode := os.FileMode(0o660)
	if cfg.ReadGroup != "" {
		mode = 0o666
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin.socket: chmod: %w", err)
	}
	s := &Server{cfg: cfg, role: cfg.Role, ln: ln, log: cfg.Log}
	if s.role == nil {
		s.role = LookupGroups(cfg.Group, cfg.ReadGroup).Role
	}
	s.routes = map[string]route{
		admin.PathStatus:      {http.MethodGet, RoleRead, s.status},
		admin.PathSessions:    {http.MethodGet, RoleRead, s.sessions},
		admin.PathDevices:     {http.MethodGet, RoleRead, s.devices},
		admin.PathRevocations: {http.MethodGet, RoleRead, s.revocations},
		admin.PathBridge:      {http.MethodGet, RoleRead, s.bridge},
		admin.PathKick:        {http.MethodPost, RoleWrite, s.kick},
		admin.PathSync:        {http.MethodPost, RoleWrite, s.syncNow},
		admin.PathPair:        {http.MethodPost, RoleWrite, s.pair},
		admin.PathImport:      {http.MethodPost, RoleWrite, s.importBatch},
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if p, err := peerOf(c); err == nil {
				return context.WithValue(ctx, peerKey{}, p)
			}
			return ctx
		},
	}
	return s, nil
}

// Serve answers requests until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	_ = os.Remove(s.cfg.Socket)
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ServeHTTP gives the caller its role once, from the socket peer, refuses
// it if the route needs more, then runs the route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, known := r.Context().Value(peerKey{}).(Peer)
	role := RoleNone
	if known {
		role = s.role(p)
	}
	rt, found := s.routes[r.URL.Path]
	need := RoleRead // an unknown path is answered only to a caller who may read
	if found {
		need = rt.need
	}
	if role < need {
		s.refuse(w, r, p, known, role, need)
		return
	}
	if !found {
		writeJSON(w, http.StatusNotFound, admin.Error{Error: "no such endpoint " + r.URL.Path})
		return
	}
	if r.Method != rt.method {
		writeJSON(w, http.StatusMethodNotAllowed, admin.Error{Error: r.URL.Path + " takes " + rt.method})
		return
	}
	out, err := rt.h(r)
	if err != nil {
		code := http.StatusInternalServerError
		var ve *store.ValidationError
		var be badRequest
		if errors.As(err, &ve) || errors.As(err, &be) || errors.Is(err, ErrNotEnrolled) {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, admin.Error{Error: err.Error()})
		return
	}
	if rt.need == RoleWrite {
		s.log.Info("admin action", "path", r.URL.Path, "uid", p.UID, "pid", p.PID)
	}
	writeJSON(w, http.StatusOK, out)
}

// refuse answers 403 and says what the caller needs.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, p Peer, known bool, role, need Role) {
	writers := "run as root or as a member of group " + s.cfg.Group
	var msg, reason string
	switch {
	case !known:
		reason = "no peer credentials"
		msg = "forbidden: the admin socket could not read the caller's credentials"
	case need == RoleWrite && role == RoleRead:
		reason = "read-only caller, route writes"
		msg = fmt.Sprintf("forbidden: %s %s changes the gateway: %s (group %s may only read)", r.Method, r.URL.Path, writers, s.cfg.ReadGroup)
	default:
		reason = "not root or in group " + s.cfg.Group
		msg = "forbidden: " + writers
		if s.cfg.ReadGroup != "" {
			reason += " or " + s.cfg.ReadGroup
			msg += ", or of group " + s.cfg.ReadGroup + " to read only"
		}
	}
	s.log.Warn("admin request refused", "path", r.URL.Path, "uid", p.UID, "gid", p.GID, "role", role.String(), "reason", reason)
	writeJSON(w, http.StatusForbidden, admin.Error{Error: msg})
}
