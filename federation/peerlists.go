package federation

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Spreading the allowlist between listed servers. Every federation request
// and response carries the sender's serial in SerialHeader. When a peer we
// federate with shows a higher serial than ours, we fetch its list from
// PeerListPath (a signed request like any other) and offer it to the
// allowlist service with the source "peer:NAME": it gets exactly the checks
// of a list from a file or a URL (officers' signatures, federation, expiry,
// no rollback), and is applied or refused and audited accordingly. A peer
// can therefore speed a list up, never forge or roll one back.

// SerialHeader carries the serial of the sender's allowlist in force.
const SerialHeader = "X-Chappe-Allowlist-Serial"

// PeerListPath is where a listed server serves its list to its peers
// (authenticated; allowlist.Service.ServePeer).
const PeerListPath = "/_matrix/federation/unstable/fr.gouv.chappe/allowlist"

const (
	// maxListFetches bounds the peer list fetches running at once.
	maxListFetches = 4
	// listRetryAfter is how long a peer that showed a serial is not asked
	// again for that same serial (its list may have been refused).
	listRetryAfter = time.Minute
	// maxListTries bounds the memory of those tries.
	maxListTries = 4096
)

// listSpreader fetches the lists of peers that show a higher serial:
// asynchronously, one fetch per peer at a time, a few at once in all.
type listSpreader struct {
	client *Client
	lists  PeerLists // nil: spreading is off
	log    zerolog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slots  chan struct{}

	mu       sync.Mutex
	inflight map[string]bool
	tried    map[string]listTry
	closed   bool
}

type listTry struct {
	serial int64
	at     time.Time
}

func newListSpreader(c *Client, lists PeerLists, log zerolog.Logger) *listSpreader {
	ctx, cancel := context.WithCancel(context.Background())
	return &listSpreader{
		client: c, lists: lists, log: log, ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, maxListFetches), inflight: map[string]bool{}, tried: map[string]listTry{},
	}
}

// NotePeerSerial takes note that peer, authenticated (by its request
// signature or its TLS certificate), has a list with this serial, and
// fetches that list in the background when it is newer than ours.
func (c *Client) NotePeerSerial(peer string, serial int64) { c.spreader.note(peer, serial) }

// noteResponse reads the serial header of a peer's answer.
func (s *listSpreader) noteResponse(peer string, h http.Header) {
	if serial, ok := parseSerial(h.Get(SerialHeader)); ok {
		s.note(peer, serial)
	}
}

// parseSerial reads SerialHeader; ok is false when absent or garbled.
func parseSerial(v string) (int64, bool) {
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

func (s *listSpreader) note(peer string, serial int64) {
	if s.lists == nil || !s.lists.ShouldFetchFrom(peer, serial) {
		return
	}
	now := s.client.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.inflight[peer] {
		return
	}
	if t, ok := s.tried[peer]; ok && t.serial >= serial && now.Sub(t.at) < listRetryAfter {
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return // busy: a later request will show the serial again
	}
	if len(s.tried) >= maxListTries {
		clear(s.tried)
	}
	s.tried[peer] = listTry{serial: serial, at: now}
	s.inflight[peer] = true
	s.wg.Add(1)
	go s.fetch(peer)
}

// fetch gets peer's list and offers it.
func (s *listSpreader) fetch(peer string) {
	defer func() {
		s.mu.Lock()
		delete(s.inflight, peer)
		s.mu.Unlock()
		<-s.slots
		s.wg.Done()
	}()
	log := s.log.With().Str("peer", peer).Logger()
	raw, err := s.client.FetchPeerList(s.ctx, peer)
	if err != nil {
		log.Warn().Err(err).Msg("could not fetch the newer allowlist of a peer")
		return
	}
	v, err := s.lists.Offer(s.ctx, raw, "peer:"+peer)
	if err != nil {
		log.Error().Err(err).Msg("offering a peer's allowlist")
		return
	}
	log.Info().Str("outcome", string(v.Outcome)).Str("reason", v.Reason).Msg("allowlist offered by a peer")
}

// close stops the fetches and waits for them.
func (s *listSpreader) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}
