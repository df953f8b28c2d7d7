// SPDX-License-Identifier: MIT

package packets

import "testing"

// EdgeID: the table canEncode reads says what validPacketProperties says,
// for every property and packet type.
func TestCanEncodeTable(t *testing.T) {
	var p Properties
	for k := 0; k < 256; k++ {
		for pkt := 0; pkt < 256; pkt++ {
			if got, want := p.canEncode(byte(pkt), byte(k)), validPacketProperties[byte(k)][byte(pkt)] == 1; got != want {
				t.Fatalf("property %d in packet type %d: %v, want %v", k, pkt, got, want)
			}
		}
	}
}
