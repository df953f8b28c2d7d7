package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxLen is the longest topic name or filter MQTT can carry: its strings have
// a two-byte length prefix.
const MaxLen = 65535

// problem is why a topic or filter is invalid. The hot path checks validity
// through this code so that it never builds an error value (which allocates);
// ValidTopic and ValidFilter turn it into an error only when asked.
type problem uint8

const (
	valid problem = iota
	probEmpty
	probTooLong
	probNUL
	probUTF8
	probPlusInTopic
	probHashInTopic
	probPlusNotAlone
	probHashNotAlone
	probHashNotLast
)

var problemText = [...]string{
	probEmpty:        "must not be empty",
	probNUL:          "contains U+0000",
	probUTF8:         "is not valid UTF-8",
	probPlusInTopic:  "contains wildcard '+' (not allowed in a topic name)",
	probHashInTopic:  "contains wildcard '#' (not allowed in a topic name)",
	probPlusNotAlone: "'+' must occupy an entire level",
	probHashNotAlone: "'#' must occupy an entire level",
	probHashNotLast:  "'#' must be the last level",
}

// errorf builds the error for p about s, described as kind ("topic" or
// "filter").
func (p problem) errorf(kind, s string) error {
	if p == probTooLong {
		return fmt.Errorf("%s %s: is %d bytes, longer than the MQTT limit of %d", kind, quote(s), len(s), MaxLen)
	}
	return errors.New(kind + " " + quote(s) + ": " + problemText[p])
}

// quote quotes s for an error message, truncating very long values so that
// one hostile input cannot produce a 64 KiB log line.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// checkTopic reports what is wrong with topic name t, without allocating.
func checkTopic(t string) problem {
	if len(t) == 0 {
		return probEmpty
	}
	if len(t) > MaxLen {
		return probTooLong
	}
	ascii := true
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c == 0:
			return probNUL
		case c == '+':
			return probPlusInTopic
		case c == '#':
			return probHashInTopic
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(t) {
		return probUTF8
	}
	return valid
}

// checkFilter reports what is wrong with topic filter f, without allocating.
// Scanning bytes is safe for UTF-8: '/', '+', '#' and NUL never occur inside a
// multi-byte sequence.
func checkFilter(f string) problem {
	if len(f) == 0 {
		return probEmpty
	}
	if len(f) > MaxLen {
		return probTooLong
	}
	ascii := true
	for i := 0; i < len(f); i++ {
		c := f[i]
		switch {
		case c == 0:
			return probNUL
		case c == '+':
			if !wholeLevel(f, i) {
				return probPlusNotAlone
			}
		case c == '#':
			if !wholeLevel(f, i) {
				return probHashNotAlone
			}
			if i+1 < len(f) {
				return probHashNotLast
			}
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(f) {
		return probUTF8
	}
	return valid
}

// wholeLevel reports whether the byte at i is a level on its own.
func wholeLevel(s string, i int) bool {
	return (i == 0 || s[i-1] == '/') && (i+1 == len(s) || s[i+1] == '/')
}

// ValidTopic reports why name is not a valid MQTT topic name for PUBLISH
// (empty, contains '+' or '#', contains U+0000, invalid UTF-8, longer than
// 65535 bytes), or nil if it is valid.
func ValidTopic(name string) error {
	if p := checkTopic(name); p != valid {
		return p.errorf("topic", name)
	}
	return nil
}

// ValidFilter reports why f is not a valid MQTT topic filter (empty, '#' not
// alone in the last level, '+' not alone in its level, U+0000, invalid UTF-8,
// longer than 65535 bytes), or nil if it is valid.
func ValidFilter(f string) error {
	if p := checkFilter(f); p != valid {
		return p.errorf("filter", f)
	}
	return nil
}

// Match reports whether topic name t is matched by filter f under MQTT
// 3.1.1/5.0 rules. An invalid filter or topic matches nothing, so a malformed
// input can never be read as a wildcard.
func Match(f, t string) bool {
	return checkFilter(f) == valid && checkTopic(t) == valid && match(f, t)
}

// match is Match for inputs already known to be valid. It walks both strings
// a level at a time instead of splitting them, so it does not allocate.
func match(f, t string) bool {
	if len(f) == 0 || len(t) == 0 {
		return false
	}
	// In a valid filter a leading '+' or '#' is the whole first level.
	if t[0] == '$' && (f[0] == '+' || f[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := cutLevel(f)
		if fl == "#" {
			return true
		}
		tl, trest, tmore := cutLevel(t)
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !tmore:
			// "a/#" matches "a": '#' includes the parent level.
			return frest == "#"
		case !fmore:
			return false
		}
		f, t = frest, trest
	}
}

// cutLevel splits the first level off s. more reports whether another level
// follows, which differs from rest == "" because "a/" has an empty second
// level.
func cutLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// Subset reports whether every topic name matched by filter sub is also
// matched by filter super, i.e. whether a client granted super may SUBSCRIBE
// to sub. Equal valid filters are subsets; an invalid filter on either side
// gives false.
//
// The answer is exact for the MQTT semantics described in the package
// comment, over valid topic names. Level by level: '#' in super covers the
// rest of sub; '+' in super covers a literal or '+'; a literal covers only
// the same literal; and a sub that can match more levels (or fewer) than
// super allows is not covered. One subtlety: '#' normally matches its parent
// topic, but "#" and "/#" have none (it would be empty, which is not a topic
// name), so "#" equals "+/#" and "/#" equals "/+/#".
func Subset(sub, super string) bool {
	return checkFilter(sub) == valid && checkFilter(super) == valid && subset(sub, super)
}

// subset is Subset for filters already known to be valid.
func subset(sub, super string) bool {
	if len(sub) == 0 || len(super) == 0 {
		return false
	}
	// A first-level wildcard in super excludes $-topics, which a sub
	// starting with a literal "$..." level matches.
	if sub[0] == '$' && (super[0] == '+' || super[0] == '#') {
		return false
	}
	subFirstEmpty := sub[0] == '/' // sub's first level is the literal ""
	for level := 0; ; level++ {
		pl, prest, pmore := cutLevel(super)
		if pl == "#" {
			return true
		}
		sl, srest, smore := cutLevel(sub)
		if sl == "#" {
			if level > 1 || (level == 1 && !subFirstEmpty) {
				// sub matches its parent topic and deeper ones; super,
				// with no '#' here, cannot match both.
				return false
			}
			// No parent topic exists: at the first level it would have
			// no levels, after an empty first level it would be "".
			// So here '#' means "+/#": one more level, then anything.
			if pl != "+" || !pmore {
				return false
			}
			super = prest
			continue
		}
		if pl != "+" && pl != sl {
			return false
		}
		switch {
		case !smore && !pmore:
			return true
		case !smore:
			// sub's topics end here; super needs more levels unless its
			// next level is a '#' that also matches the parent.
			return prest == "#"
		case !pmore:
			return false
		}
		sub, super = srest, prest
	}
}
