//! The republish tool against moto and the tansu broker: events appended through the DynamoDB store
//! with chosen times, a window republished, the topics consumed by the MSK mapping's emulator.
//!
//! Run: `SERVICES="dynamodb kafka" infra/scripts/with-services.sh cargo test -p corebank-delivery
//! --features dynamodb --test republish_dynamodb`. Without `AWS_ENDPOINT_URL` or `KAFKA_BOOTSTRAP`
//! these tests fail with a message saying what is missing. Each test has its own tables, topics and
//! consumer groups.

#![cfg(test)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use common::{account_history, account_id, append_each, fresh_tables, sdk};
use corebank_app::projector::{Applied, Projector};
use corebank_delivery::emulators::kafka_consumer::{ConsumerConfig, KafkaBatchConsumer};
use corebank_delivery::republish::{RepublishOptions, Window, republish};
use corebank_domain::transfer::TransferEvent;
use corebank_domain::{AccountId, Amount, Currency, EventEnvelope, EventMetadata, TransferId, TransferTerms};
use corebank_messaging::{
    EventPublisher, KafkaConfig, KafkaPublisher, PublishError, Topics, decode_value, ensure_topics,
};
use corebank_store::Stores;
use corebank_store::dynamodb::{Client, DynamoTables, stores};
use uuid::Uuid;

/// Upper bound of every wait, so that a broken pipeline fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(90);
/// How long a topic must stay quiet after the expected records arrived before none more is expected.
const QUIET: Duration = Duration::from_secs(3);

fn kafka_config() -> KafkaConfig {
    let brokers = std::env::var("KAFKA_BOOTSTRAP").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!(
            "KAFKA_BOOTSTRAP is not set: these tests need a Kafka broker. Run them through \
             `SERVICES=\"dynamodb kafka\" infra/scripts/with-services.sh cargo test -p corebank-delivery --features dynamodb`"
        )
    });
    let mut config = KafkaConfig::new(brokers);
    config.client_id = "corebank-republish-tests".to_owned();
    // tansu answers JoinGroup only after about half the session timeout: keep it short.
    config.session_timeout_ms = 1_000;
    config
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// `event` as the transfer stream's version `version` at `occurred_at`.
fn transfer_event(transfer_id: &TransferId, version: u64, event: &TransferEvent) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: transfer_id.stream_id(),
        version,
        event_type: event.event_type().to_owned(),
        schema_version: 1,
        occurred_at: Utc::now(),
        payload: event.payload(),
        metadata: EventMetadata::default(),
    }
}

struct Bank {
    client: Client,
    tables: DynamoTables,
    stores: Stores,
    kafka: KafkaConfig,
    topics: Topics,
}

async fn bank() -> Bank {
    let client = Client::new(&sdk().await);
    let tables = fresh_tables(&client).await;
    let stores = stores(client.clone(), tables.clone());
    let kafka = kafka_config();
    let run = Uuid::new_v4().simple();
    let topics = Topics {
        account_events: format!("test.account-events.{run}"),
        transfer_events: format!("test.transfer-events.{run}"),
    };
    ensure_topics(&kafka, &topics.all(), 3).await.expect("topics are created");
    Bank { client, tables, stores, kafka, topics }
}

impl Bank {
    /// Appends `events` of one stream, one append each, after stamping them with `times`.
    async fn append_at(&self, mut events: Vec<EventEnvelope>, times: &[&str]) -> Vec<EventEnvelope> {
        assert_eq!(events.len(), times.len());
        for (event, time) in events.iter_mut().zip(times) {
            event.occurred_at = at(time);
        }
        append_each(&self.stores.events, &events).await;
        events
    }

    async fn republish(&self, options: &RepublishOptions) -> corebank_delivery::republish::RepublishSummary {
        let publisher = KafkaPublisher::new(&self.kafka, self.topics.clone()).expect("producer");
        republish(&self.client, &self.tables.events, &self.topics, &publisher, options)
            .await
            .expect("republish runs")
    }

    /// Every record on both topics, read by a fresh consumer group from the start: waits until at least
    /// `expected` arrived, then until the topics stay quiet for [`QUIET`], so a record too many is seen.
    async fn consume(&self, expected: usize) -> Vec<(String, String, EventEnvelope)> {
        let group = format!("test-republish-{}", Uuid::new_v4().simple());
        let mut config =
            ConsumerConfig::new(group, self.topics.all().into_iter().map(str::to_owned).collect());
        config.retry_backoff_initial_ms = 50;
        config.retry_backoff_max_ms = 200;
        let consumer = KafkaBatchConsumer::new(&self.kafka, config).expect("consumer");
        let seen: Arc<Mutex<Vec<(String, String, EventEnvelope)>>> = Arc::default();
        let (tick_tx, mut tick_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handler = |event: KafkaEvent| {
            let seen = seen.clone();
            let tick_tx = tick_tx.clone();
            async move {
                let b64 = |text: Option<&str>| {
                    base64::engine::general_purpose::STANDARD
                        .decode(text.unwrap_or_default())
                        .map_err(|e| e.to_string())
                };
                let mut seen = seen.lock().map_err(|e| e.to_string())?;
                for record in event.records.values().flatten() {
                    let envelope = decode_value(&b64(record.value.as_deref())?).map_err(|e| e.to_string())?;
                    let key = String::from_utf8(b64(record.key.as_deref())?).map_err(|e| e.to_string())?;
                    seen.push((record.topic.clone().unwrap_or_default(), key, envelope));
                }
                let _ = tick_tx.send(());
                Ok::<(), String>(())
            }
        };
        let run = consumer.run(handler, async {
            let _ = stop_rx.await;
        });
        let wait = async {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let count = seen.lock().unwrap().len();
                let limit = if count >= expected { QUIET } else { deadline - tokio::time::Instant::now() };
                match tokio::time::timeout(limit, tick_rx.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => panic!("the consumer stopped"),
                    Err(_) if count >= expected => break,
                    Err(_) => panic!("only {count} of {expected} records within {PATIENCE:?}"),
                }
            }
            let _ = stop_tx.send(());
        };
        let (ran, ()) = tokio::join!(run, wait);
        ran.expect("the consumer runs without a fatal error");
        seen.lock().unwrap().clone()
    }
}

fn ids(events: &[EventEnvelope]) -> Vec<(String, u64, Uuid)> {
    let mut ids: Vec<_> = events.iter().map(|e| (e.stream_id.clone(), e.version, e.event_id)).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_is_republished_exactly_and_a_second_run_is_skipped_as_duplicates() {
    let bank = bank().await;
    // Account A: one event before the window (a microsecond before it), two inside, one at its end
    // (excluded: the window is half open). Account B: wholly inside. Transfer T: requested inside.
    let a = account_id();
    let a_events = bank
        .append_at(
            account_history(&a, &[1_000, 250, 5]),
            &[
                "2020-03-01T00:59:59.999999Z",
                "2020-03-01T01:00:00Z",
                "2020-03-01T01:30:00.5Z",
                "2020-03-01T02:00:00Z",
            ],
        )
        .await;
    let b = account_id();
    let b_events = bank
        .append_at(account_history(&b, &[700]), &["2020-03-01T01:10:00Z", "2020-03-01T01:59:59.999Z"])
        .await;
    let transfer_id = TransferId::parse(&format!("t-{}", Uuid::new_v4().simple())).unwrap();
    let terms = TransferTerms {
        transfer_id: transfer_id.clone(),
        source_account_id: AccountId::parse(&a).unwrap(),
        destination_account_id: AccountId::parse(&b).unwrap(),
        amount: Amount::from_minor(100).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        initiated_by: None,
    };
    let t_events = bank
        .append_at(
            vec![transfer_event(&transfer_id, 1, &TransferEvent::Requested(terms))],
            &["2020-03-01T01:45:00Z"],
        )
        .await;
    // Another day altogether.
    let c = account_id();
    bank.append_at(account_history(&c, &[1]), &["2020-03-02T01:00:00Z", "2020-03-02T01:00:01Z"]).await;

    let window: Vec<EventEnvelope> = [&a_events[1..3], &b_events[..], &t_events[..]].concat();
    let mut options =
        RepublishOptions::new(Window::new(at("2020-03-01T01:00:00Z"), at("2020-03-01T02:00:00Z")).unwrap());
    options.segments = 3;
    options.page_items = 2;

    // A dry run counts and publishes nothing.
    options.dry_run = true;
    let dry = bank.republish(&options).await;
    assert_eq!((dry.read, dry.published, dry.failed, dry.undecodable), (5, 0, 0, 0), "{dry:?}");
    assert_eq!(dry.scanned, 9, "every item of the table was evaluated once: {dry:?}");
    assert_eq!(
        dry.by_topic,
        BTreeMap::from([(bank.topics.account_events.clone(), 4), (bank.topics.transfer_events.clone(), 1)])
    );

    // The run publishes exactly the window's events, on the topic of their stream, keyed by stream.
    options.dry_run = false;
    let first = bank.republish(&options).await;
    assert_eq!((first.read, first.published, first.failed), (5, 5, 0), "{first:?}");
    let consumed = bank.consume(window.len()).await;
    let envelopes: Vec<EventEnvelope> = consumed.iter().map(|(_, _, e)| e.clone()).collect();
    assert_eq!(ids(&envelopes), ids(&window), "nothing before, after or outside the window, nothing twice");
    for (topic, key, envelope) in &consumed {
        let stored = window.iter().find(|e| e.event_id == envelope.event_id).unwrap();
        assert_eq!(envelope, stored, "the message carries the stored event");
        assert_eq!(key, &envelope.stream_id, "keyed by stream, as the outbox publisher keys");
        assert_eq!(topic, bank.topics.topic_for(&envelope.stream_id).unwrap());
    }

    // The projector applies what it receives (repairing account A's first event from the store).
    let projector = Projector::new(bank.stores.events.clone(), bank.stores.read_model.clone())
        .with_transfers(bank.stores.transfers.clone());
    let mut delivered = envelopes.clone();
    delivered.sort_by(|x, y| (&x.stream_id, x.version).cmp(&(&y.stream_id, y.version)));
    for envelope in &delivered {
        let applied = projector.handle(envelope).await.unwrap();
        assert!(
            matches!(applied, Applied::Applied { .. }),
            "{}@{}: {applied:?}",
            envelope.stream_id,
            envelope.version
        );
    }
    let summary_a = bank.stores.read_model.summary(&a).await.unwrap().unwrap();
    assert_eq!((summary_a.version, summary_a.balance_minor), (3, 1_250));
    let row = bank.stores.transfers.get(transfer_id.as_str()).await.unwrap().unwrap();
    assert_eq!(row.version, 1);

    // A second run publishes the window again; the projector takes every copy as a duplicate.
    let second = bank.republish(&options).await;
    assert_eq!((second.read, second.published, second.failed), (5, 5, 0), "{second:?}");
    let twice = bank.consume(2 * window.len()).await;
    let twice: Vec<EventEnvelope> = twice.into_iter().map(|(_, _, e)| e).collect();
    assert_eq!(
        ids(&twice),
        ids(&[window.clone(), window.clone()].concat()),
        "each event exactly twice on the topics"
    );
    for envelope in &twice {
        assert_eq!(
            projector.handle(envelope).await.unwrap(),
            Applied::Duplicate,
            "{}@{}",
            envelope.stream_id,
            envelope.version
        );
    }
    assert_eq!(
        bank.stores.read_model.summary(&a).await.unwrap().unwrap(),
        summary_a,
        "nothing applied twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_prefix_narrows_the_window_to_matching_streams() {
    let bank = bank().await;
    let a = account_id();
    bank.append_at(account_history(&a, &[5]), &["2020-04-01T10:00:00Z", "2020-04-01T10:00:01Z"]).await;
    let b = account_id();
    let b_events =
        bank.append_at(account_history(&b, &[6]), &["2020-04-01T10:00:00Z", "2020-04-01T10:00:01Z"]).await;
    let mut options =
        RepublishOptions::new(Window::new(at("2020-04-01T00:00:00Z"), at("2020-04-02T00:00:00Z")).unwrap());
    options.stream_prefix = Some(format!("account-{b}"));

    let summary = bank.republish(&options).await;

    assert_eq!((summary.read, summary.published, summary.failed), (2, 2, 0), "{summary:?}");
    let consumed: Vec<EventEnvelope> = bank.consume(2).await.into_iter().map(|(_, _, e)| e).collect();
    assert_eq!(ids(&consumed), ids(&b_events));
    // The store is untouched by a republish.
    assert_eq!(bank.stores.events.load_stream(&format!("account-{a}"), 0).await.unwrap().len(), 2);
}

/// The broker times out on the whole first call, then refuses every event of one stream for good.
struct FlakyPublisher {
    inner: KafkaPublisher,
    calls: AtomicUsize,
    refused_stream: String,
}

#[async_trait]
impl EventPublisher for FlakyPublisher {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return events
                .iter()
                .map(|_| Err(PublishError::Transient { reason: "timed out".to_owned() }))
                .collect();
        }
        let accepted: Vec<EventEnvelope> =
            events.iter().filter(|e| e.stream_id != self.refused_stream).cloned().collect();
        let mut outcomes = self.inner.publish(&accepted).await.into_iter();
        events
            .iter()
            .map(|e| {
                if e.stream_id == self.refused_stream {
                    Err(PublishError::Rejected { reason: "policy".to_owned() })
                } else {
                    outcomes
                        .next()
                        .unwrap_or(Err(PublishError::Transient { reason: "no outcome".to_owned() }))
                }
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_refused_events_are_counted_as_failed() {
    let bank = bank().await;
    let a = account_id();
    let a_events = bank.append_at(account_history(&a, &[5, 6]), &["2020-05-01T10:00:00Z"; 3]).await;
    let b = account_id();
    bank.append_at(account_history(&b, &[7]), &["2020-05-01T10:00:00Z"; 2]).await;
    let publisher = FlakyPublisher {
        inner: KafkaPublisher::new(&bank.kafka, bank.topics.clone()).expect("producer"),
        calls: AtomicUsize::new(0),
        refused_stream: format!("account-{b}"),
    };
    let mut options =
        RepublishOptions::new(Window::new(at("2020-05-01T00:00:00Z"), at("2020-05-02T00:00:00Z")).unwrap());
    options.segments = 1;
    options.backoff = corebank_backoff::Backoff::from_millis(1, 5);

    let summary =
        republish(&bank.client, &bank.tables.events, &bank.topics, &publisher, &options).await.unwrap();

    assert_eq!((summary.read, summary.published, summary.failed), (5, 3, 2), "{summary:?}");
    assert!(publisher.calls.load(Ordering::SeqCst) >= 2, "the timed-out call was tried again");
    let consumed: Vec<EventEnvelope> = bank.consume(3).await.into_iter().map(|(_, _, e)| e).collect();
    assert_eq!(ids(&consumed), ids(&a_events), "only the stream the broker accepted arrives");
}
