//! The projector handler against DynamoDB stores on moto, fed the MSK batches the event source
//! mapping would deliver (built in-process, so each fault is exact): duplicates, redelivered batches,
//! events that arrive before the ones they follow, and a projector that dies halfway through a batch.
//!
//! Run: `SERVICES="dynamodb kafka" infra/scripts/with-services.sh cargo test -p corebank-delivery
//! --all-features`. Without `AWS_ENDPOINT_URL` these tests fail; they never skip.

#![cfg(test)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use common::{account_history, account_id, append_each, fresh_tables, kafka_batch, sdk};
use corebank_app::SystemClock;
use corebank_app::parked::Parking;
use corebank_app::projector::Projector;
use corebank_delivery::handlers::batch::BatchError;
use corebank_delivery::handlers::projection::{CONSUMER, handle_kafka_event};
use corebank_store::dynamodb::{Client, stores};
use corebank_store::{
    AccountSummary, ParkedKind, ProjectionChange, ProjectionReplacement, ReadModelStore, StatementEntry,
    StoreError, Stores,
};

async fn setup() -> Stores {
    let client = Client::new(&sdk().await);
    let tables = fresh_tables(&client).await;
    stores(client, tables)
}

fn parking(stores: &Stores) -> Parking {
    Parking::new(stores.parked.clone(), CONSUMER, Arc::new(SystemClock))
}

fn projector(stores: &Stores) -> Projector {
    Projector::new(stores.events.clone(), stores.read_model.clone())
}

async fn summary(stores: &Stores, id: &str) -> AccountSummary {
    stores.read_model.summary(id).await.unwrap().expect("the account has a summary row")
}

async fn statement_versions(stores: &Stores, id: &str) -> Vec<u64> {
    stores.read_model.statement(id, 0, 1000).await.unwrap().iter().map(|e| e.stream_version).collect()
}

#[tokio::test]
async fn a_batch_delivered_twice_applies_every_event_once() {
    let stores = setup().await;
    let id = account_id();
    let events = account_history(&id, &[1_000, 250, 5]);
    append_each(&stores.events, &events).await;
    let batch = kafka_batch(&events, 0, 40);
    let projector = projector(&stores);

    assert_eq!(handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap().handled, 4);
    let first = summary(&stores, &id).await;
    assert_eq!((first.balance_minor, first.version), (1_255, 4));

    assert_eq!(
        handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap().handled,
        0,
        "a redelivery applies nothing"
    );
    assert_eq!(summary(&stores, &id).await, first, "balances unchanged by the second delivery");
    assert_eq!(statement_versions(&stores, &id).await, vec![1, 2, 3, 4]);
    assert_eq!(stores.read_model.checkpoint(&format!("account-{id}")).await.unwrap(), 4);
}

#[tokio::test]
async fn an_event_delivered_before_the_ones_it_follows_is_repaired_from_the_event_store() {
    let stores = setup().await;
    let id = account_id();
    let events = account_history(&id, &[100, 200, 300, 400]);
    append_each(&stores.events, &events).await;
    let projector = projector(&stores);

    // v4 arrives first: v1..v3 are read from the event store and applied before it.
    let late = kafka_batch(&events[3..4], 0, 10);
    assert_eq!(handle_kafka_event(&late, &projector, &parking(&stores)).await.unwrap().handled, 4);
    assert_eq!(summary(&stores, &id).await.balance_minor, 600);
    assert_eq!(statement_versions(&stores, &id).await, vec![1, 2, 3, 4]);

    // The earlier events then arrive: duplicates, skipped. The last one moves the account on.
    let early = kafka_batch(&events[..3], 0, 7);
    assert_eq!(handle_kafka_event(&early, &projector, &parking(&stores)).await.unwrap().handled, 0);
    let rest = kafka_batch(&events[4..], 0, 11);
    assert_eq!(handle_kafka_event(&rest, &projector, &parking(&stores)).await.unwrap().handled, 1);
    let summary = summary(&stores, &id).await;
    assert_eq!((summary.balance_minor, summary.version), (1_000, 5));
}

/// The read tables of `inner`, but the process "dies" after `allowed` applies: every later apply fails
/// as a killed Lambda's would never happen.
struct DiesAfter {
    inner: Arc<dyn ReadModelStore>,
    allowed: usize,
    applied: AtomicUsize,
}

#[async_trait]
impl ReadModelStore for DiesAfter {
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.checkpoint(stream_id).await
    }

    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
        if self.applied.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(StoreError::Unavailable("killed mid-batch".to_owned()));
        }
        self.inner.apply(change).await
    }

    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
        self.inner.replace(replacement).await
    }

    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
        self.inner.summary(account_id).await
    }

    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError> {
        self.inner.statement(account_id, offset, limit).await
    }
}

#[tokio::test]
async fn a_projector_killed_mid_batch_ends_correct_once_the_whole_batch_is_redelivered() {
    let stores = setup().await;
    let id = account_id();
    let events = account_history(&id, &[10, 20, 30, 40, 50, 60]);
    append_each(&stores.events, &events).await;
    let batch = kafka_batch(&events, 2, 100);

    // An earlier batch brought the first 3 of the 7 events. This invocation writes the stream's
    // records of the batch in one write, and dies there: the batch fails and is not committed.
    let earlier = kafka_batch(&events[..3], 2, 100);
    assert_eq!(
        handle_kafka_event(&earlier, &projector(&stores), &parking(&stores)).await.unwrap().handled,
        3
    );
    let dying = Projector::new(
        stores.events.clone(),
        Arc::new(DiesAfter { inner: stores.read_model.clone(), allowed: 0, applied: AtomicUsize::new(0) }),
    );
    let err = handle_kafka_event(&batch, &dying, &parking(&stores)).await.unwrap_err();
    // The failure names the stream's first record in the batch.
    assert!(matches!(&err, BatchError::Handle { version: 1, offset: 100, partition: 2, .. }), "{err}");
    assert_eq!(summary(&stores, &id).await.version, 3, "what was applied before the kill stays");

    // The mapping redelivers the whole batch to a fresh instance.
    assert_eq!(handle_kafka_event(&batch, &projector(&stores), &parking(&stores)).await.unwrap().handled, 4);
    let summary = summary(&stores, &id).await;
    assert_eq!((summary.balance_minor, summary.version), (210, 7));
    assert_eq!(statement_versions(&stores, &id).await, (1..=7).collect::<Vec<_>>());
}

#[tokio::test]
async fn several_partitions_in_one_batch_are_each_applied_in_offset_order() {
    let stores = setup().await;
    let (a, b) = (account_id(), account_id());
    let a_events = account_history(&a, &[5, 6]);
    let b_events = account_history(&b, &[7, 8, 9]);
    append_each(&stores.events, &a_events).await;
    append_each(&stores.events, &b_events).await;
    let mut batch = kafka_batch(&a_events, 0, 0);
    let other = kafka_batch(&b_events, 1, 0);
    batch.records.extend(other.records);
    // The records of a partition arrive out of offset order: the handler sorts them.
    for records in batch.records.values_mut() {
        records.reverse();
    }

    assert_eq!(handle_kafka_event(&batch, &projector(&stores), &parking(&stores)).await.unwrap().handled, 7);
    assert_eq!(summary(&stores, &a).await.balance_minor, 11);
    assert_eq!(summary(&stores, &b).await.balance_minor, 24);
}

#[tokio::test]
async fn an_undecodable_record_is_parked_under_its_offset_and_the_partition_moves_on() {
    let stores = setup().await;
    let id = account_id();
    let events = account_history(&id, &[1, 2]);
    append_each(&stores.events, &events).await;
    let mut batch = kafka_batch(&events, 0, 50);
    let records = batch.records.values_mut().next().unwrap();
    records.sort_by_key(|r| r.offset);
    let junk = base64::engine::general_purpose::STANDARD.encode(b"{\"not\":\"an envelope\"}");
    records[1].value = Some(junk.clone());
    let topic = records[1].topic.clone().unwrap();

    let report = handle_kafka_event(&batch, &projector(&stores), &parking(&stores)).await.unwrap();

    assert_eq!(report.parked, 1);
    assert_eq!(
        summary(&stores, &id).await.version,
        3,
        "the record after it was applied, and the one that did not decode repaired from the event store"
    );
    let parked = stores.parked.list(None, 0, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].stream_key, format!("{topic}-0@51"));
    assert_eq!(
        (parked[0].position, parked[0].kind, parked[0].payload.as_str()),
        (51, ParkedKind::Undecodable, junk.as_str())
    );
    assert!(parked[0].error.contains("not an event envelope"), "{}", parked[0].error);
}
