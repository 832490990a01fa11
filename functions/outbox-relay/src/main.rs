//! Lambda function that publishes the Postgres outbox to Kafka, run by an EventBridge schedule (its
//! input is ignored): wiring only; the relay is `corebank_delivery::handlers::relay`. Each invocation drains
//! until nothing is pending or one producer timeout (plus 2 s) before the invocation's deadline, and
//! answers the drain's JSON summary.

use std::sync::Arc;
use std::time::Duration;

use corebank_delivery::handlers::relay::{Relay, RelayConfig, deadline_before};
use corebank_messaging::aws_http::{TrustRoots, openssl_http_client};
use corebank_messaging::{KafkaConfig, KafkaPublisher};
use corebank_wiring::postgres::PgSettings;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_wiring::telemetry::init();
    // The database secret is read over the same OpenSSL HTTP client as the MSK API call below, so the
    // function carries no second HTTPS stack (docs/performance.md, "Size").
    let settings = PgSettings::from_env(false)?.with_aws_http_client(openssl_http_client(TrustRoots::System));
    let pg = corebank_wiring::postgres::connect(settings).await?;
    // MSK: brokers looked up from MSK_CLUSTER_ARN once, here, unless KAFKA_BOOTSTRAP names them.
    let kafka = KafkaConfig::from_env_resolved().await?;
    let publisher = KafkaPublisher::new(&kafka, corebank_delivery::topics::topics_from_env())?;
    let relay = Relay::new(pg.outbox(), Arc::new(publisher), RelayConfig::from_env()?);
    let margin = Duration::from_millis(kafka.message_timeout_ms) + Duration::from_secs(2);
    let relay = &relay;
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        corebank_wiring::telemetry::flushed(async move {
            let report = relay.drain(deadline_before(event.context.deadline(), margin)).await?;
            Ok::<_, Error>(serde_json::to_value(report)?)
        })
    }))
    .await
}
