package push

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"sort"
	"strings"
	"unicode/utf8"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Pusher is a pusher as GET /pushers shows it.
type Pusher struct {
	Pushkey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// SetPusherRequest is the body of POST /pushers/set. Kind nil deletes.
type SetPusherRequest struct {
	Pushkey           *string         `json:"pushkey"`
	Kind              json.RawMessage `json:"kind"` // a string, or null to delete; absent is an error
	AppID             *string         `json:"app_id"`
	AppDisplayName    *string         `json:"app_display_name"`
	DeviceDisplayName *string         `json:"device_display_name"`
	ProfileTag        *string         `json:"profile_tag"`
	Lang              *string         `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

// Limits of pusher fields (spec: POST /pushers/set).
const (
	maxPushkeyBytes = 512
	maxAppIDChars   = 64
)

// gatewayPath is the path every HTTP pusher URL must have (spec: PusherData.url).
const gatewayPath = "/_matrix/push/v1/notify"

// Pushers lists the user's pushers. Spec: GET /pushers.
func (s *Service) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := s.store.Pushers(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Pusher, 0, len(rows))
	for _, p := range rows {
		v := Pusher{Pushkey: p.Pushkey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, Lang: p.Lang, Data: json.RawMessage(p.Data)}
		if p.ProfileTag != nil {
			v.ProfileTag = *p.ProfileTag
		}
		out = append(out, v)
	}
	return out, nil
}

// SetPusher creates, updates or (kind null) deletes the user's pusher
// identified by app_id and pushkey; without append, the same app_id and
// pushkey are removed from every other user. Spec: POST /pushers/set.
func (s *Service) SetPusher(ctx context.Context, userID, deviceID string, req SetPusherRequest) error {
	var missing []string
	if req.AppID == nil {
		missing = append(missing, "app_id")
	}
	if req.Pushkey == nil {
		missing = append(missing, "pushkey")
	}
	kindRaw := bytes.TrimSpace(req.Kind)
	if len(kindRaw) == 0 {
		missing = append(missing, "kind")
	}
	deleting := bytes.Equal(kindRaw, []byte("null"))
	if len(kindRaw) > 0 && !deleting {
		for name, v := range map[string]*string{"app_display_name": req.AppDisplayName, "device_display_name": req.DeviceDisplayName, "lang": req.Lang} {
			if v == nil {
				missing = append(missing, name)
			}
		}
		if len(bytes.TrimSpace(req.Data)) == 0 || bytes.Equal(bytes.TrimSpace(req.Data), []byte("null")) {
			missing = append(missing, "data")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return mxerr.New(mxerr.MissingParam, "Missing parameters: %s", strings.Join(missing, ", "))
	}
	appID, pushkey := *req.AppID, *req.Pushkey
	if appID == "" || utf8.RuneCountInString(appID) > maxAppIDChars {
		return mxerr.New(mxerr.InvalidParam, "app_id must be 1 to %d characters long", maxAppIDChars)
	}
	if pushkey == "" || len(pushkey) > maxPushkeyBytes {
		return mxerr.New(mxerr.InvalidParam, "pushkey must be 1 to %d bytes long", maxPushkeyBytes)
	}
	if deleting {
		return s.store.DeletePusher(ctx, userID, appID, pushkey)
	}
	var kind string
	if json.Unmarshal(kindRaw, &kind) != nil {
		return mxerr.New(mxerr.InvalidParam, "kind must be a string or null")
	}
	switch kind {
	case "http":
	case "email":
		return mxerr.New(mxerr.InvalidParam, "This server does not send email notifications; use an http pusher")
	default:
		return mxerr.New(mxerr.InvalidParam, "Unknown pusher kind %q: this server supports http pushers", kind)
	}
	data, err := checkPusherData(req.Data)
	if err != nil {
		return err
	}
	p := sqlstore.Pusher{
		UserID: userID, AppID: appID, Pushkey: pushkey, Kind: kind,
		AppDisplayName: *req.AppDisplayName, DeviceDisplayName: *req.DeviceDisplayName, ProfileTag: req.ProfileTag,
		Lang: *req.Lang, Data: data, DeviceID: deviceID, CreatedTS: s.now().UnixMilli(),
		// Only notifications after the pusher was set are delivered.
		LastStreamPos: s.hub.Current().Stream,
	}
	s.delivery.addOwner(userID)
	return s.store.InTx(ctx, func(q *sqlstore.Queries) error {
		if !req.Append {
			if err := q.DeleteOtherUsersPushers(ctx, appID, pushkey, userID); err != nil {
				return err
			}
		}
		return q.PutPusher(ctx, p)
	})
}

// checkPusherData validates an http pusher's data: an object whose url is
// an http(s) URL with the path /_matrix/push/v1/notify, and whose format,
// if given, is event_id_only. It returns the data compacted.
func checkPusherData(raw json.RawMessage) (string, error) {
	var data map[string]json.RawMessage
	if json.Unmarshal(raw, &data) != nil || data == nil {
		return "", mxerr.New(mxerr.InvalidParam, "data must be a JSON object")
	}
	var u string
	if json.Unmarshal(data["url"], &u) != nil || u == "" {
		return "", mxerr.New(mxerr.MissingParam, "data.url is required for an http pusher")
	}
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
		return "", mxerr.New(mxerr.InvalidParam, "data.url must be an https URL")
	}
	if parsed.Path != gatewayPath {
		return "", mxerr.New(mxerr.InvalidParam, "data.url must have the path %s", gatewayPath)
	}
	if f, ok := data["format"]; ok {
		var format string
		if json.Unmarshal(f, &format) != nil || format != "event_id_only" {
			return "", mxerr.New(mxerr.InvalidParam, `data.format must be "event_id_only" when given`)
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", mxerr.New(mxerr.InvalidParam, "data must be a JSON object")
	}
	return buf.String(), nil
}
