//! What the two MSK handlers (`projector`, `transfer-saga`) do with a batch: decode its
//! records, walk it stream by stream through the [fan-out](crate::fanout), park what cannot be taken,
//! and fail with one [`BatchError`] only when a retry of the batch may help.
//!
//! A batch's records are grouped by partition and, inside a partition, by event stream; each stream's
//! records are handed over one after another in offset order, different streams (of one partition or
//! of several) at the same time, at most [`STREAMS_IN_FLIGHT_MAX`](crate::fanout::STREAMS_IN_FLIGHT_MAX) of them at once.
//!
//! What a failure does (see [`corebank_app::parked`]):
//!
//! - a transient failure (the store down or slow, a race, a lease or claim still held) stops its
//!   stream, so none of its later records of the batch is handed over; other streams carry on; the
//!   batch as a whole then fails (the caller fails the invocation and the event source mapping delivers
//!   the whole batch again), and the redelivery finds what was already handled to be a duplicate;
//! - a permanent failure, once it has failed [`PARK_ATTEMPTS_MAX`](corebank_app::parked::PARK_ATTEMPTS_MAX)
//!   tries, parks the record, and every later record of its stream is parked behind it without being
//!   handed over; the batch goes on;
//! - a record that does not decode has no stream: it is parked under `topic-partition@offset` and its
//!   partition goes on;
//! - a stream that was parked before the batch (asked once per batch) has all its records parked
//!   behind, in order;
//! - parking itself failing fails the batch, as a transient failure does.

use std::collections::HashSet;
use std::future::Future;

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corebank_app::AppError;
use corebank_app::parked::Parking;
use corebank_domain::EventEnvelope;
use corebank_messaging::{CodecError, decode_value};
use corebank_store::StoreError;
use tracing::Instrument as _;

use crate::fanout::{bounded, group_by_key};

/// Why an MSK batch was not fully handled. The batch must be delivered again (all of it); what was
/// handled before the failure is a duplicate then, and skipped, and what was parked is parked once.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The consumer's parked streams could not be read, so no record could be told apart.
    #[error("the parked streams could not be read: {source}")]
    ParkedStreams {
        /// The store's reason.
        #[source]
        source: StoreError,
    },
    /// A record that had to be parked could not be.
    #[error("record {topic}-{partition}@{offset} ({stream_key}) could not be parked: {source}")]
    Park {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i64,
        /// Offset.
        offset: i64,
        /// The event's stream, or `topic-partition@offset` for a record that did not decode.
        stream_key: String,
        /// The store's reason.
        #[source]
        source: StoreError,
    },
    /// The handler could not take an event, for a reason that may pass (a store outage, a lease
    /// still held by a crashed pass, a race).
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
            Self::ParkedStreams { .. } => ("", -1, -1),
            Self::Park { topic, partition, offset, .. } | Self::Handle { topic, partition, offset, .. } => {
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

/// A record that does not decode.
struct Undecodable<'a> {
    key: &'a str,
    record: &'a KafkaRecord,
    error: CodecError,
}

/// Groups `event`'s records into per-stream runs and collects the records that do not decode (see the
/// module docs).
///
/// The runs come partition by partition in turn (the first stream of each partition, then the second of
/// each, ...), each partition's streams in the order of their first record: when there are more streams
/// than may run at once, every partition gets going from the start and its oldest records go first.
fn stream_runs(event: &KafkaEvent) -> (Vec<StreamRun<'_>>, Vec<Undecodable<'_>>) {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    let mut per_partition: Vec<std::vec::IntoIter<StreamRun<'_>>> = Vec::with_capacity(partitions.len());
    let mut undecodable = Vec::new();
    for (key, records) in partitions {
        let mut decoded = Vec::with_capacity(records.len());
        for (record, envelope) in decode_partition(key, records) {
            match envelope {
                Ok(envelope) => decoded.push((record, envelope)),
                Err(error) => undecodable.push(Undecodable { key, record, error }),
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
            return (runs, undecodable);
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// The sum of what the handler returned.
    pub handled: usize,
    /// Records parked by this batch (including records parked behind a parked stream).
    pub parked: usize,
}

impl BatchReport {
    fn add(self, other: Self) -> Self {
        Self { handled: self.handled + other.handled, parked: self.parked + other.parked }
    }
}

/// Hands every record of `event` to `handle` as described in the module docs, at most `limit` streams
/// at once, parking by `parking`, and returns the sum of what `handle` returned and what was parked.
///
/// On `Err` (of all failures, the one at the lowest topic, partition and offset), the batch was not
/// fully handled and must be delivered again.
#[cfg(test)]
pub(crate) async fn for_each_stream<F, Fut>(
    event: &KafkaEvent,
    limit: usize,
    parking: &Parking,
    handle: F,
) -> Result<BatchReport, BatchError>
where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<usize, AppError>>,
{
    for_each_stream_in_runs(event, limit, parking, handle, None::<NoRuns>, None::<NoBulk>).await
}

/// The run handler of a consumer that takes records one at a time.
#[cfg(test)]
type NoRuns = fn(Vec<EventEnvelope>) -> std::future::Ready<Result<usize, AppError>>;

/// The bulk handler of a consumer that takes streams one at a time.
pub(crate) type NoBulk =
    fn(Vec<Vec<EventEnvelope>>) -> std::future::Ready<Result<Vec<Option<usize>>, AppError>>;

/// [`for_each_stream`], first offering every stream that is not parked to `handle_all` together (one
/// run of records per stream; it answers for each run `Some(handled)` when it took care of it, `None`
/// to leave it to the rest; an error leaves them all), then offering each stream's records that are
/// left to `handle_run` at once (when the stream has more than one and none of it is parked). A run
/// that fails transiently fails the batch; one that fails for good is taken record by record through
/// `handle`, which finds the record to park. `handle_all` must apply each run it answers for all or
/// nothing, and `handle_run` all of its run or nothing of it.
pub(crate) async fn for_each_stream_in_runs<F, Fut, G, GFut, H, HFut>(
    event: &KafkaEvent,
    limit: usize,
    parking: &Parking,
    handle: F,
    handle_run: Option<G>,
    handle_all: Option<H>,
) -> Result<BatchReport, BatchError>
where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<usize, AppError>>,
    G: Fn(Vec<EventEnvelope>) -> GFut,
    GFut: Future<Output = Result<usize, AppError>>,
    H: Fn(Vec<Vec<EventEnvelope>>) -> HFut,
    HFut: Future<Output = Result<Vec<Option<usize>>, AppError>>,
{
    let parked_before =
        parking.parked_streams().await.map_err(|source| BatchError::ParkedStreams { source })?;
    let (runs, undecodable) = stream_runs(event);
    let mut failures = Vec::new();
    let mut report = BatchReport::default();
    for Undecodable { key, record, error } in undecodable {
        let topic = topic_of(record, key);
        let reason = error.to_string();
        tracing::error!(consumer = parking.consumer().as_str(), %topic, partition = record.partition, offset = record.offset, error = %reason, "record does not decode: parked");
        match parking
            .park_undecodable(&topic, record.partition, record.offset, record.value.as_deref(), &reason)
            .await
        {
            Ok(()) => report.parked += 1,
            Err(source) => failures.push(BatchError::Park {
                stream_key: corebank_store::ParkedRecord::undecodable_key(
                    &topic,
                    record.partition,
                    record.offset,
                ),
                topic,
                partition: record.partition,
                offset: record.offset,
                source,
            }),
        }
    }
    let runs = match handle_all {
        Some(handle_all) => take_together(runs, &parked_before, handle_all, &mut report).await,
        None => runs,
    };
    let (handle, handle_run, parked_before) = (&handle, handle_run.as_ref(), &parked_before);
    let outcomes =
        bounded(runs, limit, |run: StreamRun<'_>| walk_run(run, parking, parked_before, handle, handle_run))
            .await;
    for outcome in outcomes {
        match outcome {
            Ok(run) => report = report.add(run),
            Err(failure) => failures.push(failure),
        }
    }
    match failures.into_iter().min_by(|a, b| a.position().cmp(&b.position())) {
        Some(failure) => Err(failure),
        None => Ok(report),
    }
}

/// Offers the runs of streams that are not parked to `handle_all` together and returns the runs it
/// left (all of them when it fails).
async fn take_together<'a, H, HFut>(
    runs: Vec<StreamRun<'a>>,
    parked_before: &HashSet<String>,
    handle_all: H,
    report: &mut BatchReport,
) -> Vec<StreamRun<'a>>
where
    H: Fn(Vec<Vec<EventEnvelope>>) -> HFut,
    HFut: Future<Output = Result<Vec<Option<usize>>, AppError>>,
{
    let free =
        |run: &StreamRun<'_>| run.events.first().is_some_and(|(_, e)| !parked_before.contains(&e.stream_id));
    let offered: Vec<usize> = runs.iter().enumerate().filter(|(_, run)| free(run)).map(|(i, _)| i).collect();
    if offered.len() < 2 {
        return runs;
    }
    let envelopes: Vec<Vec<EventEnvelope>> =
        offered.iter().map(|&i| runs[i].events.iter().map(|(_, e)| e.clone()).collect()).collect();
    let answers = match handle_all(envelopes).await {
        Ok(answers) => answers,
        Err(error) => {
            tracing::warn!(%error, "the batch's streams could not be applied together; applying them one by one");
            return runs;
        }
    };
    let mut taken = HashSet::new();
    for (&i, answer) in offered.iter().zip(answers) {
        if let Some(handled) = answer {
            report.handled += handled;
            taken.insert(i);
        }
    }
    runs.into_iter().enumerate().filter(|(i, _)| !taken.contains(i)).map(|(_, run)| run).collect()
}

/// The batch's failure for a record that failed for a passing reason (the batch is delivered again),
/// counted under the consumer's stage.
fn transient_failure(
    parking: &Parking,
    key: &str,
    record: &KafkaRecord,
    envelope: &EventEnvelope,
    source: AppError,
) -> BatchError {
    metrics::counter!(corebank_app::telemetry::DELIVERY_TRANSIENT_FAILURES, "stage" => parking.consumer().as_str())
        .increment(1);
    BatchError::Handle {
        topic: topic_of(record, key),
        partition: record.partition,
        offset: record.offset,
        stream_id: envelope.stream_id.clone(),
        version: envelope.version,
        source,
    }
}

/// One stream's records in order: handled, or parked (see the module docs).
async fn walk_run<F, Fut, G, GFut>(
    run: StreamRun<'_>,
    parking: &Parking,
    parked_before: &HashSet<String>,
    handle: &F,
    handle_run: Option<&G>,
) -> Result<BatchReport, BatchError>
where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = Result<usize, AppError>>,
    G: Fn(Vec<EventEnvelope>) -> GFut,
    GFut: Future<Output = Result<usize, AppError>>,
{
    let mut report = BatchReport::default();
    // Why this stream's next record waits, once the stream is parked.
    let mut behind: Option<String> = run
        .events
        .first()
        .filter(|(_, first)| parked_before.contains(&first.stream_id))
        .map(|(_, first)| format!("parked behind an earlier parked record of {}", first.stream_id));
    if let Some(handle_run) = handle_run
        && behind.is_none()
        && let [(record, first), .., (_, last)] = run.events.as_slice()
    {
        let span = tracing::info_span!(
            "records",
            stream_id = %first.stream_id,
            from_version = first.version,
            to_version = last.version,
            correlation_id = first.metadata.correlation_id.as_deref().unwrap_or_default(),
            trace_id = first.metadata.trace_id.as_deref().unwrap_or_default(),
        );
        let envelopes: Vec<EventEnvelope> = run.events.iter().map(|(_, envelope)| envelope.clone()).collect();
        match handle_run(envelopes).instrument(span).await {
            Ok(n) => {
                report.handled += n;
                return Ok(report);
            }
            Err(source) if source.is_transient() => {
                return Err(transient_failure(parking, run.key, record, first, source));
            }
            Err(source) => {
                tracing::warn!(
                    consumer = parking.consumer().as_str(),
                    stream_id = %first.stream_id,
                    error = %source,
                    "a stream's records failed together; trying them one by one"
                );
            }
        }
    }
    for (record, envelope) in run.events {
        let park_error = |source| BatchError::Park {
            topic: topic_of(record, run.key),
            partition: record.partition,
            offset: record.offset,
            stream_key: envelope.stream_id.clone(),
            source,
        };
        // The stream is asked again right before each record parks behind it: a retry may have
        // emptied it since the batch began (then the record is handled), and asking at the last
        // moment leaves only the instant between the question and the write for a retry to finish in.
        if behind.is_some() && !parking.still_parked(&envelope.stream_id).await.map_err(park_error)? {
            behind = None;
        }
        if let Some(reason) = &behind {
            parking.park_envelope(&envelope, reason).await.map_err(park_error)?;
            report.parked += 1;
            continue;
        }
        // Every line logged while the record is handled names it, its flow and the trace it began in.
        let span = tracing::info_span!(
            "record",
            stream_id = %envelope.stream_id,
            version = envelope.version,
            correlation_id = envelope.metadata.correlation_id.as_deref().unwrap_or_default(),
            trace_id = envelope.metadata.trace_id.as_deref().unwrap_or_default(),
        );
        match parking.handle(|| handle(envelope.clone())).instrument(span).await {
            Ok(n) => report.handled += n,
            Err(source) if source.is_transient() => {
                return Err(transient_failure(parking, run.key, record, &envelope, source));
            }
            Err(source) => {
                let reason = source.to_string();
                tracing::error!(
                    consumer = parking.consumer().as_str(),
                    stream_id = %envelope.stream_id,
                    version = envelope.version,
                    offset = record.offset,
                    correlation_id = envelope.metadata.correlation_id.as_deref().unwrap_or_default(),
                    trace_id = envelope.metadata.trace_id.as_deref().unwrap_or_default(),
                    error = %reason,
                    "record failed permanently: its stream is parked"
                );
                parking.park_envelope(&envelope, &reason).await.map_err(park_error)?;
                report.parked += 1;
                behind =
                    Some(format!("parked behind {} v{}: {reason}", envelope.stream_id, envelope.version));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use std::sync::Arc;

    use corebank_app::SystemClock;
    use corebank_backoff::Backoff;
    use corebank_messaging::{Topics, encode};
    use corebank_store::memory::MemoryParkedRecordStore;
    use corebank_store::{ParkedConsumer, ParkedKind, ParkedRecordStore};

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

    /// Parking of the projector in a fresh memory store, with pauses of a millisecond.
    fn parking() -> (Parking, Arc<dyn ParkedRecordStore>) {
        let store: Arc<dyn ParkedRecordStore> = Arc::new(MemoryParkedRecordStore::default());
        let parking = Parking::new(store.clone(), ParkedConsumer::Projector, Arc::new(SystemClock))
            .with_attempts(Backoff::from_millis(1, 1), 3);
        (parking, store)
    }

    /// `(stream, version)` of every parked record, oldest first.
    async fn parked(store: &Arc<dyn ParkedRecordStore>) -> Vec<(String, u64)> {
        let mut rows = store.list(None, 0, 100).await.unwrap();
        rows.sort_by_key(|r| (r.stream_key.clone(), r.position));
        rows.into_iter()
            .map(|r| (r.stream_key.trim_start_matches("account-").to_owned(), r.position))
            .collect()
    }

    /// How a probe refuses a record.
    #[derive(Clone, Copy)]
    enum Fail<'a> {
        Never,
        /// Always, with a store outage.
        Transient(&'a str, u64),
        /// Always, with corrupt data.
        Permanent(&'a str, u64),
    }

    /// Records every handled `(stream, version)` in order, every try, and the most handlers seen
    /// running at once.
    #[derive(Default)]
    struct Probe {
        handled: Mutex<Vec<(String, u64)>>,
        tries: Mutex<BTreeMap<(String, u64), u32>>,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Probe {
        async fn handle(&self, envelope: EventEnvelope, fail: Fail<'_>) -> Result<usize, AppError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            let stream = envelope.stream_id.trim_start_matches("account-").to_owned();
            *self.tries.lock().unwrap().entry((stream.clone(), envelope.version)).or_default() += 1;
            let refused = format!("{} v{} refused", envelope.stream_id, envelope.version);
            match fail {
                Fail::Transient(s, v) if (s, v) == (stream.as_str(), envelope.version) => {
                    return Err(AppError::Store(StoreError::Unavailable(refused)));
                }
                Fail::Permanent(s, v) if (s, v) == (stream.as_str(), envelope.version) => {
                    return Err(AppError::Corrupt(refused));
                }
                _ => {}
            }
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

        fn tries(&self, stream: &str, version: u64) -> u32 {
            self.tries.lock().unwrap().get(&(stream.to_owned(), version)).copied().unwrap_or(0)
        }
    }

    #[tokio::test]
    async fn streams_of_one_partition_run_concurrently_each_in_offset_order() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("a", 3), ("c", 2)])]);
        let probe = Probe::default();
        let (parking, _) = parking();

        let report = for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();

        assert_eq!(report, BatchReport { handled: 7, parked: 0 });
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
        let (parking, _) = parking();

        let report = for_each_stream(&event, 4, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();
        assert_eq!(report.handled, 40);
        assert_eq!(probe.most.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn partitions_take_turns_when_streams_outnumber_the_limit() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2)]), (1, &[("c", 1), ("d", 1)])]);
        let probe = Probe::default();
        let (parking, _) = parking();

        let report = for_each_stream(&event, 1, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();
        assert_eq!(report.handled, 5);

        let order: Vec<(String, u64)> = probe.handled.lock().unwrap().clone();
        let expected = [("a", 1), ("a", 2), ("c", 1), ("b", 1), ("d", 1)];
        assert_eq!(order, expected.map(|(s, v)| (s.to_owned(), v)).to_vec());
    }

    #[tokio::test]
    async fn a_transient_failure_stops_its_own_stream_only_fails_the_batch_and_parks_nothing() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)])]);
        let probe = Probe::default();
        let (parking, store) = parking();

        let failure = for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Transient("a", 2)))
            .await
            .unwrap_err();

        assert!(
            matches!(&failure, BatchError::Handle { stream_id, version: 2, offset: 2, partition: 0, .. } if stream_id == "account-a"),
            "{failure:?}"
        );
        assert_eq!(probe.tries("a", 2), 1, "a transient failure is left to the redelivery");
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1], "nothing of `a` after its failure");
        assert_eq!(per_stream["b"], vec![1, 2, 3], "the other stream went on");
        assert!(parked(&store).await.is_empty());
    }

    #[tokio::test]
    async fn the_earliest_failure_is_reported_when_several_streams_fail() {
        let event = batch(&[(1, &[("c", 1)]), (0, &[("a", 1), ("b", 1), ("b", 2)])]);
        let probe = Probe::default();
        let (parking, _) = parking();

        let failure = for_each_stream(&event, 8, &parking, |e| {
            let fail = match e.stream_id.trim_start_matches("account-") {
                "b" => Fail::Transient("b", 1),
                "c" => Fail::Transient("c", 1),
                _ => Fail::Never,
            };
            probe.handle(e, fail)
        })
        .await
        .unwrap_err();

        assert!(matches!(failure, BatchError::Handle { partition: 0, offset: 1, .. }), "{failure:?}");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_tried_a_bounded_number_of_times_then_parked_with_its_stream_behind_it() {
        let event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3), ("a", 4)])]);
        let probe = Probe::default();
        let (parking, store) = parking();

        let report =
            for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Permanent("a", 2))).await.unwrap();

        assert_eq!(report, BatchReport { handled: 4, parked: 3 });
        assert_eq!(probe.tries("a", 2), 3, "three tries in all");
        assert_eq!(probe.tries("a", 3), 0, "records behind it are not handed over");
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1]);
        assert_eq!(per_stream["b"], vec![1, 2, 3], "the other stream went on");
        let expected = [("a", 2), ("a", 3), ("a", 4)].map(|(s, v)| (s.to_owned(), v)).to_vec();
        assert_eq!(parked(&store).await, expected);
        let rows = store.stream(ParkedConsumer::Projector, "account-a", 10).await.unwrap();
        assert!(rows[0].error.contains("account-a v2 refused"), "{}", rows[0].error);
        assert!(rows[1].error.starts_with("parked behind account-a v2"), "{}", rows[1].error);
        let envelope: EventEnvelope = serde_json::from_str(&rows[2].payload).unwrap();
        assert_eq!((envelope.stream_id.as_str(), envelope.version), ("account-a", 4), "the envelope is kept");
    }

    /// A store that names streams as parked which a retry has emptied since.
    struct StaleList {
        inner: Arc<dyn ParkedRecordStore>,
        listed: Vec<String>,
    }

    #[async_trait::async_trait]
    impl ParkedRecordStore for StaleList {
        async fn park(&self, record: corebank_store::ParkedRecord) -> Result<(), corebank_store::StoreError> {
            self.inner.park(record).await
        }
        async fn parked_streams(&self, _: ParkedConsumer) -> Result<Vec<String>, corebank_store::StoreError> {
            Ok(self.listed.clone())
        }
        async fn list(
            &self,
            consumer: Option<ParkedConsumer>,
            offset: usize,
            limit: usize,
        ) -> Result<Vec<corebank_store::ParkedRecord>, corebank_store::StoreError> {
            self.inner.list(consumer, offset, limit).await
        }
        async fn stream(
            &self,
            consumer: ParkedConsumer,
            stream_key: &str,
            limit: usize,
        ) -> Result<Vec<corebank_store::ParkedRecord>, corebank_store::StoreError> {
            self.inner.stream(consumer, stream_key, limit).await
        }
        async fn remove(
            &self,
            consumer: ParkedConsumer,
            stream_key: &str,
            position: u64,
        ) -> Result<bool, corebank_store::StoreError> {
            self.inner.remove(consumer, stream_key, position).await
        }
        async fn stats(&self) -> Result<corebank_store::ParkedStats, corebank_store::StoreError> {
            self.inner.stats().await
        }
    }

    #[tokio::test]
    async fn a_stream_a_retry_emptied_after_the_batch_began_is_handled_not_parked() {
        let event = batch(&[(0, &[("a", 5), ("a", 6)])]);
        let probe = Probe::default();
        let inner: Arc<dyn ParkedRecordStore> = Arc::new(MemoryParkedRecordStore::default());
        let store: Arc<dyn ParkedRecordStore> =
            Arc::new(StaleList { inner: inner.clone(), listed: vec!["account-a".to_owned()] });
        let parking = Parking::new(store, ParkedConsumer::Projector, Arc::new(SystemClock))
            .with_attempts(Backoff::from_millis(1, 1), 3);

        let report = for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();

        assert_eq!(report, BatchReport { handled: 2, parked: 0 });
        assert_eq!(probe.tries("a", 5) + probe.tries("a", 6), 2);
        assert_eq!(inner.stats().await.unwrap().count, 0);
    }

    #[tokio::test]
    async fn a_stream_parked_before_the_batch_has_every_record_parked_behind_without_being_handled() {
        let event = batch(&[(0, &[("a", 5), ("b", 1), ("a", 6)])]);
        let probe = Probe::default();
        let (parking, store) = parking();
        parking.park_envelope(&envelope("account-a", 4), "an earlier failure").await.unwrap();

        let report = for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();

        assert_eq!(report, BatchReport { handled: 1, parked: 2 });
        assert_eq!(probe.tries("a", 5) + probe.tries("a", 6), 0);
        let expected = [("a", 4), ("a", 5), ("a", 6)].map(|(s, v)| (s.to_owned(), v)).to_vec();
        assert_eq!(parked(&store).await, expected);

        // A redelivery of the same batch parks nothing new: each record parks once.
        for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();
        assert_eq!(store.stats().await.unwrap().count, 3);
    }

    #[tokio::test]
    async fn an_undecodable_record_is_parked_under_its_offset_and_its_partition_goes_on() {
        let mut event = batch(&[(0, &[("a", 1), ("b", 1), ("a", 2), ("b", 2)]), (1, &[("c", 1), ("c", 2)])]);
        let records = event.records.get_mut("events-0").unwrap();
        records.sort_by_key(|r| r.offset);
        records[2].value = Some("not base64 %%%".to_owned());
        let probe = Probe::default();
        let (parking, store) = parking();

        let report = for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Never)).await.unwrap();

        assert_eq!(report, BatchReport { handled: 5, parked: 1 });
        let per_stream = probe.per_stream();
        assert_eq!(per_stream["a"], vec![1]);
        assert_eq!(per_stream["b"], vec![1, 2], "records after the undecodable one are handled");
        assert_eq!(per_stream["c"], vec![1, 2], "other partitions go on");
        let rows = store.list(None, 0, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].stream_key.as_str(), rows[0].position), ("events-0@2", 2));
        assert_eq!((rows[0].kind, rows[0].payload.as_str()), (ParkedKind::Undecodable, "not base64 %%%"));
    }

    /// A parked-record store that is down.
    struct Down;

    #[async_trait::async_trait]
    impl ParkedRecordStore for Down {
        async fn park(&self, _: corebank_store::ParkedRecord) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
        async fn parked_streams(&self, _: ParkedConsumer) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        async fn list(
            &self,
            _: Option<ParkedConsumer>,
            _: usize,
            _: usize,
        ) -> Result<Vec<corebank_store::ParkedRecord>, StoreError> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
        async fn stream(
            &self,
            _: ParkedConsumer,
            _: &str,
            _: usize,
        ) -> Result<Vec<corebank_store::ParkedRecord>, StoreError> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
        async fn remove(&self, _: ParkedConsumer, _: &str, _: u64) -> Result<bool, StoreError> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
        async fn stats(&self) -> Result<corebank_store::ParkedStats, StoreError> {
            Err(StoreError::Unavailable("down".to_owned()))
        }
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_parked_fails_the_batch() {
        let event = batch(&[(0, &[("a", 1), ("b", 1)])]);
        let probe = Probe::default();
        let parking = Parking::new(Arc::new(Down), ParkedConsumer::Projector, Arc::new(SystemClock))
            .with_attempts(Backoff::from_millis(1, 1), 2);

        let failure = for_each_stream(&event, 8, &parking, |e| probe.handle(e, Fail::Permanent("a", 1)))
            .await
            .unwrap_err();

        assert!(
            matches!(&failure, BatchError::Park { stream_key, offset: 0, .. } if stream_key == "account-a"),
            "{failure:?}"
        );
        assert_eq!(probe.per_stream()["b"], vec![1]);
    }
}
