//! [`KafkaPublisher`]: the [`EventPublisher`] over an idempotent rdkafka producer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use corebank_domain::EventEnvelope;
use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::codec::{OutgoingRecord, Topics, encode};
use crate::config::KafkaConfig;
use crate::context::KafkaContext;
use crate::error::KafkaSetupError;
use crate::publisher::{EventPublisher, PublishError};

/// How long to wait before offering a message again to a full local queue.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Publishes envelopes to Kafka with an idempotent producer (`enable.idempotence=true`, `acks=all`,
/// at most 5 requests in flight), keyed by stream id.
///
/// Why this is enough for per-stream order: one key always maps to one partition, messages are handed to
/// librdkafka one at a time in input order, and the idempotent producer keeps a partition's order across
/// its internal retries. [`EventPublisher::publish`] then awaits every delivery report together, so a
/// call costs about one round trip rather than one per event.
///
/// Build it once per process (cold start) and share it: the producer owns connections and threads.
///
/// A producer whose identity the broker no longer accepts (fenced, an epoch or sequence it refuses, an
/// unknown producer id) or that librdkafka holds as fatally failed refuses everything from then on, and
/// waiting does not help: such a failure marks the producer, and the next publish builds a new one from
/// the same settings (a new producer id). The events the old one failed come back as retryable, so the
/// caller sends them again, in order.
pub struct KafkaPublisher {
    producer: RwLock<Arc<FutureProducer<KafkaContext>>>,
    /// Set when a delivery failed for a reason that only a new producer cures.
    renew: AtomicBool,
    config: KafkaConfig,
    topics: Topics,
    max_message_bytes: usize,
    enqueue_timeout: Duration,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topics", &self.topics)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// Creates the producer. Connection problems do not fail this call; they show as retryable outcomes
    /// of [`EventPublisher::publish`] once `message_timeout_ms` has passed.
    pub fn new(config: &KafkaConfig, topics: Topics) -> Result<Self, KafkaSetupError> {
        Ok(Self {
            producer: RwLock::new(Arc::new(create(config)?)),
            renew: AtomicBool::new(false),
            config: config.clone(),
            topics,
            max_message_bytes: config.max_message_bytes,
            enqueue_timeout: Duration::from_millis(config.message_timeout_ms),
        })
    }

    /// The producer to publish with: the current one, or a new one when the current one is marked or
    /// fatally failed.
    fn usable_producer(&self) -> Arc<FutureProducer<KafkaContext>> {
        let current = self.producer.read().unwrap_or_else(PoisonError::into_inner).clone();
        let fatal = current.client().fatal_error();
        if fatal.is_none() && !self.renew.load(Ordering::Acquire) {
            return current;
        }
        let mut slot = self.producer.write().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&slot, &current) {
            // Another publish has replaced it already.
            return slot.clone();
        }
        let cause = fatal.map_or_else(|| "the broker refused its identity".to_owned(), |(_, reason)| reason);
        match create(&self.config) {
            Ok(fresh) => {
                tracing::error!(%cause, "the Kafka producer can no longer publish; publishing with a new one");
                *slot = Arc::new(fresh);
                self.renew.store(false, Ordering::Release);
                slot.clone()
            }
            Err(e) => {
                tracing::error!(%cause, error = %e, "the Kafka producer can no longer publish and a new one could not be built; trying again at the next publish");
                current
            }
        }
    }

    /// Whether the producer in use can no longer publish (a new one is built at the next publish).
    pub fn needs_new_producer(&self) -> bool {
        self.renew.load(Ordering::Acquire)
            || self.producer.read().unwrap_or_else(PoisonError::into_inner).client().fatal_error().is_some()
    }

    /// Classifies a failed delivery, marking the producer for renewal when only that cures it.
    fn failed(&self, err: &KafkaError) -> PublishError {
        if needs_new_producer(err) {
            self.renew.store(true, Ordering::Release);
        }
        classify(err)
    }

    /// The topics events are routed to.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Hands one event to `producer`'s queue, waiting while the queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer<KafkaContext>,
        event: &EventEnvelope,
    ) -> Result<DeliveryFuture, PublishError> {
        let record = encode(&self.topics, event)?;
        let bytes = record_size(&record);
        if bytes > self.max_message_bytes {
            return Err(PublishError::TooLarge { bytes, limit: self.max_message_bytes });
        }
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: Some(value.as_str()) });
        }
        let mut pending = FutureRecord::to(&record.topic)
            .key(record.key.as_slice())
            .payload(record.value.as_slice())
            .headers(headers);
        let deadline = Instant::now() + self.enqueue_timeout;
        loop {
            match producer.send_result(pending) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    pending = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((err, _)) => return Err(self.failed(&err)),
            }
        }
    }
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        let producer = self.usable_producer();
        let mut outcomes: Vec<Option<Result<(), PublishError>>> = events.iter().map(|_| None).collect();
        let mut in_flight = Vec::with_capacity(events.len());
        // A stream whose event could not be enqueued gets no later event in this call: publishing v3
        // after a failed v2 would put a gap on the topic that only gap repair could close.
        let mut broken_streams: HashSet<&str> = HashSet::new();
        for (index, event) in events.iter().enumerate() {
            if broken_streams.contains(event.stream_id.as_str()) {
                outcomes[index] =
                    Some(Err(PublishError::EarlierEventFailed { stream_id: event.stream_id.clone() }));
                continue;
            }
            match self.enqueue(&producer, event).await {
                Ok(delivery) => in_flight.push((index, delivery)),
                Err(err) => {
                    broken_streams.insert(event.stream_id.as_str());
                    outcomes[index] = Some(Err(err));
                }
            }
        }
        let reports = join_all(in_flight.into_iter().map(|(index, delivery)| async move {
            let outcome = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((err, _message))) => Err(self.failed(&err)),
                Err(_canceled) => Err(PublishError::Transient {
                    reason: "the producer went away before acknowledging".to_owned(),
                }),
            };
            (index, outcome)
        }))
        .await;
        for (index, outcome) in reports {
            outcomes[index] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Err(PublishError::Transient { reason: "no delivery report was received".to_owned() })
                })
            })
            .collect()
    }
}

/// Failures that say the broker no longer accepts this producer's identity (its id, epoch or
/// sequence numbers), or that librdkafka has given the producer up: waiting does not cure them, a new
/// producer does.
fn needs_new_producer(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Fenced
        )
    )
}

/// An idempotent producer over `config` (see [`KafkaPublisher`]).
fn create(config: &KafkaConfig) -> Result<FutureProducer<KafkaContext>, KafkaSetupError> {
    let mut client = config.client_config();
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", config.linger_ms.to_string())
        .set("message.timeout.ms", config.message_timeout_ms.to_string())
        .set("compression.codec", config.compression.as_str())
        // The partitioner of the Java client, so tools and other producers agree on where a stream lives.
        .set("partitioner", "murmur2_random");
    client
        .create_with_context(KafkaContext::for_config(config)?)
        .map_err(|source| KafkaSetupError::Create { role: "producer", source })
}

fn record_size(record: &OutgoingRecord) -> usize {
    record.key.len()
        + record.value.len()
        + record.headers.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>()
}

/// Sorts a producer error into "the same message will never be accepted" and "try again later".
///
/// Only faults of the message itself are permanent. Everything else, including authorisation and unknown
/// topics, is retryable: those are fixed by an operator, and an event must not be dropped meanwhile.
pub(crate) fn classify(err: &KafkaError) -> PublishError {
    let reason = err.to_string();
    match err.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::BadMessage
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::KeySerialization
            | RDKafkaErrorCode::ValueSerialization,
        ) => PublishError::Rejected { reason },
        _ => PublishError::Transient { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_producer_identity_or_a_fatal_error_calls_for_a_new_producer() {
        for code in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::UnknownProducerId,
            RDKafkaErrorCode::Fatal,
        ] {
            let err = KafkaError::MessageProduction(code);
            assert!(needs_new_producer(&err), "{code:?}");
            assert!(classify(&err).is_retryable(), "{code:?} is retried, with a new producer");
        }
        for code in
            [RDKafkaErrorCode::MessageTimedOut, RDKafkaErrorCode::AllBrokersDown, RDKafkaErrorCode::QueueFull]
        {
            assert!(!needs_new_producer(&KafkaError::MessageProduction(code)), "{code:?}");
        }
    }

    #[test]
    fn message_faults_are_permanent_and_broker_trouble_is_retryable() {
        let rejected = classify(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(matches!(rejected, PublishError::Rejected { .. }));
        assert!(!rejected.is_retryable());
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            let err = classify(&KafkaError::MessageProduction(code));
            assert!(err.is_retryable(), "{code:?} should be retryable, got {err:?}");
        }
    }
}
