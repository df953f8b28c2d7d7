package coap

import (
	"bytes"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

func TestBlockOf(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 250) // 2500 bytes
	var joined []byte
	for num := int64(0); ; num++ {
		part, opts, ok := blockOf(body, blockwise.SZX1024, num)
		if !ok {
			if num != 3 {
				t.Fatalf("block %d past the end; want 3 blocks", num)
			}
			break
		}
		joined = append(joined, part...)
		var b2 uint32
		var size2, tag []byte
		for _, o := range opts {
			switch o.ID {
			case message.Block2:
				v, _, _ := message.DecodeUint32(o.Value)
				b2 = v
			case message.Size2:
				size2 = o.Value
			case message.ETag:
				tag = o.Value
			}
		}
		szx, n, more, err := blockwise.DecodeBlockOption(b2)
		if err != nil || szx != blockwise.SZX1024 || n != num || more != (num < 2) {
			t.Fatalf("block %d: Block2 szx %v num %d more %v err %v", num, szx, n, more, err)
		}
		if (num == 0) != (size2 != nil) {
			t.Errorf("block %d: Size2 %v (only the first block carries it)", num, size2)
		}
		if !bytes.Equal(tag, etag(body)) {
			t.Errorf("block %d: ETag %x, want %x", num, tag, etag(body))
		}
	}
	if !bytes.Equal(joined, body) {
		t.Fatalf("blocks join to %d bytes, want the %d-byte body", len(joined), len(body))
	}
	// A body that fits one block goes whole, without block options.
	if part, opts, ok := blockOf([]byte("small"), blockwise.SZX1024, 0); !ok || string(part) != "small" || opts != nil {
		t.Fatalf("small body: %q %v %v", part, opts, ok)
	}
	if _, _, ok := blockOf([]byte("small"), blockwise.SZX1024, 1); ok {
		t.Fatal("block 1 of a one-block body was served")
	}
	// A different body has a different ETag.
	if bytes.Equal(etag(body), etag(append([]byte("x"), body...))) {
		t.Fatal("ETag does not change with the body")
	}
}
