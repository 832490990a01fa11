//! Postgres (RDS) adapters for every port, and the versioned migrations they need.
//!
//! The adapters take a ready [`deadpool_postgres::Pool`]. [`pool`] builds one whose connections a
//! [`PgConnector`] opens: TLS after libpq's `sslmode` / `sslrootcert` (OpenSSL), credentials that are
//! read again when the server refuses them (a rotated secret), and the session bounds of
//! [`SessionTimeouts`] (see the `connect` module's docs). The values come from the caller: this module
//! never reads the environment. Build the schema first with [`migrate`].
//!
//! # How an append stays atomic
//!
//! [`PgEventStore`] writes one append as one `READ COMMITTED` transaction:
//!
//! 1. the `streams` row moves from `expected_version` to the new version with a conditional
//!    `INSERT .. ON CONFLICT DO NOTHING` (new stream) or `UPDATE .. WHERE version = expected`; no row
//!    means another writer got there first, behind or ahead, so the answer is `VersionConflict`. The row
//!    lock also queues concurrent writers of one stream instead of letting them race to a unique
//!    violation (which is still mapped to `VersionConflict`, as a backstop);
//! 2. the transaction record is inserted with `ON CONFLICT DO NOTHING` (no row: `TransactionExists`);
//! 3. the idempotency completion is a conditional upsert that succeeds only while the key is absent or
//!    in progress under the writer's claim token, exactly as the memory adapter judges it
//!    (no row: `IdempotencyClaimLost`);
//! 4. one statement inserts every event (`UNNEST` of arrays), their `outbox_events` rows and a
//!    `NOTIFY`.
//!
//! Any failure rolls the whole transaction back, so nothing is written.
//!
//! # Feed order without a global lock
//!
//! Appends to different streams share nothing but the `events` identity, so they run and commit side
//! by side and Postgres flushes their commits together. Positions are handed out in statement order,
//! which is not commit order: position 7 may be visible while 6 is still being written. [`EventFeed`]
//! readers still never skip an event: a page stops at the first missing position, and a reader passes
//! a missing position only once every transaction that was running when it first found it missing has
//! ended (the snapshot's `xmin` against the `xmax` it first saw). A position whose append committed is
//! then visible; one that is still missing was rolled back and never fills. A stream's own events stay
//! in version order, since its row lock queues its writers.
//!
//! # Feed head
//!
//! [`EventFeed::head`] moves after each append this process commits. Appends by other processes reach
//! it through `LISTEN corebank_events` once [`PgEventStore::spawn_listener`] runs: each append
//! transaction sends `NOTIFY corebank_events, '<last position>'`, which Postgres delivers on commit. The
//! listener reconnects with backoff and re-reads `max(position)` after every (re)connect, so a missed
//! notification only delays the head until then. Without a listener the head reflects local appends and
//! [`PgEventStore::refresh_head`] only. The head can stand above a position that is not readable yet
//! (an append still committing below it), so a reader that gets an empty page below the head reads
//! again shortly instead of waiting for the head to move.
//!
//! # Outbox
//!
//! [`PgOutbox`] is the relay's side of `outbox_events`: claims with `FOR UPDATE SKIP LOCKED` and a
//! lease, per-stream order, backoff, dead letters and retention (see its module docs).
//!
//! [`EventFeed`]: crate::EventFeed
//! [`EventFeed::head`]: crate::EventFeed::head

mod connect;
mod events;
mod migrate;
mod outbox;
mod parked;
mod read;
mod tls;
mod transfers;

use std::sync::Arc;

pub use connect::{
    CREDENTIAL_REREAD_INTERVAL_MIN, CredentialError, CredentialSource, Credentials, MakeRustlsConnect,
    ParsedUrl, PgConnector, PoolLimits, RootCert, RustlsConnect, RustlsStream, SessionTimeouts,
    SpawnedConnection, SslMode, TlsError, TlsSettings, UrlError, Verification, error_chain, is_auth_failure,
    is_tls_failure, parse_url, pool,
};
pub use deadpool_postgres::Pool;
pub use events::PgEventStore;
pub use migrate::{
    MIGRATIONS, Migration, MigrationError, MigrationReport, migrate, migrate_to, migrate_with,
};
pub use outbox::{
    FailureReport, MAX_CLAIM_BATCH, OutboxClaim, OutboxRow, OutboxStats, PENDING_COUNT_MAX, PgOutbox,
    RetryLater,
};
pub use parked::PgParkedRecordStore;
pub use read::{PgReadModelStore, PgRebuildJobStore, PgSnapshotStore};
pub use transfers::PgTransferStatusStore;

pub(crate) use crate::sql::{clamp_i64, decode_error, to_i64, to_u64};
use crate::{StoreError, Stores};

/// Every Postgres adapter over one pool, with typed access to the event store (which is also the
/// [`EventFeed`](crate::EventFeed)).
#[derive(Debug, Clone)]
pub struct PgStores {
    /// Events, guard records, idempotency claims and the feed.
    pub events: Arc<PgEventStore>,
    /// Aggregate snapshots.
    pub snapshots: Arc<PgSnapshotStore>,
    /// Account read tables and checkpoints.
    pub read_model: Arc<PgReadModelStore>,
    /// The transfer status table.
    pub transfers: Arc<PgTransferStatusStore>,
    /// Records the MSK consumers parked.
    pub parked: Arc<PgParkedRecordStore>,
    /// Rebuild-all jobs.
    pub rebuilds: Arc<PgRebuildJobStore>,
}

impl PgStores {
    /// Adapters over `pool`. The schema must be migrated ([`migrate`]); nothing is checked here.
    pub fn new(pool: Pool) -> Self {
        Self {
            events: Arc::new(PgEventStore::new(pool.clone())),
            snapshots: Arc::new(PgSnapshotStore::new(pool.clone())),
            read_model: Arc::new(PgReadModelStore::new(pool.clone())),
            transfers: Arc::new(PgTransferStatusStore::new(pool.clone())),
            parked: Arc::new(PgParkedRecordStore::new(pool.clone())),
            rebuilds: Arc::new(PgRebuildJobStore::new(pool)),
        }
    }

    /// The ports as the application takes them.
    pub fn stores(&self) -> Stores {
        Stores {
            events: self.events.clone(),
            idempotency: self.events.clone(),
            snapshots: self.snapshots.clone(),
            read_model: self.read_model.clone(),
            transfers: self.transfers.clone(),
            parked: self.parked.clone(),
            rebuilds: self.rebuilds.clone(),
        }
    }
}

/// Every port over `pool`; see [`PgStores`] to also reach the feed.
pub fn stores(pool: Pool) -> Stores {
    PgStores::new(pool).stores()
}

/// The result of a statement that failed: connection and server trouble is transient, bad data is not.
pub(crate) fn db_error(e: &tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke, timed out or could not encode a parameter.
        return StoreError::Unavailable(format!("postgres: {e}"));
    };
    let detail = e.as_db_error().map_or_else(|| e.to_string(), ToString::to_string);
    match &code.code()[..2] {
        // Data exceptions (a NUL in text, an out-of-range value) and integrity violations no adapter
        // path expects are permanent for the same input.
        "22" | "23" => StoreError::Invalid(format!("postgres rejected the data ({}): {detail}", code.code())),
        // Connection loss, serialization failures and deadlocks, lack of resources, shutdowns, and also
        // a schema that was not migrated: the service as deployed cannot answer now.
        _ => StoreError::Unavailable(format!("postgres error {}: {detail}", code.code())),
    }
}

/// No connection could be had from the pool.
pub(crate) fn pool_error(e: &deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(format!("postgres pool: {e}"))
}

/// The unique constraint a statement violated, if that is why it failed.
pub(crate) fn violated_unique(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    (*db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION).then(|| db.constraint()).flatten()
}

/// A schema version as an `INTEGER`.
pub(crate) fn to_i32(what: &str, value: u32) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::Invalid(format!("{what} {value} does not fit an INTEGER")))
}

/// An `INTEGER` read back as a schema version.
pub(crate) fn to_u32(what: &str, value: i32) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is negative: {value}")))
}

/// Reads one column, mapping a type mismatch or an unexpected NULL to `Corrupt`.
pub(crate) fn column<'a, T>(row: &'a tokio_postgres::Row, name: &str) -> Result<T, StoreError>
where
    T: tokio_postgres::types::FromSql<'a>,
{
    row.try_get(name).map_err(|e| decode_error(name, e))
}

/// Rolls back after a decided failure. The outcome is already known, and a transaction that cannot be
/// rolled back is rolled back by the server when its connection drops, so the error is not reported.
pub(crate) async fn abandon(tx: deadpool_postgres::Transaction<'_>) {
    tx.rollback().await.ok();
}
