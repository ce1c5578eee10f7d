// Package mxhttp is the HTTP plumbing shared by the client and federation
// APIs: JSON bodies in and out, Matrix errors on the wire, and the middleware
// every request goes through (request id, access log, panic guard, CORS).
package mxhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/rs/zerolog"

	"chappe/mxerr"
)

// WriteJSON answers with status and body as JSON.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		// Only a programming error can get here (a type that does not marshal).
		status = http.StatusInternalServerError
		data = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// WriteError answers with err: a *mxerr.Error as itself (with Retry-After for
// M_LIMIT_EXCEEDED), anything else as an opaque 500 that is logged with the
// request id but never shown to the client.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	// Errors with a body of their own, such as the 401 of user-interactive auth.
	var custom interface {
		error
		Status() int
	}
	if e, ok := mxerr.As(err); !ok && errors.As(err, &custom) {
		WriteJSON(w, custom.Status(), custom)
		return
	} else if ok {
		if e.Code == mxerr.LimitExceeded && e.RetryAfterMs > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMs+999)/1000, 10))
		}
		WriteJSON(w, e.Status(), e)
		return
	}
	zerolog.Ctx(r.Context()).Error().Err(err).Msg("internal error")
	WriteJSON(w, http.StatusInternalServerError, &mxerr.Error{
		Code: mxerr.Unknown, Message: "Internal server error; the request id in the server log has the details",
	})
}

// ErrEmptyBody is returned by ReadBody for an empty body when the caller did
// not allow one.
var errEmptyBody = mxerr.New(mxerr.NotJSON, "The request body is empty; a JSON object was expected")

// ReadBody reads the whole request body, at most limit bytes (413 M_TOO_LARGE
// beyond that).
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, mxerr.New(mxerr.BadJSON, "Could not read the request body: %v", err)
	}
	if int64(len(data)) > limit {
		return nil, tooLarge(limit)
	}
	return data, nil
}

func tooLarge(limit int64) error {
	return mxerr.New(mxerr.TooLarge, "The request body is larger than the %d bytes this server accepts", limit)
}

// DecodeJSON reads a JSON object from the body into dst, distinguishing the
// spec's cases: not JSON at all (M_NOT_JSON), JSON but not an object or with a
// field of the wrong type (M_BAD_JSON), too big (M_TOO_LARGE). If allowEmpty,
// an empty body is taken as {}.
func DecodeJSON(r *http.Request, limit int64, allowEmpty bool, dst any) error {
	data, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	return UnmarshalObject(data, allowEmpty, dst)
}

// UnmarshalObject is DecodeJSON's checks on bytes already read.
func UnmarshalObject(data []byte, allowEmpty bool, dst any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		if allowEmpty {
			return nil
		}
		return errEmptyBody
	}
	if !json.Valid(trimmed) {
		return mxerr.New(mxerr.NotJSON, "The request body is not valid JSON")
	}
	if bytes.Contains(trimmed, []byte(`\u0000`)) {
		// PostgreSQL cannot store NUL characters in text or JSON.
		return mxerr.New(mxerr.BadJSON, "NUL characters (\\u0000) are not allowed in the request body")
	}
	if trimmed[0] != '{' {
		return mxerr.New(mxerr.BadJSON, "The request body must be a JSON object")
	}
	if err := json.Unmarshal(trimmed, dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			field := typeErr.Field
			if field == "" {
				field = "(body)"
			}
			return mxerr.New(mxerr.BadJSON, "Field %q must be of type %s, not %s", field, jsonTypeName(typeErr.Type.Kind().String()), typeErr.Value)
		}
		return mxerr.New(mxerr.BadJSON, "The request body does not have the expected shape: %v", err)
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	}
	return kind
}
