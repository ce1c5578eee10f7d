package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"chappe/mxerr"
	"chappe/push"
)

// Push is what the client API needs from the push component.
type Push interface {
	Rules(ctx context.Context, userID string) (push.Ruleset, error)
	Rule(ctx context.Context, userID, kind, ruleID string) (push.Rule, error)
	PutRule(ctx context.Context, userID string, req push.PutRuleRequest) error
	DeleteRule(ctx context.Context, userID, kind, ruleID string) error
	SetEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error
	SetActions(ctx context.Context, userID, kind, ruleID string, actions []json.RawMessage) error
	Notifications(ctx context.Context, userID, from string, limit int, only string) (push.NotificationsPage, error)
	Pushers(ctx context.Context, userID string) ([]push.Pusher, error)
	SetPusher(ctx context.Context, userID, deviceID string, req push.SetPusherRequest) error
}

// pushRoutes are the push endpoints, all authenticated. Spec:
// client-server-api/modules/push.md.
func (a *API) pushRoutes(r routeAdder) {
	const v3 = "/_matrix/client/v3"
	for _, p := range []string{"/pushrules", "/pushrules/"} {
		r.Get(v3+p, handle(a.getPushRulesets))
	}
	for _, p := range []string{"/pushrules/global", "/pushrules/global/"} {
		r.Get(v3+p, handle(a.getGlobalPushRules))
	}
	const rule = v3 + "/pushrules/global/{kind}/{ruleId}"
	r.Get(rule, handle(a.getPushRule))
	r.Put(rule, handleJSON(a, false, a.putPushRule))
	r.Delete(rule, handle(a.deletePushRule))
	r.Get(rule+"/enabled", handle(a.getPushRuleEnabled))
	r.Put(rule+"/enabled", handleJSON(a, false, a.putPushRuleEnabled))
	r.Get(rule+"/actions", handle(a.getPushRuleActions))
	r.Put(rule+"/actions", handleJSON(a, false, a.putPushRuleActions))
	r.Get(v3+"/notifications", handle(a.getNotifications))
	r.Get(v3+"/pushers", handle(a.getPushers))
	r.Post(v3+"/pushers/set", handleJSON(a, false, a.setPusher))
}

func (a *API) getPushRulesets(r *http.Request) (any, error) {
	rs, err := a.push.Rules(r.Context(), session(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]push.Ruleset{"global": rs}, nil
}

func (a *API) getGlobalPushRules(r *http.Request) (any, error) {
	return a.push.Rules(r.Context(), session(r).UserID)
}

func (a *API) getPushRule(r *http.Request) (any, error) {
	return a.push.Rule(r.Context(), session(r).UserID, pathParam(r, "kind"), pathParam(r, "ruleId"))
}

// pushRuleBody is the body of PUT /pushrules/global/{kind}/{ruleId}.
type pushRuleBody struct {
	Actions    *[]json.RawMessage `json:"actions"`
	Conditions []push.Condition   `json:"conditions"`
	Pattern    *string            `json:"pattern"`
}

func (a *API) putPushRule(r *http.Request, body *pushRuleBody) (any, error) {
	q := r.URL.Query()
	req := push.PutRuleRequest{
		Kind: pathParam(r, "kind"), RuleID: pathParam(r, "ruleId"), Before: q.Get("before"), After: q.Get("after"),
		Conditions: body.Conditions, Pattern: body.Pattern,
	}
	if body.Actions != nil {
		req.Actions, req.HasActions = *body.Actions, true
	}
	return empty, a.push.PutRule(r.Context(), session(r).UserID, req)
}

func (a *API) deletePushRule(r *http.Request) (any, error) {
	return empty, a.push.DeleteRule(r.Context(), session(r).UserID, pathParam(r, "kind"), pathParam(r, "ruleId"))
}

func (a *API) getPushRuleEnabled(r *http.Request) (any, error) {
	rule, err := a.getPushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.(push.Rule).Enabled}, nil
}

func (a *API) putPushRuleEnabled(r *http.Request, body *struct {
	Enabled *bool `json:"enabled"`
}) (any, error) {
	if body.Enabled == nil {
		return nil, mxerr.New(mxerr.MissingParam, "enabled (a boolean) is required")
	}
	return empty, a.push.SetEnabled(r.Context(), session(r).UserID, pathParam(r, "kind"), pathParam(r, "ruleId"), *body.Enabled)
}

func (a *API) getPushRuleActions(r *http.Request) (any, error) {
	rule, err := a.getPushRule(r)
	if err != nil {
		return nil, err
	}
	actions := rule.(push.Rule).Actions
	if actions == nil {
		actions = []json.RawMessage{}
	}
	return map[string][]json.RawMessage{"actions": actions}, nil
}

func (a *API) putPushRuleActions(r *http.Request, body *struct {
	Actions *[]json.RawMessage `json:"actions"`
}) (any, error) {
	if body.Actions == nil {
		return nil, mxerr.New(mxerr.MissingParam, "actions (an array) is required")
	}
	return empty, a.push.SetActions(r.Context(), session(r).UserID, pathParam(r, "kind"), pathParam(r, "ruleId"), *body.Actions)
}

func (a *API) getNotifications(r *http.Request) (any, error) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, mxerr.New(mxerr.InvalidParam, "limit must be a non-negative integer")
		}
		limit = n
	}
	return a.push.Notifications(r.Context(), session(r).UserID, q.Get("from"), limit, q.Get("only"))
}

func (a *API) getPushers(r *http.Request) (any, error) {
	pushers, err := a.push.Pushers(r.Context(), session(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string][]push.Pusher{"pushers": pushers}, nil
}

func (a *API) setPusher(r *http.Request, body *push.SetPusherRequest) (any, error) {
	sess := session(r)
	return empty, a.push.SetPusher(r.Context(), sess.UserID, sess.DeviceID, *body)
}
