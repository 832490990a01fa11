-- 0004: the transfer status read table.
--
-- Released migrations are never edited; change the schema with a new numbered file.

-- One row per transfer, projected from its transfer-{id} stream. `version` is the last stream version
-- applied and is the row's projection checkpoint: row and checkpoint are one write, so they cannot
-- disagree. `legs` is the ordered list of recorded steps ({leg, status, at}), read back whole.
CREATE TABLE transfer_status (
    transfer_id            TEXT PRIMARY KEY,
    status                 TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    failure_reason         TEXT,
    source_account_id      TEXT NOT NULL,
    destination_account_id TEXT NOT NULL,
    amount_minor           BIGINT NOT NULL CHECK (amount_minor > 0),
    currency               TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    legs                   JSONB NOT NULL DEFAULT '[]'::jsonb,
    version                BIGINT NOT NULL CHECK (version >= 1),
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
