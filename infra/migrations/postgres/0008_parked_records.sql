-- 0008: records the MSK consumers parked instead of stalling a partition on them.
--
-- Released migrations are never edited; change the schema with a new numbered file.

-- A record is named by its consumer ('projector' or 'saga'), its stream key (the event's stream id, or
-- 'topic-partition@offset' for a record that did not decode) and its position (the event's version, or
-- the record's offset). The first record parked under a name stays.
CREATE TABLE parked_records (
    consumer   TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    position   BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    error      TEXT NOT NULL,
    parked_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, stream_key, position)
);

-- The listing order, oldest parked first; also answers the oldest parked_at of the health check.
CREATE INDEX parked_records_oldest_first ON parked_records (parked_at, consumer, stream_key, position);
