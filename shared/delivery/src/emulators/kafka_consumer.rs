//! [`KafkaBatchConsumer`]: the AWS MSK event source mapping, emulated for hosts that are not Lambda.
//!
//! In AWS, Lambda polls the topic, hands the function a [`KafkaEvent`] batch, and commits the batch's
//! offsets only when the function succeeds; a failed batch is retried from its first record. The local
//! runner gets the same contract from [`KafkaBatchConsumer::run`], so a projection function cannot tell
//! which host called it. [`kafka_event_from_records`] is the pure half of that (testable without a
//! broker) and [`envelopes_from_kafka_event`](crate::handlers::batch::envelopes_from_kafka_event) is what
//! a function does with the batch.
//!
//! Limits: a batch holds at most [`ConsumerConfig::max_batch`] records and waits at most
//! [`ConsumerConfig::max_wait_ms`] after its first record; a failing batch is retried after a jittered
//! exponential pause bounded by [`ConsumerConfig::retry_backoff_max_ms`]. Retries are not counted out:
//! skipping a batch would drop events from the read side, so a projection stalls visibly instead.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::encodings::MillisecondTimestamp;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::DateTime;
use corebank_backoff::Backoff;
use corebank_messaging::context::{KafkaContext, describe_partitions};
use corebank_messaging::{KafkaConfig, KafkaSetupError, OutgoingRecord};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

/// The `eventSource` of an MSK batch.
pub const EVENT_SOURCE_MSK: &str = "aws:kafka";

/// How long a blocking seek may take before it counts as failed.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a consumer error, so a broker outage does not become a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// librdkafka's `max.poll.interval.ms`, set explicitly: a member that does not come back for records
/// within it (its handler still busy with the last batch) leaves the group and loses its partitions.
const MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// What one [`KafkaBatchConsumer`] reads and how it batches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group; it owns the committed offsets.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Most records in one batch (the ESM's `BatchSize`).
    pub max_batch: usize,
    /// Longest wait for more records once a batch has its first (the ESM's batching window).
    pub max_wait_ms: u64,
    /// First pause after a failed batch.
    pub retry_backoff_initial_ms: u64,
    /// Longest pause after a failed batch.
    pub retry_backoff_max_ms: u64,
    /// `eventSourceArn` to put on each batch (the MSK cluster ARN in AWS; usually `None` locally).
    pub event_source_arn: Option<String>,
}

impl ConsumerConfig {
    /// Default [`ConsumerConfig::max_batch`], as the MSK event source mapping.
    pub const DEFAULT_MAX_BATCH: usize = 100;
    /// Default [`ConsumerConfig::max_wait_ms`].
    pub const DEFAULT_MAX_WAIT_MS: u64 = 20;
    /// Default [`ConsumerConfig::retry_backoff_initial_ms`].
    pub const DEFAULT_RETRY_BACKOFF_INITIAL_MS: u64 = 100;
    /// Default [`ConsumerConfig::retry_backoff_max_ms`].
    pub const DEFAULT_RETRY_BACKOFF_MAX_MS: u64 = 10_000;

    /// Settings for `group_id` reading `topics`, with every default.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            max_batch: Self::DEFAULT_MAX_BATCH,
            max_wait_ms: Self::DEFAULT_MAX_WAIT_MS,
            retry_backoff_initial_ms: Self::DEFAULT_RETRY_BACKOFF_INITIAL_MS,
            retry_backoff_max_ms: Self::DEFAULT_RETRY_BACKOFF_MAX_MS,
            event_source_arn: None,
        }
    }

    /// The pauses between tries of a failed batch: doubling from the initial pause to the maximum,
    /// the upper half jittered.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff::from_millis(self.retry_backoff_initial_ms, self.retry_backoff_max_ms)
    }
}

/// One record as read from Kafka, owned and independent of the client, before it becomes a
/// [`KafkaRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset inside the partition.
    pub offset: i64,
    /// The record's timestamp and its kind.
    pub timestamp: Timestamp,
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in record order; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ConsumedRecord {
    /// The record a broker would return for `record` stored at `partition`/`offset`; lets an in-process
    /// pipeline hand functions the same batches without a broker.
    pub fn from_outgoing(record: &OutgoingRecord, partition: i32, offset: i64, timestamp: Timestamp) -> Self {
        Self {
            topic: record.topic.clone(),
            partition,
            offset,
            timestamp,
            key: Some(record.key.clone()),
            value: Some(record.value.clone()),
            headers: record
                .headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), Some(value.as_bytes().to_vec())))
                .collect(),
        }
    }

    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|headers| {
                    headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Builds the [`KafkaEvent`] Lambda would deliver for `records`: `eventSource` `aws:kafka`, records
/// grouped under `"{topic}-{partition}"` in offset order, key and value base64-encoded, each header a
/// one-entry map from its name to its bytes.
pub fn kafka_event_from_records(
    records: &[ConsumedRecord],
    event_source_arn: Option<&str>,
    bootstrap_servers: Option<&str>,
) -> KafkaEvent {
    let mut grouped: HashMap<String, Vec<KafkaRecord>> = HashMap::new();
    for record in records {
        grouped
            .entry(format!("{}-{}", record.topic, record.partition))
            .or_default()
            .push(kafka_record(record));
    }
    for partition in grouped.values_mut() {
        partition.sort_by_key(|record| record.offset);
    }
    let mut event = KafkaEvent::default();
    event.event_source = Some(EVENT_SOURCE_MSK.to_owned());
    event.event_source_arn = event_source_arn.map(str::to_owned);
    event.bootstrap_servers = bootstrap_servers.map(str::to_owned);
    event.records = grouped;
    event
}

fn kafka_record(record: &ConsumedRecord) -> KafkaRecord {
    let (millis, kind) = match record.timestamp {
        Timestamp::CreateTime(ms) => (ms, "CREATE_TIME"),
        Timestamp::LogAppendTime(ms) => (ms, "LOG_APPEND_TIME"),
        Timestamp::NotAvailable => (0, "NO_TIMESTAMP_TYPE"),
    };
    let mut out = KafkaRecord::default();
    out.topic = Some(record.topic.clone());
    out.partition = i64::from(record.partition);
    out.offset = record.offset;
    out.timestamp = MillisecondTimestamp(DateTime::from_timestamp_millis(millis).unwrap_or_default());
    out.timestamp_type = Some(kind.to_owned());
    out.key = record.key.as_ref().map(|key| BASE64.encode(key));
    out.value = record.value.as_ref().map(|value| BASE64.encode(value));
    out.headers = record
        .headers
        .iter()
        .map(|(name, value)| {
            let bytes = value.as_deref().unwrap_or_default();
            HashMap::from([(name.clone(), bytes.iter().map(|b| i8::from_ne_bytes([*b])).collect())])
        })
        .collect();
    out
}

/// Why [`KafkaBatchConsumer::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// librdkafka reported an error it cannot recover from; the process should restart the consumer.
    #[error("fatal consumer error: {0}")]
    Fatal(#[source] KafkaError),
    /// A failed batch could not be rewound on a partition this consumer still owns. Nothing was
    /// committed, so a new consumer will redeliver it.
    #[error("could not rewind {topic}-{partition} to offset {offset} after a failed batch: {reason}")]
    Rewind {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The batch's first offset there.
        offset: i64,
        /// librdkafka's reason.
        reason: String,
    },
}

/// A consumer-group member that turns Kafka records into [`KafkaEvent`] batches and commits a batch only
/// after its handler succeeds (see the module docs).
pub struct KafkaBatchConsumer {
    consumer: Arc<StreamConsumer<KafkaContext>>,
    config: ConsumerConfig,
    bootstrap_servers: String,
}

impl std::fmt::Debug for KafkaBatchConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBatchConsumer")
            .field("config", &self.config)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

impl KafkaBatchConsumer {
    /// Creates the consumer and subscribes to the configured topics. It joins the group on the first
    /// [`KafkaBatchConsumer::run`] poll.
    ///
    /// Settings: `enable.auto.commit=false` (offsets move only after the handler succeeds),
    /// `auto.offset.reset=earliest` (a new group reads from the start), the session timeout from
    /// [`KafkaConfig::session_timeout_ms`] and a heartbeat at a third of it.
    pub fn new(kafka: &KafkaConfig, config: ConsumerConfig) -> Result<Self, KafkaSetupError> {
        let mut client = kafka.client_config();
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", kafka.heartbeat_interval_ms().to_string())
            .set("max.poll.interval.ms", MAX_POLL_INTERVAL_MS.to_string())
            // The batch window is ours (`max_wait_ms`); a long broker-side fetch wait would only add
            // lag on a quiet topic (librdkafka's default is 500 ms).
            .set("fetch.wait.max.ms", "10");
        let consumer: StreamConsumer<KafkaContext> = client
            .create_with_context(KafkaContext::for_config(kafka)?.for_group(&config.group_id))
            .map_err(|source| KafkaSetupError::Create { role: "consumer", source })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| KafkaSetupError::Subscribe { topics: config.topics.clone(), source })?;
        Ok(Self { consumer: Arc::new(consumer), config, bootstrap_servers: kafka.brokers.clone() })
    }

    /// Delivers batches to `handler` until `shutdown` completes.
    ///
    /// After `Ok` the batch's offsets are committed (synchronously, before the next fetch is read).
    /// After `Err` nothing is committed, every partition of the batch is rewound to the batch's first
    /// offset there, and the same records come again after a backoff, as a Lambda retry would.
    /// A handler already running when `shutdown` completes is allowed to finish and be committed.
    pub async fn run<H, Fut, E, S>(&self, handler: H, shutdown: S) -> Result<(), ConsumerError>
    where
        H: Fn(KafkaEvent) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
        S: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        tracing::info!(
            group_id = %self.config.group_id,
            topics = ?self.config.topics,
            "batch consumer started; partitions come with the group's first rebalance"
        );
        let mut failures: u32 = 0;
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                batch = self.next_batch() => match batch {
                    Ok(batch) => batch,
                    Err(err) => {
                        tracing::error!(group_id = %self.config.group_id, error = %err, "batch consumer stopped");
                        return Err(err);
                    }
                },
            };
            let event = kafka_event_from_records(
                &batch,
                self.config.event_source_arn.as_deref(),
                Some(&self.bootstrap_servers),
            );
            let started = Instant::now();
            let outcome = handler(event).await;
            self.warn_if_slow(&batch, started.elapsed());
            match outcome {
                Ok(()) => {
                    failures = 0;
                    self.commit(&batch).await;
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let pause = self.config.retry_backoff().delay(failures);
                    tracing::warn!(
                        group_id = %self.config.group_id,
                        records = batch.len(),
                        failures,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        error = %err,
                        "batch handler failed; the batch will be redelivered"
                    );
                    if let Err(err) = self.rewind(&batch).await {
                        tracing::error!(group_id = %self.config.group_id, error = %err, "batch consumer stopped");
                        return Err(err);
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// A batch that took more than half of `max.poll.interval.ms` to handle came close to costing this
    /// member its partitions (librdkafka leaves the group when the next poll comes later than that).
    fn warn_if_slow(&self, batch: &[ConsumedRecord], took: Duration) {
        if took >= Duration::from_millis(MAX_POLL_INTERVAL_MS / 2) {
            tracing::warn!(
                group_id = %self.config.group_id,
                records = batch.len(),
                took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                max_poll_interval_ms = MAX_POLL_INTERVAL_MS,
                "a batch handler ran for more than half of max.poll.interval.ms"
            );
        }
    }

    /// Waits for one record, then gathers more until the batch is full or the window has passed.
    async fn next_batch(&self) -> Result<Vec<ConsumedRecord>, ConsumerError> {
        let first = loop {
            match self.consumer.recv().await {
                Ok(message) => break ConsumedRecord::from_message(&message),
                Err(err) => self.survive(err).await?,
            }
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + Duration::from_millis(self.config.max_wait_ms);
        while batch.len() < self.config.max_batch {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_window_closed) => break,
                Ok(Ok(message)) => batch.push(ConsumedRecord::from_message(&message)),
                Ok(Err(err)) => {
                    self.survive(err).await?;
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Ends the run on a fatal error; otherwise logs it and pauses briefly.
    async fn survive(&self, err: KafkaError) -> Result<(), ConsumerError> {
        if matches!(err, KafkaError::MessageConsumptionFatal(_)) {
            return Err(ConsumerError::Fatal(err));
        }
        tracing::warn!(group_id = %self.config.group_id, error = %err, "Kafka consumer error");
        tokio::time::sleep(ERROR_PAUSE).await;
        Ok(())
    }

    /// Commits the offset after each partition's last record in `batch`.
    ///
    /// A failed commit is logged, not fatal: the records were handled, and the next successful commit
    /// covers them (commits are cumulative). At worst a restart redelivers them, which at-least-once
    /// consumers already tolerate.
    async fn commit(&self, batch: &[ConsumedRecord]) {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), span) in spans(batch) {
            if let Err(err) = offsets.add_partition_offset(&topic, partition, Offset::Offset(span.last + 1)) {
                tracing::warn!(%topic, partition, error = %err, "could not record an offset to commit");
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let result = tokio::task::spawn_blocking(move || {
            let committed = consumer.commit(&offsets, CommitMode::Sync);
            (committed, offsets)
        })
        .await;
        match result {
            Ok((Ok(()), _)) => {}
            Ok((Err(err), offsets)) => {
                // Typically a rebalance took a partition while the batch was in hand: its next owner
                // starts from the last commit and gets the batch's records again (as duplicates).
                tracing::warn!(
                    group_id = %self.config.group_id,
                    offsets = %describe_partitions(&offsets),
                    error = %err,
                    "offset commit failed; a later commit covers these records, or the partition's next owner reads them again"
                );
            }
            Err(join) => {
                tracing::warn!(group_id = %self.config.group_id, error = %join, "offset commit task failed");
            }
        }
    }

    /// Seeks every partition of `batch` back to the batch's first offset there.
    async fn rewind(&self, batch: &[ConsumedRecord]) -> Result<(), ConsumerError> {
        let spans = spans(batch);
        let mut positions = TopicPartitionList::new();
        for ((topic, partition), span) in &spans {
            positions.add_partition_offset(topic, *partition, Offset::Offset(span.first)).map_err(|err| {
                ConsumerError::Rewind {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: span.first,
                    reason: err.to_string(),
                }
            })?;
        }
        let consumer = Arc::clone(&self.consumer);
        let sought = tokio::task::spawn_blocking(move || consumer.seek_partitions(positions, SEEK_TIMEOUT))
            .await
            .map_err(|join| KafkaError::Seek(join.to_string()));
        let failed: Vec<(String, i32, String)> = match sought {
            Ok(Ok(result)) => result
                .elements()
                .iter()
                .filter_map(|elem| {
                    elem.error().err().map(|err| (elem.topic().to_owned(), elem.partition(), err.to_string()))
                })
                .collect(),
            Ok(Err(err)) | Err(err) => {
                spans.keys().map(|(topic, partition)| (topic.clone(), *partition, err.to_string())).collect()
            }
        };
        if failed.is_empty() {
            return Ok(());
        }
        // A partition revoked meanwhile needs no rewind: its new owner starts from the last commit,
        // which is at or before this batch.
        let assignment = self.consumer.assignment().map_err(ConsumerError::Fatal)?;
        for (topic, partition, reason) in failed {
            if assignment.find_partition(&topic, partition).is_some() {
                let offset = spans.get(&(topic.clone(), partition)).map_or(0, |span| span.first);
                return Err(ConsumerError::Rewind { topic, partition, offset, reason });
            }
        }
        Ok(())
    }
}

/// First and last offset of one partition inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first: i64,
    last: i64,
}

fn spans(batch: &[ConsumedRecord]) -> BTreeMap<(String, i32), Span> {
    let mut spans: BTreeMap<(String, i32), Span> = BTreeMap::new();
    for record in batch {
        spans
            .entry((record.topic.clone(), record.partition))
            .and_modify(|span| {
                span.first = span.first.min(record.offset);
                span.last = span.last.max(record.offset);
            })
            .or_insert(Span { first: record.offset, last: record.offset });
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use corebank_domain::EventEnvelope;
    use corebank_messaging::{CodecError, Topics, decode_value, encode};

    use crate::handlers::batch::envelopes_from_kafka_event;
    use crate::test_support::envelope;

    fn consumed(stream: &str, version: u64, partition: i32, offset: i64) -> (EventEnvelope, ConsumedRecord) {
        let event = envelope(stream, version);
        let record = encode(&Topics::single("events"), &event).unwrap();
        let consumed = ConsumedRecord::from_outgoing(
            &record,
            partition,
            offset,
            Timestamp::CreateTime(1_700_000_000_123),
        );
        (event, consumed)
    }

    #[test]
    fn a_batch_serializes_in_the_shape_lambda_delivers_for_msk() {
        let (event, record) = consumed("account-a", 1, 2, 41);
        let kafka_event = kafka_event_from_records(
            std::slice::from_ref(&record),
            Some("arn:aws:kafka:eu-west-1:123456789012:cluster/bank/abc"),
            Some("127.0.0.1:9092"),
        );
        let json = serde_json::to_value(&kafka_event).unwrap();

        assert_eq!(json["eventSource"], "aws:kafka");
        assert_eq!(json["eventSourceArn"], "arn:aws:kafka:eu-west-1:123456789012:cluster/bank/abc");
        assert_eq!(json["bootstrapServers"], "127.0.0.1:9092");
        let partitions = json["records"].as_object().unwrap();
        assert_eq!(partitions.keys().collect::<Vec<_>>(), vec!["events-2"]);
        let first = &partitions["events-2"][0];
        assert_eq!(first["topic"], "events");
        assert_eq!(first["partition"], 2);
        assert_eq!(first["offset"], 41);
        // aws_lambda_events writes epoch milliseconds as a string (Lambda sends a number; the type reads both).
        assert_eq!(first["timestamp"].to_string().trim_matches('"'), "1700000000123");
        assert_eq!(first["timestampType"], "CREATE_TIME");
        assert_eq!(BASE64.decode(first["key"].as_str().unwrap()).unwrap(), b"account-a");
        let value = BASE64.decode(first["value"].as_str().unwrap()).unwrap();
        assert_eq!(decode_value(&value).unwrap(), event);
        let headers = first["headers"].as_array().unwrap();
        assert_eq!(headers.len(), 3);
        assert_eq!(headers[0]["event-type"], serde_json::json!(b"MoneyDeposited".to_vec()));
        assert_eq!(headers[1]["schema-version"], serde_json::json!([49]));

        let mut reparsed: KafkaEvent = serde_json::from_value(json).unwrap();
        // aws_lambda_events reads epoch milliseconds through an f64 and may lose the last millisecond.
        let reparsed_record = &mut reparsed.records.get_mut("events-2").unwrap()[0];
        let millis = reparsed_record.timestamp.timestamp_millis();
        assert!((1_700_000_000_122..=1_700_000_000_123).contains(&millis), "{millis}");
        reparsed_record.timestamp = kafka_event.records["events-2"][0].timestamp.clone();
        assert_eq!(reparsed, kafka_event);
    }

    #[test]
    fn header_bytes_above_127_become_negative_signed_bytes_as_in_lambda_payloads() {
        let (_, mut record) = consumed("account-a", 1, 0, 0);
        record.headers = vec![("bin".to_owned(), Some(vec![0, 127, 128, 255])), ("empty".to_owned(), None)];
        let kafka_event = kafka_event_from_records(&[record], None, None);
        let headers = &kafka_event.records["events-0"][0].headers;
        assert_eq!(headers[0]["bin"], vec![0, 127, -128, -1]);
        assert_eq!(headers[1]["empty"], Vec::<i8>::new());
    }

    #[test]
    fn records_are_grouped_by_topic_partition_and_decode_back_in_offset_order() {
        let (a1, r_a1) = consumed("account-a", 1, 0, 10);
        let (a2, r_a2) = consumed("account-a", 2, 0, 11);
        let (b1, r_b1) = consumed("account-b", 1, 1, 5);
        let (b2, r_b2) = consumed("account-b", 2, 1, 6);
        let kafka_event = kafka_event_from_records(&[r_b2, r_a1, r_b1, r_a2], None, None);

        assert_eq!(kafka_event.records.len(), 2);
        let offsets: Vec<i64> = kafka_event.records["events-1"].iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![5, 6]);
        let decoded: Vec<EventEnvelope> =
            envelopes_from_kafka_event(&kafka_event).into_iter().map(Result::unwrap).collect();
        assert_eq!(decoded, vec![a1, a2, b1, b2]);
    }

    #[test]
    fn an_undecodable_record_yields_an_error_in_its_place_without_hiding_the_others() {
        let (a1, r_a1) = consumed("account-a", 1, 0, 1);
        let (_, mut bad_base64) = consumed("account-a", 2, 0, 2);
        bad_base64.value = None;
        let mut kafka_event = kafka_event_from_records(&[r_a1, bad_base64], None, None);
        let (_, r_a3) = consumed("account-a", 3, 0, 3);
        let mut not_base64 = kafka_record(&r_a3);
        not_base64.value = Some("%%%".to_owned());
        let mut not_json = kafka_record(&r_a3);
        not_json.offset = 4;
        not_json.value = Some(BASE64.encode(b"{}"));
        let records = kafka_event.records.get_mut("events-0").unwrap();
        records.push(not_base64);
        records.push(not_json);

        let decoded = envelopes_from_kafka_event(&kafka_event);
        assert_eq!(decoded.len(), 4);
        assert_eq!(decoded[0].as_ref().unwrap(), &a1);
        assert!(matches!(decoded[1], Err(CodecError::MissingValue { offset: 2, .. })));
        assert!(matches!(decoded[2], Err(CodecError::Base64 { offset: 3, .. })));
        assert!(matches!(decoded[3], Err(CodecError::Decode(_))));
    }

    #[test]
    fn spans_cover_each_partition_from_its_first_to_its_last_offset() {
        let records: Vec<ConsumedRecord> = [(0, 7), (1, 3), (0, 8), (0, 9), (1, 4)]
            .iter()
            .map(|&(p, o)| consumed("account-a", 1, p, o).1)
            .collect();
        let spans = spans(&records);
        assert_eq!(spans[&("events".to_owned(), 0)], Span { first: 7, last: 9 });
        assert_eq!(spans[&("events".to_owned(), 1)], Span { first: 3, last: 4 });
    }
}
