//! The transfer saga in the runner's Kafka modes: a batch consumer on the transfer events topic, handing
//! each `KafkaEvent` to the `transfer-saga` handler (`corebank_delivery::handlers::saga::handle_kafka_event`), as
//! the MSK event source mapping of that function does. A failed batch is redelivered (the consumer does
//! not commit it), and a consumer that stops on a fatal error is built again after a pause.

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::parked::Parking;
use corebank_app::saga::TransferSaga;
use corebank_delivery::emulators::kafka_consumer::ConsumerConfig;
use corebank_delivery::handlers::saga::handle_kafka_event;
use corebank_messaging::KafkaConfig;
use tokio::sync::watch;

use super::{Task, consume_until_shutdown};

/// The saga's consumer group: `SAGA_GROUP_ID`, else `corebank-transfer-saga` (see
/// [`corebank_delivery::groups`]).
pub fn group_id_from_env() -> String {
    corebank_delivery::groups::groups_from_lookup(|name| std::env::var(name).ok()).saga
}

/// A task that runs the saga on `topic` (the transfer events topic) in consumer group `group_id` until
/// shutdown.
pub fn kafka_saga_task(
    kafka: KafkaConfig,
    topic: String,
    group_id: String,
    saga: Arc<TransferSaga>,
    parking: Parking,
    shutdown: watch::Receiver<bool>,
) -> Task {
    Box::pin(async move {
        let handler = |event: KafkaEvent| {
            let (saga, parking) = (saga.clone(), parking.clone());
            async move {
                let report = handle_kafka_event(&event, &saga, &parking).await?;
                tracing::debug!(steps = report.handled, parked = report.parked, "saga batch handled");
                Ok::<(), corebank_delivery::handlers::batch::BatchError>(())
            }
        };
        let config = ConsumerConfig::new(group_id, vec![topic]);
        consume_until_shutdown("saga", kafka, config, None, handler, |_| {}, shutdown).await;
    })
}
