//! Lambda function that re-drives transfers left `PENDING`, on an EventBridge schedule: wiring only;
//! the use case is `Reconciler::pass`, with its figures recorded (`App::reconcile`).

use corebank_app::reconcile::ReconcileSettings;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_wiring::telemetry::init();
    let app = corebank_wiring::app_from_env().await?;
    let settings = ReconcileSettings::from_env()?;
    let (app, settings) = (&app, &settings);
    run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        corebank_wiring::telemetry::flushed(async move {
            let report = app.reconcile(settings).await.map_err(Error::from)?;
            serde_json::to_value(report).map_err(Error::from)
        })
    }))
    .await
}
