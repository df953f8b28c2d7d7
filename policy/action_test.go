package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{
		0:                   "none",
		Publish:             "pub",
		Subscribe:           "sub",
		Publish | Subscribe: "pub+sub",
		4:                   "Action(0x4)",
	} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", a, got, want)
		}
	}
}

func TestRuleJSON(t *testing.T) {
	tests := []struct {
		rule Rule
		json string
	}{
		{Rule{"a/#", Publish}, `{"filter":"a/#","actions":["pub"]}`},
		{Rule{"a/+", Subscribe}, `{"filter":"a/+","actions":["sub"]}`},
		{Rule{"a", Publish | Subscribe}, `{"filter":"a","actions":["pub","sub"]}`},
		{Rule{"a", 0}, `{"filter":"a","actions":[]}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.rule)
		if err != nil {
			t.Errorf("Marshal(%v): %v", tt.rule, err)
			continue
		}
		if string(b) != tt.json {
			t.Errorf("Marshal(%v) = %s, want %s", tt.rule, b, tt.json)
		}
		var back Rule
		if err := json.Unmarshal(b, &back); err != nil {
			t.Errorf("Unmarshal(%s): %v", b, err)
		}
		if back != tt.rule {
			t.Errorf("round trip of %v = %v", tt.rule, back)
		}
	}

	var rules []Rule
	in := `[{"filter":"x","actions":["sub","pub","sub"]},{"filter":"y","actions":null},{"filter":"z"}]`
	if err := json.Unmarshal([]byte(in), &rules); err != nil {
		t.Fatal(err)
	}
	if want := []Rule{{"x", Publish | Subscribe}, {"y", 0}, {"z", 0}}; !reflect.DeepEqual(rules, want) {
		t.Errorf("Unmarshal = %v, want %v", rules, want)
	}
}

func TestRuleJSONErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"filter":"a","actions":["pub","write"]}`: `unknown action "write"`,
		`{"filter":"a","actions":["PUB"]}`:         `unknown action "PUB"`,
		`{"filter":"a","actions":"pub"}`:           `want an array`,
		`{"filter":"a","actions":[1]}`:             `want an array`,
	} {
		var r Rule
		if err := json.Unmarshal([]byte(in), &r); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Unmarshal(%s) error = %v, want error containing %q", in, err, want)
		}
	}
	if _, err := json.Marshal(Rule{"a", 4}); err == nil || !strings.Contains(err.Error(), "unknown action bits 0x4") {
		t.Errorf("Marshal of undefined bits: error = %v", err)
	}
}
