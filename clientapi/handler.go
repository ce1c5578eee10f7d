package clientapi

import (
	"net/http"

	"chappe/mxhttp"
)

// empty is the {} answer of endpoints that return nothing.
var empty = struct{}{}

// handleJSON is the shape most endpoints share: decode the JSON body into B
// (an empty body is {} when allowEmpty), run fn, answer 200 with its result
// or with the Matrix error it returned.
func handleJSON[B any](a *API, allowEmpty bool, fn func(r *http.Request, body *B) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body B
		if err := a.decode(r, allowEmpty, &body); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		answer(w, r, func() (any, error) { return fn(r, &body) })
	}
}

// handle is handleJSON for endpoints without a request body.
func handle(fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		answer(w, r, func() (any, error) { return fn(r) })
	}
}

func answer(w http.ResponseWriter, r *http.Request, fn func() (any, error)) {
	out, err := fn()
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, out)
}
