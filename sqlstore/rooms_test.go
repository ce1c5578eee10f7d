package sqlstore_test

import (
	"context"
	"testing"

	"chappe/sqlstore"
	"chappe/sqlstore/sqltest"
)

// A room first known through an invite (no creator) and then joined: the
// second InsertOrLockRoom finds the row, fills in the creator, and leaves
// the transaction usable (a failed INSERT would abort it).
func TestInsertOrLockRoomKeepsTheTransaction(t *testing.T) {
	st := sqltest.Store(t)
	ctx := context.Background()
	stub := sqlstore.Room{RoomID: "!stub:remote.gouv.fr", RoomVersion: "10", ForwardExtremities: []string{}}
	err := st.InTx(ctx, func(q *sqlstore.Queries) error {
		if _, err := q.InsertOrLockRoom(ctx, stub); err != nil {
			return err
		}
		joined := stub
		joined.Creator, joined.RoomVersion = "@alice:remote.gouv.fr", "11"
		got, err := q.InsertOrLockRoom(ctx, joined)
		if err != nil {
			return err
		}
		if got.Creator != joined.Creator || got.RoomVersion != "10" {
			t.Errorf("second insert: creator %q version %s, want the creator filled in and the version kept", got.Creator, got.RoomVersion)
		}
		again := joined
		again.Creator = "@mallory:remote.gouv.fr"
		if got, err = q.InsertOrLockRoom(ctx, again); err != nil {
			return err
		}
		if got.Creator != joined.Creator {
			t.Errorf("a known creator was replaced by %q", got.Creator)
		}
		_, err = q.GetRoom(ctx, stub.RoomID) // the transaction still works
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
