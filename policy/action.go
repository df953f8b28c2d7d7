package policy

import (
	"encoding/json"
	"fmt"
)

// Action is a bit set of MQTT operations.
type Action uint8

const (
	// Publish allows sending PUBLISH to matching topic names.
	Publish Action = 1 << iota
	// Subscribe allows SUBSCRIBE to filters covered by the rule's filter.
	Subscribe
)

// allActions is every defined bit; other bits are rejected so that a
// misread configuration cannot silently mean something.
const allActions = Publish | Subscribe

// String returns "pub", "sub", "pub+sub" or "none", matching the JSON names.
func (a Action) String() string {
	switch a {
	case 0:
		return "none"
	case Publish:
		return "pub"
	case Subscribe:
		return "sub"
	case Publish | Subscribe:
		return "pub+sub"
	}
	return fmt.Sprintf("Action(%#x)", uint8(a))
}

// validate rejects bits that name no operation.
func (a Action) validate() error {
	if extra := a &^ allActions; extra != 0 {
		return fmt.Errorf("unknown action bits %#x", uint8(extra))
	}
	return nil
}

// MarshalJSON encodes a as an array of names, e.g. ["pub","sub"]; no actions
// is []. Undefined bits are an error rather than being dropped.
func (a Action) MarshalJSON() ([]byte, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	names := make([]string, 0, 2)
	if a&Publish != 0 {
		names = append(names, "pub")
	}
	if a&Subscribe != 0 {
		names = append(names, "sub")
	}
	return json.Marshal(names)
}

// UnmarshalJSON decodes an array of "pub"/"sub" names. An unknown name is an
// error naming it: guessing would either grant or lose a permission. JSON
// null leaves a unchanged, as encoding/json does for other types.
func (a *Action) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var names []string
	if err := json.Unmarshal(data, &names); err != nil {
		return fmt.Errorf("actions: want an array of \"pub\"/\"sub\": %w", err)
	}
	var v Action
	for _, n := range names {
		switch n {
		case "pub":
			v |= Publish
		case "sub":
			v |= Subscribe
		default:
			return fmt.Errorf("unknown action %q (want \"pub\" or \"sub\")", n)
		}
	}
	*a = v
	return nil
}

// Rule is one AIF-MQTT entry: a topic filter and the actions allowed on it.
type Rule struct {
	Filter  string `json:"filter"`
	Actions Action `json:"actions"`
}
