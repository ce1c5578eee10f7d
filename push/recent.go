package push

import (
	lru "github.com/hashicorp/golang-lru/v2"

	"chappe/sqlstore"
)

// memOutcome is what the rules decided for one user (or most users) of an event.
type memOutcome struct {
	notify, highlight bool
}

// recentEvent is the push result of a recently stored event, kept in memory
// so the counts a /sync adds along a long-poll chain need no query.
type recentEvent struct {
	sender     string
	thread     string
	evaluated  bool // false: nobody was evaluated (no other local member)
	shared     memOutcome
	exceptions map[string]memOutcome
}

// recentEventsSize is how many events' results stay in memory.
const recentEventsSize = 20_000

func newRecent() *lru.Cache[int64, recentEvent] {
	c, _ := lru.New[int64, recentEvent](recentEventsSize)
	return c
}

// remember keeps an event's result. It is written in the event's
// transaction: if that rolls back the position is never asked for, because
// only stored events are counted.
func (s *Service) remember(ev sqlstore.Event, rec sqlstore.PushRecord) {
	r := recentEvent{sender: ev.Sender, thread: threadMain}
	if rec.Event != nil {
		r.evaluated, r.thread = true, rec.Event.ThreadID
		r.shared = memOutcome{rec.Event.Notify, rec.Event.Highlight}
		if len(rec.Exceptions) > 0 {
			r.exceptions = make(map[string]memOutcome, len(rec.Exceptions))
			for _, x := range rec.Exceptions {
				r.exceptions[x.UserID] = memOutcome{x.Notify, x.Highlight}
			}
		}
	}
	s.recent.Add(ev.StreamPos, r)
}

// CountsOfEvents adds up, from memory, the notifications the user gets from
// the events at these stream positions (all of them events of one room, all
// after the user's read marks), leaving out the user's own and ignored
// senders' events. ok is false when one of the events is not in memory: the
// caller then counts in the database.
func (s *Service) CountsOfEvents(userID string, positions []int64, ignored map[string]bool) (RoomCounts, bool) {
	var rc RoomCounts
	for _, pos := range positions {
		r, ok := s.recent.Get(pos)
		if !ok {
			return RoomCounts{}, false
		}
		if !r.evaluated || r.sender == userID || ignored[r.sender] {
			continue
		}
		o := r.shared
		if x, ok := r.exceptions[userID]; ok {
			o = x
		}
		if !o.notify {
			continue
		}
		c := Counts{Notifications: 1}
		if o.highlight {
			c.Highlights = 1
		}
		rc.Notifications += c.Notifications
		rc.Highlights += c.Highlights
		if r.thread == threadMain {
			rc.Main.Notifications += c.Notifications
			rc.Main.Highlights += c.Highlights
		} else {
			if rc.Threads == nil {
				rc.Threads = map[string]Counts{}
			}
			t := rc.Threads[r.thread]
			t.Notifications += c.Notifications
			t.Highlights += c.Highlights
			rc.Threads[r.thread] = t
		}
	}
	return rc, true
}
