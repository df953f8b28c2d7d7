package authority

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/store"
)

// Handler serves the authority's HTTP API.
type Handler struct {
	A          *Authority
	AdminToken string
	mux        *http.ServeMux
	limits     *limits // limits.go; made by mountWeb
}

// NewHandler maps the Authority onto its routes.
func NewHandler(a *Authority, adminToken string) *Handler {
	h := &Handler{A: a, AdminToken: adminToken, mux: http.NewServeMux()}
	m := h.mux
	m.HandleFunc("GET /.well-known/oauth-authorization-server", h.metadata)
	m.HandleFunc("GET /.well-known/uma2-configuration", h.umaConfiguration)
	m.HandleFunc("POST "+cloudsync.PathPermission, h.gateway(h.permission))
	m.HandleFunc("GET "+pathResourceSet, h.pat(h.listResources))
	m.HandleFunc("POST "+pathResourceSet, h.pat(h.createResource))
	m.HandleFunc("GET "+pathResourceSet+"/{id...}", h.pat(h.getResource))
	m.HandleFunc("PUT "+pathResourceSet+"/{id...}", h.pat(h.updateResource))
	m.HandleFunc("DELETE "+pathResourceSet+"/{id...}", h.pat(h.deleteResource))
	m.HandleFunc("GET /jwks.json", h.jwks)
	m.HandleFunc("POST "+cloudsync.PathEnroll, h.enroll)
	m.HandleFunc("POST /oauth/token", h.limitOAuth(tokenBucket, h.token))
	m.HandleFunc("POST /oauth/device_authorization", h.limitOAuth(deviceAuthorizationBucket, h.deviceAuthorization))
	m.HandleFunc("GET "+cloudsync.PathSnapshot, h.gateway(h.snapshot))
	m.HandleFunc("GET "+cloudsync.PathChanges, h.gateway(h.changes))
	m.HandleFunc("GET "+cloudsync.PathEvents, h.gateway(h.events))
	m.HandleFunc("POST "+cloudsync.PathPairRelay, h.gateway(h.relay))
	m.HandleFunc("POST "+cloudsync.PathSeen, h.gateway(h.seen))
	m.HandleFunc("GET /admin/v1/devices", h.admin(h.listDevices))
	m.HandleFunc("GET /admin/v1/devices/{id}", h.admin(h.getDevice))
	m.HandleFunc("POST /admin/v1/import", h.admin(h.importBatch))
	m.HandleFunc("GET /admin/v1/classes", h.admin(h.listClasses))
	m.HandleFunc("POST /admin/v1/keys/rotate", h.admin(h.rotate))
	m.HandleFunc("POST /oauth/revoke", h.limitOAuth(tokenBucket, h.revokeToken)) // clients authenticate here as at the token endpoint
	m.HandleFunc("POST /oauth/introspect", h.resourceServer(h.introspect))
	m.HandleFunc("POST /admin/v1/devices/{id}/suspend", h.admin(h.setStatus(store.DeviceSuspended)))
	m.HandleFunc("POST /admin/v1/devices/{id}/activate", h.admin(h.setStatus(store.DeviceActive)))
	m.HandleFunc("POST /admin/v1/devices/{id}/revoke", h.admin(h.revokeDevice))
	m.HandleFunc("POST /admin/v1/devices/{id}/site", h.admin(h.moveDevice))
	m.HandleFunc("POST /admin/v1/gateways", h.admin(h.addGateway))
	m.HandleFunc("GET /admin/v1/gateways", h.admin(h.listGateways))
	m.HandleFunc("DELETE /admin/v1/gateways/{id}", h.admin(h.removeGateway))
	m.HandleFunc("POST /admin/v1/users/{id}/disable", h.admin(h.disableUser))
	m.HandleFunc("GET /admin/v1/admin-keys", h.admin(h.listAdminKeys))
	m.HandleFunc("POST /admin/v1/admin-keys", h.admin(h.addAdminKey))
	m.HandleFunc("DELETE /admin/v1/admin-keys/{name}", h.admin(h.revokeAdminKey))
	m.HandleFunc("GET /admin/v1/changes", h.admin(h.changeLog))
	h.mountWeb()
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type apiError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, kind, desc string) {
	writeJSON(w, code, apiError{Error: kind, Description: desc})
}

// writeList answers with the list xs read (an empty array, not null, for
// none), or a server error if it could not be read.
func writeList[T any](w http.ResponseWriter, xs []T, err error) {
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	if xs == nil {
		xs = []T{}
	}
	writeJSON(w, http.StatusOK, xs)
}

// admin requires an admin key (adminkeys.go: a named key, or the admin
// token as the key "bootstrap"); who is "admin:<name>".
func (h *Handler) admin(next func(w http.ResponseWriter, r *http.Request, who string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, err := h.adminKey(r)
		if err != nil || name == "" {
			h.adminRefused(w, r, err)
			return
		}
		h.A.log.Debug("admin request", "key", name, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		next(w, r, "admin:"+name)
	}
}

// gateway requires a valid assertion signed by an enrolled gateway's key.
func (h *Handler) gateway(next func(w http.ResponseWriter, r *http.Request, gw string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "EdgeID-GW ") {
			fail(w, http.StatusUnauthorized, "invalid_client", "send Authorization: EdgeID-GW <assertion signed with the gateway key>")
			return
		}
		gw, err := h.gatewayAuth(r)
		if err != nil {
			h.A.log.Warn("gateway request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", err.Error())
			fail(w, http.StatusUnauthorized, "invalid_client", "gateway not enrolled or assertion invalid")
			return
		}
		next(w, r, gw)
	}
}

// gatewayAuth verifies a request's gateway assertion (Authorization:
// EdgeID-GW, single use) and returns the gateway.
func (h *Handler) gatewayAuth(r *http.Request) (string, error) {
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "EdgeID-GW ")
	as, err := cloudsync.VerifyAssertion(raw, h.A.URL(), func(id string) (jwk.Key, error) {
		g, err := h.A.Gateway(id)
		if err != nil {
			return nil, err
		}
		return jwk.ParseKey(g.Key)
	}, time.Now())
	if err == nil {
		// Refused when replayed, and when it cannot be recorded as spent
		// (fail closed); the reason is logged by the caller.
		if uerr := h.A.useAssertion("gw:"+as.Gateway+"/"+as.JTI, as.Expires); errors.Is(uerr, errReplayed) {
			err = fmt.Errorf("assertion %s of gateway %q replayed", as.JTI, as.Gateway)
		} else if uerr != nil {
			err = fmt.Errorf("assertion of gateway %q: %w", as.Gateway, uerr)
		}
	}
	if err != nil {
		return "", err
	}
	return as.Gateway, nil
}

// clientAuthMethods are how a device authenticates at the token and device
// authorization endpoints: a client assertion signed with its registered
// key (RFC 7523), or mutual TLS with the certificate whose SHA-256
// fingerprint is pinned in its record (RFC 8705 §2.2
// self_signed_tls_client_auth: no CA chain or subject is checked, so not
// tls_client_auth).
var clientAuthMethods = []string{"private_key_jwt", "self_signed_tls_client_auth"}

// assertionAlgs are the algorithms of a client assertion: ES256 for an EC
// P-256 key, EdDSA for an Ed25519 one (clientAuth).
var assertionAlgs = []string{"ES256", "EdDSA"}

// resourceServerAuthMethods are how introspection (and revocation of any
// token) is authenticated: an admin key (Authorization: Bearer) or a
// gateway's request assertion (Authorization: EdgeID-GW). Neither is a
// registered client authentication method; they are named by their
// Authorization scheme.
var resourceServerAuthMethods = []string{"Bearer", "EdgeID-GW"}

// revocationAuthMethods are the revocation endpoint's: a device revokes its
// own tokens with its client authentication; an admin key or a gateway
// any token.
var revocationAuthMethods = append(append([]string{}, clientAuthMethods...), resourceServerAuthMethods...)

// grantTypes are the token endpoint's grants.
var grantTypes = []string{"client_credentials", DeviceCodeGrant, "refresh_token", UMATicketGrant}

// metadata is RFC 8414. The authority has no authorization endpoint (its
// grants are client_credentials, the device grant, refresh and UMA), so its only
// response type is "none"; a device revokes its own tokens with its client
// authentication, and revocation and introspection take an admin key or a
// gateway's assertion. scopes_supported is empty: a
// token's scope is its device class's permissions, not what a client asks
// for (RFC 8414 §2 lets a server leave scope values out).
func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.serverMetadata())
}

// serverMetadata is the RFC 8414 document (metadata; the UMA one adds to it).
func (h *Handler) serverMetadata() map[string]any {
	u := h.A.URL()
	return map[string]any{
		"issuer":                                u,
		"jwks_uri":                              u + "/jwks.json",
		"token_endpoint":                        u + "/oauth/token",
		"response_types_supported":              []string{"none"},
		"grant_types_supported":                 grantTypes,
		"scopes_supported":                      []string{},
		"device_authorization_endpoint":         u + "/oauth/device_authorization",
		"token_endpoint_auth_methods_supported": clientAuthMethods,
		"token_endpoint_auth_signing_alg_values_supported":      assertionAlgs,
		"revocation_endpoint":                                   u + "/oauth/revoke",
		"revocation_endpoint_auth_methods_supported":            revocationAuthMethods,
		"revocation_endpoint_auth_signing_alg_values_supported": assertionAlgs,
		"introspection_endpoint":                                u + "/oauth/introspect",
		"introspection_endpoint_auth_methods_supported":         resourceServerAuthMethods,
		"tls_client_certificate_bound_access_tokens":            true,
		"dpop_signing_alg_values_supported":                     dpop.DefaultAlgs,
	}
}

func (h *Handler) jwks(w http.ResponseWriter, r *http.Request) {
	j, err := h.A.JWKS()
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(j)
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %v", err)
	}
	if dec.More() {
		return errors.New("request body: trailing data after the JSON value")
	}
	return nil
}

func (h *Handler) enroll(w http.ResponseWriter, r *http.Request) {
	var req cloudsync.EnrollRequest
	if err := decode(r, &req); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	resp, err := h.A.Enroll(req)
	if errors.Is(err, ErrEnroll) {
		fail(w, http.StatusForbidden, "access_denied", err.Error())
		return
	}
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request, gw string) {
	s, err := h.A.Snapshot(gw)
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"batch": s})
}

func parseFrom(r *http.Request) (string, uint64, error) {
	from, err := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
	if err != nil {
		return "", 0, errors.New("from: want the cursor's sequence number")
	}
	return r.URL.Query().Get("epoch"), from, nil
}

func (h *Handler) changes(w http.ResponseWriter, r *http.Request, gw string) {
	epoch, from, err := parseFrom(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	resp, err := h.A.Changes(gw, epoch, from, 500)
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// events is the push channel: server-sent events, each a signed batch,
// starting after the gateway's cursor and following every change as it is
// applied. A signed heartbeat (the head of the log, event "heartbeat")
// follows the first catch-up, every burst of batches, and comes at least
// every heartbeat interval: it is how the gateway knows that it holds
// everything and that the stream is alive, since anyone holding the TLS
// certificate could write the rest. The ": ping" comment beside it is for
// gateways from before heartbeats; newer ones ignore it.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, gw string) {
	epoch, from, err := parseFrom(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, "server_error", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	h.A.log.Info("gateway stream open", "gateway", gw, "from", from)
	defer h.A.log.Info("gateway stream closed", "gateway", gw)
	tick := time.NewTicker(h.A.HeartbeatInterval())
	defer tick.Stop()
	enrolled, err := h.A.Gateway(gw)
	if err != nil {
		return
	}
	beat, ping := true, false // a heartbeat at once: the gateway is online when it has one
	for {
		// A gateway removed (or enrolled again with another key) while its
		// stream is open gets nothing more.
		cur, err := h.A.Gateway(gw)
		if err != nil || string(cur.Key) != string(enrolled.Key) {
			h.A.log.Info("gateway stream ended: gateway removed or re-enrolled", "gateway", gw)
			return
		}
		changed := h.A.Changed() // before reading, so no change slips between read and wait
		resp, err := h.A.changes(gw, &cur.Site, epoch, from, 500)
		if err != nil {
			h.A.log.Warn("gateway stream ended", "gateway", gw, "err", err)
			return
		}
		if resp.NeedSnapshot {
			fmt.Fprint(w, "event: snapshot-required\ndata: {}\n\n")
			fl.Flush()
			return
		}
		for _, b := range resp.Batches {
			fmt.Fprintf(w, "event: batch\ndata: %s\n\n", b)
			from++
		}
		if len(resp.Batches) == 500 {
			fl.Flush()
			continue // the heartbeat's head may be past this page
		}
		if len(resp.Batches) > 0 {
			beat = true // so the gateway knows at once that it is current again
		}
		if ping {
			fmt.Fprint(w, ": ping\n\n")
			ping = false
		}
		if beat {
			// The heartbeat was made before the log was read, so the batches
			// just written reach its head.
			fmt.Fprintf(w, "event: heartbeat\ndata: %s\n\n", resp.Heartbeat)
			beat = false
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-h.A.Done():
			return
		case <-changed:
		case <-tick.C:
			beat, ping = true, true
		}
	}
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request, who string) {
	ds, err := h.A.Devices()
	for i := range ds {
		ds[i] = withoutSecrets(ds[i])
	}
	writeList(w, ds, err)
}

// withoutSecrets is a device record as the API shows it: the DTLS
// pre-shared key is a secret and never leaves the authority in an answer
// (its identity does, so an operator sees that one is set).
func withoutSecrets(d store.Device) store.Device {
	d.PSK = nil
	return d
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request, who string) {
	d, err := h.A.Device(r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		fail(w, http.StatusNotFound, "not_found", "no device "+r.PathValue("id"))
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, withoutSecrets(d))
}

// importBatch applies a store.Batch (classes, devices, revocations, …)
// all or nothing; the error lists every bad row.
func (h *Handler) importBatch(w http.ResponseWriter, r *http.Request, who string) {
	var b store.Batch
	if strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") {
		// A row of a registered device changes only its columns, on the
		// device as read: the commit expects each device as read (a new
		// one: still absent), so a device changed meanwhile (revoked,
		// paired) is never written back from the older read; 409 then,
		// and sending the list again applies it to the devices as they are.
		ds, err := DevicesFromCSV(io.LimitReader(r.Body, 64<<20), func(id string) (store.Device, bool) {
			d, err := h.A.Device(id)
			if err == nil {
				b.ExpectRev(store.DeviceKey(id), d.Rev)
			} else if errors.Is(err, store.ErrNotFound) {
				b.ExpectRev(store.DeviceKey(id), 0)
			}
			return d, err == nil
		})
		if err != nil {
			fail(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		b.Devices = ds
	} else if err := decode(r, &b); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	rev, err := h.A.Apply(&b, who)
	var ve *store.ValidationError
	if errors.As(err, &ve) {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "invalid_batch", "problems": ve.Problems})
		return
	}
	if errors.Is(err, store.ErrConflict) {
		fail(w, http.StatusConflict, "conflict", "a device of the list changed while it was read; nothing was applied: send the list again ("+err.Error()+")")
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rev": rev, "records": b.Size()})
}

func (h *Handler) setStatus(st store.DeviceStatus) func(w http.ResponseWriter, r *http.Request, who string) {
	return func(w http.ResponseWriter, r *http.Request, who string) {
		rev, err := h.A.SetDeviceStatus(r.PathValue("id"), st, who)
		h.answerChange(w, rev, err)
	}
}

func (h *Handler) revokeDevice(w http.ResponseWriter, r *http.Request, who string) {
	rev, err := h.A.RevokeDevice(r.PathValue("id"), r.URL.Query().Get("reason"), who)
	h.answerChange(w, rev, err)
}

func (h *Handler) answerChange(w http.ResponseWriter, rev uint64, err error) {
	if errors.Is(err, store.ErrNotFound) {
		fail(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	// A device that kept changing under every attempt, or a suspension
	// of a revoked device: nothing was written.
	if errors.Is(err, store.ErrConflict) || errors.Is(err, ErrDeviceRevoked) {
		fail(w, http.StatusConflict, "conflict", err.Error())
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rev": rev})
}

func (h *Handler) addGateway(w http.ResponseWriter, r *http.Request, who string) {
	var req struct {
		Name string `json:"name"`
		Site string `json:"site"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	code, exp, err := h.A.AddSiteGateway(req.Name, req.Site, who)
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"gateway": req.Name, "site": req.Site, "code": code, "expires": exp})
}

// moveDevice puts a device at another site: {"site": "<site>"} ("" for
// every site).
func (h *Handler) moveDevice(w http.ResponseWriter, r *http.Request, who string) {
	var req struct {
		Site *string `json:"site"`
	}
	if err := decode(r, &req); err != nil || req.Site == nil {
		fail(w, http.StatusBadRequest, "invalid_request", `send {"site": "<site>"} ("" puts the device at every site)`)
		return
	}
	rev, err := h.A.MoveDevice(r.PathValue("id"), *req.Site, who)
	switch {
	case errors.Is(err, store.ErrNotFound):
		fail(w, http.StatusNotFound, "not_found", "no device "+r.PathValue("id"))
	case errors.Is(err, store.ErrConflict):
		fail(w, http.StatusConflict, "conflict", err.Error())
	case err != nil:
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]any{"rev": rev})
	}
}

func (h *Handler) listGateways(w http.ResponseWriter, r *http.Request, who string) {
	gs, err := h.A.Gateways()
	writeList(w, gs, err)
}

func (h *Handler) removeGateway(w http.ResponseWriter, r *http.Request, who string) {
	if err := h.A.RemoveGateway(r.PathValue("id"), who); err != nil {
		fail(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": r.PathValue("id")})
}

func (h *Handler) rotate(w http.ResponseWriter, r *http.Request, who string) {
	kid, from, err := h.A.Rotate(who)
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"next_kid": kid, "signs_from": from})
}

func (h *Handler) deviceAuthorization(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", "form: "+err.Error())
		return
	}
	f := r.PostForm
	resp, err := h.A.StartPairing(requestClientID(r, f), f.Get("client_assertion_type"), f.Get("client_assertion"), h.A.URL()+"/oauth/device_authorization", clientCert(r))
	answerOAuth(w, resp, err)
}

// answerOAuth writes an OAuth endpoint's result: the answer, its RFC 6749
// error with its status, or a server error.
func answerOAuth(w http.ResponseWriter, resp any, err error) {
	var oe *OAuthError
	if errors.As(err, &oe) {
		writeJSON(w, oe.status, oe)
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// clientCert is the TLS client certificate of a request (mutual TLS), or nil.
func clientCert(r *http.Request) *x509.Certificate {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates[0]
	}
	return nil
}
