//! The transfer saga in the runner's Kafka modes: a batch consumer on the transfer events topic, handing
//! each `KafkaEvent` to the `transfer-saga` handler (`corebank_pipeline::saga::handle_kafka_event`), as
//! the MSK event source mapping of that function does. A failed batch is redelivered (the consumer does
//! not commit it), and a consumer that stops on a fatal error is built again after a pause.

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::saga::TransferSaga;
use corebank_messaging::{ConsumerConfig, KafkaConfig};
use corebank_pipeline::saga::handle_kafka_event;
use tokio::sync::watch;

use super::{Task, consume_until_shutdown};

/// The consumer group of the saga, as the MSK event source mapping of `transfer-saga`.
pub const DEFAULT_SAGA_GROUP_ID: &str = "corebank-transfer-saga";

/// The saga's consumer group: `SAGA_GROUP_ID`, else [`DEFAULT_SAGA_GROUP_ID`].
pub fn group_id_from_env() -> String {
    std::env::var("SAGA_GROUP_ID")
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_SAGA_GROUP_ID.to_owned())
}

/// A task that runs the saga on `topic` (the transfer events topic) in consumer group `group_id` until
/// shutdown.
pub fn kafka_saga_task(
    kafka: KafkaConfig,
    topic: String,
    group_id: String,
    saga: Arc<TransferSaga>,
    shutdown: watch::Receiver<bool>,
) -> Task {
    Box::pin(async move {
        let handler = |event: KafkaEvent| {
            let saga = saga.clone();
            async move {
                let steps = handle_kafka_event(&event, &saga).await?;
                tracing::debug!(steps, "saga batch handled");
                Ok::<(), corebank_pipeline::saga::SagaBatchError>(())
            }
        };
        let config = ConsumerConfig::new(group_id, vec![topic]);
        consume_until_shutdown("saga", kafka, config, None, handler, |_| {}, shutdown).await;
    })
}
