package federation

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"chappe/allowlist"
	"chappe/mxerr"
	"chappe/mxhttp"
	"chappe/roomserver"
)

// remoteDirectoryLimit is the page size asked of another server when our
// client names none: over federation, no limit means every room.
const remoteDirectoryLimit = 100

// directoryServed lets the /publicRooms requests through only when
// federation.serve_public_rooms is on; otherwise 403 M_FORBIDDEN (the spec
// lets a server keep its directory to itself), before the request is
// even read.
func (e *QueryEndpoints) directoryServed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !e.cfg.ServePublicRooms {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.Forbidden, "This server does not publish its room directory over federation"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// publicRoomsGet answers GET /publicRooms?limit=…&since=…: a page of our
// published rooms. We bridge no third-party networks, so
// include_all_networks and third_party_instance_id change nothing.
// Spec: server-server-api.md, "Public Room Directory", GET /publicRooms.
func (e *QueryEndpoints) publicRoomsGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := roomserver.PublicRoomsRequest{Since: q.Get("since")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			mxhttp.WriteError(w, r, mxerr.New(mxerr.InvalidParam, "limit must be a non-negative integer"))
			return
		}
		req.Limit = n
	}
	e.answerPublicRooms(w, r, req)
}

// publicRoomsPost answers POST /publicRooms: the same, filtered.
// Spec: server-server-api.md, "Public Room Directory", POST /publicRooms.
func (e *QueryEndpoints) publicRoomsPost(w http.ResponseWriter, r *http.Request) {
	var req roomserver.PublicRoomsRequest
	if err := mxhttp.DecodeJSON(r, e.cfg.MaxRequestBytes, true, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	e.answerPublicRooms(w, r, req)
}

// answerPublicRooms is the page our own clients would see.
func (e *QueryEndpoints) answerPublicRooms(w http.ResponseWriter, r *http.Request, req roomserver.PublicRoomsRequest) {
	resp, err := e.directory.PublicRooms(r.Context(), req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// PublicRooms asks another server for a page of its published rooms: GET
// without a filter, POST with one.
// Spec: server-server-api.md, "Public Room Directory", called for
// GET/POST /_matrix/client/v3/publicRooms?server=….
func (q *RemoteQueries) PublicRooms(ctx context.Context, server string, req roomserver.PublicRoomsRequest) (roomserver.PublicRoomsResponse, error) {
	var out roomserver.PublicRoomsResponse
	if err := allowlist.ValidServerName(server); err != nil {
		return out, mxerr.New(mxerr.InvalidParam, "server: %v", err)
	}
	if err := req.Check(); err != nil {
		return out, err
	}
	if req.Limit == 0 {
		req.Limit = remoteDirectoryLimit
	}
	const path = "/_matrix/federation/v1/publicRooms"
	call := Request{Destination: server, Method: http.MethodGet, Path: path, MaxResponseBytes: maxDirectoryAnswer,
		Query: url.Values{"limit": {strconv.Itoa(req.Limit)}}}
	if req.Since != "" {
		call.Query.Set("since", req.Since)
	}
	if req.Filter.Search != "" || req.Filter.RoomTypes != nil {
		call.Method, call.Query, call.Body = http.MethodPost, nil, req
	}
	if err := q.c.Do(ctx, call, &out); err != nil {
		return roomserver.PublicRoomsResponse{}, MatrixError(server, err)
	}
	if out.Chunk == nil {
		out.Chunk = []roomserver.PublicRoomsChunk{}
	}
	return out, nil
}
