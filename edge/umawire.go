package edge

import (
	"context"
	"errors"

	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/uma"
	"github.com/edgeid/edgeid/policy"
)

// buildUMA sets up the UMA resource server side (edge/uma): refusals of an
// owner's shared resource answered with a permission ticket from the
// authority (MQTT 5 SUBACK, HTTPS 401). Not enrolled, there is no ticket to
// give: refusals keep their ordinary answers.
func (g *Gateway) buildUMA(b *broker.Broker) {
	g.uma = &uma.Server{Store: g.Store, ASURI: g.authorityURL()}
	if g.Syncer != nil {
		g.uma.Ticket = g.Syncer.Ticket
	}
	b.UMA = g.subscribeTicket
}

// subscribeTicket is the broker's UMA: one ticket for the refused filters
// that are shared resources.
func (g *Gateway) subscribeTicket(ctx context.Context, subject string, filters []string) (broker.Ticket, bool) {
	if !g.uma.Enabled() {
		return broker.Ticket{}, false // not enrolled: no ticket to give, nothing to say
	}
	reqs, err := g.uma.Requests(policy.Subscribe, subject, filters...)
	if err != nil {
		g.log.Error("subscribe refusal: finding shared resources failed", "err", err)
		return broker.Ticket{}, false
	}
	if len(reqs) == 0 {
		return broker.Ticket{}, false
	}
	ch, err := g.uma.Ask(ctx, reqs)
	if err != nil && !errors.Is(err, uma.ErrUnavailable) {
		return broker.Ticket{}, false
	}
	return broker.Ticket{Ticket: ch.Ticket, ASURI: ch.ASURI, Err: err}, true
}
