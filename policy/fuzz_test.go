package policy

import (
	"reflect"
	"testing"
)

// maxFuzzLen bounds fuzz inputs. Topic semantics live in short strings (the
// 65535-byte limit is covered by unit tests), while long inputs reach new
// loop-count coverage and then keep the fuzzer busy minimizing them, which
// its O(n²) pass makes slow.
const maxFuzzLen = 256

func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"a/b", "a/b"},
		{"a/+", "a/"},
		{"a/#", "a"},
		{"#", "$SYS/x"},
		{"+/#", "/"},
		{"$SYS/#", "$SYS"},
		{"a/#/b", "a/x/b"},
		{"a+", "a+"},
		{"+/+/+", "a//b"},
		{"dev/+/tele/#", "dev/d1/tele/temp/°C"},
		{"\xff", "\xff"},
		{"a\x00", "a\x00"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if len(filter) > maxFuzzLen || len(topic) > maxFuzzLen {
			return
		}
		got := Match(filter, topic)
		if want := refMatch(filter, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", filter, topic, got, want)
		}
		if v := ValidTopic(topic) == nil; v != refValidTopic(topic) {
			t.Fatalf("ValidTopic(%q) valid=%v disagrees with reference", topic, v)
		}
		if v := ValidFilter(filter) == nil; v != refValidFilter(filter) {
			t.Fatalf("ValidFilter(%q) valid=%v disagrees with reference", filter, v)
		}
		if ValidTopic(topic) == nil && !Match(topic, topic) {
			t.Fatalf("valid topic %q does not match itself", topic)
		}
	})
}

func FuzzSubset(f *testing.F) {
	for _, s := range [][3]string{
		{"a/+/c", "a/#", "a/b/c"},
		{"a/#", "a/+", "a"},
		{"a/#", "a/+/#", "a"},
		{"$SYS/#", "+/#", "$SYS/x"},
		{"$SYS/x", "#", "$SYS/x"},
		{"+/x", "#", "y/x"},
		{"#", "#", "/"},
		{"+/+", "+/#", "/"},
		{"a", "a/#/b", "a"},
		{"dev/d1/cmd/+", "dev/+/cmd/+", "dev/d1/cmd/reboot"},
		{"#", "+/#", "a"},
		{"/#", "/+/#", "/"},
		{"//#", "//+/#", "/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, topic string) {
		if len(a) > maxFuzzLen || len(b) > maxFuzzLen || len(topic) > maxFuzzLen {
			return
		}
		ab := Subset(a, b)
		if ValidFilter(a) == nil && !Subset(a, a) {
			t.Fatalf("Subset(%q, %q) = false for a valid filter", a, a)
		}
		if ValidFilter(a) != nil || ValidFilter(b) != nil {
			if ab {
				t.Fatalf("Subset(%q, %q) = true with an invalid filter", a, b)
			}
			return
		}
		if ab && Match(a, topic) && !Match(b, topic) {
			t.Fatalf("Subset(%q, %q) but %q matches only the first", a, b, topic)
		}
		// Small filters: compare with the definition, by brute force.
		if want, ok := bruteSubset(a, b, 3); ok && ab != want {
			t.Fatalf("Subset(%q, %q) = %v, brute force says %v", a, b, ab, want)
		}
		// A topic name, used as a filter, matches exactly itself.
		if ValidTopic(topic) == nil && Subset(topic, b) != Match(b, topic) {
			t.Fatalf("Subset(%q, %q) = %v but Match = %v", topic, b, Subset(topic, b), Match(b, topic))
		}
	})
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"",
		"openid offline_access",
		"publish:a/b subscribe:a/#",
		"publish:a subscribe:b subscribe:a publish:a",
		"publish:a/#/b",
		"subscribe:+/+ publish:$SYS/x",
		"  publish:x\ty  ",
		"publish: subscribe:",
		"publish:publish:a",
		"subscribe:\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, scope string) {
		if len(scope) > 4*maxFuzzLen {
			return
		}
		rules, err := ParseScope(scope)
		if err != nil {
			return
		}
		for _, r := range rules {
			if ValidFilter(r.Filter) != nil || r.Actions == 0 || r.Actions&^allActions != 0 {
				t.Fatalf("ParseScope(%q) produced bad rule %v", scope, r)
			}
		}
		s := FormatScope(rules)
		back, err := ParseScope(s)
		if err != nil {
			t.Fatalf("ParseScope(FormatScope(ParseScope(%q))) = %v", scope, err)
		}
		if !reflect.DeepEqual(back, rules) {
			t.Fatalf("round trip of %q via %q: %v, want %v", scope, s, back, rules)
		}
	})
}
