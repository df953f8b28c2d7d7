package authority

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/store"
)

// The resource registration API (UMA Federated Authorization §3), under
// /uma/resource_set, authenticated with a protection API token (PAT): an
// access token of this authority, used by its subject (sub). An owner's
// resources are registered by construction: one per paired device and
// group of its class (ResourcesOf), listed and described here, changed only
// by pairing, unpairing or the class. A service may register resources of
// its own (name, scopes, type, description), stored as documents it owns;
// they are listed and described like the others, but gateways enforce
// device resources only: the permission endpoint does not ticket them.

const (
	pathResourceSet = "/uma/resource_set"
	docResource     = "uma-resource"
	// resourceType is the type of a device's topic group.
	resourceType = "urn:edgeid:resource-type:topic-group"
	// maxRegistered bounds the resources one subject may register.
	maxRegistered = 1000
)

// ErrDerived is the refusal to change or delete a device's resource.
var ErrDerived = errors.New("derived from a paired device; unpair or change its class instead")

// ResourceDescription is a resource as the API describes it (Federated
// Authorization §3.1), with EdgeID's members for a device's resource.
type ResourceDescription struct {
	ID             string   `json:"_id"`
	Name           string   `json:"name,omitempty"`
	Type           string   `json:"type,omitempty"`
	Description    string   `json:"description,omitempty"`
	IconURI        string   `json:"icon_uri,omitempty"`
	ResourceScopes []string `json:"resource_scopes"`
	Device         string   `json:"edgeid:device,omitempty"`
	Group          string   `json:"edgeid:group,omitempty"`
	Class          string   `json:"edgeid:class,omitempty"`
}

// ResourceInput is what a registration (POST) or an update (PUT) sends.
type ResourceInput struct {
	ID             string   `json:"_id,omitempty"`
	Name           string   `json:"name,omitempty"`
	Type           string   `json:"type,omitempty"`
	Description    string   `json:"description,omitempty"`
	IconURI        string   `json:"icon_uri,omitempty"`
	ResourceScopes []string `json:"resource_scopes"`
}

// registeredResource is a registered resource's document.
type registeredResource struct {
	ID          string    `json:"id"`
	Owner       string    `json:"owner"`
	Name        string    `json:"name,omitempty"`
	Type        string    `json:"type,omitempty"`
	Description string    `json:"description,omitempty"`
	IconURI     string    `json:"icon_uri,omitempty"`
	Scopes      []string  `json:"scopes"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated,omitzero"`
}

func (r registeredResource) describe() ResourceDescription {
	return ResourceDescription{ID: r.ID, Name: r.Name, Type: r.Type, Description: r.Description, IconURI: r.IconURI, ResourceScopes: r.Scopes}
}

func describeDevice(r Resource) ResourceDescription {
	name := r.Device.Name
	if name == "" {
		name = r.Device.ID
	}
	return ResourceDescription{ID: r.ID, Name: name + ": " + r.Group.Name, Type: resourceType, Description: r.Group.Description,
		ResourceScopes: shareableScopes(r.Group), Device: r.Device.ID, Group: r.Group.Name, Class: r.Device.Class}
}

func (a *Authority) registered(id string) (registeredResource, error) {
	var r registeredResource
	err := a.Store.GetDoc(docResource, id, &r)
	return r, err
}

func (a *Authority) registeredBy(owner string) ([]registeredResource, error) {
	out, err := listDocs(a.Store, docResource, func(r registeredResource) bool { return r.Owner == owner })
	if err != nil {
		return nil, fmt.Errorf("list registered resources: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// ResourceSet lists the ids of owner's resources: its devices' first, then
// the ones it registered.
func (a *Authority) ResourceSet(owner string) ([]string, error) {
	rs, err := a.ResourcesOf(owner)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(rs))
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	reg, err := a.registeredBy(owner)
	if err != nil {
		return nil, err
	}
	for _, r := range reg {
		ids = append(ids, r.ID)
	}
	return ids, nil
}

// DescribeResource describes one of owner's resources; ErrNoResource for
// an id that names none of them.
func (a *Authority) DescribeResource(owner, id string) (ResourceDescription, error) {
	if _, _, ok := store.ParseResourceID(id); ok {
		r, err := a.Resource(id)
		if err != nil {
			return ResourceDescription{}, err
		}
		if r.Owner != owner {
			return ResourceDescription{}, ErrNoResource
		}
		return describeDevice(r), nil
	}
	r, err := a.registered(id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.Owner != owner) {
		return ResourceDescription{}, ErrNoResource
	}
	if err != nil {
		return ResourceDescription{}, fmt.Errorf("load resource %q: %w", id, err)
	}
	return r.describe(), nil
}

// checkResource validates a registration's fields.
func checkResource(in ResourceInput) error {
	if len(in.ResourceScopes) == 0 {
		return fieldErr("resource_scopes", "give at least one scope the resource can be shared with")
	}
	if len(in.ResourceScopes) > 32 {
		return fieldErr("resource_scopes", "%d scopes; at most 32", len(in.ResourceScopes))
	}
	for i, s := range in.ResourceScopes {
		if s == "" || len(s) > 256 || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fieldErr(fmt.Sprintf("resource_scopes[%d]", i), "%q: give 1 to 256 characters, no spaces or control characters", s)
		}
		if slices.Contains(in.ResourceScopes[:i], s) {
			return fieldErr(fmt.Sprintf("resource_scopes[%d]", i), "%q is given twice", s)
		}
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"name", in.Name, 256}, {"type", in.Type, 512}, {"description", in.Description, 4096}, {"icon_uri", in.IconURI, 2048}} {
		if len(f.v) > f.max {
			return fieldErr(f.name, "%d bytes; at most %d", len(f.v), f.max)
		}
		if strings.IndexFunc(f.v, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }) >= 0 {
			return fieldErr(f.name, "holds a control character")
		}
	}
	if in.IconURI != "" {
		if u, err := url.Parse(in.IconURI); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fieldErr("icon_uri", "%q is not an absolute http(s) URL", in.IconURI)
		}
	}
	return nil
}

// RegisterResource registers a resource of owner's (a service's own) and
// returns its id.
func (a *Authority) RegisterResource(owner string, in ResourceInput) (string, error) {
	if in.ID != "" {
		return "", fieldErr("_id", "is assigned by the authority; leave it out")
	}
	if err := checkResource(in); err != nil {
		return "", err
	}
	// The bound is on what the listing read: registrations at the same
	// moment (at one replica or several) may pass it by as many as there
	// are. It bounds what one subject stores, not what it may do, so
	// that is no harm; an exact bound would need a count per owner
	// written with every registration and deletion.
	mine, err := a.registeredBy(owner)
	if err != nil {
		return "", err
	}
	if len(mine) >= maxRegistered {
		return "", fieldErr("resource", "%s has %d registered resources, the most allowed; delete some first", owner, len(mine))
	}
	r := registeredResource{ID: "rs_" + randomID(12), Owner: owner, Name: in.Name, Type: in.Type, Description: in.Description,
		IconURI: in.IconURI, Scopes: slices.Clone(in.ResourceScopes), Created: time.Now().UTC()}
	if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docResource, ID: r.ID, Value: r, ExpectAbsent: true}); err != nil {
		return "", fmt.Errorf("save resource: %w", err)
	}
	a.log.Info("resource registered", "owner", owner, "resource", r.ID)
	return r.ID, nil
}

// UpdateResource replaces the description of a resource owner registered.
// A device's resource is ErrDerived; one that is not owner's ErrNoResource.
// The resource is written on condition that it is the version read
// (retried from a fresh read): an update never brings back a resource
// deleted meanwhile, at this replica or another.
func (a *Authority) UpdateResource(owner, id string, in ResourceInput) error {
	if _, _, err := a.ownRegistered(owner, id); err != nil {
		return err
	}
	if in.ID != "" && in.ID != id {
		return fieldErr("_id", "%q is not the resource's id %q; leave it out", in.ID, id)
	}
	if err := checkResource(in); err != nil {
		return err
	}
	err := retry(func() error {
		r, ver, err := a.ownRegistered(owner, id)
		if err != nil {
			return err
		}
		r.Name, r.Type, r.Description, r.IconURI, r.Scopes, r.Updated = in.Name, in.Type, in.Description, in.IconURI, slices.Clone(in.ResourceScopes), time.Now().UTC()
		if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docResource, ID: id, Value: r, ExpectVersion: ver}); err != nil {
			return fmt.Errorf("save resource %q: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.log.Info("resource updated", "owner", owner, "resource", id)
	return nil
}

// DeleteResource deletes a resource owner registered, on condition that it
// is the version read (retried from a fresh read).
func (a *Authority) DeleteResource(owner, id string) error {
	err := retry(func() error {
		_, ver, err := a.ownRegistered(owner, id)
		if err != nil {
			return err
		}
		if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docResource, ID: id, Delete: true, ExpectVersion: ver}); err != nil {
			return fmt.Errorf("delete resource %q: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.log.Info("resource deleted", "owner", owner, "resource", id)
	return nil
}

// ownRegistered loads a resource owner registered and its version:
// ErrDerived for one of owner's devices' resources, ErrNoResource for
// anything else.
func (a *Authority) ownRegistered(owner, id string) (registeredResource, uint64, error) {
	if _, _, ok := store.ParseResourceID(id); ok {
		r, err := a.Resource(id)
		if err != nil {
			return registeredResource{}, 0, err
		}
		if r.Owner != owner {
			return registeredResource{}, 0, ErrNoResource
		}
		return registeredResource{}, 0, ErrDerived
	}
	var r registeredResource
	ver, err := a.Store.GetDocVersion(docResource, id, &r)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.Owner != owner) {
		return registeredResource{}, 0, ErrNoResource
	}
	if err != nil {
		return registeredResource{}, 0, fmt.Errorf("load resource %q: %w", id, err)
	}
	return r, ver, nil
}

// patError is a refusal of a protection API token (RFC 6750 §3.1).
type patError struct {
	status      int
	code, desc  string
	dpopProblem bool
}

// protectionSubject authenticates a resource registration request: its
// access token (Authorization: Bearer, or DPoP with a proof) must be this
// authority's, active, not an RPT, and proven as its cnf says: a
// certificate binding (x5t#S256) by the request's TLS client certificate,
// a key binding (jkt) by a DPoP proof with that key. It returns the
// token's subject; a store error is an error.
func (a *Authority) protectionSubject(r *http.Request) (string, *patError, error) {
	bad := func(desc string) (string, *patError, error) {
		return "", &patError{status: http.StatusUnauthorized, code: "invalid_token", desc: desc}, nil
	}
	authz := r.Header.Get("Authorization")
	scheme, raw, _ := strings.Cut(authz, " ")
	isDPoP := strings.EqualFold(scheme, "DPoP")
	if (!isDPoP && !strings.EqualFold(scheme, "Bearer")) || raw == "" {
		return "", &patError{status: http.StatusUnauthorized, code: "invalid_request",
			desc: "send Authorization: Bearer <access token of this authority> (your own, or a paired device's acting for you), or DPoP <token> with a DPoP proof for a key-bound one"}, nil
	}
	if len(raw) > maxClaimToken {
		return bad("the token is too long")
	}
	tok, err := a.parseOwnToken(raw)
	if err != nil {
		return bad("the token is not an access token of this authority")
	}
	var clientID string
	_ = tok.Get("client_id", &clientID)
	reason, err := a.tokenInactive(tok, clientID)
	if err != nil {
		return "", nil, err
	}
	if reason != "" {
		return bad("the token is not active: " + reason)
	}
	if tok.Has("permissions") {
		return bad("a requesting party token (RPT) is not a protection API token; use the subject's own access token")
	}
	var cnf map[string]any
	if tok.Has("cnf") {
		if tok.Get("cnf", &cnf) != nil {
			return bad("the token's cnf is not an object")
		}
	}
	x5t, _ := cnf["x5t#S256"].(string)
	jkt, _ := cnf["jkt"].(string)
	for k := range cnf {
		if k != "x5t#S256" && k != "jkt" {
			return bad(fmt.Sprintf("the token is bound by cnf %q, which cannot be proven here", k))
		}
	}
	if x5t != "" {
		cert := clientCert(r)
		if cert == nil {
			return bad("the token is bound to a certificate (cnf x5t#S256): send the request over mutual TLS with it")
		}
		sum := sha256.Sum256(cert.Raw)
		if !sameSecret(base64.RawURLEncoding.EncodeToString(sum[:]), x5t) {
			return bad("the token is bound to another certificate than this connection's")
		}
	}
	switch {
	case jkt != "" && !isDPoP:
		e := &patError{status: http.StatusUnauthorized, code: "invalid_token", dpopProblem: true,
			desc: "the token is bound to a key (cnf jkt): send Authorization: DPoP <token> and a DPoP proof made with that key"}
		return "", e, nil
	case jkt == "" && isDPoP:
		return bad("the token is not bound to a DPoP key: send it as Bearer")
	case jkt != "":
		proofs := r.Header.Values("DPoP")
		if len(proofs) != 1 {
			return "", &patError{status: http.StatusUnauthorized, code: dpop.CodeInvalidProof, dpopProblem: true,
				desc: fmt.Sprintf("send exactly one DPoP header (%d sent)", len(proofs))}, nil
		}
		p, err := a.dpop.Check(proofs[0], dpop.Request{Method: r.Method, URL: a.cfg.URL + r.URL.EscapedPath(), AccessToken: raw})
		if err == nil && !sameSecret(p.JKT, jkt) {
			err = errors.New("the proof's key is not the one the token is bound to")
		}
		if err == nil {
			if err = a.dpop.Use(p); err != nil && !errors.As(err, new(*dpop.Error)) {
				// The replay store failed: refused (fail closed), as the
				// authority's failure, not the client's.
				return "", nil, fmt.Errorf("record the DPoP proof: %w", err)
			}
		}
		if err != nil {
			desc := err.Error()
			var de *dpop.Error
			if errors.As(err, &de) {
				desc = de.Detail
			}
			return "", &patError{status: http.StatusUnauthorized, code: dpop.CodeInvalidProof, dpopProblem: true, desc: desc}, nil
		}
	}
	sub, _ := tok.Subject()
	if sub == "" {
		return bad("the token has no sub")
	}
	return sub, nil, nil
}

// pat requires a protection API token and passes its subject on.
func (h *Handler) pat(next func(w http.ResponseWriter, r *http.Request, owner string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sub, pe, err := h.A.protectionSubject(r)
		if err != nil {
			h.A.log.Error("resource registration refused: store unreadable", "path", r.URL.Path, "err", err)
			fail(w, http.StatusInternalServerError, "server_error", "the authority could not check the token; try again")
			return
		}
		if pe != nil {
			h.A.log.Warn("resource registration refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", pe.desc)
			w.Header().Add("WWW-Authenticate", fmt.Sprintf(`Bearer realm="edgeid-authority", error=%q`, "invalid_token"))
			if pe.dpopProblem {
				w.Header().Add("WWW-Authenticate", fmt.Sprintf(`DPoP realm="edgeid-authority", error=%q, algs="%s"`, pe.code, strings.Join(dpop.DefaultAlgs, " ")))
			}
			fail(w, pe.status, pe.code, pe.desc)
			return
		}
		next(w, r, sub)
	}
}

// answerResource writes a resource API error: 404 not_found, 400 for a
// device's resource or a bad field, 500 for the store.
func answerResource(w http.ResponseWriter, id string, err error) {
	var fe *FieldError
	switch {
	case errors.Is(err, ErrNoResource):
		fail(w, http.StatusNotFound, "not_found", fmt.Sprintf("no resource %q of yours", id))
	case errors.Is(err, ErrDerived):
		fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("resource %q is %v", id, ErrDerived))
	case errors.As(err, &fe):
		fail(w, http.StatusBadRequest, "invalid_request", fe.Error())
	case errors.Is(err, store.ErrConflict):
		fail(w, http.StatusConflict, "conflict", fmt.Sprintf("resource %q kept changing while it was written; try again", id))
	default:
		fail(w, http.StatusInternalServerError, "server_error", "the authority could not read its resources; try again")
	}
}

func (h *Handler) listResources(w http.ResponseWriter, r *http.Request, owner string) {
	ids, err := h.A.ResourceSet(owner)
	if err != nil {
		h.A.log.Error("list resources", "owner", owner, "err", err)
	}
	writeList(w, ids, err)
}

func (h *Handler) getResource(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	d, err := h.A.DescribeResource(owner, id)
	if err != nil {
		answerResource(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *Handler) createResource(w http.ResponseWriter, r *http.Request, owner string) {
	var in ResourceInput
	if err := decode(r, &in); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	id, err := h.A.RegisterResource(owner, in)
	if err != nil {
		answerResource(w, "", err)
		return
	}
	w.Header().Set("Location", h.A.URL()+pathResourceSet+"/"+url.PathEscape(id))
	writeJSON(w, http.StatusCreated, map[string]string{"_id": id})
}

func (h *Handler) updateResource(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	var in ResourceInput
	if err := decode(r, &in); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if err := h.A.UpdateResource(owner, id, in); err != nil {
		answerResource(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"_id": id})
}

func (h *Handler) deleteResource(w http.ResponseWriter, r *http.Request, owner string) {
	id := r.PathValue("id")
	if err := h.A.DeleteResource(owner, id); err != nil {
		answerResource(w, id, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
