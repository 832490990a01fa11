-- 0007: the reconciler's look-up of transfers still pending.
--
-- Released migrations are never edited; change the schema with a new numbered file.

-- Only PENDING rows are indexed, so the index stays as small as the set of transfers in flight.
CREATE INDEX transfer_status_pending ON transfer_status (updated_at, transfer_id) WHERE status = 'PENDING';
