//! The `transfer_status` read table on Postgres.

use async_trait::async_trait;
use corebank_domain::StreamKind;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{column, db_error, decode_error, pool_error, to_i64, to_u64};
use crate::sql::{self, transfer_phase};
use crate::{StoreError, TransferLegStatus, TransferStatus, TransferStatusStore};

const SELECT: &str = "SELECT transfer_id, status, failure_reason, source_account_id, destination_account_id, \
         amount_minor, currency, legs, version, created_at, updated_at \
     FROM transfer_status WHERE transfer_id = $1";

const VERSION: &str = "SELECT version FROM transfer_status WHERE transfer_id = $1";

/// Served by the partial index `transfer_status_pending` (migration 0007).
const PENDING: &str = "SELECT transfer_id, status, failure_reason, source_account_id, destination_account_id, \
         amount_minor, currency, legs, version, created_at, updated_at \
     FROM transfer_status WHERE status = 'PENDING' AND updated_at < $1 \
     ORDER BY updated_at, transfer_id LIMIT $2";

/// From version 0, which is what an absent row means: only a first writer inserts.
const INSERT_NEW: &str = "INSERT INTO transfer_status (transfer_id, status, failure_reason, source_account_id, \
         destination_account_id, amount_minor, currency, legs, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (transfer_id) DO NOTHING RETURNING version";

const UPDATE_FROM: &str = "UPDATE transfer_status SET status = $2, failure_reason = $3, source_account_id = $4, \
         destination_account_id = $5, amount_minor = $6, currency = $7, legs = $8, version = $9, \
         created_at = $10, updated_at = $11 \
     WHERE transfer_id = $1 AND version = $12 RETURNING version";

const UPSERT: &str = "INSERT INTO transfer_status (transfer_id, status, failure_reason, source_account_id, \
         destination_account_id, amount_minor, currency, legs, version, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (transfer_id) DO UPDATE SET status = EXCLUDED.status, \
         failure_reason = EXCLUDED.failure_reason, source_account_id = EXCLUDED.source_account_id, \
         destination_account_id = EXCLUDED.destination_account_id, amount_minor = EXCLUDED.amount_minor, \
         currency = EXCLUDED.currency, legs = EXCLUDED.legs, version = EXCLUDED.version, \
         created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at";

/// The `transfer_status` table: one row per transfer, its `version` the row's checkpoint.
#[derive(Debug, Clone)]
pub struct PgTransferStatusStore {
    pool: Pool,
}

impl PgTransferStatusStore {
    /// A transfer status store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

/// A row's values in `INSERT` order ($1 .. $11).
struct Values<'a> {
    status: &'a TransferStatus,
    phase: &'static str,
    currency: &'a str,
    legs: serde_json::Value,
    version: i64,
}

impl<'a> Values<'a> {
    fn new(status: &'a TransferStatus) -> Result<Self, StoreError> {
        let legs = serde_json::to_value(&status.legs)
            .map_err(|e| StoreError::Invalid(format!("transfer legs are not serialisable: {e}")))?;
        Ok(Self {
            status,
            phase: status.status.as_str(),
            currency: status.currency.code(),
            legs,
            version: to_i64("transfer status version", status.version)?,
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        let s = self.status;
        [
            &s.transfer_id,
            &self.phase,
            &s.failure_reason,
            &s.source_account_id,
            &s.destination_account_id,
            &s.amount_minor,
            &self.currency,
            &self.legs,
            &self.version,
            &s.created_at,
            &s.updated_at,
        ]
    }
}

fn row_status(row: &Row) -> Result<TransferStatus, StoreError> {
    let status: &str = column(row, "status")?;
    let currency: &str = column(row, "currency")?;
    let legs: serde_json::Value = column(row, "legs")?;
    Ok(TransferStatus {
        transfer_id: column(row, "transfer_id")?,
        status: transfer_phase(status)?,
        failure_reason: column(row, "failure_reason")?,
        source_account_id: column(row, "source_account_id")?,
        destination_account_id: column(row, "destination_account_id")?,
        amount_minor: column(row, "amount_minor")?,
        currency: sql::currency(currency)?,
        legs: serde_json::from_value::<Vec<TransferLegStatus>>(legs).map_err(|e| decode_error("legs", e))?,
        version: to_u64("transfer status version", column(row, "version")?)?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

#[async_trait]
impl TransferStatusStore for PgTransferStatusStore {
    async fn get(&self, transfer_id: &str) -> Result<Option<TransferStatus>, StoreError> {
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(SELECT).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&transfer_id]).await.map_err(|e| db_error(&e))?;
        row.as_ref().map(row_status).transpose()
    }

    async fn apply(&self, expected_version: u64, status: TransferStatus) -> Result<(), StoreError> {
        let values = Values::new(&status)?;
        let expected = to_i64("checkpoint", expected_version)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        // One conditional statement: the row moves only from the version the projector read.
        let moved = if expected == 0 {
            let statement = client.prepare_cached(INSERT_NEW).await.map_err(|e| db_error(&e))?;
            client.query_opt(&statement, &values.params()).await
        } else {
            let statement = client.prepare_cached(UPDATE_FROM).await.map_err(|e| db_error(&e))?;
            let mut params: Vec<&(dyn ToSql + Sync)> = values.params().to_vec();
            params.push(&expected);
            client.query_opt(&statement, &params).await
        }
        .map_err(|e| db_error(&e))?;
        if moved.is_some() {
            return Ok(());
        }
        let statement = client.prepare_cached(VERSION).await.map_err(|e| db_error(&e))?;
        let row = client.query_opt(&statement, &[&status.transfer_id]).await.map_err(|e| db_error(&e))?;
        let actual = match row {
            Some(row) => to_u64("transfer status version", column(&row, "version")?)?,
            None => 0,
        };
        Err(StoreError::CheckpointMoved {
            stream_id: StreamKind::Transfer.stream_id(&status.transfer_id),
            expected: expected_version,
            actual,
        })
    }

    async fn replace(&self, status: TransferStatus) -> Result<(), StoreError> {
        let values = Values::new(&status)?;
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(UPSERT).await.map_err(|e| db_error(&e))?;
        client.execute(&statement, &values.params()).await.map_err(|e| db_error(&e))?;
        Ok(())
    }

    async fn pending(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TransferStatus>, StoreError> {
        let limit = sql::clamp_i64(limit);
        let client = self.pool.get().await.map_err(|e| pool_error(&e))?;
        let statement = client.prepare_cached(PENDING).await.map_err(|e| db_error(&e))?;
        let rows = client.query(&statement, &[&updated_before, &limit]).await.map_err(|e| db_error(&e))?;
        rows.iter().map(row_status).collect()
    }
}
