//! How the runner is backed: which stores, and how events reach the projector.
//!
//! - `memory` + `embedded` (the default): no services; the in-process pipeline tails the memory
//!   store's feed.
//! - `postgres` + `embedded`: Postgres stores; the in-process pipeline tails the events table.
//! - `postgres` + `kafka`: Postgres stores; the outbox relay publishes to Kafka and a consumer hands
//!   `KafkaEvent` batches to the projection function's handler.
//! - `dynamodb` + `kafka`: DynamoDB stores; a DynamoDB Streams poller hands stream batches to the
//!   outbox-publisher handler, and a consumer hands `KafkaEvent` batches to the projection handler,
//!   emulating the two event source mappings of the AWS deployment.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_api::Deps;
use corebank_app::AppConfig;
use std::sync::Arc;

use corebank_app::parked::Parking;
use corebank_app::projector::Projector;
use corebank_delivery::emulators::kafka_consumer::{ConsumerConfig, KafkaBatchConsumer};
use corebank_delivery::handlers::projection::handle_kafka_event;
use corebank_messaging::{KafkaConfig, KafkaSetupError, Topics};
use tokio::sync::watch;

use crate::RunnerError;

pub mod dynamodb;
pub mod memory;
pub mod postgres;
pub mod saga;
pub mod sqlite;

/// Partitions of each event topic when the runner creates it (existing topics are left as they are).
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 3;

/// The store when `STORE_KIND` is not set: memory, which keeps nothing across restarts. The durable
/// `sqlite` store is one variable away; it becomes the default once it serves the original's scenario
/// at the embedded default's goals (docs/performance.md, "SQLite").
pub const DEFAULT_STORE_KIND: StoreKind = StoreKind::Memory;

/// The store behind the ports (`STORE_KIND`): the same choice the Lambda functions make.
pub use corebank_wiring::StoreKind;

/// How appended events reach the projector (`PIPELINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineKind {
    /// In process, tailing the store's feed.
    Embedded,
    /// Through Kafka at `KAFKA_BOOTSTRAP`.
    Kafka,
}

impl std::str::FromStr for PipelineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "kafka" => Ok(Self::Kafka),
            other => Err(format!("unknown pipeline {other:?} (embedded or kafka)")),
        }
    }
}

/// A background task that runs until the shutdown signal turns true.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A started mode: the handlers' dependencies and the background tasks to run beside the server.
pub struct Started {
    /// What the handlers use.
    pub deps: Deps,
    /// Pipeline tasks (pollers, relays, consumers); each ends when shutdown is signalled.
    pub tasks: Vec<Task>,
    /// One line describing the mode, for the start-up log.
    pub description: String,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started").field("description", &self.description).finish_non_exhaustive()
    }
}

/// Waits until the shutdown signal turns true.
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Starts the mode asked for.
pub async fn start(
    store: StoreKind,
    pipeline: PipelineKind,
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    match (store, pipeline) {
        (StoreKind::Sqlite, PipelineKind::Embedded) => {
            sqlite::start_from_env(config, wait_for_projection, shutdown)
        }
        (StoreKind::Memory, PipelineKind::Embedded) => {
            Ok(memory::start(config, wait_for_projection, shutdown))
        }
        (StoreKind::Dynamodb, PipelineKind::Kafka) => {
            dynamodb::start(config, wait_for_projection, shutdown).await
        }
        (StoreKind::Postgres, PipelineKind::Embedded) => {
            postgres::start_embedded_from_env(config, wait_for_projection, shutdown).await
        }
        (StoreKind::Postgres, PipelineKind::Kafka) => {
            postgres::start_kafka_from_env(config, wait_for_projection, shutdown).await
        }
        (store, pipeline) => Err(RunnerError::Mode(format!(
            "STORE_KIND={store:?} with PIPELINE={pipeline:?} is not available in this runner"
        ))),
    }
}

/// What a Kafka mode's health hears from its projection consumer.
pub(crate) trait ProjectionWatch: Send + Sync + 'static {
    /// A batch was applied.
    fn projected(&self, _event: &KafkaEvent) {}
    /// The last batch failed (`Some`), or the consumer recovered (`None`).
    fn set_projection_error(&self, error: Option<String>);
}

/// The projection consumer of a Kafka mode, as `projector`'s two MSK mappings: one group over both
/// event topics (the projector also keeps `transfer_status`). The consumer is created here, so that a
/// bad configuration fails start-up; the returned task runs it (and its replacements) until shutdown.
pub(crate) fn kafka_projection_task(
    kafka: KafkaConfig,
    topics: &Topics,
    group_id: String,
    projector: Arc<Projector>,
    parking: Parking,
    watch: Arc<dyn ProjectionWatch>,
    shutdown: watch::Receiver<bool>,
) -> Result<Task, KafkaSetupError> {
    let config = ConsumerConfig::new(group_id, topics.all().into_iter().map(str::to_owned).collect());
    let consumer = KafkaBatchConsumer::new(&kafka, config.clone())?;
    Ok(Box::pin(async move {
        let handler = |event: KafkaEvent| {
            let (projector, parking, watch) = (projector.clone(), parking.clone(), watch.clone());
            async move {
                match handle_kafka_event(&event, &projector, &parking).await {
                    Ok(report) => {
                        tracing::debug!(applied = report.handled, parked = report.parked, "batch projected");
                        watch.set_projection_error(None);
                        watch.projected(&event);
                        Ok(())
                    }
                    Err(e) => {
                        watch.set_projection_error(Some(e.to_string()));
                        Err(e)
                    }
                }
            }
        };
        let on_stop = |e: String| watch.set_projection_error(Some(e));
        consume_until_shutdown("projection", kafka, config, Some(consumer), handler, on_stop, shutdown).await;
    }))
}

/// Pause before a Kafka consumer that stopped (or could not be created) is created again.
const CONSUMER_RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Runs a batch consumer of `config` with `handler` until shutdown, as an MSK event source mapping
/// keeps polling: when the consumer stops on an error (or cannot be created), `on_stop` hears why and a
/// new consumer joins the group after a pause, resuming from the group's committed offsets. `first` is
/// a consumer already created (so that start-up can fail fast on a bad configuration).
pub(crate) async fn consume_until_shutdown<H, Fut, E>(
    role: &'static str,
    kafka: KafkaConfig,
    config: ConsumerConfig,
    first: Option<KafkaBatchConsumer>,
    handler: H,
    on_stop: impl Fn(String),
    shutdown: watch::Receiver<bool>,
) where
    H: Fn(KafkaEvent) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut first = first;
    while !*shutdown.borrow() {
        let consumer = match first.take() {
            Some(consumer) => consumer,
            None => match KafkaBatchConsumer::new(&kafka, config.clone()) {
                Ok(consumer) => consumer,
                Err(e) => {
                    tracing::error!(error = %e, role, "could not create a consumer; retrying");
                    on_stop(e.to_string());
                    tokio::time::sleep(CONSUMER_RESTART_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(e) = consumer.run(&handler, stopped(shutdown.clone())).await {
            tracing::error!(error = %e, role, "consumer stopped; starting a new one");
            on_stop(e.to_string());
            tokio::time::sleep(CONSUMER_RESTART_PAUSE).await;
        }
    }
}
