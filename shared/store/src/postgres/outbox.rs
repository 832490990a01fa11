//! The transactional outbox: what the relay claims, publishes and marks.
//!
//! Every append writes one `outbox_events` row per event in the append's transaction (see
//! [`PgEventStore`](super::PgEventStore)). [`PgOutbox`] is the relay's side of that table:
//!
//! - [`PgOutbox::claim`] takes a batch of pending rows in position order with `FOR UPDATE SKIP LOCKED`
//!   and stamps them with a lease (`claimed_until`) and a claim token. A relay that dies keeps its
//!   claim only until the lease ends; then any relay takes the rows over, so a crash loses nothing.
//! - **Per-stream order.** A row is claimed only if every earlier unpublished row of its stream is
//!   claimed in the same batch. So a row waiting for its retry, a row leased by another relay, a
//!   row locked by a concurrent claim and a dead-lettered row all hold back their stream's later rows:
//!   version N+1 of a stream is never handed out before N is published.
//! - [`PgOutbox::mark_published`], [`PgOutbox::mark_failed`], [`PgOutbox::dead_letter`] and
//!   [`PgOutbox::release`] settle a claim; each acts only on rows still held under the caller's token,
//!   so a relay whose lease ran out cannot undo another relay's claim.
//! - [`PgOutbox::delete_published_before`] removes published rows after the retention, in small
//!   batches; [`PgOutbox::stats`] is what metrics and health report.
//!
//! Times (leases, backoff) are the database's clock (`now()`), so relays on hosts whose clocks
//! disagree still agree on when a lease ends.
//!
//! # Dead letters block their stream
//! A dead-lettered row is never claimed again until [`PgOutbox::requeue_dead_letters`], and the later
//! rows of its stream wait behind it ([`OutboxStats::blocked`]). That is deliberate: publishing them
//! would put a hole in the stream's order on the bus, which consumers can only see as a gap.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_domain::EventEnvelope;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use super::events::event_columns;
use super::{clamp_i64, column, db_error, pool_error, to_i64, to_u32, to_u64};
use crate::StoreError;

/// Most rows one claim may take.
pub const MAX_CLAIM_BATCH: usize = 1_000;

/// Pending rows in position order whose stream has no earlier row that waits (leased, backing off or
/// dead-lettered), locked with SKIP LOCKED. `claimable` then keeps, of each stream, the run of
/// candidates that starts at the stream's first unpublished row and has no unpublished row of the
/// stream between two of them (one skipped because another claim or a late settlement has it
/// locked), so the batch holds a prefix of each stream's pending rows.
///
/// Each check is an index probe (written as scalar subqueries, so that the planner runs them per row
/// rather than joining whole sets), so a claim costs about the same at any backlog: "is an earlier row
/// of the stream waiting?" reads `outbox_events_stream_waiting`, which holds only rows that are or
/// were leased, retried or dead-lettered (few: a row leaves it when it is published); "which
/// unpublished row comes just before?" is the newest entry below the row in
/// `outbox_events_stream_unpublished`.
const CLAIM: &str = "WITH candidates AS MATERIALIZED ( \
         SELECT o.position, o.stream_id FROM outbox_events o \
         WHERE o.published_at IS NULL AND o.dead_lettered_at IS NULL \
           AND (o.claimed_until IS NULL OR o.claimed_until <= now()) \
           AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()) \
           AND (SELECT b.position FROM outbox_events b \
                WHERE b.stream_id = o.stream_id AND b.position < o.position AND b.published_at IS NULL \
                  AND (b.dead_lettered_at IS NOT NULL OR b.claimed_until IS NOT NULL OR b.next_attempt_at IS NOT NULL) \
                  AND (b.dead_lettered_at IS NOT NULL OR b.claimed_until > now() OR b.next_attempt_at > now()) \
                LIMIT 1) IS NULL \
         ORDER BY o.position \
         LIMIT $1 \
         FOR UPDATE OF o SKIP LOCKED \
     ), chained AS ( \
         SELECT c.position, c.stream_id, \
                (SELECT max(e.position) FROM outbox_events e \
                 WHERE e.stream_id = c.stream_id AND e.position < c.position AND e.published_at IS NULL) \
                    IS NOT DISTINCT FROM lag(c.position) OVER (PARTITION BY c.stream_id ORDER BY c.position) \
                    AS follows \
         FROM candidates c \
     ), claimable AS ( \
         SELECT position FROM ( \
             SELECT position, bool_and(follows) OVER (PARTITION BY stream_id ORDER BY position) AS unbroken \
             FROM chained) runs \
         WHERE unbroken \
     ), claimed AS ( \
         UPDATE outbox_events o \
         SET claimed_until = now() + $2::bigint * interval '1 millisecond', claim_token = $3 \
         FROM claimable WHERE o.position = claimable.position \
         RETURNING o.position, o.attempts, o.claimed_until \
     ) \
     SELECT e.position, e.event_id, e.stream_id, e.version, e.event_type, e.schema_version, \
            e.occurred_at, e.payload, e.metadata, c.attempts, c.claimed_until \
     FROM claimed c JOIN events e ON e.position = c.position \
     ORDER BY e.position";

const MARK_PUBLISHED: &str = "UPDATE outbox_events \
     SET published_at = now(), claimed_until = NULL, claim_token = NULL \
     WHERE position = ANY($1) AND claim_token = $2 AND published_at IS NULL";

const MARK_FAILED: &str = "UPDATE outbox_events o \
     SET attempts = o.attempts + 1, last_error = f.error, claimed_until = NULL, claim_token = NULL, \
         next_attempt_at = now() + f.delay_ms * interval '1 millisecond', \
         dead_lettered_at = CASE WHEN f.dead OR o.attempts + 1 >= $6 THEN now() END \
     FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::boolean[]) AS f(position, error, delay_ms, dead) \
     WHERE o.position = f.position AND o.claim_token = $5 AND o.published_at IS NULL \
     RETURNING o.position, o.attempts, o.dead_lettered_at IS NOT NULL AS dead";

const RELEASE: &str = "UPDATE outbox_events SET claimed_until = NULL, claim_token = NULL \
     WHERE position = ANY($1) AND claim_token = $2 AND published_at IS NULL";

const DELETE_PUBLISHED: &str = "DELETE FROM outbox_events WHERE position IN ( \
         SELECT position FROM outbox_events \
         WHERE published_at IS NOT NULL AND published_at < now() - $1::bigint * interval '1 millisecond' \
         ORDER BY published_at LIMIT $2)";

/// Idempotency records an hour or more past their TTL, oldest first: the DynamoDB TTL's counterpart.
/// The hour keeps the purge clear of records the application, whose clock decides expiry when it
/// claims a key, may still count as live. The expiry is checked again on the row being deleted, so
/// a record a claim renewed meanwhile stays; rows a claim holds locked are skipped.
const DELETE_EXPIRED_KEYS: &str = "DELETE FROM idempotency_records r USING ( \
         SELECT scope, key FROM idempotency_records \
         WHERE expires_at <= now() - interval '1 hour' \
         ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) d \
     WHERE r.scope = d.scope AND r.key = d.key AND r.expires_at <= now() - interval '1 hour'";

const REQUEUE_DEAD: &str = "UPDATE outbox_events \
     SET dead_lettered_at = NULL, attempts = 0, next_attempt_at = NULL, claimed_until = NULL, \
         claim_token = NULL \
     WHERE dead_lettered_at IS NOT NULL AND published_at IS NULL";

/// The most unpublished rows [`PgOutbox::stats`] counts: a larger backlog reads as this many, so the
/// statistics cost the same however far the relay is behind.
pub const PENDING_COUNT_MAX: u64 = 100_000;

/// The backlog's figures at a bounded cost. Everything but the count of unpublished rows reads the
/// rows that are or were leased, retried or dead-lettered (`outbox_events_stream_waiting`, few); the
/// rows blocked behind a dead letter are read only for streams that have one; the count stops at
/// [`PENDING_COUNT_MAX`]; the oldest pending row is the first by position that no dead letter
/// blocks.
const STATS: &str = "WITH waiting AS MATERIALIZED ( \
         SELECT stream_id, position, attempts, last_error, next_attempt_at, claimed_until, dead_lettered_at \
         FROM outbox_events \
         WHERE published_at IS NULL \
           AND (dead_lettered_at IS NOT NULL OR claimed_until IS NOT NULL OR next_attempt_at IS NOT NULL)), \
     first_dead AS MATERIALIZED ( \
         SELECT stream_id, min(position) AS position FROM waiting \
         WHERE dead_lettered_at IS NOT NULL GROUP BY stream_id), \
     blocked AS ( \
         SELECT count(*) AS n FROM first_dead d JOIN outbox_events o \
           ON o.stream_id = d.stream_id AND o.position > d.position \
          AND o.published_at IS NULL AND o.dead_lettered_at IS NULL), \
     unpublished AS ( \
         SELECT count(*) AS n FROM ( \
             SELECT 1 FROM outbox_events WHERE published_at IS NULL AND dead_lettered_at IS NULL \
             LIMIT 100000) u), \
     oldest AS ( \
         SELECT o.created_at FROM outbox_events o \
         WHERE o.published_at IS NULL AND o.dead_lettered_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM first_dead d WHERE d.stream_id = o.stream_id AND d.position < o.position) \
         ORDER BY o.position LIMIT 1), \
     live AS ( \
         SELECT w.* FROM waiting w \
         WHERE w.dead_lettered_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM first_dead d WHERE d.stream_id = w.stream_id AND d.position < w.position)) \
     SELECT \
         GREATEST((SELECT n FROM unpublished) - (SELECT n FROM blocked), 0) AS pending, \
         (SELECT count(*) FROM live WHERE attempts > 0) AS retrying, \
         (SELECT count(*) FROM live WHERE claimed_until > now()) AS in_flight, \
         (SELECT count(*) FROM waiting WHERE dead_lettered_at IS NOT NULL) AS dead_lettered, \
         (SELECT n FROM blocked) AS blocked, \
         (SELECT COALESCE(max(attempts), 0) FROM waiting) AS max_attempts, \
         (SELECT created_at FROM oldest) AS oldest_pending_at, \
         (SELECT min(next_attempt_at) FROM live WHERE next_attempt_at > now()) AS next_retry_at, \
         (SELECT last_error FROM waiting WHERE dead_lettered_at IS NOT NULL ORDER BY position LIMIT 1) \
             AS first_dead_letter_error, \
         (SELECT stream_id FROM waiting WHERE dead_lettered_at IS NOT NULL ORDER BY position LIMIT 1) \
             AS first_dead_letter_stream";

/// One claimed outbox row: its event and how often publishing it has failed before.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The event's global position (the outbox row's key).
    pub position: u64,
    /// Failed attempts before this claim.
    pub attempts: u32,
    /// The event to publish.
    pub envelope: EventEnvelope,
}

/// A batch of rows held under one token until `lease_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxClaim {
    /// Names this claim; settling calls must present it.
    pub token: Uuid,
    /// The rows, in position order (so each stream's rows are in version order).
    pub rows: Vec<OutboxRow>,
    /// When the lease ends (database clock) and another relay may take the rows over. `None` when
    /// nothing was claimed.
    pub lease_until: Option<DateTime<Utc>>,
}

/// A row whose publication failed and that will be tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryLater {
    /// The row.
    pub position: u64,
    /// Why it failed (kept in `last_error`).
    pub error: String,
    /// How long to wait before it may be claimed again.
    pub retry_after: Duration,
}

/// What became of the failed rows a [`PgOutbox::mark_failed`] or [`PgOutbox::dead_letter`] call
/// still held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureReport {
    /// Rows that will be retried.
    pub retrying: u64,
    /// Rows now dead-lettered.
    pub dead_lettered: u64,
}

/// The outbox backlog, as metrics and health report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStats {
    /// Unpublished rows a relay will publish (waiting, leased or backing off), not counting
    /// dead-lettered rows and the rows blocked behind them; counted up to [`PENDING_COUNT_MAX`].
    pub pending: u64,
    /// Of `pending`, rows that have failed at least once.
    pub retrying: u64,
    /// Of `pending`, rows under a live lease (being published now).
    pub in_flight: u64,
    /// Dead-lettered rows: never retried until requeued.
    pub dead_lettered: u64,
    /// Unpublished rows waiting behind a dead-lettered row of their stream.
    pub blocked: u64,
    /// The most failed attempts of any unpublished row.
    pub max_attempts: u32,
    /// When the oldest unpublished, not dead-lettered row was written: the relay's lag.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// The earliest time a row that is backing off becomes claimable again.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The stream of the first dead-lettered row, if any.
    pub first_dead_letter_stream: Option<String>,
    /// The error of the first dead-lettered row, if any.
    pub first_dead_letter_error: Option<String>,
}

/// The relay's access to `outbox_events` (see the module docs).
#[derive(Debug, Clone)]
pub struct PgOutbox {
    pool: Pool,
}

fn millis(what: &str, d: Duration) -> Result<i64, StoreError> {
    to_i64(what, u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn positions(values: &[u64]) -> Result<Vec<i64>, StoreError> {
    values.iter().map(|p| to_i64("outbox position", *p)).collect()
}

fn claimed_row(row: &Row) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        position: to_u64("outbox position", column(row, "position")?)?,
        attempts: to_u32("outbox attempts", column(row, "attempts")?)?,
        envelope: event_columns(row)?,
    })
}

impl PgOutbox {
    /// The outbox over `pool`; the schema must be migrated (migration 3 or later).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Claims up to `batch` (at most [`MAX_CLAIM_BATCH`]) pending rows for `lease`, keeping each
    /// stream's order (see the module docs). An empty claim means nothing is claimable now.
    pub async fn claim(&self, batch: usize, lease: Duration) -> Result<OutboxClaim, StoreError> {
        if batch > MAX_CLAIM_BATCH {
            return Err(StoreError::LimitExceeded {
                what: "outbox claim batch",
                limit: MAX_CLAIM_BATCH,
                actual: batch,
            });
        }
        let token = Uuid::new_v4();
        if batch == 0 {
            return Ok(OutboxClaim { token, rows: Vec::new(), lease_until: None });
        }
        let limit = clamp_i64(batch);
        let lease_ms = millis("lease", lease)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(CLAIM).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&limit, &lease_ms, &token]).await.map_err(|e| db_error(&e))?;
        let lease_until = match rows.first() {
            Some(row) => Some(column::<DateTime<Utc>>(row, "claimed_until")?),
            None => None,
        };
        let rows = rows.iter().map(claimed_row).collect::<Result<Vec<_>, _>>()?;
        Ok(OutboxClaim { token, rows, lease_until })
    }

    /// Marks rows held under `token` as published; returns how many were still held (a row whose
    /// lease ran out and that another relay took over is left to that relay).
    pub async fn mark_published(&self, token: Uuid, published: &[u64]) -> Result<u64, StoreError> {
        if published.is_empty() {
            return Ok(0);
        }
        let published = positions(published)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(MARK_PUBLISHED).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &[&published, &token]).await.map_err(|e| db_error(&e))
    }

    /// Records failed attempts of rows held under `token`: each gets `attempts + 1`, its error, and
    /// becomes claimable again after its `retry_after`. A row whose attempts reach `max_attempts` is
    /// dead-lettered instead.
    pub async fn mark_failed(
        &self,
        token: Uuid,
        failures: &[RetryLater],
        max_attempts: u32,
    ) -> Result<FailureReport, StoreError> {
        let delays =
            failures.iter().map(|f| millis("retry delay", f.retry_after)).collect::<Result<Vec<_>, _>>()?;
        let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
        let positions = positions(&failures.iter().map(|f| f.position).collect::<Vec<_>>())?;
        self.settle_failures(token, &positions, &errors, &delays, false, max_attempts).await
    }

    /// Dead-letters rows held under `token` at once (the bus refused them for what they are), with
    /// their errors.
    pub async fn dead_letter(&self, token: Uuid, failures: &[(u64, String)]) -> Result<u64, StoreError> {
        let positions = positions(&failures.iter().map(|(p, _)| *p).collect::<Vec<_>>())?;
        let errors: Vec<&str> = failures.iter().map(|(_, e)| e.as_str()).collect();
        let delays = vec![0_i64; failures.len()];
        let report = self.settle_failures(token, &positions, &errors, &delays, true, u32::MAX).await?;
        Ok(report.dead_lettered)
    }

    async fn settle_failures(
        &self,
        token: Uuid,
        positions: &[i64],
        errors: &[&str],
        delays: &[i64],
        dead: bool,
        max_attempts: u32,
    ) -> Result<FailureReport, StoreError> {
        if positions.is_empty() {
            return Ok(FailureReport::default());
        }
        let deads = vec![dead; positions.len()];
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(MARK_FAILED).await.map_err(|e| db_error(&e))?;
        let rows = client
            .query(&statement, &[&positions, &errors, &delays, &deads, &token, &max_attempts])
            .await
            .map_err(|e| db_error(&e))?;
        let mut report = FailureReport::default();
        for row in &rows {
            if column::<bool>(row, "dead")? {
                report.dead_lettered += 1;
            } else {
                report.retrying += 1;
            }
        }
        Ok(report)
    }

    /// Gives rows held under `token` back without counting an attempt (they were held back behind an
    /// earlier failure of their stream, or never handed to the bus).
    pub async fn release(&self, token: Uuid, released: &[u64]) -> Result<u64, StoreError> {
        if released.is_empty() {
            return Ok(0);
        }
        let released = positions(released)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(RELEASE).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &[&released, &token]).await.map_err(|e| db_error(&e))
    }

    /// Deletes at most `limit` rows published more than `retention` ago, oldest first; returns how
    /// many. Call it repeatedly to work through a large backlog in small transactions.
    pub async fn delete_published_before(
        &self,
        retention: Duration,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let retention_ms = millis("retention", retention)?;
        let limit = clamp_i64(limit);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(DELETE_PUBLISHED).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &[&retention_ms, &limit]).await.map_err(|e| db_error(&e))
    }

    /// Deletes at most `limit` idempotency records that expired an hour or more ago (nothing else
    /// deletes them in Postgres: a claim only overwrites an expired record of its own key); returns
    /// how many. The relay calls it with its outbox cleanup.
    pub async fn delete_expired_idempotency_records(&self, limit: usize) -> Result<u64, StoreError> {
        let limit = clamp_i64(limit);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(DELETE_EXPIRED_KEYS).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &[&limit]).await.map_err(|e| db_error(&e))
    }

    /// Puts every dead-lettered row back to pending with its attempts reset (an operator's action
    /// once the cause is fixed); returns how many.
    pub async fn requeue_dead_letters(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        client.execute(REQUEUE_DEAD, &[]).await.map_err(|e| db_error(&e))
    }

    /// The backlog: pending, retrying, dead-lettered and blocked rows, and the oldest pending row.
    pub async fn stats(&self) -> Result<OutboxStats, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(STATS).await.map_err(|e| db_error(&e))?;
        let row = client.query_one(&statement, &[]).await.map_err(|e| db_error(&e))?;
        Ok(OutboxStats {
            pending: to_u64("pending", column(&row, "pending")?)?,
            retrying: to_u64("retrying", column(&row, "retrying")?)?,
            in_flight: to_u64("in flight", column(&row, "in_flight")?)?,
            dead_lettered: to_u64("dead lettered", column(&row, "dead_lettered")?)?,
            blocked: to_u64("blocked", column(&row, "blocked")?)?,
            max_attempts: to_u32("max attempts", column(&row, "max_attempts")?)?,
            oldest_pending_at: column(&row, "oldest_pending_at")?,
            next_retry_at: column(&row, "next_retry_at")?,
            first_dead_letter_stream: column(&row, "first_dead_letter_stream")?,
            first_dead_letter_error: column(&row, "first_dead_letter_error")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statistics_count_stops_at_the_documented_bound() {
        assert!(STATS.contains(&format!("LIMIT {PENDING_COUNT_MAX})")), "{STATS}");
    }
}
