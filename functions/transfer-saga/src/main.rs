//! Lambda function on the MSK event source mapping of the transfer events topic: drives each transfer
//! through hold, credit and capture (or release), and fails the invocation (so the whole batch is
//! redelivered) when any event was not handled. Wiring only; the handler is
//! `corebank_delivery::handlers::saga::handle_kafka_event`.

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_delivery::handlers::saga::handle_kafka_event;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = corebank_wiring::app_from_env().await?;
    let saga = &*app.saga;
    run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        let steps = handle_kafka_event(&event.payload, saga).await?;
        lambda_runtime::tracing::info!(steps, "batch handled");
        Ok::<(), Error>(())
    }))
    .await
}
