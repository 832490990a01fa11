//! Events with their guard records, idempotency claims, the commit-ordered feed and its cursors.

use std::sync::Arc;

use async_trait::async_trait;
use corebank_domain::EventEnvelope;
use rusqlite::{Connection, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::sql::prefix_upper_bound;

use super::claims::{Claims, Taken};
use super::heads::StreamHeads;
use super::{
    Db, clamp_i64, collect, decode_error, execute, from_json, from_micros, micros, one, sql_error, to_i64,
    to_json, to_u64, to_uuid,
};
use crate::{
    AppendOutcome, AppendRequest, ClaimOutcome, EventFeed, EventStore, IdempotencyClaim,
    IdempotencyCompletion, IdempotencyKey, IdempotencyRecord, IdempotencyState, IdempotencyStore, StoreError,
    StoredResponse, TransactionRecord,
};

const HEAD: &str = "SELECT COALESCE(max(position), 0) FROM events";

const START_STREAM: &str =
    "INSERT INTO streams (stream_id, version) VALUES (?1, ?2) ON CONFLICT (stream_id) DO NOTHING";

const ADVANCE_STREAM: &str = "UPDATE streams SET version = ?3 WHERE stream_id = ?1 AND version = ?2";

const STREAM_VERSION: &str = "SELECT version FROM streams WHERE stream_id = ?1";

const INSERT_TRANSACTION: &str = "INSERT INTO transaction_records \
     (transaction_id, intent, response_status, response_body, response_code, recorded_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (transaction_id) DO NOTHING";

const SELECT_TRANSACTION: &str = "SELECT transaction_id, intent, response_status, response_body, \
     response_code, recorded_at FROM transaction_records WHERE transaction_id = ?1";

const INSERT_EVENT: &str = "INSERT INTO events \
     (event_id, stream_id, version, event_type, schema_version, occurred_at, payload, metadata) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// The columns `envelope` reads, in a `SELECT` from `events` (a macro, so the statements below are
/// constants).
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, occurred_at, \
             payload, metadata FROM events ",
            $rest
        )
    };
}

const LOAD_STREAM: &str = select_events!("WHERE stream_id = ?1 AND version > ?2 ORDER BY version");

const READ_AFTER: &str = select_events!("WHERE position > ?1 ORDER BY position LIMIT ?2");

const SELECT_IDEMPOTENCY: &str = "SELECT scope, key, operation, request_hash, state, claim_token, \
     lease_expires_at, response_status, response_body, response_code, expires_at \
     FROM idempotency_records WHERE scope = ?1 AND key = ?2";

/// Completes a key that is absent or in progress under the writer's token; the memory adapter treats an
/// absent record (released, or never claimed) as still held. No change: the claim is lost.
const COMPLETE_IDEMPOTENCY: &str = "INSERT INTO idempotency_records AS r \
     (scope, key, operation, request_hash, state, claim_token, lease_expires_at, response_status, \
      response_body, response_code, expires_at) \
     VALUES (?1, ?2, ?3, ?4, 'completed', ?5, NULL, ?6, ?7, ?8, ?9) \
     ON CONFLICT (scope, key) DO UPDATE SET \
         operation = excluded.operation, request_hash = excluded.request_hash, state = excluded.state, \
         claim_token = excluded.claim_token, lease_expires_at = NULL, \
         response_status = excluded.response_status, response_body = excluded.response_body, \
         response_code = excluded.response_code, expires_at = excluded.expires_at \
     WHERE r.state = 'in_progress' AND r.claim_token = excluded.claim_token";

/// A record of one key whose TTL ended at or before `?3`.
const DELETE_EXPIRED_IDEMPOTENCY: &str =
    "DELETE FROM idempotency_records WHERE scope = ?1 AND key = ?2 AND expires_at <= ?3";

/// Holds the file kept before they moved into the process (see `claims`); deleted at open.
pub(super) const DELETE_HOLDS: &str = "DELETE FROM idempotency_records WHERE state = 'in_progress'";

/// At most `?2` records whose TTL ended at or before `?1`.
/// (The table has no rowid: rows are picked by their key, through the `expires_at` index.)
pub(super) const PURGE_EXPIRED: &str = "DELETE FROM idempotency_records WHERE (scope, key) IN \
     (SELECT scope, key FROM idempotency_records WHERE expires_at <= ?1 LIMIT ?2)";

const LIST_FROM: &str = "SELECT stream_id FROM streams WHERE stream_id >= ?1 ORDER BY stream_id LIMIT ?2";
const LIST_FROM_BELOW: &str =
    "SELECT stream_id FROM streams WHERE stream_id >= ?1 AND stream_id < ?3 ORDER BY stream_id LIMIT ?2";
const LIST_AFTER: &str = "SELECT stream_id FROM streams WHERE stream_id > ?1 ORDER BY stream_id LIMIT ?2";
const LIST_AFTER_BELOW: &str =
    "SELECT stream_id FROM streams WHERE stream_id > ?1 AND stream_id < ?3 ORDER BY stream_id LIMIT ?2";

const CURSOR: &str = "SELECT position FROM feed_cursors WHERE lane = ?1";

const SAVE_CURSOR: &str = "INSERT INTO feed_cursors (lane, position) VALUES (?1, ?2) \
     ON CONFLICT (lane) DO UPDATE SET position = excluded.position";

/// The highest committed event position (0 for an empty store).
pub(super) fn head_position(conn: &Connection) -> Result<u64, StoreError> {
    let head: i64 = conn.query_row(HEAD, [], |row| row.get(0)).map_err(|e| sql_error(&e))?;
    to_u64("head position", head)
}

/// Events, idempotency records, transaction records and feed cursors in one file, plus the feed's
/// head. Implements [`EventStore`], [`IdempotencyStore`] and [`EventFeed`].
#[derive(Debug)]
pub struct SqliteEventStore {
    db: Arc<Db>,
    heads: StreamHeads,
    claims: Arc<Claims>,
}

impl SqliteEventStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db, heads: StreamHeads::default(), claims: Arc::default() }
    }
}

fn changed(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<bool, StoreError> {
    Ok(execute(conn, sql, params)? > 0)
}

/// The append's writes, inside the writer's savepoint for it; any error rolls all of them back.
/// Answers the position of its last event.
fn append_in(conn: &Connection, claims: &Claims, request: &AppendRequest) -> Result<u64, StoreError> {
    let stream_id = request.stream_id.as_str();
    let expected = to_i64("expected version", request.expected_version)?;
    let new_version = to_i64("stream version", request.new_version()?)?;

    let moved = if expected == 0 {
        changed(conn, START_STREAM, (stream_id, new_version))?
    } else {
        changed(conn, ADVANCE_STREAM, (stream_id, expected, new_version))?
    };
    if !moved {
        let actual: Option<i64> =
            one(conn, STREAM_VERSION, [stream_id], |row| row.get(0).map_err(|e| sql_error(&e)))?;
        return Err(StoreError::VersionConflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected_version,
            actual: actual.map(|v| to_u64("stream version", v)).transpose()?.unwrap_or(0),
        });
    }

    if let Some(t) = &request.transaction {
        let intent = to_json("transaction intent", &t.intent)?;
        let inserted = changed(
            conn,
            INSERT_TRANSACTION,
            (
                &t.transaction_id,
                intent,
                i64::from(t.response.status),
                &t.response.body,
                &t.response.code,
                micros(t.recorded_at),
            ),
        )?;
        if !inserted {
            return Err(StoreError::TransactionExists { transaction_id: t.transaction_id.clone() });
        }
    }

    if let Some(c) = &request.idempotency
        && !(claims.may_complete(&c.key, c.claim_token) && complete_in(conn, c)?)
    {
        return Err(StoreError::IdempotencyClaimLost { key: c.key.key.clone() });
    }

    let mut statement = conn.prepare_cached(INSERT_EVENT).map_err(|e| sql_error(&e))?;
    for e in &request.events {
        let metadata = to_json("event metadata", &e.metadata)?;
        let payload = to_json("event payload", &e.payload)?;
        statement
            .execute((
                e.event_id.to_string(),
                &e.stream_id,
                to_i64("event version", e.version)?,
                &e.event_type,
                i64::from(e.schema_version),
                micros(e.occurred_at),
                payload,
                metadata,
            ))
            .map_err(|err| match &err {
                rusqlite::Error::SqliteFailure(f, Some(message))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    if message.contains("events.stream_id") {
                        // The streams row already orders writers, so this only fires if events were
                        // written around this adapter.
                        StoreError::VersionConflict {
                            stream_id: request.stream_id.clone(),
                            expected: request.expected_version,
                            actual: request.expected_version,
                        }
                    } else if message.contains("events.event_id") {
                        StoreError::Invalid("an event id of this append is already stored".to_owned())
                    } else {
                        sql_error(&err)
                    }
                }
                _ => sql_error(&err),
            })?;
    }
    // `events.position` is the rowid, and `events` is the only rowid table: the last insert of this
    // connection is this append's last event.
    to_u64("event position", conn.last_insert_rowid())
}

/// Completes a claim; `false` if the key is held by another token or completed.
fn complete_in(conn: &Connection, c: &IdempotencyCompletion) -> Result<bool, StoreError> {
    changed(
        conn,
        COMPLETE_IDEMPOTENCY,
        (
            &c.key.scope,
            &c.key.key,
            &c.operation,
            &c.request_hash,
            c.claim_token.to_string(),
            i64::from(c.response.status),
            &c.response.body,
            &c.response.code,
            micros(c.expires_at),
        ),
    )
}

fn envelope(row: &Row<'_>) -> Result<(u64, EventEnvelope), StoreError> {
    let position: i64 = row.get("position").map_err(|e| sql_error(&e))?;
    let event_id: String = row.get("event_id").map_err(|e| sql_error(&e))?;
    let version: i64 = row.get("version").map_err(|e| sql_error(&e))?;
    let schema_version: i64 = row.get("schema_version").map_err(|e| sql_error(&e))?;
    let occurred_at: i64 = row.get("occurred_at").map_err(|e| sql_error(&e))?;
    let payload: String = row.get("payload").map_err(|e| sql_error(&e))?;
    let metadata: String = row.get("metadata").map_err(|e| sql_error(&e))?;
    Ok((
        to_u64("event position", position)?,
        EventEnvelope {
            event_id: to_uuid("event id", &event_id)?,
            stream_id: row.get("stream_id").map_err(|e| sql_error(&e))?,
            version: to_u64("event version", version)?,
            event_type: row.get("event_type").map_err(|e| sql_error(&e))?,
            schema_version: u32::try_from(schema_version).map_err(|e| decode_error("schema version", e))?,
            occurred_at: from_micros("occurred at", occurred_at)?,
            payload: from_json("event payload", &payload)?,
            metadata: from_json("event metadata", &metadata)?,
        },
    ))
}

/// A stored response's columns; a row without `response_code` reads with the rule of
/// [`StoredResponse::read_back`].
fn stored_response(row: &Row<'_>) -> Result<StoredResponse, StoreError> {
    let status: i64 = row.get("response_status").map_err(|e| sql_error(&e))?;
    Ok(StoredResponse::read_back(
        u16::try_from(status).map_err(|e| decode_error("response status", e))?,
        row.get("response_body").map_err(|e| sql_error(&e))?,
        row.get("response_code").map_err(|e| sql_error(&e))?,
    ))
}

fn transaction_record(row: &Row<'_>) -> Result<TransactionRecord, StoreError> {
    let intent: String = row.get("intent").map_err(|e| sql_error(&e))?;
    let recorded_at: i64 = row.get("recorded_at").map_err(|e| sql_error(&e))?;
    Ok(TransactionRecord {
        transaction_id: row.get("transaction_id").map_err(|e| sql_error(&e))?,
        intent: from_json("transaction intent", &intent)?,
        response: stored_response(row)?,
        recorded_at: from_micros("recorded at", recorded_at)?,
    })
}

fn idempotency_record(row: &Row<'_>) -> Result<IdempotencyRecord, StoreError> {
    let state: String = row.get("state").map_err(|e| sql_error(&e))?;
    let state = match state.as_str() {
        "in_progress" => {
            let token: String = row.get("claim_token").map_err(|e| sql_error(&e))?;
            let lease: i64 = row.get("lease_expires_at").map_err(|e| sql_error(&e))?;
            IdempotencyState::InProgress {
                claim_token: to_uuid("claim token", &token)?,
                lease_expires_at: from_micros("lease expiry", lease)?,
            }
        }
        "completed" => IdempotencyState::Completed(stored_response(row)?),
        other => return Err(StoreError::Corrupt(format!("unknown idempotency state {other:?}"))),
    };
    let expires_at: i64 = row.get("expires_at").map_err(|e| sql_error(&e))?;
    Ok(IdempotencyRecord {
        key: IdempotencyKey {
            scope: row.get("scope").map_err(|e| sql_error(&e))?,
            key: row.get("key").map_err(|e| sql_error(&e))?,
        },
        operation: row.get("operation").map_err(|e| sql_error(&e))?,
        request_hash: row.get("request_hash").map_err(|e| sql_error(&e))?,
        state,
        expires_at: from_micros("expiry", expires_at)?,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        request.validate()?;
        let stream_version = request.new_version()?;
        let stream_id = request.stream_id.clone();
        let completed = request.idempotency.as_ref().map(|c| (c.key.clone(), c.claim_token));
        let claims = self.claims.clone();
        match self.db.writer.write_events(move |conn| append_in(conn, &claims, &request)).await {
            Ok(_) => {
                self.heads.committed(&stream_id, stream_version);
                if let Some((key, token)) = completed {
                    self.claims.drop_hold(&key, token);
                }
                Ok(AppendOutcome { stream_version })
            }
            Err(e) => {
                if let StoreError::VersionConflict { actual, .. } = &e {
                    self.heads.observed(&stream_id, *actual);
                }
                Err(e)
            }
        }
    }

    async fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let Ok(after) = i64::try_from(after_version) else { return Ok(Vec::new()) };
        if self.heads.is_at(stream_id, after_version) {
            return Ok(Vec::new());
        }
        let stream_id = stream_id.to_owned();
        self.db
            .readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(LOAD_STREAM).map_err(|e| sql_error(&e))?;
                collect(&mut statement, (stream_id, after), |row| envelope(row).map(|(_, e)| e))
            })
            .await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = clamp_i64(limit);
        let upper = prefix_upper_bound(prefix);
        // The range starts at the prefix, or just after the cursor when that lies beyond it (the
        // memory adapter's rule), and ends below the prefix's upper bound: the primary key answers it.
        let (lower, exclusive) = match after {
            Some(a) if a >= prefix => (a.to_owned(), true),
            _ => (prefix.to_owned(), false),
        };
        self.db
            .readers
            .read(move |conn| {
                let sql = match (exclusive, upper.is_some()) {
                    (false, false) => LIST_FROM,
                    (false, true) => LIST_FROM_BELOW,
                    (true, false) => LIST_AFTER,
                    (true, true) => LIST_AFTER_BELOW,
                };
                let mut statement = conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
                let stream_id = |row: &Row<'_>| row.get::<_, String>(0).map_err(|e| sql_error(&e));
                match upper {
                    Some(upper) => collect(&mut statement, (lower, limit, upper), stream_id),
                    None => collect(&mut statement, (lower, limit), stream_id),
                }
            })
            .await
    }

    async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let transaction_id = transaction_id.to_owned();
        self.db
            .readers
            .lookup(move |conn| one(conn, SELECT_TRANSACTION, [transaction_id], transaction_record))
            .await
    }
}

#[async_trait]
impl IdempotencyStore for SqliteEventStore {
    /// Holds the key in the process ([`Claims`]), then looks for a live record in the file.
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        if let Taken::HeldByAnother(record) = self.claims.take(&claim) {
            return Ok(ClaimOutcome::Existing(record));
        }
        match self.stored_record(&claim).await {
            Ok(None) => Ok(ClaimOutcome::Claimed),
            Ok(Some(record)) => {
                self.claims.drop_hold(&claim.key, claim.claim_token);
                Ok(ClaimOutcome::Existing(record))
            }
            Err(e) => {
                self.claims.drop_hold(&claim.key, claim.claim_token);
                Err(e)
            }
        }
    }

    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError> {
        let (key, token) = (completion.key.clone(), completion.claim_token);
        let claims = self.claims.clone();
        self.db
            .writer
            .write(move |conn| {
                if claims.may_complete(&completion.key, completion.claim_token)
                    && complete_in(conn, &completion)?
                {
                    Ok(())
                } else {
                    Err(StoreError::IdempotencyClaimLost { key: completion.key.key.clone() })
                }
            })
            .await?;
        self.claims.drop_hold(&key, token);
        Ok(())
    }

    /// Holds live in the process only: nothing to write.
    async fn release(&self, key: &IdempotencyKey, claim_token: Uuid) -> Result<(), StoreError> {
        self.claims.drop_hold(key, claim_token);
        Ok(())
    }
}

impl SqliteEventStore {
    /// The file's live record of the claim's key, if any; a record past its TTL is deleted so the
    /// claim's completion can take its place.
    async fn stored_record(&self, claim: &IdempotencyClaim) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = claim.key.clone();
        let stored = self
            .db
            .readers
            .lookup(move |conn| one(conn, SELECT_IDEMPOTENCY, (&key.scope, &key.key), idempotency_record))
            .await?;
        match stored {
            Some(record) if record.expires_at > claim.now => Ok(Some(record)),
            Some(_) => {
                let (key, now) = (claim.key.clone(), micros(claim.now));
                self.db
                    .writer
                    .write(move |conn| changed(conn, DELETE_EXPIRED_IDEMPOTENCY, (&key.scope, &key.key, now)))
                    .await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl EventFeed for SqliteEventStore {
    async fn read_after(&self, position: u64, limit: usize) -> Result<Vec<(u64, EventEnvelope)>, StoreError> {
        let Ok(after) = i64::try_from(position) else { return Ok(Vec::new()) };
        let limit = clamp_i64(limit);
        self.db
            .readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(READ_AFTER).map_err(|e| sql_error(&e))?;
                collect(&mut statement, (after, limit), envelope)
            })
            .await
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.db.writer.head()
    }

    async fn cursor(&self, lane: &str) -> Result<u64, StoreError> {
        let lane = lane.to_owned();
        let position: Option<i64> = self
            .db
            .readers
            .lookup(move |conn| {
                one(conn, CURSOR, [lane], |row| row.get::<_, i64>(0).map_err(|e| sql_error(&e)))
            })
            .await?;
        position.map_or(Ok(0), |p| to_u64("feed cursor", p))
    }

    async fn save_cursor(&self, lane: &str, position: u64) -> Result<(), StoreError> {
        let position = to_i64("feed cursor", position)?;
        let lane = lane.to_owned();
        self.db.writer.write(move |conn| changed(conn, SAVE_CURSOR, (lane, position)).map(|_| ())).await
    }
}
