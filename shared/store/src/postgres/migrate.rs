//! Versioned schema migrations: plain SQL files from `infra/migrations/postgres`, compiled in.
//!
//! A released migration is never edited: a change is a new file. [`migrate`] records each applied
//! file's SHA-256 in `schema_migrations` and refuses to run if a recorded file has changed since, so an
//! edited migration is caught at start-up instead of leaving databases that disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use deadpool_postgres::{Object, Pool};
use sha2::{Digest, Sha256};

use super::{db_error, pool_error};
use crate::StoreError;

/// Session advisory lock key held while migrating ("cbmigrat"); advisory locks are per database, so
/// only migrations of the same database wait for each other.
const MIGRATION_LOCK_KEY: i64 = 0x6362_6d69_6772_6174;

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    checksum   TEXT NOT NULL
)";

/// One schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its number: migrations apply in ascending order, each once.
    pub version: i64,
    /// The file name without `.sql`.
    pub name: &'static str,
    /// The SQL, run as one simple-query batch inside the migration's transaction.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL in lower-case hex, with CRLF line ends read as LF so that a checkout's line
    /// ending style does not look like an edit.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.replace("\r\n", "\n").as_bytes());
        digest.iter().fold(String::with_capacity(64), |mut hex, byte| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
            hex
        })
    }
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_event_store",
        sql: include_str!("../../../../infra/migrations/postgres/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "0002_read_model",
        sql: include_str!("../../../../infra/migrations/postgres/0002_read_model.sql"),
    },
    Migration {
        version: 3,
        name: "0003_outbox_relay",
        sql: include_str!("../../../../infra/migrations/postgres/0003_outbox_relay.sql"),
    },
    Migration {
        version: 4,
        name: "0004_transfer_status",
        sql: include_str!("../../../../infra/migrations/postgres/0004_transfer_status.sql"),
    },
    Migration {
        version: 5,
        name: "0005_response_code",
        sql: include_str!("../../../../infra/migrations/postgres/0005_response_code.sql"),
    },
    Migration {
        version: 6,
        name: "0006_feed_cursors",
        sql: include_str!("../../../../infra/migrations/postgres/0006_feed_cursors.sql"),
    },
    Migration {
        version: 7,
        name: "0007_pending_transfers",
        sql: include_str!("../../../../infra/migrations/postgres/0007_pending_transfers.sql"),
    },
    Migration {
        version: 8,
        name: "0008_parked_records",
        sql: include_str!("../../../../infra/migrations/postgres/0008_parked_records.sql"),
    },
    Migration {
        version: 9,
        name: "0009_outbox_waiting",
        sql: include_str!("../../../../infra/migrations/postgres/0009_outbox_waiting.sql"),
    },
];

/// Why migrating stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// An applied migration's file differs from what was applied: released migrations are never
    /// edited, so this build refuses to start against the database.
    #[error(
        "migration {version} was applied as {applied_name} with checksum {applied_checksum}, \
         but this build has {name} with checksum {checksum}; released migrations must not change"
    )]
    Changed {
        /// The version.
        version: i64,
        /// The name recorded when it was applied.
        applied_name: String,
        /// The checksum recorded when it was applied.
        applied_checksum: String,
        /// The name in this build.
        name: &'static str,
        /// The checksum in this build.
        checksum: String,
    },
    /// `migrate_to` was asked for a version this build does not have.
    #[error("no migration {0} in this build")]
    UnknownTarget(i64),
    /// The migrations given are not in strictly ascending version order.
    #[error("migrations are not in ascending version order at {0}")]
    Unordered(i64),
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        /// The version.
        version: i64,
        /// The name.
        name: &'static str,
        /// What the database said.
        #[source]
        source: StoreError,
    },
    /// The database could not be reached or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run, in order.
    pub applied: Vec<i64>,
    /// Versions (up to the target) that were already applied.
    pub already_applied: Vec<i64>,
}

/// Applies every pending migration of [`MIGRATIONS`].
pub async fn migrate(pool: &Pool) -> Result<MigrationReport, MigrationError> {
    let last = MIGRATIONS.last().map_or(0, |m| m.version);
    migrate_with(pool, MIGRATIONS, last).await
}

/// Applies the pending migrations of [`MIGRATIONS`] up to and including `target`, as an older build
/// would have; [`migrate`] later applies the rest.
pub async fn migrate_to(pool: &Pool, target: i64) -> Result<MigrationReport, MigrationError> {
    migrate_with(pool, MIGRATIONS, target).await
}

/// Applies the pending `migrations` up to `target`: the engine behind [`migrate`], open so that tools
/// and tests can run their own lists. Production code calls [`migrate`].
///
/// Holds a session advisory lock for the whole run, so concurrent runs (several instances starting at
/// once) apply each migration once and all succeed. Each migration runs in its own transaction together
/// with its `schema_migrations` row. Before applying anything, every applied migration this list knows
/// is checked against its recorded checksum. Applied versions this list does not know (a newer build
/// migrated the database) are left alone.
pub async fn migrate_with(
    pool: &Pool,
    migrations: &[Migration],
    target: i64,
) -> Result<MigrationReport, MigrationError> {
    if let Some(pair) = migrations.windows(2).find(|pair| pair[0].version >= pair[1].version) {
        return Err(MigrationError::Unordered(pair[1].version));
    }
    if target != 0 && !migrations.iter().any(|m| m.version == target) {
        return Err(MigrationError::UnknownTarget(target));
    }
    let mut client = pool.get().await.map_err(|e| pool_error(&e))?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY]).await.map_err(|e| db_error(&e))?;
    let outcome = apply_pending(&mut client, migrations, target).await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await;
    if unlocked.is_err() {
        // A connection that may still hold the session lock must not go back to the pool: closing it
        // releases the lock.
        drop(Object::take(client));
    }
    outcome
}

async fn apply_pending(
    client: &mut Object,
    migrations: &[Migration],
    target: i64,
) -> Result<MigrationReport, MigrationError> {
    client.batch_execute(CREATE_SCHEMA_MIGRATIONS).await.map_err(|e| db_error(&e))?;
    let rows = client
        .query("SELECT version, name, checksum FROM schema_migrations ORDER BY version", &[])
        .await
        .map_err(|e| db_error(&e))?;
    let mut applied = BTreeMap::new();
    for row in &rows {
        let version: i64 = super::column(row, "version")?;
        let name: String = super::column(row, "name")?;
        let checksum: String = super::column(row, "checksum")?;
        applied.insert(version, (name, checksum));
    }
    for m in migrations {
        if let Some((applied_name, applied_checksum)) = applied.get(&m.version) {
            let checksum = m.checksum();
            if *applied_checksum != checksum || applied_name != m.name {
                return Err(MigrationError::Changed {
                    version: m.version,
                    applied_name: applied_name.clone(),
                    applied_checksum: applied_checksum.clone(),
                    name: m.name,
                    checksum,
                });
            }
        }
    }

    let mut report = MigrationReport::default();
    for m in migrations.iter().take_while(|m| m.version <= target) {
        if applied.contains_key(&m.version) {
            report.already_applied.push(m.version);
            continue;
        }
        apply_one(client, m).await.map_err(|source| MigrationError::Failed {
            version: m.version,
            name: m.name,
            source,
        })?;
        report.applied.push(m.version);
    }
    Ok(report)
}

async fn apply_one(client: &mut Object, m: &Migration) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| db_error(&e))?;
    tx.batch_execute(m.sql).await.map_err(|e| db_error(&e))?;
    tx.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        &[&m.version, &m.name, &m.checksum()],
    )
    .await
    .map_err(|e| db_error(&e))?;
    tx.commit().await.map_err(|e| db_error(&e))
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn every_migration_file_is_compiled_in_once_in_version_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
            .collect();
        files.sort();
        let compiled: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, compiled, "infra/migrations/postgres and MIGRATIONS disagree");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i64::try_from(i).unwrap() + 1, "versions are 1, 2, ... without gaps");
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{} is named after its version",
                m.name
            );
        }
    }

    #[test]
    fn checksum_is_sha256_hex_and_ignores_crlf_line_ends() {
        let lf = super::Migration { version: 1, name: "x", sql: "SELECT 1;\nSELECT 2;\n" };
        let crlf = super::Migration { version: 1, name: "x", sql: "SELECT 1;\r\nSELECT 2;\r\n" };
        assert_eq!(lf.checksum(), crlf.checksum());
        assert_eq!(lf.checksum().len(), 64);
        let empty = super::Migration { version: 1, name: "x", sql: "" };
        assert_eq!(empty.checksum(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
