//! The outbox relay against a real PostgreSQL and a real Kafka-protocol broker (tansu).
//!
//! Run: `SERVICES="postgres kafka" infra/scripts/with-services.sh cargo test -p corebank-delivery
//! --all-features`. Without `DATABASE_URL` or `KAFKA_BOOTSTRAP` these tests fail; they never skip.
//! Each test has its own database, topic and consumer group.

#![cfg(test)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use corebank_app::read_side::PipelineHealth;
use corebank_delivery::emulators::kafka_consumer::{ConsumerConfig, KafkaBatchConsumer};
use corebank_delivery::handlers::batch::envelopes_from_kafka_event;
use corebank_delivery::handlers::relay::{DrainStop, Relay, RelayConfig};
use corebank_domain::{EventEnvelope, EventMetadata};
use corebank_messaging::{EventPublisher, KafkaConfig, KafkaPublisher, PublishError, Topics, ensure_topics};
use corebank_store::postgres::{self, PgOutbox, PgStores, Pool};
use corebank_store::{AppendRequest, EventFeed};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// A bound on every wait, so that a broken relay fails the test instead of hanging it; no assertion
/// depends on how long anything takes.
const PATIENCE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Services

fn database_url() -> tokio_postgres::Config {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the relay tests need PostgreSQL and never skip. Run \
             `SERVICES=\"postgres kafka\" infra/scripts/with-services.sh cargo test -p corebank-delivery \
             --all-features`"
        )
    });
    url.parse().unwrap_or_else(|e| panic!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
}

fn pool(config: &tokio_postgres::Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager).max_size(4).build().expect("a pool without timeouts builds")
}

/// A fresh, migrated database: its config (for more pools) and a pool.
async fn fresh_database() -> (tokio_postgres::Config, Pool) {
    let server = database_url();
    let (client, connection) = server.connect(NoTls).await.expect("connect to DATABASE_URL");
    let driver = tokio::spawn(connection);
    let name = format!("corebank_relay_{}", Uuid::new_v4().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
    drop(client);
    let _ = driver.await;
    let mut config = server;
    config.dbname(&name);
    let pool = pool(&config);
    postgres::migrate(&pool).await.expect("migrate the test database");
    (config, pool)
}

fn kafka_config() -> KafkaConfig {
    let brokers =
        std::env::var("KAFKA_BOOTSTRAP").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
            panic!(
                "KAFKA_BOOTSTRAP is not set: the relay tests need a Kafka broker and never skip. Run them \
             through `SERVICES=\"postgres kafka\" infra/scripts/with-services.sh`"
            )
        });
    let mut config = KafkaConfig::new(brokers);
    config.client_id = "corebank-relay-tests".to_owned();
    // tansu answers JoinGroup only after about half the session timeout: keep it short.
    config.session_timeout_ms = 1_000;
    config.message_timeout_ms = 10_000;
    config
}

/// A fresh topic with three partitions for both event families.
async fn fresh_topics(config: &KafkaConfig) -> Topics {
    let topics = Topics::single(format!("test.relay.{}", Uuid::new_v4().simple()));
    ensure_topics(config, &topics.all(), 3).await.expect("create the test topic");
    topics
}

fn kafka_publisher(config: &KafkaConfig, topics: &Topics) -> Arc<dyn EventPublisher> {
    Arc::new(KafkaPublisher::new(config, topics.clone()).expect("create the producer"))
}

// ---------------------------------------------------------------------------------------------
// Events

fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        payload: serde_json::json!({"amountMinorUnits": version * 100, "currency": "USD"}),
        metadata: EventMetadata { actor: Some("relay-test".to_owned()), ..EventMetadata::default() },
    }
}

fn streams(count: usize) -> Vec<String> {
    let run = Uuid::new_v4().simple().to_string();
    (0..count).map(|i| format!("account-{run}-{i}")).collect()
}

/// Appends `events` more events to `stream_id`, which is at `at`.
async fn append(stores: &PgStores, stream_id: &str, at: u64, events: u64) -> Vec<EventEnvelope> {
    let events: Vec<EventEnvelope> = (1..=events).map(|i| envelope(stream_id, at + i)).collect();
    let request = AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version: at,
        events: events.clone(),
        idempotency: None,
        transaction: None,
    };
    stores.stores().events.append(request).await.expect("append");
    events
}

/// `per_stream` events on each stream, appended round-robin one or two at a time, so positions
/// interleave the streams.
async fn append_interleaved(stores: &PgStores, names: &[String], per_stream: u64) -> Vec<EventEnvelope> {
    let mut at: HashMap<&str, u64> = HashMap::new();
    let mut all = Vec::new();
    let mut round = 0;
    while all.len() < names.len() * usize::try_from(per_stream).unwrap() {
        for name in names {
            let version = at.entry(name.as_str()).or_insert(0);
            let left = per_stream - *version;
            let n = left.min(1 + (round % 2));
            if n > 0 {
                all.extend(append(stores, name, *version, n).await);
                *version += n;
            }
        }
        round += 1;
    }
    all
}

fn fast_config() -> RelayConfig {
    RelayConfig {
        batch_size: 16,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        poll_interval: Duration::from_millis(20),
        ..RelayConfig::default()
    }
}

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

// ---------------------------------------------------------------------------------------------
// The consumer side

/// Everything a fresh consumer group reads from the test topic, in delivery order.
struct Collector {
    seen: Arc<Mutex<Vec<EventEnvelope>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn start(config: &KafkaConfig, topics: &Topics) -> Self {
        let group = format!("test-relay-{}", Uuid::new_v4().simple());
        let consumer = KafkaBatchConsumer::new(
            config,
            ConsumerConfig::new(group, topics.all().into_iter().map(str::to_owned).collect()),
        )
        .expect("create the consumer");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stop_rx) = watch::channel(false);
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let handler = |event: aws_lambda_events::event::kafka::KafkaEvent| {
                let sink = sink.clone();
                async move {
                    let decoded: Vec<EventEnvelope> = envelopes_from_kafka_event(&event)
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?;
                    sink.lock().unwrap().extend(decoded);
                    Ok::<(), String>(())
                }
            };
            consumer
                .run(handler, async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
                .expect("the consumer runs");
        });
        Self { seen, stop, task }
    }

    /// Waits until at least `count` deliveries arrived, then a little longer so that extra
    /// (duplicate) deliveries would show too; returns them all and stops the consumer.
    async fn finish(self, count: usize) -> Vec<EventEnvelope> {
        let started = Instant::now();
        while self.seen.lock().unwrap().len() < count {
            assert!(
                started.elapsed() < PATIENCE,
                "only {} of {count} deliveries within {PATIENCE:?}",
                self.seen.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let _ = self.stop.send(true);
        self.task.await.expect("the consumer task ends");
        self.seen.lock().unwrap().clone()
    }
}

fn deliveries_per_event(seen: &[EventEnvelope]) -> HashMap<Uuid, usize> {
    let mut counts = HashMap::new();
    for e in seen {
        *counts.entry(e.event_id).or_insert(0) += 1;
    }
    counts
}

/// Asserts that no stream was reordered: whenever a version is delivered for the first time, every
/// earlier version of its stream has already been delivered. Duplicates (a version delivered again
/// later) are left to the caller.
#[track_caller]
fn assert_no_stream_reordered(seen: &[EventEnvelope]) {
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for e in seen {
        let top = highest.entry(e.stream_id.as_str()).or_insert(0);
        assert!(
            e.version <= *top + 1,
            "{} v{} was delivered before v{}: {:?}",
            e.stream_id,
            e.version,
            *top + 1,
            seen.iter().filter(|x| x.stream_id == e.stream_id).map(|x| x.version).collect::<Vec<_>>()
        );
        *top = (*top).max(e.version);
    }
}

#[track_caller]
fn assert_each_delivered_exactly_once(seen: &[EventEnvelope], written: &[EventEnvelope]) {
    let counts = deliveries_per_event(seen);
    for e in written {
        assert_eq!(counts.get(&e.event_id), Some(&1), "{} v{} deliveries", e.stream_id, e.version);
    }
    assert_eq!(seen.len(), written.len(), "nothing else was delivered");
}

// ---------------------------------------------------------------------------------------------
// Fakes

/// An in-process bus: delivers what it is given, except events of streams told to fail; keeps the
/// [`EventPublisher`] contract (a failed stream's later events in a call are held back).
#[derive(Default)]
struct FakeBus {
    delivered: Mutex<Vec<EventEnvelope>>,
    attempts: Mutex<HashMap<(String, u64), u32>>,
    failing: Mutex<HashMap<String, bool>>,
}

impl FakeBus {
    /// Every event of `stream_id` fails: retryably if `transient`, else as a refused message.
    fn fail_stream(&self, stream_id: &str, transient: bool) {
        self.failing.lock().unwrap().insert(stream_id.to_owned(), transient);
    }

    fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }
}

#[async_trait]
impl EventPublisher for FakeBus {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        let failing = self.failing.lock().unwrap().clone();
        let mut broken = HashSet::new();
        events
            .iter()
            .map(|e| {
                if broken.contains(&e.stream_id) {
                    return Err(PublishError::EarlierEventFailed { stream_id: e.stream_id.clone() });
                }
                *self.attempts.lock().unwrap().entry((e.stream_id.clone(), e.version)).or_insert(0) += 1;
                match failing.get(&e.stream_id) {
                    Some(true) => {
                        broken.insert(e.stream_id.clone());
                        Err(PublishError::Transient { reason: "injected: broker unavailable".to_owned() })
                    }
                    Some(false) => {
                        broken.insert(e.stream_id.clone());
                        Err(PublishError::Rejected { reason: "injected: invalid record".to_owned() })
                    }
                    None => {
                        self.delivered.lock().unwrap().push(e.clone());
                        Ok(())
                    }
                }
            })
            .collect()
    }
}

/// `(attempts, last_error, next_attempt_at is set, dead-lettered, published)` of every outbox row of
/// `stream_id`, in version order.
async fn outbox_rows(pool: &Pool, stream_id: &str) -> Vec<(i32, Option<String>, bool, bool, bool)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT attempts, last_error, next_attempt_at IS NOT NULL AS backoff, \
                    dead_lettered_at IS NOT NULL AS dead, published_at IS NOT NULL AS published \
             FROM outbox_events WHERE stream_id = $1 ORDER BY version",
            &[&stream_id],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_every_event_once_with_each_stream_in_version_order() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let kafka = kafka_config();
    let topics = fresh_topics(&kafka).await;
    let written = append_interleaved(&stores, &streams(5), 20).await;
    let collector = Collector::start(&kafka, &topics);
    let relay = Relay::new(PgOutbox::new(pool.clone()), kafka_publisher(&kafka, &topics), fast_config());

    let report = relay.drain(deadline()).await.unwrap();

    assert_eq!(report.stopped, DrainStop::Empty, "{report:?}");
    assert_eq!(report.published, 100, "{report:?}");
    assert_eq!((report.failed, report.dead_lettered, report.remaining), (0, 0, 0), "{report:?}");
    assert!(report.batches >= 100 / 16, "batches of at most 16: {report:?}");
    let seen = collector.finish(written.len()).await;
    assert_each_delivered_exactly_once(&seen, &written);
    assert_no_stream_reordered(&seen);
    let stats = relay.outbox().stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead_lettered, stats.blocked), (0, 0, 0), "{stats:?}");
    assert_eq!(relay.metrics().published, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_records_backoff_and_drains_in_order_once_the_broker_is_back() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let kafka = kafka_config();
    let topics = fresh_topics(&kafka).await;
    let names = streams(3);
    let written = append_interleaved(&stores, &names, 5).await;

    // The broker is down: the producer points at a port nobody listens on.
    let mut dead_broker = KafkaConfig::new("127.0.0.1:1");
    dead_broker.message_timeout_ms = 1_000;
    let config = RelayConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..fast_config()
    };
    let down =
        Relay::new(PgOutbox::new(pool.clone()), kafka_publisher(&dead_broker, &topics), config.clone());
    let first = down.relay_batch().await.unwrap();
    assert_eq!(first.claimed, 15, "{first:?}");
    assert_eq!(
        (first.published, first.failed, first.released),
        (0, 3, 12),
        "each stream's head failed: {first:?}"
    );
    assert!(down.last_error().is_some_and(|e| e.contains("temporary")), "{:?}", down.last_error());
    for name in &names {
        let rows = outbox_rows(&pool, name).await;
        let (attempts, error, backoff, dead, published) = &rows[0];
        assert_eq!((*attempts, *backoff, *dead, *published), (1, true, false, false), "{name}: {rows:?}");
        assert!(error.is_some(), "the failure is recorded: {rows:?}");
        assert!(rows[1..].iter().all(|r| r.0 == 0 && !r.4), "later rows wait untried: {rows:?}");
    }
    // While they back off, nothing of these streams is claimable.
    assert_eq!(down.relay_batch().await.unwrap().claimed, 0);
    let stats = down.refresh_stats().await.unwrap();
    assert_eq!((stats.pending, stats.retrying, stats.dead_lettered), (15, 3, 0), "{stats:?}");
    assert!(stats.next_retry_at.is_some(), "{stats:?}");

    // A second failure once the backoff has passed: attempts grow.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = down.relay_batch().await.unwrap();
    assert_eq!((second.published, second.failed), (0, 3), "{second:?}");
    for name in &names {
        assert_eq!(outbox_rows(&pool, name).await[0].0, 2, "{name}");
    }

    // The broker is back: a relay with a working producer drains everything, in order, once.
    let collector = Collector::start(&kafka, &topics);
    let up = Relay::new(PgOutbox::new(pool.clone()), kafka_publisher(&kafka, &topics), config);
    let report = up.drain(deadline()).await.unwrap();
    assert_eq!((report.stopped, report.published, report.remaining), (DrainStop::Empty, 15, 0), "{report:?}");
    let seen = collector.finish(written.len()).await;
    assert_each_delivered_exactly_once(&seen, &written);
    assert_no_stream_reordered(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_at_once_never_publish_a_row_twice_nor_reorder_a_stream() {
    let (db, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let kafka = kafka_config();
    let topics = fresh_topics(&kafka).await;
    let collector = Collector::start(&kafka, &topics);
    let config = RelayConfig { batch_size: 7, ..fast_config() };
    let relays: Vec<Arc<Relay>> = (0..2)
        .map(|_| {
            // Each relay has its own pool, as two processes would.
            Arc::new(Relay::new(
                PgOutbox::new(self::pool(&db)),
                kafka_publisher(&kafka, &topics),
                config.clone(),
            ))
        })
        .collect();
    let (stop, stop_rx) = watch::channel(false);
    let running: Vec<_> = relays
        .iter()
        .map(|relay| {
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(relay.clone().run(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            }))
        })
        .collect();

    // Writers append while both relays run.
    let names = streams(8);
    let mut writers = tokio::task::JoinSet::new();
    for chunk in names.chunks(2) {
        let stores = stores.clone();
        let chunk = chunk.to_vec();
        writers.spawn(async move { append_interleaved(&stores, &chunk, 25).await });
    }
    let mut written = Vec::new();
    while let Some(joined) = writers.join_next().await {
        written.extend(joined.unwrap());
    }

    let seen = collector.finish(written.len()).await;
    let _ = stop.send(true);
    for task in running {
        task.await.unwrap();
    }
    assert_each_delivered_exactly_once(&seen, &written);
    assert_no_stream_reordered(&seen);
    let published: u64 = relays.iter().map(|r| r.metrics().published).sum();
    assert_eq!(published, 200, "every row was marked published by exactly one relay");
    let stats = relays[0].outbox().stats().await.unwrap();
    assert_eq!(stats.pending, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_loses_nothing_and_after_its_lease_another_relay_publishes_in_order() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let kafka = kafka_config();
    let topics = fresh_topics(&kafka).await;
    let names = streams(2);
    let written = append_interleaved(&stores, &names, 6).await;
    let collector = Collector::start(&kafka, &topics);

    // Relay A claims 8 rows, gets 5 of them onto the bus, and dies before marking anything.
    let lease = Duration::from_secs(2);
    let claim = PgOutbox::new(pool.clone()).claim(8, lease).await.unwrap();
    assert_eq!(claim.rows.len(), 8);
    let handed: Vec<EventEnvelope> = claim.rows[..5].iter().map(|r| r.envelope.clone()).collect();
    let outcomes = kafka_publisher(&kafka, &topics).publish(&handed).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    drop(claim);

    // While the lease lasts, relay B takes nothing of these streams: neither the leased rows nor the
    // later ones behind them.
    let config = RelayConfig { lease, ..fast_config() };
    let b = Relay::new(PgOutbox::new(pool.clone()), kafka_publisher(&kafka, &topics), config);
    let early = b.relay_batch().await.unwrap();
    assert_eq!(early.claimed, 0, "{early:?}");

    // After the lease, B takes the batch over and publishes everything.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let report = b.drain(deadline()).await.unwrap();
    assert_eq!((report.stopped, report.published, report.remaining), (DrainStop::Empty, 12, 0), "{report:?}");

    let seen = collector.finish(written.len() + handed.len()).await;
    let counts = deliveries_per_event(&seen);
    let dead_batch: HashSet<Uuid> = handed.iter().map(|e| e.event_id).collect();
    for e in &written {
        let expected = if dead_batch.contains(&e.event_id) { 2 } else { 1 };
        assert_eq!(counts.get(&e.event_id), Some(&expected), "{} v{}", e.stream_id, e.version);
    }
    assert_eq!(seen.len(), written.len() + handed.len(), "duplicates only from the killed batch");
    assert_no_stream_reordered(&seen);
}

/// Transient is never dead: a row the bus keeps refusing for a passing reason (broker down) is retried
/// for as long as it takes, keeps its stream's later rows behind it, shows in health as stuck from
/// `alert_after_attempts` on, and goes out, in order, once the bus is back. Nothing is dead-lettered.
#[tokio::test]
async fn a_row_that_keeps_failing_transiently_is_retried_until_it_goes_out_and_is_never_dead_lettered() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let names = streams(2);
    let (bad, good) = (&names[0], &names[1]);
    append(&stores, bad, 0, 3).await;
    append(&stores, good, 0, 3).await;
    let bus = Arc::new(FakeBus::default());
    bus.fail_stream(bad, true);
    let config = RelayConfig {
        alert_after_attempts: 3,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..fast_config()
    };
    let relay = Relay::new(PgOutbox::new(pool.clone()), bus.clone(), config);

    // Far more attempts than the alert threshold: still no dead letter.
    let patience = deadline();
    while outbox_rows(&pool, bad).await[0].0 < 6 {
        assert!(Instant::now() < patience, "the failing row is retried");
        relay.relay_batch().await.unwrap();
        tokio::time::sleep(Duration::from_millis(6)).await;
    }
    let stats = relay.refresh_stats().await.unwrap();
    assert_eq!((stats.dead_lettered, stats.blocked), (0, 0), "{stats:?}");
    assert!(stats.max_attempts >= 6, "{stats:?}");
    let rows = outbox_rows(&pool, bad).await;
    assert!(!rows[0].3 && !rows[0].4, "neither dead nor published: {rows:?}");
    assert!(rows[0].1.as_deref().is_some_and(|e| e.contains("broker unavailable")), "{rows:?}");
    assert!(rows[1..].iter().all(|r| r.0 == 0 && !r.3 && !r.4), "held behind it, untried: {rows:?}");
    let attempts = bus.attempts.lock().unwrap().clone();
    assert_eq!(attempts.get(&(bad.clone(), 2)), None, "v2 was never tried before v1 was published");
    let delivered: Vec<(String, u64)> =
        bus.delivered.lock().unwrap().iter().map(|e| (e.stream_id.clone(), e.version)).collect();
    assert_eq!(delivered, (1..=3).map(|v| (good.clone(), v)).collect::<Vec<_>>());
    let health = relay.last_error().expect("health reports the stuck row");
    assert!(health.contains("still being retried") && health.contains("broker unavailable"), "{health}");

    // The bus comes back: the stream goes out in order, with no operator involved.
    bus.heal();
    let report = relay.drain(deadline()).await.unwrap();
    assert_eq!((report.published, report.dead_lettered_total, report.blocked), (3, 0, 0), "{report:?}");
    let bad_delivered: Vec<u64> =
        bus.delivered.lock().unwrap().iter().filter(|e| &e.stream_id == bad).map(|e| e.version).collect();
    assert_eq!(bad_delivered, [1, 2, 3]);
    assert_eq!(relay.last_error(), None);
}

#[tokio::test]
async fn a_message_the_bus_refuses_is_dead_lettered_at_once() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let name = streams(1).remove(0);
    append(&stores, &name, 0, 2).await;
    let bus = Arc::new(FakeBus::default());
    bus.fail_stream(&name, false);
    let relay = Relay::new(PgOutbox::new(pool.clone()), bus.clone(), fast_config());

    let report = relay.drain(deadline()).await.unwrap();

    assert_eq!((report.dead_lettered, report.dead_lettered_total, report.blocked), (1, 1, 1), "{report:?}");
    let rows = outbox_rows(&pool, &name).await;
    assert_eq!((rows[0].0, rows[0].3), (1, true), "one attempt, then dead: {rows:?}");
    assert!(rows[0].1.as_deref().is_some_and(|e| e.contains("invalid record")), "{rows:?}");
}

#[tokio::test]
async fn published_rows_past_the_retention_are_deleted_in_small_batches() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let name = streams(1).remove(0);
    append(&stores, &name, 0, 5).await;
    let bus = Arc::new(FakeBus::default());
    let config = RelayConfig { retention: Duration::from_secs(3600), cleanup_batch: 2, ..fast_config() };
    let relay = Relay::new(PgOutbox::new(pool.clone()), bus, config);
    assert_eq!(relay.drain(deadline()).await.unwrap().published, 5);
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE outbox_events SET published_at = now() - interval '2 hours' \
             WHERE stream_id = $1 AND version <= 3",
            &[&name],
        )
        .await
        .unwrap();

    let (deleted, _) = relay.cleanup(deadline()).await.unwrap();

    assert_eq!(deleted, 3);
    let left: Vec<i64> = client
        .query("SELECT version FROM outbox_events ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [4, 5], "rows inside the retention stay");
    assert_eq!(relay.metrics().deleted, 3);
    let events: i64 = client.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(events, 5, "the events themselves are never deleted");
}

#[tokio::test]
async fn idempotency_records_an_hour_past_their_ttl_are_deleted_in_batches_and_no_other() {
    let (_, pool) = fresh_database().await;
    let client = pool.get().await.unwrap();
    // (key, expires_at relative to now): long expired, just expired (inside the hour's grace), live.
    let records = [
        ("old-1", "-3 hours"),
        ("old-2", "-2 hours"),
        ("old-3", "-61 minutes"),
        ("recent", "-10 minutes"),
        ("live", "+20 hours"),
    ];
    for (key, expires) in records {
        client
            .execute(
                "INSERT INTO idempotency_records \
                 (scope, key, operation, request_hash, state, response_status, response_body, expires_at) \
                 VALUES ('accounts', $1, 'deposit', 'h', 'completed', 201, '{}', now() + $2::text::interval)",
                &[&key, &expires],
            )
            .await
            .unwrap();
    }
    let config = RelayConfig { cleanup_batch: 2, ..fast_config() };
    let relay = Relay::new(PgOutbox::new(pool.clone()), Arc::new(FakeBus::default()), config);

    let report = relay.drain(deadline()).await.unwrap();

    assert_eq!(report.expired_keys_deleted, 3);
    assert_eq!(relay.metrics().expired_keys_deleted, 3);
    let left: Vec<String> = client
        .query("SELECT key FROM idempotency_records ORDER BY key", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["live", "recent"], "live records and those expired under an hour ago stay");
    assert_eq!(relay.cleanup(deadline()).await.unwrap(), (0, 0), "nothing left to delete");
}

#[tokio::test]
async fn the_relay_wakes_on_an_append_notification_without_waiting_for_its_poll() {
    let (db, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    stores.events.spawn_listener(db.clone(), NoTls).unwrap();
    let bus = Arc::new(FakeBus::default());
    // A poll far longer than the test's patience: only the notification can wake it.
    let config = RelayConfig { poll_interval: Duration::from_secs(3_600), ..fast_config() };
    let relay = Arc::new(
        Relay::new(PgOutbox::new(pool.clone()), bus.clone(), config).with_wakeup(stores.events.head()),
    );
    let (stop, mut stop_rx) = watch::channel(false);
    let running = tokio::spawn(relay.clone().run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    // Let the first (empty) cycle pass, so the relay is asleep.
    let started = Instant::now();
    while relay.metrics().outbox.is_none() {
        assert!(started.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Another process appends: a second store over another pool, so only NOTIFY can tell the relay.
    let other = PgStores::new(self::pool(&db));
    let name = streams(1).remove(0);
    append(&other, &name, 0, 2).await;

    let started = Instant::now();
    while bus.delivered.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < PATIENCE, "the relay did not wake");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    running.await.unwrap();
    assert_eq!(relay.metrics().published, 2);
}

/// Hands the batch to the bus, then takes the outbox table away (renamed), so the cycle cannot write
/// what the bus did: as a database that restarts right after the publish.
struct LoseTheOutboxAfterPublish {
    bus: Arc<FakeBus>,
    config: tokio_postgres::Config,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl EventPublisher for LoseTheOutboxAfterPublish {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        let outcomes = self.bus.publish(events).await;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let (client, connection) = self.config.connect(NoTls).await.unwrap();
            let driver = tokio::spawn(connection);
            client.batch_execute("ALTER TABLE outbox_events RENAME TO outbox_events_away").await.unwrap();
            drop(client);
            let _ = driver.await;
        }
        outcomes
    }
}

#[tokio::test]
async fn a_cycle_that_fails_after_publishing_is_settled_by_the_next_one_not_by_the_lease() {
    let (config, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let name = streams(1).remove(0);
    append(&stores, &name, 0, 3).await;
    let bus = Arc::new(FakeBus::default());
    let publisher = Arc::new(LoseTheOutboxAfterPublish {
        bus: bus.clone(),
        config: config.clone(),
        armed: std::sync::atomic::AtomicBool::new(true),
    });
    // A lease far longer than this test may wait.
    let relay_config = RelayConfig { lease: Duration::from_secs(3600), ..fast_config() };
    let relay = Relay::new(PgOutbox::new(pool.clone()), publisher, relay_config);

    // Published, but the outbox is gone before the cycle can say so.
    assert!(relay.relay_batch().await.is_err(), "the cycle cannot settle");
    assert_eq!(bus.delivered.lock().unwrap().len(), 3);
    let client = pool.get().await.unwrap();
    client.batch_execute("ALTER TABLE outbox_events_away RENAME TO outbox_events").await.unwrap();
    drop(client);
    assert!(outbox_rows(&pool, &name).await.iter().all(|r| !r.4), "not marked yet");
    assert!(relay.last_error().is_some(), "health hears of it");

    // The database is back: the next cycle writes what the failed one could not, at once.
    let report = relay.relay_batch().await.unwrap();
    assert_eq!(report.claimed, 0, "nothing was left to claim again: {report:?}");
    assert!(outbox_rows(&pool, &name).await.iter().all(|r| r.4), "published, without waiting for the lease");
    assert_eq!(relay.metrics().published, 3);
    let delivered: Vec<u64> = bus.delivered.lock().unwrap().iter().map(|e| e.version).collect();
    assert_eq!(delivered, [1, 2, 3], "each event handed to the bus once");
}

/// A bus that takes every batch and answers only once it is back, as a broker that is away.
#[derive(Default)]
struct AwayBus {
    is_back: std::sync::atomic::AtomicBool,
    back: tokio::sync::Notify,
}

impl AwayBus {
    fn come_back(&self) {
        self.is_back.store(true, std::sync::atomic::Ordering::SeqCst);
        self.back.notify_waiters();
    }
}

#[async_trait]
impl EventPublisher for AwayBus {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        loop {
            let back = self.back.notified();
            if self.is_back.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            back.await;
        }
        events.iter().map(|_| Ok(())).collect()
    }
}

#[tokio::test]
async fn the_backlog_health_reports_stays_fresh_while_a_publish_waits_on_a_broker_that_is_away() {
    let (_, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let name = streams(1).remove(0);
    append(&stores, &name, 0, 3).await;
    let bus = Arc::new(AwayBus::default());
    let relay = Arc::new(Relay::new(PgOutbox::new(pool.clone()), bus.clone(), fast_config()));
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(Arc::clone(&relay).run(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));

    // The first batch is stuck in the publish; events keep coming, and the figure follows them.
    append(&stores, &name, 3, 2).await;
    let patience = deadline();
    while relay.lag() != 5 {
        assert!(Instant::now() < patience, "lag never showed the new rows: {}", relay.lag());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    bus.come_back();
    let _ = stop.send(true);
    tokio::time::timeout(PATIENCE, running).await.expect("the relay stops").expect("no panic");
}

/// The claim hands out a prefix of each stream's pending rows, whatever holds a row back: a row another
/// transaction has locked (a late settlement: the claim skips it) keeps its stream's later rows back,
/// and so does a row backing off after a failure, while other streams go out. Once the row is free,
/// its stream goes out whole and in order. The claim checks each row against the index of waiting rows
/// and its stream's previous unpublished row, never against the whole backlog.
#[tokio::test]
async fn a_claim_keeps_each_stream_in_order_past_locked_and_backing_off_rows() {
    let (config, pool) = fresh_database().await;
    let stores = PgStores::new(pool.clone());
    let names = streams(3);
    append_interleaved(&stores, &names, 3).await;
    let (locked, backing_off, free) = (&names[0], &names[1], &names[2]);
    let outbox = PgOutbox::new(pool.clone());
    let lease = Duration::from_secs(60);
    let versions = |rows: &[corebank_store::postgres::OutboxRow], stream: &str| -> Vec<u64> {
        rows.iter().filter(|r| r.envelope.stream_id == stream).map(|r| r.envelope.version).collect()
    };

    // The first row of `backing_off` failed and waits for its retry.
    let first = outbox.claim(256, lease).await.unwrap();
    let row =
        first.rows.iter().find(|r| r.envelope.stream_id == *backing_off && r.envelope.version == 1).unwrap();
    let retry = corebank_store::postgres::RetryLater {
        position: row.position,
        error: "broker away".to_owned(),
        retry_after: Duration::from_secs(3600),
    };
    outbox.mark_failed(first.token, std::slice::from_ref(&retry), u32::MAX).await.unwrap();
    let others: Vec<u64> = first.rows.iter().map(|r| r.position).filter(|p| *p != row.position).collect();
    outbox.release(first.token, &others).await.unwrap();

    // Another session holds the first row of `locked`.
    let (client, connection) = config.connect(NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT 1 FROM outbox_events WHERE stream_id = $1 AND version = 1 FOR UPDATE",
            &[&locked.as_str()],
        )
        .await
        .unwrap();

    let claim = outbox.claim(256, lease).await.unwrap();
    assert_eq!(versions(&claim.rows, free), [1, 2, 3], "{:?}", claim.rows);
    assert!(versions(&claim.rows, locked).is_empty(), "behind a locked row: {:?}", claim.rows);
    assert!(versions(&claim.rows, backing_off).is_empty(), "behind a row backing off: {:?}", claim.rows);
    outbox
        .mark_published(claim.token, &claim.rows.iter().map(|r| r.position).collect::<Vec<_>>())
        .await
        .unwrap();

    // The lock goes; `locked` goes out whole and in order, `backing_off` still waits.
    client.batch_execute("ROLLBACK").await.unwrap();
    drop(client);
    let _ = driver.await;
    let claim = outbox.claim(256, lease).await.unwrap();
    assert_eq!(versions(&claim.rows, locked), [1, 2, 3], "{:?}", claim.rows);
    assert!(versions(&claim.rows, backing_off).is_empty(), "{:?}", claim.rows);
}
