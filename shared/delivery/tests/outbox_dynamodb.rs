//! The outbox-publisher handler on the real stream record captured from moto
//! (`shared/store/tests/fixtures/dynamodb_stream_insert.json`), with a fake publisher that fails
//! chosen events. No service is needed: the handler's input is the payload Lambda delivers.
//!
//! Run: `cargo test -p corebank-delivery --features dynamodb --test outbox_dynamodb`.

#![cfg(test)]

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use corebank_delivery::handlers::outbox::{RecordError, envelope_from_record, handle_stream_event};
use corebank_domain::EventEnvelope;
use corebank_messaging::{EventPublisher, PublishError};
use serde_json::{Value, json};
use uuid::Uuid;

const FIXTURE: &str = include_str!("../../store/tests/fixtures/dynamodb_stream_insert.json");

/// The captured record, as JSON to derive more records from.
fn captured() -> Value {
    let fixture: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    fixture["Records"][0].clone()
}

/// The captured record rewritten to another stream, version and sequence number (and a fresh event id),
/// keeping everything else byte for byte.
fn record(stream_id: &str, version: u64, sequence_number: &str) -> Value {
    let mut record = captured();
    let change = &mut record["dynamodb"];
    change["Keys"]["stream_id"]["S"] = json!(stream_id);
    change["Keys"]["version"]["N"] = json!(version.to_string());
    change["NewImage"]["stream_id"]["S"] = json!(stream_id);
    change["NewImage"]["version"]["N"] = json!(version.to_string());
    change["NewImage"]["event_id"]["S"] = json!(Uuid::new_v4().to_string());
    if version != 1 {
        change["NewImage"].as_object_mut().expect("NewImage is a map").remove("stream_index");
    }
    change["SequenceNumber"] = json!(sequence_number);
    record["eventID"] = json!(Uuid::new_v4().simple().to_string());
    record
}

fn with_name(mut record: Value, event_name: &str) -> Value {
    record["eventName"] = json!(event_name);
    record
}

fn batch(records: &[Value]) -> Event {
    serde_json::from_value(json!({ "Records": records })).expect("records in Lambda's shape deserialize")
}

fn failed_ids(response: &aws_lambda_events::event::streams::DynamoDbEventResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone().unwrap_or_default()).collect()
}

/// Records every call; refuses the events whose `(stream, version)` is in `fail`, as a broker would
/// time out on them; answers `outcomes_cut` fewer outcomes than asked, to break the contract on purpose.
#[derive(Default)]
struct FakePublisher {
    fail: HashSet<(String, u64)>,
    outcomes_cut: usize,
    calls: Mutex<Vec<Vec<EventEnvelope>>>,
}

impl FakePublisher {
    fn failing(fail: &[(&str, u64)]) -> Self {
        Self { fail: fail.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect(), ..Self::default() }
    }

    fn calls(&self) -> Vec<Vec<EventEnvelope>> {
        self.calls.lock().unwrap().clone()
    }

    fn published(&self) -> Vec<(String, u64)> {
        self.calls()
            .into_iter()
            .flatten()
            .map(|e| (e.stream_id, e.version))
            .filter(|key| !self.fail.contains(key))
            .collect()
    }
}

#[async_trait]
impl EventPublisher for FakePublisher {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        self.calls.lock().unwrap().push(events.to_vec());
        let mut outcomes: Vec<Result<(), PublishError>> = events
            .iter()
            .map(|e| {
                if self.fail.contains(&(e.stream_id.clone(), e.version)) {
                    Err(PublishError::Transient { reason: "timed out".to_owned() })
                } else {
                    Ok(())
                }
            })
            .collect();
        outcomes.truncate(outcomes.len().saturating_sub(self.outcomes_cut));
        outcomes
    }
}

#[test]
fn the_captured_insert_decodes_to_the_event_the_store_appended() {
    let event: Event = serde_json::from_str(FIXTURE).expect("the fixture is a Lambda DynamoDB event");
    let envelope = envelope_from_record(&event.records[0]).unwrap().expect("an INSERT carries an event");
    assert_eq!(envelope.event_id.to_string(), "a9671fd5-82fe-491e-b31a-6acd897eecd8");
    assert_eq!(envelope.stream_id, "account-1e254b34-79fb-4d50-a11d-e7438cb944d4");
    assert_eq!(envelope.version, 1);
    assert_eq!(envelope.event_type, "MoneyDeposited");
    assert_eq!(envelope.schema_version, 1);
    assert_eq!(envelope.occurred_at.to_rfc3339(), "2026-11-26T06:54:03+00:00");
    assert_eq!(envelope.payload["amountMinor"], "100");
    assert_eq!(envelope.metadata.actor.as_deref(), Some("contract-suite"));
    assert_eq!(envelope.metadata.command_id.as_deref(), Some("cmd-802de68c-25dc-47db-9acd-4fea59704fd1"));
}

#[tokio::test]
async fn the_captured_batch_is_published_whole_and_reports_no_failure() {
    let event: Event = serde_json::from_str(FIXTURE).unwrap();
    let publisher = FakePublisher::default();
    let response = handle_stream_event(event, &publisher).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    let calls = publisher.calls();
    assert_eq!(calls.len(), 1, "one publisher call per batch");
    assert_eq!(calls[0].len(), 1);
    assert_eq!(calls[0][0].stream_id, "account-1e254b34-79fb-4d50-a11d-e7438cb944d4");
}

#[tokio::test]
async fn batch_item_failures_name_exactly_the_sequence_numbers_the_publisher_did_not_acknowledge() {
    // Two transactions interleaved in one shard batch.
    let records = vec![
        record("account-a", 1, "100"),
        record("account-b", 1, "101"),
        record("account-a", 2, "102"),
        record("account-b", 2, "103"),
        record("account-a", 3, "104"),
        record("account-b", 3, "105"),
    ];
    let publisher = FakePublisher::failing(&[("account-a", 2), ("account-b", 3)]);
    let response = handle_stream_event(batch(&records), &publisher).await;

    assert_eq!(failed_ids(&response), vec!["102", "105"]);
    let calls = publisher.calls();
    assert_eq!(calls.len(), 1, "the whole batch goes to the publisher in one call");
    assert_eq!(calls[0].len(), 6);
    assert_eq!(
        publisher.published(),
        vec![
            ("account-a".to_owned(), 1),
            ("account-a".to_owned(), 3),
            ("account-b".to_owned(), 1),
            ("account-b".to_owned(), 2),
        ]
    );
}

#[tokio::test]
async fn interleaved_records_reach_the_publisher_in_version_order_per_stream() {
    // Out of order within a stream on purpose: the handler must not depend on arrival order.
    let records = vec![
        record("account-b", 2, "7"),
        record("account-a", 1, "8"),
        record("account-b", 1, "9"),
        record("account-a", 2, "10"),
    ];
    let publisher = FakePublisher::default();
    let response = handle_stream_event(batch(&records), &publisher).await;
    assert!(response.batch_item_failures.is_empty());
    let order: Vec<(String, u64)> =
        publisher.calls()[0].iter().map(|e| (e.stream_id.clone(), e.version)).collect();
    for stream in ["account-a", "account-b"] {
        let versions: Vec<u64> = order.iter().filter(|(s, _)| s == stream).map(|(_, v)| *v).collect();
        assert_eq!(versions, vec![1, 2], "{stream} in {order:?}");
    }
}

#[tokio::test]
async fn modify_and_remove_records_are_ignored_and_never_published_nor_failed() {
    let records = vec![
        record("account-a", 1, "1"),
        with_name(record("account-a", 1, "2"), "MODIFY"),
        with_name(record("account-a", 2, "3"), "REMOVE"),
        record("account-a", 2, "4"),
    ];
    let publisher = FakePublisher::default();
    let response = handle_stream_event(batch(&records), &publisher).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", failed_ids(&response));
    assert_eq!(publisher.published(), vec![("account-a".to_owned(), 1), ("account-a".to_owned(), 2)]);
}

#[tokio::test]
async fn an_undecodable_record_is_reported_as_failed_and_the_others_are_published() {
    let mut no_payload = record("account-a", 2, "21");
    no_payload["dynamodb"]["NewImage"].as_object_mut().unwrap().remove("payload");
    let mut not_json = record("account-b", 1, "22");
    not_json["dynamodb"]["NewImage"]["metadata"]["S"] = json!("{not json");
    let mut keys_only = record("account-c", 1, "23");
    keys_only["dynamodb"].as_object_mut().unwrap().remove("NewImage");
    let unknown = with_name(record("account-d", 1, "24"), "TRUNCATE");
    let records = vec![
        record("account-a", 1, "20"),
        no_payload,
        not_json,
        keys_only,
        unknown,
        record("account-e", 1, "25"),
    ];

    let event = batch(&records);
    assert!(matches!(envelope_from_record(&event.records[1]), Err(RecordError::NotAnEvent(_))));
    assert!(matches!(envelope_from_record(&event.records[4]), Err(RecordError::UnknownEventName(_))));
    let publisher = FakePublisher::default();
    let response = handle_stream_event(event, &publisher).await;

    assert_eq!(failed_ids(&response), vec!["21", "22", "23", "24"]);
    assert_eq!(publisher.published(), vec![("account-a".to_owned(), 1), ("account-e".to_owned(), 1)]);
}

#[tokio::test]
async fn events_the_publisher_left_unanswered_count_as_not_acknowledged() {
    let records =
        vec![record("account-a", 1, "31"), record("account-a", 2, "32"), record("account-a", 3, "33")];
    let publisher = FakePublisher { outcomes_cut: 2, ..FakePublisher::default() };
    let response = handle_stream_event(batch(&records), &publisher).await;
    assert_eq!(failed_ids(&response), vec!["32", "33"]);
}

#[tokio::test]
async fn a_batch_without_inserts_makes_no_publisher_call() {
    let records = vec![with_name(record("account-a", 1, "41"), "MODIFY")];
    let publisher = FakePublisher::default();
    let response = handle_stream_event(batch(&records), &publisher).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(publisher.calls().is_empty());
}
