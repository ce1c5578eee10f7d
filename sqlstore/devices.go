package sqlstore

import (
	"context"
)

// Device is a row of devices.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName *string
	CreatedTS   int64
	LastSeenTS  *int64
	LastSeenIP  *string
}

// upsertDeviceSQL creates the device or, for a login that names an existing
// device, keeps it (and its keys, later) while its old tokens are removed by
// the caller. The display name is only set on creation.
const upsertDeviceSQL = `
INSERT INTO devices (user_id, device_id, display_name, created_ts)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, device_id) DO NOTHING`

const deleteDeviceTokensSQL = `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`

// UpsertDevice creates the device if it does not exist and revokes any
// token the device already had (spec: POST /login, device_id).
func (q *Queries) UpsertDevice(ctx context.Context, d Device) error {
	if _, err := q.q.Exec(ctx, upsertDeviceSQL, d.UserID, d.DeviceID, d.DisplayName, d.CreatedTS); err != nil {
		return err
	}
	_, err := q.q.Exec(ctx, deleteDeviceTokensSQL, d.UserID, d.DeviceID)
	return err
}

const selectDevicesSQL = `
SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
FROM devices WHERE user_id = $1 ORDER BY device_id`

// ListDevices returns the user's devices in device ID order.
func (q *Queries) ListDevices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := q.q.Query(ctx, selectDevicesSQL, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		if err := rows.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

const selectDeviceSQL = `
SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
FROM devices WHERE user_id = $1 AND device_id = $2`

// GetDevice returns one device, ErrNotFound if the user has no such device.
func (q *Queries) GetDevice(ctx context.Context, userID, deviceID string) (Device, error) {
	var d Device
	err := q.q.QueryRow(ctx, selectDeviceSQL, userID, deviceID).
		Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP)
	return d, notFound(err)
}

const updateDeviceNameSQL = `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`

// SetDeviceDisplayName renames a device; ErrNotFound if it does not exist.
func (q *Queries) SetDeviceDisplayName(ctx context.Context, userID, deviceID string, name *string) error {
	tag, err := q.q.Exec(ctx, updateDeviceNameSQL, userID, deviceID, name)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

const deleteDevicesSQL = `DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)`

// DeleteDevices removes the listed devices and, by cascade, their tokens.
// Unknown IDs are ignored.
func (q *Queries) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	_, err := q.q.Exec(ctx, deleteDevicesSQL, userID, deviceIDs)
	return err
}

const deleteOtherDevicesSQL = `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2`

// DeleteAllDevices removes every device of the user but except ("" keeps none).
func (q *Queries) DeleteAllDevices(ctx context.Context, userID, except string) error {
	_, err := q.q.Exec(ctx, deleteOtherDevicesSQL, userID, except)
	return err
}

const touchDeviceSQL = `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2`

// TouchDevice records the time and address of the device's latest request.
func (q *Queries) TouchDevice(ctx context.Context, userID, deviceID string, ts int64, ip string) error {
	_, err := q.q.Exec(ctx, touchDeviceSQL, userID, deviceID, ts, ip)
	return err
}
