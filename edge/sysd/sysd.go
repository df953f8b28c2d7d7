// Package sysd is the gateway's side of systemd: readiness, status and
// watchdog notifications (sd_notify), and a log/slog handler that writes to
// journald with structured fields (DEVICE_ID, REMOTE, REASON, GATEWAY) so a
// technician can run `journalctl -u edgeid DEVICE_ID=speaker-42`.
package sysd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"
)

// notify sends one sd_notify state; without NOTIFY_SOCKET it does nothing.
func notify(state string) {
	_, _ = daemon.SdNotify(false, state)
}

// Ready tells systemd the gateway is serving (listeners up, store open).
func Ready(status string) { notify(daemon.SdNotifyReady + "\nSTATUS=" + status) }

// Status sets the one-line status `systemctl status edgeid` shows.
func Status(status string) { notify("STATUS=" + status) }

// Stopping tells systemd the gateway is shutting down.
func Stopping() { notify(daemon.SdNotifyStopping) }

// Reloading tells systemd a configuration reload has begun; call Ready after.
func Reloading() { notify(daemon.SdNotifyReloading) }

// Watchdog runs until ctx ends, pinging systemd's watchdog at half its
// interval whenever healthy answers nil within that time. A hung main loop
// stops the pings, and systemd restarts the service. Without WatchdogSec it
// returns at once.
func Watchdog(ctx context.Context, log *slog.Logger, healthy func(context.Context) error) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(ctx, interval/2)
			err := healthy(hctx)
			cancel()
			if err != nil {
				log.Error("health check failed; not pinging the watchdog", "err", err)
				continue
			}
			notify(daemon.SdNotifyWatchdog)
		}
	}
}

// UseJournal reports whether stderr is connected to journald (systemd sets
// JOURNAL_STREAM), so logs should go to the journal with fields.
func UseJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return ok && err == nil && journal.Enabled()
}

// fieldNames maps our slog keys to the journal fields technicians query.
var fieldNames = map[string]string{
	"device":  "DEVICE_ID",
	"client":  "CLIENT_ID",
	"remote":  "REMOTE",
	"reason":  "REASON",
	"gateway": "GATEWAY",
}

// FieldName is the journal field for an slog key (group-qualified keys are
// joined with _): upper case, [A-Z0-9_] only, never starting with _ or a digit.
func FieldName(key string) string {
	if f, ok := fieldNames[key]; ok {
		return f
	}
	var b strings.Builder
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	f := strings.TrimLeft(b.String(), "_")
	if f == "" || (f[0] >= '0' && f[0] <= '9') {
		f = "EDGEID_" + f
	}
	return f
}

// Priority maps a slog level to a syslog priority.
func Priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// JournalHandler is a slog.Handler writing to journald.
type JournalHandler struct {
	level  slog.Leveler
	attrs  []slog.Attr
	prefix string // group prefix for keys
	send   func(msg string, p journal.Priority, fields map[string]string) error
	mu     *sync.Mutex
}

// NewJournalHandler writes records at level and above to the journal.
func NewJournalHandler(level slog.Leveler) *JournalHandler {
	return &JournalHandler{level: level, send: journal.Send, mu: &sync.Mutex{}}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Fields turns a record and the handler's attributes into journal fields.
func (h *JournalHandler) Fields(r slog.Record) map[string]string {
	f := map[string]string{"SYSLOG_IDENTIFIER": "edgeid"}
	var addAttr func(prefix string, a slog.Attr)
	addAttr = func(prefix string, a slog.Attr) {
		a.Value = a.Value.Resolve()
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				addAttr(prefix+a.Key+"_", g)
			}
			return
		}
		if a.Key == "" {
			return
		}
		f[FieldName(prefix+a.Key)] = a.Value.String()
	}
	for _, a := range h.attrs {
		addAttr("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addAttr(h.prefix, a)
		return true
	})
	return f
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	fields := h.Fields(r)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.send(r.Message, Priority(r.Level), fields); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), prefixed(h.prefix, attrs)...)
	return &c
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.prefix = h.prefix + name + "_"
	return &c
}

func prefixed(prefix string, attrs []slog.Attr) []slog.Attr {
	if prefix == "" {
		return attrs
	}
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = slog.Attr{Key: prefix + a.Key, Value: a.Value}
	}
	return out
}
