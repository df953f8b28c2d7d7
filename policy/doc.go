// Package policy holds MQTT topic permissions and decides, per message,
// whether a session may publish to a topic or subscribe to a filter.
//
// The model is RFC 9431's AIF-MQTT: a permission is a list of [Rule]s, each a
// topic filter plus the [Action]s (publish, subscribe) it grants. Rules come
// from two places that are intersected by [Perms]: a device-class template
// ([Expand] fills in {device}, {owner} and {client}) and the OAuth scope of the
// client's token ([ParseScope] reads "publish:<filter>" and
// "subscribe:<filter>" entries).
//
// Matching follows MQTT 3.1.1 and 5.0 exactly:
//
//   - Topic names and filters are split into levels at '/'; empty levels are
//     real levels ("a//b" has three, "/" has two).
//   - '+' matches exactly one level, which may be empty.
//   - '#' must be the last level and matches its parent level and any number
//     of child levels: "a/#" matches "a", "a/b" and "a/b/c".
//   - A filter whose first level is '+' or '#' does not match a topic whose
//     first level starts with '$' (so "#" does not reveal $SYS topics).
//
// A client may publish to a topic if a rule granting [Publish] matches it.
// A client may subscribe to a filter if a single rule granting [Subscribe]
// covers every topic the filter can match ([Subset]); checking coverage
// rather than overlap is what keeps a wildcard subscription from reaching
// topics the client was not granted.
//
// Everything fails closed: invalid topics and filters match nothing, a nil
// [*Set] and a zero [Perms] allow nothing, and template values that could
// widen a filter drop the rule rather than expand it.
//
// MQTT 5 shared subscriptions ("$share/<group>/<filter>") are not interpreted
// here; the caller strips the prefix and checks the inner filter.
//
// The hot-path functions ([Match], [Subset], [Set.CanPublish],
// [Set.CanSubscribe], [Perms.CanPublish], [Perms.CanSubscribe]) do not
// allocate.
package policy
