package e2ee

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"chappe/mxerr"
	"chappe/sqlstore"
	"chappe/streams"
)

// txnRetention is how long a to-device transaction ID is remembered.
const txnRetention = 7 * 24 * time.Hour

// SendToDevice delivers the messages (recipient user → device ID or "*" →
// content) from sender's device, once per transaction ID of the device and
// event type: a retried request is a no-op. "*" means every device of the
// user not named on its own. Unknown devices are skipped. Messages for
// remote users are queued, in the same transaction, as one
// m.direct_to_device EDU per server (toRemote). Spec: PUT
// /sendToDevice/{eventType}/{txnId}, send_to_device.md; server-server-api.md,
// "Send-to-device messaging".
func (s *Service) SendToDevice(ctx context.Context, sender, senderDevice, evType, txnID string, messages map[string]map[string]json.RawMessage) error {
	if evType == "" || txnID == "" {
		return mxerr.New(mxerr.InvalidParam, "The event type and the transaction ID must not be empty")
	}
	var msgs []sqlstore.ToDeviceMessage
	remote := map[string]map[string]map[string]json.RawMessage{} // server → user → device → content
	for _, userID := range sortedKeys(messages) {
		server, ok := serverOf(userID)
		if !ok {
			return mxerr.New(mxerr.InvalidParam, "messages: %q is not a user ID", userID)
		}
		for _, deviceID := range sortedKeys(messages[userID]) {
			content := messages[userID][deviceID]
			if !strings.HasPrefix(strings.TrimSpace(string(content)), "{") {
				return mxerr.New(mxerr.BadJSON, "messages.%s.%s must be a JSON object", userID, deviceID)
			}
			c, err := canonical(content)
			if err != nil {
				return err
			}
			if server != s.cfg.ServerName {
				if remote[server] == nil {
					remote[server] = map[string]map[string]json.RawMessage{}
				}
				if remote[server][userID] == nil {
					remote[server][userID] = map[string]json.RawMessage{}
				}
				remote[server][userID][deviceID] = c
				continue
			}
			msgs = append(msgs, sqlstore.ToDeviceMessage{UserID: userID, DeviceID: deviceID, Content: string(c)})
		}
	}
	log := zerolog.Ctx(ctx)
	var dropped int64
	err := s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		now := s.now()
		err := q.ClaimToDeviceTxn(ctx, sender, senderDevice, evType, txnID, now.UnixMilli(), now.Add(-txnRetention).UnixMilli())
		if errors.Is(err, sqlstore.ErrConflict) {
			return false, streams.Change{}, nil // a retry: already delivered
		}
		if err == nil {
			err = s.toRemote(ctx, q, sender, evType, remote)
		}
		if err != nil || len(msgs) == 0 {
			return false, streams.Change{}, err
		}
		delivered, n, err := q.InsertToDevice(ctx, pos, sender, evType, msgs, s.cfg.MaxPendingToDevice)
		if err != nil || len(delivered) == 0 {
			return false, streams.Change{}, err
		}
		dropped = n
		users := map[string]bool{}
		for _, d := range delivered {
			users[d.UserID] = true
		}
		return true, streams.Change{Users: sortedKeys(users), Kind: streams.KindToDevice}, nil
	})
	if err == nil && dropped > 0 {
		log.Warn().Int64("dropped", dropped).Int("max_pending", s.cfg.MaxPendingToDevice).
			Msg("to-device queue of a device full: oldest messages dropped")
	}
	return err
}

// toRemote queues the messages for remote users (server → user → device →
// content), one m.direct_to_device EDU per server, with a message_id of its
// own. Messages for a server outside the allowlist (or for any server when
// federation is off) are dropped and logged: PUT /sendToDevice has no way
// to report a recipient's failure (its answer is an empty object), and the
// design forbids any traffic with such a server.
func (s *Service) toRemote(ctx context.Context, q *sqlstore.Queries, sender, evType string, remote map[string]map[string]map[string]json.RawMessage) error {
	for _, server := range sortedKeys(remote) {
		if s.fed == nil || !s.fed.Allowed(server) {
			zerolog.Ctx(ctx).Warn().Str("server", server).Str("type", evType).
				Msg("to-device messages for a server outside the federation dropped")
			continue
		}
		id, err := newMessageID()
		if err != nil {
			return err
		}
		edu := DirectToDevice{Sender: sender, Type: evType, MessageID: id, Messages: remote[server]}
		if err := s.fed.QueueEDU(ctx, q, []string{server}, EDUDirectToDevice, edu); err != nil {
			return err
		}
	}
	return nil
}

// newMessageID is a random message_id for an m.direct_to_device EDU.
func newMessageID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ReceiveToDevice delivers an m.direct_to_device EDU from origin (whose
// sender the caller checked is of origin) to the local devices it names
// ("*": all of the user's devices), once: its message_id is remembered per
// origin and sender for txnRetention, so the same message received again,
// in a retried transaction or a new one, is not delivered twice. Recipients
// that are not local users are skipped.
func (s *Service) ReceiveToDevice(ctx context.Context, origin string, m DirectToDevice) error {
	var msgs []sqlstore.ToDeviceMessage
	for _, userID := range sortedKeys(m.Messages) {
		if !s.isLocal(userID) {
			continue
		}
		for _, deviceID := range sortedKeys(m.Messages[userID]) {
			c, err := canonical(m.Messages[userID][deviceID])
			if err != nil {
				return err
			}
			msgs = append(msgs, sqlstore.ToDeviceMessage{UserID: userID, DeviceID: deviceID, Content: string(c)})
		}
	}
	return s.inStream(ctx, func(q *sqlstore.Queries, pos int64) (bool, streams.Change, error) {
		now := s.now()
		err := q.ClaimToDeviceMessageID(ctx, origin, m.Sender, m.MessageID, now.UnixMilli(), now.Add(-txnRetention).UnixMilli())
		if errors.Is(err, sqlstore.ErrConflict) {
			return false, streams.Change{}, nil // delivered already
		}
		if err != nil || len(msgs) == 0 {
			return false, streams.Change{}, err
		}
		delivered, _, err := q.InsertToDevice(ctx, pos, m.Sender, m.Type, msgs, s.cfg.MaxPendingToDevice)
		if err != nil || len(delivered) == 0 {
			return false, streams.Change{}, err
		}
		users := map[string]bool{}
		for _, d := range delivered {
			users[d.UserID] = true
		}
		return true, streams.Change{Users: sortedKeys(users), Kind: streams.KindToDevice}, nil
	})
}

// toDeviceEvent is a to-device message as /sync shows it.
type toDeviceEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// ToDeviceSince returns the device's to-device messages in (from, to], in
// order, for /sync. A sync with since = from acknowledges every message at
// or before from: they are deleted first, so a message is returned until the
// client shows, by its next since, that it got it.
//
// It costs no query when nothing is to do: the messages are read only if
// the Hub saw some for the user after from (or cannot tell, after a
// restart), and deleted only then or when a message returned earlier awaits
// its acknowledgement. With to = from it only acknowledges: /sync calls it
// so at its start, as a long-poll may end without reading anything.
func (s *Service) ToDeviceSince(ctx context.Context, userID, deviceID string, from, to int64) ([]json.RawMessage, error) {
	key := userID + "\x00" + deviceID
	fresh := from == 0 || s.hub.ChangedSince(streams.KindToDevice, userID, from)
	s.mu.Lock()
	pending, awaiting := s.unacked[key]
	s.mu.Unlock()
	acked := awaiting && pending <= from
	if from > 0 && (fresh || acked) {
		if err := s.store.DeleteAckedToDevice(ctx, userID, deviceID, from); err != nil {
			return nil, err
		}
		if acked {
			s.mu.Lock()
			if s.unacked[key] == pending {
				delete(s.unacked, key)
			}
			s.mu.Unlock()
		}
	}
	if !fresh || to <= from {
		return []json.RawMessage{}, nil
	}
	msgs, err := s.store.ToDeviceInRange(ctx, userID, deviceID, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(msgs))
	var highest int64
	for _, m := range msgs {
		raw, err := json.Marshal(toDeviceEvent{Sender: m.Sender, Type: m.Type, Content: json.RawMessage(m.Content)})
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
		highest = max(highest, m.StreamPos)
	}
	if highest > 0 {
		s.mu.Lock()
		s.unacked[key] = max(s.unacked[key], highest)
		s.mu.Unlock()
	}
	return out, nil
}
