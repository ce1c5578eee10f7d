package media

import (
	"context"
	"errors"
	"fmt"
	"time"

	"chappe/sqlstore"
)

// The cache of other servers' media is bounded in time: a media nobody
// here asked for (content or thumbnail) in RemoteCacheRetention is dropped,
// with its thumbnails and the files nothing else uses (the check local
// deletions use, deleteFiles); asked for again, it is fetched again.
// Quarantined media stays: it is an administrator's to delete. Run does it
// periodically. Spec: server-server-api.md, "Content Repository" (servers
// cache remote media as they see fit).

const (
	// RemoteCacheRetention is how long cached remote media is kept after it
	// was last served. (A constant for now: media.remote_cache_retention
	// in the configuration is the natural next step.)
	RemoteCacheRetention = 30 * 24 * time.Hour
	// accessTouchEvery is the precision of the last access recorded: a
	// cached media costs a write at most once per this when served.
	accessTouchEvery = 24 * time.Hour
	// remoteCachePurgeEvery is how often Run looks for media to drop.
	remoteCachePurgeEvery = time.Hour
	// remoteCachePurgeBatch is how many media a purge lists at a time;
	// each is then dropped in a transaction of its own.
	remoteCachePurgeBatch = 100
)

// touchRemote records that m is being served, if its last access is older
// than accessTouchEvery.
func (s *Service) touchRemote(ctx context.Context, m sqlstore.RemoteMedia) error {
	now := s.now()
	if now.Sub(time.UnixMilli(m.AccessedTS)) < accessTouchEvery {
		return nil
	}
	return s.store.TouchRemoteMedia(ctx, m.Origin, m.MediaID, now.UnixMilli())
}

// PurgeRemoteCache drops the cached remote media not served for
// RemoteCacheRetention, and says how many it dropped.
func (s *Service) PurgeRemoteCache(ctx context.Context) (int, error) {
	before := s.now().Add(-RemoteCacheRetention).UnixMilli()
	dropped := 0
	for {
		batch, err := s.store.UnusedRemoteMedia(ctx, before, remoteCachePurgeBatch)
		if err != nil {
			return dropped, fmt.Errorf("listing unused remote media: %w", err)
		}
		for _, m := range batch {
			origin, mediaID := m[0], m[1]
			err := s.deleteFiles(ctx,
				func(q *sqlstore.Queries) ([][]byte, error) { return q.RemoteMediaFileHashes(ctx, origin, mediaID) },
				func(q *sqlstore.Queries) error { return q.DeleteUnusedRemoteMedia(ctx, origin, mediaID, before) })
			switch {
			case err == nil:
				dropped++
			case !errors.Is(err, sqlstore.ErrNotFound): // ErrNotFound: served meanwhile
				return dropped, fmt.Errorf("dropping mxc://%s/%s from the cache: %w", origin, mediaID, err)
			}
		}
		if len(batch) < remoteCachePurgeBatch {
			return dropped, nil
		}
	}
}

// Run purges the remote media cache every remoteCachePurgeEvery until ctx
// ends; errors go to onError.
func (s *Service) Run(ctx context.Context, onError func(error)) {
	tick := time.NewTicker(remoteCachePurgeEvery)
	defer tick.Stop()
	for {
		if _, err := s.PurgeRemoteCache(ctx); err != nil && ctx.Err() == nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
