// Package push is the push notifications module: each user's push rules
// (the spec's server-default rules plus their own), their evaluation on every
// event for each local member of the room, which yields the notification and
// highlight counts /sync shows and the list /notifications pages through,
// the pushers clients register, and delivery to their push gateways.
//
// Counts are computed eagerly: the roomserver calls EventStored inside the
// transaction that stores each event, and the outcome is written in that
// same transaction, keyed by the event's stream position. A /sync that sees
// the event therefore sees its counts, and a crash can never keep one
// without the other. The outcome is stored once per event (what most
// members got) plus one exception row per member who got something else (a
// mention, their own rules); rules, room state and member lists are cached
// in memory, and members with the same rules share one evaluation unless a
// condition looked at who they are. An event in a room of 1,000 local
// members thus costs about one row and a few microseconds per member.
// Counts are read per room with one query: the events after how far the
// user has read (receipts, threaded or not, and their own last event).
//
// Spec: client-server-api/modules/push.md, receipts.md ("Receiving
// notifications"), push-gateway-api.md.
package push

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// The kinds of push rules, in the order they are evaluated.
const (
	KindOverride  = "override"
	KindContent   = "content"
	KindRoom      = "room"
	KindSender    = "sender"
	KindUnderride = "underride"
)

// Kinds lists the rule kinds in evaluation order.
var Kinds = []string{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// ValidKind tells whether kind is one of the five rule kinds.
func ValidKind(kind string) bool {
	for _, k := range Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// Condition is a push condition (spec: PushCondition). Which fields are
// used depends on Kind; unknown kinds are kept and never match.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"` // a pointer: "" is a valid pattern (state_key of .m.rule.tombstone)
	Is      string          `json:"is,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"` // JSON null is a valid value, distinct from absent
}

// Rule is a push rule as the API shows it (spec: PushRule).
type Rule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions []Condition       `json:"-"` // override and underride rules only; see MarshalJSON
	Pattern    *string           `json:"pattern,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
}

// MarshalJSON shows conditions (possibly empty) on the rules that have
// them, override and underride, and never on the others.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	out := struct {
		plain
		Conditions *[]Condition `json:"conditions,omitempty"`
	}{plain: plain(r)}
	if r.Conditions != nil {
		out.Conditions = &r.Conditions
	}
	if out.Actions == nil {
		out.Actions = []json.RawMessage{}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Rule) UnmarshalJSON(data []byte) error {
	type plain Rule
	var in struct {
		plain
		Conditions *[]Condition `json:"conditions"`
	}
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	*r = Rule(in.plain)
	if in.Conditions != nil {
		r.Conditions = *in.Conditions
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
	}
	return nil
}

// Ruleset is a user's rules of every kind, each list most important first
// (spec: PushRuleset).
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Kind returns the list of one kind.
func (rs *Ruleset) Kind(kind string) *[]Rule {
	switch kind {
	case KindOverride:
		return &rs.Override
	case KindContent:
		return &rs.Content
	case KindRoom:
		return &rs.Room
	case KindSender:
		return &rs.Sender
	case KindUnderride:
		return &rs.Underride
	}
	return nil
}

// Find returns the rule of that kind and ID.
func (rs *Ruleset) Find(kind, ruleID string) (Rule, bool) {
	list := rs.Kind(kind)
	if list == nil {
		return Rule{}, false
	}
	for _, r := range *list {
		if r.RuleID == ruleID {
			return r, true
		}
	}
	return Rule{}, false
}

// userPlaceholder stands for the rule owner's user ID in the server-default
// rules: it is replaced by the real ID when rules are shown, and compared
// with the evaluated user's ID when they are evaluated.
const userPlaceholder = "\x00user_id"

// Server-default rules (spec: "Predefined Rules", v1.17 and later: the
// legacy rules that looked for mentions in the body are gone). The master
// rule is evaluated before the user's override rules; every other
// server-default rule after the user's rules of its kind.
var (
	defaultOverride = []Rule{
		{RuleID: ".m.rule.master", Default: true, Enabled: false, Conditions: []Condition{}, Actions: acts()},
		{RuleID: ".m.rule.suppress_notices", Default: true, Enabled: true, Conditions: []Condition{
			match("content.msgtype", "m.notice"),
		}, Actions: acts()},
		{RuleID: ".m.rule.invite_for_me", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userPlaceholder),
		}, Actions: acts(`"notify"`, `{"set_tweak":"sound","value":"default"}`)},
		{RuleID: ".m.rule.member_event", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.room.member"),
		}, Actions: acts()},
		{RuleID: ".m.rule.is_user_mention", Default: true, Enabled: true, Conditions: []Condition{
			{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: jsonValue(userPlaceholder)},
		}, Actions: acts(`"notify"`, `{"set_tweak":"sound","value":"default"}`, `{"set_tweak":"highlight"}`)},
		{RuleID: ".m.rule.is_room_mention", Default: true, Enabled: true, Conditions: []Condition{
			{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: json.RawMessage(`true`)},
			{Kind: "sender_notification_permission", Key: "room"},
		}, Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)},
		{RuleID: ".m.rule.tombstone", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.room.tombstone"), match("state_key", ""),
		}, Actions: acts(`"notify"`, `{"set_tweak":"highlight"}`)},
		{RuleID: ".m.rule.reaction", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.reaction"),
		}, Actions: acts()},
		{RuleID: ".m.rule.room.server_acl", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.room.server_acl"), match("state_key", ""),
		}, Actions: acts()},
		{RuleID: ".m.rule.suppress_edits", Default: true, Enabled: true, Conditions: []Condition{
			{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: json.RawMessage(`"m.replace"`)},
		}, Actions: acts()},
	}
	defaultUnderride = []Rule{
		{RuleID: ".m.rule.call", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.call.invite"),
		}, Actions: acts(`"notify"`, `{"set_tweak":"sound","value":"ring"}`)},
		{RuleID: ".m.rule.encrypted_room_one_to_one", Default: true, Enabled: true, Conditions: []Condition{
			{Kind: "room_member_count", Is: "2"}, match("type", "m.room.encrypted"),
		}, Actions: acts(`"notify"`, `{"set_tweak":"sound","value":"default"}`)},
		{RuleID: ".m.rule.room_one_to_one", Default: true, Enabled: true, Conditions: []Condition{
			{Kind: "room_member_count", Is: "2"}, match("type", "m.room.message"),
		}, Actions: acts(`"notify"`, `{"set_tweak":"sound","value":"default"}`)},
		{RuleID: ".m.rule.message", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.room.message"),
		}, Actions: acts(`"notify"`)},
		{RuleID: ".m.rule.encrypted", Default: true, Enabled: true, Conditions: []Condition{
			match("type", "m.room.encrypted"),
		}, Actions: acts(`"notify"`)},
	}
)

func match(key, pattern string) Condition {
	return Condition{Kind: "event_match", Key: key, Pattern: &pattern}
}

func acts(raw ...string) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(raw))
	for _, r := range raw {
		out = append(out, json.RawMessage(r))
	}
	return out
}

func jsonValue(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// defaultsOf returns the server-default rules of a kind.
func defaultsOf(kind string) []Rule {
	switch kind {
	case KindOverride:
		return defaultOverride
	case KindUnderride:
		return defaultUnderride
	}
	return nil
}

// isServerDefault tells whether (kind, ruleID) names a server-default rule.
func isServerDefault(kind, ruleID string) bool {
	for _, r := range defaultsOf(kind) {
		if r.RuleID == ruleID {
			return true
		}
	}
	return false
}

// userRules is what is stored for a user who changed their rules: their
// own rules of each kind, most important first, and the changes they made
// to server-default rules, keyed "kind/rule_id".
type userRules struct {
	Override  []Rule                   `json:"override,omitempty"`
	Content   []Rule                   `json:"content,omitempty"`
	Room      []Rule                   `json:"room,omitempty"`
	Sender    []Rule                   `json:"sender,omitempty"`
	Underride []Rule                   `json:"underride,omitempty"`
	Defaults  map[string]defaultChange `json:"defaults,omitempty"`
}

// defaultChange is what a user changed in a server-default rule.
type defaultChange struct {
	Enabled *bool           `json:"enabled,omitempty"`
	Actions json.RawMessage `json:"actions,omitempty"` // a JSON array; nil: unchanged
}

func (u *userRules) kind(kind string) *[]Rule {
	switch kind {
	case KindOverride:
		return &u.Override
	case KindContent:
		return &u.Content
	case KindRoom:
		return &u.Room
	case KindSender:
		return &u.Sender
	case KindUnderride:
		return &u.Underride
	}
	return nil
}

// parseUserRules reads a stored document; an unreadable one counts as no
// change at all, so a damaged row never stops notifications.
func parseUserRules(doc []byte) *userRules {
	u := &userRules{}
	if len(doc) > 0 {
		if err := json.Unmarshal(doc, u); err != nil {
			return &userRules{}
		}
	}
	return u
}

// ruleset renders the user's full ruleset: the master rule, then each
// kind's user rules before its server defaults. Placeholders become
// userID; pass userPlaceholder to keep them for compilation.
func (u *userRules) ruleset(userID string) Ruleset {
	var rs Ruleset
	for _, kind := range Kinds {
		list := rs.Kind(kind)
		*list = []Rule{}
		own := *u.kind(kind)
		defaults := defaultsOf(kind)
		start := 0
		if kind == KindOverride {
			// .m.rule.master outranks even the user's override rules.
			*list = append(*list, u.applyDefault(kind, defaults[0], userID))
			start = 1
		}
		for _, r := range own {
			*list = append(*list, r)
		}
		for _, d := range defaults[start:] {
			*list = append(*list, u.applyDefault(kind, d, userID))
		}
	}
	return rs
}

// applyDefault is a server-default rule with the user's changes and ID.
func (u *userRules) applyDefault(kind string, d Rule, userID string) Rule {
	r := d
	r.Conditions = make([]Condition, len(d.Conditions))
	for i, c := range d.Conditions {
		if c.Pattern != nil && *c.Pattern == userPlaceholder {
			p := userID
			c.Pattern = &p
		}
		if bytes.Equal(c.Value, jsonValue(userPlaceholder)) {
			c.Value = jsonValue(userID)
		}
		r.Conditions[i] = c
	}
	if ch, ok := u.Defaults[kind+"/"+d.RuleID]; ok {
		if ch.Enabled != nil {
			r.Enabled = *ch.Enabled
		}
		if ch.Actions != nil {
			var a []json.RawMessage
			if json.Unmarshal(ch.Actions, &a) == nil {
				r.Actions = a
			}
		}
	}
	return r
}

// Actions is what a rule's actions mean for a notification.
type Actions struct {
	Notify    bool
	Highlight bool
	Sound     string
}

// ParseActions validates actions (spec: "Actions") and returns them with the
// historical dont_notify and coalesce removed, which clients and servers
// must ignore.
func ParseActions(raw []json.RawMessage) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(raw))
	for _, a := range raw {
		a = bytes.TrimSpace(a)
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify":
				out = append(out, json.RawMessage(`"notify"`))
			case "dont_notify", "coalesce":
			default:
				return nil, fmt.Errorf("unknown action %q", s)
			}
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(a, &obj) != nil || obj == nil {
			return nil, fmt.Errorf("an action must be a string or an object, not %s", a)
		}
		var tweak string
		if json.Unmarshal(obj["set_tweak"], &tweak) != nil || tweak == "" {
			return nil, fmt.Errorf("an object action needs set_tweak, a string: %s", a)
		}
		compact := &bytes.Buffer{}
		if err := json.Compact(compact, a); err != nil {
			return nil, err
		}
		out = append(out, compact.Bytes())
	}
	return out, nil
}

// interpret reads what actions ask for. A highlight tweak without a value
// means true; an unknown string action is ignored.
func interpret(raw []json.RawMessage) Actions {
	var a Actions
	for _, r := range raw {
		var s string
		if json.Unmarshal(r, &s) == nil {
			if s == "notify" {
				a.Notify = true
			}
			continue
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(r, &t) != nil {
			continue
		}
		switch t.SetTweak {
		case "highlight":
			var v bool
			a.Highlight = len(t.Value) == 0 || (json.Unmarshal(t.Value, &v) == nil && v)
		case "sound":
			_ = json.Unmarshal(t.Value, &a.Sound)
		}
	}
	return a
}
