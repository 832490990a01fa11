//! Parked records on DynamoDB, in the `rebuild_jobs` table under keys of their own.
//!
//! A parked record is one item whose key is `parked#<consumer>#<stream key>#<position>` (the position
//! zero-padded to 20 digits), beside the rebuild-all jobs, whose ids are UUIDs. The table holds a
//! handful of jobs and, normally, no parked record at all, so every read is a filtered, consistent
//! `Scan` of that small table, and sorting is done here. That keeps the deployment at the tables it has
//! (no new table, stream or policy resource) at the cost of reads that grow with the number of parked
//! records, which an operator is told about (health turns degraded) long before it matters.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

use super::codec::{Item, get_n, get_s, get_time, n, s, time};
use super::{DynamoTables, check_item_size, sdk_error};
use crate::{ParkedConsumer, ParkedKind, ParkedRecord, ParkedRecordStore, ParkedStats, StoreError};

/// The key attribute of the table the records share.
const KEY: &str = "rebuild_id";
/// Every parked record's key starts with this; no rebuild id does.
const PREFIX: &str = "parked#";

fn consumer_prefix(consumer: ParkedConsumer) -> String {
    format!("{PREFIX}{}#", consumer.as_str())
}

fn stream_prefix(consumer: ParkedConsumer, stream_key: &str) -> String {
    format!("{}{stream_key}#", consumer_prefix(consumer))
}

fn key(consumer: ParkedConsumer, stream_key: &str, position: u64) -> String {
    format!("{}{position:020}", stream_prefix(consumer, stream_key))
}

fn parked_item(record: &ParkedRecord) -> Item {
    Item::from([
        (KEY.to_owned(), s(key(record.consumer, &record.stream_key, record.position))),
        ("consumer".to_owned(), s(record.consumer.as_str())),
        ("stream_key".to_owned(), s(&record.stream_key)),
        ("position".to_owned(), n(record.position)),
        ("kind".to_owned(), s(record.kind.as_str())),
        ("payload".to_owned(), s(&record.payload)),
        ("error".to_owned(), s(&record.error)),
        ("parked_at".to_owned(), time(record.parked_at)),
    ])
}

fn parked_from_item(item: &Item) -> Result<ParkedRecord, StoreError> {
    Ok(ParkedRecord {
        consumer: ParkedConsumer::from_stored(get_s(item, "consumer")?)?,
        stream_key: get_s(item, "stream_key")?.to_owned(),
        position: get_n(item, "position")?,
        kind: ParkedKind::from_stored(get_s(item, "kind")?)?,
        payload: get_s(item, "payload")?.to_owned(),
        error: get_s(item, "error")?.to_owned(),
        parked_at: get_time(item, "parked_at")?,
    })
}

/// Parked records in the `rebuild_jobs` table (see the module docs).
#[derive(Debug, Clone)]
pub struct DynamoParkedRecordStore {
    client: Client,
    tables: Arc<DynamoTables>,
}

impl DynamoParkedRecordStore {
    /// An adapter over a ready client and the deployment's tables.
    pub fn new(client: Client, tables: Arc<DynamoTables>) -> Self {
        Self { client, tables }
    }

    /// Every parked record whose key starts with `prefix`, in no particular order.
    async fn scan(&self, prefix: &str) -> Result<Vec<ParkedRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.tables.rebuild_jobs)
                .filter_expression("begins_with(#key, :prefix)")
                .expression_attribute_names("#key", KEY)
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scan", e))?;
            for item in output.items() {
                records.push(parked_from_item(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(records),
            }
        }
    }
}

#[async_trait]
impl ParkedRecordStore for DynamoParkedRecordStore {
    async fn park(&self, record: ParkedRecord) -> Result<(), StoreError> {
        let item = parked_item(&record);
        check_item_size(&item)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.rebuild_jobs)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                // Parked already: the first record stays.
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }

    async fn parked_streams(&self, consumer: ParkedConsumer) -> Result<Vec<String>, StoreError> {
        let mut streams: Vec<String> =
            self.scan(&consumer_prefix(consumer)).await?.into_iter().map(|r| r.stream_key).collect();
        streams.sort();
        streams.dedup();
        Ok(streams)
    }

    async fn list(
        &self,
        consumer: Option<ParkedConsumer>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let prefix = consumer.map_or_else(|| PREFIX.to_owned(), consumer_prefix);
        Ok(ParkedRecord::oldest_first(self.scan(&prefix).await?, offset, limit))
    }

    async fn stream(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let mut records = self.scan(&stream_prefix(consumer, stream_key)).await?;
        records.retain(|r| r.stream_key == stream_key);
        records.sort_by_key(|r| r.position);
        records.truncate(limit);
        Ok(records)
    }

    async fn remove(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        position: u64,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.tables.rebuild_jobs)
            .key(KEY, s(key(consumer, stream_key, position)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn stats(&self) -> Result<ParkedStats, StoreError> {
        Ok(ParkedStats::of(&self.scan(PREFIX).await?))
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    #[test]
    fn a_parked_item_reads_back_as_the_same_record_under_a_key_no_rebuild_id_takes() {
        let record = ParkedRecord {
            consumer: ParkedConsumer::Saga,
            stream_key: "transfer-t-1".to_owned(),
            position: 3,
            kind: ParkedKind::Envelope,
            payload: "{}".to_owned(),
            error: "corrupt data: no".to_owned(),
            parked_at: DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap(),
        };
        let item = parked_item(&record);
        assert_eq!(get_s(&item, KEY).unwrap(), "parked#saga#transfer-t-1#00000000000000000003");
        assert_eq!(parked_from_item(&item).unwrap(), record);
    }
}
