package packets

import "testing"

// EdgeID: the table of test packets is built when first asked for, not by
// the package's init in every binary that imports it.
func TestTPacketDataBuiltOnDemand(t *testing.T) {
	if tpacketData != nil {
		t.Fatal("the test packet table was built before anyone asked for it")
	}
	if cases := TPacketData()[Connect]; len(cases) == 0 {
		t.Fatal("no CONNECT cases")
	}
}
