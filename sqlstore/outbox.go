package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Queries of the federation outbox (package federation, migration 009):
// what each remote server still has to receive, in order.

const enqueuePDUSQL = `
INSERT INTO federation_outbox (destination, queued_ts, event_nid)
SELECT d, $2, $3 FROM unnest($1::text[]) AS d`

// EnqueuePDU queues the event eventNID for each of destinations, at time ts
// (ms). Run it in the transaction that stores the event, so the rows commit
// or roll back with it.
func (q *Queries) EnqueuePDU(ctx context.Context, destinations []string, eventNID, ts int64) error {
	if len(destinations) == 0 {
		return nil
	}
	_, err := q.q.Exec(ctx, enqueuePDUSQL, destinations, ts, eventNID)
	return err
}

const enqueueEDUSQL = `
INSERT INTO federation_outbox (destination, queued_ts, edu_type, edu_content)
SELECT d, $2, $3, $4::jsonb FROM unnest($1::text[]) AS d`

// EnqueueEDU queues an EDU (its edu_type and its content, a JSON object) for
// each of destinations, at time ts (ms). Content that is not JSON is
// refused by PostgreSQL and nothing is queued.
func (q *Queries) EnqueueEDU(ctx context.Context, destinations []string, eduType string, content []byte, ts int64) error {
	if len(destinations) == 0 {
		return nil
	}
	_, err := q.q.Exec(ctx, enqueueEDUSQL, destinations, ts, eduType, string(content))
	return err
}

// dropQueuedTypingSQL finds the typing EDUs through the partial index of
// migration 016; there are few (PurgeStaleEDUs keeps minutes of them).
const dropQueuedTypingSQL = `
DELETE FROM federation_outbox
WHERE destination = ANY($1) AND edu_type = 'm.typing'
  AND edu_content->>'room_id' = $2 AND edu_content->>'user_id' = $3`

// DropQueuedTyping drops the m.typing EDUs about userID in roomID still
// queued for destinations: a newer one supersedes them.
func (q *Queries) DropQueuedTyping(ctx context.Context, destinations []string, roomID, userID string) error {
	_, err := q.q.Exec(ctx, dropQueuedTypingSQL, destinations, roomID, userID)
	return err
}

// OutboxItem is a queued PDU or EDU for a destination.
type OutboxItem struct {
	ID       int64
	QueuedTS int64
	// EventNID and PDU (the event JSON as stored) are set for a PDU.
	EventNID int64
	PDU      []byte
	// EDUType and EDUContent (a JSON object) are set for an EDU.
	EDUType    string
	EDUContent []byte
}

// IsPDU tells a PDU from an EDU.
func (i OutboxItem) IsPDU() bool { return i.EventNID != 0 }

// outboxBatchSQL returns the longest prefix of the destination's queue that
// holds at most $2 PDUs and $3 EDUs. The queue is cut to its first $2 + $3
// rows before counting, so a long backlog costs no more than a short one.
const outboxBatchSQL = `
WITH head AS (
    SELECT id, queued_ts, event_nid, edu_type, edu_content FROM federation_outbox
    WHERE destination = $1 ORDER BY id LIMIT $2::int + $3::int
), counted AS (
    SELECT *, count(event_nid) OVER w AS pdus, count(edu_type) OVER w AS edus
    FROM head WINDOW w AS (ORDER BY id)
)
SELECT c.id, c.queued_ts, COALESCE(c.event_nid, 0), e.json, COALESCE(c.edu_type, ''), c.edu_content::text
FROM counted c LEFT JOIN events e ON e.event_nid = c.event_nid
WHERE c.pdus <= $2 AND c.edus <= $3
ORDER BY c.id`

// OutboxBatch returns the next items for destination in queue order: as
// many as fit in one transaction of at most maxPDUs PDUs and maxEDUs EDUs,
// with the event JSON of the PDUs. It stops before the first item that
// does not fit, so items are never sent out of order.
func (q *Queries) OutboxBatch(ctx context.Context, destination string, maxPDUs, maxEDUs int) ([]OutboxItem, error) {
	rows, err := q.q.Query(ctx, outboxBatchSQL, destination, maxPDUs, maxEDUs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OutboxItem
	for rows.Next() {
		var it OutboxItem
		var pdu, content *string
		if err := rows.Scan(&it.ID, &it.QueuedTS, &it.EventNID, &pdu, &it.EDUType, &content); err != nil {
			return nil, err
		}
		if pdu != nil {
			it.PDU = []byte(*pdu)
		}
		if content != nil {
			it.EDUContent = []byte(*content)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

const deleteOutboxItemsSQL = `DELETE FROM federation_outbox WHERE destination = $1 AND id = ANY($2)`

// DeleteOutboxItems removes the items of destination that it acknowledged.
func (q *Queries) DeleteOutboxItems(ctx context.Context, destination string, ids []int64) error {
	_, err := q.q.Exec(ctx, deleteOutboxItemsSQL, destination, ids)
	return err
}

// outboxDestinationsSQL lists the distinct destinations by skipping through
// the (destination, id) index, one probe per destination: a destination
// that has been down for days with a long queue costs one probe too.
const outboxDestinationsSQL = `
WITH RECURSIVE d (destination) AS (
    (SELECT destination FROM federation_outbox ORDER BY destination LIMIT 1)
    UNION ALL
    SELECT (SELECT o.destination FROM federation_outbox o WHERE o.destination > d.destination ORDER BY o.destination LIMIT 1)
    FROM d WHERE d.destination IS NOT NULL
)
SELECT destination FROM d WHERE destination IS NOT NULL`

// OutboxDestinations lists the destinations that have queued items, sorted.
func (q *Queries) OutboxDestinations(ctx context.Context) ([]string, error) {
	return q.strings(ctx, outboxDestinationsSQL)
}

// purgeStaleEDUsSQL deletes the typing and presence EDUs queued before $1
// and the receipts queued before $2, through the partial index of
// migration 016 (each arm of the OR implies its predicate).
const purgeStaleEDUsSQL = `
DELETE FROM federation_outbox
WHERE (edu_type IN ('m.typing', 'm.presence') AND queued_ts < $1)
   OR (edu_type = 'm.receipt' AND queued_ts < $2)`

// PurgeStaleEDUs drops, for every destination, the m.typing and m.presence
// EDUs queued before typingBefore and the m.receipt EDUs queued before
// receiptBefore (ms), and says how many it dropped. Other EDUs (to-device
// messages, device list updates) and PDUs are never dropped here.
func (q *Queries) PurgeStaleEDUs(ctx context.Context, typingBefore, receiptBefore int64) (int64, error) {
	tag, err := q.q.Exec(ctx, purgeStaleEDUsSQL, typingBefore, receiptBefore)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

const purgeOutboxSQL = `DELETE FROM federation_outbox WHERE destination = $1`

// PurgeOutbox drops everything queued for destination and says how many
// items it dropped. Nothing calls it on its own: a server the allowlist
// stops admitting keeps its queue (the removal may be undone, or the list
// may merely have expired), and only an administrator can tell that it left
// the federation for good and will never receive what it missed.
func (q *Queries) PurgeOutbox(ctx context.Context, destination string) (int64, error) {
	tag, err := q.q.Exec(ctx, purgeOutboxSQL, destination)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// joinedServersSQL: the server name of a user ID is everything after its
// first colon (it may hold a port, and an IPv6 literal has colons of its own).
const joinedServersSQL = `
SELECT DISTINCT substr(state_key, strpos(state_key, ':') + 1) FROM current_state
WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join' AND strpos(state_key, ':') > 0`

// JoinedServers lists the servers of the room's joined members in its
// current state (ours among them, if a local user is joined), unsorted.
func (q *Queries) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	return q.strings(ctx, joinedServersSQL, roomID)
}

// strings runs a query that returns one text column.
func (q *Queries) strings(ctx context.Context, sql string, args ...any) ([]string, error) {
	rows, err := q.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
