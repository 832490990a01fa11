//! Embedded SQLite adapters for every port, in one local file.
//!
//! What the memory adapters give a single process (no server to run), plus durability: events, guard
//! records, idempotency keys, snapshots, read tables, transfer statuses, rebuild jobs and the saved
//! positions of the feed's tailing readers all live in one SQLite database file, so a restarted
//! process finds everything it acknowledged. [`open`] creates the file (and its directory) if
//! missing and creates or upgrades the schema; the schema's version is kept in `PRAGMA user_version`.
//!
//! # One writer, group commit
//!
//! SQLite lets one connection write at a time. So every write (an append, a completion, a projection
//! step, a snapshot ...) is a job for one dedicated writer thread, which owns the only write
//! connection. The thread blocks for a job, then takes every job already waiting (at most
//! [`SqliteSettings::group_commit_max`]) and runs the whole group in one `BEGIN IMMEDIATE`
//! transaction, each job inside its own `SAVEPOINT`: a job that fails (a version conflict, a lost
//! claim, a moved checkpoint) rolls back to its savepoint and undoes only its own writes, and a later
//! job of the group sees the earlier ones' writes exactly as if they had committed one by one. The
//! group then commits once, and only after that commit does any job get its answer: an acknowledged
//! write is committed. A failed `COMMIT` fails every job of the group (each succeeded job is answered
//! `Unavailable`; nothing of the group is written). Concurrent appends to many accounts thus share one
//! commit, and with [`Synchronous::Full`] one disk sync.
//!
//! Positions of the `events` table (`position INTEGER PRIMARY KEY`) are assigned at insert by the
//! single writer, so commit order is position order, which is what the [`EventFeed`] needs: after
//! each commit the writer raises the feed head to the highest committed position.
//!
//! A write whose caller stops waiting (its future dropped) still runs and, with its group, commits.
//!
//! One process per file: [`open`] takes an exclusive lock on `<file>-lock` and refuses a file another
//! process has open, because idempotency holds (module `claims`: a claim is held in the process, and
//! only the completed response is written, with the events it answers for) and the feed head live in
//! the process.
//!
//! # Reads
//!
//! Reads run on their own connections ([`SqliteSettings::readers`] of them, `query_only`), on Tokio's
//! blocking pool, never on the async runtime's threads. In WAL mode a reader sees the last commit
//! that happened before its statement began and is never blocked by the writer.
//!
//! # Durability: pick [`Synchronous`]
//!
//! The database runs in WAL mode. [`Synchronous::Normal`] (the default) does not sync the disk at each
//! commit, only at WAL checkpoints: every acknowledged write survives a crash of the process, but the
//! last commits before a power loss or an operating system crash may be lost (the file stays
//! consistent, never half of a transaction). [`Synchronous::Full`] syncs the WAL at every commit (that
//! is, once per group), so acknowledged writes survive a power loss too; choose it where the file is
//! the only copy of the ledger and the disk honours syncs. Group commit is what keeps `Full`
//! affordable under load.
//!
//! # Idempotency records past their TTL
//!
//! A claim overwrites an expired record of its own key, but nothing else deletes old records: call
//! [`SqliteStores::purge_expired`] periodically (hourly is plenty). It deletes, in bounded batches of
//! [`PURGE_BATCH`] rows per write, the records whose `expires_at` lies `older_than` or more before
//! `now`. The store runs no timer of its own.
//!
//! # Shutting down
//!
//! The writer thread ends when the last handle to the store ([`SqliteStores`], a port from
//! [`SqliteStores::stores`], the feed) is dropped: it finishes the group it is running, and that drop
//! waits for it, then closes the file.
//!
//! [`EventFeed`]: crate::EventFeed

mod claims;
mod events;
mod heads;
mod parked;
mod pool;
mod read;
mod schema;
mod shards;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

pub use events::SqliteEventStore;
pub use parked::SqliteParkedRecordStore;
pub use read::{SqliteReadModelStore, SqliteRebuildJobStore, SqliteSnapshotStore, SqliteTransferStatusStore};
pub use schema::SCHEMA_VERSION;

use self::pool::{Readers, Writer};
pub(crate) use crate::sql::{clamp_i64, decode_error, to_i64, to_u64};
use crate::{EventFeed, StoreError, Stores};

/// Idempotency records deleted per write by [`SqliteStores::purge_expired`].
pub const PURGE_BATCH: usize = 500;

/// The most read connections [`SqliteSettings::readers`] may ask for.
pub const MAX_READERS: usize = 256;

/// The most writes [`SqliteSettings::group_commit_max`] may put in one commit.
pub const MAX_GROUP_COMMIT: usize = 65_536;

/// Page cache of each connection, in KiB. SQLite's default (2 MiB) is a few hundred pages: the
/// writer's inserts into the random-keyed indexes (event ids, idempotency keys, transaction ids) would
/// then read most of their pages back from the file at every statement.
const PAGE_CACHE_KIB: i64 = 32 * 1024;

/// Prepared statements kept per connection: more than the store's statements, so none is compiled
/// again once it has been used (rusqlite keeps 16 by default, fewer than a writer uses in turn).
const STATEMENT_CACHE: usize = 64;

/// How long a connection waits for a lock held by another connection before it answers
/// `Unavailable` (only another process, or a WAL checkpoint, can hold one for long).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// When a commit reaches the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`: a commit survives a crash of the process; the last commits may be
    /// lost on a power loss or an operating system crash.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`: every commit is synced to the disk before it is acknowledged, so
    /// it survives a power loss.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Where the database lives and how it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteSettings {
    /// The database file; it and its parent directory are created if missing.
    pub path: PathBuf,
    /// When a commit reaches the disk (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
    /// Read connections (default 4, 1 ..= [`MAX_READERS`]).
    pub readers: usize,
    /// The most write jobs committed together (default 512, 1 ..= [`MAX_GROUP_COMMIT`]).
    pub group_commit_max: usize,
}

impl SqliteSettings {
    /// The defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), synchronous: Synchronous::default(), readers: 4, group_commit_max: 512 }
    }
}

/// Every SQLite adapter over one database file, with typed access to the event store (which is also
/// the [`EventFeed`]) and the writer's counters.
#[derive(Debug, Clone)]
pub struct SqliteStores {
    /// Events, guard records, idempotency claims, the feed and its saved cursors.
    pub events: Arc<SqliteEventStore>,
    /// Aggregate snapshots.
    pub snapshots: Arc<SqliteSnapshotStore>,
    /// Account read tables and checkpoints.
    pub read_model: Arc<SqliteReadModelStore>,
    /// The transfer status table.
    pub transfers: Arc<SqliteTransferStatusStore>,
    /// Records the MSK consumers parked.
    pub parked: Arc<SqliteParkedRecordStore>,
    /// Rebuild-all jobs.
    pub rebuilds: Arc<SqliteRebuildJobStore>,
    db: Arc<Db>,
}

/// The writer and the readers of one file, shared by every adapter.
#[derive(Debug)]
pub(crate) struct Db {
    pub(crate) writer: Writer,
    pub(crate) readers: Readers,
    /// Held while the store is open; dropped last, after the writer has stopped.
    _lock: std::fs::File,
}

/// Takes the exclusive lock of `<file>-lock` beside the database: one process at a time may use a
/// file, since idempotency holds ([`claims`]) and the feed head live in the process. The operating
/// system releases it when the process ends, however it ends.
fn lock_file(settings: &SqliteSettings) -> Result<std::fs::File, StoreError> {
    let mut path = settings.path.clone().into_os_string();
    path.push("-lock");
    let path = PathBuf::from(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{} is in use by another process (it holds {}); stop it first",
            settings.path.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Unavailable(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

/// Opens (creating if needed) the database of `settings`, brings its schema up to date and starts
/// its writer thread.
///
/// Fails with `Unavailable` when the file or its directory cannot be created or opened, or is locked
/// for longer than the busy timeout, `Corrupt` when it is not a database or was written by a newer
/// schema, and `Invalid` for settings out of range.
pub fn open(settings: SqliteSettings) -> Result<SqliteStores, StoreError> {
    if !(1..=MAX_READERS).contains(&settings.readers)
        || !(1..=MAX_GROUP_COMMIT).contains(&settings.group_commit_max)
    {
        return Err(StoreError::Invalid(format!(
            "sqlite settings need 1..={MAX_READERS} readers and 1..={MAX_GROUP_COMMIT} writes per commit, \
             got {} and {}",
            settings.readers, settings.group_commit_max
        )));
    }
    if let Some(parent) = settings.path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::Unavailable(format!("cannot create the directory {}: {e}", parent.display()))
        })?;
    }
    let lock = lock_file(&settings)?;
    let mut conn = connect(&settings)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| sql_error(&e))?;
    let journal: String =
        conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).map_err(|e| sql_error(&e))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot run in WAL mode (journal mode {journal})",
            settings.path.display()
        )));
    }
    schema::migrate(&mut conn)?;
    // No request of an earlier process is running any more (the lock says so): its holds go.
    conn.execute(events::DELETE_HOLDS, []).map_err(|e| sql_error(&e))?;
    let head = events::head_position(&conn)?;
    let group_commit_max = settings.group_commit_max;
    let readers = Readers::open(settings)?;
    let writer = Writer::start(conn, group_commit_max, head)?;
    let db = Arc::new(Db { writer, readers, _lock: lock });
    Ok(SqliteStores {
        events: Arc::new(SqliteEventStore::new(db.clone())),
        snapshots: Arc::new(SqliteSnapshotStore::new(db.clone())),
        read_model: Arc::new(SqliteReadModelStore::new(db.clone())),
        transfers: Arc::new(SqliteTransferStatusStore::new(db.clone())),
        parked: Arc::new(SqliteParkedRecordStore::new(db.clone())),
        rebuilds: Arc::new(SqliteRebuildJobStore::new(db.clone())),
        db,
    })
}

impl SqliteStores {
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

    /// The whole store in commit order, with saved cursors that outlive the process.
    pub fn feed(&self) -> Arc<dyn EventFeed> {
        self.events.clone()
    }

    /// Transactions the writer has committed since [`open`] (each one a group of write jobs).
    pub fn commits(&self) -> u64 {
        self.db.writer.commits()
    }

    /// Deletes the idempotency records whose TTL ended `older_than` or more before `now`, in writes of
    /// at most [`PURGE_BATCH`] rows (so other writes interleave); returns how many were deleted. A
    /// record is never needed after its TTL (a claim treats it as absent), the margin only keeps
    /// clocks that disagree a little from deleting a record some process still honours.
    pub async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        older_than: chrono::Duration,
    ) -> Result<u64, StoreError> {
        // A margin that leaves the representable times deletes nothing (or, negative, everything).
        let cutoff = match now.checked_sub_signed(older_than) {
            Some(cutoff) => micros(cutoff),
            None if older_than > chrono::Duration::zero() => i64::MIN,
            None => i64::MAX,
        };
        let mut total = 0u64;
        loop {
            let deleted = self
                .db
                .writer
                .write(move |conn| {
                    let mut statement =
                        conn.prepare_cached(events::PURGE_EXPIRED).map_err(|e| sql_error(&e))?;
                    statement.execute((cutoff, clamp_i64(PURGE_BATCH))).map_err(|e| sql_error(&e))
                })
                .await?;
            total += deleted as u64;
            if deleted < PURGE_BATCH {
                return Ok(total);
            }
        }
    }
}

/// A connection with the settings every connection of the store shares.
fn connect(settings: &SqliteSettings) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(&settings.path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", settings.path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_error(&e))?;
    conn.pragma_update(None, "synchronous", settings.synchronous.pragma()).map_err(|e| sql_error(&e))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| sql_error(&e))?;
    // Negative: KiB, not pages.
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB).map_err(|e| sql_error(&e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The store's answer to a failed SQLite call: locks, I/O and a full disk are transient, a file that
/// is not a database is corrupt, data the schema refuses is invalid.
pub(crate) fn sql_error(e: &rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch => {
                StoreError::Invalid(format!("sqlite refused the data: {e}"))
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(format!("sqlite: {e}"))
            }
            _ => StoreError::Unavailable(format!("sqlite: {e}")),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(format!("sqlite: {e}")),
        _ => StoreError::Unavailable(format!("sqlite: {e}")),
    }
}

/// A time as stored: microseconds since the Unix epoch (as precise as Postgres keeps it), so that
/// stored times compare in SQL.
pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A stored time read back.
pub(crate) fn from_micros(what: &str, value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} is out of range: {value}")))
}

/// Serialises a value stored as JSON text.
pub(crate) fn to_json(what: &str, value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("{what} is not serialisable: {e}")))
}

/// Reads back a value stored as JSON text.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| decode_error(what, e))
}

/// Reads back a UUID stored as text.
pub(crate) fn to_uuid(what: &str, text: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(text).map_err(|e| decode_error(what, e))
}

/// Runs `sql` once; answers how many rows it changed.
pub(crate) fn execute(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
    statement.execute(params).map_err(|e| sql_error(&e))
}

/// One row of `sql` decoded by `decode`, if any.
pub(crate) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(|e| sql_error(&e))?;
    statement.query_row(params, |row| Ok(decode(row))).optional().map_err(|e| sql_error(&e))?.transpose()
}

/// Collects rows mapped by `decode`, whose own errors are the store's.
pub(crate) fn collect<T>(
    statement: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = statement.query(params).map_err(|e| sql_error(&e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
        out.push(decode(row)?);
    }
    Ok(out)
}
