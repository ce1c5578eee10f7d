package accounts

import (
	"context"
	"errors"
	"net/http"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// The authentication stages Chappe offers.
// Spec: client-server-api/_index.md, "Authentication types".
const (
	StageDummy             = "m.login.dummy"
	StagePassword          = "m.login.password"
	StageRegistrationToken = "m.login.registration_token"
)

// Flow is one way through user-interactive auth: stages to complete in order.
type Flow struct {
	Stages []string `json:"stages"`
}

// Operation is what a UIA session authorises. A session started for one
// operation is refused for any other, so a password typed to rename nothing
// cannot be replayed to delete a device.
type Operation struct {
	// Name identifies the request, e.g. "register", "POST /account/password",
	// or "DELETE /devices ABC,DEF".
	Name string
	// UserID is the user who must authenticate; empty during registration.
	UserID string
	Flows  []Flow
}

// Identifier is the spec's user identifier (only m.id.user is supported).
type Identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// AuthDict is the "auth" object of a request that needs UIA.
type AuthDict struct {
	Type       string      `json:"type"`
	Session    string      `json:"session"`
	Password   string      `json:"password"`
	Identifier *Identifier `json:"identifier"`
	User       string      `json:"user"` // legacy form of identifier
	Token      string      `json:"token"`
}

// UIAError is the 401 answer that tells the client what is left to do.
// Spec: "User-interactive API in the REST API".
type UIAError struct {
	Flows     []Flow         `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed,omitempty"`
	Code      mxerr.Code     `json:"errcode,omitempty"`
	Message   string         `json:"error,omitempty"`
}

func (e *UIAError) Error() string { return "user-interactive authentication required" }

// Status is always 401.
func (e *UIAError) Status() int { return http.StatusUnauthorized }

// UIAResult is a completed authentication.
type UIAResult struct {
	SessionID string
	// RegistrationToken is the token validated during registration, to spend
	// in the transaction that creates the account.
	RegistrationToken *string
}

// Authorize runs one step of user-interactive auth for op. It returns the
// completed result once a flow is done, a *UIAError (401) while stages remain
// or after a failed stage, or another error for a bad request.
func (s *Service) Authorize(ctx context.Context, op Operation, auth *AuthDict) (UIAResult, error) {
	now := s.now()
	if auth == nil || (auth.Session == "" && auth.Type == "") {
		return UIAResult{}, s.startUIA(ctx, op)
	}
	var sess sqlstore.UIASession
	if auth.Session == "" {
		// A client that knows the flow may authenticate in one request.
		id := newSecret("")
		sess = sqlstore.UIASession{SessionID: id, Operation: op.Name, CreatedTS: now.UnixMilli()}
		if op.UserID != "" {
			sess.UserID = &op.UserID
		}
		if err := s.store.CreateUIASession(ctx, sess); err != nil {
			return UIAResult{}, err
		}
	} else {
		var err error
		sess, err = s.store.GetUIASession(ctx, auth.Session)
		if errors.Is(err, sqlstore.ErrNotFound) || (err == nil && now.UnixMilli()-sess.CreatedTS > s.cfg.UIASessionLifetime.Milliseconds()) {
			return UIAResult{}, mxerr.New(mxerr.Unknown, "Unknown or expired authentication session; start again without a session")
		}
		if err != nil {
			return UIAResult{}, err
		}
		if sess.Operation != op.Name || deref(sess.UserID) != op.UserID {
			return UIAResult{}, mxerr.New(mxerr.Forbidden, "This authentication session was started for another request")
		}
	}
	if auth.Type != "" {
		if !offered(op.Flows, auth.Type) {
			return UIAResult{}, s.uiaError(op, sess, mxerr.New(mxerr.Unknown, "Authentication type %q is not offered for this request", auth.Type))
		}
		regToken, err := s.runStage(ctx, op, auth)
		if err != nil {
			if e, ok := mxerr.As(err); ok {
				return UIAResult{}, s.uiaError(op, sess, e)
			}
			return UIAResult{}, err
		}
		if err := s.store.CompleteUIAStage(ctx, sess.SessionID, auth.Type, regToken); err != nil {
			return UIAResult{}, err
		}
		sess.Completed = appendOnce(sess.Completed, auth.Type)
		if regToken != nil {
			sess.RegistrationToken = regToken
		}
	}
	for _, f := range op.Flows {
		if containsAll(sess.Completed, f.Stages) {
			return UIAResult{SessionID: sess.SessionID, RegistrationToken: sess.RegistrationToken}, nil
		}
	}
	return UIAResult{}, s.uiaError(op, sess, nil)
}

// FinishUIA deletes a session once the operation it authorised has succeeded,
// and purges expired sessions.
func (s *Service) FinishUIA(ctx context.Context, sessionID string) error {
	return s.store.DeleteUIASession(ctx, sessionID, s.now().Add(-s.cfg.UIASessionLifetime).UnixMilli())
}

func (s *Service) startUIA(ctx context.Context, op Operation) error {
	// Every new session purges the expired ones, so unfinished sessions
	// (anyone may start one on /register) cannot pile up.
	if err := s.FinishUIA(ctx, ""); err != nil {
		return err
	}
	sess := sqlstore.UIASession{SessionID: newSecret(""), Operation: op.Name, CreatedTS: s.now().UnixMilli()}
	if op.UserID != "" {
		sess.UserID = &op.UserID
	}
	if err := s.store.CreateUIASession(ctx, sess); err != nil {
		return err
	}
	return s.uiaError(op, sess, nil)
}

func (s *Service) uiaError(op Operation, sess sqlstore.UIASession, cause *mxerr.Error) *UIAError {
	e := &UIAError{Flows: op.Flows, Params: map[string]any{}, Session: sess.SessionID, Completed: sess.Completed}
	if cause != nil {
		e.Code, e.Message = cause.Code, cause.Message
	}
	return e
}

// runStage checks one stage's credentials.
func (s *Service) runStage(ctx context.Context, op Operation, auth *AuthDict) (*string, error) {
	switch auth.Type {
	case StageDummy:
		return nil, nil
	case StagePassword:
		userID, err := s.resolveIdentifier(auth.Identifier, auth.User)
		if err != nil {
			return nil, err
		}
		if userID != op.UserID {
			return nil, mxerr.New(mxerr.Forbidden, "You can only authenticate as yourself")
		}
		if err := s.checkUserPassword(ctx, userID, auth.Password); err != nil {
			return nil, err
		}
		return nil, nil
	case StageRegistrationToken:
		if auth.Token == "" {
			return nil, mxerr.New(mxerr.MissingParam, "The registration token is missing")
		}
		ok, err := s.RegistrationTokenValid(ctx, auth.Token)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, mxerr.New(mxerr.Forbidden, "This registration token is not valid (unknown, expired or used up)")
		}
		tok := auth.Token
		return &tok, nil
	}
	return nil, mxerr.New(mxerr.Unknown, "Unknown authentication type %q", auth.Type)
}

// RegistrationTokenValid tells whether token can still complete a registration.
// Spec: GET /register/m.login.registration_token/validity.
func (s *Service) RegistrationTokenValid(ctx context.Context, token string) (bool, error) {
	t, err := s.store.GetRegistrationToken(ctx, token)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.Usable(s.now().UnixMilli()), nil
}

func offered(flows []Flow, stage string) bool {
	for _, f := range flows {
		for _, st := range f.Stages {
			if st == stage {
				return true
			}
		}
	}
	return false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
