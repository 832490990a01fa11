//! The publisher and the batch consumer (the MSK mapping's local emulator) against a real
//! Kafka-protocol broker: the tansu broker that `infra/scripts/with-services.sh` starts and names in
//! `KAFKA_BOOTSTRAP`.
//!
//! Run: `SERVICES=kafka infra/scripts/with-services.sh cargo test -p corebank-delivery --test kafka_broker`.
//! Without `KAFKA_BOOTSTRAP` these tests fail; nothing is left out. Each test uses its own topics and
//! consumer group, so they run in parallel against one broker.

#![cfg(test)]

// The event helpers of the publisher's own broker tests, shared rather than copied.
#[path = "../../messaging/tests/common/mod.rs"]
mod events;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_delivery::emulators::kafka_consumer::{ConsumerConfig, KafkaBatchConsumer};
use corebank_delivery::handlers::batch::envelopes_from_kafka_event;
use corebank_domain::EventEnvelope;
use corebank_messaging::{
    CodecError, EventPublisher, KafkaConfig, KafkaPublisher, PublishError, Topics, ensure_topics,
};
use events::{envelope, interleaved};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Upper bound on waiting for deliveries, so a broken pipeline fails the test instead of hanging it.
const DELIVERY_GUARD: Duration = Duration::from_secs(60);

fn kafka_config() -> KafkaConfig {
    let brokers =
        std::env::var("KAFKA_BOOTSTRAP").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
            panic!(
                "KAFKA_BOOTSTRAP is not set: these tests need a Kafka broker. Run them through \
             `SERVICES=kafka infra/scripts/with-services.sh cargo test -p corebank-messaging`"
            )
        });
    let mut config = KafkaConfig::new(brokers);
    config.client_id = "corebank-messaging-tests".to_owned();
    // tansu answers JoinGroup only after about half the session timeout: keep it short.
    config.session_timeout_ms = 1_000;
    config
}

/// Fresh account and transfer topics with three partitions each.
async fn fresh_topics(config: &KafkaConfig) -> Topics {
    let suffix = Uuid::new_v4().simple();
    let topics = Topics {
        account_events: format!("test.account-events.{suffix}"),
        transfer_events: format!("test.transfer-events.{suffix}"),
    };
    ensure_topics(config, &topics.all(), 3).await.expect("topics are created");
    topics
}

fn consumer_config(topics: &Topics, group_id: &str) -> ConsumerConfig {
    let mut config =
        ConsumerConfig::new(group_id, topics.all().into_iter().map(str::to_owned).collect::<Vec<_>>());
    config.retry_backoff_initial_ms = 50;
    config.retry_backoff_max_ms = 200;
    config
}

fn streams(prefix: &str, count: usize) -> Vec<String> {
    let run = Uuid::new_v4().simple().to_string();
    (0..count).map(|i| format!("{prefix}-{run}-{i}")).collect()
}

async fn publish_all_ok(publisher: &KafkaPublisher, events: &[EventEnvelope]) {
    let outcomes = publisher.publish(events).await;
    assert_eq!(outcomes.len(), events.len());
    let failures: Vec<String> = outcomes
        .iter()
        .zip(events)
        .filter_map(|(outcome, e)| {
            outcome.as_ref().err().map(|err| format!("{}@{}: {err}", e.stream_id, e.version))
        })
        .collect();
    assert!(failures.is_empty(), "publish failures: {failures:?}");
}

/// Runs `consumer` with `handler`, forwarding every batch the handler saw (with the handler's answer)
/// until `done` says so, then shuts the consumer down and returns the batches in delivery order.
async fn consume_until<H, Fut>(
    consumer: &KafkaBatchConsumer,
    handler: H,
    mut done: impl FnMut(&[(KafkaEvent, bool)]) -> bool,
) -> Vec<(KafkaEvent, bool)>
where
    H: Fn(KafkaEvent) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let (batch_tx, mut batch_rx) = mpsc::unbounded_channel::<(KafkaEvent, bool)>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handler = |event: KafkaEvent| {
        let batch_tx = batch_tx.clone();
        let outcome = handler(event.clone());
        async move {
            let outcome = outcome.await;
            batch_tx.send((event, outcome.is_ok())).map_err(|e| e.to_string())?;
            outcome
        }
    };
    let run = consumer.run(handler, async {
        let _ = stop_rx.await;
    });
    let collect = async move {
        let mut seen = Vec::new();
        while !done(&seen) {
            let batch = tokio::time::timeout(DELIVERY_GUARD, batch_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no batch within {DELIVERY_GUARD:?}; got {} so far", seen.len()))
                .expect("the consumer stopped");
            seen.push(batch);
        }
        let _ = stop_tx.send(());
        seen
    };
    let (ran, seen) = tokio::join!(run, collect);
    ran.expect("the consumer runs without a fatal error");
    seen
}

fn envelopes_of(event: &KafkaEvent) -> Vec<EventEnvelope> {
    envelopes_from_kafka_event(event).into_iter().map(|r| r.expect("every record decodes")).collect()
}

fn delivered_count(batches: &[(KafkaEvent, bool)]) -> usize {
    batches.iter().filter(|(_, ok)| *ok).map(|(e, _)| e.records.values().map(Vec::len).sum::<usize>()).sum()
}

/// `(topic, partition) -> offsets` of one batch, each partition's offsets ascending.
fn positions(event: &KafkaEvent) -> BTreeMap<(String, i64), Vec<i64>> {
    let mut out: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for records in event.records.values() {
        for r in records {
            out.entry((r.topic.clone().unwrap_or_default(), r.partition)).or_default().push(r.offset);
        }
    }
    for offsets in out.values_mut() {
        offsets.sort_unstable();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_events_of_several_streams_acknowledges_each_one_in_input_order() {
    let config = kafka_config();
    let topics = fresh_topics(&config).await;
    let publisher = KafkaPublisher::new(&config, topics).unwrap();
    let mut names = streams("account", 4);
    names.extend(streams("transfer", 2));
    let events = interleaved(&names, 10);

    let outcomes = publisher.publish(&events).await;

    assert_eq!(outcomes.len(), 60);
    for (outcome, event) in outcomes.iter().zip(&events) {
        assert!(outcome.is_ok(), "{}@{}: {outcome:?}", event.stream_id, event.version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_event_fails_alone_and_holds_back_only_its_own_stream() {
    let config = kafka_config();
    let topics = fresh_topics(&config).await;
    let publisher = KafkaPublisher::new(&config, topics).unwrap();
    let account = streams("account", 1).remove(0);
    let events =
        vec![envelope(&account, 1), envelope("ledger-1", 1), envelope(&account, 2), envelope("ledger-1", 2)];

    let outcomes = publisher.publish(&events).await;

    assert_eq!(outcomes.len(), 4);
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(matches!(&outcomes[1], Err(PublishError::Codec(CodecError::UnroutableStream { .. }))));
    assert!(!outcomes[1].as_ref().unwrap_err().is_retryable());
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    assert!(
        matches!(&outcomes[3], Err(PublishError::EarlierEventFailed { stream_id }) if stream_id == "ledger-1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_consumer_delivers_every_published_event_with_each_stream_in_version_order() {
    let config = kafka_config();
    let topics = fresh_topics(&config).await;
    let publisher = KafkaPublisher::new(&config, topics.clone()).unwrap();
    let mut names = streams("account", 5);
    names.extend(streams("transfer", 2));
    let events = interleaved(&names, 20);
    publish_all_ok(&publisher, &events).await;

    let mut consumer_config = consumer_config(&topics, &format!("test-group-{}", Uuid::new_v4()));
    consumer_config.max_batch = 25;
    let consumer = KafkaBatchConsumer::new(&config, consumer_config).unwrap();
    let batches =
        consume_until(&consumer, |_| async { Ok(()) }, |seen| delivered_count(seen) >= events.len()).await;

    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    let mut ids = HashSet::new();
    for (event, _) in &batches {
        assert_eq!(event.event_source.as_deref(), Some("aws:kafka"));
        assert_eq!(event.bootstrap_servers.as_deref(), Some(config.brokers.as_str()));
        assert!(event.records.values().map(Vec::len).sum::<usize>() <= 25, "a batch exceeds max_batch");
        for (key, records) in &event.records {
            for r in records {
                assert_eq!(key, &format!("{}-{}", r.topic.as_deref().unwrap(), r.partition));
                assert_eq!(r.timestamp_type.as_deref(), Some("CREATE_TIME"));
            }
        }
        for e in envelopes_of(event) {
            assert!(ids.insert(e.event_id), "{}@{} delivered twice", e.stream_id, e.version);
            versions.entry(e.stream_id).or_default().push(e.version);
        }
    }
    let published: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, published, "every published event arrives exactly once");
    for name in &names {
        assert_eq!(versions[name], (1..=20).collect::<Vec<u64>>(), "stream {name} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_redelivered_and_its_offsets_are_committed_only_after_success() {
    let config = kafka_config();
    let topics = fresh_topics(&config).await;
    let publisher = KafkaPublisher::new(&config, topics.clone()).unwrap();
    let names = streams("account", 3);
    let events = interleaved(&names, 10);
    publish_all_ok(&publisher, &events).await;
    let group_id = format!("test-group-{}", Uuid::new_v4());

    // First member: fails its first batch, then succeeds.
    let first = KafkaBatchConsumer::new(&config, consumer_config(&topics, &group_id)).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let batches = consume_until(
        &first,
        |_| {
            let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if call == 0 { Err("injected failure".to_owned()) } else { Ok(()) } }
        },
        |seen| delivered_count(seen) >= events.len(),
    )
    .await;
    drop(first);

    let (failed, failed_ok) = &batches[0];
    assert!(!failed_ok);
    assert!(batches[1..].iter().all(|(_, ok)| *ok), "only the first call failed");
    // The retry starts where the failed batch started, on every partition it touched.
    let failed_positions = positions(failed);
    let mut first_retry_offset: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (event, _) in &batches[1..] {
        for (partition, offsets) in positions(event) {
            first_retry_offset.entry(partition).or_insert(offsets[0]);
        }
    }
    for (partition, offsets) in &failed_positions {
        assert_eq!(
            first_retry_offset.get(partition),
            Some(&offsets[0]),
            "partition {partition:?} not rewound"
        );
    }
    // No loss, no duplicate among successful deliveries.
    let failed_ids: HashSet<Uuid> = envelopes_of(failed).iter().map(|e| e.event_id).collect();
    let mut delivered = HashSet::new();
    for (event, _) in &batches[1..] {
        for e in envelopes_of(event) {
            assert!(
                delivered.insert(e.event_id),
                "{}@{} delivered twice after success",
                e.stream_id,
                e.version
            );
        }
    }
    assert!(failed_ids.is_subset(&delivered), "records of the failed batch were lost");
    assert_eq!(delivered, events.iter().map(|e| e.event_id).collect::<HashSet<_>>());

    // Second member of the same group: the committed offsets leave it only what comes next.
    let sentinel = envelope(&names[0], 11);
    publish_all_ok(&publisher, std::slice::from_ref(&sentinel)).await;
    let second = KafkaBatchConsumer::new(&config, consumer_config(&topics, &group_id)).unwrap();
    let later = consume_until(
        &second,
        |_| async { Ok(()) },
        |seen| {
            seen.iter().any(|(event, _)| envelopes_of(event).iter().any(|e| e.event_id == sentinel.event_id))
        },
    )
    .await;
    let seen_later: Vec<(String, u64)> =
        later.iter().flat_map(|(event, _)| envelopes_of(event)).map(|e| (e.stream_id, e.version)).collect();
    assert_eq!(
        seen_later,
        vec![(sentinel.stream_id.clone(), 11)],
        "the second member was given events the first had committed"
    );
}

/// Every event seen by one member of a group, in the order that member handled them.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(char, Uuid)>>>;

/// A handler for member `member` that records what it handles and takes `pause` per batch.
fn recording(
    member: char,
    seen: &Seen,
    pause: Duration,
) -> impl Fn(KafkaEvent) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + use<> {
    let seen = seen.clone();
    move |event: KafkaEvent| {
        let seen = seen.clone();
        Box::pin(async move {
            tokio::time::sleep(pause).await;
            let ids = envelopes_of(&event).into_iter().map(|e| (member, e.event_id));
            seen.lock().expect("no panic while holding the lock").extend(ids);
            Ok(())
        })
    }
}

/// Waits (bounded by [`DELIVERY_GUARD`]) until `ready` holds for what the members have seen.
async fn wait_for(seen: &Seen, what: &str, ready: impl Fn(&[(char, Uuid)]) -> bool) {
    let waited = tokio::time::timeout(DELIVERY_GUARD, async {
        while !ready(&seen.lock().expect("no panic while holding the lock")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let count = seen.lock().expect("no panic while holding the lock").len();
    assert!(waited.is_ok(), "{what}: not within {DELIVERY_GUARD:?} ({count} records handled so far)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_and_another_leaving_mid_stream_leave_no_partition_behind() {
    let config = kafka_config();
    let topics = fresh_topics(&config).await;
    let publisher = KafkaPublisher::new(&config, topics.clone()).unwrap();
    let names = streams("account", 12);
    let first_wave = interleaved(&names, 10);
    publish_all_ok(&publisher, &first_wave).await;
    let group_id = format!("test-group-{}", Uuid::new_v4());
    let mut member_config = consumer_config(&topics, &group_id);
    member_config.max_batch = 10;
    let seen: Seen = Seen::default();

    // Member `a` works through the first wave slowly, so `b` joins while it is still busy.
    let a = KafkaBatchConsumer::new(&config, member_config.clone()).unwrap();
    let (stop_a, a_stopped) = oneshot::channel::<()>();
    let handler_a = recording('a', &seen, Duration::from_millis(100));
    let run_a = async move {
        let ran = a
            .run(handler_a, async {
                let _ = a_stopped.await;
            })
            .await;
        // Dropping the consumer closes it: it leaves the group and its partitions go to `b`.
        drop(a);
        ran
    };
    let steer = async {
        wait_for(&seen, "member a handles some of the first wave", |s| s.len() >= 20).await;
        let b = KafkaBatchConsumer::new(&config, member_config.clone()).unwrap();
        let (stop_b, b_stopped) = oneshot::channel::<()>();
        let run_b = b.run(recording('b', &seen, Duration::from_millis(10)), async {
            let _ = b_stopped.await;
        });
        let script = async {
            // `b` takes its share of the first wave (or the wave ends first); then `a` leaves.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while !seen.lock().expect("no panic while holding the lock").iter().any(|(m, _)| *m == 'b') {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            let _ = stop_a.send(());
            let second_wave: Vec<EventEnvelope> =
                (11..=15).flat_map(|v| names.iter().map(move |s| envelope(s, v))).collect();
            publish_all_ok(&publisher, &second_wave).await;
            let wanted: HashSet<Uuid> = second_wave.iter().map(|e| e.event_id).collect();
            wait_for(&seen, "member b, alone in the group, handles the whole second wave", |s| {
                let by_b: HashSet<Uuid> = s.iter().filter(|(m, _)| *m == 'b').map(|(_, id)| *id).collect();
                wanted.is_subset(&by_b)
            })
            .await;
            let _ = stop_b.send(());
            second_wave
        };
        let (ran_b, second_wave) = tokio::join!(run_b, script);
        ran_b.expect("member b runs without a fatal error");
        second_wave
    };
    let (ran_a, second_wave) = tokio::join!(run_a, steer);
    ran_a.expect("member a runs without a fatal error");

    let seen = seen.lock().unwrap();
    let by = |member: char| seen.iter().filter(|(m, _)| *m == member).count();
    eprintln!("records handled: a {}, b {} (duplicates included)", by('a'), by('b'));
    let handled: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    for event in first_wave.iter().chain(&second_wave) {
        assert!(handled.contains(&event.event_id), "{}@{} was never handled", event.stream_id, event.version);
    }
}
