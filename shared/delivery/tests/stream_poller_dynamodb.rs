//! The DynamoDB Streams poller (the local event source mapping) against moto: the batches it hands out
//! have the shape of the captured Lambda payload, arrive in order, and are retried from the first
//! failed record.
//!
//! Run: `SERVICES="dynamodb kafka" infra/scripts/with-services.sh cargo test -p corebank-delivery
//! --all-features`. Without `AWS_ENDPOINT_URL` these tests fail; they never skip.

#![cfg(test)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use common::{account_history, account_id, append_each, fresh_tables, sdk};
use corebank_delivery::emulators::stream_poller::aws_sdk_dynamodbstreams::Client as StreamsClient;
use corebank_delivery::emulators::stream_poller::aws_sdk_dynamodbstreams::types::ShardIteratorType;
use corebank_delivery::emulators::stream_poller::{
    DynamoStreamPoller, StreamPollerConfig, lambda_record_json,
};
use corebank_delivery::handlers::outbox::envelope_from_record;
use corebank_domain::EventEnvelope;
use corebank_store::dynamodb::{Client, DynamoTables, stores};
use corebank_store::{EventStore, Stores};
use serde_json::Value;
use tokio::sync::watch;

/// Upper bound on waiting for deliveries, so a broken poller fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

const FIXTURE: &str = include_str!("../../store/tests/fixtures/dynamodb_stream_insert.json");

struct Setup {
    sdk: aws_config::SdkConfig,
    tables: DynamoTables,
    stores: Stores,
}

async fn setup() -> Setup {
    let sdk = sdk().await;
    let client = Client::new(&sdk);
    let tables = fresh_tables(&client).await;
    let stores = stores(client, tables.clone());
    Setup { sdk, tables, stores }
}

fn poller(setup: &Setup) -> DynamoStreamPoller {
    let mut config = StreamPollerConfig::new(setup.tables.events.clone());
    config.idle_poll_ms = 20;
    config.retry_backoff_initial_ms = 20;
    config.retry_backoff_max_ms = 100;
    DynamoStreamPoller::new(StreamsClient::new(&setup.sdk), config)
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// The type tag of each attribute of a DynamoDB JSON map (`{"version": "N", ...}`).
fn attribute_types(value: &Value) -> BTreeMap<String, BTreeSet<String>> {
    value.as_object().unwrap().iter().map(|(name, v)| (name.clone(), keys(v))).collect()
}

#[tokio::test]
async fn records_converted_from_the_streams_api_have_the_shape_of_the_captured_lambda_payload() {
    let setup = setup().await;
    let id = account_id();
    let events = account_history(&id, &[100]);
    append_each(&setup.stores.events, &events).await;

    let streams = StreamsClient::new(&setup.sdk);
    let listed = streams.list_streams().table_name(&setup.tables.events).send().await.unwrap();
    let arn = listed.streams()[0].stream_arn.clone().unwrap();
    let described = streams.describe_stream().stream_arn(&arn).send().await.unwrap();
    let shard = described.stream_description.unwrap().shards.unwrap()[0].shard_id.clone().unwrap();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = streams.get_records().shard_iterator(iterator).send().await.unwrap().records.unwrap();
    assert_eq!(records.len(), 2);

    let ours = lambda_record_json(&records[0], &arn);
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let captured = &fixture["Records"][0];
    assert_eq!(keys(&ours), keys(captured), "record fields");
    assert_eq!(keys(&ours["dynamodb"]), keys(&captured["dynamodb"]), "dynamodb fields");
    assert_eq!(attribute_types(&ours["dynamodb"]["Keys"]), attribute_types(&captured["dynamodb"]["Keys"]));
    assert_eq!(
        attribute_types(&ours["dynamodb"]["NewImage"]),
        attribute_types(&captured["dynamodb"]["NewImage"]),
        "the first event of a stream, as in the fixture"
    );
    for field in ["eventName", "eventSource", "awsRegion", "eventVersion"] {
        assert_eq!(ours[field], captured[field], "{field}");
    }
    assert_eq!(ours["dynamodb"]["StreamViewType"], "NEW_IMAGE");
    assert!(ours["dynamodb"]["ApproximateCreationDateTime"].is_i64(), "epoch seconds, as Lambda sends");
    assert!(ours["dynamodb"]["SizeBytes"].is_i64());
    assert!(ours["dynamodb"]["SequenceNumber"].is_string());
    assert_eq!(ours["eventSourceARN"], Value::String(arn.clone()));

    let event: Event = serde_json::from_value(serde_json::json!({ "Records": [ours] })).unwrap();
    assert_eq!(envelope_from_record(&event.records[0]).unwrap().as_ref(), Some(&events[0]));
}

/// What a test handler saw: every batch's records as (sequence number, envelope).
type Seen = Arc<Mutex<Vec<Vec<(String, EventEnvelope)>>>>;

fn batch_of(event: &Event) -> Vec<(String, EventEnvelope)> {
    event
        .records
        .iter()
        .map(|r| {
            let envelope = envelope_from_record(r).unwrap().expect("only inserts in the events table");
            (r.change.sequence_number.clone().unwrap(), envelope)
        })
        .collect()
}

fn failures(sequence_numbers: &[&str]) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = sequence_numbers
        .iter()
        .map(|s| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some((*s).to_owned());
            failure
        })
        .collect();
    response
}

/// Waits until `done` holds for what was seen, bounded by [`PATIENCE`].
async fn wait_for(seen: &Seen, done: impl Fn(&[Vec<(String, EventEnvelope)>]) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if done(&seen.lock().unwrap()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not arrive: {:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failed_record_is_redelivered_with_everything_after_it_and_nothing_before_it() {
    let setup = setup().await;
    let id = account_id();
    let events = account_history(&id, &[1, 2, 3, 4]);
    append_each(&setup.stores.events, &events).await;

    let poller = Arc::new(poller(&setup));
    let seen: Seen = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let task = {
        let (poller, seen) = (poller.clone(), seen.clone());
        tokio::spawn(async move {
            let handler = |event: Event| {
                let seen = seen.clone();
                async move {
                    let batch = batch_of(&event);
                    let first_call = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(batch.clone());
                        seen.len() == 1
                    };
                    // The first delivery fails the 3rd and 5th records (v3 and v5).
                    if first_call {
                        failures(&[&batch[4].0, &batch[2].0])
                    } else {
                        DynamoDbEventResponse::default()
                    }
                }
            };
            let mut stopped = stopped;
            poller
                .run(handler, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        })
    };
    wait_for(&seen, |batches| batches.len() >= 2).await;
    // Give a wrong extra redelivery the chance to show up before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let batches = seen.lock().unwrap().clone();
    let versions: Vec<Vec<u64>> =
        batches.iter().map(|b| b.iter().map(|(_, e)| e.version).collect()).collect();
    assert_eq!(versions, vec![vec![1, 2, 3, 4, 5], vec![3, 4, 5]]);
    assert_eq!(batches[1][0].0, batches[0][2].0, "the retry starts at the first failed sequence number");
    assert_eq!(batches[1][0].1, events[2], "and carries the same event");
    assert_eq!(poller.last_error(), None, "a clean round clears the error");
}

#[tokio::test]
async fn events_appended_while_polling_arrive_once_each_and_in_version_order_per_stream() {
    let setup = setup().await;
    let poller = Arc::new(poller(&setup));
    let seen: Seen = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let task = {
        let (poller, seen) = (poller.clone(), seen.clone());
        tokio::spawn(async move {
            let handler = |event: Event| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(batch_of(&event));
                    DynamoDbEventResponse::default()
                }
            };
            let mut stopped = stopped;
            poller
                .run(handler, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        })
    };

    let histories: Vec<Vec<EventEnvelope>> =
        (0..3).map(|i| account_history(&account_id(), &[i + 1; 4])).collect();
    let writers: Vec<_> = histories
        .iter()
        .cloned()
        .map(|events| {
            let store: Arc<dyn EventStore> = setup.stores.events.clone();
            tokio::spawn(async move { append_each(&store, &events).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let total: usize = histories.iter().map(Vec::len).sum();
    wait_for(&seen, |batches| batches.iter().map(Vec::len).sum::<usize>() >= total).await;
    stop.send(true).unwrap();
    task.await.unwrap();

    let delivered: Vec<EventEnvelope> =
        seen.lock().unwrap().iter().flatten().map(|(_, e)| e.clone()).collect();
    assert_eq!(delivered.len(), total, "each event exactly once");
    for history in &histories {
        let stream: Vec<&EventEnvelope> =
            delivered.iter().filter(|e| e.stream_id == history[0].stream_id).collect();
        assert_eq!(stream, history.iter().collect::<Vec<_>>(), "{}", history[0].stream_id);
    }
}
