//! Parked records in the `parked_records` table.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Row;

use super::{Db, clamp_i64, collect, execute, from_micros, micros, one, sql_error, to_i64, to_u64};
use crate::{ParkedConsumer, ParkedKind, ParkedRecord, ParkedRecordStore, ParkedStats, StoreError};

/// The first record parked under a name stays.
const PARK: &str = "INSERT INTO parked_records \
     (consumer, stream_key, position, kind, payload, error, parked_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (consumer, stream_key, position) DO NOTHING";

const PARKED_STREAMS: &str =
    "SELECT DISTINCT stream_key FROM parked_records WHERE consumer = ?1 ORDER BY stream_key";

const LIST_ALL: &str = "SELECT consumer, stream_key, position, kind, payload, error, parked_at \
     FROM parked_records ORDER BY parked_at, consumer, stream_key, position LIMIT ?1 OFFSET ?2";

const LIST_ONE: &str = "SELECT consumer, stream_key, position, kind, payload, error, parked_at \
     FROM parked_records WHERE consumer = ?3 \
     ORDER BY parked_at, consumer, stream_key, position LIMIT ?1 OFFSET ?2";

const STREAM: &str = "SELECT consumer, stream_key, position, kind, payload, error, parked_at \
     FROM parked_records WHERE consumer = ?1 AND stream_key = ?2 ORDER BY position LIMIT ?3";

const REMOVE: &str = "DELETE FROM parked_records WHERE consumer = ?1 AND stream_key = ?2 AND position = ?3";

const STATS: &str = "SELECT count(*) AS parked, min(parked_at) AS oldest FROM parked_records";

/// Parked records in the `parked_records` table.
#[derive(Debug)]
pub struct SqliteParkedRecordStore {
    db: Arc<Db>,
}

impl SqliteParkedRecordStore {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

fn parked_record(row: &Row<'_>) -> Result<ParkedRecord, StoreError> {
    let consumer: String = row.get("consumer").map_err(|e| sql_error(&e))?;
    let kind: String = row.get("kind").map_err(|e| sql_error(&e))?;
    let position: i64 = row.get("position").map_err(|e| sql_error(&e))?;
    let parked_at: i64 = row.get("parked_at").map_err(|e| sql_error(&e))?;
    Ok(ParkedRecord {
        consumer: ParkedConsumer::from_stored(&consumer)?,
        stream_key: row.get("stream_key").map_err(|e| sql_error(&e))?,
        position: to_u64("position", position)?,
        kind: ParkedKind::from_stored(&kind)?,
        payload: row.get("payload").map_err(|e| sql_error(&e))?,
        error: row.get("error").map_err(|e| sql_error(&e))?,
        parked_at: from_micros("parked_at", parked_at)?,
    })
}

#[async_trait]
impl ParkedRecordStore for SqliteParkedRecordStore {
    async fn park(&self, record: ParkedRecord) -> Result<(), StoreError> {
        let position = to_i64("position", record.position)?;
        self.db
            .writer
            .write(move |conn| {
                execute(
                    conn,
                    PARK,
                    (
                        record.consumer.as_str(),
                        &record.stream_key,
                        position,
                        record.kind.as_str(),
                        &record.payload,
                        &record.error,
                        micros(record.parked_at),
                    ),
                )
                .map(|_| ())
            })
            .await
    }

    async fn parked_streams(&self, consumer: ParkedConsumer) -> Result<Vec<String>, StoreError> {
        self.db
            .readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(PARKED_STREAMS).map_err(|e| sql_error(&e))?;
                collect(&mut statement, [consumer.as_str()], |row| row.get(0).map_err(|e| sql_error(&e)))
            })
            .await
    }

    async fn list(
        &self,
        consumer: Option<ParkedConsumer>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let (limit, offset) = (clamp_i64(limit), clamp_i64(offset));
        self.db
            .readers
            .read(move |conn| match consumer {
                None => {
                    let mut statement = conn.prepare_cached(LIST_ALL).map_err(|e| sql_error(&e))?;
                    collect(&mut statement, (limit, offset), parked_record)
                }
                Some(consumer) => {
                    let mut statement = conn.prepare_cached(LIST_ONE).map_err(|e| sql_error(&e))?;
                    collect(&mut statement, (limit, offset, consumer.as_str()), parked_record)
                }
            })
            .await
    }

    async fn stream(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let stream_key = stream_key.to_owned();
        let limit = clamp_i64(limit);
        self.db
            .readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(STREAM).map_err(|e| sql_error(&e))?;
                collect(&mut statement, (consumer.as_str(), stream_key, limit), parked_record)
            })
            .await
    }

    async fn remove(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        position: u64,
    ) -> Result<bool, StoreError> {
        let stream_key = stream_key.to_owned();
        let position = to_i64("position", position)?;
        self.db
            .writer
            .write(move |conn| {
                execute(conn, REMOVE, (consumer.as_str(), &stream_key, position)).map(|removed| removed > 0)
            })
            .await
    }

    async fn stats(&self) -> Result<ParkedStats, StoreError> {
        self.db
            .readers
            .read(move |conn| {
                one(conn, STATS, [], |row| {
                    let count: i64 = row.get("parked").map_err(|e| sql_error(&e))?;
                    let oldest: Option<i64> = row.get("oldest").map_err(|e| sql_error(&e))?;
                    Ok(ParkedStats {
                        count: to_u64("parked", count)?,
                        oldest_parked_at: oldest.map(|t| from_micros("parked_at", t)).transpose()?,
                    })
                })
                .map(Option::unwrap_or_default)
            })
            .await
    }
}
