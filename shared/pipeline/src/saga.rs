//! The `transfer-saga` handler: MSK batches of transfer events into the transfer process manager.
//!
//! Same contract as the projection handler: any failure fails the invocation so that the whole batch is
//! delivered again. Redelivery is harmless because every saga pass starts from the transfer's stored
//! state and every account step it issues is idempotent (see `corebank_app::saga`).
//!
//! Order matters only within one transfer, and one transfer's events share a key (the stream id), so
//! the records of one stream are handed over in offset order while different streams, in one partition
//! or in several, run concurrently (at most [`STREAMS_IN_FLIGHT_MAX`] at once; see [`crate::fanout`]).
//! A partition holds many transfers; running them one after another would cap a partition at one
//! transfer's round trips at a time.

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::AppError;
use corebank_app::saga::{SagaOutcome, TransferSaga};
use corebank_messaging::CodecError;

use crate::fanout::{RecordFailure, STREAMS_IN_FLIGHT_MAX, for_each_stream};

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
    for_each_stream(event, STREAMS_IN_FLIGHT_MAX, |envelope| async move {
        match saga.handle(&envelope).await? {
            SagaOutcome::Settled { steps, .. } => Ok(steps),
            SagaOutcome::Ignored => Ok(0),
        }
    })
    .await
    .map_err(SagaBatchError::from_failure)
}

impl SagaBatchError {
    fn from_failure(failure: RecordFailure<AppError>) -> Self {
        match failure {
            RecordFailure::Decode { topic, partition, offset, source } => {
                Self::Decode { topic, partition, offset, source }
            }
            RecordFailure::Handle { topic, partition, offset, stream_id, version, source } => {
                Self::Saga { topic, partition, offset, stream_id, version, source }
            }
        }
    }
}
