//! Lambda function that rebuilds read tables, triggered by an EventBridge rule or a direct invoke:
//! wiring only; the use case is `Rebuilder::handle_event`.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_wiring::telemetry::init();
    let app = corebank_wiring::app_from_env().await?;
    let rebuilder = &app.rebuilder;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        corebank_wiring::telemetry::flushed(async move {
            rebuilder.handle_event(&event.payload).await.map_err(Error::from)
        })
    }))
    .await
}
