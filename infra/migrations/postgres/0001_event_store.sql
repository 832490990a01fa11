-- 0001: the event store, its outbox and guard records, and snapshots.
--
-- Released migrations are never edited (the store checks their SHA-256 at start-up); change the schema
-- with a new numbered file. Stream ids collate as "C" so that order and prefix ranges are by bytes,
-- as in the adapters' Rust code. Money and versions are BIGINT; JSON documents are JSONB, except
-- stored HTTP responses, which are TEXT so that a replay is byte for byte.

-- One row per stream: its current version. An append moves it from the expected version with a
-- conditional write, which both detects a stale writer and queues concurrent writers of one stream.
CREATE TABLE streams (
    stream_id  TEXT COLLATE "C" PRIMARY KEY,
    version    BIGINT NOT NULL CHECK (version >= 1),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every event, immutable. `position` is the global order of the feed; appends take an advisory lock
-- before inserting, so positions also follow commit order.
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id      TEXT COLLATE "C" NOT NULL REFERENCES streams (stream_id),
    version        BIGINT NOT NULL CHECK (version >= 1),
    event_id       UUID NOT NULL,
    event_type     TEXT NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version >= 0),
    occurred_at    TIMESTAMPTZ NOT NULL,
    payload        JSONB NOT NULL,
    metadata       JSONB NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed', TG_OP USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

-- What the relay publishes: written in the append's transaction, one row per event. The relay claims
-- unpublished rows (FOR UPDATE SKIP LOCKED, or a lease in claimed_until), publishes them, and sets
-- published_at; attempts and last_error record failures for backoff and alarms.
CREATE TABLE outbox_events (
    position      BIGINT PRIMARY KEY REFERENCES events (position),
    stream_id     TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    claimed_until TIMESTAMPTZ,
    last_error    TEXT
);

CREATE INDEX outbox_events_unpublished ON outbox_events (position) WHERE published_at IS NULL;

-- Idempotency-Key claims and completed responses, per operation family (scope).
CREATE TABLE idempotency_records (
    scope            TEXT NOT NULL,
    key              TEXT NOT NULL,
    operation        TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    claim_token      UUID,
    lease_expires_at TIMESTAMPTZ,
    response_status  INTEGER CHECK (response_status BETWEEN 0 AND 65535),
    response_body    TEXT,
    expires_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key),
    CONSTRAINT idempotency_records_state_fields CHECK (
        (state = 'in_progress' AND claim_token IS NOT NULL AND lease_expires_at IS NOT NULL)
        OR (state = 'completed' AND response_status IS NOT NULL AND response_body IS NOT NULL)
    )
);

-- For the job that deletes records past their TTL (the DynamoDB TTL's counterpart).
CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);

-- A business transaction id, unique across the bank, with the first command's intent and response.
CREATE TABLE transaction_records (
    transaction_id  TEXT PRIMARY KEY,
    intent          JSONB NOT NULL,
    response_status INTEGER NOT NULL CHECK (response_status BETWEEN 0 AND 65535),
    response_body   TEXT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL
);

-- The newest snapshot per stream; an optimisation only.
CREATE TABLE snapshots (
    stream_id      TEXT COLLATE "C" PRIMARY KEY,
    version        BIGINT NOT NULL CHECK (version >= 1),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 0),
    state          JSONB NOT NULL,
    saved_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
