-- 0002: the account read tables, projection checkpoints and rebuild jobs.
--
-- Released migrations are never edited; change the schema with a new numbered file.

-- The last stream version applied to the read tables; moves in the same transaction as the rows.
CREATE TABLE projection_checkpoints (
    stream_id  TEXT COLLATE "C" PRIMARY KEY,
    version    BIGINT NOT NULL CHECK (version >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE account_summary (
    account_id    TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL,
    currency      TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status        TEXT NOT NULL CHECK (status IN ('ACTIVE', 'FROZEN')),
    balance_minor BIGINT NOT NULL,
    held_minor    BIGINT NOT NULL,
    version       BIGINT NOT NULL CHECK (version >= 0),
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- One row per account event, read in version order.
CREATE TABLE account_statement (
    account_id          TEXT NOT NULL,
    stream_version      BIGINT NOT NULL CHECK (stream_version >= 1),
    event_id            UUID NOT NULL,
    event_type          TEXT NOT NULL,
    occurred_at         TIMESTAMPTZ NOT NULL,
    amount_minor        BIGINT,
    currency            TEXT CHECK (currency ~ '^[A-Z]{3}$'),
    transaction_id      TEXT,
    balance_after_minor BIGINT,
    reason              TEXT,
    PRIMARY KEY (account_id, stream_version)
);

CREATE TABLE rebuild_jobs (
    rebuild_id      TEXT PRIMARY KEY,
    status          TEXT NOT NULL CHECK (status IN ('RUNNING', 'COMPLETED', 'FAILED')),
    streams_rebuilt BIGINT NOT NULL CHECK (streams_rebuilt >= 0),
    events_replayed BIGINT NOT NULL CHECK (events_replayed >= 0),
    last_stream_id  TEXT,
    error           TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
