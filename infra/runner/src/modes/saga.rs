//! The transfer saga in the runner's Kafka modes: a batch consumer on the transfer events topic, handing
//! each `KafkaEvent` to the `transfer-saga` handler (`corebank_pipeline::saga::handle_kafka_event`), as
//! the MSK event source mapping of that function does. A failed batch is redelivered (the consumer does
//! not commit it), and a consumer that stops on a fatal error is built again after a pause.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::saga::TransferSaga;
use corebank_messaging::{ConsumerConfig, KafkaBatchConsumer, KafkaConfig};
use corebank_pipeline::saga::handle_kafka_event;
use tokio::sync::watch;

use super::{Task, stopped};

/// The consumer group of the saga, as the MSK event source mapping of `transfer-saga`.
pub const DEFAULT_SAGA_GROUP_ID: &str = "corebank-transfer-saga";

/// Pause before a consumer that stopped on a fatal error is created again.
const CONSUMER_RESTART_PAUSE: Duration = Duration::from_secs(1);

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
        let config = ConsumerConfig::new(group_id, vec![topic]);
        while !*shutdown.borrow() {
            let consumer = match KafkaBatchConsumer::new(&kafka, config.clone()) {
                Ok(consumer) => consumer,
                Err(e) => {
                    tracing::error!(error = %e, "could not create the saga consumer; retrying");
                    tokio::time::sleep(CONSUMER_RESTART_PAUSE).await;
                    continue;
                }
            };
            let handler = |event: KafkaEvent| {
                let saga = saga.clone();
                async move {
                    let steps = handle_kafka_event(&event, &saga).await?;
                    tracing::debug!(steps, "saga batch handled");
                    Ok::<(), corebank_pipeline::saga::SagaBatchError>(())
                }
            };
            if let Err(e) = consumer.run(handler, stopped(shutdown.clone())).await {
                tracing::error!(error = %e, "saga consumer stopped; starting a new one");
                tokio::time::sleep(CONSUMER_RESTART_PAUSE).await;
            }
        }
    })
}
