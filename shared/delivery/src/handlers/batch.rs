//! What the two MSK handlers (`projector`, `transfer-saga`) do with a batch: decode its
//! records, walk it stream by stream through the [fan-out](crate::fanout), and fail with one
//! [`BatchError`].
//!
//! A batch's records are grouped by partition and, inside a partition, by event stream; each stream's
//! records are handed over one after another in offset order, different streams (of one partition or
//! of several) at the same time, at most [`STREAMS_IN_FLIGHT_MAX`](crate::fanout::STREAMS_IN_FLIGHT_MAX) of them at once.
//!
//! What a failure does: a stream stops at its first failed record, so none of its later records of
//! the batch is handed over; other streams carry on. The batch as a whole then fails (the caller fails
//! the invocation and the event source mapping delivers the whole batch again), and the redelivery finds
//! what was already handled to be a duplicate. A record that does not decode has no stream to belong to,
//! so its partition stops there: the records before it are handled, the ones from it on are not.

use std::future::Future;

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corebank_app::AppError;
use corebank_domain::EventEnvelope;
use corebank_messaging::{CodecError, decode_value};

use crate::fanout::{bounded, group_by_key};

/// Why an MSK batch was not fully handled. The batch must be delivered again (all of it); what was
/// handled before the failure is a duplicate then, and skipped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A record's value is not an event envelope. Skipping it could hide an event from the read side
    /// or the saga, so the partition stalls (visibly) instead.
    #[error("record {topic}-{partition}@{offset} does not decode: {source}")]
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i64,
        /// Offset.
        offset: i64,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// The handler could not take an event (a store outage, a lease still held by a crashed pass,
    /// corrupt data, an event that is not in the event store).
    #[error("{stream_id} v{version} (record {topic}-{partition}@{offset}) was not handled: {source}")]
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
        #[source]
        source: AppError,
    },
}

impl BatchError {
    fn position(&self) -> (&str, i64, i64) {
        match self {
            Self::Decode { topic, partition, offset, .. } | Self::Handle { topic, partition, offset, .. } => {
                (topic, *partition, *offset)
            }
        }
    }
}

/// Decodes every record of `event` into its envelope (base64, then JSON).
///
/// Partitions come in `(topic, partition)` order and each partition's records in offset order, so the
/// events of one stream come out in the order they were published. A record that does not decode gives an
/// error in its place and does not stop the others.
pub fn envelopes_from_kafka_event(event: &KafkaEvent) -> Vec<Result<EventEnvelope, CodecError>> {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|(key_a, records_a), (key_b, records_b)| {
        let order = |key: &String, records: &Vec<KafkaRecord>| {
            let first = records.first();
            let topic = first.and_then(|r| r.topic.clone()).unwrap_or_else(|| key.clone());
            (topic, first.map_or(0, |r| r.partition))
        };
        order(key_a, records_a).cmp(&order(key_b, records_b))
    });
    let mut out = Vec::with_capacity(partitions.iter().map(|(_, records)| records.len()).sum());
    for (key, records) in partitions {
        let mut ordered: Vec<&KafkaRecord> = records.iter().collect();
        ordered.sort_by_key(|record| record.offset);
        for record in ordered {
            out.push(decode_record(key, record));
        }
    }
    out
}

fn decode_record(key: &str, record: &KafkaRecord) -> Result<EventEnvelope, CodecError> {
    let topic = || record.topic.clone().unwrap_or_else(|| key.to_owned());
    let Some(value) = record.value.as_deref() else {
        return Err(CodecError::MissingValue {
            topic: topic(),
            partition: record.partition,
            offset: record.offset,
        });
    };
    let bytes = BASE64.decode(value).map_err(|source| CodecError::Base64 {
        topic: topic(),
        partition: record.partition,
        offset: record.offset,
        source,
    })?;
    decode_value(&bytes)
}

/// One partition's records in offset order, each beside its decoded envelope (or why it would not
/// decode).
fn decode_partition<'a>(
    key: &str,
    records: &'a [KafkaRecord],
) -> Vec<(&'a KafkaRecord, Result<EventEnvelope, CodecError>)> {
    let mut ordered: Vec<&KafkaRecord> = records.iter().collect();
    ordered.sort_by_key(|record| record.offset);
    ordered.into_iter().map(|record| (record, decode_record(key, record))).collect()
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
fn stream_runs(event: &KafkaEvent) -> (Vec<StreamRun<'_>>, Vec<BatchError>) {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    let mut per_partition: Vec<std::vec::IntoIter<StreamRun<'_>>> = Vec::with_capacity(partitions.len());
    let mut failures = Vec::new();
    for (key, records) in partitions {
        let mut decoded = Vec::with_capacity(records.len());
        for (record, envelope) in decode_partition(key, records) {
            match envelope {
                Ok(envelope) => decoded.push((record, envelope)),
                Err(source) => {
                    failures.push(BatchError::Decode {
                        topic: topic_of(record, key),
                        partition: record.partition,
                        offset: record.offset,
                        source,
                    });
                    break;
                }
            }
        }
        let streams: Vec<StreamRun<'_>> = group_by_key(decoded, |(_, envelope)| envelope.stream_id.clone())
            .into_iter()
            .map(|events| StreamRun { key, events })
            .collect();
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

/// Hands every record of `event` to `handle` as described in the module docs, at most `limit` streams
/// at once, and returns the sum of what `handle` returned.
///
/// On `Err` (of all failures, the one at the lowest topic, partition and offset), the batch was not
/// fully handled and must be delivered again.
pub(crate) async fn for_each_stream<F, Fut>(
    event: &KafkaEvent,
    limit: usize,
    handle: F,
) -> Result<usize, BatchError>
where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<usize, AppError>>,
{
    let (runs, mut failures) = stream_runs(event);
    let handle = &handle;
    let outcomes = bounded(runs, limit, |run: StreamRun<'_>| async move {
        let mut total = 0;
        for (record, envelope) in run.events {
            let (stream_id, version) = (envelope.stream_id.clone(), envelope.version);
            match handle(envelope).await {
                Ok(n) => total += n,
                Err(source) => {
                    return Err(BatchError::Handle {
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

    use corebank_messaging::{Topics, encode};

    use crate::emulators::kafka_consumer::{ConsumedRecord, kafka_event_from_records};
    use crate::test_support::envelope;
    use rdkafka::message::Timestamp;

    use super::*;

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
        async fn handle(
            &self,
            envelope: EventEnvelope,
            fail: Option<(&str, u64)>,
        ) -> Result<usize, AppError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if fail == Some((envelope.stream_id.trim_start_matches("account-"), envelope.version)) {
                return Err(AppError::Corrupt(format!(
                    "{} v{} refused",
                    envelope.stream_id, envelope.version
                )));
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
            matches!(&failure, BatchError::Handle { stream_id, version: 2, offset: 2, partition: 0, .. } if stream_id == "account-a"),
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

        assert!(matches!(failure, BatchError::Handle { partition: 0, offset: 1, .. }), "{failure:?}");
    }

    #[tokio::test]
    async fn an_undecodable_record_stops_its_partition_there() {
        let mut event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("b", 2)]), (1, &[("c", 1), ("c", 2)])]);
        let records = event.records.get_mut("events-0").unwrap();
        records.sort_by_key(|r| r.offset);
        records[2].value = Some("not base64 %%%".to_owned());
        let probe = Probe::default();

        let failure = for_each_stream(&event, 8, |e| probe.handle(e, None)).await.unwrap_err();

        assert!(matches!(failure, BatchError::Decode { partition: 0, offset: 2, .. }), "{failure:?}");
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1]);
        assert_eq!(per_stream["b"], vec![1], "records after the undecodable one wait for the redelivery");
        assert_eq!(per_stream["c"], vec![1, 2], "other partitions go on");
    }
}
