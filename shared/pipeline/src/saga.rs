//! The `transfer-saga` handler: MSK batches of transfer events into the transfer process manager.
//!
//! Same contract as the projection handler: any failure fails the invocation so that the whole batch is
//! delivered again. Redelivery is harmless because every saga pass starts from the transfer's stored
//! state and every account step it issues is idempotent (see `corebank_app::saga`).
//!
//! Order matters only within one transfer, and one transfer's events share a key (the stream id), so
//! the records of one stream are handed over in offset order while different streams, in one partition
//! or in several, run concurrently. A partition holds many transfers; running them one after another
//! would cap a partition at one transfer's round trips at a time.

use std::collections::BTreeMap;

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use corebank_app::AppError;
use corebank_app::saga::{SagaOutcome, TransferSaga};
use corebank_domain::EventEnvelope;
use corebank_messaging::CodecError;
use futures_util::future::join_all;

/// Why a batch was not fully handled; the batch must be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum SagaBatchError {
    /// A record's value is not an event envelope; the partition stalls (visibly) rather than skip it.
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
    /// A saga pass failed (a store outage, a lease still held by a crashed pass, a broken invariant).
    #[error("{stream_id} v{version} (record {topic}-{partition}@{offset}) was not handled: {source}")]
    Saga {
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
        /// The saga's reason.
        #[source]
        source: AppError,
    },
}

/// Hands one MSK batch to the saga; returns how many saga steps the batch took.
///
/// On `Err`, the caller must fail the invocation so that the whole batch is delivered again.
#[tracing::instrument(name = "saga_batch", skip_all, fields(partitions = event.records.len()))]
pub async fn handle_kafka_event(event: &KafkaEvent, saga: &TransferSaga) -> Result<usize, SagaBatchError> {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    let results =
        join_all(partitions.into_iter().map(|(key, records)| run_partition(key, records, saga))).await;
    let mut steps = 0;
    for result in results {
        steps += result?;
    }
    Ok(steps)
}

async fn run_partition(
    key: &str,
    records: &[KafkaRecord],
    saga: &TransferSaga,
) -> Result<usize, SagaBatchError> {
    let mut streams: BTreeMap<String, Vec<(&KafkaRecord, EventEnvelope)>> = BTreeMap::new();
    for (record, envelope) in crate::projection::decode_partition(key, records) {
        let envelope = envelope.map_err(|source| SagaBatchError::Decode {
            topic: topic_of(record, key),
            partition: record.partition,
            offset: record.offset,
            source,
        })?;
        streams.entry(envelope.stream_id.clone()).or_default().push((record, envelope));
    }
    let results = join_all(streams.into_values().map(|events| run_stream(key, events, saga))).await;
    let mut steps = 0;
    for result in results {
        steps += result?;
    }
    Ok(steps)
}

fn topic_of(record: &KafkaRecord, key: &str) -> String {
    record.topic.clone().unwrap_or_else(|| key.to_owned())
}

/// One stream's records, in offset order, stopping at the first failure.
async fn run_stream(
    key: &str,
    events: Vec<(&KafkaRecord, EventEnvelope)>,
    saga: &TransferSaga,
) -> Result<usize, SagaBatchError> {
    let mut steps = 0;
    for (record, envelope) in events {
        match saga.handle(&envelope).await {
            Ok(SagaOutcome::Settled { steps: n, .. }) => steps += n,
            Ok(SagaOutcome::Ignored) => {}
            Err(source) => {
                return Err(SagaBatchError::Saga {
                    topic: topic_of(record, key),
                    partition: record.partition,
                    offset: record.offset,
                    stream_id: envelope.stream_id,
                    version: envelope.version,
                    source,
                });
            }
        }
    }
    Ok(steps)
}
