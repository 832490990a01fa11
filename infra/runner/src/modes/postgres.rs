//! Postgres modes: the stores on PostgreSQL, with either pipeline.
//!
//! - `embedded`: the in-process pipeline tails the `events` table in commit order; the event store's
//!   `LISTEN corebank_events` listener wakes it on every append (by this process or another), and
//!   `WAIT_FOR_PROJECTION` works as in memory mode.
//! - `kafka`: what AWS runs, in one process: the outbox relay publishes `outbox_events` to Kafka
//!   (woken by the same notifications), and a consumer in group `corebank-projector-accounts` hands
//!   MSK-shaped `KafkaEvent` batches to the projector. Reads converge once the consumer has applied
//!   the events; commands do not wait for it (`WAIT_FOR_PROJECTION` is ignored), use `minVersion`.
//!
//! Both apply pending migrations at start-up unless `RUN_MIGRATIONS=false`.

use std::sync::{Arc, Mutex, PoisonError};

use corebank_api::Deps;
use corebank_app::read_side::PipelineHealth;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_delivery::emulators::embedded::EmbeddedPipeline;
use corebank_delivery::groups::PROJECTOR_GROUP_ID;
use corebank_delivery::handlers::relay::{Relay, RelayConfig};
use corebank_messaging::{KafkaConfig, KafkaPublisher, Topics, ensure_topics};
use corebank_store::EventFeed;
use corebank_store::postgres::PgReadModelStore;
use corebank_wiring::postgres::{PgSettings, PgWiring};
use tokio::sync::watch;

use super::{DEFAULT_TOPIC_PARTITIONS, Started, stopped};
use crate::RunnerError;

/// What the Kafka pipeline needs besides the database.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Brokers and client settings.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: Topics,
    /// The projection's consumer group.
    pub group_id: String,
    /// Partitions of topics created at start-up.
    pub partitions: i32,
    /// The relay's settings.
    pub relay: RelayConfig,
}

impl KafkaSettings {
    /// Reads `KafkaConfig::from_env` (`KAFKA_BOOTSTRAP`, ...), `RelayConfig::from_env` (`RELAY_*`),
    /// `KAFKA_ACCOUNT_EVENTS_TOPIC` / `KAFKA_TRANSFER_EVENTS_TOPIC` (default the production names),
    /// `PROJECTOR_GROUP_ID` (default `corebank-projector-accounts`) and `KAFKA_TOPIC_PARTITIONS`
    /// (default 3).
    pub fn from_env() -> Result<Self, RunnerError> {
        let kafka = KafkaConfig::from_env().map_err(|e| RunnerError::Mode(e.to_string()))?;
        let topics = corebank_delivery::topics::topics_from_env();
        Ok(Self {
            kafka,
            topics,
            group_id: corebank_app::config::env_parse("PROJECTOR_GROUP_ID", PROJECTOR_GROUP_ID.to_owned())?,
            partitions: corebank_app::config::env_parse("KAFKA_TOPIC_PARTITIONS", DEFAULT_TOPIC_PARTITIONS)?,
            relay: RelayConfig::from_env()?,
        })
    }
}

fn mode_error(what: &str) -> impl FnOnce(String) -> RunnerError + '_ {
    move |e| RunnerError::Mode(format!("{what}: {e}"))
}

/// Connects (migrating unless told not to) and starts the feed listener.
async fn connect(settings: PgSettings) -> Result<PgWiring, RunnerError> {
    let pg = corebank_wiring::postgres::connect(settings)
        .await
        .map_err(|e| mode_error("postgres")(e.to_string()))?;
    pg.spawn_listener().map_err(|e| mode_error("postgres")(e.to_string()))?;
    // Fails fast on an unreachable database, and starts the head where the table is.
    pg.stores.events.refresh_head().await.map_err(|e| mode_error("postgres")(e.to_string()))?;
    Ok(pg)
}

/// `STORE_KIND=postgres PIPELINE=embedded` from the environment (`RUN_MIGRATIONS` defaults to true).
pub async fn start_embedded_from_env(
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    let settings = PgSettings::from_env(true).map_err(|e| mode_error("postgres")(e.to_string()))?;
    start_embedded(settings, config, wait_for_projection, shutdown).await
}

/// Postgres stores; the embedded pipeline tails the events table, woken by `NOTIFY`.
pub async fn start_embedded(
    settings: PgSettings,
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    let mut pg = connect(settings).await?;
    // A projection write need not wait for its WAL flush (see `with_async_commit`): the pipeline's lanes
    // save their cursors with synchronous commits, which flush every earlier write first, so after a
    // server crash a lane resumes at or before the first write that was lost and writes it again.
    pg.stores.read_model = Arc::new(PgReadModelStore::new(pg.pool.clone()).with_async_commit(true));
    let app = App::new(config, pg.stores.stores(), corebank_api::renderer(), Arc::new(SystemClock));
    let feed: Arc<dyn EventFeed> = pg.stores.events.clone();
    let pipeline =
        EmbeddedPipeline::with_saga_concurrent_projection(feed, app.projector.clone(), app.saga.clone());
    pipeline.park_with(
        app.parking(corebank_delivery::handlers::projection::CONSUMER),
        app.parking(corebank_delivery::handlers::saga::CONSUMER),
    );
    let mut deps = Deps::new(app);
    deps.pipeline = Some(pipeline.clone());
    if wait_for_projection {
        deps.barrier = Some(pipeline.clone());
    }
    Ok(Started {
        deps,
        tasks: vec![Box::pin(pipeline.run(stopped(shutdown)))],
        description: "store: postgres, pipeline: embedded (LISTEN/NOTIFY)".to_owned(),
    })
}

/// `STORE_KIND=postgres PIPELINE=kafka` from the environment (`RUN_MIGRATIONS` defaults to true).
pub async fn start_kafka_from_env(
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    let settings = PgSettings::from_env(true).map_err(|e| mode_error("postgres")(e.to_string()))?;
    start_kafka(settings, KafkaSettings::from_env()?, config, wait_for_projection, shutdown).await
}

/// Postgres stores; relay -> Kafka -> batch consumer -> projector.
pub async fn start_kafka(
    settings: PgSettings,
    kafka: KafkaSettings,
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    if wait_for_projection {
        tracing::info!("PIPELINE=kafka: commands answer without waiting for the projection; use minVersion");
    }
    let pg = connect(settings).await?;
    ensure_topics(&kafka.kafka, &kafka.topics.all(), kafka.partitions)
        .await
        .map_err(|e| mode_error("kafka topics")(e.to_string()))?;
    let publisher = KafkaPublisher::new(&kafka.kafka, kafka.topics.clone())
        .map_err(|e| mode_error("kafka producer")(e.to_string()))?;
    let relay = Arc::new(
        Relay::new(pg.outbox(), Arc::new(publisher), kafka.relay.clone())
            .with_wakeup(pg.stores.events.head()),
    );

    let app = App::new(config, pg.stores.stores(), corebank_api::renderer(), Arc::new(SystemClock));
    let health = Arc::new(KafkaPipelineHealth { relay: relay.clone(), projection_error: Mutex::new(None) });
    let mut deps = Deps::new(app.clone());
    deps.pipeline = Some(health.clone());

    let consume = super::kafka_projection_task(
        kafka.kafka.clone(),
        &kafka.topics,
        kafka.group_id.clone(),
        app.projector.clone(),
        app.parking(corebank_delivery::handlers::projection::CONSUMER),
        health.clone(),
        shutdown.clone(),
    )
    .map_err(|e| mode_error("kafka consumer")(e.to_string()))?;
    let saga = super::saga::kafka_saga_task(
        kafka.kafka.clone(),
        kafka.topics.transfer_events.clone(),
        super::saga::group_id_from_env(),
        app.saga.clone(),
        app.parking(corebank_delivery::handlers::saga::CONSUMER),
        shutdown.clone(),
    );
    Ok(Started {
        deps,
        tasks: vec![Box::pin(relay.run(stopped(shutdown))), consume, saga],
        description: format!(
            "store: postgres, pipeline: kafka (relay -> {} -> group {})",
            kafka.topics.account_events, kafka.group_id
        ),
    })
}

/// Health of the Kafka pipeline: the relay's backlog and errors (including dead letters), and the
/// projection consumer's last failure.
struct KafkaPipelineHealth {
    relay: Arc<Relay>,
    projection_error: Mutex<Option<String>>,
}

impl super::ProjectionWatch for KafkaPipelineHealth {
    fn set_projection_error(&self, error: Option<String>) {
        *self.projection_error.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }
}

impl PipelineHealth for KafkaPipelineHealth {
    fn lag(&self) -> u64 {
        self.relay.lag()
    }

    fn last_error(&self) -> Option<String> {
        self.relay
            .last_error()
            .or_else(|| self.projection_error.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
}
