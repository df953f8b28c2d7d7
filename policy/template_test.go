package policy

import (
	"reflect"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	tmpl := []Rule{
		{"dev/{device}/tele/#", Publish},
		{"dev/{device}/cmd/+", Subscribe},
		{"owner/{owner}/devices/{device}", Publish},
		{"x/{device}-{client}", Publish | Subscribe},
		{"fleet/broadcast", Subscribe},
	}
	tests := []struct {
		name string
		v    Vars
		want []Rule
	}{
		{"all values", Vars{Device: "d1", Owner: "alice", Client: "c9"}, []Rule{
			{"dev/d1/tele/#", Publish},
			{"dev/d1/cmd/+", Subscribe},
			{"owner/alice/devices/d1", Publish},
			{"x/d1-c9", Publish | Subscribe},
			{"fleet/broadcast", Subscribe},
		}},
		{"no owner drops owner rules only", Vars{Device: "d1", Client: "c9"}, []Rule{
			{"dev/d1/tele/#", Publish},
			{"dev/d1/cmd/+", Subscribe},
			{"x/d1-c9", Publish | Subscribe},
			{"fleet/broadcast", Subscribe},
		}},
		{"device #", Vars{Device: "#", Owner: "alice", Client: "c9"}, []Rule{
			{"fleet/broadcast", Subscribe},
		}},
		{"device +", Vars{Device: "+", Owner: "alice", Client: "c9"}, []Rule{
			{"fleet/broadcast", Subscribe},
		}},
		{"device with slash", Vars{Device: "a/b", Owner: "alice", Client: "c9"}, []Rule{
			{"fleet/broadcast", Subscribe},
		}},
		{"empty device", Vars{Device: "", Owner: "alice", Client: "c9"}, []Rule{
			{"fleet/broadcast", Subscribe},
		}},
		{"device with NUL", Vars{Device: "d\x00", Owner: "alice", Client: "c9"}, []Rule{
			{"fleet/broadcast", Subscribe},
		}},
		{"device with invalid UTF-8", Vars{Device: "d\xff", Owner: "alice", Client: "c9"}, []Rule{
			{"fleet/broadcast", Subscribe},
		}},
		{"client with wildcard", Vars{Device: "d1", Owner: "alice", Client: "c#"}, []Rule{
			{"dev/d1/tele/#", Publish},
			{"dev/d1/cmd/+", Subscribe},
			{"owner/alice/devices/d1", Publish},
			{"fleet/broadcast", Subscribe},
		}},
		{"placeholder-looking value is literal", Vars{Device: "{owner}", Owner: "alice", Client: "c9"}, []Rule{
			{"dev/{owner}/tele/#", Publish},
			{"dev/{owner}/cmd/+", Subscribe},
			{"owner/alice/devices/{owner}", Publish},
			{"x/{owner}-c9", Publish | Subscribe},
			{"fleet/broadcast", Subscribe},
		}},
		{"unicode and spaces are fine", Vars{Device: "ü 1", Owner: "o", Client: "c"}, []Rule{
			{"dev/ü 1/tele/#", Publish},
			{"dev/ü 1/cmd/+", Subscribe},
			{"owner/o/devices/ü 1", Publish},
			{"x/ü 1-c", Publish | Subscribe},
			{"fleet/broadcast", Subscribe},
		}},
	}
	for _, tt := range tests {
		got, err := Expand(tmpl, tt.v)
		if err != nil {
			t.Errorf("%s: Expand error: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Expand =\n  %v\nwant\n  %v", tt.name, got, tt.want)
		}
	}
}

func TestExpandDollar(t *testing.T) {
	tmpl := []Rule{{"{device}/#", Subscribe}, {"$dev/{device}", Publish}, {"${device}/x", Publish}}
	got, err := Expand(tmpl, Vars{Device: "$SYS"})
	if err != nil {
		t.Fatal(err)
	}
	// "{device}/#" must not become "$SYS/#"; a template that starts with '$'
	// itself is an intended $-topic.
	want := []Rule{{"$dev/$SYS", Publish}, {"$$SYS/x", Publish}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Expand = %v, want %v", got, want)
	}
	got, err = Expand(tmpl, Vars{Device: "d$"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Filter != "d$/#" {
		t.Errorf("Expand = %v, want all 3 rules", got)
	}
}

func TestExpandTooLong(t *testing.T) {
	got, err := Expand([]Rule{{"a/{device}", Publish}, {"b", Publish}}, Vars{Device: strings.Repeat("x", MaxLen)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Rule{{"b", Publish}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Expand = %v, want %v", got, want)
	}
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		tmpl []Rule
		want string
	}{
		{[]Rule{{"ok", Publish}, {"dev/{foo}", Publish}}, `rule 1: filter "dev/{foo}": unknown placeholder "{foo}" (want {device}, {owner} or {client})`},
		{[]Rule{{"dev/{}", Publish}}, `rule 0: filter "dev/{}": unknown placeholder "{}"`},
		{[]Rule{{"dev/{Device}", Publish}}, `unknown placeholder "{Device}"`},
		{[]Rule{{"dev/{device", Publish}}, `rule 0: filter "dev/{device": unclosed '{' at byte 4`},
		{[]Rule{{"dev/{device}/{", Publish}}, `unclosed '{' at byte 13`},
		{[]Rule{{"a/{device}#", Publish}}, `rule 0: filter "a/{device}#": '#' must occupy an entire level`},
		{[]Rule{{"a/+{device}", Publish}}, `'+' must occupy an entire level`},
		{[]Rule{{"a/#/{device}", Publish}}, `'#' must be the last level`},
		{[]Rule{{"", Publish}}, `must not be empty`},
		{[]Rule{{"a/{device}", 8}}, `unknown action bits 0x8`},
	}
	for _, tt := range tests {
		err := CheckTemplate(tt.tmpl)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckTemplate(%v) = %v, want error containing %q", tt.tmpl, err, tt.want)
		}
		// Expand reports template errors even when the values are bad,
		// and with good values.
		for _, v := range []Vars{{}, {Device: "d", Owner: "o", Client: "c"}} {
			if _, err := Expand(tt.tmpl, v); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Expand(%v, %v) error = %v, want error containing %q", tt.tmpl, v, err, tt.want)
			}
		}
	}
	if err := CheckTemplate([]Rule{{"dev/{device}/x/{owner}{client}", Publish}, {"}", Subscribe}, {"+/{device}/#", Subscribe}}); err != nil {
		t.Errorf("CheckTemplate on a good template: %v", err)
	}
}
