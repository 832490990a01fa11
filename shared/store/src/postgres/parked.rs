//! Parked records in the `parked_records` table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::{clamp_i64, column, db_error, pool_error, to_i64, to_u64};
use crate::{ParkedConsumer, ParkedKind, ParkedRecord, ParkedRecordStore, ParkedStats, StoreError};

/// The first record parked under a name stays.
const PARK: &str = "INSERT INTO parked_records \
     (consumer, stream_key, position, kind, payload, error, parked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (consumer, stream_key, position) DO NOTHING";

const PARKED_STREAMS: &str =
    "SELECT DISTINCT stream_key FROM parked_records WHERE consumer = $1 ORDER BY stream_key";

/// `$3` is the consumer, or NULL for every consumer.
const LIST: &str = "SELECT consumer, stream_key, position, kind, payload, error, parked_at \
     FROM parked_records WHERE ($3::text IS NULL OR consumer = $3) \
     ORDER BY parked_at, consumer, stream_key, position LIMIT $1 OFFSET $2";

const STREAM: &str = "SELECT consumer, stream_key, position, kind, payload, error, parked_at \
     FROM parked_records WHERE consumer = $1 AND stream_key = $2 ORDER BY position LIMIT $3";

const REMOVE: &str = "DELETE FROM parked_records WHERE consumer = $1 AND stream_key = $2 AND position = $3";

const STATS: &str = "SELECT count(*) AS parked, min(parked_at) AS oldest FROM parked_records";

/// Parked records in the `parked_records` table.
#[derive(Debug, Clone)]
pub struct PgParkedRecordStore {
    pool: Pool,
}

impl PgParkedRecordStore {
    /// A parked-record store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn parked_record(row: &Row) -> Result<ParkedRecord, StoreError> {
    Ok(ParkedRecord {
        consumer: ParkedConsumer::from_stored(column(row, "consumer")?)?,
        stream_key: column(row, "stream_key")?,
        position: to_u64("position", column(row, "position")?)?,
        kind: ParkedKind::from_stored(column(row, "kind")?)?,
        payload: column(row, "payload")?,
        error: column(row, "error")?,
        parked_at: column(row, "parked_at")?,
    })
}

#[async_trait]
impl ParkedRecordStore for PgParkedRecordStore {
    async fn park(&self, record: ParkedRecord) -> Result<(), StoreError> {
        let position = to_i64("position", record.position)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(PARK).await.map_err(|e| db_error(&e))?;
        client
            .execute(
                &statement,
                &[
                    &record.consumer.as_str(),
                    &record.stream_key,
                    &position,
                    &record.kind.as_str(),
                    &record.payload,
                    &record.error,
                    &record.parked_at,
                ],
            )
            .await
            .map_err(|e| db_error(&e))?;
        Ok(())
    }

    async fn parked_streams(&self, consumer: ParkedConsumer) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(PARKED_STREAMS).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&consumer.as_str()]).await.map_err(|e| db_error(&e))?;
        rows.iter().map(|row| column(row, "stream_key")).collect()
    }

    async fn list(
        &self,
        consumer: Option<ParkedConsumer>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let (limit, offset) = (clamp_i64(limit), clamp_i64(offset));
        let consumer = consumer.map(ParkedConsumer::as_str);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(LIST).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&limit, &offset, &consumer]).await.map_err(|e| db_error(&e))?;
        rows.iter().map(parked_record).collect()
    }

    async fn stream(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let limit = clamp_i64(limit);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(STREAM).await.map_err(|e| db_error(&e))?;
        let rows = client
            .query(&statement, &[&consumer.as_str(), &stream_key, &limit])
            .await
            .map_err(|e| db_error(&e))?;
        rows.iter().map(parked_record).collect()
    }

    async fn remove(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        position: u64,
    ) -> Result<bool, StoreError> {
        let position = to_i64("position", position)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(REMOVE).await.map_err(|e| db_error(&e))?;
        let removed = client
            .execute(&statement, &[&consumer.as_str(), &stream_key, &position])
            .await
            .map_err(|e| db_error(&e))?;
        Ok(removed > 0)
    }

    async fn stats(&self) -> Result<ParkedStats, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(STATS).await.map_err(|e| db_error(&e))?;
        let row = client.query_one(&statement, &[]).await.map_err(|e| db_error(&e))?;
        let count: i64 = column(&row, "parked")?;
        let oldest: Option<DateTime<Utc>> = column(&row, "oldest")?;
        Ok(ParkedStats { count: to_u64("parked", count)?, oldest_parked_at: oldest })
    }
}
