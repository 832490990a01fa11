//! Postgres wiring: a pool from the environment, the schema migrated on request, and the Postgres
//! adapters over the pool.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `DATABASE_URL` | unset | `postgres://user:password@host:port/db?options`; a secret (held as a `SecretString`, never logged). When unset, the `PG*` variables are used. |
//! | `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` | `127.0.0.1`, `5432`, `postgres`, none, the user | libpq's variables, used only without `DATABASE_URL`; `PGPASSWORD` is a secret. |
//! | `PG_POOL_MAX_SIZE` | 8 | connections per process, 1..=1000 |
//! | `PG_CONNECT_TIMEOUT_SECS` | 5 | bound on opening one connection, 1..=300 |
//! | `PG_POOL_WAIT_TIMEOUT_MS` | 5000 | bound on waiting for a free pooled connection, 1..=600000 |
//! | `RUN_MIGRATIONS` | `false` (the local runner: `true`) | apply pending migrations at start-up |
//!
//! TLS is not linked yet: `sslmode=require` (or stricter) is refused at start-up with a message that
//! says so, rather than failing on the first query. Reach RDS over a private network (VPC) or through
//! RDS Proxy inside the VPC, with `rds.force_ssl=0` on the instance's parameter group, until a TLS
//! connector is added (see docs/configuration.md).

use std::time::Duration;

use corebank_app::ConfigError;
use corebank_store::Stores;
use corebank_store::postgres::{MigrationReport, PgOutbox, PgStores, Pool, migrate};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use crate::WiringError;

/// Default [`PgSettings::pool_max_size`].
pub const DEFAULT_POOL_MAX_SIZE: usize = 8;

/// How to reach Postgres, read from the environment once.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Host, port, user, database and options. Its `Debug` output redacts the password.
    pub config: tokio_postgres::Config,
    /// Most pooled connections.
    pub pool_max_size: usize,
    /// Bound on opening one connection.
    pub connect_timeout: Duration,
    /// Bound on waiting for a pooled connection.
    pub pool_wait_timeout: Duration,
    /// Whether to apply pending migrations when connecting.
    pub run_migrations: bool,
}

fn invalid(name: &str, reason: impl Into<String>) -> WiringError {
    WiringError::Config(ConfigError { name: name.to_owned(), reason: reason.into() })
}

impl PgSettings {
    /// Reads the process environment (see the module docs); `run_migrations_default` is what an unset
    /// `RUN_MIGRATIONS` means for this process.
    pub fn from_env(run_migrations_default: bool) -> Result<Self, WiringError> {
        Self::from_lookup(|name| std::env::var(name).ok(), run_migrations_default)
    }

    /// Reads settings through `lookup` (a variable name to its value); blank counts as unset.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        run_migrations_default: bool,
    ) -> Result<Self, WiringError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let number = |name: &str, default: u64, max: u64| -> Result<u64, WiringError> {
            let Some(raw) = get(name) else { return Ok(default) };
            match raw.parse::<u64>() {
                Ok(v) if (1..=max).contains(&v) => Ok(v),
                Ok(v) => Err(invalid(name, format!("{v} is outside 1..={max}"))),
                Err(e) => Err(invalid(name, e.to_string())),
            }
        };

        let mut config = match get("DATABASE_URL").map(SecretString::from) {
            Some(url) => url.expose_secret().parse::<tokio_postgres::Config>().map_err(|e| {
                // The parser's message names the offending option, never the URL's password.
                invalid("DATABASE_URL", format!("not a PostgreSQL connection URL: {e}"))
            })?,
            None => {
                let mut config = tokio_postgres::Config::new();
                config.host(get("PGHOST").as_deref().unwrap_or("127.0.0.1"));
                let port = number("PGPORT", 5432, u64::from(u16::MAX))?;
                config.port(u16::try_from(port).unwrap_or(5432));
                let user = get("PGUSER").unwrap_or_else(|| "postgres".to_owned());
                config.dbname(get("PGDATABASE").as_deref().unwrap_or(&user));
                config.user(&user);
                if let Some(password) = get("PGPASSWORD").map(SecretString::from) {
                    config.password(password.expose_secret());
                }
                config
            }
        };
        if matches!(config.get_ssl_mode(), SslMode::Require) {
            return Err(invalid(
                "DATABASE_URL",
                "sslmode=require needs TLS, which this build does not link yet; use a private network \
                 (VPC or RDS Proxy) with sslmode=prefer or disable",
            ));
        }
        let connect_timeout = Duration::from_secs(number("PG_CONNECT_TIMEOUT_SECS", 5, 300)?);
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("corebank");
        }
        let run_migrations = match get("RUN_MIGRATIONS") {
            None => run_migrations_default,
            Some(v) => v.parse::<bool>().map_err(|e| invalid("RUN_MIGRATIONS", e.to_string()))?,
        };
        let pool_max_size = number("PG_POOL_MAX_SIZE", DEFAULT_POOL_MAX_SIZE as u64, 1_000)?;
        Ok(Self {
            config,
            pool_max_size: usize::try_from(pool_max_size).unwrap_or(DEFAULT_POOL_MAX_SIZE),
            connect_timeout,
            pool_wait_timeout: Duration::from_millis(number("PG_POOL_WAIT_TIMEOUT_MS", 5_000, 600_000)?),
            run_migrations,
        })
    }

    /// A pool with these settings. It connects lazily: nothing is opened until the first use.
    pub fn pool(&self) -> Result<Pool, WiringError> {
        let manager = Manager::from_config(
            self.config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        Pool::builder(manager)
            .max_size(self.pool_max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.pool_wait_timeout))
            .create_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|e| WiringError::Setup(format!("postgres pool: {e}")))
    }
}

/// A connected process: the pool, the typed adapters over it, and what migrating did.
#[derive(Debug, Clone)]
pub struct PgWiring {
    /// The settings it was built from (for a listener connection, or a second pool).
    pub settings: PgSettings,
    /// The pool every adapter shares.
    pub pool: Pool,
    /// The adapters, with typed access to the event store's feed.
    pub stores: PgStores,
    /// Migrations applied at start-up, if `RUN_MIGRATIONS` asked for them.
    pub migrations: Option<MigrationReport>,
}

impl PgWiring {
    /// The transactional outbox over the shared pool, for the relay (`outbox-relay`, the runner's
    /// Kafka mode).
    pub fn outbox(&self) -> PgOutbox {
        PgOutbox::new(self.pool.clone())
    }

    /// Starts the event store's `LISTEN corebank_events` task on a connection of its own, so that its
    /// feed head (and whoever watches it: the embedded pipeline, the outbox relay) follows appends made
    /// by any process. Needs a Tokio runtime.
    pub fn spawn_listener(&self) -> Result<(), WiringError> {
        self.stores
            .events
            .spawn_listener(self.settings.config.clone(), NoTls)
            .map_err(|e| WiringError::Setup(format!("postgres listener: {e}")))
    }
}

/// Builds the pool and the adapters, and migrates first if the settings ask for it.
pub async fn connect(settings: PgSettings) -> Result<PgWiring, WiringError> {
    let pool = settings.pool()?;
    let migrations = if settings.run_migrations {
        let report = migrate(&pool).await.map_err(|e| WiringError::Setup(format!("migrations: {e}")))?;
        tracing::info!(applied = ?report.applied, "postgres schema is up to date");
        Some(report)
    } else {
        None
    };
    let stores = PgStores::new(pool.clone());
    Ok(PgWiring { settings, pool, stores, migrations })
}

/// [`connect`] with settings from the environment (`RUN_MIGRATIONS` defaults to false).
pub async fn connect_from_env() -> Result<PgWiring, WiringError> {
    connect(PgSettings::from_env(false)?).await
}

/// The Postgres stores named by the environment.
pub async fn stores_from_env() -> Result<Stores, WiringError> {
    Ok(connect_from_env().await?.stores.stores())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn name_of(err: WiringError) -> String {
        match err {
            WiringError::Config(e) => e.name,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn database_url_wins_and_its_password_never_shows_in_debug_output() {
        let settings = PgSettings::from_lookup(
            lookup(&[
                ("DATABASE_URL", "postgres://bank:hunter2@db.internal:6543/ledger"),
                ("PGHOST", "ignored"),
                ("PG_POOL_MAX_SIZE", "16"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(settings.config.get_user(), Some("bank"));
        assert_eq!(settings.config.get_dbname(), Some("ledger"));
        assert_eq!(settings.config.get_ports(), [6543]);
        assert_eq!(settings.config.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(settings.pool_max_size, 16);
        assert!(!settings.run_migrations);
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn without_database_url_the_libpq_variables_are_used_with_defaults() {
        let settings = PgSettings::from_lookup(
            lookup(&[("PGHOST", "10.0.0.5"), ("PGUSER", "app"), ("PGPASSWORD", "s3cret")]),
            true,
        )
        .unwrap();
        assert_eq!(settings.config.get_hosts().len(), 1);
        assert_eq!(settings.config.get_ports(), [5432]);
        assert_eq!(settings.config.get_user(), Some("app"));
        assert_eq!(settings.config.get_dbname(), Some("app"));
        assert_eq!(settings.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(settings.pool_max_size, DEFAULT_POOL_MAX_SIZE);
        assert_eq!(settings.connect_timeout, Duration::from_secs(5));
        assert!(settings.run_migrations, "the caller's default applies when RUN_MIGRATIONS is unset");
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        for (name, value) in [
            ("PG_POOL_MAX_SIZE", "0"),
            ("PG_POOL_MAX_SIZE", "many"),
            ("PGPORT", "70000"),
            ("RUN_MIGRATIONS", "yes"),
            ("PG_CONNECT_TIMEOUT_SECS", "0"),
            ("DATABASE_URL", "postgres://h/db?sslmode=require"),
            ("DATABASE_URL", "postgres://h:notaport/db"),
        ] {
            let err = PgSettings::from_lookup(lookup(&[(name, value)]), false).unwrap_err();
            assert_eq!(name_of(err), name, "{name}={value}");
        }
    }

    #[test]
    fn a_bad_url_error_does_not_repeat_the_password() {
        let err = PgSettings::from_lookup(lookup(&[("DATABASE_URL", "postgres://u:hunter2@h:x/db")]), false)
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
