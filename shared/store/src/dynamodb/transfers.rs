//! The `transfer_status` read table on DynamoDB: one item per transfer, whose `version` attribute is its
//! projection checkpoint, so a conditional `PutItem` moves row and checkpoint together.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use corebank_domain::{Currency, StreamKind};

use super::codec::{Item, get_n, get_s, get_time, n, opt_s, s, time};
use super::{Condition, DynamoTables, check_item_size, sdk_error};
use crate::{StoreError, TransferLegStatus, TransferPhase, TransferStatus, TransferStatusStore};

/// The transfer status table on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoTransferStatusStore {
    client: Client,
    tables: Arc<DynamoTables>,
}

impl DynamoTransferStatusStore {
    /// An adapter over a ready client and the deployment's tables.
    pub fn new(client: Client, tables: Arc<DynamoTables>) -> Self {
        Self { client, tables }
    }

    async fn put(&self, status: &TransferStatus, condition: Option<&Condition>) -> Result<bool, StoreError> {
        let item = status_item(status)?;
        check_item_size(&item)?;
        let mut request =
            self.client.put_item().table_name(&self.tables.transfer_status).set_item(Some(item));
        if let Some(c) = condition {
            request = request
                .condition_expression(c.expression())
                .set_expression_attribute_names(c.names())
                .set_expression_attribute_values(c.values());
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }
}

fn status_item(status: &TransferStatus) -> Result<Item, StoreError> {
    let legs = serde_json::to_string(&status.legs)
        .map_err(|e| StoreError::Invalid(format!("transfer legs are not serialisable: {e}")))?;
    let mut item = Item::from([
        ("transfer_id".to_owned(), s(&status.transfer_id)),
        ("status".to_owned(), s(status.status.as_str())),
        ("source_account_id".to_owned(), s(&status.source_account_id)),
        ("destination_account_id".to_owned(), s(&status.destination_account_id)),
        ("amount_minor".to_owned(), n(status.amount_minor)),
        ("currency".to_owned(), s(status.currency.code())),
        ("legs".to_owned(), s(legs)),
        ("version".to_owned(), n(status.version)),
        ("created_at".to_owned(), time(status.created_at)),
        ("updated_at".to_owned(), time(status.updated_at)),
    ]);
    if let Some(reason) = &status.failure_reason {
        item.insert("failure_reason".to_owned(), s(reason));
    }
    Ok(item)
}

fn status_from_item(item: &Item) -> Result<TransferStatus, StoreError> {
    let phase = get_s(item, "status")?;
    let currency = get_s(item, "currency")?;
    let legs: Vec<TransferLegStatus> =
        serde_json::from_str(get_s(item, "legs")?).map_err(|e| StoreError::Corrupt(format!("legs: {e}")))?;
    Ok(TransferStatus {
        transfer_id: get_s(item, "transfer_id")?.to_owned(),
        status: TransferPhase::parse(phase)
            .ok_or_else(|| StoreError::Corrupt(format!("status: unknown transfer status {phase:?}")))?,
        failure_reason: opt_s(item, "failure_reason")?,
        source_account_id: get_s(item, "source_account_id")?.to_owned(),
        destination_account_id: get_s(item, "destination_account_id")?.to_owned(),
        amount_minor: get_n(item, "amount_minor")?,
        currency: Currency::parse(currency).map_err(|e| StoreError::Corrupt(format!("currency: {e}")))?,
        legs,
        version: get_n(item, "version")?,
        created_at: get_time(item, "created_at")?,
        updated_at: get_time(item, "updated_at")?,
    })
}

#[async_trait]
impl TransferStatusStore for DynamoTransferStatusStore {
    async fn get(&self, transfer_id: &str) -> Result<Option<TransferStatus>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.transfer_status)
            .key("transfer_id", s(transfer_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.as_ref().map(status_from_item).transpose()
    }

    async fn apply(&self, expected_version: u64, status: TransferStatus) -> Result<(), StoreError> {
        let expression = if expected_version == 0 {
            "attribute_not_exists(transfer_id) OR #version = :expected"
        } else {
            "#version = :expected"
        };
        let at_expected =
            Condition::new(expression).name("#version", "version").value(":expected", n(expected_version));
        if self.put(&status, Some(&at_expected)).await? {
            return Ok(());
        }
        let actual = self.get(&status.transfer_id).await?.map_or(0, |s| s.version);
        Err(StoreError::CheckpointMoved {
            stream_id: StreamKind::Transfer.stream_id(&status.transfer_id),
            expected: expected_version,
            actual,
        })
    }

    async fn replace(&self, status: TransferStatus) -> Result<(), StoreError> {
        self.put(&status, None).await.map(|_| ())
    }

    /// A filtered `Scan` of the whole table: its cost grows with the number of transfers, which a
    /// reconciler pass every few minutes can afford (docs/limits.md); the age is checked here, since
    /// stored times are text of varying precision.
    async fn pending(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TransferStatus>, StoreError> {
        let mut pending = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.tables.transfer_status)
                .filter_expression("#status = :pending")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":pending", s(TransferPhase::Pending.as_str()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scan", e))?;
            for item in output.items() {
                let status = status_from_item(item)?;
                if status.updated_at < updated_before {
                    pending.push(status);
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(TransferStatus::oldest_updates_first(pending, limit))
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use corebank_domain::transfer::Leg;

    use super::*;
    use crate::LegStatus;

    #[test]
    fn a_status_item_reads_back_as_the_same_status() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        for failure_reason in [None, Some("ACCOUNT_NOT_FOUND".to_owned())] {
            let status = TransferStatus {
                transfer_id: "t-1".to_owned(),
                status: TransferPhase::Failed,
                failure_reason,
                source_account_id: "acc-a".to_owned(),
                destination_account_id: "acc-b".to_owned(),
                amount_minor: 1025,
                currency: Currency::parse("USD").unwrap(),
                legs: vec![TransferLegStatus { leg: Leg::Hold, status: LegStatus::Completed, at }],
                version: 4,
                created_at: at,
                updated_at: at,
            };
            assert_eq!(status_from_item(&status_item(&status).unwrap()).unwrap(), status);
        }
    }
}
