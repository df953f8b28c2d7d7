package adminserver

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/store"
)

// badRequest is an error the caller made: answered 400.
type badRequest struct{ msg string }

func (b badRequest) Error() string { return b.msg }

func (s *Server) status(r *http.Request) (any, error) { return s.cfg.Backend.Status(r.Context()) }

func (s *Server) sessions(r *http.Request) (any, error) {
	ss, err := s.cfg.Backend.Sessions(r.Context())
	if ss == nil {
		ss = []admin.Session{}
	}
	return ss, err
}

func (s *Server) devices(r *http.Request) (any, error) {
	ds, err := s.cfg.Backend.Devices(r.Context(), r.URL.Query().Get("online") != "")
	if ds == nil {
		ds = []admin.Device{}
	}
	return ds, err
}

func (s *Server) revocations(r *http.Request) (any, error) {
	rs, err := s.cfg.Backend.Revocations(r.Context())
	if rs == nil {
		rs = []store.Revocation{}
	}
	return rs, err
}

func (s *Server) bridge(r *http.Request) (any, error) {
	rs, err := s.cfg.Backend.Bridge(r.Context())
	if rs == nil {
		rs = []admin.BridgeRemote{}
	}
	return rs, err
}

// syncNow makes a waiting syncer retry at once and reports where it stands.
func (s *Server) syncNow(r *http.Request) (any, error) {
	if err := s.cfg.Backend.SyncNow(r.Context()); err != nil {
		return nil, err
	}
	return s.status(r)
}

func (s *Server) kick(r *http.Request) (any, error) {
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
	return admin.KickResult{Kicked: s.cfg.Backend.Kick(r.Context(), k.Device, k.Subject, k.JTI)}, nil
}

func (s *Server) importBatch(r *http.Request) (any, error) {
	b, err := admin.DecodeBatch(io.LimitReader(r.Body, 256<<20))
	if err != nil {
		return nil, badRequest{err.Error()}
	}
	rev, err := s.cfg.Backend.Import(r.Context(), b)
	if err != nil {
		return nil, err
	}
	return admin.ImportResult{Rev: rev, Records: b.Size()}, nil
}

// pair opens (or, with window 0, closes) the pairing window.
func (s *Server) pair(r *http.Request) (any, error) {
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
	until := s.cfg.Backend.OpenPairing(d)
	s.log.Info("pairing window set", "until", until.Format(time.RFC3339))
	return admin.PairResult{Until: s.cfg.Backend.PairingUntil()}, nil
}
