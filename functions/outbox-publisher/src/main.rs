//! Lambda function on the `events` table's DynamoDB stream: publishes inserted events to Kafka and
//! reports the records not acknowledged as partial batch failures. Wiring only; the handler is
//! `corebank_delivery::handlers::outbox::handle_stream_event`.

use aws_lambda_events::event::dynamodb::Event;
use corebank_delivery::handlers::outbox::handle_stream_event;
use corebank_delivery::topics::topics_from_env;
use corebank_messaging::{KafkaConfig, KafkaPublisher};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_emf::init();
    // MSK: brokers looked up from MSK_CLUSTER_ARN once, here, unless KAFKA_BOOTSTRAP names them.
    let kafka = KafkaConfig::from_env_resolved().await?;
    let publisher = KafkaPublisher::new(&kafka, topics_from_env())?;
    let publisher = &publisher;
    run(service_fn(move |event: LambdaEvent<Event>| {
        corebank_emf::flushed(
            async move { Ok::<_, Error>(handle_stream_event(event.payload, publisher).await) },
        )
    }))
    .await
}
