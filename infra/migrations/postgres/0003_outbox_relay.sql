-- 0003: what the outbox relay needs beyond 0001's outbox_events columns.
--
-- Released migrations are never edited; change the schema with a new numbered file. Every column here
-- is nullable, so a build that only knows 0002 keeps appending (it never sets them).

-- A failed row is not retried before next_attempt_at (exponential backoff). A row that failed
-- RELAY_MAX_ATTEMPTS times, or that the bus refused for what it is, is dead-lettered: it is never
-- claimed again until an operator requeues it, and it blocks the later rows of its stream, so one
-- stream's order never has a hole. claim_token names the relay run that holds the claim, so that a
-- relay whose lease ran out cannot mark rows another relay has taken over.
ALTER TABLE outbox_events
    ADD COLUMN next_attempt_at  TIMESTAMPTZ,
    ADD COLUMN dead_lettered_at TIMESTAMPTZ,
    ADD COLUMN claim_token      UUID;

-- "Is there an earlier unpublished row of this stream?": the claim's per-stream order check.
CREATE INDEX outbox_events_stream_unpublished ON outbox_events (stream_id, position)
    WHERE published_at IS NULL;

-- Retention: published rows are deleted oldest first.
CREATE INDEX outbox_events_published_at ON outbox_events (published_at)
    WHERE published_at IS NOT NULL;
