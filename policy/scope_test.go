package policy

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		scope string
		want  []Rule
	}{
		{"", nil},
		{"openid offline_access", nil},
		{"publish:a/b", []Rule{{"a/b", Publish}}},
		{"subscribe:a/#", []Rule{{"a/#", Subscribe}}},
		{"openid publish:dev/d1/tele/# subscribe:dev/d1/cmd/+ offline_access", []Rule{
			{"dev/d1/tele/#", Publish},
			{"dev/d1/cmd/+", Subscribe},
		}},
		{"publish:a subscribe:b subscribe:a publish:a", []Rule{
			{"a", Publish | Subscribe},
			{"b", Subscribe},
		}},
		{"  publish:a   publish:b ", []Rule{{"a", Publish}, {"b", Publish}}},
		{"publish:a:b publish:$SYS/x", []Rule{{"a:b", Publish}, {"$SYS/x", Publish}}},
		{"publish:a\tb", []Rule{{"a\tb", Publish}}}, // only U+0020 separates
		{"Publish:a pub:a publishing:a", nil},       // prefixes are exact
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.scope)
		if err != nil {
			t.Errorf("ParseScope(%q) error: %v", tt.scope, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseScope(%q) = %v, want %v", tt.scope, got, tt.want)
		}
	}
}

func TestParseScopeErrors(t *testing.T) {
	tests := []struct {
		scope, want string
	}{
		{"openid publish:a/#/b", `scope entry "publish:a/#/b": filter "a/#/b": '#' must be the last level`},
		{"publish:", `scope entry "publish:": filter "": must not be empty`},
		{"subscribe:a+", `scope entry "subscribe:a+": filter "a+": '+' must occupy an entire level`},
		{"publish:ok subscribe:x#", `scope entry "subscribe:x#"`},
		{"publish:\xff", `not valid UTF-8`},
	}
	for _, tt := range tests {
		rules, err := ParseScope(tt.scope)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseScope(%q) error = %v, want error containing %q", tt.scope, err, tt.want)
		}
		if rules != nil {
			t.Errorf("ParseScope(%q) returned rules with an error: %v", tt.scope, rules)
		}
	}
}

func TestFormatScope(t *testing.T) {
	rules := []Rule{
		{"a/#", Publish | Subscribe},
		{"b", Subscribe},
		{"c", Publish},
		{"none", 0},
		{"a/#/b", Publish},     // invalid: omitted
		{"has space", Publish}, // not representable: omitted
	}
	want := "publish:a/# subscribe:a/# subscribe:b publish:c"
	if got := FormatScope(rules); got != want {
		t.Errorf("FormatScope = %q, want %q", got, want)
	}
	back, err := ParseScope(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rules[:3]) {
		t.Errorf("round trip = %v, want %v", back, rules[:3])
	}
	if got := FormatScope(nil); got != "" {
		t.Errorf("FormatScope(nil) = %q", got)
	}
}
