package coap

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
)

// A token of a few KB posted over DTLS is taken, in one message or
// block-wise; one over the limit is answered 4.13. None ends the session.
func TestCoAPLargeTokenPost(t *testing.T) {
	ts := startTestServer(t, 1, Options{})
	tok := ts.token(t, "dev-0", func(c map[string]any) { c["pad"] = strings.Repeat("p", 2500) })
	if len(tok) < 1500 || len(tok) > 4000 {
		t.Fatalf("a %d-byte token; the test wants 1500 to 4000", len(tok))
	}
	post := func(blockwise bool, body string) (codes.Code, error) {
		t.Helper()
		var opts []udp.Option
		if !blockwise {
			opts = append(opts, options.WithBlockwise(false, 0, time.Second))
		}
		cc, err := ts.tryDialWith(pskIdentity(0), pskKey(0), opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cc.Post(ctx, PathAuthzInfo, message.TextPlain, strings.NewReader(body))
		if err != nil {
			return codes.Empty, err
		}
		return resp.Code(), nil
	}
	if code, err := post(false, tok); err != nil || code != codes.Created {
		t.Errorf("a %d-byte token in one message: %v %v, want 2.01", len(tok), code, err)
	}
	if code, err := post(true, tok); err != nil || code != codes.Created {
		t.Errorf("a %d-byte token block-wise: %v %v, want 2.01", len(tok), code, err)
	}
	if code, err := post(true, strings.Repeat("t", 9000)); err != nil || code != codes.RequestEntityTooLarge {
		t.Errorf("9,000 bytes block-wise: %v %v, want 4.13", code, err)
	}
}
