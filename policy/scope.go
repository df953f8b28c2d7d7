package policy

import (
	"fmt"
	"strings"
)

// Scope entry prefixes, following RFC 9431's convention for MQTT scopes.
const (
	scopePublish   = "publish:"
	scopeSubscribe = "subscribe:"
)

// ParseScope parses an OAuth scope string: entries separated by spaces
// (RFC 6749 uses only U+0020, so tabs and other characters stay part of an
// entry). "publish:<filter>" grants Publish on filter and
// "subscribe:<filter>" grants Subscribe. Entries without either prefix (e.g.
// "openid", "offline_access") are ignored because a token carries other
// scopes too. An entry with an invalid filter is an error naming the entry,
// rather than being skipped, so a malformed grant is noticed. Entries with
// the same filter merge into one rule; rules are in order of first
// appearance.
func ParseScope(scope string) ([]Rule, error) {
	var rules []Rule
	index := map[string]int{}
	for tok := range strings.SplitSeq(scope, " ") {
		var f string
		var a Action
		if rest, ok := strings.CutPrefix(tok, scopePublish); ok {
			f, a = rest, Publish
		} else if rest, ok := strings.CutPrefix(tok, scopeSubscribe); ok {
			f, a = rest, Subscribe
		} else {
			continue
		}
		if p := checkFilter(f); p != valid {
			return nil, fmt.Errorf("scope entry %s: %w", quote(tok), p.errorf("filter", f))
		}
		if i, ok := index[f]; ok {
			rules[i].Actions |= a
			continue
		}
		index[f] = len(rules)
		rules = append(rules, Rule{Filter: f, Actions: a})
	}
	return rules, nil
}

// FormatScope is the inverse of ParseScope: for each rule, in order,
// "publish:<filter>" then "subscribe:<filter>" as its actions allow, joined
// by spaces. Rules that a scope string cannot carry (an invalid filter, or
// one containing a space) are left out, so the result never grants more
// than rules.
func FormatScope(rules []Rule) string {
	var b strings.Builder
	add := func(prefix, f string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(prefix)
		b.WriteString(f)
	}
	for _, r := range rules {
		if checkFilter(r.Filter) != valid || strings.IndexByte(r.Filter, ' ') >= 0 {
			continue
		}
		if r.Actions&Publish != 0 {
			add(scopePublish, r.Filter)
		}
		if r.Actions&Subscribe != 0 {
			add(scopeSubscribe, r.Filter)
		}
	}
	return b.String()
}
