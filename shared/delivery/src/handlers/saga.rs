//! The `transfer-saga` handler: MSK batches of transfer events into the transfer process manager.
//!
//! Same contract as the projection handler: any failure fails the invocation so that the whole batch is
//! delivered again. Redelivery is harmless because every saga pass starts from the transfer's stored
//! state and every account step it issues is idempotent (see `corebank_app::saga`).
//!
//! Order matters only within one transfer, and one transfer's events share a key (the stream id), so
//! the records of one stream are handed over in offset order while different streams, in one partition
//! or in several, run concurrently (at most [`STREAMS_IN_FLIGHT_MAX`] at once; see [`crate::handlers::batch`]).
//! A partition holds many transfers; running them one after another would cap a partition at one
//! transfer's round trips at a time.

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::saga::{SagaOutcome, TransferSaga};

use crate::fanout::STREAMS_IN_FLIGHT_MAX;
use crate::handlers::batch::{BatchError, for_each_stream};

/// Hands one MSK batch to the saga; returns how many saga steps the batch took.
///
/// On `Err`, the caller must fail the invocation so that the whole batch is delivered again.
#[tracing::instrument(name = "saga_batch", skip_all, fields(partitions = event.records.len()))]
pub async fn handle_kafka_event(event: &KafkaEvent, saga: &TransferSaga) -> Result<usize, BatchError> {
    for_each_stream(event, STREAMS_IN_FLIGHT_MAX, |envelope| async move {
        match saga.handle(&envelope).await? {
            SagaOutcome::Settled { steps, .. } => Ok(steps),
            SagaOutcome::Ignored => Ok(0),
        }
    })
    .await
}
