package authority

import (
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// Pairing relayed by a gateway, for devices that cannot speak HTTPS: the
// device is authenticated by the gateway (its MQTT or CoAP session), and the
// enrolled gateway vouches for it here. Tokens are bound to the device's
// registered key (jkt), else to its registered certificate (x5t#S256).

// RelayStart begins a pairing for a device on behalf of gateway gw.
func (a *Authority) RelayStart(gw, deviceID string) (DeviceAuthorization, error) {
	d, cnf, err := a.relayedDevice(deviceID)
	if err != nil {
		return DeviceAuthorization{}, err
	}
	site, err := a.siteOf(gw)
	if err != nil {
		return DeviceAuthorization{}, err
	}
	a.log.Info("pairing relayed", "gateway", gw, "device", deviceID)
	return a.startPairing(d, cnf, site)
}

// RelayPoll polls a relayed pairing.
func (a *Authority) RelayPoll(gw, deviceID, deviceCode string) (TokenResponse, error) {
	d, cnf, err := a.relayedDevice(deviceID)
	if err != nil {
		return TokenResponse{}, err
	}
	return a.pollPairing(d, cnf, "", deviceCode, time.Time{}) // bound to the registered credential; no certificate at hand
}

// relayedDevice is a relayed device and the confirmation its tokens are
// bound to; an unknown device or one with no registered credential is an
// invalid_client *OAuthError.
func (a *Authority) relayedDevice(deviceID string) (store.Device, map[string]string, error) {
	d, err := a.Store.Device(deviceID)
	if err != nil {
		return d, nil, &OAuthError{"invalid_client", "unknown device", http.StatusBadRequest}
	}
	cnf, err := registeredCnf(d)
	if err != nil {
		return d, nil, &OAuthError{"invalid_client", err.Error(), http.StatusBadRequest}
	}
	return d, cnf, nil
}

// registeredCnf is the confirmation a relayed device's tokens are bound to.
func registeredCnf(d store.Device) (map[string]string, error) {
	if len(d.PublicKey) > 0 {
		k, err := jwk.ParseKey(d.PublicKey)
		if err != nil {
			return nil, err
		}
		t, err := k.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return map[string]string{"jkt": base64.RawURLEncoding.EncodeToString(t)}, nil
	}
	if d.CertSHA256 != "" {
		b, err := hex.DecodeString(d.CertSHA256)
		if err != nil {
			return nil, err
		}
		return map[string]string{"x5t#S256": base64.RawURLEncoding.EncodeToString(b)}, nil
	}
	return nil, errors.New("the device has no registered key or certificate to bind its tokens to")
}

func (h *Handler) relay(w http.ResponseWriter, r *http.Request, gw string) {
	var req cloudsync.PairRelayRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "request body: "+err.Error())
		return
	}
	var resp any
	var err error
	switch req.Op {
	case "start":
		resp, err = h.A.RelayStart(gw, req.Device)
	case "poll":
		resp, err = h.A.RelayPoll(gw, req.Device, req.DeviceCode)
	default:
		fail(w, http.StatusBadRequest, "invalid_request", `op: use "start" or "poll"`)
		return
	}
	answerOAuth(w, resp, err)
}

// seenDoc is where a device was last connected, as its gateway reported.
type seenDoc struct {
	At      time.Time `json:"at"`
	Online  bool      `json:"online"`
	Gateway string    `json:"gateway"`
}

// RecordSeen stores a gateway's presence report for the devices it names.
func (a *Authority) RecordSeen(gw string, seen cloudsync.Seen) error {
	for id, s := range seen {
		if _, err := a.Store.Device(id); err != nil {
			continue
		}
		if err := a.Store.PutDoc("seen", id, seenDoc{At: s.At, Online: s.Online, Gateway: gw}); err != nil {
			return err
		}
	}
	return nil
}

// LastSeen says where and when a device was last connected ("" if never).
func (a *Authority) LastSeen(id string, now time.Time) string {
	var s seenDoc
	if a.Store.GetDoc("seen", id, &s) != nil {
		return "not yet"
	}
	if s.Online && now.Sub(s.At) < 3*time.Minute {
		return "online now (" + s.Gateway + ")"
	}
	return s.At.UTC().Format("2006-01-02 15:04 UTC") + " (" + s.Gateway + ")"
}

func (h *Handler) seen(w http.ResponseWriter, r *http.Request, gw string) {
	var seen cloudsync.Seen
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<20))
	if err := dec.Decode(&seen); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "request body: "+err.Error())
		return
	}
	if err := h.A.RecordSeen(gw, seen); err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"devices": len(seen)})
}
