//! The `transfer-saga` handler: MSK batches of transfer events into the transfer process manager.
//!
//! Same contract as the projection handler: a transient failure fails the invocation so that the whole
//! batch is delivered again; a permanent one parks the transfer's stream (see [`crate::handlers::batch`]). Redelivery is harmless because every saga pass starts from the transfer's stored
//! state and every account step it issues is idempotent (see `corebank_app::saga`).
//!
//! Order matters only within one transfer, and one transfer's events share a key (the stream id), so
//! the records of one stream are handed over in offset order while different streams, in one partition
//! or in several, run concurrently (at most [`STREAMS_IN_FLIGHT_MAX`] at once; see [`crate::handlers::batch`]).
//! A partition holds many transfers; running them one after another would cap a partition at one
//! transfer's round trips at a time.

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::parked::Parking;
use corebank_app::saga::{SagaOutcome, TransferSaga};
use corebank_store::ParkedConsumer;

use crate::fanout::STREAMS_IN_FLIGHT_MAX;
use crate::handlers::batch::{BatchError, BatchReport, for_each_stream};

/// The name the saga parks records under.
pub const CONSUMER: ParkedConsumer = ParkedConsumer::Saga;

/// Hands one MSK batch to the saga, parking by `parking` (the saga's); returns how many saga steps the
/// batch took (`handled`) and how many records were parked.
///
/// On `Err`, the caller must fail the invocation so that the whole batch is delivered again.
#[tracing::instrument(name = "saga_batch", skip_all, fields(partitions = event.records.len()))]
pub async fn handle_kafka_event(
    event: &KafkaEvent,
    saga: &TransferSaga,
    parking: &Parking,
) -> Result<BatchReport, BatchError> {
    for_each_stream(event, STREAMS_IN_FLIGHT_MAX, parking, |envelope| async move {
        match saga.handle(&envelope).await? {
            SagaOutcome::Settled { steps, .. } => Ok(steps),
            SagaOutcome::Ignored => Ok(0),
        }
    })
    .await
}
