package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Vars are the values substituted into class templates.
type Vars struct{ Device, Owner, Client string }

// Expand substitutes {device}, {owner} and {client} in each rule's filter. A
// placeholder may appear anywhere inside a level ("dev/{device}/tele",
// "x/{device}-{client}"). Substitution is a single pass: a value that itself
// looks like a placeholder is copied literally.
//
// A rule is dropped, not reported, when a value it uses is empty, contains
// '/', '+', '#', U+0000 or invalid UTF-8, would put a '$' at the start of a
// filter whose template does not start with '$' (which would reach broker
// topics like $SYS), or makes the filter longer than MaxLen. Values come
// from devices and tokens, so the safe reaction is to grant less: a device
// without an owner simply gets no {owner} rules, and a device id "#" can
// never widen a permission.
//
// Problems in the template itself (unknown placeholder, unclosed '{', a
// filter that is invalid whatever the values) are errors, as CheckTemplate
// reports them.
func Expand(template []Rule, v Vars) ([]Rule, error) {
	if err := CheckTemplate(template); err != nil {
		return nil, err
	}
	out := make([]Rule, 0, len(template))
	for i, r := range template {
		f, ok, err := substitute(r.Filter, func(name string) string {
			switch name {
			case "device":
				return v.Device
			case "owner":
				return v.Owner
			default:
				return v.Client
			}
		})
		if err != nil {
			// CheckTemplate accepted this filter, so this cannot happen.
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		if !ok || (f[0] == '$' && r.Filter[0] != '$') || checkFilter(f) != valid {
			continue
		}
		out = append(out, Rule{Filter: f, Actions: r.Actions})
	}
	return out, nil
}

// CheckTemplate validates a template without values: every placeholder must
// be known and closed, and every filter must be valid with "x" substituted
// for each placeholder. Run it when a device class is configured so that
// mistakes surface then rather than when a device connects.
func CheckTemplate(template []Rule) error {
	for i, r := range template {
		if err := r.Actions.validate(); err != nil {
			return fmt.Errorf("rule %d: filter %s: %w", i, quote(r.Filter), err)
		}
		f, _, err := substitute(r.Filter, func(string) string { return "x" })
		if err != nil {
			return fmt.Errorf("rule %d: filter %s: %w", i, quote(r.Filter), err)
		}
		if p := checkFilter(f); p != valid {
			return fmt.Errorf("rule %d: %w", i, p.errorf("filter", r.Filter))
		}
	}
	return nil
}

// substitute replaces each {name} in tmpl with value(name). ok is false if
// some value is unsafe to place in a filter (see safeValue); scanning still
// continues so that template errors are never masked by a bad value.
func substitute(tmpl string, value func(name string) string) (out string, ok bool, err error) {
	if strings.IndexByte(tmpl, '{') < 0 {
		return tmpl, true, nil
	}
	var b strings.Builder
	ok = true
	rest, off := tmpl, 0
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			return b.String(), ok, nil
		}
		b.WriteString(rest[:i])
		n := strings.IndexByte(rest[i:], '}')
		if n < 0 {
			return "", false, fmt.Errorf("unclosed '{' at byte %d", off+i)
		}
		name := rest[i+1 : i+n]
		switch name {
		case "device", "owner", "client":
		default:
			return "", false, fmt.Errorf("unknown placeholder %s (want {device}, {owner} or {client})", quote(rest[i:i+n+1]))
		}
		v := value(name)
		if !safeValue(v) {
			ok = false
		}
		b.WriteString(v)
		rest, off = rest[i+n+1:], off+i+n+1
	}
}

// safeValue reports whether v can be placed inside a filter level without
// changing the filter's shape: it must be non-empty (an empty device id
// would turn "dev/{device}" into another device's prefix "dev/"), must not
// add levels or wildcards, and must be valid UTF-8 without U+0000.
func safeValue(v string) bool {
	return v != "" && !strings.ContainsAny(v, "/+#\x00") && utf8.ValidString(v)
}
