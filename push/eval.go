package push

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Event is an event push rules are evaluated on, parsed once and shared by
// the evaluations of every member.
type Event struct {
	fields map[string]any // the event JSON, numbers as json.Number
	sender string
}

// ParseEvent parses an event's JSON for evaluation. eventID is added when
// the JSON has none (room versions 3 and later derive it from the hash).
func ParseEvent(eventJSON []byte, eventID string) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(eventJSON))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil {
		return nil, err
	}
	if fields == nil {
		fields = map[string]any{}
	}
	if _, ok := fields["event_id"]; !ok && eventID != "" {
		fields["event_id"] = eventID
	}
	ev := &Event{fields: fields}
	ev.sender, _ = fields["sender"].(string)
	return ev, nil
}

// lookup follows a parsed dot-separated property path (spec: appendices,
// "Dot-separated property paths"); ok is false if a step is missing.
func (e *Event) lookup(path []string) (any, bool) {
	var cur any = e.fields
	for _, seg := range path {
		obj, isObj := cur.(map[string]any)
		if !isObj {
			return nil, false
		}
		v, ok := obj[seg]
		if !ok {
			return nil, false
		}
		cur = v
	}
	return cur, true
}

// splitPath parses a dot-separated property path: "\." is a literal dot,
// "\\" a literal backslash; any other backslash is kept as it is.
func splitPath(key string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}

// Room is what conditions read of the room at the event.
type Room interface {
	// MemberCount is the number of joined members.
	MemberCount() int
	// DisplayName is the user's display name in the room ("" if none).
	DisplayName(userID string) string
	// SenderMayNotify tells whether the sender's power level reaches the
	// level that notifications.<key> of the power levels requires.
	SenderMayNotify(sender, key string) bool
}

// evaluation is one user's evaluation of one event.
type evaluation struct {
	ev     *Event
	room   Room
	userID string
	// personal is set when a condition's result depended on who the user
	// is (their ID or display name): the outcome then holds for them only.
	// Otherwise it holds for every user with the same rules, which spares
	// evaluating a room's members one by one.
	personal bool
}

// cond is a compiled condition.
type cond func(*evaluation) bool

// compiledRule is an enabled rule ready for evaluation.
type compiledRule struct {
	kind, ruleID string
	conds        []cond
	actions      Actions
	actionsJSON  string // the actions as a JSON array, as stored with notifications
}

// Rules is a user's enabled rules compiled in evaluation order.
type Rules struct {
	rules []compiledRule
}

// compileRuleset compiles a ruleset in which the owner's ID may appear as
// userPlaceholder (the server-default rules).
func compileRuleset(rs Ruleset) *Rules {
	c := &Rules{}
	for _, kind := range Kinds {
		for _, r := range *rs.Kind(kind) {
			if !r.Enabled {
				continue
			}
			cr := compiledRule{kind: kind, ruleID: r.RuleID, actions: interpret(r.Actions)}
			if actions, err := json.Marshal(nonNil(r.Actions)); err == nil {
				cr.actionsJSON = string(actions)
			}
			switch kind {
			case KindOverride, KindUnderride:
				for _, cd := range r.Conditions {
					cr.conds = append(cr.conds, compileCondition(cd))
				}
			case KindContent:
				if r.Pattern == nil {
					cr.conds = []cond{never}
				} else {
					m := compileGlob(*r.Pattern, true)
					cr.conds = []cond{func(e *evaluation) bool {
						body, ok := e.ev.lookup(bodyPath)
						s, isString := body.(string)
						return ok && isString && m(s)
					}}
				}
			case KindRoom:
				roomID := r.RuleID
				cr.conds = []cond{func(e *evaluation) bool { return e.ev.fields["room_id"] == roomID }}
			case KindSender:
				sender := r.RuleID
				cr.conds = []cond{func(e *evaluation) bool { return e.ev.sender == sender }}
			}
			c.rules = append(c.rules, cr)
		}
	}
	return c
}

func nonNil(a []json.RawMessage) []json.RawMessage {
	if a == nil {
		return []json.RawMessage{}
	}
	return a
}

var bodyPath = []string{"content", "body"}

func never(*evaluation) bool { return false }

// match returns the first enabled rule whose conditions all hold, or nil.
func (c *Rules) match(e *evaluation) *compiledRule {
	for i := range c.rules {
		r := &c.rules[i]
		ok := true
		for _, cd := range r.conds {
			if !cd(e) {
				ok = false
				break
			}
		}
		if ok {
			return r
		}
	}
	return nil
}

// Evaluate runs the rules for userID on ev in room; ok is false if no rule
// matched (no notification). It does not check that userID is not the
// sender: callers never evaluate the sender's own events.
func (c *Rules) Evaluate(ev *Event, room Room, userID string) (ruleID string, actions Actions, ok bool) {
	r := c.match(&evaluation{ev: ev, room: room, userID: userID})
	if r == nil {
		return "", Actions{}, false
	}
	return r.ruleID, r.actions, true
}

// compileCondition compiles one condition of an override or underride rule
// (spec: "Conditions"). Unknown kinds, and known kinds missing a
// parameter, never match.
func compileCondition(c Condition) cond {
	switch c.Kind {
	case "event_match":
		if c.Key == "" || c.Pattern == nil {
			return never
		}
		path := splitPath(c.Key)
		if *c.Pattern == userPlaceholder {
			return func(e *evaluation) bool {
				v, ok := e.ev.lookup(path)
				s, isString := v.(string)
				if !ok || !isString {
					return false
				}
				e.personal = true
				return strings.EqualFold(s, e.userID)
			}
		}
		m := compileGlob(*c.Pattern, c.Key == "content.body")
		return func(e *evaluation) bool {
			v, ok := e.ev.lookup(path)
			s, isString := v.(string)
			return ok && isString && m(s)
		}
	case "event_property_is":
		if c.Key == "" {
			return never
		}
		path := splitPath(c.Key)
		want, ok := compileValue(c.Value)
		if !ok {
			return never
		}
		return func(e *evaluation) bool {
			v, present := e.ev.lookup(path)
			return present && want.equal(v, e)
		}
	case "event_property_contains":
		if c.Key == "" {
			return never
		}
		path := splitPath(c.Key)
		want, ok := compileValue(c.Value)
		if !ok {
			return never
		}
		return func(e *evaluation) bool {
			v, _ := e.ev.lookup(path)
			arr, isArray := v.([]any)
			if !isArray {
				return false
			}
			for _, item := range arr {
				if want.equal(item, e) {
					return true
				}
			}
			return false
		}
	case "contains_display_name":
		return func(e *evaluation) bool {
			e.personal = true
			name := e.room.DisplayName(e.userID)
			if name == "" {
				return false
			}
			body, _ := e.ev.lookup(bodyPath)
			s, isString := body.(string)
			return isString && wordMatcher(name)(s)
		}
	case "room_member_count":
		cmp, ok := compileCount(c.Is)
		if !ok {
			return never
		}
		return func(e *evaluation) bool { return cmp(e.room.MemberCount()) }
	case "sender_notification_permission":
		if c.Key == "" {
			return never
		}
		key := c.Key
		return func(e *evaluation) bool { return e.room.SenderMayNotify(e.ev.sender, key) }
	}
	return never
}

// value is a non-compound JSON value of a condition (spec: "only supports
// non-compound canonical JSON values").
type value struct {
	kind  byte // 's' string, 'i' integer, 'b' boolean, 'n' null, 'u' the evaluated user's ID
	str   string
	num   int64
	truth bool
}

// maxSafeInt is the canonical JSON integer range: [-(2**53)+1, (2**53)-1].
const maxSafeInt = 1<<53 - 1

func compileValue(raw json.RawMessage) (value, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return value{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return value{}, false
	}
	switch x := v.(type) {
	case nil:
		return value{kind: 'n'}, true
	case bool:
		return value{kind: 'b', truth: x}, true
	case string:
		if x == userPlaceholder {
			return value{kind: 'u'}, true
		}
		return value{kind: 's', str: x}, true
	case json.Number:
		n, err := x.Int64()
		if err != nil || n > maxSafeInt || n < -maxSafeInt {
			return value{}, false
		}
		return value{kind: 'i', num: n}, true
	}
	return value{}, false
}

// equal compares an event value exactly, without casting types.
func (w value) equal(v any, e *evaluation) bool {
	switch w.kind {
	case 'n':
		return v == nil
	case 'b':
		b, ok := v.(bool)
		return ok && b == w.truth
	case 's':
		s, ok := v.(string)
		return ok && s == w.str
	case 'u':
		s, ok := v.(string)
		if ok {
			e.personal = true
		}
		return ok && s == e.userID
	case 'i':
		n, ok := v.(json.Number)
		if !ok || strings.ContainsAny(string(n), ".eE") {
			return false
		}
		i, err := n.Int64()
		return err == nil && i == w.num
	}
	return false
}

// compileCount parses room_member_count's "is": a decimal integer with an
// optional ==, <, >, >= or <= prefix (== by default).
func compileCount(is string) (func(int) bool, bool) {
	op := "=="
	for _, p := range []string{"==", ">=", "<=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.ParseInt(is, 10, 64)
	if err != nil || is[0] == '+' {
		return nil, false
	}
	switch op {
	case "==":
		return func(c int) bool { return int64(c) == n }, true
	case "<":
		return func(c int) bool { return int64(c) < n }, true
	case ">":
		return func(c int) bool { return int64(c) > n }, true
	case ">=":
		return func(c int) bool { return int64(c) >= n }, true
	default:
		return func(c int) bool { return int64(c) <= n }, true
	}
}

// wordClass is what the spec counts as a word character: a word boundary
// is the start or end of the value or any other character.
const wordClass = `A-Za-z0-9_`

// globRegexp translates a glob (spec: appendices, "Glob-style matching":
// * is any run of characters, ? exactly one) into a regular expression.
func globRegexp(pattern string) string {
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	return b.String()
}

// compileGlob returns a case-insensitive matcher of pattern against a whole
// value, or, with words, against any substring of the value that starts
// and ends at a word boundary (the content.body rule).
func compileGlob(pattern string, words bool) func(string) bool {
	if !words && !strings.ContainsAny(pattern, "*?") {
		return func(s string) bool { return strings.EqualFold(s, pattern) }
	}
	var expr string
	if words {
		expr = `(?is)(?:^|[^` + wordClass + `])` + globRegexp(pattern) + `(?:[^` + wordClass + `]|$)`
	} else {
		expr = `(?is)^` + globRegexp(pattern) + `$`
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return func(string) bool { return false }
	}
	return re.MatchString
}

// wordMatchers caches the matchers of display names, which conditions
// compile at evaluation time. It is cleared when it grows too big.
var wordMatchers = struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}{m: map[string]*regexp.Regexp{}}

const maxWordMatchers = 4096

// wordMatcher matches a literal text, case-insensitively, at word
// boundaries (contains_display_name).
func wordMatcher(text string) func(string) bool {
	wordMatchers.Lock()
	re, ok := wordMatchers.m[text]
	wordMatchers.Unlock()
	if !ok {
		var err error
		re, err = regexp.Compile(`(?is)(?:^|[^` + wordClass + `])` + regexp.QuoteMeta(text) + `(?:[^` + wordClass + `]|$)`)
		if err != nil {
			return func(string) bool { return false }
		}
		wordMatchers.Lock()
		if len(wordMatchers.m) >= maxWordMatchers {
			wordMatchers.m = map[string]*regexp.Regexp{}
		}
		wordMatchers.m[text] = re
		wordMatchers.Unlock()
	}
	return re.MatchString
}

// PowerLevels is the part of m.room.power_levels push rules read.
type PowerLevels struct {
	Users         map[string]int64
	UsersDefault  int64
	Notifications map[string]int64
}

// infinitePower is the level of the creators of rooms whose version
// privileges them (v12): above any power level.
const infinitePower = math.MaxInt64

// parsePowerLevels reads a power levels content leniently: levels may be
// integers or, in old room versions, strings holding integers.
func parsePowerLevels(content []byte) *PowerLevels {
	var raw struct {
		Users         map[string]json.RawMessage `json:"users"`
		UsersDefault  json.RawMessage            `json:"users_default"`
		Notifications map[string]json.RawMessage `json:"notifications"`
	}
	if json.Unmarshal(content, &raw) != nil {
		return &PowerLevels{Users: map[string]int64{}, Notifications: map[string]int64{}}
	}
	pl := &PowerLevels{Users: map[string]int64{}, Notifications: map[string]int64{}}
	for u, v := range raw.Users {
		if n, ok := level(v); ok {
			pl.Users[u] = n
		}
	}
	pl.UsersDefault, _ = level(raw.UsersDefault)
	for k, v := range raw.Notifications {
		if n, ok := level(v); ok {
			pl.Notifications[k] = n
		}
	}
	return pl
}

func level(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, false
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		return 0, false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return i, true
		}
	}
	return 0, false
}

// defaultNotificationLevel is the level notifications.<key> defaults to
// (spec: m.room.power_levels, notifications.room).
const defaultNotificationLevel = 50
