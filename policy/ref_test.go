package policy

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// The reference implementations below are deliberately naive (strings.Split,
// no shared code with the package) so that tests compare two independent
// readings of the MQTT specification.

func refValidTopic(t string) bool {
	return len(t) >= 1 && len(t) <= 65535 && utf8.ValidString(t) &&
		!strings.Contains(t, "+") && !strings.Contains(t, "#") && !strings.Contains(t, "\x00")
}

func refValidFilter(f string) bool {
	if len(f) < 1 || len(f) > 65535 || !utf8.ValidString(f) || strings.Contains(f, "\x00") {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

func refMatch(f, t string) bool {
	if !refValidFilter(f) || !refValidTopic(t) {
		return false
	}
	fl := strings.Split(f, "/")
	tl := strings.Split(t, "/")
	if strings.HasPrefix(tl[0], "$") && (fl[0] == "+" || fl[0] == "#") {
		return false
	}
	for i, l := range fl {
		if l == "#" {
			return true // matches the parent level (i == len(tl)) and deeper
		}
		if i >= len(tl) {
			return false
		}
		if l != "+" && l != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}

// bruteSubset decides Subset(a, b) by its definition, over every topic of up
// to maxLevels+1 levels built from the literal levels a and b name, plus ""
// and one level neither names. ok is false if the filters are too deep for
// that to be cheap. Other levels behave like the unnamed one, and a '$'-level
// not named by a is never matched by a, so the universe holds a
// counterexample whenever one exists.
func bruteSubset(a, b string, maxLevels int) (subset, ok bool) {
	la, lb := strings.Split(a, "/"), strings.Split(b, "/")
	if len(la) > maxLevels || len(lb) > maxLevels {
		return false, false
	}
	alphabet := []string{""}
	for _, l := range slices.Concat(la, lb) {
		if l != "+" && l != "#" && !slices.Contains(alphabet, l) {
			alphabet = append(alphabet, l)
		}
	}
	unnamed := "z"
	for slices.Contains(alphabet, unnamed) {
		unnamed += "z"
	}
	alphabet = append(alphabet, unnamed)

	var walk func(prefix string, depth int) bool
	walk = func(prefix string, depth int) bool {
		for _, l := range alphabet {
			t := l
			if depth > 0 {
				t = prefix + "/" + l
			}
			// Match, not refMatch: it is cross-checked against refMatch
			// elsewhere and does not allocate, which keeps fuzzing fast.
			if Match(a, t) && !Match(b, t) {
				return false
			}
			if depth+1 < maxLevels+1 && !walk(t, depth+1) {
				return false
			}
		}
		return true
	}
	return walk("", 0), true
}
