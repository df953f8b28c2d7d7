package policy

import "testing"

// benchRules is a realistic expanded device-class template.
func benchRules() []Rule {
	return []Rule{
		{"dev/sensor-0042/state", Publish},
		{"dev/sensor-0042/events/+", Publish},
		{"dev/sensor-0042/cmd/+", Subscribe},
		{"dev/sensor-0042/config", Subscribe},
		{"owner/alice/devices/sensor-0042/alerts", Publish},
		{"fleet/broadcast/#", Subscribe},
		{"fleet/+/ota/status", Publish | Subscribe},
		{"dev/+/tele/#", Publish},
	}
}

var benchSink bool

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSink = Match("dev/+/tele/#", "dev/sensor-0042/tele/env/temperature")
	}
}

func BenchmarkSubset(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSink = Subset("dev/sensor-0042/cmd/+", "dev/+/cmd/#")
	}
}

func BenchmarkSetCanPublish(b *testing.B) {
	s, err := Compile(benchRules())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	// The matching rule is the last one: the worst case for a hit.
	for b.Loop() {
		benchSink = s.CanPublish("dev/sensor-0042/tele/env/temperature")
	}
}
