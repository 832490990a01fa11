//! Lambda function on two MSK event source mappings, the account and the transfer events topics:
//! applies each batch to the account read tables and `transfer_status`, parks what fails permanently,
//! and fails the invocation (so the whole batch is redelivered) when an event was not applied for a
//! transient reason. Wiring only; the handler is `corebank_delivery::handlers::projection::handle_kafka_event`.

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_delivery::handlers::projection::{CONSUMER, handle_kafka_event};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_wiring::telemetry::init();
    let app = corebank_wiring::app_from_env().await?;
    let projector = &*app.projector;
    let parking = &app.parking(CONSUMER);
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| {
        corebank_wiring::telemetry::flushed(async move {
            let report = handle_kafka_event(&event.payload, projector, parking).await?;
            lambda_runtime::tracing::info!(
                applied = report.handled,
                parked = report.parked,
                "batch projected"
            );
            Ok::<(), Error>(())
        })
    }))
    .await
}
