package accounts

import (
	"context"
	"errors"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Device is a device as the client API shows it.
// Spec: "Device Management", the Device object.
type Device struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  *string `json:"last_seen_ip,omitempty"`
	LastSeenTS  *int64  `json:"last_seen_ts,omitempty"`
}

func toDevice(d sqlstore.Device) Device {
	return Device{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// ListDevices returns the user's devices.
func (s *Service) ListDevices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(rows))
	for _, d := range rows {
		out = append(out, toDevice(d))
	}
	return out, nil
}

// GetDevice returns one of the user's devices, 404 M_NOT_FOUND if none.
func (s *Service) GetDevice(ctx context.Context, userID, deviceID string) (Device, error) {
	d, err := s.store.GetDevice(ctx, userID, deviceID)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return Device{}, mxerr.New(mxerr.NotFound, "You have no device with ID %q", deviceID)
	}
	if err != nil {
		return Device{}, err
	}
	return toDevice(d), nil
}

// RenameDevice changes a device's display name (nil leaves it unchanged).
func (s *Service) RenameDevice(ctx context.Context, userID, deviceID string, name *string) error {
	if name == nil {
		_, err := s.GetDevice(ctx, userID, deviceID)
		return err
	}
	if len(*name) > 1000 {
		return mxerr.New(mxerr.InvalidParam, "display_name is longer than 1000 bytes")
	}
	err := s.store.SetDeviceDisplayName(ctx, userID, deviceID, name)
	if errors.Is(err, sqlstore.ErrNotFound) {
		return mxerr.New(mxerr.NotFound, "You have no device with ID %q", deviceID)
	}
	return err
}

// DeleteDevices deletes devices (after UIA): their tokens stop working at once.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	defer s.forgetSessions(userID)
	return s.store.DeleteDevices(ctx, userID, deviceIDs)
}
