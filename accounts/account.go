package accounts

import (
	"context"

	"chappe/sqlstore"
)

// ChangePassword sets a new password after UIA. With logoutDevices, every
// other device is logged out; the requesting one stays.
// Spec: POST /_matrix/client/v3/account/password.
func (s *Service) ChangePassword(ctx context.Context, sess Session, newPassword string, logoutDevices bool) error {
	if err := s.CheckPasswordStrength(newPassword); err != nil {
		return err
	}
	hash, err := s.hash(newPassword)
	if err != nil {
		return err
	}
	defer s.forgetSessions(sess.UserID)
	return s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.SetPasswordHash(ctx, sess.UserID, hash); err != nil {
			return err
		}
		if logoutDevices {
			return q.DeleteAllDevices(ctx, sess.UserID, sess.DeviceID)
		}
		return nil
	})
}

// Deactivate closes the account for good: password removed, every device
// deleted (so every token dies), profile erased if asked. The user ID stays
// reserved. Spec: POST /_matrix/client/v3/account/deactivate.
func (s *Service) Deactivate(ctx context.Context, userID string, erase bool) error {
	defer s.forgetSessions(userID)
	return s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if err := q.DeactivateUser(ctx, userID, erase); err != nil {
			return err
		}
		return q.DeleteAllDevices(ctx, userID, "")
	})
}
