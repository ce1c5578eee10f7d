package push

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// AccountDataType is the account data event that carries a user's rules to
// their clients (spec: push.md, "Push Rules: Events").
const AccountDataType = "m.push_rules"

// Rules returns the user's whole ruleset. Spec: GET /pushrules/global/.
func (s *Service) Rules(ctx context.Context, userID string) (Ruleset, error) {
	doc, err := s.store.PushRules(ctx, userID)
	if err != nil && !errors.Is(err, sqlstore.ErrNotFound) {
		return Ruleset{}, err
	}
	return parseUserRules(doc).ruleset(userID), nil
}

// RulesContent is the content of the user's m.push_rules account data:
// {"global": ruleset}. /sync may show it in an initial sync of a user who
// never changed a rule (and so has no m.push_rules account data stored).
func (s *Service) RulesContent(ctx context.Context, userID string) (json.RawMessage, error) {
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]Ruleset{"global": rs})
}

// Rule returns one rule; 404 M_NOT_FOUND if it does not exist. Spec: GET
// /pushrules/global/{kind}/{ruleId}.
func (s *Service) Rule(ctx context.Context, userID, kind, ruleID string) (Rule, error) {
	if err := checkKind(kind); err != nil {
		return Rule{}, err
	}
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return Rule{}, err
	}
	r, ok := rs.Find(kind, ruleID)
	if !ok {
		return Rule{}, ruleNotFound(kind, ruleID)
	}
	return r, nil
}

func ruleNotFound(kind, ruleID string) error {
	return mxerr.New(mxerr.NotFound, "There is no %s push rule %q", kind, ruleID)
}

func checkKind(kind string) error {
	if !ValidKind(kind) {
		return mxerr.New(mxerr.InvalidParam, "Unknown push rule kind %q: use override, content, room, sender or underride", kind)
	}
	return nil
}

// PutRuleRequest creates or changes a user-defined rule. Spec: PUT
// /pushrules/global/{kind}/{ruleId}.
type PutRuleRequest struct {
	Kind, RuleID  string
	Before, After string            // query parameters: a user-defined rule of the same kind, or ""
	Actions       []json.RawMessage // required
	HasActions    bool              // the body had "actions"
	Conditions    []Condition       // override and underride rules
	Pattern       *string           // content rules
}

// PutRule creates or updates a user-defined rule. A new rule is enabled
// and, without before or after, the most important of its kind; an updated
// one keeps its place and enabled flag unless before or after moves it.
func (s *Service) PutRule(ctx context.Context, userID string, req PutRuleRequest) error {
	if err := checkKind(req.Kind); err != nil {
		return err
	}
	if err := checkNewRuleID(req.Kind, req.RuleID); err != nil {
		return err
	}
	if !req.HasActions {
		return mxerr.New(mxerr.MissingParam, "A push rule needs actions")
	}
	actions, err := ParseActions(req.Actions)
	if err != nil {
		return mxerr.New(mxerr.InvalidParam, "Invalid actions: %v", err)
	}
	rule := Rule{RuleID: req.RuleID, Enabled: true, Actions: actions}
	switch req.Kind {
	case KindContent:
		if req.Pattern == nil {
			return mxerr.New(mxerr.MissingParam, "A content rule needs a pattern")
		}
		p := *req.Pattern
		rule.Pattern = &p
	case KindOverride, KindUnderride:
		rule.Conditions = []Condition{}
		for i, c := range req.Conditions {
			if err := checkCondition(c); err != nil {
				return mxerr.New(mxerr.InvalidParam, "Condition %d: %v", i, err)
			}
			rule.Conditions = append(rule.Conditions, c)
		}
	}
	return s.update(ctx, userID, func(u *userRules) error {
		list := u.kind(req.Kind)
		at := -1
		for i, r := range *list {
			if r.RuleID == req.RuleID {
				at = i
				rule.Enabled = r.Enabled
			}
		}
		anchor := req.Before
		after := false
		if anchor == "" && req.After != "" {
			anchor, after = req.After, true
		}
		if anchor == "" {
			if at >= 0 {
				(*list)[at] = rule
			} else {
				*list = append([]Rule{rule}, *list...)
			}
			return nil
		}
		if strings.HasPrefix(anchor, ".") {
			return mxerr.New(mxerr.Unknown, "before/after rule not found: %s (rules cannot be placed relative to server-default rules)", anchor)
		}
		if anchor == req.RuleID {
			return mxerr.New(mxerr.Unknown, "before/after rule not found: %s (a rule cannot be placed relative to itself)", anchor)
		}
		rest := make([]Rule, 0, len(*list)+1)
		for _, r := range *list {
			if r.RuleID != req.RuleID {
				rest = append(rest, r)
			}
		}
		pos := -1
		for i, r := range rest {
			if r.RuleID == anchor {
				pos = i
			}
		}
		if pos < 0 {
			return mxerr.New(mxerr.Unknown, "before/after rule not found: %s", anchor)
		}
		if after {
			pos++
		}
		rest = append(rest[:pos], append([]Rule{rule}, rest[pos:]...)...)
		*list = rest
		return nil
	})
}

// checkNewRuleID applies the spec's rules on the IDs of user-defined rules:
// no leading dot (server-default rules), no slash or backslash; room and
// sender rules are named by the room or user they apply to.
func checkNewRuleID(kind, ruleID string) error {
	switch {
	case ruleID == "":
		return mxerr.New(mxerr.InvalidParam, "The rule ID is empty")
	case strings.HasPrefix(ruleID, "."):
		return mxerr.New(mxerr.InvalidParam, "Rule IDs starting with a dot are reserved for server-default rules")
	case strings.ContainsAny(ruleID, `/\`):
		return mxerr.New(mxerr.InvalidParam, "Rule IDs may not contain slashes or backslashes")
	case len(ruleID) > 255:
		return mxerr.New(mxerr.InvalidParam, "Rule IDs are limited to 255 bytes")
	case kind == KindRoom && !strings.HasPrefix(ruleID, "!"):
		return mxerr.New(mxerr.InvalidParam, "The ID of a room rule is the ID of its room, which starts with '!'")
	case kind == KindSender && !strings.HasPrefix(ruleID, "@"):
		return mxerr.New(mxerr.InvalidParam, "The ID of a sender rule is the user ID of its sender, which starts with '@'")
	}
	return nil
}

// checkCondition refuses known condition kinds without their parameters.
// Unknown kinds are accepted and never match (spec: "Conditions").
func checkCondition(c Condition) error {
	switch c.Kind {
	case "":
		return errors.New("kind is required")
	case "event_match":
		if c.Key == "" || c.Pattern == nil {
			return errors.New("event_match needs key and pattern")
		}
	case "event_property_is", "event_property_contains":
		if c.Key == "" || len(c.Value) == 0 {
			return errors.New(c.Kind + " needs key and value")
		}
		if _, ok := compileValue(c.Value); !ok {
			return errors.New("value must be a string, an integer, a boolean or null")
		}
	case "room_member_count":
		if _, ok := compileCount(c.Is); !ok {
			return errors.New(`room_member_count needs "is": an integer, optionally prefixed by ==, <, >, >= or <=`)
		}
	case "sender_notification_permission":
		if c.Key == "" {
			return errors.New("sender_notification_permission needs key")
		}
	}
	return nil
}

// DeleteRule removes a user-defined rule. Spec: DELETE
// /pushrules/global/{kind}/{ruleId}. Server-default rules cannot be
// deleted, only disabled.
func (s *Service) DeleteRule(ctx context.Context, userID, kind, ruleID string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if isServerDefault(kind, ruleID) {
		return mxerr.New(mxerr.InvalidParam, "%s is a server-default rule: it cannot be deleted, but it can be disabled", ruleID)
	}
	return s.update(ctx, userID, func(u *userRules) error {
		list := u.kind(kind)
		for i, r := range *list {
			if r.RuleID == ruleID {
				*list = append((*list)[:i], (*list)[i+1:]...)
				return nil
			}
		}
		return ruleNotFound(kind, ruleID)
	})
}

// SetEnabled enables or disables a rule, server-default or not. Spec: PUT
// /pushrules/global/{kind}/{ruleId}/enabled.
func (s *Service) SetEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	return s.change(ctx, userID, kind, ruleID, func(r *Rule, d *defaultChange) {
		if r != nil {
			r.Enabled = enabled
		} else {
			d.Enabled = &enabled
		}
	})
}

// SetActions replaces the actions of a rule, server-default or not. Spec:
// PUT /pushrules/global/{kind}/{ruleId}/actions.
func (s *Service) SetActions(ctx context.Context, userID, kind, ruleID string, actions []json.RawMessage) error {
	parsed, err := ParseActions(actions)
	if err != nil {
		return mxerr.New(mxerr.InvalidParam, "Invalid actions: %v", err)
	}
	raw, err := json.Marshal(parsed)
	if err != nil {
		return err
	}
	return s.change(ctx, userID, kind, ruleID, func(r *Rule, d *defaultChange) {
		if r != nil {
			r.Actions = parsed
		} else {
			d.Actions = raw
		}
	})
}

// change applies fn to a user-defined rule (r) or to the user's changes of
// a server-default rule (d); 404 if neither exists.
func (s *Service) change(ctx context.Context, userID, kind, ruleID string, fn func(r *Rule, d *defaultChange)) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	return s.update(ctx, userID, func(u *userRules) error {
		if isServerDefault(kind, ruleID) {
			if u.Defaults == nil {
				u.Defaults = map[string]defaultChange{}
			}
			d := u.Defaults[kind+"/"+ruleID]
			fn(nil, &d)
			u.Defaults[kind+"/"+ruleID] = d
			return nil
		}
		list := u.kind(kind)
		for i := range *list {
			if (*list)[i].RuleID == ruleID {
				fn(&(*list)[i], nil)
				return nil
			}
		}
		return ruleNotFound(kind, ruleID)
	})
}

// update changes the user's stored rules in one transaction and writes the
// new ruleset as m.push_rules account data at a fresh stream position, so
// every client of the user sees it in its next /sync (spec: push.md, "Push
// Rules: Events").
func (s *Service) update(ctx context.Context, userID string, fn func(u *userRules) error) error {
	var pos int64
	err := s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		doc, err := q.LockPushRules(ctx, userID)
		if err != nil {
			return err
		}
		u := parseUserRules(doc)
		if err := fn(u); err != nil {
			return err
		}
		newDoc, err := json.Marshal(u)
		if err != nil {
			return err
		}
		if err := q.SetPushRules(ctx, userID, newDoc); err != nil {
			return err
		}
		content, err := json.Marshal(map[string]Ruleset{"global": u.ruleset(userID)})
		if err != nil {
			return err
		}
		pos = s.hub.Alloc()
		return q.PutAccountData(ctx, userID, "", AccountDataType, string(content), pos)
	})
	if pos != 0 {
		if err == nil {
			s.hub.Commit(pos, streams.Change{Users: []string{userID}, Kind: streams.KindAccountData})
		} else {
			s.hub.Abort(pos)
		}
	}
	if err == nil {
		s.rules.invalidate(userID)
	}
	return err
}
