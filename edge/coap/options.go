package coap

import (
	"fmt"
	"math"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// RFC 7252 §5.4: an unrecognized critical option (odd number), a critical
// option of a length outside its definition (§5.4.3) and a repeated
// non-repeatable critical one (§5.4.5) must fail the request: 4.02 for a
// confirmable one, and a non-confirmable one is rejected (§4.3: ignored,
// nothing published). Elective ones of bad length are ignored.
//
// go-coap answers 4.02 only for unknown critical options in confirmable
// requests, and while decoding it silently drops any option whose length is
// outside its table's range: a 4-byte Block1 made a first block a whole
// message, a 300-byte Uri-Path segment vanished and put the message on
// another topic. So the package widens the lengths of go-coap's option
// table (one table for the process; in the gateway only this package uses
// go-coap) so that such options reach the handler, and checks them against
// the ranges kept in optionDefs before anything reads a request.
var optionDefs = widenOptionDefs()

func widenOptionDefs() map[message.OptionID]message.OptionDef {
	defs := make(map[message.OptionID]message.OptionDef, len(message.CoapOptionDefs))
	for id, d := range message.CoapOptionDefs {
		defs[id] = d
		d.MinLen, d.MaxLen = 0, math.MaxUint32
		message.CoapOptionDefs[id] = d
	}
	return defs
}

// repeatable are the options RFC 7252 §5.10 lets a message carry more than once.
func repeatable(id message.OptionID) bool {
	switch id {
	case message.IfMatch, message.ETag, message.LocationPath, message.URIPath, message.URIQuery, message.LocationQuery:
		return true
	}
	return false
}

// badOption is why r must be refused for its options, or ""; elective
// options of bad length are removed from r (ignored). It allocates nothing
// for a well-formed request.
func badOption(r *pool.Message) string {
	var drop message.OptionID
	var prev message.OptionID
	opts := r.Options()
	for i, o := range opts {
		critical := o.ID%2 == 1
		def, known := optionDefs[o.ID]
		switch {
		case !known && critical:
			return fmt.Sprintf("unknown critical option %d", o.ID)
		case known && (uint32(len(o.Value)) < def.MinLen || uint32(len(o.Value)) > def.MaxLen):
			if critical {
				return fmt.Sprintf("option %d has an invalid length (%d bytes)", o.ID, len(o.Value))
			}
			drop = o.ID
		case critical && i > 0 && o.ID == prev && !repeatable(o.ID):
			return fmt.Sprintf("option %d must not be repeated", o.ID)
		}
		prev = o.ID
	}
	if drop != 0 {
		// Rare: at most one elective option of bad length goes per pass.
		r.Remove(drop)
		return badOption(r)
	}
	return ""
}
