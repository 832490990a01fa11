//! Lambda function on the MSK event source mapping of the transfer events topic: drives each transfer
//! through hold, credit and capture (or release), parks what fails permanently, and fails the
//! invocation (so the whole batch is redelivered) when an event was not handled for a transient reason. Wiring only; the handler is
//! `corebank_delivery::handlers::saga::handle_kafka_event`.

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_delivery::handlers::saga::{CONSUMER, handle_kafka_event};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_wiring::telemetry::init();
    let app = corebank_wiring::app_from_env().await?;
    let saga = &*app.saga;
    let parking = &app.parking(CONSUMER);
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| {
        corebank_wiring::telemetry::flushed(async move {
            let report = handle_kafka_event(&event.payload, saga, parking).await?;
            lambda_runtime::tracing::info!(steps = report.handled, parked = report.parked, "batch handled");
            Ok::<(), Error>(())
        })
    }))
    .await
}
