package coap

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

func block1(num int64, more bool) message.Option {
	v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, more)
	return message.Option{ID: message.Block1, Value: encodeUint(v)}
}

// Uploads that start and never finish hold no more than the gateway's
// budget, however many sessions start them; what they held comes back when
// their sessions end.
func TestBlockBudget(t *testing.T) {
	const budget = 32 << 10
	ts := startTestServer(t, 4, Options{BlockBudget: budget, BlockTimeout: time.Hour})
	type upload struct {
		cc      *udpClient.Conn
		path    string
		tag     []byte
		refused bool
	}
	var ups []*upload
	for d := range 4 {
		cc := ts.dialPSK(t, d)
		for i := range maxTransfers {
			ups = append(ups, &upload{cc: cc, path: fmt.Sprintf("/ps/devices/dev-%d/telemetry/big", d), tag: []byte{byte(i)}})
		}
	}
	block := bytes.Repeat([]byte("b"), 1024)
	counts := map[codes.Code]int{}
	for num := range int64(8) {
		for _, u := range ups {
			if u.refused {
				continue
			}
			resp, err := do(t, u.cc, codes.PUT, u.path, block, block1(num, true), message.Option{ID: optRequestTag, Value: u.tag})
			if err != nil {
				t.Fatalf("block %d: %v", num, err)
			}
			counts[resp.Code()]++
			u.refused = resp.Code() != codes.Continue
			if held := ts.BlockBytes(); held > budget {
				t.Fatalf("uploads under way hold %d bytes, over the budget of %d", held, budget)
			}
		}
	}
	if counts[codes.ServiceUnavailable] == 0 || counts[codes.Continue]+counts[codes.ServiceUnavailable] != sum(counts) {
		t.Fatalf("answers %v: want 2.31 until the budget is spent, then 5.03", counts)
	}
	// Without the budget the 16 uploads would hold 8 blocks each, 128 KiB.
	if held := ts.BlockBytes(); held == 0 || held > budget {
		t.Fatalf("uploads under way hold %d bytes; want some, within %d", held, budget)
	}
	for _, u := range ups {
		_ = u.cc.Close()
	}
	waitFor(t, "the ended sessions' uploads to be released", func() bool { return ts.BlockBytes() == 0 })
}

func sum(m map[codes.Code]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// An upload that stalls is dropped after BlockTimeout even though its
// session is live and sends nothing more.
func TestBlockTimeout(t *testing.T) {
	ts := startTestServer(t, 1, Options{BlockTimeout: 50 * time.Millisecond})
	cc := ts.dialPSK(t, 0)
	const path = "/ps/devices/dev-0/telemetry/big"
	block := bytes.Repeat([]byte("b"), 1024)
	if resp, err := do(t, cc, codes.PUT, path, block, block1(0, true)); err != nil || resp.Code() != codes.Continue {
		t.Fatalf("block 0: %v %v", resp, err)
	}
	waitFor(t, "the stalled upload to be dropped", func() bool { return ts.BlockBytes() == 0 })
	if resp, err := do(t, cc, codes.PUT, path, block, block1(1, true)); err != nil || resp.Code() != codes.RequestEntityIncomplete {
		t.Fatalf("block 1 after the timeout: %v %v, want 4.08", resp, err)
	}
	if n := ts.Sessions("dev-0"); n != 1 {
		t.Fatalf("%d sessions, want the live one", n)
	}
}
