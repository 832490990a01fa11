//! The fan-out every Kafka batch handler of this crate shares: a batch's records grouped by partition
//! and, inside a partition, by event stream; each stream's records handed over one after another in
//! offset order, different streams (of one partition or of several) at the same time, at most
//! [`STREAMS_IN_FLIGHT_MAX`] of them at once.
//!
//! Why per stream and not per partition: a partition carries many streams (every stream whose key
//! hashes there), and the handlers only need one stream's events in order (the projector keeps a
//! checkpoint per stream, the saga reloads one transfer's state per pass). Taking a partition one record
//! at a time would cap it at one store round trip per record.
//!
//! What a failure does: a stream stops at its first failed record, so none of its later records of
//! the batch is handed over; other streams carry on. The batch as a whole then fails (the caller fails
//! the invocation and the event source mapping delivers the whole batch again), and the redelivery finds
//! what was already handled to be a duplicate. A record that does not decode has no stream to belong to,
//! so its partition stops there: the records before it are handled, the ones from it on are not.

use std::collections::HashMap;
use std::future::Future;

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use corebank_domain::EventEnvelope;
use corebank_messaging::{CodecError, envelopes_from_kafka_event};
use futures_util::stream::{self, StreamExt};

/// The most streams a batch handler works on at once: the bound the embedded pipeline uses for its
/// keyed lanes, so a Kafka batch asks no more of the store's connection pool than an embedded lane.
pub const STREAMS_IN_FLIGHT_MAX: usize = corebank_app::pipeline::KEYED_CONCURRENCY_MAX;

/// Why a record of a batch was not handled.
#[derive(Debug)]
pub(crate) enum RecordFailure<E> {
    /// The record's value is not an event envelope.
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i64,
        /// Offset.
        offset: i64,
        /// The codec's reason.
        source: CodecError,
    },
    /// The handler failed on the record's event.
    Handle {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i64,
        /// Offset.
        offset: i64,
        /// The event's stream.
        stream_id: String,
        /// The event's version.
        version: u64,
        /// The handler's reason.
        source: E,
    },
}

impl<E> RecordFailure<E> {
    fn position(&self) -> (&str, i64, i64) {
        match self {
            Self::Decode { topic, partition, offset, .. } | Self::Handle { topic, partition, offset, .. } => {
                (topic, *partition, *offset)
            }
        }
    }
}

/// One partition's records in offset order, each beside its decoded envelope (or why it would not
/// decode).
pub(crate) fn decode_partition<'a>(
    key: &str,
    records: &'a [KafkaRecord],
) -> Vec<(&'a KafkaRecord, Result<EventEnvelope, CodecError>)> {
    // The codec decodes a partition in offset order (a stable sort); sorting the records the same way
    // pairs each decoded envelope with the record it came from.
    let mut single = KafkaEvent::default();
    single.records.insert(key.to_owned(), records.to_vec());
    let decoded = envelopes_from_kafka_event(&single);
    let mut ordered: Vec<&KafkaRecord> = records.iter().collect();
    ordered.sort_by_key(|record| record.offset);
    ordered.into_iter().zip(decoded).collect()
}

fn topic_of(record: &KafkaRecord, key: &str) -> String {
    record.topic.clone().unwrap_or_else(|| key.to_owned())
}

/// One stream's records of one partition, in offset order.
struct StreamRun<'a> {
    key: &'a str,
    events: Vec<(&'a KafkaRecord, EventEnvelope)>,
}

/// Groups `event`'s records into per-stream runs and collects the records that do not decode (see the
/// module docs).
///
/// The runs come partition by partition in turn (the first stream of each partition, then the second of
/// each, ...), each partition's streams in the order of their first record: when there are more streams
/// than may run at once, every partition gets going from the start and its oldest records go first.
fn stream_runs<E>(event: &KafkaEvent) -> (Vec<StreamRun<'_>>, Vec<RecordFailure<E>>) {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    let mut per_partition: Vec<std::vec::IntoIter<StreamRun<'_>>> = Vec::with_capacity(partitions.len());
    let mut failures = Vec::new();
    for (key, records) in partitions {
        let mut streams: Vec<StreamRun<'_>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (record, envelope) in decode_partition(key, records) {
            match envelope {
                Ok(envelope) => match index.get(&envelope.stream_id) {
                    Some(&at) => streams[at].events.push((record, envelope)),
                    None => {
                        index.insert(envelope.stream_id.clone(), streams.len());
                        streams.push(StreamRun { key, events: vec![(record, envelope)] });
                    }
                },
                Err(source) => {
                    failures.push(RecordFailure::Decode {
                        topic: topic_of(record, key),
                        partition: record.partition,
                        offset: record.offset,
                        source,
                    });
                    break;
                }
            }
        }
        per_partition.push(streams.into_iter());
    }
    let mut runs = Vec::new();
    loop {
        let before = runs.len();
        runs.extend(per_partition.iter_mut().filter_map(Iterator::next));
        if runs.len() == before {
            return (runs, failures);
        }
    }
}

/// Runs `work` on every item, at most `limit` at once (at least one), and returns the outputs in the
/// order of `items`. The futures run inside the caller's task; nothing is spawned.
pub(crate) async fn bounded<I, T, Fut>(items: Vec<I>, limit: usize, work: impl Fn(I) -> Fut) -> Vec<T>
where
    Fut: Future<Output = T>,
{
    let mut done: Vec<(usize, T)> = stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| {
            let running = work(item);
            async move { (index, running.await) }
        })
        .buffer_unordered(limit.max(1))
        .collect()
        .await;
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, output)| output).collect()
}

/// Hands every record of `event` to `handle` as described in the module docs, at most `limit` streams
/// at once, and returns the sum of what `handle` returned.
///
/// On `Err` (of all failures, the one at the lowest topic, partition and offset), the batch was not
/// fully handled and must be delivered again.
pub(crate) async fn for_each_stream<E, F, Fut>(
    event: &KafkaEvent,
    limit: usize,
    handle: F,
) -> Result<usize, RecordFailure<E>>
where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<usize, E>>,
{
    let (runs, mut failures) = stream_runs::<E>(event);
    let handle = &handle;
    let outcomes = bounded(runs, limit, |run: StreamRun<'_>| async move {
        let mut total = 0;
        for (record, envelope) in run.events {
            let (stream_id, version) = (envelope.stream_id.clone(), envelope.version);
            match handle(envelope).await {
                Ok(n) => total += n,
                Err(source) => {
                    return Err(RecordFailure::Handle {
                        topic: topic_of(record, run.key),
                        partition: record.partition,
                        offset: record.offset,
                        stream_id,
                        version,
                        source,
                    });
                }
            }
        }
        Ok(total)
    })
    .await;
    let mut total = 0;
    for outcome in outcomes {
        match outcome {
            Ok(n) => total += n,
            Err(failure) => failures.push(failure),
        }
    }
    match failures.into_iter().min_by(|a, b| a.position().cmp(&b.position())) {
        Some(failure) => Err(failure),
        None => Ok(total),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use chrono::{TimeZone, Utc};
    use corebank_domain::EventMetadata;
    use corebank_messaging::{ConsumedRecord, Topics, encode, kafka_event_from_records};
    use rdkafka::message::Timestamp;

    use super::*;

    fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            stream_id: stream_id.to_owned(),
            version,
            event_type: "MoneyDeposited".to_owned(),
            schema_version: 1,
            occurred_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
            payload: serde_json::json!({"amountMinorUnits": 100, "currency": "USD"}),
            metadata: EventMetadata::default(),
        }
    }

    /// `(stream, version)` pairs laid out on `partition` from offset 0, in the order given.
    fn batch(partitions: &[(i32, &[(&str, u64)])]) -> KafkaEvent {
        let topics = Topics::single("events");
        let mut records = Vec::new();
        for (partition, events) in partitions {
            for (offset, (stream, version)) in events.iter().enumerate() {
                let record = encode(&topics, &envelope(&format!("account-{stream}"), *version)).unwrap();
                records.push(ConsumedRecord::from_outgoing(
                    &record,
                    *partition,
                    i64::try_from(offset).unwrap(),
                    Timestamp::CreateTime(0),
                ));
            }
        }
        kafka_event_from_records(&records, None, None)
    }

    /// Records every handled `(stream, version)` in order and the most handlers seen running at once.
    #[derive(Default)]
    struct Probe {
        handled: Mutex<Vec<(String, u64)>>,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Probe {
        async fn handle(&self, envelope: EventEnvelope, fail: Option<(&str, u64)>) -> Result<usize, String> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if fail == Some((envelope.stream_id.trim_start_matches("account-"), envelope.version)) {
                return Err(format!("{} v{} refused", envelope.stream_id, envelope.version));
            }
            let stream = envelope.stream_id.trim_start_matches("account-").to_owned();
            self.handled.lock().unwrap().push((stream, envelope.version));
            Ok(1)
        }

        fn per_stream(&self) -> BTreeMap<String, Vec<u64>> {
            let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for (stream, version) in self.handled.lock().unwrap().iter() {
                out.entry(stream.clone()).or_default().push(*version);
            }
            out
        }
    }

    #[tokio::test]
    async fn streams_of_one_partition_run_concurrently_each_in_offset_order() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3), ("c", 2)])]);
        let probe = Probe::default();

        let handled = for_each_stream(&event, 8, |e| probe.handle(e, None)).await.unwrap();

        assert_eq!(handled, 7);
        assert_eq!(probe.most.load(Ordering::SeqCst), 3, "the three streams of the partition ran at once");
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1, 2, 3]);
        assert_eq!(per_stream["b"], vec![1, 2]);
        assert_eq!(per_stream["c"], vec![1, 2]);
    }

    #[tokio::test]
    async fn no_more_streams_than_the_limit_run_at_once() {
        let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
        let events: Vec<(&str, u64)> =
            names.iter().flat_map(|n| [(n.as_str(), 1), (n.as_str(), 2)]).collect();
        let (left, right) = events.split_at(20);
        let event = batch(&[(0, left), (1, right)]);
        let probe = Probe::default();

        assert_eq!(for_each_stream(&event, 4, |e| probe.handle(e, None)).await.unwrap(), 40);
        assert_eq!(probe.most.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn partitions_take_turns_when_streams_outnumber_the_limit() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2)]), (1, &[("c", 1), ("d", 1)])]);
        let probe = Probe::default();

        assert_eq!(for_each_stream(&event, 1, |e| probe.handle(e, None)).await.unwrap(), 5);

        let order: Vec<(String, u64)> = probe.handled.lock().unwrap().clone();
        let expected = [("a", 1), ("a", 2), ("c", 1), ("b", 1), ("d", 1)];
        assert_eq!(order, expected.map(|(s, v)| (s.to_owned(), v)).to_vec());
    }

    #[tokio::test]
    async fn a_failed_record_stops_its_own_stream_only_and_fails_the_batch() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)])]);
        let probe = Probe::default();

        let failure = for_each_stream(&event, 8, |e| probe.handle(e, Some(("a", 2)))).await.unwrap_err();

        assert!(
            matches!(&failure, RecordFailure::Handle { stream_id, version: 2, offset: 2, partition: 0, .. } if stream_id == "account-a"),
            "{failure:?}"
        );
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1], "nothing of `a` after its failure");
        assert_eq!(per_stream["b"], vec![1, 2, 3], "the other stream went on");
    }

    #[tokio::test]
    async fn the_earliest_failure_is_reported_when_several_streams_fail() {
        let event = batch(&[(1, &[("c", 1)]), (0, &[("a", 1), ("b", 1), ("b", 2)])]);
        let probe = Probe::default();

        let failure = for_each_stream(&event, 8, |e| {
            let fail = match e.stream_id.trim_start_matches("account-") {
                "b" => Some(("b", 1)),
                "c" => Some(("c", 1)),
                _ => None,
            };
            probe.handle(e, fail)
        })
        .await
        .unwrap_err();

        assert!(matches!(failure, RecordFailure::Handle { partition: 0, offset: 1, .. }), "{failure:?}");
    }

    #[tokio::test]
    async fn an_undecodable_record_stops_its_partition_there() {
        let mut event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("b", 2)]), (1, &[("c", 1), ("c", 2)])]);
        let records = event.records.get_mut("events-0").unwrap();
        records.sort_by_key(|r| r.offset);
        records[2].value = Some("not base64 %%%".to_owned());
        let probe = Probe::default();

        let failure = for_each_stream(&event, 8, |e| probe.handle(e, None)).await.unwrap_err();

        assert!(matches!(failure, RecordFailure::Decode { partition: 0, offset: 2, .. }), "{failure:?}");
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1]);
        assert_eq!(per_stream["b"], vec![1], "records after the undecodable one wait for the redelivery");
        assert_eq!(per_stream["c"], vec![1, 2], "other partitions go on");
    }

    #[tokio::test]
    async fn bounded_returns_outputs_in_input_order() {
        let out = bounded(vec![30_u64, 1, 20, 5], 2, |ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .await;
        assert_eq!(out, vec![30, 1, 20, 5]);
    }
}
