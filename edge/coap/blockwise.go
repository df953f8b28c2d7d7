package coap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Block-wise transfer (RFC 7959) is done here rather than by go-coap: its
// Block1 reassembly keys on the token, and clients such as libcoap send every
// block with a new token (RFC 7959 §2.4 allows it), so go-coap would pass the
// last block on as if it were the whole payload. Here a Block1 transfer is
// keyed by the session, the path and the Request-Tag (RFC 9175), and must
// arrive in order; a Block2 follow-up is served from the representation the
// session was last sent for that path (a large notification), or else the
// retained message, with an ETag so the client notices a change.

// optRequestTag is RFC 9175's Request-Tag (not in go-coap's table).
const optRequestTag message.OptionID = 292

// maxBlockSZX is the largest block the gateway sends: 1024 bytes keeps a
// block within a 1152-byte CoAP datagram.
const maxBlockSZX = blockwise.SZX1024

// blockTimeout is go-coap's own block-wise timeout, which is off (see
// WithBlockwise in Start); Options.BlockTimeout bounds ours.
const blockTimeout = 2 * time.Minute

// Defaults of Options.BlockBudget and Options.BlockTimeout.
const (
	defaultBlockBudget  = 8 << 20
	defaultBlockTimeout = 2 * time.Minute
)

// maxReprs is how many large representations one session keeps for Block2
// follow-ups.
const maxReprs = 16

// maxTransfers is how many Block1 transfers one session may have under way.
const maxTransfers = 4

// transfer is a Block1 upload being reassembled. held is what its body
// counts against the gateway's budget (its capacity); timer drops it when
// it has not completed within Options.BlockTimeout.
type transfer struct {
	body  []byte
	held  int64
	timer *time.Timer
}

// block1 gathers a PUT/POST's payload. It returns the whole payload and
// true when the request completes it (with the Block1 option to echo in the
// final answer, 0 if none); otherwise it has answered (2.31 Continue, 4.08,
// 4.13, 5.03) and returns false.
//
// Every body under way counts against one budget for the gateway
// (Options.BlockBudget): sessions that start uploads and never finish them
// cannot hold more than that, and each upload is dropped if it has not
// completed within Options.BlockTimeout, whether or not its session sends
// anything again.
func (s *Server) block1(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *session, limit int) ([]byte, uint32, bool) {
	payload, err := r.ReadBody()
	if err != nil {
		reply(w, codes.BadRequest, "cannot read payload")
		return nil, 0, false
	}
	v, err := r.GetOptionUint32(message.Block1)
	if errors.Is(err, message.ErrOptionNotFound) {
		return payload, 0, true
	}
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil || szx > maxBlockSZX {
		reply(w, codes.BadOption, "bad Block1 option")
		return nil, 0, false
	}
	path, _ := r.Options().Path()
	tag, _ := r.Options().GetBytes(optRequestTag)
	key := path + "\x00" + string(tag)
	p.mu.Lock()
	if p.ended.Load() {
		// endWith has released the session's transfers, or is about to.
		p.mu.Unlock()
		reply(w, codes.Unauthorized, "no authenticated session")
		return nil, 0, false
	}
	if p.transfers == nil {
		p.transfers = map[string]*transfer{}
	}
	t := p.transfers[key]
	switch {
	case num == 0:
		if len(p.transfers) >= maxTransfers && t == nil {
			p.mu.Unlock()
			reply(w, codes.ServiceUnavailable, "too many block-wise transfers under way")
			return nil, 0, false
		}
		if t != nil {
			s.dropTransfer(p, key, t) // started again
		}
		t = &transfer{}
		p.transfers[key] = t
		t.timer = time.AfterFunc(s.o.BlockTimeout, func() {
			p.mu.Lock()
			if p.transfers[key] == t {
				s.dropTransfer(p, key, t)
			}
			p.mu.Unlock()
		})
	case t == nil || int64(len(t.body)) != num*szx.Size():
		if t != nil {
			s.dropTransfer(p, key, t)
		}
		p.mu.Unlock()
		reply(w, codes.RequestEntityIncomplete, "block out of order or transfer unknown: start again at block 0")
		return nil, 0, false
	}
	if limit > 0 && len(t.body)+len(payload) > limit {
		s.dropTransfer(p, key, t)
		p.mu.Unlock()
		tooLarge(w, limit)
		return nil, 0, false
	}
	if more && int64(len(payload)) != szx.Size() {
		s.dropTransfer(p, key, t)
		p.mu.Unlock()
		reply(w, codes.BadRequest, "a block before the last must be exactly the block size")
		return nil, 0, false
	}
	if need := len(t.body) + len(payload); need > cap(t.body) {
		// Grow by doubling (bounded by the limit), counting the new
		// capacity against the budget before it is allocated.
		grown := max(need, 2*cap(t.body))
		if limit > 0 {
			grown = min(grown, limit) // need <= limit, checked above
		}
		if s.blockBytes.Add(int64(grown)-t.held) > s.o.BlockBudget {
			s.blockBytes.Add(t.held - int64(grown))
			s.dropTransfer(p, key, t)
			p.mu.Unlock()
			s.log.Warn("coap block-wise upload refused", "device", p.device, "remote", p.remote, "reason", "gateway budget for uploads under way is spent", "budget", s.o.BlockBudget)
			_ = w.SetResponse(codes.ServiceUnavailable, message.TextPlain, bytes.NewReader([]byte("too many block-wise uploads under way at the gateway; try again later")),
				message.Option{ID: message.MaxAge, Value: encodeUint(5)})
			return nil, 0, false
		}
		body := make([]byte, len(t.body), grown)
		copy(body, t.body)
		t.body, t.held = body, int64(grown)
	}
	t.body = append(t.body, payload...)
	if more {
		p.mu.Unlock()
		echo, _ := blockwise.EncodeBlockOption(szx, num, true)
		_ = w.SetResponse(codes.Continue, message.TextPlain, nil, message.Option{ID: message.Block1, Value: encodeUint(echo)})
		return nil, 0, false
	}
	s.dropTransfer(p, key, t) // complete: the body is the caller's now
	p.mu.Unlock()
	echo, _ := blockwise.EncodeBlockOption(szx, num, false)
	return t.body, echo, true
}

// dropTransfer forgets p's transfer t under key and returns what it held
// to the budget, with p.mu held.
func (s *Server) dropTransfer(p *session, key string, t *transfer) {
	t.timer.Stop()
	if p.transfers[key] == t {
		delete(p.transfers, key)
	}
	s.blockBytes.Add(-t.held)
	t.held = 0
}

// dropTransfers forgets all of p's transfers (the session ended).
func (s *Server) dropTransfers(p *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, t := range p.transfers {
		s.dropTransfer(p, k, t)
	}
}

// BlockBytes is what the Block1 uploads under way hold, in bytes, for
// metrics: never more than Options.BlockBudget.
func (s *Server) BlockBytes() int64 { return s.blockBytes.Load() }

// etag names a representation, so a client reading it block by block can
// tell when it changed under it.
func etag(body []byte) []byte {
	h := sha256.Sum256(body)
	return h[:8]
}

// requestedBlock2 is the block a request asks for: its Block2 number and
// size (no larger than maxBlockSZX), or block 0 of maxBlockSZX.
func requestedBlock2(r *pool.Message) (blockwise.SZX, int64) {
	if v, err := r.GetOptionUint32(message.Block2); err == nil {
		if szx, num, _, err := blockwise.DecodeBlockOption(v); err == nil {
			return min(szx, maxBlockSZX), num
		}
	}
	return maxBlockSZX, 0
}

// blockOf cuts block num of size szx out of body: the slice and the options
// that go with it (Block2, ETag, and Size2 on the first block). ok is false
// when num is past the end.
func blockOf(body []byte, szx blockwise.SZX, num int64) (part []byte, opts message.Options, ok bool) {
	size := szx.Size()
	if num == 0 && int64(len(body)) <= size {
		return body, nil, true
	}
	start := num * size
	if start >= int64(len(body)) && !(num == 0 && len(body) == 0) {
		return nil, nil, false
	}
	end := min(start+size, int64(len(body)))
	b2, _ := blockwise.EncodeBlockOption(szx, num, end < int64(len(body)))
	opts = message.Options{{ID: message.Block2, Value: encodeUint(b2)}, {ID: message.ETag, Value: etag(body)}}
	if num == 0 {
		opts = append(opts, message.Option{ID: message.Size2, Value: encodeUint(uint32(len(body)))})
	}
	return body[start:end], opts, true
}

// rememberRepr keeps the last large representation p was sent for path, for
// its Block2 follow-ups; small ones need none and drop it.
func (p *session) rememberRepr(path string, body []byte, cf message.MediaType) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if int64(len(body)) <= maxBlockSZX.Size() {
		delete(p.reprs, path)
		return
	}
	if p.reprs == nil {
		p.reprs = map[string]repr{}
	}
	if _, ok := p.reprs[path]; !ok && len(p.reprs) >= maxReprs {
		for k := range p.reprs { // forget any one: its follow-ups get 4.04 or the retained message
			delete(p.reprs, k)
			break
		}
	}
	p.reprs[path] = repr{body: body, cf: cf}
}

// repr is a representation kept for Block2 follow-ups.
type repr struct {
	body []byte
	cf   message.MediaType
}

func (p *session) lastRepr(path string) (repr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.reprs[path]
	return r, ok
}
