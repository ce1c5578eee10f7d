package clientapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"chappe/media"
	"chappe/mxerr"
	"chappe/mxhttp"
)

// Media is what the client API needs from the content repository.
type Media interface {
	MaxUploadBytes() int64
	Upload(ctx context.Context, u media.Upload) (string, error)
	Create(ctx context.Context, userID string) (media.Created, error)
	UploadTo(ctx context.Context, serverName, mediaID string, u media.Upload) error
	Open(ctx context.Context, serverName, mediaID string, opts media.OpenOptions) (*media.Content, error)
	Thumbnail(ctx context.Context, serverName, mediaID string, req media.ThumbnailRequest, opts media.OpenOptions) (*media.Content, error)
	Preview(ctx context.Context, rawURL string) (map[string]any, error)
	Quarantine(ctx context.Context, serverName, mediaID, byUserID string) error
	Delete(ctx context.Context, serverName, mediaID string) error
}

// mediaRoutes are the content repository's endpoints that need an access
// token: uploads (still under /_matrix/media), the authenticated downloads of
// Matrix 1.11 under /_matrix/client/v1/media, and the admin endpoints.
// Spec: content-repo.yaml and authed-content-repo.yaml.
func (a *API) mediaRoutes(r chi.Router) {
	r.Post("/_matrix/media/v3/upload", a.uploadMedia)
	r.Post("/_matrix/media/v1/create", a.createMedia)
	r.Put("/_matrix/media/v3/upload/{serverName}/{mediaId}", a.uploadMediaTo)
	r.Get("/_matrix/client/v1/media/config", a.mediaConfig)
	r.Get("/_matrix/media/v3/config", a.mediaConfig)
	r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}", a.downloadMedia(false))
	r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", a.downloadMedia(false))
	r.Get("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", a.thumbnailMedia(false))
	r.Get("/_matrix/client/v1/media/preview_url", a.previewURL)
	r.Get("/_matrix/media/v3/preview_url", a.previewURL)
	// Synapse-compatible admin API.
	r.Post("/_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}", a.quarantineMedia)
	r.Delete("/_synapse/admin/v1/media/{serverName}/{mediaId}", a.deleteMedia)
}

// legacyMediaRoutes are the deprecated unauthenticated downloads, which serve
// only media uploaded before the freeze (media.legacy_download_cutoff).
// Spec: content_repo.md, "Client behaviour" (the freeze warning).
func (a *API) legacyMediaRoutes(r chi.Router) {
	r.Get("/_matrix/media/v3/download/{serverName}/{mediaId}", a.downloadMedia(true))
	r.Get("/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}", a.downloadMedia(true))
	r.Get("/_matrix/media/v3/thumbnail/{serverName}/{mediaId}", a.thumbnailMedia(true))
}

// mediaUpload is the upload carried by a request. The body is not JSON and
// has its own size limit, media.max_upload_bytes, enforced while it is read.
func mediaUpload(r *http.Request) media.Upload {
	return media.Upload{
		UserID:        session(r).UserID,
		ContentType:   r.Header.Get("Content-Type"),
		FileName:      r.URL.Query().Get("filename"),
		Body:          r.Body,
		ContentLength: r.ContentLength,
	}
}

// uploadMedia stores a file. Spec: POST /_matrix/media/v3/upload.
func (a *API) uploadMedia(w http.ResponseWriter, r *http.Request) {
	uri, err := a.media.Upload(r.Context(), mediaUpload(r))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": uri})
}

// createMedia hands out an mxc:// URI to upload to later.
// Spec: POST /_matrix/media/v1/create.
func (a *API) createMedia(w http.ResponseWriter, r *http.Request) {
	created, err := a.media.Create(r.Context(), session(r).UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, created)
}

// uploadMediaTo fills an mxc:// URI from /create.
// Spec: PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
func (a *API) uploadMediaTo(w http.ResponseWriter, r *http.Request) {
	if err := a.media.UploadTo(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), mediaUpload(r)); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// mediaConfig tells clients the upload limit.
// Spec: GET /_matrix/client/v1/media/config.
func (a *API) mediaConfig(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]int64{"m.upload.size": a.media.MaxUploadBytes()})
}

// downloadMedia serves a file.
// Spec: GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
// and, when legacy, the deprecated /_matrix/media/v3/download.
func (a *API) downloadMedia(legacy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		wait, err := media.ParseWait(r.URL.Query().Get("timeout_ms"))
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		c, err := a.media.Open(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), media.OpenOptions{Legacy: legacy, Wait: wait})
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		defer c.File.Close()
		name := c.FileName
		if override := pathParam(r, "fileName"); override != "" {
			name = override
		}
		serveMedia(w, r, c, name)
	}
}

// serveMedia writes the content with the safe headers; ranges and
// conditional requests are handled by http.ServeContent.
func serveMedia(w http.ResponseWriter, r *http.Request, c *media.Content, fileName string) {
	media.SetHeaders(w.Header(), c, fileName)
	http.ServeContent(w, r, "", c.Modified, c.File)
}

// thumbnailMedia serves a thumbnail.
// Spec: GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} and,
// when legacy, the deprecated /_matrix/media/v3/thumbnail.
func (a *API) thumbnailMedia(legacy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, wait, err := media.ParseThumbnailQuery(r.URL.Query())
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		c, err := a.media.Thumbnail(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), req, media.OpenOptions{Legacy: legacy, Wait: wait})
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		defer c.File.Close()
		serveMedia(w, r, c, c.FileName)
	}
}

// previewURL returns the OpenGraph data of a web page, when enabled.
// Spec: GET /_matrix/client/v1/media/preview_url.
func (a *API) previewURL(w http.ResponseWriter, r *http.Request) {
	u := r.URL.Query().Get("url")
	if u == "" {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.MissingParam, "The url query parameter is required"))
		return
	}
	p, err := a.media.Preview(r.Context(), u)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, p)
}

func requireAdmin(r *http.Request) error {
	if !session(r).IsAdmin {
		return mxerr.New(mxerr.Forbidden, "Only server administrators may do this")
	}
	return nil
}

// quarantineMedia stops serving a media (Synapse admin API:
// POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}).
func (a *API) quarantineMedia(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.media.Quarantine(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), session(r).UserID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// deleteMedia removes a media and its files (Synapse admin API:
// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}).
func (a *API) deleteMedia(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	id := pathParam(r, "mediaId")
	if err := a.media.Delete(r.Context(), pathParam(r, "serverName"), id); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"deleted_media": []string{id}, "total": 1})
}
