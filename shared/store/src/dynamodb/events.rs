//! The event store and the idempotency store on DynamoDB.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use corebank_domain::EventEnvelope;
use uuid::Uuid;

use super::codec::{self, IN_PROGRESS, Item, STREAM_INDEX_PARTITION, n, nanos, s};
use super::{
    Condition, DynamoTables, STREAMS_INDEX, TRANSACTION_ACTIONS_MAX, TRANSACTION_SIZE_BYTES_MAX,
    check_action, check_item_size, put_action, sdk_error, transact,
};
use crate::{
    AppendOutcome, AppendRequest, ClaimOutcome, EventStore, IdempotencyClaim, IdempotencyCompletion,
    IdempotencyKey, IdempotencyStore, StoreError, TransactionRecord,
};

/// Page size of the queries behind `load_stream` and `list_streams`.
const QUERY_PAGE_ITEMS_MAX: i32 = 1_000;

/// How often a claim is tried when the record that refused it vanished before it could be read.
const CLAIM_ATTEMPTS_MAX: usize = 3;

/// What each action of an append transaction stands for, to map a cancellation reason to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Event,
    VersionCheck,
    Transaction,
    Idempotency,
}

/// Events, idempotency records and transaction records on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoEventStore {
    client: Client,
    tables: Arc<DynamoTables>,
}

impl DynamoEventStore {
    /// An adapter over a ready client and the deployment's tables.
    pub fn new(client: Client, tables: Arc<DynamoTables>) -> Self {
        Self { client, tables }
    }

    fn event_key(stream_id: &str, version: u64) -> Item {
        Item::from([("stream_id".to_owned(), s(stream_id)), ("version".to_owned(), n(version))])
    }

    /// The stream's last version, read consistently (0 for no stream).
    async fn latest_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.tables.events)
            .key_condition_expression("stream_id = :s")
            .expression_attribute_values(":s", s(stream_id))
            .projection_expression("#version")
            .expression_attribute_names("#version", "version")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        output.items().first().map_or(Ok(0), |item| codec::get_n(item, "version"))
    }

    async fn event_exists(&self, stream_id: &str, version: u64) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .set_key(Some(Self::event_key(stream_id, version)))
            .projection_expression("#version")
            .expression_attribute_names("#version", "version")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(output.item.is_some())
    }

    /// A version conflict with the version found, or the expected one if it cannot be read.
    async fn conflict(&self, stream_id: String, expected: u64) -> StoreError {
        let actual = self.latest_version(&stream_id).await.unwrap_or(expected);
        StoreError::VersionConflict { stream_id, expected, actual }
    }

    async fn get_idempotency(&self, key: &IdempotencyKey) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.idempotency)
            .key("pk", s(codec::idempotency_pk(key)?))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(output.item)
    }
}

/// The writer holds its claim: the record is absent (as the memory adapter treats it) or in progress
/// under the writer's token.
fn claim_held(token: Uuid) -> Condition {
    Condition::new("attribute_not_exists(pk) OR (#state = :in_progress AND claim_token = :token)")
        .name("#state", "state")
        .value(":in_progress", s(IN_PROGRESS))
        .value(":token", s(token.to_string()))
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        request.validate()?;
        let stream_version = request.expected_version + request.events.len() as u64;
        let mut actions = Vec::with_capacity(TRANSACTION_ACTIONS_MAX);
        let mut roles = Vec::with_capacity(TRANSACTION_ACTIONS_MAX);
        let mut total_size = 0;

        let not_written = Condition::new("attribute_not_exists(#version)").name("#version", "version");
        for event in &request.events {
            let item = codec::event_item(event)?;
            total_size += check_item_size(&item)?;
            actions.push(put_action(&self.tables.events, item, Some(&not_written))?);
            roles.push(Role::Event);
        }
        if let Some(record) = &request.transaction {
            let item = codec::transaction_item(record);
            total_size += check_item_size(&item)?;
            let absent = Condition::new("attribute_not_exists(transaction_id)");
            actions.push(put_action(&self.tables.transactions, item, Some(&absent))?);
            roles.push(Role::Transaction);
        }
        if let Some(completion) = &request.idempotency {
            let item = codec::completion_item(completion)?;
            total_size += check_item_size(&item)?;
            actions.push(put_action(
                &self.tables.idempotency,
                item,
                Some(&claim_held(completion.claim_token)),
            )?);
            roles.push(Role::Idempotency);
        }
        if total_size > TRANSACTION_SIZE_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "transaction size in bytes",
                limit: TRANSACTION_SIZE_BYTES_MAX,
                actual: total_size,
            });
        }
        if request.expected_version > 0 {
            let key = Self::event_key(&request.stream_id, request.expected_version);
            if actions.len() < TRANSACTION_ACTIONS_MAX {
                let exists = Condition::new("attribute_exists(#version)").name("#version", "version");
                actions.push(check_action(&self.tables.events, key, &exists)?);
                roles.push(Role::VersionCheck);
            } else if !self.event_exists(&request.stream_id, request.expected_version).await? {
                // No room for the check inside the transaction; events are never deleted, so a version
                // seen to exist now still exists when the transaction runs.
                return Err(self.conflict(request.stream_id, request.expected_version).await);
            }
        }

        let cancelled = match transact(&self.client, actions).await? {
            Ok(()) => return Ok(AppendOutcome { stream_version }),
            Err(cancelled) => cancelled,
        };
        let failed = |role: Role| roles.iter().enumerate().any(|(i, r)| *r == role && cancelled.failed(i));
        if failed(Role::Event) || failed(Role::VersionCheck) {
            return Err(self.conflict(request.stream_id, request.expected_version).await);
        }
        if let Some(record) = request.transaction
            && failed(Role::Transaction)
        {
            return Err(StoreError::TransactionExists { transaction_id: record.transaction_id });
        }
        if let Some(completion) = request.idempotency
            && failed(Role::Idempotency)
        {
            return Err(StoreError::IdempotencyClaimLost { key: completion.key.key });
        }
        // Contention on a version that outlasted the retries: another writer is appending there.
        let contended = roles
            .iter()
            .enumerate()
            .any(|(i, r)| matches!(r, Role::Event | Role::VersionCheck) && cancelled.contended(i));
        if contended {
            return Err(self.conflict(request.stream_id, request.expected_version).await);
        }
        Err(cancelled.into_error())
    }

    async fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.events)
                .key_condition_expression("stream_id = :s AND #version > :after")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":s", s(stream_id))
                .expression_attribute_values(":after", n(after_version))
                .consistent_read(true)
                .limit(QUERY_PAGE_ITEMS_MAX)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in output.items() {
                events.push(codec::event_from_item(item)?);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(events);
            }
        }
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        if limit == 0 {
            return Ok(ids);
        }
        // Stream ids are never empty, so an empty cursor excludes nothing.
        let after = after.filter(|a| !a.is_empty());
        // Below the prefix, the cursor excludes nothing the prefix matches; at or above it, the ids after
        // the cursor are read in order until the first that leaves the prefix.
        let (condition, bound) = match after {
            Some(a) if a >= prefix => ("stream_index = :p AND stream_id > :bound", Some(a)),
            _ if !prefix.is_empty() => ("stream_index = :p AND begins_with(stream_id, :bound)", Some(prefix)),
            _ => ("stream_index = :p", None),
        };
        let page = i32::try_from(limit).unwrap_or(i32::MAX).min(QUERY_PAGE_ITEMS_MAX);
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.tables.events)
                .index_name(STREAMS_INDEX)
                .key_condition_expression(condition)
                .expression_attribute_values(":p", s(STREAM_INDEX_PARTITION))
                .set_exclusive_start_key(start)
                .limit(page);
            if let Some(bound) = bound {
                query = query.expression_attribute_values(":bound", s(bound));
            }
            let output = query.send().await.map_err(|e| sdk_error("Query", e))?;
            for item in output.items() {
                let id = codec::get_s(item, "stream_id")?;
                if !id.starts_with(prefix) {
                    return Ok(ids);
                }
                ids.push(id.to_owned());
                if ids.len() == limit {
                    return Ok(ids);
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(ids);
            }
        }
    }

    async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.transactions)
            .key("transaction_id", s(transaction_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.as_ref().map(codec::transaction_from_item).transpose()
    }
}

#[async_trait]
impl IdempotencyStore for DynamoEventStore {
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        let item = codec::claim_item(&claim)?;
        check_item_size(&item)?;
        // Free: absent, past its TTL (DynamoDB deletes expired items lazily, so an expired record may
        // still be there), or held under a lapsed lease by the same request.
        let free = Condition::new(
            "attribute_not_exists(pk) OR expires_at_ns <= :now \
             OR (#state = :in_progress AND lease_expires_at_ns <= :now AND request_hash = :hash)",
        )
        .name("#state", "state")
        .value(":now", nanos(claim.now))
        .value(":in_progress", s(IN_PROGRESS))
        .value(":hash", s(&claim.request_hash));
        for _ in 0..CLAIM_ATTEMPTS_MAX {
            let result = self
                .client
                .put_item()
                .table_name(&self.tables.idempotency)
                .set_item(Some(item.clone()))
                .condition_expression(free.expression())
                .set_expression_attribute_names(free.names())
                .set_expression_attribute_values(free.values())
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(ClaimOutcome::Claimed),
                Err(err) => err,
            };
            let Some(PutItemError::ConditionalCheckFailedException(refused)) = err.as_service_error() else {
                return Err(sdk_error("PutItem", err));
            };
            let existing = match refused.item() {
                Some(old) => Some(old.clone()),
                None => self.get_idempotency(&claim.key).await?,
            };
            if let Some(old) = existing {
                return Ok(ClaimOutcome::Existing(codec::idempotency_from_item(&old)?));
            }
            // Released between the refusal and the read: the key is free again, so try once more.
        }
        Err(StoreError::Unavailable(format!(
            "idempotency key {} changed under {CLAIM_ATTEMPTS_MAX} claims in a row",
            claim.key.key
        )))
    }

    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError> {
        let item = codec::completion_item(&completion)?;
        check_item_size(&item)?;
        let held = claim_held(completion.claim_token);
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.idempotency)
            .set_item(Some(item))
            .condition_expression(held.expression())
            .set_expression_attribute_names(held.names())
            .set_expression_attribute_values(held.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(StoreError::IdempotencyClaimLost { key: completion.key.key })
                }
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }

    async fn release(&self, key: &IdempotencyKey, claim_token: Uuid) -> Result<(), StoreError> {
        let held = Condition::new("#state = :in_progress AND claim_token = :token")
            .name("#state", "state")
            .value(":in_progress", s(IN_PROGRESS))
            .value(":token", s(claim_token.to_string()));
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.idempotency)
            .key("pk", s(codec::idempotency_pk(key)?))
            .condition_expression(held.expression())
            .set_expression_attribute_names(held.names())
            .set_expression_attribute_values(held.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                // Not held by this token (absent, completed, or taken over): nothing to give back.
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(sdk_error("DeleteItem", err)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use chrono::Utc;
    use corebank_domain::EventMetadata;
    use serde_json::json;

    use super::*;
    use crate::dynamodb::{ITEM_SIZE_BYTES_MAX, TRANSACTION_SIZE_BYTES_MAX};

    /// A store whose endpoint nothing listens on: these tests must be decided before any call.
    fn offline_store() -> DynamoEventStore {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url("http://127.0.0.1:9")
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "unit"))
            .build();
        DynamoEventStore::new(Client::from_conf(config), Arc::new(DynamoTables::with_prefix("unit_")))
    }

    fn event_with_payload_bytes(version: u64, bytes: usize) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: "account-limits".to_owned(),
            version,
            event_type: "MoneyDeposited".to_owned(),
            schema_version: 1,
            occurred_at: Utc::now(),
            payload: json!({ "blob": "x".repeat(bytes) }),
            metadata: EventMetadata::default(),
        }
    }

    fn request(events: Vec<EventEnvelope>) -> AppendRequest {
        AppendRequest {
            stream_id: "account-limits".to_owned(),
            expected_version: 0,
            events,
            idempotency: None,
            transaction: None,
        }
    }

    #[tokio::test]
    async fn an_event_over_the_item_size_limit_is_refused_before_any_call() {
        let err =
            offline_store().append(request(vec![event_with_payload_bytes(1, ITEM_SIZE_BYTES_MAX)])).await;

        let Err(StoreError::LimitExceeded { what, limit, actual }) = err else {
            panic!("expected LimitExceeded, got {err:?}");
        };
        assert_eq!(what, "item size in bytes");
        assert_eq!(limit, ITEM_SIZE_BYTES_MAX);
        assert!(actual > ITEM_SIZE_BYTES_MAX);
    }

    #[tokio::test]
    async fn events_over_the_transaction_size_limit_are_refused_before_any_call() {
        let events: Vec<EventEnvelope> = (1..=11).map(|v| event_with_payload_bytes(v, 390 * 1024)).collect();

        let err = offline_store().append(request(events)).await;

        let Err(StoreError::LimitExceeded { what, limit, actual }) = err else {
            panic!("expected LimitExceeded, got {err:?}");
        };
        assert_eq!(what, "transaction size in bytes");
        assert_eq!(limit, TRANSACTION_SIZE_BYTES_MAX);
        assert!(actual > TRANSACTION_SIZE_BYTES_MAX);
    }
}
