//! Snapshots, the account read tables with their checkpoints, and rebuild jobs.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corebank_domain::Currency;
use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::Row;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::{abandon, clamp_i64, column, db_error, pool_error, to_i32, to_i64, to_u32, to_u64};
use crate::sql::{account_status, currency};
use crate::{
    AccountSummary, ProjectionChange, ProjectionReplacement, ReadModelStore, RebuildJob, RebuildJobStore,
    RebuildStatus, Snapshot, SnapshotStore, StatementEntry, StoreError,
};

const LOAD_SNAPSHOT: &str =
    "SELECT stream_id, version, schema_version, state FROM snapshots WHERE stream_id = $1";

/// Keeps the newest snapshot: an older one arriving late changes nothing.
const SAVE_SNAPSHOT: &str = "INSERT INTO snapshots AS s (stream_id, version, schema_version, state) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, \
         schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, saved_at = now() \
     WHERE s.version < EXCLUDED.version";

const CHECKPOINT: &str = "SELECT version FROM projection_checkpoints WHERE stream_id = $1";

/// From checkpoint 0, which is also what an absent row means.
const MOVE_CHECKPOINT_FROM_ZERO: &str = "INSERT INTO projection_checkpoints AS c (stream_id, version) \
     VALUES ($1, $2) \
     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, updated_at = now() \
     WHERE c.version = 0 \
     RETURNING version";

const MOVE_CHECKPOINT: &str = "UPDATE projection_checkpoints SET version = $3, updated_at = now() \
     WHERE stream_id = $1 AND version = $2 RETURNING version";

const SET_CHECKPOINT: &str = "INSERT INTO projection_checkpoints (stream_id, version) VALUES ($1, $2) \
     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, updated_at = now()";

const UPSERT_SUMMARY: &str = "INSERT INTO account_summary \
     (account_id, owner_id, currency, status, balance_minor, held_minor, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (account_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, currency = EXCLUDED.currency, \
         status = EXCLUDED.status, balance_minor = EXCLUDED.balance_minor, \
         held_minor = EXCLUDED.held_minor, version = EXCLUDED.version, \
         created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at";

const DELETE_SUMMARY: &str = "DELETE FROM account_summary WHERE account_id = $1";

const UPSERT_SUMMARIES: &str = "INSERT INTO account_summary \
     (account_id, owner_id, currency, status, balance_minor, held_minor, version, created_at, updated_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
                          $7::bigint[], $8::timestamptz[], $9::timestamptz[]) \
     ON CONFLICT (account_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, currency = EXCLUDED.currency, \
         status = EXCLUDED.status, balance_minor = EXCLUDED.balance_minor, \
         held_minor = EXCLUDED.held_minor, version = EXCLUDED.version, \
         created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at";

const DELETE_SUMMARIES: &str = "DELETE FROM account_summary WHERE account_id = ANY($1::text[])";

const CHECKPOINTS: &str = "SELECT stream_id, version FROM projection_checkpoints \
     WHERE stream_id = ANY($1::text[])";

const SUMMARIES: &str = "SELECT account_id, owner_id, currency, status, balance_minor, held_minor, \
         version, created_at, updated_at \
     FROM account_summary WHERE account_id = ANY($1::text[])";

/// Moves each checkpoint from its expected version, and names the streams it moved. A checkpoint
/// expected at 0 may have no row yet.
const MOVE_CHECKPOINTS: &str = "WITH wanted AS ( \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS w(stream_id, expected, new) \
     ), moved AS ( \
         UPDATE projection_checkpoints c SET version = w.new, updated_at = now() \
         FROM wanted w WHERE c.stream_id = w.stream_id AND c.version = w.expected AND w.expected > 0 \
         RETURNING c.stream_id \
     ), started AS ( \
         INSERT INTO projection_checkpoints AS c (stream_id, version) \
         SELECT stream_id, new FROM wanted WHERE expected = 0 \
         ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, updated_at = now() \
         WHERE c.version = 0 \
         RETURNING c.stream_id \
     ) \
     SELECT stream_id FROM moved UNION ALL SELECT stream_id FROM started";

const SET_CHECKPOINTS: &str = "INSERT INTO projection_checkpoints (stream_id, version) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, updated_at = now()";

const COPY_STATEMENTS: &str = "COPY account_statement \
     (account_id, stream_version, event_id, event_type, occurred_at, amount_minor, currency, \
      transaction_id, balance_after_minor, reason) FROM STDIN (FORMAT binary)";

/// The column types of [`COPY_STATEMENTS`], in its order.
const STATEMENT_TYPES: [Type; 10] = [
    Type::TEXT,
    Type::INT8,
    Type::UUID,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
];

const DELETE_STATEMENTS: &str = "DELETE FROM account_statement WHERE account_id = ANY($1::text[])";

const SELECT_SUMMARY: &str = "SELECT account_id, owner_id, currency, status, balance_minor, held_minor, \
         version, created_at, updated_at \
     FROM account_summary WHERE account_id = $1";

const UPSERT_STATEMENT: &str = "INSERT INTO account_statement \
     (account_id, stream_version, event_id, event_type, occurred_at, amount_minor, currency, \
      transaction_id, balance_after_minor, reason) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::timestamptz[], \
                          $6::bigint[], $7::text[], $8::text[], $9::bigint[], $10::text[]) \
     ON CONFLICT (account_id, stream_version) DO UPDATE SET event_id = EXCLUDED.event_id, \
         event_type = EXCLUDED.event_type, occurred_at = EXCLUDED.occurred_at, \
         amount_minor = EXCLUDED.amount_minor, currency = EXCLUDED.currency, \
         transaction_id = EXCLUDED.transaction_id, balance_after_minor = EXCLUDED.balance_after_minor, \
         reason = EXCLUDED.reason";

const DELETE_STATEMENT: &str = "DELETE FROM account_statement WHERE account_id = $1";

const SELECT_STATEMENT: &str = "SELECT account_id, stream_version, event_id, event_type, occurred_at, \
         amount_minor, currency, transaction_id, balance_after_minor, reason \
     FROM account_statement WHERE account_id = $1 ORDER BY stream_version OFFSET $2 LIMIT $3";

const PUT_REBUILD: &str = "INSERT INTO rebuild_jobs \
     (rebuild_id, status, streams_rebuilt, events_replayed, last_stream_id, error, started_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (rebuild_id) DO UPDATE SET status = EXCLUDED.status, \
         streams_rebuilt = EXCLUDED.streams_rebuilt, events_replayed = EXCLUDED.events_replayed, \
         last_stream_id = EXCLUDED.last_stream_id, error = EXCLUDED.error, \
         started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at";

const GET_REBUILD: &str = "SELECT rebuild_id, status, streams_rebuilt, events_replayed, last_stream_id, error, \
         started_at, updated_at \
     FROM rebuild_jobs WHERE rebuild_id = $1";

/// Snapshots in the `snapshots` table, newest per stream.
#[derive(Debug, Clone)]
pub struct PgSnapshotStore {
    pool: Pool,
}

impl PgSnapshotStore {
    /// A snapshot store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl SnapshotStore for PgSnapshotStore {
    async fn load(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(LOAD_SNAPSHOT).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&stream_id]).await.map_err(|e| db_error(&e))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Snapshot {
            stream_id: column(&row, "stream_id")?,
            version: to_u64("snapshot version", column(&row, "version")?)?,
            schema_version: to_u32("snapshot schema version", column(&row, "schema_version")?)?,
            state: column(&row, "state")?,
        }))
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let version = to_i64("snapshot version", snapshot.version)?;
        let schema_version = to_i32("snapshot schema version", snapshot.schema_version)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SAVE_SNAPSHOT).await.map_err(|e| db_error(&e))?;
        client
            .execute(&statement, &[&snapshot.stream_id, &version, &schema_version, &snapshot.state])
            .await
            .map_err(|e| db_error(&e))?;
        Ok(())
    }
}

/// The `account_summary`, `account_statement` and `projection_checkpoints` tables.
#[derive(Debug, Clone)]
pub struct PgReadModelStore {
    pool: Pool,
    async_commit: bool,
}

impl PgReadModelStore {
    /// A read-model store over `pool`; every write waits for its WAL flush.
    pub fn new(pool: Pool) -> Self {
        Self { pool, async_commit: false }
    }

    /// Lets [`ReadModelStore::apply`] commit without waiting for the WAL flush
    /// (`synchronous_commit = off` for that transaction). The write is visible to every session as soon
    /// as the commit returns; a server crash can lose the last fraction of a second of applies, each
    /// together with its checkpoint, so the read tables stay consistent but behind. Only for a consumer
    /// that replays the events after a restart, such as the embedded pipeline, which starts from the
    /// beginning of the feed and lets the checkpoints skip what is already applied. A consumer that
    /// records its own position elsewhere (a Kafka group offset) must keep the default.
    #[must_use]
    pub fn with_async_commit(mut self, on: bool) -> Self {
        self.async_commit = on;
        self
    }
}

impl PgReadModelStore {
    /// A transaction for projection writes, without waiting for the WAL flush when
    /// [`PgReadModelStore::with_async_commit`] said so.
    async fn projection_transaction<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
    ) -> Result<Transaction<'a>, StoreError> {
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        if self.async_commit
            && let Err(e) = tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await
        {
            abandon(tx).await;
            return Err(db_error(&e));
        }
        Ok(tx)
    }
}

/// Commits `tx` when the work in it succeeded, else rolls it back; the work's answer either way.
async fn finish<T>(tx: Transaction<'_>, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
    match outcome {
        Ok(value) => {
            tx.commit().await.map_err(|e| db_error(&e))?;
            Ok(value)
        }
        Err(e) => {
            abandon(tx).await;
            Err(e)
        }
    }
}

/// Statement rows as column arrays for `UNNEST`, one row per (account, version): within one write the
/// last row given for a version wins, as in the memory adapter.
struct StatementColumns<'a> {
    account_ids: Vec<&'a str>,
    versions: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    amounts: Vec<Option<i64>>,
    currencies: Vec<Option<&'a str>>,
    transaction_ids: Vec<Option<&'a str>>,
    balances_after: Vec<Option<i64>>,
    reasons: Vec<Option<&'a str>>,
}

impl<'a> StatementColumns<'a> {
    fn new(entries: &'a [StatementEntry]) -> Result<Self, StoreError> {
        let mut unique: BTreeMap<(&str, u64), &StatementEntry> = BTreeMap::new();
        for entry in entries {
            unique.insert((&entry.account_id, entry.stream_version), entry);
        }
        let n = unique.len();
        let mut columns = Self {
            account_ids: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
            amounts: Vec::with_capacity(n),
            currencies: Vec::with_capacity(n),
            transaction_ids: Vec::with_capacity(n),
            balances_after: Vec::with_capacity(n),
            reasons: Vec::with_capacity(n),
        };
        for entry in unique.into_values() {
            columns.account_ids.push(&entry.account_id);
            columns.versions.push(to_i64("statement version", entry.stream_version)?);
            columns.event_ids.push(entry.event_id);
            columns.event_types.push(&entry.event_type);
            columns.occurred_at.push(entry.occurred_at);
            columns.amounts.push(entry.amount_minor);
            columns.currencies.push(entry.currency.as_ref().map(Currency::code));
            columns.transaction_ids.push(entry.transaction_id.as_deref());
            columns.balances_after.push(entry.balance_after_minor);
            columns.reasons.push(entry.reason.as_deref());
        }
        Ok(columns)
    }

    fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let params: [&(dyn ToSql + Sync); 10] = [
            &self.account_ids,
            &self.versions,
            &self.event_ids,
            &self.event_types,
            &self.occurred_at,
            &self.amounts,
            &self.currencies,
            &self.transaction_ids,
            &self.balances_after,
            &self.reasons,
        ];
        let statement = tx.prepare_cached(UPSERT_STATEMENT).await.map_err(|e| db_error(&e))?;
        tx.execute(&statement, &params).await.map_err(|e| db_error(&e))?;
        Ok(())
    }
}

impl StatementColumns<'_> {
    /// Writes the rows with `COPY`, which is several times cheaper per row than an `INSERT`, for rows
    /// that cannot be there yet: the caller deleted their accounts' rows in this transaction, after
    /// taking their checkpoints' row locks, so no projector write can slip one in.
    async fn copy_in(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let sink = tx.copy_in(COPY_STATEMENTS).await.map_err(|e| db_error(&e))?;
        let writer = BinaryCopyInWriter::new(sink, &STATEMENT_TYPES);
        tokio::pin!(writer);
        for i in 0..self.versions.len() {
            let row: [&(dyn ToSql + Sync); 10] = [
                &self.account_ids[i],
                &self.versions[i],
                &self.event_ids[i],
                &self.event_types[i],
                &self.occurred_at[i],
                &self.amounts[i],
                &self.currencies[i],
                &self.transaction_ids[i],
                &self.balances_after[i],
                &self.reasons[i],
            ];
            writer.as_mut().write(&row).await.map_err(|e| db_error(&e))?;
        }
        writer.finish().await.map_err(|e| db_error(&e))?;
        Ok(())
    }
}

async fn upsert_summary(tx: &Transaction<'_>, s: &AccountSummary) -> Result<(), StoreError> {
    let version = to_i64("summary version", s.version)?;
    let statement = tx.prepare_cached(UPSERT_SUMMARY).await.map_err(|e| db_error(&e))?;
    tx.execute(
        &statement,
        &[
            &s.account_id,
            &s.owner_id,
            &s.currency.code(),
            &s.status.as_str(),
            &s.balance_minor,
            &s.held_minor,
            &version,
            &s.created_at,
            &s.updated_at,
        ],
    )
    .await
    .map_err(|e| db_error(&e))?;
    Ok(())
}

fn summary(row: &Row) -> Result<AccountSummary, StoreError> {
    Ok(AccountSummary {
        account_id: column(row, "account_id")?,
        owner_id: column(row, "owner_id")?,
        currency: currency(column(row, "currency")?)?,
        status: account_status(column(row, "status")?)?,
        balance_minor: column(row, "balance_minor")?,
        held_minor: column(row, "held_minor")?,
        version: to_u64("summary version", column(row, "version")?)?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

fn statement_entry(row: &Row) -> Result<StatementEntry, StoreError> {
    Ok(StatementEntry {
        event_id: column(row, "event_id")?,
        account_id: column(row, "account_id")?,
        stream_version: to_u64("statement version", column(row, "stream_version")?)?,
        event_type: column(row, "event_type")?,
        occurred_at: column(row, "occurred_at")?,
        amount_minor: column(row, "amount_minor")?,
        currency: column::<Option<&str>>(row, "currency")?.map(currency).transpose()?,
        transaction_id: column(row, "transaction_id")?,
        balance_after_minor: column(row, "balance_after_minor")?,
        reason: column(row, "reason")?,
    })
}

/// Moves the checkpoint from `expected` to `new`, or reports where it is.
async fn move_checkpoint(tx: &Transaction<'_>, change: &ProjectionChange) -> Result<(), StoreError> {
    let expected = to_i64("checkpoint", change.expected_checkpoint)?;
    let new = to_i64("checkpoint", change.new_checkpoint)?;
    let stream_id = change.stream_id.as_str();
    let moved = if expected == 0 {
        let statement = tx.prepare_cached(MOVE_CHECKPOINT_FROM_ZERO).await.map_err(|e| db_error(&e))?;
        tx.query_opt(&statement, &[&stream_id, &new]).await
    } else {
        let statement = tx.prepare_cached(MOVE_CHECKPOINT).await.map_err(|e| db_error(&e))?;
        tx.query_opt(&statement, &[&stream_id, &expected, &new]).await
    }
    .map_err(|e| db_error(&e))?;
    if moved.is_some() {
        return Ok(());
    }
    let statement = tx.prepare_cached(CHECKPOINT).await.map_err(|e| db_error(&e))?;
    let row = tx.query_opt(&statement, &[&stream_id]).await.map_err(|e| db_error(&e))?;
    let actual = match row {
        Some(row) => to_u64("checkpoint", column(&row, "version")?)?,
        None => 0,
    };
    Err(StoreError::CheckpointMoved {
        stream_id: change.stream_id.clone(),
        expected: change.expected_checkpoint,
        actual,
    })
}

async fn apply_in(tx: &Transaction<'_>, change: &ProjectionChange) -> Result<(), StoreError> {
    let rows = StatementColumns::new(&change.statement)?;
    // The checkpoint moves first: its row lock queues a concurrent apply of the same stream, which
    // then finds the checkpoint moved and writes nothing.
    move_checkpoint(tx, change).await?;
    rows.upsert(tx).await?;
    if let Some(summary) = &change.summary {
        upsert_summary(tx, summary).await?;
    }
    Ok(())
}

async fn replace_in(tx: &Transaction<'_>, replacement: &ProjectionReplacement) -> Result<(), StoreError> {
    let rows = StatementColumns::new(&replacement.statement)?;
    let checkpoint = to_i64("checkpoint", replacement.checkpoint)?;
    let statement = tx.prepare_cached(SET_CHECKPOINT).await.map_err(|e| db_error(&e))?;
    tx.execute(&statement, &[&replacement.stream_id, &checkpoint]).await.map_err(|e| db_error(&e))?;
    let statement = tx.prepare_cached(DELETE_STATEMENT).await.map_err(|e| db_error(&e))?;
    tx.execute(&statement, &[&replacement.account_id]).await.map_err(|e| db_error(&e))?;
    rows.upsert(tx).await?;
    match &replacement.summary {
        Some(summary) => upsert_summary(tx, summary).await,
        None => {
            let statement = tx.prepare_cached(DELETE_SUMMARY).await.map_err(|e| db_error(&e))?;
            tx.execute(&statement, &[&replacement.account_id]).await.map_err(|e| db_error(&e))?;
            Ok(())
        }
    }
}

/// Many changes in three statements whatever their number: the checkpoints that move, then the
/// statement rows and summaries of the changes whose checkpoint moved. A stream given twice is an
/// invalid call (its second change could only find the checkpoint moved by the first).
async fn apply_all_in(tx: &Transaction<'_>, changes: &[ProjectionChange]) -> Result<Vec<bool>, StoreError> {
    let mut stream_ids: Vec<&str> = Vec::with_capacity(changes.len());
    let mut expected = Vec::with_capacity(changes.len());
    let mut new = Vec::with_capacity(changes.len());
    for change in changes {
        stream_ids.push(&change.stream_id);
        expected.push(to_i64("checkpoint", change.expected_checkpoint)?);
        new.push(to_i64("checkpoint", change.new_checkpoint)?);
    }
    let distinct: std::collections::HashSet<&str> = stream_ids.iter().copied().collect();
    if distinct.len() != stream_ids.len() {
        return Err(StoreError::Invalid("a stream appears twice among the changes".to_owned()));
    }
    let statement = tx.prepare_cached(MOVE_CHECKPOINTS).await.map_err(|e| db_error(&e))?;
    let rows = tx.query(&statement, &[&stream_ids, &expected, &new]).await.map_err(|e| db_error(&e))?;
    let mut moved: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(rows.len());
    for row in &rows {
        moved.insert(column(row, "stream_id")?);
    }
    let applied: Vec<bool> = changes.iter().map(|c| moved.contains(&c.stream_id)).collect();
    let entries: Vec<StatementEntry> = changes
        .iter()
        .zip(&applied)
        .filter(|(_, applied)| **applied)
        .flat_map(|(c, _)| c.statement.iter().cloned())
        .collect();
    StatementColumns::new(&entries)?.upsert(tx).await?;
    let mut summaries = SummaryColumns::default();
    for (change, applied) in changes.iter().zip(&applied) {
        if let (true, Some(summary)) = (applied, &change.summary) {
            summaries.push(summary)?;
        }
    }
    summaries.upsert(tx).await?;
    Ok(applied)
}

/// Many replacements in four statements whatever their number: the checkpoints, the old statement
/// rows out, the new ones in, the summaries. Where one stream or account comes twice, the last
/// replacement given wins, as if they had been applied one after another.
async fn replace_all_in(
    tx: &Transaction<'_>,
    replacements: &[ProjectionReplacement],
) -> Result<(), StoreError> {
    let mut checkpoints: BTreeMap<&str, i64> = BTreeMap::new();
    let mut accounts: BTreeMap<&str, &ProjectionReplacement> = BTreeMap::new();
    for replacement in replacements {
        checkpoints.insert(&replacement.stream_id, to_i64("checkpoint", replacement.checkpoint)?);
        accounts.insert(&replacement.account_id, replacement);
    }
    let (stream_ids, versions): (Vec<&str>, Vec<i64>) = checkpoints.into_iter().unzip();
    let statement = tx.prepare_cached(SET_CHECKPOINTS).await.map_err(|e| db_error(&e))?;
    tx.execute(&statement, &[&stream_ids, &versions]).await.map_err(|e| db_error(&e))?;

    let account_ids: Vec<&str> = accounts.keys().copied().collect();
    let statement = tx.prepare_cached(DELETE_STATEMENTS).await.map_err(|e| db_error(&e))?;
    tx.execute(&statement, &[&account_ids]).await.map_err(|e| db_error(&e))?;
    let entries: Vec<StatementEntry> = accounts.values().flat_map(|r| r.statement.iter().cloned()).collect();
    StatementColumns::new(&entries)?.copy_in(tx).await?;

    let mut gone: Vec<&str> = Vec::new();
    let mut summaries = SummaryColumns::default();
    for (account_id, replacement) in &accounts {
        match &replacement.summary {
            Some(summary) => summaries.push(summary)?,
            None => gone.push(account_id),
        }
    }
    if !gone.is_empty() {
        let statement = tx.prepare_cached(DELETE_SUMMARIES).await.map_err(|e| db_error(&e))?;
        tx.execute(&statement, &[&gone]).await.map_err(|e| db_error(&e))?;
    }
    summaries.upsert(tx).await
}

/// Summary rows as column arrays for `UNNEST`.
#[derive(Default)]
struct SummaryColumns<'a> {
    account_ids: Vec<&'a str>,
    owner_ids: Vec<&'a str>,
    currencies: Vec<&'a str>,
    statuses: Vec<&'a str>,
    balances: Vec<i64>,
    held: Vec<i64>,
    versions: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
}

impl<'a> SummaryColumns<'a> {
    fn push(&mut self, s: &'a AccountSummary) -> Result<(), StoreError> {
        self.account_ids.push(&s.account_id);
        self.owner_ids.push(&s.owner_id);
        self.currencies.push(s.currency.code());
        self.statuses.push(s.status.as_str());
        self.balances.push(s.balance_minor);
        self.held.push(s.held_minor);
        self.versions.push(to_i64("summary version", s.version)?);
        self.created_at.push(s.created_at);
        self.updated_at.push(s.updated_at);
        Ok(())
    }

    async fn upsert(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.account_ids.is_empty() {
            return Ok(());
        }
        let params: [&(dyn ToSql + Sync); 9] = [
            &self.account_ids,
            &self.owner_ids,
            &self.currencies,
            &self.statuses,
            &self.balances,
            &self.held,
            &self.versions,
            &self.created_at,
            &self.updated_at,
        ];
        let statement = tx.prepare_cached(UPSERT_SUMMARIES).await.map_err(|e| db_error(&e))?;
        tx.execute(&statement, &params).await.map_err(|e| db_error(&e))?;
        Ok(())
    }
}

#[async_trait]
impl ReadModelStore for PgReadModelStore {
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(CHECKPOINT).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&stream_id]).await.map_err(|e| db_error(&e))?;
        match row {
            Some(row) => to_u64("checkpoint", column(&row, "version")?),
            None => Ok(0),
        }
    }

    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let tx = self.projection_transaction(&mut client).await?;
        let outcome = apply_in(&tx, &change).await;
        finish(tx, outcome).await
    }

    async fn checkpoints(&self, stream_ids: &[String]) -> Result<Vec<u64>, StoreError> {
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(CHECKPOINTS).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&stream_ids]).await.map_err(|e| db_error(&e))?;
        let mut found: HashMap<String, u64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            found.insert(column(row, "stream_id")?, to_u64("checkpoint", column(row, "version")?)?);
        }
        Ok(stream_ids.iter().map(|id| found.get(id).copied().unwrap_or(0)).collect())
    }

    async fn summaries(&self, account_ids: &[String]) -> Result<Vec<Option<AccountSummary>>, StoreError> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SUMMARIES).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&account_ids]).await.map_err(|e| db_error(&e))?;
        let mut found: HashMap<String, AccountSummary> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let s = summary(row)?;
            found.insert(s.account_id.clone(), s);
        }
        Ok(account_ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    async fn apply_all(&self, changes: Vec<ProjectionChange>) -> Result<Vec<bool>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let tx = self.projection_transaction(&mut client).await?;
        let outcome = apply_all_in(&tx, &changes).await;
        finish(tx, outcome).await
    }

    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
        replacement.validate()?;
        let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        let outcome = replace_in(&tx, &replacement).await;
        finish(tx, outcome).await
    }

    async fn replace_all(&self, replacements: Vec<ProjectionReplacement>) -> Result<(), StoreError> {
        for replacement in &replacements {
            replacement.validate()?;
        }
        if replacements.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        let outcome = replace_all_in(&tx, &replacements).await;
        finish(tx, outcome).await
    }

    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SELECT_SUMMARY).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&account_id]).await.map_err(|e| db_error(&e))?;
        row.as_ref().map(summary).transpose()
    }

    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError> {
        let (offset, limit) = (clamp_i64(offset), clamp_i64(limit));
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SELECT_STATEMENT).await.map_err(|e| db_error(&e))?;
        let rows =
            client.query(&statement, &[&account_id, &offset, &limit]).await.map_err(|e| db_error(&e))?;
        rows.iter().map(statement_entry).collect()
    }
}

/// Rebuild-all jobs in the `rebuild_jobs` table.
#[derive(Debug, Clone)]
pub struct PgRebuildJobStore {
    pool: Pool,
}

impl PgRebuildJobStore {
    /// A rebuild-job store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl RebuildJobStore for PgRebuildJobStore {
    async fn put(&self, job: RebuildJob) -> Result<(), StoreError> {
        let streams_rebuilt = to_i64("streams rebuilt", job.streams_rebuilt)?;
        let events_replayed = to_i64("events replayed", job.events_replayed)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(PUT_REBUILD).await.map_err(|e| db_error(&e))?;
        client
            .execute(
                &statement,
                &[
                    &job.rebuild_id,
                    &job.status.as_str(),
                    &streams_rebuilt,
                    &events_replayed,
                    &job.last_stream_id,
                    &job.error,
                    &job.started_at,
                    &job.updated_at,
                ],
            )
            .await
            .map_err(|e| db_error(&e))?;
        Ok(())
    }

    async fn get(&self, rebuild_id: &str) -> Result<Option<RebuildJob>, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(GET_REBUILD).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&rebuild_id]).await.map_err(|e| db_error(&e))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RebuildJob {
            rebuild_id: column(&row, "rebuild_id")?,
            status: RebuildStatus::from_stored(column(&row, "status")?)?,
            streams_rebuilt: to_u64("streams rebuilt", column(&row, "streams_rebuilt")?)?,
            events_replayed: to_u64("events replayed", column(&row, "events_replayed")?)?,
            last_stream_id: column(&row, "last_stream_id")?,
            error: column(&row, "error")?,
            started_at: column(&row, "started_at")?,
            updated_at: column(&row, "updated_at")?,
        }))
    }
}
