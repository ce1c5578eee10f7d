-- Soft-failed events (spec: server-server-api.md, "Soft failure"): received
-- events that their own history allows but the room's current state does
-- not. They are kept as outliers, since other servers may still build on
-- them, but never shown to clients; placing one in the timeline later
-- clears the mark.
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE; -- true: soft-failed, hidden from clients
