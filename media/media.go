// Package media is the content repository: uploads (direct and asynchronous),
// downloads, thumbnails, per-user quota, quarantine and deletion, the headers
// that make serving user files safe, and the URL preview fetcher.
//
// Files are stored once per content under the media directory, named by their
// SHA-256; their metadata is in PostgreSQL. Other servers' media is fetched
// through a Fetcher (the federation client, behind the allowlist gate) and
// cached here the same way (remote.go).
//
// Spec: client-server-api/modules/content_repo.md, with the endpoints of
// data/api/client-server/content-repo.yaml and authed-content-repo.yaml.
package media

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"chappe/mxerr"
	"chappe/sqlstore"
)

// Config is what the content repository needs from the configuration.
type Config struct {
	ServerName string
	// Dir holds the files (data_dir/media unless media.path says otherwise).
	Dir string
	// MaxUploadBytes caps one upload: 413 M_TOO_LARGE beyond.
	MaxUploadBytes int64
	// UserQuotaBytes caps the total size of one user's uploads; 0: no quota.
	UserQuotaBytes int64
	// MaxImagePixels: images with more pixels (width × height, read from the
	// header) are never decoded, so a decompression bomb costs nothing.
	MaxImagePixels int64
	// LegacyCutoff: media uploaded before it stays downloadable through the
	// deprecated unauthenticated /_matrix/media/v3 endpoints. Zero: none is.
	LegacyCutoff time.Time
	// PendingLifetime is how long an mxc:// URI from /create awaits its content.
	PendingLifetime time.Duration
	// MaxPendingUploads is how many awaited uploads one user may have at once.
	MaxPendingUploads int
	// Preview configures /preview_url.
	Preview PreviewConfig
}

// Service is the content repository.
type Service struct {
	store   *sqlstore.Store
	cfg     Config
	blobs   *blobStore
	preview *Previewer
	now     func() time.Time

	// thumbSlots bounds concurrent image decodes: each may take
	// MaxImagePixels × 4 bytes of memory.
	thumbSlots chan struct{}
	thumbs     singleflight.Group

	// Other servers' media (remote.go): the fetcher, nil when there is none;
	// fetchQueue bounds the fetches waiting or running, fetchSlots those
	// running; fetches makes concurrent requests for the same media share
	// one fetch.
	remote     Fetcher
	fetchQueue chan struct{}
	fetchSlots chan struct{}
	fetches    singleflight.Group

	// Waiters for asynchronous uploads, woken when the content arrives here.
	mu      sync.Mutex
	waiting map[string]*waitEntry
}

// New returns the content repository, creating its directory if needed.
// remote fetches other servers' media; nil: only local media is served.
func New(store *sqlstore.Store, cfg Config, remote Fetcher) (*Service, error) {
	blobs, err := newBlobStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	slots := runtime.NumCPU()
	return &Service{
		store:      store,
		cfg:        cfg,
		blobs:      blobs,
		preview:    NewPreviewer(cfg.Preview),
		now:        time.Now,
		thumbSlots: make(chan struct{}, slots),
		remote:     remote,
		fetchQueue: make(chan struct{}, maxQueuedFetches),
		fetchSlots: make(chan struct{}, maxRunningFetches),
		waiting:    map[string]*waitEntry{},
	}, nil
}

// MaxUploadBytes is the largest upload accepted, for /config.
func (s *Service) MaxUploadBytes() int64 { return s.cfg.MaxUploadBytes }

// mediaIDBytes is the randomness in a media ID: 24 bytes, 32 characters of
// base64url, which only uses the characters the spec allows.
const mediaIDBytes = 24

func newMediaID() string {
	b := make([]byte, mediaIDBytes)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// validMediaID tells whether id is made only of the characters the spec
// allows in a media ID (A-Z a-z 0-9 _ -), which also rules out any path
// traversal. Spec: content_repo.md, "Security considerations".
func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range []byte(id) {
		ok := (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// mxcURI is the content URI of a local media ID.
func (s *Service) mxcURI(mediaID string) string {
	return "mxc://" + s.cfg.ServerName + "/" + mediaID
}

// checkLocal refuses a media reference that is not one of this server's.
func (s *Service) checkLocal(serverName, mediaID string) error {
	if serverName != s.cfg.ServerName {
		return mxerr.New(mxerr.NotFound, "mxc://%s/%s is not media of this server", serverName, mediaID)
	}
	if !validMediaID(mediaID) {
		return mxerr.New(mxerr.NotFound, "No media with ID %q: media IDs only contain A-Z, a-z, 0-9, _ and -", mediaID)
	}
	return nil
}

func notFoundErr(serverName, mediaID string) error {
	return mxerr.New(mxerr.NotFound, "No media mxc://%s/%s on this server", serverName, mediaID)
}

// PurgeExpired deletes the asynchronous uploads whose content never came in time.
func (s *Service) PurgeExpired(ctx context.Context) error {
	if err := s.store.PurgeExpiredPendingMedia(ctx, s.now().UnixMilli()); err != nil {
		return fmt.Errorf("purging expired media IDs: %w", err)
	}
	return nil
}
