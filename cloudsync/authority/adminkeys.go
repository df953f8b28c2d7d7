package authority

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgeid/edgeid/store"
)

// Admin API keys: several, each with a name, revocable, kept as store
// documents holding only the SHA-256 of the key (a key is 32 random bytes,
// so a hash without salt or stretching is enough: there is nothing to
// guess). The admin token of the configuration (admin_token_file,
// EDGEID_AUTHORITY_ADMIN_TOKEN) is the key named "bootstrap". Every change
// made through the admin API is applied with who = "admin:<name>", which
// the change log records (store.LogEntry.By).

const (
	docAdminKey     = "admin-key"      // AdminKey by name
	docAdminKeyUsed = "admin-key-used" // time.Time of the last use, by name
	// BootstrapKey is the name of the configured admin token.
	BootstrapKey = "bootstrap"
	// adminKeyPrefix starts every key made here, so one found in a file or
	// a log is recognisable.
	adminKeyPrefix = "edgeid_ak_"
	// adminKeyUseEvery is how often a key's last use is written, at most.
	adminKeyUseEvery = time.Minute
)

// adminKeyNames are the names a key may have: what a person would call it.
var adminKeyNames = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)

// AdminKey is an admin API key as stored: its hash, never the key.
type AdminKey struct {
	Name      string    `json:"name"`
	SHA256    string    `json:"sha256"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
}

// AdminKeyInfo is an admin key as listed: no key, no hash.
type AdminKeyInfo struct {
	Name      string    `json:"name"`
	Created   time.Time `json:"created,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	// Configured is set for the bootstrap key: it lives in the
	// configuration, not the store, and is revoked by removing it there.
	Configured bool `json:"configured,omitempty"`
}

var (
	// ErrAdminKeyName is a name that is not allowed.
	ErrAdminKeyName = errors.New(`name: use 1 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit; "bootstrap" is the configured admin token`)
	// ErrAdminKeyExists is a name already taken.
	ErrAdminKeyExists = errors.New("an admin key of that name exists; revoke it first or choose another name")
)

func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// AddAdminKey makes a new admin key called name and returns it: the only
// time it is seen, since only its hash is kept. The key is created on
// condition that none of that name exists: of two additions of one name at
// once, at one replica or two, one is made and the other is
// ErrAdminKeyExists (never two keys handed out of which one is lost).
func (a *Authority) AddAdminKey(name, who string) (string, AdminKeyInfo, error) {
	if !adminKeyNames.MatchString(name) || name == BootstrapKey {
		return "", AdminKeyInfo{}, ErrAdminKeyName
	}
	a.adminKeyMu.Lock() // fewer conflicts here; the condition is what makes it right
	defer a.adminKeyMu.Unlock()
	key := adminKeyPrefix + base64.RawURLEncoding.EncodeToString(randomBytes(32))
	k := AdminKey{Name: name, SHA256: keyHash(key), Created: time.Now().UTC(), CreatedBy: who}
	err := retry(func() error {
		err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docAdminKey, ID: name, Value: k, ExpectAbsent: true},
			store.DocWrite{Kind: docAdminKeyUsed, ID: name, Delete: true}) // a former key's use
		if errors.Is(err, store.ErrConflict) {
			// The key exists, or a concurrent write touched one of the
			// two (a last use being recorded): which, the store says.
			var old AdminKey
			if gerr := a.Store.GetDoc(docAdminKey, name, &old); gerr == nil {
				return ErrAdminKeyExists
			} else if !errors.Is(gerr, store.ErrNotFound) {
				return gerr
			}
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrAdminKeyExists) {
			return "", AdminKeyInfo{}, err
		}
		return "", AdminKeyInfo{}, fmt.Errorf("add admin key %q: %w", name, err)
	}
	a.log.Info("admin key added", "by", who, "key", name)
	return key, AdminKeyInfo{Name: name, Created: k.Created, CreatedBy: who}, nil
}

// RevokeAdminKey deletes the admin key called name, with its last use, on
// condition that it is the key read (retried from a fresh read): it is
// refused from now on. store.ErrNotFound if there is none.
func (a *Authority) RevokeAdminKey(name, who string) error {
	if name == BootstrapKey {
		return fmt.Errorf("the bootstrap key is the configured admin token: remove or change admin_token_file (or EDGEID_AUTHORITY_ADMIN_TOKEN) and restart")
	}
	a.adminKeyMu.Lock()
	defer a.adminKeyMu.Unlock()
	err := retry(func() error {
		var k AdminKey
		ver, err := a.Store.GetDocVersion(docAdminKey, name, &k)
		if err != nil {
			return err
		}
		return a.Store.CommitDocs(nil, store.DocWrite{Kind: docAdminKey, ID: name, Delete: true, ExpectVersion: ver},
			store.DocWrite{Kind: docAdminKeyUsed, ID: name, Delete: true})
	})
	if errors.Is(err, store.ErrNotFound) {
		return err
	} else if err != nil {
		return fmt.Errorf("revoke admin key %q: %w", name, err)
	}
	a.log.Info("admin key revoked", "by", who, "key", name)
	return nil
}

// AdminKeys lists the stored admin keys by name (the bootstrap key is not
// stored: the handler, which holds it, adds it).
func (a *Authority) AdminKeys() ([]AdminKeyInfo, error) {
	keys, err := listDocs[AdminKey](a.Store, docAdminKey, nil)
	if err != nil {
		return nil, err
	}
	var out []AdminKeyInfo
	for _, k := range keys {
		info := AdminKeyInfo{Name: k.Name, Created: k.Created, CreatedBy: k.CreatedBy}
		if info.LastUsed, err = a.adminKeyLastUsed(k.Name); err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (a *Authority) adminKeyLastUsed(name string) (time.Time, error) {
	var t time.Time
	if err := a.Store.GetDoc(docAdminKeyUsed, name, &t); err != nil && !errors.Is(err, store.ErrNotFound) {
		return time.Time{}, err
	}
	return t, nil
}

// adminKeyName is the name of the stored admin key presented ("" for none).
// Every stored hash is compared, in constant time; a store error is an
// error (the caller refuses).
func (a *Authority) adminKeyName(presented string) (string, error) {
	sum := sha256.Sum256([]byte(presented))
	name := ""
	err := a.Store.ListDocs(docAdminKey, func(_ string, raw []byte) error {
		var k AdminKey
		if err := json.Unmarshal(raw, &k); err != nil {
			return err
		}
		want, err := hex.DecodeString(k.SHA256)
		if err != nil {
			return fmt.Errorf("admin key %q: bad hash", k.Name)
		}
		if subtle.ConstantTimeCompare(sum[:], want) == 1 {
			name = k.Name
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read admin keys: %w", err)
	}
	return name, nil
}

// adminKeyUsed records that the key called name was used now, at most once
// a minute a key (per replica: adminUse is this replica's throttle), and
// never for a key revoked meanwhile. A failure is logged: the record is
// for people, not a check.
func (a *Authority) adminKeyUsed(name string) {
	now := time.Now().UTC()
	a.mu.Lock()
	if a.adminUse == nil {
		a.adminUse = map[string]time.Time{}
	}
	if now.Sub(a.adminUse[name]) < adminKeyUseEvery {
		a.mu.Unlock()
		return
	}
	a.adminUse[name] = now
	a.mu.Unlock()
	a.adminKeyMu.Lock()
	defer a.adminKeyMu.Unlock()
	if err := a.Store.PutDoc(docAdminKeyUsed, name, now); err != nil {
		a.log.Warn("admin key use not recorded", "key", name, "err", err)
		return
	}
	if name == BootstrapKey {
		return
	}
	// Written first, the key checked after: a revocation (which deletes the
	// key and its use in one commit), here or at another replica, either
	// comes after the write and deletes it, or before the check, which
	// then deletes it.
	var k AdminKey
	if err := a.Store.GetDoc(docAdminKey, name, &k); errors.Is(err, store.ErrNotFound) {
		if err := a.Store.DeleteDoc(docAdminKeyUsed, name); err != nil {
			a.log.Warn("use of a revoked admin key not deleted", "key", name, "err", err)
		}
	}
}

// adminKey authenticates an admin request: the name of the key in its
// Authorization: Bearer header ("" for none or a wrong one), the bootstrap
// key compared in constant time like the stored ones. A store error is an
// error.
func (h *Handler) adminKey(r *http.Request) (string, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return "", nil
	}
	boot := h.AdminToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(h.AdminToken)) == 1
	name, err := h.A.adminKeyName(tok)
	switch {
	case err != nil && !boot:
		return "", err
	case boot:
		name = BootstrapKey
	}
	if name != "" {
		h.A.adminKeyUsed(name)
	}
	return name, nil
}

// adminRefused answers an admin request without a valid key.
func (h *Handler) adminRefused(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		h.A.log.Error("admin request refused: admin keys unreadable", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		fail(w, http.StatusInternalServerError, "server_error", "admin keys cannot be read; try again")
		return
	}
	h.A.log.Warn("admin request refused", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "missing or wrong admin key")
	w.Header().Set("WWW-Authenticate", `Bearer realm="edgeid-authority"`)
	fail(w, http.StatusUnauthorized, "invalid_token", "send Authorization: Bearer <admin key>")
}

func (h *Handler) listAdminKeys(w http.ResponseWriter, r *http.Request, who string) {
	ks, err := h.A.AdminKeys()
	if err == nil && h.AdminToken != "" {
		var used time.Time
		if used, err = h.A.adminKeyLastUsed(BootstrapKey); err == nil {
			ks = append([]AdminKeyInfo{{Name: BootstrapKey, LastUsed: used, Configured: true}}, ks...)
		}
	}
	writeList(w, ks, err)
}

func (h *Handler) addAdminKey(w http.ResponseWriter, r *http.Request, who string) {
	var req struct {
		Name string `json:"name"`
	}
	if err := decode(r, &req); err != nil {
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	key, info, err := h.A.AddAdminKey(req.Name, who)
	switch {
	case errors.Is(err, ErrAdminKeyName):
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, ErrAdminKeyExists):
		fail(w, http.StatusConflict, "conflict", err.Error())
	case err != nil:
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
	default:
		writeJSON(w, http.StatusCreated, struct {
			AdminKeyInfo
			Key string `json:"key"`
		}{info, key})
	}
}

func (h *Handler) revokeAdminKey(w http.ResponseWriter, r *http.Request, who string) {
	name := r.PathValue("name")
	err := h.A.RevokeAdminKey(name, who)
	switch {
	case errors.Is(err, store.ErrNotFound):
		fail(w, http.StatusNotFound, "not_found", "no admin key "+name)
	case name == BootstrapKey:
		fail(w, http.StatusBadRequest, "invalid_request", err.Error())
	case err != nil:
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]string{"revoked": name})
	}
}

// ChangeInfo is one entry of the change log as the admin API lists it: who
// made it, when, and what it touched (ids, never a secret).
type ChangeInfo struct {
	Rev     uint64              `json:"rev"`
	By      string              `json:"by"`
	At      time.Time           `json:"at,omitzero"`
	Records map[string][]string `json:"records"`
	Deleted map[string][]string `json:"deleted,omitempty"`
}

// ChangeLog lists up to max change log entries after rev from.
func (a *Authority) ChangeLog(from uint64, max int) ([]ChangeInfo, error) {
	es, err := a.Store.LogSince(from, max)
	if err != nil {
		return nil, err
	}
	out := make([]ChangeInfo, 0, len(es))
	for _, e := range es {
		b := e.Batch
		c := ChangeInfo{Rev: e.Rev, By: e.By, At: e.At, Records: map[string][]string{}, Deleted: map[string][]string{}}
		add := func(m map[string][]string, kind string, ids ...string) {
			if len(ids) > 0 {
				m[kind] = append(m[kind], ids...)
			}
		}
		for _, x := range b.Classes {
			add(c.Records, "classes", x.Name)
		}
		for _, x := range b.Devices {
			add(c.Records, "devices", x.ID)
		}
		for _, x := range b.Users {
			add(c.Records, "users", x.ID)
		}
		for _, x := range b.Grants {
			add(c.Records, "grants", x.ID)
		}
		for _, x := range b.Issuers {
			add(c.Records, "issuers", x.Issuer)
		}
		for _, x := range b.Revocations {
			add(c.Records, "revocations", x.Key())
		}
		d := b.Delete
		add(c.Deleted, "classes", d.Classes...)
		add(c.Deleted, "devices", d.Devices...)
		add(c.Deleted, "users", d.Users...)
		add(c.Deleted, "grants", d.Grants...)
		add(c.Deleted, "issuers", d.Issuers...)
		add(c.Deleted, "revocations", d.Revocations...)
		out = append(out, c)
	}
	return out, nil
}

// changeLog is GET /admin/v1/changes?from=REV&limit=N: the change log after
// rev from (default 0), oldest first, at most limit (default and most 500).
func (h *Handler) changeLog(w http.ResponseWriter, r *http.Request, who string) {
	q := r.URL.Query()
	var from uint64
	limit := 500
	if s := q.Get("from"); s != "" {
		var err error
		if from, err = strconv.ParseUint(s, 10, 64); err != nil {
			fail(w, http.StatusBadRequest, "invalid_request", "from: want a rev (a whole number)")
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		var err error
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 500 {
			fail(w, http.StatusBadRequest, "invalid_request", "limit: want 1 to 500")
			return
		}
	}
	cs, err := h.A.ChangeLog(from, limit)
	if errors.Is(err, store.ErrLogTrimmed) {
		fail(w, http.StatusGone, "log_trimmed", fmt.Sprintf("the change log no longer holds rev %d", from+1))
		return
	}
	writeList(w, cs, err)
}
