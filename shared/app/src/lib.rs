//! Use cases of the core bank, written once over the store ports.
//!
//! - [`engine::Engine`]: load (cache, snapshot + tail), decide, append with guards, retry on version
//!   conflicts, snapshot off the critical path; the idempotency and transaction-id contract; written
//!   once over any [`Aggregate`](corebank_domain::Aggregate).
//! - [`command::CommandService`]: account commands on the engine; [`transfers::TransferService`]:
//!   transfer requests and recorded steps on the engine.
//! - [`saga::TransferSaga`]: the transfer process manager (hold, credit, capture, or release).
//! - [`projector::Projector`]: applies events to the read tables (accounts and transfer status) once
//!   and in order, repairing gaps from the event store.
//! - [`rebuild::Rebuilder`]: rebuilds read tables from the event store, one stream or all.
//! - [`queries::Queries`]: reads, with `minVersion` read-your-writes.
//! - [`reconcile::Reconciler`]: re-drives transfers left `PENDING` beyond a bound.
//! - [`parked`]: what the MSK consumers park instead of stalling a partition, and its retry.
//! - [`telemetry`]: the metrics the code records, by name.
//! - [`read_side`]: what the API asks of event delivery (lag, errors, waiting for the projection);
//!   delivery itself is `corebank-delivery`.
#![warn(missing_docs)]

pub mod command;
pub mod config;
pub mod engine;
pub mod error;
pub mod fingerprint;
pub mod parked;
pub mod projection;
pub mod projector;
pub mod queries;
pub mod read_side;
pub mod rebuild;
pub mod reconcile;
pub mod saga;
pub mod telemetry;
pub mod transfer_projection;
pub mod transfers;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use corebank_store::Stores;

pub use config::{AppConfig, ConfigError};
pub use error::AppError;

/// A source of time, so tests and simulations can control it.
pub trait Clock: Send + Sync {
    /// The current time, truncated to milliseconds (what events store).
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}

/// Everything a request handler needs, built once per process.
#[derive(Clone)]
pub struct App {
    /// Settings.
    pub config: Arc<AppConfig>,
    /// The stores.
    pub stores: Stores,
    /// Account command use cases.
    pub commands: Arc<command::CommandService>,
    /// Transfer requests and recorded steps.
    pub transfers: Arc<transfers::TransferService>,
    /// The transfer process manager.
    pub saga: Arc<saga::TransferSaga>,
    /// Read use cases.
    pub queries: Arc<queries::Queries>,
    /// Applies events to read tables.
    pub projector: Arc<projector::Projector>,
    /// Rebuilds read tables.
    pub rebuilder: Arc<rebuild::Rebuilder>,
    /// Re-drives transfers left pending.
    pub reconciler: Arc<reconcile::Reconciler>,
    /// Lists, counts and retries parked records.
    pub parked: Arc<parked::ParkedRecords>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("config", &self.config).finish_non_exhaustive()
    }
}

impl App {
    /// One reconciler pass, then the figures an operator alarms on: what the pass found and did,
    /// and the records parked now (see [`telemetry::record_reconcile`]). Failing to count the parked
    /// records is logged and leaves their figures as they were.
    pub async fn reconcile(
        &self,
        settings: &reconcile::ReconcileSettings,
    ) -> Result<reconcile::ReconcileReport, AppError> {
        let report = self.reconciler.pass(settings).await?;
        let parked = match self.parked.stats().await {
            Ok(stats) => Some(stats),
            Err(e) => {
                tracing::warn!(error = %e, "parked records not counted");
                None
            }
        };
        telemetry::record_reconcile(&report, parked.as_ref(), self.clock.now());
        Ok(report)
    }

    /// How `consumer` parks records in this app's store, by its clock.
    pub fn parking(&self, consumer: corebank_store::ParkedConsumer) -> parked::Parking {
        parked::Parking::new(self.stores.parked.clone(), consumer, self.clock.clone())
    }

    /// Wires the use cases over a set of stores.
    pub fn new(
        config: AppConfig,
        stores: Stores,
        renderer: Arc<dyn command::ResponseRenderer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let config = Arc::new(config);
        let projector = Arc::new(
            projector::Projector::new(stores.events.clone(), stores.read_model.clone())
                .with_transfers(stores.transfers.clone()),
        );
        let (account_engine, transfer_engine) = (
            engine::Engine::new(config.clone(), stores.clone(), clock.clone()),
            engine::Engine::new(config.clone(), stores.clone(), clock.clone()),
        );
        let commands = Arc::new(command::CommandService::new(account_engine, renderer.clone()));
        let transfers = Arc::new(transfers::TransferService::new(transfer_engine, renderer));
        let saga = Arc::new(saga::TransferSaga::new(commands.clone(), transfers.clone()));
        let parked =
            Arc::new(parked::ParkedRecords::new(stores.parked.clone(), projector.clone(), saga.clone()));
        Self {
            parked,
            reconciler: Arc::new(reconcile::Reconciler::new(
                stores.transfers.clone(),
                saga.clone(),
                reconcile::ReadSide {
                    events: stores.events.clone(),
                    read_model: stores.read_model.clone(),
                    projector: projector.clone(),
                },
                clock.clone(),
            )),
            saga,
            commands,
            transfers,
            queries: Arc::new(queries::Queries::new(stores.clone())),
            rebuilder: Arc::new(rebuild::Rebuilder::new(stores.clone(), clock.clone())),
            projector,
            stores,
            config,
            clock,
        }
    }
}
