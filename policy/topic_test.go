package policy

import (
	"strings"
	"testing"
)

var long = strings.Repeat("x", MaxLen)

func TestValidTopic(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // substring; "" means valid
	}{
		{"a", ""},
		{"a/b/c", ""},
		{"/", ""},
		{"//", ""},
		{"a//b", ""},
		{"$SYS/broker/load", ""},
		{"dev/ünïcode/日本", ""},
		{"with space/and\ttab", ""},
		{long, ""},
		{"", "must not be empty"},
		{long + "x", "longer than the MQTT limit of 65535"},
		{"a/+", "'+'"},
		{"a/#", "'#'"},
		{"a+b", "'+'"},
		{"a\x00b", "U+0000"},
		{"a/\xff", "not valid UTF-8"},
		{"\xed\xa0\x80", "not valid UTF-8"}, // surrogate half
		{"\xc0\x80", "not valid UTF-8"},     // overlong NUL
	}
	for _, tt := range tests {
		err := ValidTopic(tt.in)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidTopic(%s) = %v, want nil", quote(tt.in), err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidTopic(%s) = %v, want error containing %q", quote(tt.in), err, tt.wantErr)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "topic ") {
			t.Errorf("ValidTopic(%s) = %v, want it to name the topic", quote(tt.in), err)
		}
	}
}

func TestValidFilter(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"a", ""},
		{"#", ""},
		{"+", ""},
		{"+/+", ""},
		{"/#", ""},
		{"a/#", ""},
		{"a/+/c", ""},
		{"+/#", ""},
		{"/", ""},
		{"a//+", ""},
		{"$SYS/#", ""},
		{"$share/g/a", ""},
		{long, ""},
		{"", "must not be empty"},
		{long + "x", "longer than the MQTT limit"},
		{"a/#/b", "'#' must be the last level"},
		{"#/", "'#' must be the last level"},
		{"a#", "'#' must occupy an entire level"},
		{"a/#b", "'#' must occupy an entire level"},
		{"##", "'#' must occupy an entire level"},
		{"a+", "'+' must occupy an entire level"},
		{"a/+b/c", "'+' must occupy an entire level"},
		{"++", "'+' must occupy an entire level"},
		{"a/\x00", "U+0000"},
		{"a/\xfe", "not valid UTF-8"},
	}
	for _, tt := range tests {
		err := ValidFilter(tt.in)
		if got := err == nil; got != refValidFilter(tt.in) {
			t.Errorf("ValidFilter(%s) valid=%v, reference says %v", quote(tt.in), got, !got)
		}
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidFilter(%s) = %v, want nil", quote(tt.in), err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidFilter(%s) = %v, want error containing %q", quote(tt.in), err, tt.wantErr)
		}
	}
	// The message format is part of the contract: the thing, then what is wrong.
	if got, want := ValidFilter("a/#/b").Error(), `filter "a/#/b": '#' must be the last level`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	// A huge filter must not produce a huge message.
	if msg := ValidFilter(long + "x").Error(); len(msg) > 200 {
		t.Errorf("error for long filter is %d bytes", len(msg))
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		f, t string
		want bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a", false},
		{"a", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true}, // '+' matches an empty level
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+/+", "/", true},
		{"+", "/", false},
		{"/+", "/x", true},
		{"a/#", "a", true}, // '#' includes the parent level
		{"a/#", "a/", true},
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"a/#", "b/a", false},
		{"#", "a", true},
		{"#", "/", true},
		{"#", "a/b/c", true},
		{"+/#", "a", true},
		{"+/+/#", "a", false},
		{"a/+/c/#", "a/b/c", true},
		{"a//b", "a//b", true},
		{"a//b", "a/b", false},
		// $-topics: first-level wildcards do not match them.
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"+", "$", false},
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+", "$SYS/x", true},
		{"a/#", "a/$x", true}, // only the first level is special
		{"+/$x", "a/$x", true},
		{"#", "x$", true},
		// Invalid inputs match nothing.
		{"a/#/b", "a/x/b", false},
		{"a#", "a#", false},
		{"a", "", false},
		{"", "a", false},
		{"a/+", "a/+", false},
		{"#", "a/\x00", false},
		{"#", "\xff", false},
		{"+", "ü", true},
	}
	for _, tt := range tests {
		if got := Match(tt.f, tt.t); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.f, tt.t, got, tt.want)
		}
		if got := refMatch(tt.f, tt.t); got != tt.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v (test table or reference wrong)", tt.f, tt.t, got, tt.want)
		}
	}
}

func TestSubset(t *testing.T) {
	tests := []struct {
		sub, super string
		want       bool
	}{
		// Examples from the specification of Subset.
		{"a/+/c", "a/#", true},
		{"a/#", "a/+", false},
		{"a/+", "a/#", true},
		{"a/#", "a/+/#", false}, // a/# matches "a"
		{"#", "#", true},
		{"$SYS/x", "#", false},
		{"+/x", "#", true},
		{"$SYS/#", "$SYS/#", true},
		{"$SYS/#", "+/#", false},
		// More.
		{"a", "a", true},
		{"a", "a/#", true},
		{"a", "+", true},
		{"a", "#", true},
		{"a/b", "a/+", true},
		{"a/+", "a/b", false},
		{"a/+", "a/+", true},
		{"a/+", "+/+", true},
		{"+/+", "a/+", false},
		{"a/b/c", "a/+", false},
		{"a/+/+", "a/#", true},
		{"a/#", "a/#", true},
		{"a/#", "#", true},
		{"#", "a/#", false},
		{"#", "+/#", true},
		{"+/#", "#", true},
		{"+", "#", true},
		{"#", "+", false},
		{"a/+/#", "a/#", true},
		{"a/+/#", "a/+/#", true},
		{"a/+/#", "a/+/+/#", false},
		{"/", "+/+", true},
		{"/", "#", true},
		{"$SYS", "#", false},
		{"$SYS", "+", false},
		{"$SYS", "$SYS/#", true},
		{"$SYS/a", "$SYS/+", true},
		{"+", "$SYS", false},
		{"a/$SYS", "a/+", true},
		{"a/$SYS", "+/+", true},
		// '#' matches its parent topic, except where that would be the
		// empty string: then "#" is "+/#" and "/#" is "/+/#".
		{"#", "+/#", true},
		{"/#", "/+/#", true},
		{"/#", "+/+/#", true},
		{"/#", "+/#", true},
		{"#", "+/+/#", false},
		{"#", "+/+", false},
		{"/#", "/+", false},
		{"//#", "//+/#", false}, // "/" is a topic
		{"+/#", "+/+/#", false},
		{"a/#", "a/+/#", false},
		// Invalid filters are never subsets, nor supersets.
		{"a/#/b", "#", false},
		{"a", "a/#/b", false},
		{"", "#", false},
		{"a/#/b", "a/#/b", false},
	}
	for _, tt := range tests {
		if got := Subset(tt.sub, tt.super); got != tt.want {
			t.Errorf("Subset(%q, %q) = %v, want %v", tt.sub, tt.super, got, tt.want)
		}
	}
}

// combos returns every "/"-join of 1..maxLevels levels drawn from alphabet.
func combos(alphabet []string, maxLevels int) []string {
	var out []string
	prev := []string{""}
	for n := 1; n <= maxLevels; n++ {
		var next []string
		for _, p := range prev {
			for _, l := range alphabet {
				s := l
				if n > 1 {
					s = p + "/" + l
				}
				next = append(next, s)
			}
		}
		out = append(out, next...)
		prev = next
	}
	return out
}

// TestSubsetExhaustive checks Subset against its definition on a universe
// big enough to contain a counterexample for every wrong answer on filters
// of up to 3 levels: topics of up to 4 levels, with "$s" standing for any
// $-level and "z" for any level no filter names.
func TestSubsetExhaustive(t *testing.T) {
	var filters, topics []string
	for _, f := range combos([]string{"a", "b", "", "$s", "+", "#"}, 3) {
		valid := ValidFilter(f) == nil
		if valid != refValidFilter(f) {
			t.Fatalf("ValidFilter(%q) valid=%v disagrees with reference", f, valid)
		}
		if valid {
			filters = append(filters, f)
		}
	}
	for _, s := range combos([]string{"a", "b", "", "$s", "z"}, 4) {
		valid := ValidTopic(s) == nil
		if valid != refValidTopic(s) {
			t.Fatalf("ValidTopic(%q) valid=%v disagrees with reference", s, valid)
		}
		if valid {
			topics = append(topics, s)
		}
	}
	t.Logf("%d filters, %d topics", len(filters), len(topics))

	// matches[i] is the set of topics filter i matches, as a bitset.
	words := (len(topics) + 63) / 64
	matches := make([][]uint64, len(filters))
	for i, f := range filters {
		matches[i] = make([]uint64, words)
		for j, top := range topics {
			got := Match(f, top)
			if want := refMatch(f, top); got != want {
				t.Errorf("Match(%q, %q) = %v, reference says %v", f, top, got, want)
			}
			if got {
				matches[i][j/64] |= 1 << (j % 64)
			}
		}
	}

	var fails, trues int
	for i, x := range filters {
		for j, y := range filters {
			want := true
			for w := range words {
				if matches[i][w]&^matches[j][w] != 0 {
					want = false
					break
				}
			}
			if want {
				trues++
			}
			if got := Subset(x, y); got != want {
				fails++
				if fails <= 20 {
					t.Errorf("Subset(%q, %q) = %v, brute force says %v", x, y, got, want)
				}
			}
		}
	}
	if fails > 20 {
		t.Errorf("... and %d more Subset failures", fails-20)
	}
	t.Logf("%d pairs, %d subsets", len(filters)*len(filters), trues)
}

func TestZeroAllocs(t *testing.T) {
	set, err := Compile(benchRules())
	if err != nil {
		t.Fatal(err)
	}
	scope, err := Compile([]Rule{{"dev/+/tele/#", Publish}, {"dev/sensor-0042/cmd/#", Subscribe}})
	if err != nil {
		t.Fatal(err)
	}
	perms := NewPerms(set, scope)
	var nilSet *Set
	sink := false
	topic, filter := "dev/sensor-0042/tele/temp/°C", "dev/sensor-0042/cmd/+"
	cases := []struct {
		name string
		fn   func()
	}{
		{"Match", func() { sink = Match("dev/+/tele/#", topic) }},
		{"Match/invalid", func() { sink = Match("a/#/b", topic) }},
		{"Subset", func() { sink = Subset(filter, "dev/+/cmd/#") }},
		{"Subset/invalid", func() { sink = Subset("a#", "#") }},
		{"Set.CanPublish", func() { sink = set.CanPublish(topic) }},
		{"Set.CanPublish/denied", func() { sink = set.CanPublish("other/topic") }},
		{"Set.CanSubscribe", func() { sink = set.CanSubscribe(filter) }},
		{"Set.CanSubscribe/denied", func() { sink = set.CanSubscribe("#") }},
		{"nilSet.CanPublish", func() { sink = nilSet.CanPublish(topic) }},
		{"Perms.CanPublish", func() { sink = perms.CanPublish(topic) }},
		{"Perms.CanSubscribe", func() { sink = perms.CanSubscribe(filter) }},
	}
	for _, c := range cases {
		if n := testing.AllocsPerRun(200, c.fn); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, n)
		}
	}
	_ = sink
}
