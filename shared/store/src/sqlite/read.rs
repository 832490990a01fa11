//! Snapshots, the account read tables with their checkpoints, transfer statuses and rebuild jobs.

use std::sync::Arc;

use async_trait::async_trait;
use corebank_domain::{Currency, StreamKind};
use rusqlite::{Connection, Row};

use super::{
    Db, clamp_i64, collect, decode_error, execute, from_json, from_micros, micros, one, sql_error, to_i64,
    to_json, to_u64, to_uuid,
};
use crate::sql::{account_status, currency, transfer_phase};
use crate::{
    AccountSummary, ProjectionChange, ProjectionReplacement, ReadModelStore, RebuildJob, RebuildJobStore,
    RebuildStatus, Snapshot, SnapshotStore, StatementEntry, StoreError, TransferStatus, TransferStatusStore,
};

const LOAD_SNAPSHOT: &str =
    "SELECT stream_id, version, schema_version, state FROM snapshots WHERE stream_id = ?1";

/// Keeps the newest snapshot: an older one arriving late changes nothing.
const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots AS s (stream_id, version, schema_version, state) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
         schema_version = excluded.schema_version, state = excluded.state \
     WHERE s.version < excluded.version";

const CHECKPOINT: &str = "SELECT version FROM projection_checkpoints WHERE stream_id = ?1";

/// From checkpoint 0, which is also what an absent row means.
const MOVE_CHECKPOINT_FROM_ZERO: &str = "INSERT INTO projection_checkpoints AS c (stream_id, version) \
     VALUES (?1, ?2) \
     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version WHERE c.version = 0";

const MOVE_CHECKPOINT: &str =
    "UPDATE projection_checkpoints SET version = ?3 WHERE stream_id = ?1 AND version = ?2";

const SET_CHECKPOINT: &str = "INSERT INTO projection_checkpoints (stream_id, version) VALUES (?1, ?2) \
     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version";

const UPSERT_SUMMARY: &str = "INSERT INTO account_summary \
     (account_id, owner_id, currency, status, balance_minor, held_minor, version, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (account_id) DO UPDATE SET owner_id = excluded.owner_id, currency = excluded.currency, \
         status = excluded.status, balance_minor = excluded.balance_minor, \
         held_minor = excluded.held_minor, version = excluded.version, \
         created_at = excluded.created_at, updated_at = excluded.updated_at";

const DELETE_SUMMARY: &str = "DELETE FROM account_summary WHERE account_id = ?1";

const SELECT_SUMMARY: &str = "SELECT account_id, owner_id, currency, status, balance_minor, held_minor, \
         version, created_at, updated_at \
     FROM account_summary WHERE account_id = ?1";

/// Within one write the last row given for a version wins, as in the memory adapter.
const UPSERT_STATEMENT: &str = "INSERT INTO account_statement \
     (account_id, stream_version, event_id, event_type, occurred_at, amount_minor, currency, \
      transaction_id, balance_after_minor, reason) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (account_id, stream_version) DO UPDATE SET event_id = excluded.event_id, \
         event_type = excluded.event_type, occurred_at = excluded.occurred_at, \
         amount_minor = excluded.amount_minor, currency = excluded.currency, \
         transaction_id = excluded.transaction_id, balance_after_minor = excluded.balance_after_minor, \
         reason = excluded.reason";

const DELETE_STATEMENT: &str = "DELETE FROM account_statement WHERE account_id = ?1";

const SELECT_STATEMENT: &str = "SELECT account_id, stream_version, event_id, event_type, occurred_at, \
         amount_minor, currency, transaction_id, balance_after_minor, reason \
     FROM account_statement WHERE account_id = ?1 ORDER BY stream_version LIMIT ?3 OFFSET ?2";

const SELECT_TRANSFER: &str = "SELECT transfer_id, status, failure_reason, source_account_id, \
         destination_account_id, amount_minor, currency, legs, version, created_at, updated_at \
     FROM transfer_status WHERE transfer_id = ?1";

const TRANSFER_VERSION: &str = "SELECT version FROM transfer_status WHERE transfer_id = ?1";

/// Served by the partial index `transfer_status_pending`.
const PENDING_TRANSFERS: &str = "SELECT transfer_id, status, failure_reason, source_account_id, \
         destination_account_id, amount_minor, currency, legs, version, created_at, updated_at \
     FROM transfer_status WHERE status = 'PENDING' AND updated_at < ?1 \
     ORDER BY updated_at, transfer_id LIMIT ?2";

/// From version 0, which is what an absent row means: only a first writer inserts.
const INSERT_TRANSFER: &str = "INSERT INTO transfer_status (transfer_id, status, failure_reason, \
         source_account_id, destination_account_id, amount_minor, currency, legs, version, created_at, \
         updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT (transfer_id) DO NOTHING";

const UPDATE_TRANSFER_FROM: &str = "UPDATE transfer_status SET status = ?2, failure_reason = ?3, \
         source_account_id = ?4, destination_account_id = ?5, amount_minor = ?6, currency = ?7, legs = ?8, \
         version = ?9, created_at = ?10, updated_at = ?11 \
     WHERE transfer_id = ?1 AND version = ?12";

const UPSERT_TRANSFER: &str = "INSERT INTO transfer_status (transfer_id, status, failure_reason, \
         source_account_id, destination_account_id, amount_minor, currency, legs, version, created_at, \
         updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT (transfer_id) DO UPDATE SET status = excluded.status, \
         failure_reason = excluded.failure_reason, source_account_id = excluded.source_account_id, \
         destination_account_id = excluded.destination_account_id, amount_minor = excluded.amount_minor, \
         currency = excluded.currency, legs = excluded.legs, version = excluded.version, \
         created_at = excluded.created_at, updated_at = excluded.updated_at";

const PUT_REBUILD: &str = "INSERT INTO rebuild_jobs \
     (rebuild_id, status, streams_rebuilt, events_replayed, last_stream_id, error, started_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (rebuild_id) DO UPDATE SET status = excluded.status, \
         streams_rebuilt = excluded.streams_rebuilt, events_replayed = excluded.events_replayed, \
         last_stream_id = excluded.last_stream_id, error = excluded.error, \
         started_at = excluded.started_at, updated_at = excluded.updated_at";

const GET_REBUILD: &str = "SELECT rebuild_id, status, streams_rebuilt, events_replayed, last_stream_id, \
         error, started_at, updated_at \
     FROM rebuild_jobs WHERE rebuild_id = ?1";

fn version_column(row: &Row<'_>, name: &str) -> Result<u64, StoreError> {
    let value: i64 = row.get(name).map_err(|e| sql_error(&e))?;
    to_u64(name, value)
}

fn time_column(row: &Row<'_>, name: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    let value: i64 = row.get(name).map_err(|e| sql_error(&e))?;
    from_micros(name, value)
}

/// Snapshots in the `snapshots` table, newest per stream.
#[derive(Debug)]
pub struct SqliteSnapshotStore {
    db: Arc<Db>,
}

impl SqliteSnapshotStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SnapshotStore for SqliteSnapshotStore {
    async fn load(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.db
            .readers
            .lookup(move |conn| {
                one(conn, LOAD_SNAPSHOT, [stream_id], |row| {
                    let schema_version: i64 = row.get("schema_version").map_err(|e| sql_error(&e))?;
                    let state: String = row.get("state").map_err(|e| sql_error(&e))?;
                    Ok(Snapshot {
                        stream_id: row.get("stream_id").map_err(|e| sql_error(&e))?,
                        version: version_column(row, "version")?,
                        schema_version: u32::try_from(schema_version)
                            .map_err(|e| decode_error("snapshot schema version", e))?,
                        state: from_json("snapshot state", &state)?,
                    })
                })
            })
            .await
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let version = to_i64("snapshot version", snapshot.version)?;
        let state = to_json("snapshot state", &snapshot.state)?;
        self.db
            .writer
            .write(move |conn| {
                execute(
                    conn,
                    SAVE_SNAPSHOT,
                    (&snapshot.stream_id, version, i64::from(snapshot.schema_version), state),
                )
                .map(|_| ())
            })
            .await
    }
}

/// The `account_summary`, `account_statement` and `projection_checkpoints` tables.
#[derive(Debug)]
pub struct SqliteReadModelStore {
    db: Arc<Db>,
}

impl SqliteReadModelStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

fn checkpoint_in(conn: &Connection, stream_id: &str) -> Result<u64, StoreError> {
    Ok(one(conn, CHECKPOINT, [stream_id], |row| version_column(row, "version"))?.unwrap_or(0))
}

fn upsert_summary(conn: &Connection, s: &AccountSummary) -> Result<(), StoreError> {
    execute(
        conn,
        UPSERT_SUMMARY,
        (
            &s.account_id,
            &s.owner_id,
            s.currency.code(),
            s.status.as_str(),
            s.balance_minor,
            s.held_minor,
            to_i64("summary version", s.version)?,
            micros(s.created_at),
            micros(s.updated_at),
        ),
    )
    .map(|_| ())
}

fn upsert_statement(conn: &Connection, entries: &[StatementEntry]) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(UPSERT_STATEMENT).map_err(|e| sql_error(&e))?;
    for e in entries {
        statement
            .execute((
                &e.account_id,
                to_i64("statement version", e.stream_version)?,
                e.event_id.to_string(),
                &e.event_type,
                micros(e.occurred_at),
                e.amount_minor,
                e.currency.as_ref().map(Currency::code),
                &e.transaction_id,
                e.balance_after_minor,
                &e.reason,
            ))
            .map_err(|err| sql_error(&err))?;
    }
    Ok(())
}

fn apply_in(conn: &Connection, change: &ProjectionChange) -> Result<(), StoreError> {
    let expected = to_i64("checkpoint", change.expected_checkpoint)?;
    let new = to_i64("checkpoint", change.new_checkpoint)?;
    let moved = if expected == 0 {
        execute(conn, MOVE_CHECKPOINT_FROM_ZERO, (&change.stream_id, new))?
    } else {
        execute(conn, MOVE_CHECKPOINT, (&change.stream_id, expected, new))?
    };
    if moved == 0 {
        return Err(StoreError::CheckpointMoved {
            stream_id: change.stream_id.clone(),
            expected: change.expected_checkpoint,
            actual: checkpoint_in(conn, &change.stream_id)?,
        });
    }
    upsert_statement(conn, &change.statement)?;
    if let Some(summary) = &change.summary {
        upsert_summary(conn, summary)?;
    }
    Ok(())
}

fn replace_in(conn: &Connection, replacement: &ProjectionReplacement) -> Result<(), StoreError> {
    let checkpoint = to_i64("checkpoint", replacement.checkpoint)?;
    execute(conn, SET_CHECKPOINT, (&replacement.stream_id, checkpoint))?;
    execute(conn, DELETE_STATEMENT, [&replacement.account_id])?;
    upsert_statement(conn, &replacement.statement)?;
    match &replacement.summary {
        Some(summary) => upsert_summary(conn, summary),
        None => execute(conn, DELETE_SUMMARY, [&replacement.account_id]).map(|_| ()),
    }
}

fn summary(row: &Row<'_>) -> Result<AccountSummary, StoreError> {
    let code: String = row.get("currency").map_err(|e| sql_error(&e))?;
    let status: String = row.get("status").map_err(|e| sql_error(&e))?;
    Ok(AccountSummary {
        account_id: row.get("account_id").map_err(|e| sql_error(&e))?,
        owner_id: row.get("owner_id").map_err(|e| sql_error(&e))?,
        currency: currency(&code)?,
        status: account_status(&status)?,
        balance_minor: row.get("balance_minor").map_err(|e| sql_error(&e))?,
        held_minor: row.get("held_minor").map_err(|e| sql_error(&e))?,
        version: version_column(row, "version")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
    })
}

fn statement_entry(row: &Row<'_>) -> Result<StatementEntry, StoreError> {
    let event_id: String = row.get("event_id").map_err(|e| sql_error(&e))?;
    let code: Option<String> = row.get("currency").map_err(|e| sql_error(&e))?;
    Ok(StatementEntry {
        event_id: to_uuid("statement event id", &event_id)?,
        account_id: row.get("account_id").map_err(|e| sql_error(&e))?,
        stream_version: version_column(row, "stream_version")?,
        event_type: row.get("event_type").map_err(|e| sql_error(&e))?,
        occurred_at: time_column(row, "occurred_at")?,
        amount_minor: row.get("amount_minor").map_err(|e| sql_error(&e))?,
        currency: code.as_deref().map(currency).transpose()?,
        transaction_id: row.get("transaction_id").map_err(|e| sql_error(&e))?,
        balance_after_minor: row.get("balance_after_minor").map_err(|e| sql_error(&e))?,
        reason: row.get("reason").map_err(|e| sql_error(&e))?,
    })
}

#[async_trait]
impl ReadModelStore for SqliteReadModelStore {
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
        let stream_id = stream_id.to_owned();
        self.db.readers.lookup(move |conn| checkpoint_in(conn, &stream_id)).await
    }

    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
        self.db.writer.write(move |conn| apply_in(conn, &change)).await
    }

    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
        replacement.validate()?;
        self.db.writer.write(move |conn| replace_in(conn, &replacement)).await
    }

    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
        let account_id = account_id.to_owned();
        self.db.readers.lookup(move |conn| one(conn, SELECT_SUMMARY, [account_id], summary)).await
    }

    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError> {
        let (offset, limit) = (clamp_i64(offset), clamp_i64(limit));
        let account_id = account_id.to_owned();
        self.db
            .readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(SELECT_STATEMENT).map_err(|e| sql_error(&e))?;
                collect(&mut statement, (account_id, offset, limit), statement_entry)
            })
            .await
    }
}

/// The `transfer_status` table: one row per transfer, its `version` the row's checkpoint.
#[derive(Debug)]
pub struct SqliteTransferStatusStore {
    db: Arc<Db>,
}

impl SqliteTransferStatusStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

/// A row's values in `INSERT` order (?1 .. ?11).
type TransferValues =
    (String, &'static str, Option<String>, String, String, i64, String, String, i64, i64, i64);

fn transfer_values(s: &TransferStatus) -> Result<TransferValues, StoreError> {
    Ok((
        s.transfer_id.clone(),
        s.status.as_str(),
        s.failure_reason.clone(),
        s.source_account_id.clone(),
        s.destination_account_id.clone(),
        s.amount_minor,
        s.currency.code().to_owned(),
        to_json("transfer legs", &s.legs)?,
        to_i64("transfer status version", s.version)?,
        micros(s.created_at),
        micros(s.updated_at),
    ))
}

fn transfer_status(row: &Row<'_>) -> Result<TransferStatus, StoreError> {
    let status: String = row.get("status").map_err(|e| sql_error(&e))?;
    let code: String = row.get("currency").map_err(|e| sql_error(&e))?;
    let legs: String = row.get("legs").map_err(|e| sql_error(&e))?;
    Ok(TransferStatus {
        transfer_id: row.get("transfer_id").map_err(|e| sql_error(&e))?,
        status: transfer_phase(&status)?,
        failure_reason: row.get("failure_reason").map_err(|e| sql_error(&e))?,
        source_account_id: row.get("source_account_id").map_err(|e| sql_error(&e))?,
        destination_account_id: row.get("destination_account_id").map_err(|e| sql_error(&e))?,
        amount_minor: row.get("amount_minor").map_err(|e| sql_error(&e))?,
        currency: currency(&code)?,
        legs: from_json("transfer legs", &legs)?,
        version: version_column(row, "version")?,
        created_at: time_column(row, "created_at")?,
        updated_at: time_column(row, "updated_at")?,
    })
}

#[async_trait]
impl TransferStatusStore for SqliteTransferStatusStore {
    async fn get(&self, transfer_id: &str) -> Result<Option<TransferStatus>, StoreError> {
        let transfer_id = transfer_id.to_owned();
        self.db.readers.lookup(move |conn| one(conn, SELECT_TRANSFER, [transfer_id], transfer_status)).await
    }

    async fn apply(&self, expected_version: u64, status: TransferStatus) -> Result<(), StoreError> {
        let values = transfer_values(&status)?;
        let expected = to_i64("checkpoint", expected_version)?;
        self.db
            .writer
            .write(move |conn| {
                // One conditional statement: the row moves only from the version the projector read.
                let moved = if expected == 0 {
                    execute(conn, INSERT_TRANSFER, values)?
                } else {
                    let (a, b, c, d, e, f, g, h, i, j, k) = values;
                    execute(conn, UPDATE_TRANSFER_FROM, (a, b, c, d, e, f, g, h, i, j, k, expected))?
                };
                if moved > 0 {
                    return Ok(());
                }
                let actual =
                    one(conn, TRANSFER_VERSION, [&status.transfer_id], |row| version_column(row, "version"))?;
                Err(StoreError::CheckpointMoved {
                    stream_id: StreamKind::Transfer.stream_id(&status.transfer_id),
                    expected: expected_version,
                    actual: actual.unwrap_or(0),
                })
            })
            .await
    }

    async fn replace(&self, status: TransferStatus) -> Result<(), StoreError> {
        let values = transfer_values(&status)?;
        self.db.writer.write(move |conn| execute(conn, UPSERT_TRANSFER, values).map(|_| ())).await
    }

    async fn pending(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TransferStatus>, StoreError> {
        let (before, limit) = (micros(updated_before), clamp_i64(limit));
        self.db
            .readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(PENDING_TRANSFERS).map_err(|e| sql_error(&e))?;
                collect(&mut statement, (before, limit), transfer_status)
            })
            .await
    }
}

/// Rebuild-all jobs in the `rebuild_jobs` table.
#[derive(Debug)]
pub struct SqliteRebuildJobStore {
    db: Arc<Db>,
}

impl SqliteRebuildJobStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

fn rebuild_job(row: &Row<'_>) -> Result<RebuildJob, StoreError> {
    let status: String = row.get("status").map_err(|e| sql_error(&e))?;
    Ok(RebuildJob {
        rebuild_id: row.get("rebuild_id").map_err(|e| sql_error(&e))?,
        status: RebuildStatus::from_stored(&status)?,
        streams_rebuilt: version_column(row, "streams_rebuilt")?,
        events_replayed: version_column(row, "events_replayed")?,
        last_stream_id: row.get("last_stream_id").map_err(|e| sql_error(&e))?,
        error: row.get("error").map_err(|e| sql_error(&e))?,
        started_at: time_column(row, "started_at")?,
        updated_at: time_column(row, "updated_at")?,
    })
}

#[async_trait]
impl RebuildJobStore for SqliteRebuildJobStore {
    async fn put(&self, job: RebuildJob) -> Result<(), StoreError> {
        let streams_rebuilt = to_i64("streams rebuilt", job.streams_rebuilt)?;
        let events_replayed = to_i64("events replayed", job.events_replayed)?;
        self.db
            .writer
            .write(move |conn| {
                execute(
                    conn,
                    PUT_REBUILD,
                    (
                        &job.rebuild_id,
                        job.status.as_str(),
                        streams_rebuilt,
                        events_replayed,
                        &job.last_stream_id,
                        &job.error,
                        micros(job.started_at),
                        micros(job.updated_at),
                    ),
                )
                .map(|_| ())
            })
            .await
    }

    async fn get(&self, rebuild_id: &str) -> Result<Option<RebuildJob>, StoreError> {
        let rebuild_id = rebuild_id.to_owned();
        self.db.readers.lookup(move |conn| one(conn, GET_REBUILD, [rebuild_id], rebuild_job)).await
    }
}
