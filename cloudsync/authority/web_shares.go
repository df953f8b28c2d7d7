package authority

import (
	"errors"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgeid/edgeid/store"
)

// The owners' sharing pages (issue 14, UMA 2.0): "Share" on a device, "Shared
// by me", "Requests", "Shared with me" and "Household". Each is a thin page
// over the Authority's share methods (shares.go); a refusal that names a
// field (FieldError) is shown beside that field. Destructive actions (revoke,
// deny, give up, remove a member) need their "Yes, …" box ticked: the
// browser asks for it (required), and the server refuses the form without
// it, so they stay confirmed without JavaScript.

// ShareZone is the time zone the pages read and show dates in: an
// expiry typed as a date and time is that instant in ShareZone (the
// authority's local time). A daily window is kept as wall-clock HH:MM and
// each gateway reads it in its own gateway.time_zone, so it needs no zone
// here; the pages say both.
var ShareZone = time.Local

// Form layouts of the time inputs (datetime-local sends the first).
var expiryLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04"}

const humanTime = "2 Jan 2006 15:04 MST"

var pageFuncs = template.FuncMap{
	// ferr is the error beside a page's field (no row).
	"ferr": func(p page, field string) fieldMsg {
		if p.Row != "" {
			return fieldMsg{Field: field}
		}
		return fieldMsg{Field: field, Msg: p.Fields[field]}
	},
	// rerr is the error beside a field of row.
	"rerr": func(p page, row, field string) fieldMsg {
		if p.Row != row {
			return fieldMsg{Field: field}
		}
		return fieldMsg{Field: field, Msg: p.Fields[field]}
	},
	// rother lists a row's errors of the fields not shown beside an input.
	"rother": func(p page, row string, shown ...string) []fieldMsg {
		if p.Row != row {
			return nil
		}
		var out []fieldMsg
		for f, m := range p.Fields {
			if !slices.Contains(shown, f) {
				out = append(out, fieldMsg{Field: f, Msg: m})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
		return out
	},
	"val": func(p page, name string) string { return p.Values.Get(name) },
	"rval": func(p page, row, name string) string {
		if p.Row != row {
			return ""
		}
		return p.Values.Get(name)
	},
}

// fieldMsg is one field's error (Msg empty: none).
type fieldMsg struct{ Field, Msg string }

// shareFormView is the "Share" form of one device.
type shareFormView struct {
	Device  store.Device
	Groups  []groupOption
	Others  []deviceOption
	Members []store.User
	Kind    string // user, member or client
	Min     string // the earliest expiry the date-time input offers
}

type groupOption struct {
	Name, Description string
	Scopes            []scopeOption
}

type scopeOption struct {
	Field, ID, Label string
	Checked          bool
}

type deviceOption struct {
	store.Device
	Groups  []string
	Checked bool
}

// shareView is a share as the pages show it.
type shareView struct {
	ID, Owner, Grantee, GranteeNote, Kind string
	Devices                               []deviceResourcesView
	Conditions                            []string
	Created                               string
	Expired                               bool
}

// deviceResourcesView are a share's groups of one device.
type deviceResourcesView struct {
	ID, Name string
	Groups   []groupScopesView
}

type groupScopesView struct {
	ResourceID, Group, Scopes string
}

type requestView struct {
	ID, Party, PartyNote, State, Created, Decided, Share string
	Devices                                              []deviceResourcesView
}

type memberView struct {
	store.User
	Shares int
}

func (w *web) mountShares(handle func(pattern string, fn http.HandlerFunc)) {
	handle("GET /devices/{id}/share", w.shareForm)
	handle("POST /devices/{id}/share", w.share)
	handle("GET /shares", w.sharesBy)
	handle("POST /shares/{id}/revoke", w.revoke)
	handle("GET /requests", w.requests)
	handle("POST /requests/{id}/approve", w.decide(true))
	handle("POST /requests/{id}/deny", w.decide(false))
	handle("GET /shared-with-me", w.sharedWith)
	handle("POST /shared-with-me/{id}/give-up", w.giveUp)
	handle("GET /household", w.household)
	handle("POST /household", w.addMember)
	handle("POST /household/{id}/remove", w.removeMember)
}

// pendingRequests counts the requests waiting for owner (navigation).
func (w *web) pendingRequests(owner string) int {
	rs, err := w.a.Requests(owner)
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range rs {
		if r.State == RequestPending {
			n++
		}
	}
	return n
}

// flash keeps msg for the session's next page (Post/Redirect/Get).
func (w *web) flash(sid string, s webSession, msg string) {
	if sid == "" { // anonymous: nothing is stored for it
		return
	}
	s.Flash = msg
	_ = w.a.putWebSession(hashCode(sid), s)
}

// takeFlash returns and forgets the session's notice.
func (w *web) takeFlash(sid string, s webSession) string {
	if s.Flash == "" || sid == "" {
		return ""
	}
	msg := s.Flash
	s.Flash = ""
	_ = w.a.putWebSession(hashCode(sid), s)
	return msg
}

// zoneName names ShareZone for the pages: "CET (UTC+01:00)", "UTC".
func zoneName() string {
	now := time.Now().In(ShareZone)
	if abbr := now.Format("MST"); abbr != "UTC" {
		return abbr + " (UTC" + now.Format("-07:00") + ")"
	}
	return "UTC"
}

// fieldErrors sorts err into the page: a FieldError beside its field, any
// other as a general error (logged, not shown in detail).
func (w *web) fieldErrors(p *page, err error, what string) {
	var fe *FieldError
	if errors.As(err, &fe) {
		if p.Fields == nil {
			p.Fields = map[string]string{}
		}
		p.Fields[fe.Field] = fe.Msg
		return
	}
	w.a.log.Error(what, "user", p.User, "err", err)
	p.Errors = append(p.Errors, "Something went wrong on our side; try again.")
}

// notMine answers a path naming a device, share, request or member that is
// not the user's.
func (w *web) notMine(rw http.ResponseWriter, s webSession, what string) {
	w.renderDevicesCode(rw, s, http.StatusNotFound, "", []string{what})
}

// --- Share a device ---

func (w *web) ownDevice(owner, id string) (store.Device, bool) {
	d, err := w.a.Device(id)
	if err != nil || d.Owner != owner {
		return store.Device{}, false
	}
	return d, true
}

func (w *web) shareFormPage(s webSession, d store.Device, vals url.Values) (page, error) {
	p := page{Title: "Share " + deviceLabelOf(d), User: s.User, CSRF: s.CSRF, Nav: "devices", Wide: true, Values: vals, Zone: zoneName()}
	res, err := w.a.ResourcesOf(s.User)
	if err != nil {
		return p, err
	}
	members, err := w.a.Members(s.User)
	if err != nil {
		return p, err
	}
	f := shareFormView{Device: d, Members: members, Kind: vals.Get("grantee_kind"),
		Min: time.Now().In(ShareZone).Format("2006-01-02T15:04")}
	if f.Kind == "" {
		f.Kind = "user"
	}
	others := map[string]*deviceOption{}
	var order []string
	chosen := vals["devices"]
	for _, r := range res {
		if r.Device.ID == d.ID {
			scopes := r.Group.Scopes
			if len(scopes) == 0 {
				scopes = []string{store.ScopeSub, store.ScopePub}
			}
			g := groupOption{Name: r.Group.Name, Description: r.Group.Description}
			for _, sc := range scopes {
				field := "group:" + r.Group.Name + ":" + sc
				g.Scopes = append(g.Scopes, scopeOption{Field: field, ID: "group-" + r.Group.Name + "-" + sc, Label: scopeInWords(sc), Checked: vals.Get(field) != ""})
			}
			f.Groups = append(f.Groups, g)
			continue
		}
		o, ok := others[r.Device.ID]
		if !ok {
			o = &deviceOption{Device: r.Device, Checked: slices.Contains(chosen, r.Device.ID)}
			others[r.Device.ID] = o
			order = append(order, r.Device.ID)
		}
		o.Groups = append(o.Groups, r.Group.Name)
	}
	for _, id := range order {
		f.Others = append(f.Others, *others[id])
	}
	p.ShareForm = f
	return p, nil
}

func (w *web) shareForm(rw http.ResponseWriter, r *http.Request) {
	s, ok := w.requireUser(rw, r)
	if !ok {
		return
	}
	d, ok := w.ownDevice(s.User, r.PathValue("id"))
	if !ok {
		w.notMine(rw, s, "That device is not yours.")
		return
	}
	p, err := w.shareFormPage(s, d, url.Values{})
	if err != nil {
		w.fieldErrors(&p, err, "share form")
	}
	w.render(rw, "share.html", http.StatusOK, p)
}

// parseShareForm reads the share form of device dev; problems are keyed by
// field, as CreateShare's are.
func parseShareForm(vals url.Values, dev string, members []store.User, now time.Time) (ShareInput, map[string]string) {
	bad := map[string]string{}
	in := ShareInput{Devices: []string{dev}, Groups: map[string][]string{}}
	for _, id := range vals["devices"] {
		if id != "" && !slices.Contains(in.Devices, id) {
			in.Devices = append(in.Devices, id)
		}
	}
	switch kind := vals.Get("grantee_kind"); kind {
	case "user":
		in.GranteeKind, in.Grantee = store.GranteeUser, strings.ToLower(strings.TrimSpace(vals.Get("grantee")))
		if in.Grantee == "" {
			bad["grantee"] = "type the username of the person to share with"
		}
	case "member":
		in.GranteeKind, in.Grantee = store.GranteeUser, vals.Get("member")
		if !slices.ContainsFunc(members, func(u store.User) bool { return u.ID == in.Grantee }) {
			bad["grantee"] = "choose a member of your household (add one on the Household page)"
		}
	case "client":
		in.GranteeKind, in.Grantee = store.GranteeClient, strings.TrimSpace(vals.Get("client"))
		if in.Grantee == "" {
			bad["grantee"] = "type the client id of the service or app"
		}
	default:
		bad["grantee_kind"] = "choose who to share with: a registered user, a household member or a service"
	}
	for key, v := range vals {
		name, ok := strings.CutPrefix(key, "group:")
		if !ok || len(v) == 0 || v[0] == "" {
			continue
		}
		group, scope, ok := strings.Cut(name, ":")
		if !ok || group == "" {
			continue
		}
		in.Groups[group] = append(in.Groups[group], scope)
	}
	for _, sc := range in.Groups {
		sort.Strings(sc)
	}
	if len(in.Groups) == 0 {
		bad["groups"] = "choose what to share (telemetry, status, …)"
	}
	exp, win, cond := parseConditionsForm(vals, now)
	maps.Copy(bad, cond)
	in.Expires, in.Window = exp, win
	return in, bad
}

// parseConditionsForm reads the expiry and the daily window of a form.
func parseConditionsForm(vals url.Values, now time.Time) (time.Time, *store.Window, map[string]string) {
	bad := map[string]string{}
	var exp time.Time
	if v := strings.TrimSpace(vals.Get("expires")); v != "" {
		var err error
		for _, layout := range expiryLayouts {
			if exp, err = time.ParseInLocation(layout, v, ShareZone); err == nil {
				break
			}
		}
		switch {
		case err != nil:
			bad["expires"] = "give a date and time, as 2026-12-03T18:00, or leave it empty to share until you revoke it"
		case !exp.After(now):
			bad["expires"] = exp.Format(humanTime) + " is in the past; give a later time, or leave it empty to share until you revoke it"
		}
	}
	var win *store.Window
	from, to := strings.TrimSpace(vals.Get("window_from")), strings.TrimSpace(vals.Get("window_to"))
	switch {
	case from == "" && to == "":
	case from == "" || to == "":
		bad["window"] = "give both the start and the end of the daily window, or neither to share at all hours"
	default:
		win = &store.Window{From: from, To: to}
		if err := win.Check(); err != nil {
			bad["window"] = err.Error()
		}
	}
	return exp, win, bad
}

func (w *web) share(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	d, ok := w.ownDevice(s.User, r.PathValue("id"))
	if !ok {
		w.notMine(rw, s, "That device is not yours.")
		return
	}
	p, err := w.shareFormPage(s, d, r.PostForm)
	if err != nil {
		w.fieldErrors(&p, err, "share form")
		w.render(rw, "share.html", http.StatusInternalServerError, p)
		return
	}
	in, bad := parseShareForm(r.PostForm, d.ID, p.ShareForm.Members, time.Now())
	if len(bad) > 0 {
		p.Fields = bad
		w.render(rw, "share.html", http.StatusUnprocessableEntity, p)
		return
	}
	g, err := w.a.CreateShare(s.User, in, "owner "+s.User)
	if err != nil {
		w.fieldErrors(&p, err, "create share")
		w.render(rw, "share.html", http.StatusUnprocessableEntity, p)
		return
	}
	w.flash(sid, s, "Shared "+strings.Join(sharedGroupNames(g.Resources), ", ")+" of "+deviceLabelOf(d)+" with "+granteeInWords(g)+".")
	http.Redirect(rw, r, "/shares#share-"+g.ID, http.StatusSeeOther)
}

// --- Shared by me, Shared with me ---

func (w *web) sharesPage(sid string, s webSession, title, nav string, list func(string) ([]store.Grant, error)) page {
	p := page{Title: title, User: s.User, CSRF: s.CSRF, Nav: nav, Wide: true, Zone: zoneName(), Notice: w.takeFlash(sid, s)}
	gs, err := list(s.User)
	if err != nil {
		w.fieldErrors(&p, err, "list shares")
		return p
	}
	now := time.Now()
	for _, g := range gs {
		p.Shares = append(p.Shares, w.shareView(g, now))
	}
	return p
}

func (w *web) sharesBy(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok {
		return
	}
	w.render(rw, "shares.html", http.StatusOK, w.sharesPage(sid, s, "Shared by me", "shares", w.a.SharesBy))
}

func (w *web) sharedWith(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok {
		return
	}
	w.render(rw, "shared_with_me.html", http.StatusOK, w.sharesPage(sid, s, "Shared with me", "shared-with-me", w.a.SharesWith))
}

// endShare is revoke (the owner) and give up (the grantee): confirmed, then
// RevokeShare.
func (w *web) endShare(rw http.ResponseWriter, r *http.Request, title, nav, tmpl, back, done string, list func(string) ([]store.Grant, error)) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	id := r.PathValue("id")
	if r.PostFormValue("confirm") != "yes" {
		p := w.sharesPage(sid, s, title, nav, list)
		p.Row, p.Fields = id, map[string]string{"confirm": "tick the box to confirm"}
		w.render(rw, tmpl, http.StatusUnprocessableEntity, p)
		return
	}
	g, gerr := w.a.Grant(id)
	if err := w.a.RevokeShare(s.User, id, "owner "+s.User); err != nil {
		p := w.sharesPage(sid, s, title, nav, list)
		w.fieldErrors(&p, err, "revoke share")
		code := http.StatusInternalServerError
		var fe *FieldError
		if errors.As(err, &fe) {
			code = http.StatusNotFound
		}
		w.render(rw, tmpl, code, p)
		return
	}
	msg := done
	if gerr == nil {
		msg += ": " + strings.Join(sharedGroupNames(g.Resources), ", ")
		if tmpl == "shares.html" {
			msg += " with " + granteeInWords(g)
		} else {
			msg += " from " + g.Owner
		}
	}
	w.flash(sid, s, msg+". Every gateway ends that access now.")
	http.Redirect(rw, r, back, http.StatusSeeOther)
}

func (w *web) revoke(rw http.ResponseWriter, r *http.Request) {
	w.endShare(rw, r, "Shared by me", "shares", "shares.html", "/shares", "Revoked the share", w.a.SharesBy)
}

func (w *web) giveUp(rw http.ResponseWriter, r *http.Request) {
	w.endShare(rw, r, "Shared with me", "shared-with-me", "shared_with_me.html", "/shared-with-me", "Gave up the share", w.a.SharesWith)
}

func (w *web) shareView(g store.Grant, now time.Time) shareView {
	v := shareView{ID: g.ID, Owner: g.Owner, Grantee: g.Grantee, Kind: string(g.GranteeKind),
		Devices: w.resourcesView(g.Resources), Conditions: conditionsInWords(g, now),
		Created: g.Created.In(ShareZone).Format(humanTime), Expired: !g.Expires.IsZero() && !now.Before(g.Expires)}
	switch g.GranteeKind {
	case store.GranteeUser:
		v.GranteeNote = "registered user"
		if u, err := w.a.User(g.Grantee); err == nil {
			if u.Manager == g.Owner {
				v.GranteeNote = "household member"
			}
			if u.Name != "" {
				v.GranteeNote = u.Name + ", " + v.GranteeNote
			}
		}
	case store.GranteeClient:
		v.GranteeNote = "service or app"
		if d, err := w.a.Device(g.Grantee); err == nil && d.Name != "" {
			v.GranteeNote = d.Name + ", " + v.GranteeNote
		}
	}
	return v
}

// resourcesView groups shared resources by device, in their order.
func (w *web) resourcesView(rs []store.SharedResource) []deviceResourcesView {
	var out []deviceResourcesView
	for _, r := range rs {
		i := slices.IndexFunc(out, func(d deviceResourcesView) bool { return d.ID == r.Device })
		if i < 0 {
			d := deviceResourcesView{ID: r.Device}
			if dev, err := w.a.Device(r.Device); err == nil {
				d.Name = dev.Name
			}
			out = append(out, d)
			i = len(out) - 1
		}
		var words []string
		for _, sc := range r.Scopes {
			words = append(words, scopeInWords(sc))
		}
		out[i].Groups = append(out[i].Groups, groupScopesView{ResourceID: r.ID(), Group: r.Group, Scopes: strings.Join(words, ", ")})
	}
	return out
}

// scopeInWords says what a share scope lets the grantee do.
func scopeInWords(scope string) string {
	switch scope {
	case store.ScopeSub:
		return "read (sub)"
	case store.ScopePub:
		return "send (pub)"
	}
	return scope
}

// conditionsInWords puts a share's conditions in plain words.
func conditionsInWords(g store.Grant, now time.Time) []string {
	var out []string
	if g.Window != nil {
		w := "every day " + g.Window.From + "–" + g.Window.To
		if g.Window.To < g.Window.From {
			w += " (overnight)"
		}
		out = append(out, w)
	}
	if !g.Expires.IsZero() {
		at := g.Expires.In(ShareZone).Format(humanTime)
		if now.Before(g.Expires) {
			out = append(out, "until "+at)
		} else {
			out = append(out, "expired "+at)
		}
	}
	if len(out) == 0 {
		out = append(out, "at all hours, until revoked")
	}
	return out
}

func sharedGroupNames(rs []store.SharedResource) []string {
	var out []string
	for _, r := range rs {
		if !slices.Contains(out, r.Group) {
			out = append(out, r.Group)
		}
	}
	return out
}

func granteeInWords(g store.Grant) string {
	if g.GranteeKind == store.GranteeClient {
		return "the service " + g.Grantee
	}
	return g.Grantee
}

func deviceLabelOf(d store.Device) string {
	if d.Name != "" {
		return d.Name + " (" + d.ID + ")"
	}
	return d.ID
}

// --- Requests ---

func (w *web) requestsPage(sid string, s webSession) page {
	p := page{Title: "Requests", User: s.User, CSRF: s.CSRF, Nav: "requests", Wide: true, Zone: zoneName(), Notice: w.takeFlash(sid, s)}
	rs, err := w.a.Requests(s.User)
	if err != nil {
		w.fieldErrors(&p, err, "list requests")
		return p
	}
	for _, r := range rs {
		v := requestView{ID: r.ID, State: r.State, Share: r.Share, Devices: w.resourcesView(r.Resources),
			Created: r.Created.In(ShareZone).Format(humanTime)}
		if !r.Decided.IsZero() {
			v.Decided = r.Decided.In(ShareZone).Format(humanTime)
		}
		switch {
		case r.PartyKind == store.GranteeClient:
			v.Party, v.PartyNote = r.Client, "service or app"
		case r.Client != "":
			v.Party, v.PartyNote = r.Party, "registered user, through the app "+r.Client
		default:
			v.Party, v.PartyNote = r.Party, "registered user"
		}
		if r.State == RequestPending {
			p.Requests = append(p.Requests, v)
			p.Pending++
		} else {
			p.History = append(p.History, v)
		}
	}
	return p
}

func (w *web) requests(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok {
		return
	}
	w.render(rw, "requests.html", http.StatusOK, w.requestsPage(sid, s))
}

func (w *web) decide(approve bool) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		sid, s, ok := w.requireSession(rw, r)
		if !ok || !w.checkCSRF(rw, r, s) {
			return
		}
		id := r.PathValue("id")
		fail := func(code int, fields map[string]string) {
			p := w.requestsPage(sid, s)
			p.Row, p.Fields, p.Values = id, fields, r.PostForm
			w.render(rw, "requests.html", code, p)
		}
		var exp time.Time
		var win *store.Window
		if approve {
			var bad map[string]string
			if exp, win, bad = parseConditionsForm(r.PostForm, time.Now()); len(bad) > 0 {
				fail(http.StatusUnprocessableEntity, bad)
				return
			}
		} else if r.PostFormValue("confirm") != "yes" {
			fail(http.StatusUnprocessableEntity, map[string]string{"confirm": "tick the box to confirm"})
			return
		}
		req, err := w.a.DecideRequest(s.User, id, approve, exp, win, "owner "+s.User)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				p := w.requestsPage(sid, s)
				w.fieldErrors(&p, err, "decide request")
				w.render(rw, "requests.html", http.StatusInternalServerError, p)
				return
			}
			code := http.StatusUnprocessableEntity
			if fe.Field == "request" { // not to this owner, or decided already
				code = http.StatusNotFound
				if cur, err := w.a.ShareRequestByID(id); err == nil && cur.Owner == s.User {
					code = http.StatusConflict
				}
			}
			fail(code, map[string]string{fe.Field: fe.Msg})
			return
		}
		who := req.Party
		if req.PartyKind == store.GranteeClient {
			who = "the service " + req.Client
		}
		if approve {
			w.flash(sid, s, "Approved: "+who+" now has "+strings.Join(sharedGroupNames(req.Resources), ", ")+" (see Shared by me).")
		} else {
			w.flash(sid, s, "Denied: "+who+" was told no.")
		}
		http.Redirect(rw, r, "/requests", http.StatusSeeOther)
	}
}

// --- Household ---

func (w *web) householdPage(sid string, s webSession) page {
	p := page{Title: "Household", User: s.User, CSRF: s.CSRF, Nav: "household", Wide: true, Notice: w.takeFlash(sid, s)}
	if u, err := w.a.User(s.User); err == nil && u.Manager != "" {
		p.Manager = u.Manager
		return p
	}
	members, err := w.a.Members(s.User)
	if err != nil {
		w.fieldErrors(&p, err, "list members")
		return p
	}
	shares, err := w.a.SharesBy(s.User)
	if err != nil {
		w.fieldErrors(&p, err, "list shares")
		return p
	}
	for _, m := range members {
		v := memberView{User: m}
		for _, g := range shares {
			if g.GranteeKind == store.GranteeUser && g.Grantee == m.ID {
				v.Shares++
			}
		}
		p.Members = append(p.Members, v)
	}
	return p
}

func (w *web) household(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok {
		return
	}
	w.render(rw, "household.html", http.StatusOK, w.householdPage(sid, s))
}

func (w *web) addMember(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	p := w.householdPage(sid, s)
	if p.Manager != "" {
		p.Errors = append(p.Errors, "Your account is managed by "+p.Manager+"; only they can add household members.")
		w.render(rw, "household.html", http.StatusForbidden, p)
		return
	}
	vals := url.Values{"username": {r.PostFormValue("username")}, "name": {r.PostFormValue("name")}} // never the password
	u, err := w.a.AddMember(s.User, r.PostFormValue("username"), r.PostFormValue("name"), r.PostFormValue("password"), "owner "+s.User)
	if err != nil {
		p.Values = vals
		w.fieldErrors(&p, err, "add member")
		w.render(rw, "household.html", http.StatusUnprocessableEntity, p)
		return
	}
	w.flash(sid, s, "Added "+u.ID+" to your household. They log in as "+u.ID+" with the password you set, and see only what you share with them.")
	http.Redirect(rw, r, "/household", http.StatusSeeOther)
}

func (w *web) removeMember(rw http.ResponseWriter, r *http.Request) {
	sid, s, ok := w.requireSession(rw, r)
	if !ok || !w.checkCSRF(rw, r, s) {
		return
	}
	id := r.PathValue("id")
	if r.PostFormValue("confirm") != "yes" {
		p := w.householdPage(sid, s)
		p.Row, p.Fields = id, map[string]string{"confirm": "tick the box to confirm"}
		w.render(rw, "household.html", http.StatusUnprocessableEntity, p)
		return
	}
	if err := w.a.RemoveMember(s.User, id, "owner "+s.User); err != nil {
		p := w.householdPage(sid, s)
		w.fieldErrors(&p, err, "remove member")
		code := http.StatusInternalServerError
		var fe *FieldError
		if errors.As(err, &fe) {
			code = http.StatusNotFound
		}
		w.render(rw, "household.html", code, p)
		return
	}
	w.flash(sid, s, "Removed "+id+": the account can no longer log in, and what you shared with it is revoked.")
	http.Redirect(rw, r, "/household", http.StatusSeeOther)
}
