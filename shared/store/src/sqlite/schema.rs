//! The schema, as SQL, with its version kept in `PRAGMA user_version`.
//!
//! A released step is never edited: a change is a new step appended to [`STEPS`]. [`migrate`] runs
//! the steps above the file's version, each with the version bump in one transaction.

use rusqlite::{Connection, TransactionBehavior};

use super::sql_error;
use crate::StoreError;

/// Version 1: every table of every port. Times are microseconds since the Unix epoch, UUIDs are
/// hyphenated text, JSON values are text. Text compares by bytes (`BINARY`), which for UTF-8 is the
/// code point order Rust's `str` uses, so stream listing matches the other adapters.
const V1: &str = "
CREATE TABLE streams (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at    INTEGER NOT NULL,
    payload        TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    UNIQUE (stream_id, version)
) STRICT;

CREATE TABLE transaction_records (
    transaction_id  TEXT PRIMARY KEY,
    intent          TEXT NOT NULL,
    response_status INTEGER NOT NULL,
    response_body   TEXT NOT NULL,
    response_code   TEXT,
    recorded_at     INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE idempotency_records (
    scope            TEXT NOT NULL,
    key              TEXT NOT NULL,
    operation        TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    claim_token      TEXT,
    lease_expires_at INTEGER,
    response_status  INTEGER,
    response_body    TEXT,
    response_code    TEXT,
    expires_at       INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID, STRICT;

CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);

CREATE TABLE snapshots (
    stream_id      TEXT PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE projection_checkpoints (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE account_summary (
    account_id    TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL,
    currency      TEXT NOT NULL,
    status        TEXT NOT NULL,
    balance_minor INTEGER NOT NULL,
    held_minor    INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE account_statement (
    account_id          TEXT NOT NULL,
    stream_version      INTEGER NOT NULL,
    event_id            TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    occurred_at         INTEGER NOT NULL,
    amount_minor        INTEGER,
    currency            TEXT,
    transaction_id      TEXT,
    balance_after_minor INTEGER,
    reason              TEXT,
    PRIMARY KEY (account_id, stream_version)
) WITHOUT ROWID, STRICT;

CREATE TABLE transfer_status (
    transfer_id            TEXT PRIMARY KEY,
    status                 TEXT NOT NULL,
    failure_reason         TEXT,
    source_account_id      TEXT NOT NULL,
    destination_account_id TEXT NOT NULL,
    amount_minor           INTEGER NOT NULL,
    currency               TEXT NOT NULL,
    legs                   TEXT NOT NULL,
    version                INTEGER NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE rebuild_jobs (
    rebuild_id      TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    streams_rebuilt INTEGER NOT NULL,
    events_replayed INTEGER NOT NULL,
    last_stream_id  TEXT,
    error           TEXT,
    started_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID, STRICT;

CREATE TABLE feed_cursors (
    lane     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID, STRICT;
";

/// Version 2: the reconciler's look-up of transfers still pending.
const V2: &str = "
CREATE INDEX transfer_status_pending ON transfer_status (updated_at) WHERE status = 'PENDING';
";

/// Version 3: idempotency holds moved into the process (module `claims`); the few rows still held
/// in the file are found through this index when a file is opened, without reading every record.
const V3: &str = "
CREATE INDEX idempotency_records_in_progress ON idempotency_records (scope, key) WHERE state = 'in_progress';
";

/// Version 4: records the MSK consumers parked, keyed by consumer, stream key and position, with the
/// listing order (oldest parked first) indexed.
const V4: &str = "
CREATE TABLE parked_records (
    consumer   TEXT NOT NULL,
    stream_key TEXT NOT NULL,
    position   INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    error      TEXT NOT NULL,
    parked_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream_key, position)
) WITHOUT ROWID, STRICT;

CREATE INDEX parked_records_oldest_first ON parked_records (parked_at, consumer, stream_key, position);
";

/// The schema steps in order: step `i` takes the file from version `i` to `i + 1`.
const STEPS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = STEPS.len() as i64;

/// Brings the file's schema to [`SCHEMA_VERSION`]. A file at a higher version was written by a newer
/// build, whose data this one might misread: `Corrupt`, and nothing is changed.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sql_error(&e))?;
    let version: i64 =
        tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| sql_error(&e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    let done = usize::try_from(version).unwrap_or(0);
    for step in STEPS.iter().skip(done) {
        tx.execute_batch(step).map_err(|e| sql_error(&e))?;
    }
    if version < SCHEMA_VERSION {
        // PRAGMA takes no parameters; the value is our own constant.
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(|e| sql_error(&e))?;
    }
    tx.commit().map_err(|e| sql_error(&e))
}
