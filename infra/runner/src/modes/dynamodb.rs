//! `STORE_KIND=dynamodb PIPELINE=kafka`: the AWS deployment's data path, on one machine.
//!
//! - Stores: the DynamoDB adapters over the SDK client of the environment (`AWS_ENDPOINT_URL` points it
//!   at a local DynamoDB-API server such as moto). With `CREATE_TABLES=true` (the default here) the
//!   `TABLE_PREFIX` table set is created when missing.
//! - Outbox: a [`DynamoStreamPoller`] reads the `events` table's stream and hands each batch, as the
//!   exact `aws_lambda_events` DynamoDB event, to the `outbox-publisher` handler
//!   ([`handle_stream_event`]) with a [`KafkaPublisher`]; failed records are retried from the first
//!   one, as the DynamoDB event source mapping does.
//! - Projection: a [`KafkaBatchConsumer`] (group `corebank-projector-accounts`) hands `KafkaEvent`
//!   batches to the `projector` handler ([`handle_kafka_event`]); a failed batch is
//!   redelivered, as the MSK event source mapping does.
//!
//! There is no projection barrier: a command answers once its events are stored, and a read that must
//! see them passes `minVersion` (answered from the event store while the projection is behind).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_api::Deps;
use corebank_app::read_side::PipelineHealth;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_delivery::emulators::stream_poller::{
    DynamoStreamPoller, StreamPollerConfig, aws_sdk_dynamodbstreams,
};
use corebank_delivery::groups::PROJECTOR_GROUP_ID;
use corebank_delivery::handlers::batch::envelopes_from_kafka_event;
use corebank_delivery::handlers::outbox::{envelope_from_record, handle_stream_event};
use corebank_delivery::topics::topics_from_lookup;
use corebank_domain::StreamKind;
use corebank_messaging::{EventPublisher, KafkaConfig, KafkaPublisher, Topics, ensure_topics};
use corebank_store::dynamodb::{DynamoTables, create_tables};
use tokio::sync::watch;

use super::{DEFAULT_TOPIC_PARTITIONS, Started, Task, stopped};
use crate::RunnerError;

/// Everything this mode reads from the environment, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The prefix `CREATE_TABLES` creates the table set under (`TABLE_PREFIX`).
    pub table_prefix: String,
    /// The table names (the prefix, or one variable per table).
    pub tables: DynamoTables,
    /// Create the `table_prefix` table set when missing (`CREATE_TABLES`, default `true`).
    pub create_tables: bool,
    /// Brokers and client settings (`KAFKA_*`).
    pub kafka: KafkaConfig,
    /// The event topics (`KAFKA_ACCOUNT_EVENTS_TOPIC`, `KAFKA_TRANSFER_EVENTS_TOPIC`).
    pub topics: Topics,
    /// Partitions of a topic the runner creates (`KAFKA_TOPIC_PARTITIONS`, default 3).
    pub topic_partitions: i32,
    /// The projection's consumer group (`PROJECTOR_GROUP_ID`, default `corebank-projector-accounts`).
    pub group_id: String,
    /// How the stream is polled (`STREAM_BATCH_SIZE`, `STREAM_IDLE_POLL_MS`).
    pub poller: StreamPollerConfig,
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, RunnerError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|e: T::Err| {
            RunnerError::Config(corebank_app::ConfigError { name: name.to_owned(), reason: e.to_string() })
        }),
    }
}

impl Settings {
    /// Reads the settings through `lookup` (a variable name to its value); blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RunnerError> {
        let table_prefix =
            parse(&lookup, "TABLE_PREFIX", corebank_wiring::dynamodb::DEFAULT_TABLE_PREFIX.to_owned())?;
        let tables = corebank_wiring::dynamodb::tables_from_lookup(&lookup);
        let kafka = KafkaConfig::from_lookup(&lookup).map_err(|e| RunnerError::Mode(e.to_string()))?;
        let mut poller = StreamPollerConfig::new(tables.events.clone());
        poller.batch_size = parse(&lookup, "STREAM_BATCH_SIZE", poller.batch_size)?;
        poller.idle_poll_ms = parse(&lookup, "STREAM_IDLE_POLL_MS", poller.idle_poll_ms)?;
        Ok(Self {
            table_prefix,
            create_tables: parse(&lookup, "CREATE_TABLES", true)?,
            topics: topics_from_lookup(&lookup),
            topic_partitions: parse(&lookup, "KAFKA_TOPIC_PARTITIONS", DEFAULT_TOPIC_PARTITIONS)?,
            group_id: parse(&lookup, "PROJECTOR_GROUP_ID", PROJECTOR_GROUP_ID.to_owned())?,
            kafka,
            tables,
            poller,
        })
    }

    /// Reads the process environment (see [`Settings::from_lookup`]).
    pub fn from_env() -> Result<Self, RunnerError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// Starts the mode from the environment.
pub async fn start(
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    if wait_for_projection {
        tracing::info!(
            "WAIT_FOR_PROJECTION has no effect with PIPELINE=kafka: reads that must see a write pass minVersion"
        );
    }
    start_with(config, Settings::from_env()?, None, shutdown).await
}

fn setup_failed(what: &str, err: impl std::fmt::Display) -> RunnerError {
    RunnerError::Mode(format!("{what}: {err}"))
}

/// Starts the mode with explicit settings. `publisher` replaces the [`KafkaPublisher`] the outbox would
/// use (tests wrap the real one to inject broker outages).
pub async fn start_with(
    config: AppConfig,
    settings: Settings,
    publisher: Option<Arc<dyn EventPublisher>>,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    let sdk = corebank_wiring::dynamodb::sdk_config_from_env().await;
    let client = corebank_wiring::dynamodb::client(&sdk);
    if settings.create_tables {
        create_tables(&client, &settings.table_prefix)
            .await
            .map_err(|e| setup_failed("creating the tables", e))?;
    }
    ensure_topics(&settings.kafka, &settings.topics.all(), settings.topic_partitions)
        .await
        .map_err(|e| setup_failed("creating the Kafka topics", e))?;

    let stores = corebank_store::dynamodb::stores(client, settings.tables.clone());
    let app = App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock));
    let publisher: Arc<dyn EventPublisher> = match publisher {
        Some(publisher) => publisher,
        None => Arc::new(
            KafkaPublisher::new(&settings.kafka, settings.topics.clone())
                .map_err(|e| setup_failed("creating the Kafka producer", e))?,
        ),
    };
    let poller = Arc::new(DynamoStreamPoller::new(
        aws_sdk_dynamodbstreams::Client::new(&sdk),
        settings.poller.clone(),
    ));
    let health = Arc::new(Health::new(poller.clone()));

    let outbox: Task = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        Box::pin(async move {
            let handler = |event: Event| {
                let publisher = publisher.clone();
                let health = health.clone();
                async move {
                    health.seen(&event);
                    handle_stream_event(event, &*publisher).await
                }
            };
            poller.run(handler, stopped(shutdown)).await;
        })
    };
    // The transfer-saga function's event source mapping, on the transfer events topic.
    let saga = super::saga::kafka_saga_task(
        settings.kafka.clone(),
        settings.topics.transfer_events.clone(),
        super::saga::group_id_from_env(),
        app.saga.clone(),
        app.parking(corebank_delivery::handlers::saga::CONSUMER),
        shutdown.clone(),
    );
    let projection = super::kafka_projection_task(
        settings.kafka.clone(),
        &settings.topics,
        settings.group_id.clone(),
        app.projector.clone(),
        app.parking(corebank_delivery::handlers::projection::CONSUMER),
        health.clone(),
        shutdown.clone(),
    )
    .map_err(|e| setup_failed("creating the Kafka consumer", e))?;

    let description = format!(
        "store: dynamodb (events table {}), pipeline: stream poller -> outbox-publisher -> Kafka {} -> projector (group {})",
        settings.tables.events, settings.kafka.brokers, settings.group_id
    );
    let mut deps = Deps::new(app);
    deps.pipeline = Some(health);
    Ok(Started { deps, tasks: vec![outbox, projection, saga], description })
}

/// What `GET /health` reports for this mode.
///
/// Lag is counted per account stream: the highest version read from the table's stream minus the
/// highest version the projector has taken, summed over streams. It covers events waiting in the stream
/// (broker down) and events waiting in Kafka (projector behind). Memory grows with the number of
/// account streams this process has seen, which suits a local runner.
struct Health {
    poller: Arc<DynamoStreamPoller>,
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    /// Per account stream: (highest version read from the stream, highest version projected).
    versions: HashMap<String, (u64, u64)>,
    projection_error: Option<String>,
}

impl Health {
    fn new(poller: Arc<DynamoStreamPoller>) -> Self {
        Self { poller, state: Mutex::new(HealthState::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self, event: &Event) {
        let mut state = self.state();
        for record in &event.records {
            if let Ok(Some(envelope)) = envelope_from_record(record)
                && StreamKind::of(&envelope.stream_id) == Some(StreamKind::Account)
            {
                let entry = state.versions.entry(envelope.stream_id).or_default();
                entry.0 = entry.0.max(envelope.version);
            }
        }
    }
}

impl super::ProjectionWatch for Health {
    fn projected(&self, event: &KafkaEvent) {
        let mut state = self.state();
        for envelope in envelopes_from_kafka_event(event).into_iter().flatten() {
            if StreamKind::of(&envelope.stream_id) == Some(StreamKind::Account) {
                let entry = state.versions.entry(envelope.stream_id).or_default();
                entry.1 = entry.1.max(envelope.version);
            }
        }
    }

    fn set_projection_error(&self, error: Option<String>) {
        self.state().projection_error = error;
    }
}

impl PipelineHealth for Health {
    fn lag(&self) -> u64 {
        self.state().versions.values().map(|(seen, projected)| seen.saturating_sub(*projected)).sum()
    }

    fn last_error(&self) -> Option<String> {
        self.poller.last_error().or_else(|| self.state().projection_error.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn settings_need_only_the_brokers_and_default_to_the_deployment_names() {
        let settings = Settings::from_lookup(lookup(&[("KAFKA_BOOTSTRAP", "127.0.0.1:9092")])).unwrap();
        assert_eq!(settings.table_prefix, "corebank-");
        assert_eq!(settings.tables, DynamoTables::with_prefix("corebank-"));
        assert!(settings.create_tables);
        assert_eq!(settings.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(settings.topics, Topics::default());
        assert_eq!(settings.topic_partitions, 3);
        assert_eq!(settings.group_id, "corebank-projector-accounts");
        assert_eq!(settings.poller.table_name, "corebank-events");
        assert_eq!(settings.poller.idle_poll_ms, 50);
        assert_eq!(settings.poller.batch_size, 100);
    }

    #[test]
    fn settings_follow_the_environment() {
        let settings = Settings::from_lookup(lookup(&[
            ("KAFKA_BOOTSTRAP", "b:9092"),
            ("TABLE_PREFIX", "dev_"),
            ("EVENTS_TABLE", "ledger"),
            ("CREATE_TABLES", "false"),
            ("KAFKA_ACCOUNT_EVENTS_TOPIC", "acc"),
            ("KAFKA_TOPIC_PARTITIONS", "12"),
            ("PROJECTOR_GROUP_ID", "g"),
            ("STREAM_BATCH_SIZE", "10"),
            ("STREAM_IDLE_POLL_MS", "5"),
        ]))
        .unwrap();
        assert_eq!(settings.table_prefix, "dev_");
        assert_eq!(settings.tables.events, "ledger");
        assert_eq!(settings.tables.snapshots, "dev_snapshots");
        assert_eq!(settings.poller.table_name, "ledger", "the poller reads the events table's stream");
        assert!(!settings.create_tables);
        assert_eq!(settings.topics.account_events, "acc");
        assert_eq!(settings.topic_partitions, 12);
        assert_eq!(settings.group_id, "g");
        assert_eq!((settings.poller.batch_size, settings.poller.idle_poll_ms), (10, 5));
    }

    #[test]
    fn missing_brokers_and_unparsable_numbers_are_refused_naming_the_variable() {
        let missing = Settings::from_lookup(lookup(&[])).unwrap_err();
        assert!(missing.to_string().contains("KAFKA_BOOTSTRAP"), "{missing}");
        let bad = Settings::from_lookup(lookup(&[("KAFKA_BOOTSTRAP", "b:9092"), ("CREATE_TABLES", "yes")]))
            .unwrap_err();
        assert!(bad.to_string().contains("CREATE_TABLES"), "{bad}");
    }
}
