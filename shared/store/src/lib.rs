//! Persistence ports of the core bank and their adapters.
//!
//! The ports are narrow traits named for what they do ([`EventStore`], [`IdempotencyStore`],
//! [`SnapshotStore`], [`ReadModelStore`], [`TransferStatusStore`], [`RebuildJobStore`],
//! [`ParkedRecordStore`]). Every adapter
//! passes the same contract suite (`tests/contract`), so the application cannot tell them apart except
//! by speed.
//!
//! The one rule every adapter keeps: [`EventStore::append`] writes the events and their guard records
//! (idempotency completion, transaction record) atomically, or writes nothing.
#![warn(missing_docs)]

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod error;
pub mod memory;
pub mod model;
pub mod ports;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;

pub use error::StoreError;
pub use model::*;
pub use ports::*;

/// Every port an application process needs, shared behind `Arc<dyn ..>`.
#[derive(Clone)]
pub struct Stores {
    /// Streams of events with their guard records.
    pub events: Arc<dyn EventStore>,
    /// Idempotency-Key claims and completed responses.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Aggregate snapshots.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Account read tables and their checkpoints.
    pub read_model: Arc<dyn ReadModelStore>,
    /// The transfer status read table.
    pub transfers: Arc<dyn TransferStatusStore>,
    /// Records the MSK consumers parked.
    pub parked: Arc<dyn ParkedRecordStore>,
    /// Progress of rebuild-all jobs. Kept the last field: tests wrap it to clean up after the others.
    pub rebuilds: Arc<dyn RebuildJobStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}
