//! Helpers of the DynamoDB tests: the SDK config of the environment (moto, started by
//! `infra/scripts/with-services.sh`), a fresh table set per test, and account events.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use corebank_delivery::emulators::kafka_consumer::{ConsumedRecord, kafka_event_from_records};
use corebank_domain::account::{AccountCreated, AccountEvent, MoneyMoved};
use corebank_domain::{AccountId, Amount, Currency, EventEnvelope, EventMetadata, OwnerId, TransactionId};
use corebank_messaging::{Topics, encode};
use corebank_store::dynamodb::{Client, DynamoTables, create_tables};
use corebank_store::{AppendRequest, EventStore};
use uuid::Uuid;

/// The SDK configuration of the environment; fails (never skips) without a local endpoint.
pub async fn sdk() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.trim().is_empty());
    assert!(
        endpoint.is_some(),
        "AWS_ENDPOINT_URL is not set: these tests need a DynamoDB-API server. Run them through \
         `SERVICES=\"dynamodb kafka\" infra/scripts/with-services.sh cargo test -p corebank-delivery --all-features`"
    );
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A fresh table set under a unique prefix.
pub async fn fresh_tables(client: &Client) -> DynamoTables {
    let prefix = format!("pipe_{}_", Uuid::new_v4().simple());
    create_tables(client, &prefix).await.expect("tables are created")
}

/// Now, at the millisecond precision events keep.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// An envelope of `event` at `stream_id`/`version`.
pub fn envelope(stream_id: &str, version: u64, event: &AccountEvent) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: event.event_type().to_owned(),
        schema_version: 1,
        occurred_at: now(),
        payload: event.payload(),
        metadata: EventMetadata {
            transaction_id: event.transaction_id().map(|t| t.as_str().to_owned()),
            ..EventMetadata::default()
        },
    }
}

/// A fresh account id.
pub fn account_id() -> String {
    format!("acc-{}", Uuid::new_v4().simple())
}

/// `AccountCreated` followed by deposits of `deposits` (minor units) on account `id`, as envelopes
/// of versions 1 ..= 1 + deposits.len().
pub fn account_history(id: &str, deposits: &[i64]) -> Vec<EventEnvelope> {
    let account = AccountId::parse(id).unwrap();
    let currency = Currency::parse("USD").unwrap();
    let stream = format!("account-{id}");
    let mut events = vec![envelope(
        &stream,
        1,
        &AccountEvent::Created(AccountCreated {
            account_id: account.clone(),
            owner_id: OwnerId::parse("owner-1").unwrap(),
            currency,
        }),
    )];
    let mut balance = 0;
    for (i, amount) in deposits.iter().enumerate() {
        balance += amount;
        events.push(envelope(
            &stream,
            i as u64 + 2,
            &AccountEvent::Deposited(MoneyMoved {
                account_id: account.clone(),
                amount: Amount::from_minor(*amount).unwrap(),
                currency,
                transaction_id: TransactionId::parse(&format!("tx-{}", Uuid::new_v4().simple())).unwrap(),
                balance_after: balance,
            }),
        ));
    }
    events
}

/// Appends `events` (one stream, consecutive versions) one append per event.
pub async fn append_each(store: &Arc<dyn EventStore>, events: &[EventEnvelope]) {
    for event in events {
        store
            .append(AppendRequest {
                stream_id: event.stream_id.clone(),
                expected_version: event.version - 1,
                events: vec![event.clone()],
                idempotency: None,
                transaction: None,
            })
            .await
            .expect("append");
    }
}

/// The MSK batch a consumer would get for `events` placed on `partition` from offset `first_offset`.
pub fn kafka_batch(
    events: &[EventEnvelope],
    partition: i32,
    first_offset: i64,
) -> aws_lambda_events::event::kafka::KafkaEvent {
    let topics = Topics::single("test.account-events");
    let records: Vec<ConsumedRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            ConsumedRecord::from_outgoing(
                &encode(&topics, e).unwrap(),
                partition,
                first_offset + i as i64,
                rdkafka_timestamp(),
            )
        })
        .collect();
    kafka_event_from_records(&records, None, Some("127.0.0.1:9092"))
}

fn rdkafka_timestamp() -> rdkafka::message::Timestamp {
    rdkafka::message::Timestamp::CreateTime(now().timestamp_millis())
}
