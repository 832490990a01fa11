//! Wiring shared by the Lambda binaries: read the environment once, build the stores and the app,
//! hand back the handlers' dependencies. A function's `main` stays a few lines.
#![warn(missing_docs)]

use std::sync::Arc;

use corebank_api::Deps;
use corebank_app::{App, AppConfig, ConfigError, SystemClock};
use corebank_store::Stores;

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
pub mod rds_secret;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub use corebank_emf as telemetry;

/// Which adapters back the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// In-memory: one process only, gone when it ends; for tests and throw-away runs.
    Memory,
    /// One local SQLite file in `DATA_DIR`: the runner's durable mode.
    Sqlite,
    /// Postgres (RDS): `DATABASE_URL`.
    Postgres,
    /// DynamoDB: tables named by `TABLE_PREFIX` or one variable per table.
    Dynamodb,
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(Self::Memory),
            "sqlite" => Ok(Self::Sqlite),
            "postgres" => Ok(Self::Postgres),
            "dynamodb" => Ok(Self::Dynamodb),
            other => Err(format!("unknown store kind {other:?} (sqlite, memory, postgres or dynamodb)")),
        }
    }
}

/// Why a process could not be wired.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// A bad or missing variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store kind asked for is not compiled into this binary.
    #[error("STORE_KIND={0} is not available in this build (enable the cargo feature of the same name)")]
    NotCompiled(&'static str),
    /// The backing service could not be set up.
    #[error("store setup failed: {0}")]
    Setup(String),
}

/// Variables [`stores_from_env`] reads whatever the store kind.
///
/// With the kind-specific lists below, this is what `infra/template-check` holds every function that
/// builds stores to; that check also scans this crate's sources, so a variable read here and missing
/// from these lists (or listed and no longer read) fails it.
pub const ENV_VARS: &[&str] = &["STORE_KIND"];

/// Variables the DynamoDB wiring reads (`STORE_KIND=dynamodb`): the table names.
pub const DYNAMODB_ENV_VARS: &[&str] = &[
    "TABLE_PREFIX",
    "EVENTS_TABLE",
    "IDEMPOTENCY_TABLE",
    "TRANSACTIONS_TABLE",
    "SNAPSHOTS_TABLE",
    "ACCOUNT_SUMMARY_TABLE",
    "ACCOUNT_STATEMENT_TABLE",
    "PROJECTION_CHECKPOINTS_TABLE",
    "REBUILD_JOBS_TABLE",
    "TRANSFER_STATUS_TABLE",
];

/// Variables the Postgres wiring reads (`STORE_KIND=postgres`): `DATABASE_URL`, or libpq's `PG*`
/// variables without it, libpq's TLS variables, the credentials' secret, the pool, session timeout
/// and migration settings, and the AWS identity Lambda provides (read for the secret without
/// aws-config).
pub const POSTGRES_ENV_VARS: &[&str] = &[
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "DATABASE_SECRET_ARN",
    "PG_POOL_MAX_SIZE",
    "PG_CONNECT_TIMEOUT_SECS",
    "PG_POOL_WAIT_TIMEOUT_MS",
    "PG_LOCK_TIMEOUT_MS",
    "PG_STATEMENT_TIMEOUT_MS",
    "PG_IDLE_IN_TRANSACTION_TIMEOUT_MS",
    "RUN_MIGRATIONS",
    // The execution role's region and credentials (Lambda sets them), for the secret's client in a
    // build without aws-config.
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Variables the SQLite wiring reads (`STORE_KIND=sqlite`): where the file is and how durable a
/// commit is.
pub const SQLITE_ENV_VARS: &[&str] = &["DATA_DIR", "SQLITE_SYNCHRONOUS"];

/// The stores named by `STORE_KIND` (default `memory`).
pub async fn stores_from_env() -> Result<Stores, WiringError> {
    let kind: StoreKind = corebank_app::config::env_parse("STORE_KIND", StoreKind::Memory)?;
    let stores = match kind {
        StoreKind::Memory => {
            tracing::warn!("STORE_KIND=memory: state lives only as long as this process");
            corebank_store::memory::stores().0
        }
        #[cfg(feature = "sqlite")]
        StoreKind::Sqlite => sqlite::open_from_env()?.stores(),
        #[cfg(not(feature = "sqlite"))]
        StoreKind::Sqlite => return Err(WiringError::NotCompiled("sqlite")),
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => postgres::stores_from_env().await?,
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres => return Err(WiringError::NotCompiled("postgres")),
        #[cfg(feature = "dynamodb")]
        StoreKind::Dynamodb => dynamodb::stores_from_env().await?,
        #[cfg(not(feature = "dynamodb"))]
        StoreKind::Dynamodb => return Err(WiringError::NotCompiled("dynamodb")),
    };
    Ok(stores)
}

/// The app over the stores named by the environment.
pub async fn app_from_env() -> Result<App, WiringError> {
    let config = AppConfig::from_env()?;
    let stores = stores_from_env().await?;
    Ok(App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock)))
}

/// The HTTP handlers' dependencies for a Lambda function.
pub async fn http_deps() -> Result<Deps, WiringError> {
    Ok(Deps::new(app_from_env().await?))
}

/// The `main` of an HTTP Lambda function: logs and metrics ([`telemetry`]), dependencies from the environment once per cold
/// start, then the runtime loop calling `$handler(&deps, request)` for every invocation and writing
/// the metrics it recorded.
///
/// ```text
/// corebank_wiring::http_function!(corebank_api::handlers::deposit);
/// ```
#[macro_export]
macro_rules! http_function {
    ($handler:path) => {
        #[tokio::main]
        async fn main() -> Result<(), lambda_http::Error> {
            lambda_http::tracing::init_default_subscriber();
            $crate::telemetry::init();
            let deps = $crate::http_deps().await?;
            let deps = &deps;
            lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| async move {
                Ok::<_, std::convert::Infallible>($crate::telemetry::flushed($handler(deps, req)).await)
            }))
            .await
        }
    };
}
