//! Snapshots and rebuild jobs on DynamoDB: one item per stream and per job.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

use super::codec::{self, n, s};
use super::{Condition, DynamoTables, check_item_size, sdk_error};
use crate::{RebuildJob, RebuildJobStore, Snapshot, SnapshotStore, StoreError};

/// The newest snapshot of each stream, one item per stream.
#[derive(Debug, Clone)]
pub struct DynamoSnapshotStore {
    client: Client,
    tables: Arc<DynamoTables>,
}

impl DynamoSnapshotStore {
    /// An adapter over a ready client and the deployment's tables.
    pub fn new(client: Client, tables: Arc<DynamoTables>) -> Self {
        Self { client, tables }
    }
}

#[async_trait]
impl SnapshotStore for DynamoSnapshotStore {
    async fn load(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.snapshots)
            .key("stream_id", s(stream_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.as_ref().map(codec::snapshot_from_item).transpose()
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let item = codec::snapshot_item(&snapshot)?;
        check_item_size(&item)?;
        let older = Condition::new("attribute_not_exists(stream_id) OR #version < :version")
            .name("#version", "version")
            .value(":version", n(snapshot.version));
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.snapshots)
            .set_item(Some(item))
            .condition_expression(older.expression())
            .set_expression_attribute_names(older.names())
            .set_expression_attribute_values(older.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                // A snapshot at this version or newer is stored: it stays.
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }
}

/// Rebuild-all job records, one item per job.
#[derive(Debug, Clone)]
pub struct DynamoRebuildJobStore {
    client: Client,
    tables: Arc<DynamoTables>,
}

impl DynamoRebuildJobStore {
    /// An adapter over a ready client and the deployment's tables.
    pub fn new(client: Client, tables: Arc<DynamoTables>) -> Self {
        Self { client, tables }
    }
}

#[async_trait]
impl RebuildJobStore for DynamoRebuildJobStore {
    async fn put(&self, job: RebuildJob) -> Result<(), StoreError> {
        let item = codec::rebuild_job_item(&job);
        check_item_size(&item)?;
        self.client
            .put_item()
            .table_name(&self.tables.rebuild_jobs)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem", e))?;
        Ok(())
    }

    async fn get(&self, rebuild_id: &str) -> Result<Option<RebuildJob>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.rebuild_jobs)
            .key("rebuild_id", s(rebuild_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.as_ref().map(codec::rebuild_job_from_item).transpose()
    }
}
