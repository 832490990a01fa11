//! Events with their guard records, idempotency claims and the commit-ordered feed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corebank_backoff::Backoff;
use corebank_domain::{EventEnvelope, EventMetadata};
use deadpool_postgres::{Pool, Transaction};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Connection, Row, Socket};
use uuid::Uuid;

use crate::sql::{prefix_upper_bound, raise};

use super::{
    abandon, clamp_i64, column, db_error, decode_error, pool_error, to_i32, to_i64, to_u32, to_u64,
    violated_unique,
};
use crate::{
    AppendOutcome, AppendRequest, ClaimOutcome, EventFeed, EventStore, IdempotencyClaim,
    IdempotencyCompletion, IdempotencyKey, IdempotencyRecord, IdempotencyState, IdempotencyStore, StoreError,
    StoredResponse, TransactionRecord,
};

/// The most feed gaps remembered at once (see [`Gaps`]); past it the lowest is forgotten, which only
/// makes a reader wait once more before it passes that gap.
const GAPS_REMEMBERED_MAX: usize = 1024;

/// Pauses before the feed listener reconnects: 100 ms doubling to 5 s, jittered; back to the start
/// after a connection that lasted longer than the longest pause.
const LISTEN_BACKOFF: Backoff = Backoff::from_millis(100, 5_000);
const LISTEN_BACKOFF_RESET: Duration = Duration::from_secs(5);

macro_rules! event_columns {
    () => {
        "position, event_id, stream_id, version, event_type, schema_version, occurred_at, payload, metadata"
    };
}

macro_rules! idempotency_columns {
    () => {
        "scope, key, operation, request_hash, state, claim_token, lease_expires_at, response_status, \
         response_body, response_code, expires_at"
    };
}

/// The channel each append notifies with its last position.
const LISTEN: &str = "LISTEN corebank_events";

const START_STREAM: &str = "INSERT INTO streams (stream_id, version) VALUES ($1, $2) \
     ON CONFLICT (stream_id) DO NOTHING RETURNING version";

const ADVANCE_STREAM: &str = "UPDATE streams SET version = $3, updated_at = now() \
     WHERE stream_id = $1 AND version = $2 RETURNING version";

const STREAM_VERSION: &str = "SELECT version FROM streams WHERE stream_id = $1";

const INSERT_TRANSACTION: &str = "INSERT INTO transaction_records \
     (transaction_id, intent, response_status, response_body, response_code, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (transaction_id) DO NOTHING RETURNING transaction_id";

const SELECT_TRANSACTION: &str = "SELECT transaction_id, intent, response_status, response_body, \
     response_code, recorded_at FROM transaction_records WHERE transaction_id = $1";

/// One statement for the events, their outbox rows and the notification: rows come out of `UNNEST` in
/// array order, so positions follow versions.
const INSERT_EVENTS: &str = "WITH inserted AS ( \
         INSERT INTO events \
             (stream_id, version, event_id, event_type, schema_version, occurred_at, payload, metadata) \
         SELECT $1, u.version, u.event_id, u.event_type, u.schema_version, u.occurred_at, u.payload, u.metadata \
         FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], $5::integer[], $6::timestamptz[], $7::jsonb[], \
                     $8::jsonb[]) \
             AS u(version, event_id, event_type, schema_version, occurred_at, payload, metadata) \
         RETURNING position, stream_id, version \
     ), outbox AS ( \
         INSERT INTO outbox_events (position, stream_id, version) \
         SELECT position, stream_id, version FROM inserted \
     ), last AS ( \
         SELECT max(position) AS position FROM inserted \
     ) \
     SELECT last.position, pg_notify('corebank_events', last.position::text)::text AS notified FROM last";

const LOAD_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version"
);

/// The events of many streams, each above its own version; the pairs come as two arrays.
const LOAD_STREAMS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM (SELECT e.* FROM UNNEST($1::text[], $2::bigint[]) AS w(stream_id, after_version) \
           JOIN events e ON e.stream_id = w.stream_id AND e.version > w.after_version) AS loaded \
     ORDER BY stream_id, version"
);

/// A feed page with the statement's own snapshot bounds: `snapshot_xmin`, the oldest transaction
/// still running, and `snapshot_xmax`, one past the newest that had finished (see [`Gaps`]).
const READ_AFTER: &str = concat!(
    "SELECT ",
    event_columns!(),
    ", s.xmin AS snapshot_xmin, s.xmax AS snapshot_xmax \
     FROM events, \
         (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin, \
                 pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax) AS s \
     WHERE position > $1 ORDER BY position LIMIT $2"
);

const HEAD: &str = "SELECT COALESCE(max(position), 0) AS head FROM events";

// Stream ids are `COLLATE "C"`, so comparisons and order are by bytes, as in Rust. A prefix becomes
// the range [prefix, upper) so the primary key index answers it.
const LIST_STREAMS: &str = "SELECT stream_id FROM streams WHERE stream_id >= $1 ORDER BY stream_id LIMIT $2";
const LIST_STREAMS_BELOW: &str =
    "SELECT stream_id FROM streams WHERE stream_id >= $1 AND stream_id < $3 ORDER BY stream_id LIMIT $2";
const LIST_STREAMS_AFTER: &str =
    "SELECT stream_id FROM streams WHERE stream_id >= $1 AND stream_id > $3 ORDER BY stream_id LIMIT $2";
const LIST_STREAMS_AFTER_BELOW: &str = "SELECT stream_id FROM streams \
     WHERE stream_id >= $1 AND stream_id > $3 AND stream_id < $4 ORDER BY stream_id LIMIT $2";

/// Takes a key that is free, past its TTL, or held under a lapsed lease by the same request (the
/// memory adapter's rule). No row back means the key stays as it is, and the conflicting row is then
/// locked by this transaction until it reads it.
const CLAIM_IDEMPOTENCY: &str = "INSERT INTO idempotency_records AS r \
     (scope, key, operation, request_hash, state, claim_token, lease_expires_at, response_status, \
      response_body, response_code, expires_at) \
     VALUES ($1, $2, $3, $4, 'in_progress', $5, $6, NULL, NULL, NULL, $7) \
     ON CONFLICT (scope, key) DO UPDATE SET \
         operation = EXCLUDED.operation, request_hash = EXCLUDED.request_hash, state = EXCLUDED.state, \
         claim_token = EXCLUDED.claim_token, lease_expires_at = EXCLUDED.lease_expires_at, \
         response_status = NULL, response_body = NULL, response_code = NULL, \
         expires_at = EXCLUDED.expires_at \
     WHERE r.expires_at <= $8 \
        OR (r.state = 'in_progress' AND r.lease_expires_at <= $8 AND r.request_hash = EXCLUDED.request_hash) \
     RETURNING key";

const SELECT_IDEMPOTENCY: &str =
    concat!("SELECT ", idempotency_columns!(), " FROM idempotency_records WHERE scope = $1 AND key = $2");

/// Completes a key that is absent or in progress under the writer's token; the memory adapter treats an
/// absent record (released, or never claimed) as still held. No row back: the claim is lost.
const COMPLETE_IDEMPOTENCY: &str = "INSERT INTO idempotency_records AS r \
     (scope, key, operation, request_hash, state, claim_token, lease_expires_at, response_status, \
      response_body, response_code, expires_at) \
     VALUES ($1, $2, $3, $4, 'completed', $5, NULL, $6, $7, $8, $9) \
     ON CONFLICT (scope, key) DO UPDATE SET \
         operation = EXCLUDED.operation, request_hash = EXCLUDED.request_hash, state = EXCLUDED.state, \
         claim_token = EXCLUDED.claim_token, lease_expires_at = NULL, \
         response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body, \
         response_code = EXCLUDED.response_code, expires_at = EXCLUDED.expires_at \
     WHERE r.state = 'in_progress' AND r.claim_token = EXCLUDED.claim_token \
     RETURNING key";

const RELEASE_IDEMPOTENCY: &str = "DELETE FROM idempotency_records \
     WHERE scope = $1 AND key = $2 AND state = 'in_progress' AND claim_token = $3";

/// Events, idempotency records and transaction records in one database, plus the feed's head.
///
/// Implements [`EventStore`], [`IdempotencyStore`] and [`EventFeed`]; see the module docs for how an
/// append stays atomic and why feed positions follow commit order.
pub struct PgEventStore {
    pool: Pool,
    head: Arc<watch::Sender<u64>>,
    listeners: Mutex<Vec<AbortHandle>>,
    gaps: Gaps,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore").field("head", &*self.head.borrow()).finish_non_exhaustive()
    }
}

impl Drop for PgEventStore {
    fn drop(&mut self) {
        for listener in self.listeners.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            listener.abort();
        }
    }
}

impl PgEventStore {
    /// An event store over `pool`. The feed head starts at 0 until an append, [`Self::refresh_head`] or
    /// a listener ([`Self::spawn_listener`]) moves it.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            head: Arc::new(watch::Sender::new(0)),
            listeners: Mutex::new(Vec::new()),
            gaps: Gaps::default(),
        }
    }

    /// Reads the last committed position and raises the feed head to it.
    pub async fn refresh_head(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(HEAD).await.map_err(|e| db_error(&e))?;
        let row = client.query_one(&statement, &[]).await.map_err(|e| db_error(&e))?;
        let head = to_u64("head position", column(&row, "head")?)?;
        raise(&self.head, head);
        Ok(*self.head.borrow())
    }

    /// Follows appends made by other processes: a task on its own connection (not one of the pool's,
    /// whose notifications the pool drops) runs `LISTEN corebank_events` and raises the head to each
    /// notified position. It reconnects with backoff (0.1 s doubling to 5 s) and re-reads the last
    /// position after every connect. The task stops when this store is dropped.
    ///
    /// Needs a Tokio runtime; outside one it fails with `Unavailable`.
    pub fn spawn_listener<T>(&self, config: tokio_postgres::Config, tls: T) -> Result<(), StoreError>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.spawn_listener_with(move || {
            let (config, tls) = (config.clone(), tls.clone());
            async move { config.connect(tls).await }
        })
    }

    /// [`Self::spawn_listener`] with connections opened by `connect` on every (re)connect, e.g. a
    /// [`PgConnector`](super::PgConnector) that verifies TLS and re-reads rotated credentials.
    pub fn spawn_listener_with<F, Fut, S>(&self, connect: F) -> Result<(), StoreError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(Client, Connection<Socket, S>), tokio_postgres::Error>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Unavailable(format!("the feed listener needs a Tokio runtime: {e}")))?;
        let task = runtime.spawn(listen(Arc::clone(&self.head), connect));
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).push(task.abort_handle());
        Ok(())
    }

    /// Sends the append's statements in one pipeline (the stream row, the guards, the events) and
    /// reads their answers in order, so an append costs the round trips of a bare insert: `BEGIN`,
    /// the pipeline, `COMMIT`. Each later statement runs even when an earlier one found a conflict;
    /// the first refusal in order decides the answer and the caller rolls everything back. A version
    /// conflict comes back as [`AppendRefusal::Stale`], since the stream's real version can only be
    /// read after the rollback.
    async fn append_in(&self, tx: &Transaction<'_>, request: &AppendRequest) -> Result<i64, AppendRefusal> {
        let columns = EventColumns::new(&request.events)?;
        let stream_id = request.stream_id.as_str();
        let expected = to_i64("expected version", request.expected_version)?;
        let new_version = to_i64("stream version", request.new_version()?)?;
        let transaction = match &request.transaction {
            Some(t) => Some((
                t,
                serde_json::to_value(&t.intent).map_err(|e| StoreError::Invalid(format!("intent: {e}")))?,
                i32::from(t.response.status),
            )),
            None => None,
        };
        let completion = request.idempotency.as_ref().map(|c| (c, i32::from(c.response.status)));

        let move_stream = if expected == 0 { START_STREAM } else { ADVANCE_STREAM };
        let move_stream = tx.prepare_cached(move_stream).await.map_err(|e| db_error(&e))?;
        let insert_transaction = match transaction {
            Some(_) => Some(tx.prepare_cached(INSERT_TRANSACTION).await.map_err(|e| db_error(&e))?),
            None => None,
        };
        let complete = match completion {
            Some(_) => Some(tx.prepare_cached(COMPLETE_IDEMPOTENCY).await.map_err(|e| db_error(&e))?),
            None => None,
        };
        let insert_events = tx.prepare_cached(INSERT_EVENTS).await.map_err(|e| db_error(&e))?;

        let moved = async {
            if expected == 0 {
                tx.query_opt(&move_stream, &[&stream_id, &new_version]).await
            } else {
                tx.query_opt(&move_stream, &[&stream_id, &expected, &new_version]).await
            }
        };
        let recorded = async {
            match (&transaction, &insert_transaction) {
                (Some((t, intent, status)), Some(statement)) => tx
                    .query_opt(
                        statement,
                        &[
                            &t.transaction_id,
                            intent,
                            status,
                            &t.response.body,
                            &t.response.code,
                            &t.recorded_at,
                        ],
                    )
                    .await
                    .map(Some),
                _ => Ok(None),
            }
        };
        let completed = async {
            match (&completion, &complete) {
                (Some((c, status)), Some(statement)) => {
                    tx.query_opt(statement, &completion_params(c, status)).await.map(Some)
                }
                _ => Ok(None),
            }
        };
        let params: [&(dyn ToSql + Sync); 8] = [
            &stream_id,
            &columns.versions,
            &columns.event_ids,
            &columns.event_types,
            &columns.schema_versions,
            &columns.occurred_at,
            &columns.payloads,
            &columns.metadata,
        ];
        let inserted = tx.query_one(&insert_events, &params);
        // Polled in this order, so the statements reach the server in this order.
        let (moved, recorded, completed, inserted) =
            futures_util::future::join4(moved, recorded, completed, inserted).await;

        if moved.map_err(|e| db_error(&e))?.is_none() {
            return Err(AppendRefusal::Stale);
        }
        if let Some(None) = recorded.map_err(|e| db_error(&e))?
            && let Some(t) = &request.transaction
        {
            return Err(StoreError::TransactionExists { transaction_id: t.transaction_id.clone() }.into());
        }
        if let Some(None) = completed.map_err(|e| db_error(&e))?
            && let Some(c) = &request.idempotency
        {
            return Err(StoreError::IdempotencyClaimLost { key: c.key.key.clone() }.into());
        }
        let row = inserted.map_err(|e| match violated_unique(&e) {
            // The streams row already serialises writers, so this only fires if events were written
            // around this adapter; the stream's real version is read after the rollback.
            Some("events_stream_version_key") => AppendRefusal::Stale,
            Some("events_event_id_key") => {
                StoreError::Invalid("an event id of this append is already stored".to_owned()).into()
            }
            _ => db_error(&e).into(),
        })?;
        Ok(column(&row, "position")?)
    }
}

/// The version `stream_id` is at, read on `client` outside any transaction (0 for a stream that does
/// not exist): on the connection the refused append used, so that answering never waits for a second
/// connection from the pool.
async fn current_version(client: &deadpool_postgres::Client, stream_id: &str) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(STREAM_VERSION).await.map_err(|e| db_error(&e))?;
    let row = client.query_opt(&statement, &[&stream_id]).await.map_err(|e| db_error(&e))?;
    match row {
        Some(row) => to_u64("stream version", column(&row, "version")?),
        None => Ok(0),
    }
}

/// Why an append was refused inside its transaction.
enum AppendRefusal {
    /// The stream is not at the expected version.
    Stale,
    /// Any other refusal or failure.
    Store(StoreError),
}

impl From<StoreError> for AppendRefusal {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The events of one append as column arrays for `UNNEST`.
struct EventColumns<'a> {
    versions: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    occurred_at: Vec<DateTime<Utc>>,
    payloads: Vec<&'a serde_json::Value>,
    metadata: Vec<serde_json::Value>,
}

impl<'a> EventColumns<'a> {
    fn new(events: &'a [EventEnvelope]) -> Result<Self, StoreError> {
        let mut columns = Self {
            versions: Vec::with_capacity(events.len()),
            event_ids: Vec::with_capacity(events.len()),
            event_types: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            occurred_at: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: Vec::with_capacity(events.len()),
        };
        for e in events {
            columns.versions.push(to_i64("event version", e.version)?);
            columns.event_ids.push(e.event_id);
            columns.event_types.push(&e.event_type);
            columns.schema_versions.push(to_i32("schema version", e.schema_version)?);
            columns.occurred_at.push(e.occurred_at);
            columns.payloads.push(&e.payload);
            columns.metadata.push(
                serde_json::to_value(&e.metadata)
                    .map_err(|err| StoreError::Invalid(format!("event metadata: {err}")))?,
            );
        }
        Ok(columns)
    }
}

fn envelope(row: &Row) -> Result<(u64, EventEnvelope), StoreError> {
    Ok((to_u64("event position", column(row, "position")?)?, event_columns(row)?))
}

/// The event of a row that carries the `events` table's event columns (an `events` row, or an
/// `outbox_events` row, which copies them).
pub(super) fn event_columns(row: &Row) -> Result<EventEnvelope, StoreError> {
    let metadata: serde_json::Value = column(row, "metadata")?;
    Ok(EventEnvelope {
        event_id: column(row, "event_id")?,
        stream_id: column(row, "stream_id")?,
        version: to_u64("event version", column(row, "version")?)?,
        event_type: column(row, "event_type")?,
        schema_version: to_u32("schema version", column(row, "schema_version")?)?,
        occurred_at: column(row, "occurred_at")?,
        payload: column(row, "payload")?,
        metadata: serde_json::from_value::<EventMetadata>(metadata)
            .map_err(|e| decode_error("event metadata", e))?,
    })
}

fn transaction_record(row: &Row) -> Result<TransactionRecord, StoreError> {
    let intent: serde_json::Value = column(row, "intent")?;
    Ok(TransactionRecord {
        transaction_id: column(row, "transaction_id")?,
        intent: serde_json::from_value(intent).map_err(|e| decode_error("transaction intent", e))?,
        response: stored_response(row)?,
        recorded_at: column(row, "recorded_at")?,
    })
}

/// A stored response's columns; a row written before `response_code` existed reads with the rule of
/// [`StoredResponse::read_back`].
fn stored_response(row: &Row) -> Result<StoredResponse, StoreError> {
    let status: i32 = column(row, "response_status")?;
    Ok(StoredResponse::read_back(
        u16::try_from(status).map_err(|e| decode_error("response status", e))?,
        column(row, "response_body")?,
        column(row, "response_code")?,
    ))
}

fn idempotency_record(row: &Row) -> Result<IdempotencyRecord, StoreError> {
    let state = match column::<&str>(row, "state")? {
        "in_progress" => IdempotencyState::InProgress {
            claim_token: column(row, "claim_token")?,
            lease_expires_at: column(row, "lease_expires_at")?,
        },
        "completed" => IdempotencyState::Completed(stored_response(row)?),
        other => return Err(StoreError::Corrupt(format!("unknown idempotency state {other:?}"))),
    };
    Ok(IdempotencyRecord {
        key: IdempotencyKey { scope: column(row, "scope")?, key: column(row, "key")? },
        operation: column(row, "operation")?,
        request_hash: column(row, "request_hash")?,
        state,
        expires_at: column(row, "expires_at")?,
    })
}

fn completion_params<'a>(c: &'a IdempotencyCompletion, status: &'a i32) -> [&'a (dyn ToSql + Sync); 9] {
    [
        &c.key.scope,
        &c.key.key,
        &c.operation,
        &c.request_hash,
        &c.claim_token,
        status,
        &c.response.body,
        &c.response.code,
        &c.expires_at,
    ]
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        request.validate()?;
        let stream_version = request.new_version()?;
        let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        let last_position = match self.append_in(&tx, &request).await {
            Ok(position) => position,
            Err(refusal) => {
                abandon(tx).await;
                return Err(match refusal {
                    AppendRefusal::Store(e) => e,
                    AppendRefusal::Stale => StoreError::VersionConflict {
                        stream_id: request.stream_id.clone(),
                        expected: request.expected_version,
                        actual: current_version(&client, &request.stream_id).await?,
                    },
                });
            }
        };
        tx.commit().await.map_err(|e| db_error(&e))?;
        raise(&self.head, to_u64("event position", last_position)?);
        Ok(AppendOutcome { stream_version })
    }

    async fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let Ok(after) = i64::try_from(after_version) else { return Ok(Vec::new()) };
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(LOAD_STREAM).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&stream_id, &after]).await.map_err(|e| db_error(&e))?;
        rows.iter().map(|row| envelope(row).map(|(_, e)| e)).collect()
    }

    async fn load_streams(&self, streams: &[(String, u64)]) -> Result<Vec<Vec<EventEnvelope>>, StoreError> {
        // Each stream once, from the lowest version asked; a version beyond i64 has nothing above it.
        let mut lowest: HashMap<&str, (i64, usize)> = HashMap::new();
        for (stream_id, after_version) in streams {
            if let Ok(after) = i64::try_from(*after_version) {
                let asked = lowest.entry(stream_id).or_insert((after, 0));
                asked.0 = asked.0.min(after);
                asked.1 += 1;
            }
        }
        if lowest.is_empty() {
            return Ok(vec![Vec::new(); streams.len()]);
        }
        let (stream_ids, after): (Vec<&str>, Vec<i64>) = lowest.iter().map(|(id, (v, _))| (*id, *v)).unzip();
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(LOAD_STREAMS).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&stream_ids, &after]).await.map_err(|e| db_error(&e))?;
        let mut by_stream: HashMap<String, Vec<EventEnvelope>> = HashMap::with_capacity(lowest.len());
        for row in &rows {
            let (_, event) = envelope(row)?;
            by_stream.entry(event.stream_id.clone()).or_default().push(event);
        }
        Ok(streams
            .iter()
            .map(|(stream_id, after_version)| {
                let asked_once = lowest.get(stream_id.as_str()).is_some_and(|(_, times)| *times == 1);
                if asked_once {
                    by_stream.remove(stream_id).unwrap_or_default()
                } else {
                    by_stream.get(stream_id).map_or_else(Vec::new, |events| {
                        events.iter().filter(|e| e.version > *after_version).cloned().collect()
                    })
                }
            })
            .collect())
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = clamp_i64(limit);
        let upper = prefix_upper_bound(prefix);
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match (&after, &upper) {
            (None, None) => (LIST_STREAMS, vec![&prefix, &limit]),
            (None, Some(upper)) => (LIST_STREAMS_BELOW, vec![&prefix, &limit, upper]),
            (Some(after), None) => (LIST_STREAMS_AFTER, vec![&prefix, &limit, after]),
            (Some(after), Some(upper)) => (LIST_STREAMS_AFTER_BELOW, vec![&prefix, &limit, after, upper]),
        };
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(sql).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &params).await.map_err(|e| db_error(&e))?;
        rows.iter().map(|row| column(row, "stream_id")).collect()
    }

    async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SELECT_TRANSACTION).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&transaction_id]).await.map_err(|e| db_error(&e))?;
        row.as_ref().map(transaction_record).transpose()
    }
}

#[async_trait]
impl IdempotencyStore for PgEventStore {
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let tx = client.transaction().await.map_err(|e| db_error(&e))?;
        // A claim need not survive a server crash: if it is lost, so is the request that held it,
        // and the client's retry claims again. Not waiting for its WAL flush saves a disk sync per
        // command; the append that completes the key is flushed as usual.
        if let Err(e) = tx.batch_execute("SET LOCAL synchronous_commit TO OFF").await {
            abandon(tx).await;
            return Err(db_error(&e));
        }
        let outcome = claim_in(&tx, &claim).await;
        match outcome {
            Ok(outcome) => {
                tx.commit().await.map_err(|e| db_error(&e))?;
                Ok(outcome)
            }
            Err(e) => {
                abandon(tx).await;
                Err(e)
            }
        }
    }

    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(COMPLETE_IDEMPOTENCY).await.map_err(|e| db_error(&e))?;
        let status = i32::from(completion.response.status);
        let completed = client
            .query_opt(&statement, &completion_params(&completion, &status))
            .await
            .map_err(|e| db_error(&e))?;
        match completed {
            Some(_) => Ok(()),
            None => Err(StoreError::IdempotencyClaimLost { key: completion.key.key }),
        }
    }

    async fn release(&self, key: &IdempotencyKey, claim_token: Uuid) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(RELEASE_IDEMPOTENCY).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &[&key.scope, &key.key, &claim_token]).await.map_err(|e| db_error(&e))?;
        Ok(())
    }
}

async fn claim_in(tx: &Transaction<'_>, claim: &IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
    let statement = tx.prepare_cached(CLAIM_IDEMPOTENCY).await.map_err(|e| db_error(&e))?;
    let claimed = tx
        .query_opt(
            &statement,
            &[
                &claim.key.scope,
                &claim.key.key,
                &claim.operation,
                &claim.request_hash,
                &claim.claim_token,
                &claim.lease_expires_at,
                &claim.expires_at,
                &claim.now,
            ],
        )
        .await
        .map_err(|e| db_error(&e))?;
    if claimed.is_some() {
        return Ok(ClaimOutcome::Claimed);
    }
    // The upsert locked the row it did not change, so it is still there and unchanged.
    let statement = tx.prepare_cached(SELECT_IDEMPOTENCY).await.map_err(|e| db_error(&e))?;
    let row =
        tx.query_opt(&statement, &[&claim.key.scope, &claim.key.key]).await.map_err(|e| db_error(&e))?;
    match row {
        Some(row) => Ok(ClaimOutcome::Existing(idempotency_record(&row)?)),
        None => Err(StoreError::Unavailable(format!(
            "idempotency record {} vanished while it was locked; retry",
            claim.key.key
        ))),
    }
}

#[async_trait]
impl EventFeed for PgEventStore {
    async fn read_after(&self, position: u64, limit: usize) -> Result<Vec<(u64, EventEnvelope)>, StoreError> {
        let Ok(after) = i64::try_from(position) else { return Ok(Vec::new()) };
        let limit = clamp_i64(limit);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(READ_AFTER).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&after, &limit]).await.map_err(|e| db_error(&e))?;
        let mut page = Vec::with_capacity(rows.len());
        let mut next = position.saturating_add(1);
        for row in &rows {
            let (at, event) = envelope(row)?;
            if at != next {
                let snapshot = Snapshot {
                    xmin: to_u64("snapshot xmin", column(row, "snapshot_xmin")?)?,
                    xmax: to_u64("snapshot xmax", column(row, "snapshot_xmax")?)?,
                };
                if !self.gaps.passable(next, snapshot) {
                    break;
                }
            }
            page.push((at, event));
            next = at.saturating_add(1);
        }
        Ok(page)
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn cursor(&self, lane: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(READ_CURSOR).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&lane]).await.map_err(|e| db_error(&e))?;
        match row {
            Some(row) => to_u64("feed cursor", column(&row, "position")?),
            None => Ok(0),
        }
    }

    /// Committed with the server's `synchronous_commit` (on unless an operator turned it off; the
    /// projection writes turn it off for their own transactions only): waiting for this commit's WAL
    /// flush makes every earlier commit durable too, since the WAL is written in order, so a saved
    /// cursor never points past a projection write that a crash of the server could lose.
    async fn save_cursor(&self, lane: &str, position: u64) -> Result<(), StoreError> {
        let position = to_i64("feed cursor", position)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SAVE_CURSOR).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &[&lane, &position]).await.map_err(|e| db_error(&e))?;
        Ok(())
    }
}

/// The bounds of the snapshot a feed page was read in, as transaction ids.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    /// Every transaction below it had finished.
    xmin: u64,
    /// Every transaction that had started by then is below it.
    xmax: u64,
}

/// Feed positions a reader found missing, each with the `xmax` of the snapshot that first showed it
/// missing.
///
/// Appends take their positions from the `events` identity without any lock, so they may commit out
/// of position order: position 7 can be visible while 6 is still being written. A reader must not move
/// past 6 then, or it would never see it. Nor can it wait for 6 for ever, since an append that rolls
/// back after taking a position leaves a hole that never fills.
///
/// The transaction that took a missing position had written (the stream row) before it took it, and
/// took it before the position above it was taken and committed, so it had an id below the `xmax` of
/// any snapshot that shows the position above. Once a later snapshot's `xmin` reaches that `xmax`,
/// that transaction had finished before the later snapshot was taken: if it committed, the later read
/// shows the position; if the position is still missing there, it will never appear, and the reader
/// passes it.
#[derive(Debug, Default)]
struct Gaps {
    seen: Mutex<std::collections::BTreeMap<u64, u64>>,
}

impl Gaps {
    /// Whether a reader of the page read in `snapshot` may pass the missing `position`: only once a
    /// transaction that might still commit it cannot exist. The first sighting is remembered.
    fn passable(&self, position: u64, snapshot: Snapshot) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get(&position) {
            Some(&xmax) if snapshot.xmin >= xmax => {
                seen.remove(&position);
                true
            }
            Some(_) => false,
            None => {
                if seen.len() >= GAPS_REMEMBERED_MAX {
                    seen.pop_first();
                }
                seen.insert(position, snapshot.xmax);
                false
            }
        }
    }
}

const READ_CURSOR: &str = "SELECT position FROM feed_cursors WHERE lane = $1";

const SAVE_CURSOR: &str = "INSERT INTO feed_cursors (lane, position) VALUES ($1, $2) \
     ON CONFLICT (lane) DO UPDATE SET position = GREATEST(feed_cursors.position, EXCLUDED.position), \
     updated_at = now()";

/// Keeps a listening connection up, forever; the owning store aborts it.
async fn listen<F, Fut, S>(head: Arc<watch::Sender<u64>>, connect: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(Client, Connection<Socket, S>), tokio_postgres::Error>>,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut failures = 0;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = match connect().await {
            Ok((client, connection)) => listen_once(&head, client, connection).await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "feed listener lost its connection");
        }
        if started.elapsed() > LISTEN_BACKOFF_RESET {
            failures = 0;
        }
        failures += 1;
        tokio::time::sleep(LISTEN_BACKOFF.delay(failures)).await;
    }
}

/// Aborts a task when dropped, so a driver task never outlives the listener that spawned it.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn listen_once<S>(
    head: &Arc<watch::Sender<u64>>,
    client: Client,
    mut connection: Connection<Socket, S>,
) -> Result<(), tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let notified = Arc::clone(head);
    // The connection delivers notifications only to whoever polls it, so this task both drives it and
    // raises the head; it ends when the connection does.
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Ok(position) = n.payload().parse::<u64>() {
                        raise(&notified, position);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "feed listener connection failed");
                    break;
                }
            }
        }
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    client.batch_execute(LISTEN).await?;
    // Appends committed before LISTEN took effect sent no notification to this connection.
    let row = client.query_one(HEAD, &[]).await?;
    if let Ok(position) = u64::try_from(row.try_get::<_, i64>("head")?) {
        raise(head, position);
    }
    // Whether the driver ended, was aborted or panicked, the connection is gone and the caller
    // reconnects.
    driver.await.ok();
    drop(client);
    Ok(())
}
