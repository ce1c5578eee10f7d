// Package mxerr holds the Matrix error type and the one table that maps each
// Matrix error code to its HTTP status.
//
// Spec: client-server-api/_index.md, "Standard error response" and
// "Common error codes". Every component returns *Error for failures a client or
// a remote server should see; anything else is an internal error and is shown
// as a 500 M_UNKNOWN without detail.
package mxerr

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a Matrix error code such as M_FORBIDDEN.
type Code string

// The error codes Chappe uses. Spec: client-server-api/_index.md, "Common error codes"
// and "Other error codes".
const (
	Forbidden             Code = "M_FORBIDDEN"
	UnknownToken          Code = "M_UNKNOWN_TOKEN"
	MissingToken          Code = "M_MISSING_TOKEN"
	UserLocked            Code = "M_USER_LOCKED"
	UserSuspended         Code = "M_USER_SUSPENDED"
	BadJSON               Code = "M_BAD_JSON"
	NotJSON               Code = "M_NOT_JSON"
	NotFound              Code = "M_NOT_FOUND"
	LimitExceeded         Code = "M_LIMIT_EXCEEDED"
	Unrecognized          Code = "M_UNRECOGNIZED"
	Unknown               Code = "M_UNKNOWN"
	Unauthorized          Code = "M_UNAUTHORIZED"
	UserDeactivated       Code = "M_USER_DEACTIVATED"
	UserInUse             Code = "M_USER_IN_USE"
	InvalidUsername       Code = "M_INVALID_USERNAME"
	RoomInUse             Code = "M_ROOM_IN_USE"
	InvalidRoomState      Code = "M_INVALID_ROOM_STATE"
	UnsupportedRoomVer    Code = "M_UNSUPPORTED_ROOM_VERSION"
	IncompatibleRoomVer   Code = "M_INCOMPATIBLE_ROOM_VERSION"
	BadState              Code = "M_BAD_STATE"
	GuestAccessForbidden  Code = "M_GUEST_ACCESS_FORBIDDEN"
	MissingParam          Code = "M_MISSING_PARAM"
	InvalidParam          Code = "M_INVALID_PARAM"
	TooLarge              Code = "M_TOO_LARGE"
	Exclusive             Code = "M_EXCLUSIVE"
	WeakPassword          Code = "M_WEAK_PASSWORD"
	ServerNotTrusted      Code = "M_SERVER_NOT_TRUSTED"
	ProfileTooLarge       Code = "M_PROFILE_TOO_LARGE"
	KeyTooLarge           Code = "M_KEY_TOO_LARGE"
	WrongRoomKeysVersion  Code = "M_WRONG_ROOM_KEYS_VERSION"
	ResourceLimitExceeded Code = "M_RESOURCE_LIMIT_EXCEEDED"
	ThreepidDenied        Code = "M_THREEPID_DENIED"
	NotYetUploaded        Code = "M_NOT_YET_UPLOADED"
	CannotOverwriteMedia  Code = "M_CANNOT_OVERWRITE_MEDIA"
	BadAlias              Code = "M_BAD_ALIAS"
	InvalidSignature      Code = "M_INVALID_SIGNATURE"
)

// statusByCode is the one table from Matrix error code to HTTP status.
// A code missing here is a programming error and is answered with 500.
var statusByCode = map[Code]int{
	Forbidden:             http.StatusForbidden,
	UnknownToken:          http.StatusUnauthorized,
	MissingToken:          http.StatusUnauthorized,
	UserLocked:            http.StatusUnauthorized,
	UserSuspended:         http.StatusForbidden,
	Unauthorized:          http.StatusUnauthorized,
	BadJSON:               http.StatusBadRequest,
	NotJSON:               http.StatusBadRequest,
	NotFound:              http.StatusNotFound,
	LimitExceeded:         http.StatusTooManyRequests,
	Unrecognized:          http.StatusNotFound, // 405 is chosen by MethodNotAllowed
	Unknown:               http.StatusBadRequest,
	UserDeactivated:       http.StatusForbidden,
	UserInUse:             http.StatusBadRequest,
	InvalidUsername:       http.StatusBadRequest,
	RoomInUse:             http.StatusBadRequest,
	InvalidRoomState:      http.StatusBadRequest,
	UnsupportedRoomVer:    http.StatusBadRequest,
	IncompatibleRoomVer:   http.StatusBadRequest,
	BadState:              http.StatusBadRequest,
	GuestAccessForbidden:  http.StatusForbidden,
	MissingParam:          http.StatusBadRequest,
	InvalidParam:          http.StatusBadRequest,
	TooLarge:              http.StatusRequestEntityTooLarge,
	Exclusive:             http.StatusBadRequest,
	WeakPassword:          http.StatusBadRequest,
	ServerNotTrusted:      http.StatusBadRequest,
	ProfileTooLarge:       http.StatusBadRequest,
	KeyTooLarge:           http.StatusBadRequest,
	WrongRoomKeysVersion:  http.StatusForbidden,
	ResourceLimitExceeded: http.StatusForbidden,
	ThreepidDenied:        http.StatusForbidden,
	NotYetUploaded:        http.StatusGatewayTimeout,
	CannotOverwriteMedia:  http.StatusConflict,
	BadAlias:              http.StatusBadRequest,
	InvalidSignature:      http.StatusBadRequest,
}

// Status returns the HTTP status for code, 500 if the code is not in the table.
func Status(code Code) int {
	if s, ok := statusByCode[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error is a Matrix error: a code, a message a person understands, and the
// few extra fields some codes carry.
type Error struct {
	Code    Code   `json:"errcode"`
	Message string `json:"error"`
	// HTTPStatus overrides the table for the rare code whose status depends on
	// the endpoint (405 M_UNRECOGNIZED, 500 M_UNKNOWN). Zero means "use the table".
	HTTPStatus int `json:"-"`
	// RetryAfterMs is set on M_LIMIT_EXCEEDED.
	RetryAfterMs int64 `json:"retry_after_ms,omitempty"`
	// SoftLogout is set on M_UNKNOWN_TOKEN when the session may be resumed.
	SoftLogout bool `json:"soft_logout,omitempty"`
	// RoomVersion is set on M_INCOMPATIBLE_ROOM_VERSION (make_join, invite).
	RoomVersion string `json:"room_version,omitempty"`
}

// WithStatus overrides the table's HTTP status (e.g. 502 when another
// server failed us).
func (e *Error) WithStatus(status int) *Error { e.HTTPStatus = status; return e }

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Status is the HTTP status to answer e with.
func (e *Error) Status() int {
	if e.HTTPStatus != 0 {
		return e.HTTPStatus
	}
	return Status(e.Code)
}

// New returns an error with the code and a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// As returns the *Error inside err, if there is one.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}
