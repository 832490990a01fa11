-- 0009: the relay's claim checks "is an earlier row of this stream waiting?" (leased, backing off or
-- dead-lettered) against this index rather than against every earlier unpublished row, so a claim
-- costs about the same whatever the backlog.
--
-- Released migrations are never edited; change the schema with a new numbered file.

-- Only rows that are or were leased, retried or dead-lettered and are not yet published: in steady
-- state, the rows in flight.
CREATE INDEX outbox_events_stream_waiting ON outbox_events (stream_id, position)
    WHERE published_at IS NULL
      AND (dead_lettered_at IS NOT NULL OR claimed_until IS NOT NULL OR next_attempt_at IS NOT NULL);
