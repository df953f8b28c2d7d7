package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/edgeid/edgeid/cloudsync"
)

// TicketTimeout bounds a permission ticket request: the gateway asks while
// a client waits for its answer (an HTTP request, an MQTT SUBACK on the
// client's read loop), so an authority that is slow counts as unreachable.
const TicketTimeout = 2 * time.Second

// maxTicket bounds the ticket the gateway passes on to a client.
const maxTicket = 2048

// Ticket asks the authority's UMA permission endpoint (UMA Federated
// Authorization §4) for a permission ticket naming reqs, as the resource
// server of this gateway's devices: POST cloudsync.PathPermission with the
// gateway's request assertion, a JSON array of permission requests, and the
// answer 201 {"ticket": "..."}. It gives up after TicketTimeout (or ctx's
// deadline, if sooner). The ticket is returned only if it can travel in an
// HTTP auth-param and an MQTT reason string as it is (printable ASCII, no
// quote or backslash).
func (s *Syncer) Ticket(ctx context.Context, reqs []cloudsync.PermissionRequest) (string, error) {
	if len(reqs) == 0 {
		return "", errors.New("permission ticket: no permission to ask for")
	}
	ctx, cancel := context.WithTimeout(ctx, TicketTimeout)
	defer cancel()
	body, err := json.Marshal(reqs)
	if err != nil {
		return "", fmt.Errorf("permission ticket: %w", err)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.E.Authority+cloudsync.PathPermission, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("permission ticket: %w", err)
	}
	a, err := cloudsync.SignAssertion(s.key, s.E.Gateway, s.E.Authority, time.Now())
	if err != nil {
		return "", fmt.Errorf("permission ticket: sign request assertion: %w", err)
	}
	r.Header.Set("Authorization", "EdgeID-GW "+a)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(r)
	if err != nil {
		return "", fmt.Errorf("permission ticket from %s: %w", s.E.Authority, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("permission ticket from %s: reading the answer: %w", s.E.Authority, err)
	}
	if resp.StatusCode != http.StatusCreated {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return "", &StatusError{Method: http.MethodPost, Path: cloudsync.PathPermission, Code: resp.StatusCode, Status: resp.Status, Body: msg}
	}
	var tr cloudsync.TicketResponse
	if err := json.Unmarshal(data, &tr); err != nil {
		return "", fmt.Errorf("permission ticket from %s: the answer is not {\"ticket\": ...}: %w", s.E.Authority, err)
	}
	if tr.Ticket == "" {
		return "", fmt.Errorf("permission ticket from %s: the answer has no ticket", s.E.Authority)
	}
	if len(tr.Ticket) > maxTicket {
		return "", fmt.Errorf("permission ticket from %s: %d bytes, more than %d", s.E.Authority, len(tr.Ticket), maxTicket)
	}
	for i := 0; i < len(tr.Ticket); i++ {
		if c := tr.Ticket[i]; c <= 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return "", fmt.Errorf("permission ticket from %s: it holds a character (0x%02x) that cannot travel in a header as it is", s.E.Authority, c)
		}
	}
	return tr.Ticket, nil
}
