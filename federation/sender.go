package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"chappe/ephemeral"
	"chappe/sqlstore"
)

// Transport sends one transaction to a remote server. The outbound client
// implements it: it asks the allowlist, resolves and signs.
type Transport interface {
	// SendTransaction PUTs /_matrix/federation/v1/send/{txnID} to dest with
	// the given PDUs (raw event JSON) and EDUs, and returns the per-PDU
	// results: event ID → error string ("" when the PDU was accepted).
	SendTransaction(ctx context.Context, dest, txnID string, pdus []json.RawMessage, edus []EDU) (map[string]string, error)
}

// Spec limits of a transaction (server-server-api.md, "Transactions").
const (
	MaxTransactionPDUs = 50
	MaxTransactionEDUs = 100
)

// SenderConfig tunes the senders. Zero values take the defaults.
type SenderConfig struct {
	// InitialBackoff is the wait after a destination's first failed
	// transaction; it doubles at each further failure up to MaxBackoff, and
	// a success resets it. Defaults: 1s and 10 minutes.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// PollInterval is how often the outbox is scanned for destinations
	// with work that no Wake announced: a commit whose outcome the process
	// did not learn, a server the allowlist admits again, another process
	// on the same database. Default 2s.
	PollInterval time.Duration
	// TransactionTimeout bounds one transaction, so a server that never
	// answers is retried. Default 2 minutes.
	TransactionTimeout time.Duration
	// MaxPDUs and MaxEDUs cap a transaction; defaults and upper bounds are
	// the spec's 50 and 100.
	MaxPDUs, MaxEDUs int
}

func (c *SenderConfig) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.InitialBackoff, time.Second)
	def(&c.MaxBackoff, 10*time.Minute)
	def(&c.PollInterval, 2*time.Second)
	def(&c.TransactionTimeout, 2*time.Minute)
	if c.MaxBackoff < c.InitialBackoff {
		c.MaxBackoff = c.InitialBackoff
	}
	if c.MaxPDUs <= 0 || c.MaxPDUs > MaxTransactionPDUs {
		c.MaxPDUs = MaxTransactionPDUs
	}
	if c.MaxEDUs <= 0 || c.MaxEDUs > MaxTransactionEDUs {
		c.MaxEDUs = MaxTransactionEDUs
	}
}

// Sender drains the federation outbox: one worker per destination with
// queued items, started on demand and gone when its queue is empty, so an
// idle server costs nothing. A worker sends its destination's items in
// queue order, one transaction at a time, retrying a failed transaction
// (same items, same transaction ID) with exponential backoff until the
// destination acknowledges it; then it deletes the items. Workers exist
// only for servers the allowlist admits, so there are at most as many as
// listed servers.
//
// Order: a room's events are queued in the order they are stored (the
// roomserver holds the room's lock until commit), so each destination gets
// a room's events in order. Items of concurrent transactions in different
// rooms may become visible out of ID order; each is sent once it commits.
//
// Transaction IDs are derived from the items (see txnID): a retry — even
// after a restart, if the queue's head has not grown meanwhile — sends the
// same ID, so a receiver that did process a transaction whose reply was
// lost recognises it. Spec: server-server-api.md, "Transactions", PUT
// /_matrix/federation/v1/send/{txnId}.
type Sender struct {
	cfg       SenderConfig
	store     *sqlstore.Store
	gate      QueueGate
	transport Transport
	log       zerolog.Logger
	// sleep waits d or until ctx ends (false then); tests replace it.
	sleep func(ctx context.Context, d time.Duration) bool
	// now tells the time, to find stale EDUs; tests replace it.
	now func() time.Time

	mu      sync.Mutex
	ctx     context.Context // Run's context; nil when not running
	workers map[string]*worker
	wg      sync.WaitGroup
}

// worker is the state of a destination's running worker.
type worker struct {
	dest string
	// again is set by Wake: new items may have been committed since the
	// worker last read its queue, so it must read again before it exits.
	again bool
}

// NewSender returns the senders; they start with Run.
func NewSender(cfg SenderConfig, store *sqlstore.Store, gate QueueGate, transport Transport, log zerolog.Logger) *Sender {
	cfg.setDefaults()
	return &Sender{cfg: cfg, store: store, gate: gate, transport: transport, log: log,
		sleep: sleepCtx, now: time.Now, workers: map[string]*worker{}}
}

// Run starts a worker for every destination with queued items (what a
// previous run left), then scans the outbox every PollInterval, until ctx
// ends; it returns once every worker has stopped. Items stay queued, but
// for the stale EDUs, deleted every outboxPurgeEvery.
func (s *Sender) Run(ctx context.Context) {
	s.mu.Lock()
	if s.ctx != nil {
		s.mu.Unlock()
		panic("federation: Sender.Run called twice")
	}
	s.ctx = ctx
	s.mu.Unlock()

	tick := time.NewTicker(s.cfg.PollInterval)
	defer tick.Stop()
	var purged time.Time
	for {
		if now := s.now(); now.Sub(purged) >= outboxPurgeEvery {
			s.purgeStale(ctx, now)
			purged = now
		}
		s.scan(ctx)
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.ctx = nil
			s.mu.Unlock()
			s.wg.Wait()
			return
		case <-tick.C:
		}
	}
}

// purgeStale deletes from the outbox the EDUs gone stale (staleAfter).
func (s *Sender) purgeStale(ctx context.Context, now time.Time) {
	n, err := s.store.PurgeStaleEDUs(ctx, now.Add(-StaleTypingAfter).UnixMilli(), now.Add(-StaleReceiptAfter).UnixMilli())
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Error().Err(err).Msg("federation sender: purging stale EDUs")
	case n > 0:
		s.log.Info().Int64("edus", n).Msg("federation sender: stale EDUs dropped unsent")
	}
}

// scan wakes the destinations that have queued items.
func (s *Sender) scan(ctx context.Context) {
	dests, err := s.store.OutboxDestinations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Msg("federation sender: listing the outbox")
		}
		return
	}
	s.Wake(dests...)
}

// Wake tells the senders that destinations have new items, once they are
// committed (the Outbox calls it after the commit). A destination's worker
// is started if it has none and the allowlist admits it. Before Run and
// after it returned, Wake does nothing: Run's first scan finds the items.
func (s *Sender) Wake(destinations ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return
	}
	for _, d := range destinations {
		if w, ok := s.workers[d]; ok {
			w.again = true
			continue
		}
		if !s.gate.Allowed(d) {
			continue
		}
		w := &worker{dest: d}
		s.workers[d] = w
		s.wg.Add(1)
		go s.work(s.ctx, w)
	}
}

// batch is a transaction being sent, kept as is until acknowledged (but
// for the EDUs that go stale meanwhile, left out of each attempt).
type batch struct {
	txnID string
	ids   []int64
	pdus  []json.RawMessage
	edus  []queuedEDU
}

// queuedEDU is an EDU of a batch with its queue time (ms).
type queuedEDU struct {
	EDU
	queuedTS int64
}

// Ephemeral EDUs lose their worth with time: a server that was down for
// hours has no use for who was typing then, and would show it as news.
// The spec gives EDUs no delivery guarantee (server-server-api.md, "EDUs";
// "Typing Notifications", "Presence", "Receipts"). To-device messages and
// device list and signing key updates are kept however old: they must
// arrive.
const (
	// StaleTypingAfter: m.typing and m.presence queued longer ago than
	// this are dropped unsent. A typing notification lasts 30 s at the
	// receiver unless refreshed; a presence this old has been overtaken.
	StaleTypingAfter = 5 * time.Minute
	// StaleReceiptAfter: m.receipt queued longer ago than this is dropped
	// unsent; a later receipt of the user carries their read position.
	StaleReceiptAfter = 24 * time.Hour
	// outboxPurgeEvery is how often the stale EDUs are deleted from the
	// outbox of every destination (Run), so the queue of a server down for
	// days does not grow with them.
	outboxPurgeEvery = time.Minute
)

// staleAfter is how long an EDU of this type may wait in the outbox; 0 for
// ever.
func staleAfter(eduType string) time.Duration {
	switch eduType {
	case ephemeral.EDUTyping, ephemeral.EDUPresence:
		return StaleTypingAfter
	case ephemeral.EDUReceipt:
		return StaleReceiptAfter
	}
	return 0
}

// freshEDUs is the EDUs of b still worth sending at now.
func freshEDUs(b *batch, now time.Time) []EDU {
	out := make([]EDU, 0, len(b.edus))
	for _, e := range b.edus {
		if limit := staleAfter(e.Type); limit > 0 && now.Sub(time.UnixMilli(e.queuedTS)) > limit {
			continue
		}
		out = append(out, e.EDU)
	}
	return out
}

// work sends the destination's queue until it is empty, ctx ends or the
// allowlist stops admitting the destination. In that last case it stops at
// once and the items stay queued: the removal may be undone (or the list
// may only have expired) and what was queued while the server was listed
// is then delivered; PurgeOutbox drops it for a server gone for good.
func (s *Sender) work(ctx context.Context, w *worker) {
	defer s.wg.Done()
	log := s.log.With().Str("destination", w.dest).Logger()
	var (
		current  *batch // nil: read the next one
		failures int
	)
	for {
		if ctx.Err() != nil || !s.allowed(w, log) {
			s.exit(w)
			return
		}
		if failures > 0 && !s.sleep(ctx, Backoff(s.cfg.InitialBackoff, s.cfg.MaxBackoff, failures)) {
			continue // ctx ended
		}
		if current == nil {
			s.mu.Lock()
			w.again = false
			s.mu.Unlock()
			b, err := s.nextBatch(ctx, w.dest)
			if err != nil {
				if ctx.Err() == nil {
					failures++
					log.Error().Err(err).Msg("federation sender: reading the outbox")
				}
				continue
			}
			if b == nil {
				if s.exitIfIdle(w) {
					return
				}
				continue
			}
			current = b
		}
		if edus := freshEDUs(current, s.now()); len(current.pdus)+len(edus) > 0 {
			// Asked again just before sending: nothing goes out after the
			// allowlist dropped the destination.
			if !s.allowed(w, log) {
				s.exit(w)
				return
			}
			if err := s.send(ctx, w.dest, current, edus, log); err != nil {
				if ctx.Err() == nil {
					failures++
					log.Warn().Err(err).Str("txn_id", current.txnID).Int("failures", failures).
						Dur("retry_in", Backoff(s.cfg.InitialBackoff, s.cfg.MaxBackoff, failures)).Msg("federation transaction failed")
				}
				continue
			}
		}
		failures = 0
		if err := s.store.DeleteOutboxItems(ctx, w.dest, current.ids); err != nil {
			// Sent but still queued: the next read finds the same items
			// and sends them under the same ID, which the receiver ignores.
			if ctx.Err() == nil {
				failures++
				log.Error().Err(err).Msg("federation sender: deleting acknowledged items")
			}
		}
		current = nil
	}
}

// allowed asks the gate, and logs a refusal.
func (s *Sender) allowed(w *worker, log zerolog.Logger) bool {
	if s.gate.Allowed(w.dest) {
		return true
	}
	log.Info().Msg("federation sender: the allowlist no longer admits this server; its queue is kept")
	return false
}

// exit forgets a worker that stops.
func (s *Sender) exit(w *worker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.workers[w.dest] == w {
		delete(s.workers, w.dest)
	}
}

// exitIfIdle forgets the worker unless a Wake came since it read its queue.
func (s *Sender) exitIfIdle(w *worker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.again {
		return false
	}
	if s.workers[w.dest] == w {
		delete(s.workers, w.dest)
	}
	return true
}

// nextBatch reads the next transaction of dest; nil when its queue is empty.
func (s *Sender) nextBatch(ctx context.Context, dest string) (*batch, error) {
	items, err := s.store.OutboxBatch(ctx, dest, s.cfg.MaxPDUs, s.cfg.MaxEDUs)
	if err != nil || len(items) == 0 {
		return nil, err
	}
	b := &batch{txnID: txnID(items), ids: make([]int64, 0, len(items)), pdus: []json.RawMessage{}}
	for _, it := range items {
		b.ids = append(b.ids, it.ID)
		switch {
		case it.IsPDU() && it.PDU == nil:
			// The event is gone (events are not deleted today): nothing to
			// send, and the row goes with the batch.
		case it.IsPDU():
			b.pdus = append(b.pdus, it.PDU)
		default:
			b.edus = append(b.edus, queuedEDU{EDU{Type: it.EDUType, Content: it.EDUContent}, it.QueuedTS})
		}
	}
	return b, nil
}

// send sends b once, with edus (its EDUs not stale yet). PDUs the receiver
// reports as failed are not sent again: it did receive them, and resending
// would fail the same way.
func (s *Sender) send(ctx context.Context, dest string, b *batch, edus []EDU, log zerolog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TransactionTimeout)
	defer cancel()
	results, err := s.transport.SendTransaction(ctx, dest, b.txnID, b.pdus, edus)
	if err != nil {
		return err
	}
	for eventID, e := range results {
		if e != "" {
			log.Warn().Str("txn_id", b.txnID).Str("event_id", eventID).Str("error", e).Msg("federation: the destination refused a PDU")
		}
	}
	log.Debug().Str("txn_id", b.txnID).Int("pdus", len(b.pdus)).Int("edus", len(edus)).Msg("federation transaction sent")
	return nil
}

// txnID names a transaction after its items: the queue time and ID of the
// first, the ID of the last and their number. Items are only ever added to
// the queue (with greater IDs, or with smaller ones committed late) and
// removed once acknowledged, so the same items always give the same ID and
// other items another; the queue time keeps IDs apart across databases
// (a reinstalled server starting its IDs at 1 again).
func txnID(items []sqlstore.OutboxItem) string {
	first, last := items[0], items[len(items)-1]
	return fmt.Sprintf("%d.%d-%d.%d", first.QueuedTS, first.ID, last.ID, len(items))
}

// Backoff is the wait after the given number of consecutive failures
// (at least 1): initial, doubling at each failure, at most limit.
func Backoff(initial, limit time.Duration, failures int) time.Duration {
	d := initial
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// sleepCtx waits d, or until ctx ends (false then).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Transaction is the body of PUT /_matrix/federation/v1/send/{txnId}.
// Spec: server-server-api.md, "Transactions".
type Transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []EDU             `json:"edus,omitempty"`
}

// TransactionBody is the JSON body of a transaction from origin at now:
// pdus always present (possibly empty), edus omitted when there are none.
func TransactionBody(origin string, now time.Time, pdus []json.RawMessage, edus []EDU) ([]byte, error) {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	return json.Marshal(Transaction{Origin: origin, OriginServerTS: now.UnixMilli(), PDUs: pdus, EDUs: edus})
}
