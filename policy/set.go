package policy

import "fmt"

// Set is an immutable compiled list of rules. Filters are validated once at
// Compile time and split by action, so a check only validates its input and
// scans the relevant rules.
type Set struct {
	rules []Rule
	pub   []string // filters of rules granting Publish
	sub   []string // filters of rules granting Subscribe
}

// Compile validates every rule and returns a Set. The error names the rule
// index, the filter and what is wrong with it.
func Compile(rules []Rule) (*Set, error) {
	s := &Set{rules: make([]Rule, len(rules))}
	copy(s.rules, rules)
	for i, r := range rules {
		if err := ValidFilter(r.Filter); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		if err := r.Actions.validate(); err != nil {
			return nil, fmt.Errorf("rule %d: filter %s: %w", i, quote(r.Filter), err)
		}
		if r.Actions&Publish != 0 {
			s.pub = append(s.pub, r.Filter)
		}
		if r.Actions&Subscribe != 0 {
			s.sub = append(s.sub, r.Filter)
		}
	}
	return s, nil
}

// Rules returns a copy of the rules the Set was compiled from, so callers
// cannot mutate a Set shared between sessions.
func (s *Set) Rules() []Rule {
	if s == nil {
		return nil
	}
	out := make([]Rule, len(s.rules))
	copy(out, s.rules)
	return out
}

// CanPublish reports whether some rule granting Publish matches topic. An
// invalid topic name, or a nil Set, allows nothing.
func (s *Set) CanPublish(topic string) bool {
	return checkTopic(topic) == valid && s.canPublish(topic)
}

// CanSubscribe reports whether filter is valid and covered (see Subset) by a
// single rule granting Subscribe. A nil Set allows nothing.
func (s *Set) CanSubscribe(filter string) bool {
	return checkFilter(filter) == valid && s.canSubscribe(filter)
}

// canPublish is CanPublish for a topic already known to be valid.
func (s *Set) canPublish(topic string) bool {
	if s == nil {
		return false
	}
	for _, f := range s.pub {
		if match(f, topic) {
			return true
		}
	}
	return false
}

// canSubscribe is CanSubscribe for a filter already known to be valid.
func (s *Set) canSubscribe(filter string) bool {
	if s == nil {
		return false
	}
	for _, f := range s.sub {
		if subset(filter, f) {
			return true
		}
	}
	return false
}

// Perms is the effective permission of a session: an operation is allowed
// only if every set allows it (e.g. the device-class template and the
// token's scope), so no single source can grant more than the others permit;
// or if the owners' shares the session holds allow it (WithShares). The
// zero Perms, with no sets, allows nothing.
type Perms struct {
	sets []*Set
	// shared is what owners' shares grant a requesting party (UMA),
	// allowed on its own: the party's client has topics of its own only
	// as its class and token allow.
	shared *Set
	// held are the topics of shares outside their hours: nothing is
	// allowed on them, but a subscription is kept (Holds), so that it
	// delivers again when the window opens.
	held *Set
}

// NewPerms intersects sets. A nil set among them allows nothing, so the
// result allows nothing either.
func NewPerms(sets ...*Set) Perms {
	return Perms{sets: append([]*Set(nil), sets...)}
}

// WithShares returns p that also allows what shared allows, and holds the
// subscriptions held allows; either may be nil.
func (p Perms) WithShares(shared, held *Set) Perms {
	p.shared, p.held = shared, held
	return p
}

// Shared reports whether p carries any share (allowed now or held).
func (p Perms) Shared() bool { return p.shared != nil || p.held != nil }

// CanPublish reports whether every set allows publishing to topic, or a share does.
func (p Perms) CanPublish(topic string) bool {
	if checkTopic(topic) != valid {
		return false
	}
	if p.shared != nil && p.shared.canPublish(topic) {
		return true
	}
	if len(p.sets) == 0 {
		return false
	}
	for _, s := range p.sets {
		if !s.canPublish(topic) {
			return false
		}
	}
	return true
}

// CanSubscribe reports whether every set allows subscribing to filter, or a share does.
func (p Perms) CanSubscribe(filter string) bool {
	if checkFilter(filter) != valid {
		return false
	}
	if p.shared != nil && p.shared.canSubscribe(filter) {
		return true
	}
	if len(p.sets) == 0 {
		return false
	}
	for _, s := range p.sets {
		if !s.canSubscribe(filter) {
			return false
		}
	}
	return true
}

// HeldPublish reports whether publishing to topic is a share's outside its
// hours: not allowed now, allowed within them.
func (p Perms) HeldPublish(topic string) bool {
	return !p.CanPublish(topic) && p.held != nil && checkTopic(topic) == valid && p.held.canPublish(topic)
}

// Holds reports whether a subscription to filter may stay: it is allowed,
// or it is a share's outside its hours (it delivers nothing until then).
func (p Perms) Holds(filter string) bool {
	return p.CanSubscribe(filter) || (p.held != nil && checkFilter(filter) == valid && p.held.canSubscribe(filter))
}
