package policy

import (
	"strings"
	"testing"
)

func mustCompile(t testing.TB, rules ...Rule) *Set {
	t.Helper()
	s, err := Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		rules []Rule
		want  string
	}{
		{[]Rule{{"a", Publish}, {"a/#/b", Publish}}, `rule 1: filter "a/#/b": '#' must be the last level`},
		{[]Rule{{"", Subscribe}}, `rule 0: filter "": must not be empty`},
		{[]Rule{{"a+", Subscribe}}, `rule 0: filter "a+": '+' must occupy an entire level`},
		{[]Rule{{"a", 4}}, `rule 0: filter "a": unknown action bits 0x4`},
	}
	for _, tt := range tests {
		_, err := Compile(tt.rules)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Compile(%v) error = %v, want %q", tt.rules, err, tt.want)
		}
	}
}

func TestSet(t *testing.T) {
	in := []Rule{
		{"dev/d1/tele/#", Publish},
		{"dev/d1/cmd/+", Subscribe},
		{"fleet/#", Publish | Subscribe},
		{"noop", 0},
	}
	s := mustCompile(t, in...)

	// Compile and Rules copy, so neither side can change the other.
	in[0].Filter = "#"
	got := s.Rules()
	if got[0].Filter != "dev/d1/tele/#" {
		t.Fatalf("Set changed when the input slice was modified: %v", got)
	}
	got[1].Filter = "#"
	if s.Rules()[1].Filter != "dev/d1/cmd/+" {
		t.Fatalf("Set changed when the Rules() result was modified")
	}

	pub := []struct {
		topic string
		want  bool
	}{
		{"dev/d1/tele", true},
		{"dev/d1/tele/temp", true},
		{"dev/d1/cmd/reboot", false}, // subscribe only
		{"dev/d2/tele", false},
		{"fleet", true},
		{"fleet/x/y", true},
		{"noop", false},
		{"dev/d1/tele/+", false}, // not a topic name
		{"", false},
	}
	for _, tt := range pub {
		if got := s.CanPublish(tt.topic); got != tt.want {
			t.Errorf("CanPublish(%q) = %v, want %v", tt.topic, got, tt.want)
		}
	}
	sub := []struct {
		filter string
		want   bool
	}{
		{"dev/d1/cmd/reboot", true},
		{"dev/d1/cmd/+", true},
		{"dev/d1/cmd/#", false}, // would include "dev/d1/cmd"
		{"dev/d1/tele/x", false},
		{"fleet/+/status", true},
		{"fleet/#", true},
		{"#", false},
		{"+/d1/cmd/x", false},
		{"dev/d1/cmd/a#", false}, // invalid
	}
	for _, tt := range sub {
		if got := s.CanSubscribe(tt.filter); got != tt.want {
			t.Errorf("CanSubscribe(%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestEmptyAndNilSet(t *testing.T) {
	var nilSet *Set
	empty := mustCompile(t)
	for name, s := range map[string]*Set{"nil": nilSet, "empty": empty} {
		if s.CanPublish("a") || s.CanSubscribe("a") {
			t.Errorf("%s set allows something", name)
		}
	}
	if nilSet.Rules() != nil {
		t.Errorf("nil Set Rules() = %v", nilSet.Rules())
	}
}

func TestPerms(t *testing.T) {
	// The device class allows the device's own tree; the token narrows it.
	class := mustCompile(t,
		Rule{"dev/d1/#", Publish | Subscribe},
		Rule{"fleet/announce", Subscribe},
	)
	token := mustCompile(t,
		Rule{"dev/+/tele/#", Publish},
		Rule{"dev/+/cmd/+", Subscribe},
		Rule{"fleet/#", Subscribe},
	)
	p := NewPerms(class, token)

	pub := []struct {
		topic string
		want  bool
	}{
		{"dev/d1/tele/temp", true},  // both allow
		{"dev/d1/state", false},     // class only
		{"dev/d2/tele/temp", false}, // token only
		{"fleet/announce", false},   // subscribe only in both
		{"dev/d1/tele/+", false},    // invalid topic
	}
	for _, tt := range pub {
		if got := p.CanPublish(tt.topic); got != tt.want {
			t.Errorf("Perms.CanPublish(%q) = %v, want %v", tt.topic, got, tt.want)
		}
	}
	sub := []struct {
		filter string
		want   bool
	}{
		{"dev/d1/cmd/+", true},
		{"dev/d1/cmd/reboot", true},
		{"dev/d1/cmd/#", false}, // class allows, token does not
		{"dev/+/cmd/+", false},  // token allows, class does not
		{"fleet/announce", true},
		{"fleet/+", false},
		{"a#", false},
	}
	for _, tt := range sub {
		if got := p.CanSubscribe(tt.filter); got != tt.want {
			t.Errorf("Perms.CanSubscribe(%q) = %v, want %v", tt.filter, got, tt.want)
		}
	}

	// Fail closed.
	all := mustCompile(t, Rule{"#", Publish | Subscribe})
	deny := map[string]Perms{
		"zero":       {},
		"no sets":    NewPerms(),
		"nil set":    NewPerms(nil),
		"all + nil":  NewPerms(all, nil),
		"all + none": NewPerms(all, mustCompile(t)),
	}
	for name, p := range deny {
		if p.CanPublish("a") || p.CanSubscribe("a") {
			t.Errorf("%s: Perms allows something", name)
		}
	}
	if p := NewPerms(all); !p.CanPublish("a") || !p.CanSubscribe("a/#") {
		t.Errorf("single allow-all set denies")
	}

	// NewPerms copies its arguments.
	sets := []*Set{all}
	p = NewPerms(sets...)
	sets[0] = nil
	if !p.CanPublish("a") {
		t.Errorf("Perms changed when the caller's slice was modified")
	}
}

func TestErrorsNameTheRule(t *testing.T) {
	_, err := Compile([]Rule{{"ok", Publish}, {"ok/too", Publish}, {strings.Repeat("y", 70000), Publish}})
	if err == nil || !strings.HasPrefix(err.Error(), "rule 2: filter \"yyyy") || !strings.Contains(err.Error(), "70000 bytes") {
		t.Errorf("error = %v", err)
	}
}

func TestPermsWithShares(t *testing.T) {
	own, _ := Compile([]Rule{{Filter: "app/phone/#", Actions: Publish | Subscribe}})
	scope, _ := Compile(nil)
	shared, _ := Compile([]Rule{{Filter: "devices/t1/telemetry/#", Actions: Subscribe}})
	held, _ := Compile([]Rule{{Filter: "devices/t2/telemetry/#", Actions: Subscribe}})
	p := NewPerms(own, scope).WithShares(shared, held)
	if !p.CanSubscribe("devices/t1/telemetry/temp") || !p.CanSubscribe("devices/t1/telemetry/#") {
		t.Error("a share's topic is not allowed")
	}
	if p.CanPublish("devices/t1/telemetry/temp") {
		t.Error("a sub share allows publishing")
	}
	if p.CanSubscribe("app/phone/x") {
		t.Error("the class allows what the token's empty scope does not")
	}
	if p.CanSubscribe("devices/t2/telemetry/temp") || !p.Holds("devices/t2/telemetry/temp") {
		t.Error("a held share's topic: want not allowed, held")
	}
	heldPub, _ := Compile([]Rule{{Filter: "devices/t2/commands/#", Actions: Publish}})
	if q := NewPerms(own, scope).WithShares(shared, heldPub); !q.HeldPublish("devices/t2/commands/set") || q.CanPublish("devices/t2/commands/set") || q.HeldPublish("devices/t1/telemetry/x") {
		t.Error("a held publish share: want HeldPublish and not CanPublish on its topics only")
	}
	if p.Holds("devices/t3/telemetry/temp") || p.CanSubscribe("devices/t1/telemetry/+/#/x") {
		t.Error("holds or allows what no share names")
	}
	if !(NewPerms(own).WithShares(nil, nil)).CanPublish("app/phone/x") {
		t.Error("WithShares(nil, nil) changed the class's permission")
	}
}
