//! Postgres wiring: a pool from the environment (TLS, credentials, bounded waits), the schema migrated
//! on request, and the Postgres adapters over the pool.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `DATABASE_URL` | unset | `postgres://user:password@host:port/db?options`; a secret (held as a `SecretString`, never logged). May carry `sslmode` and `sslrootcert`. When unset, the `PG*` variables are used. |
//! | `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` | `127.0.0.1`, `5432`, `postgres`, none, the user | libpq's variables, used only without `DATABASE_URL`; `PGPASSWORD` is a secret. |
//! | `PGSSLMODE` | `prefer` | libpq's `sslmode` when the URL names none: `disable`, `prefer`, `require`, `verify-ca`, `verify-full` (table below). |
//! | `PGSSLROOTCERT` | unset | libpq's `sslrootcert` when the URL names none: a PEM file of trusted roots (deployed: the RDS CA bundle), or `system`. |
//! | `DATABASE_SECRET_ARN` | unset | a Secrets Manager secret (RDS's JSON: `username`, `password`) read at start-up; its user and password replace any other, and it is read again when the server refuses them (rotation). |
//! | `PG_POOL_MAX_SIZE` | 8 | connections per process, 1..=1000 |
//! | `PG_CONNECT_TIMEOUT_SECS` | 5 | bound on opening one connection (and on one read of the secret), 1..=300 |
//! | `PG_POOL_WAIT_TIMEOUT_MS` | 5000 | bound on waiting for a free pooled connection, 1..=600000 |
//! | `PG_LOCK_TIMEOUT_MS` | 2000 | server `lock_timeout`: the longest a statement waits for a lock, 1..=600000, at most the statement timeout |
//! | `PG_STATEMENT_TIMEOUT_MS` | 5000 | server `statement_timeout`, 1..=600000 |
//! | `PG_IDLE_IN_TRANSACTION_TIMEOUT_MS` | 10000 | server `idle_in_transaction_session_timeout`: a transaction left idle (its process killed or frozen) is ended and its locks freed after this, 1..=600000 |
//! | `RUN_MIGRATIONS` | `false` (the local runner: `true`) | apply pending migrations at start-up |
//!
//! | `sslmode` | encrypted | server certificate checked |
//! | --- | --- | --- |
//! | `disable` | no | no |
//! | `prefer` | when the server offers TLS | chain only, and only with `sslrootcert` |
//! | `require` | yes | chain only, and only with `sslrootcert` (libpq: then as `verify-ca`) |
//! | `verify-ca` | yes | chain, against `sslrootcert` (required) |
//! | `verify-full` | yes | chain and host name, against `sslrootcert` (required; `system` allowed) |
//!
//! At start-up [`connect`] opens one connection: a server that fails TLS verification, or refuses the
//! credentials (after one re-read of the secret), stops the process with an error log line; it is never
//! used. A server that is merely unreachable is logged and connected to on first use.
//!
//! A request's longest wait before its first statement has run is [`PgSettings::request_wait_max`]:
//! pool wait, connect and statement timeout. Keep it below the function's timeout
//! (`infra/template-check` checks this for every function in `template.yaml`).

use std::sync::Arc;
use std::time::Duration;

use corebank_app::ConfigError;
use corebank_store::Stores;
use corebank_store::postgres::{
    MigrationReport, PgConnector, PgOutbox, PgStores, PoolLimits, RootCert, SessionTimeouts, SslMode,
    TlsSettings, UrlError, error_chain, is_auth_failure, is_tls_failure, migrate, parse_url,
};
use deadpool_postgres::PoolError;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::Host;

pub use corebank_store::postgres::Pool;

use crate::WiringError;
use crate::rds_secret::SecretsManagerCredentials;

/// Default [`PgSettings::pool_max_size`].
pub const DEFAULT_POOL_MAX_SIZE: usize = 8;

/// How to reach Postgres, read from the environment once.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Host, port, user, database, the driver's TLS mode and the session timeouts as startup options.
    /// Its `Debug` output redacts the password.
    pub config: tokio_postgres::Config,
    /// `sslmode` and `sslrootcert`.
    pub tls: TlsSettings,
    /// The server-side bounds set on every session.
    pub timeouts: SessionTimeouts,
    /// The Secrets Manager secret holding the user and password, if they come from one.
    pub secret_arn: Option<String>,
    /// Most pooled connections.
    pub pool_max_size: usize,
    /// Bound on opening one connection.
    pub connect_timeout: Duration,
    /// Bound on waiting for a pooled connection.
    pub pool_wait_timeout: Duration,
    /// Whether to apply pending migrations when connecting.
    pub run_migrations: bool,
    /// The HTTP client the Secrets Manager client sends with; `None`: aws-config's default HTTPS
    /// client, which only builds with the `aws-config` feature (or `dynamodb`) have.
    pub aws_http_client: Option<aws_sdk_secretsmanager::config::SharedHttpClient>,
}

fn invalid(name: &str, reason: impl Into<String>) -> WiringError {
    WiringError::Config(ConfigError { name: name.to_owned(), reason: reason.into() })
}

const NO_REGION: &str =
    "DATABASE_SECRET_ARN is set but there is no AWS region: set AWS_REGION (Lambda sets it)";

fn setup(message: String) -> WiringError {
    tracing::error!(error = %message, "postgres is not usable; not starting");
    WiringError::Setup(message)
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
        let millis = |name: &str, default: u64| number(name, default, 600_000).map(Duration::from_millis);

        let (mut config, url_mode, url_root) = match get("DATABASE_URL").map(SecretString::from) {
            Some(url) => {
                let parsed = parse_url(url.expose_secret()).map_err(|e| match e {
                    UrlError::Invalid(reason) => invalid("DATABASE_URL", reason),
                    UrlError::Tls(e) => invalid("DATABASE_URL", e.to_string()),
                })?;
                (parsed.config, parsed.ssl_mode, parsed.root_cert)
            }
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
                (config, None, None)
            }
        };

        // The URL's parameters win over the variables, as in libpq.
        let (mode, mode_from) = match url_mode {
            Some(mode) => (mode, "DATABASE_URL"),
            None => match get("PGSSLMODE") {
                Some(raw) => {
                    (raw.parse::<SslMode>().map_err(|e| invalid("PGSSLMODE", e.to_string()))?, "PGSSLMODE")
                }
                None => (SslMode::Prefer, "PGSSLMODE"),
            },
        };
        let root_cert = url_root.or_else(|| get("PGSSLROOTCERT").as_deref().map(RootCert::parse));
        let tls = TlsSettings::new(mode, root_cert).map_err(|e| invalid(mode_from, e.to_string()))?;
        tls.apply(&mut config);

        let timeouts = SessionTimeouts {
            lock: millis("PG_LOCK_TIMEOUT_MS", 2_000)?,
            statement: millis("PG_STATEMENT_TIMEOUT_MS", 5_000)?,
            idle_in_transaction: millis("PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", 10_000)?,
        };
        if timeouts.lock > timeouts.statement {
            return Err(invalid(
                "PG_LOCK_TIMEOUT_MS",
                format!(
                    "{} ms is longer than the statement timeout ({} ms), which would end the wait first",
                    timeouts.lock.as_millis(),
                    timeouts.statement.as_millis()
                ),
            ));
        }
        timeouts.apply(&mut config);

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
            tls,
            timeouts,
            secret_arn: get("DATABASE_SECRET_ARN"),
            pool_max_size: usize::try_from(pool_max_size).unwrap_or(DEFAULT_POOL_MAX_SIZE),
            connect_timeout,
            pool_wait_timeout: millis("PG_POOL_WAIT_TIMEOUT_MS", 5_000)?,
            run_migrations,
            aws_http_client: None,
        })
    }

    /// These settings, reading the secret (if any) over `http` instead of aws-config's default HTTPS
    /// client: for a process that links another TLS stack for its own AWS calls and builds without
    /// the default client.
    #[must_use]
    pub fn with_aws_http_client(mut self, http: aws_sdk_secretsmanager::config::SharedHttpClient) -> Self {
        self.aws_http_client = Some(http);
        self
    }

    /// The pool's bounds.
    pub fn limits(&self) -> PoolLimits {
        PoolLimits {
            max_size: self.pool_max_size,
            wait: self.pool_wait_timeout,
            connect: self.connect_timeout,
        }
    }

    /// The longest a request waits for its connection and first statement: a free pooled connection,
    /// a new one opened, then the statement (its lock waits included) cut off by the server.
    pub fn request_wait_max(&self) -> Duration {
        self.pool_wait_timeout + self.connect_timeout + self.timeouts.statement
    }

    /// `host:port` of the server, for log lines (never the password).
    pub fn server(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "?".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// Opens connections with these TLS settings and the credentials of the URL or `PG*` variables, or
    /// of the secret (read now, so a missing or unreadable secret fails start-up).
    pub async fn connector(&self) -> Result<Arc<PgConnector>, WiringError> {
        let tls = self.tls.connector().map_err(|e| invalid("PGSSLROOTCERT", e.to_string()))?;
        let Some(arn) = &self.secret_arn else { return Ok(Arc::new(PgConnector::new(tls))) };
        let client = self.secrets_client().await?;
        let source = SecretsManagerCredentials::new(client, arn.clone(), self.connect_timeout);
        let connector = PgConnector::with_credentials(tls, Arc::new(source));
        connector
            .load_credentials()
            .await
            .map_err(|e| setup(format!("cannot read the database credentials: {e}")))?;
        Ok(Arc::new(connector))
    }

    /// The Secrets Manager client. With the `aws-config` feature: aws-config's region and credential
    /// chain, over [`Self::aws_http_client`] if set, else aws-config's default HTTPS client.
    #[cfg(feature = "aws-config")]
    async fn secrets_client(&self) -> Result<aws_sdk_secretsmanager::Client, WiringError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(http) = &self.aws_http_client {
            loader = loader.http_client(http.clone());
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(setup(NO_REGION.to_owned()));
        }
        Ok(aws_sdk_secretsmanager::Client::new(&sdk))
    }

    /// The Secrets Manager client. Without the `aws-config` feature: the region and the credentials
    /// Lambda puts in the environment for the execution role (valid for the life of the execution
    /// environment), over [`Self::aws_http_client`], which must be set.
    #[cfg(not(feature = "aws-config"))]
    async fn secrets_client(&self) -> Result<aws_sdk_secretsmanager::Client, WiringError> {
        use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
        let Some(http) = self.aws_http_client.clone() else {
            return Err(setup(
                "DATABASE_SECRET_ARN is set but this build has no HTTP client for Secrets Manager (build \
                 with the `aws-config` feature, or pass one with PgSettings::with_aws_http_client)"
                    .to_owned(),
            ));
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(region) = env("AWS_REGION") else { return Err(setup(NO_REGION.to_owned())) };
        let (Some(key_id), Some(secret_key)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(setup(
                "DATABASE_SECRET_ARN is set but there are no AWS credentials in the environment \
                 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; Lambda sets them)"
                    .to_owned(),
            ));
        };
        let credentials = Credentials::new(key_id, secret_key, env("AWS_SESSION_TOKEN"), None, "environment");
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(http)
            .build();
        Ok(aws_sdk_secretsmanager::Client::from_conf(config))
    }

    /// A pool whose connections `connector` opens. It connects lazily: nothing is opened until the first
    /// use.
    pub fn pool_with(&self, connector: Arc<PgConnector>) -> Result<Pool, WiringError> {
        corebank_store::postgres::pool(self.config.clone(), connector, self.limits())
            .map_err(|e| WiringError::Setup(format!("postgres pool: {e}")))
    }

    /// A pool with these settings and the credentials of the URL or `PG*` variables; with
    /// `DATABASE_SECRET_ARN` use [`connect`] (or [`Self::connector`] and [`Self::pool_with`]), which
    /// read the secret. It connects lazily.
    pub fn pool(&self) -> Result<Pool, WiringError> {
        if self.secret_arn.is_some() {
            return Err(WiringError::Setup(
                "DATABASE_SECRET_ARN is set: the pool needs the secret read first (use connect)".to_owned(),
            ));
        }
        let tls = self.tls.connector().map_err(|e| invalid("PGSSLROOTCERT", e.to_string()))?;
        self.pool_with(Arc::new(PgConnector::new(tls)))
    }
}

/// A connected process: the pool, the typed adapters over it, and what migrating did.
#[derive(Debug, Clone)]
pub struct PgWiring {
    /// The settings it was built from (for a listener connection, or a second pool).
    pub settings: PgSettings,
    /// Opens connections (TLS, current credentials) for the pool and the listener.
    pub connector: Arc<PgConnector>,
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
        let connector = Arc::clone(&self.connector);
        let config = self.settings.config.clone();
        self.stores
            .events
            .spawn_listener_with(move || {
                let (connector, config) = (Arc::clone(&connector), config.clone());
                async move { connector.connect(&config).await }
            })
            .map_err(|e| WiringError::Setup(format!("postgres listener: {e}")))
    }
}

/// Opens one connection now. A server that fails TLS verification or refuses the credentials is never
/// used: that is an error. One that cannot be reached is logged, and reached on first use.
async fn check_server(settings: &PgSettings, pool: &Pool) -> Result<(), WiringError> {
    let server = settings.server();
    let mode = settings.tls.mode();
    match pool.get().await {
        Ok(_) => {
            tracing::info!(%server, sslmode = %mode, "connected to postgres");
            Ok(())
        }
        Err(PoolError::Backend(e)) if is_tls_failure(&e) => {
            Err(setup(format!("postgres at {server} failed TLS (sslmode={mode}): {}", error_chain(&e))))
        }
        Err(PoolError::Backend(e)) if is_auth_failure(&e) => Err(setup(format!(
            "postgres at {server} refused the connection (sslmode={mode}): {}",
            error_chain(&e)
        ))),
        Err(e) => {
            tracing::warn!(%server, sslmode = %mode, error = %error_chain(&e), "postgres is not reachable at start-up; connecting on first use");
            Ok(())
        }
    }
}

/// Builds the pool and the adapters, checks the server (see [`check_server`]), and migrates first if
/// the settings ask for it.
pub async fn connect(settings: PgSettings) -> Result<PgWiring, WiringError> {
    let connector = settings.connector().await?;
    let pool = settings.pool_with(Arc::clone(&connector))?;
    check_server(&settings, &pool).await?;
    let migrations = if settings.run_migrations {
        let report = migrate(&pool).await.map_err(|e| WiringError::Setup(format!("migrations: {e}")))?;
        tracing::info!(applied = ?report.applied, "postgres schema is up to date");
        Some(report)
    } else {
        None
    };
    let stores = PgStores::new(pool.clone());
    Ok(PgWiring { settings, connector, pool, stores, migrations })
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
            ("DATABASE_URL", "postgres://h/db?sslmode=verify-fully"),
            ("DATABASE_URL", "postgres://h/db?sslmode=verify-full"),
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLMODE", "strict"),
            ("PG_LOCK_TIMEOUT_MS", "0"),
            ("PG_STATEMENT_TIMEOUT_MS", "600001"),
            ("PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", "soon"),
            ("PG_LOCK_TIMEOUT_MS", "6000"),
            ("DATABASE_URL", "postgres://h:notaport/db"),
        ] {
            let err = PgSettings::from_lookup(lookup(&[(name, value)]), false).unwrap_err();
            assert_eq!(name_of(err), name, "{name}={value}");
        }
    }

    #[test]
    fn tls_comes_from_the_url_else_from_libpqs_variables() {
        let from_vars = PgSettings::from_lookup(
            lookup(&[
                ("PGHOST", "db.internal"),
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", "/opt/rds/ca.pem"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(from_vars.tls.mode(), SslMode::VerifyFull);
        assert_eq!(from_vars.tls.root_cert(), Some(&RootCert::File("/opt/rds/ca.pem".into())));
        assert_eq!(from_vars.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);

        let url_wins = PgSettings::from_lookup(
            lookup(&[
                ("DATABASE_URL", "postgres://u:hunter2@h/db?sslmode=verify-ca&sslrootcert=/ca.pem"),
                ("PGSSLMODE", "disable"),
                ("PGSSLROOTCERT", "/other.pem"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(url_wins.tls.mode(), SslMode::VerifyCa);
        assert_eq!(url_wins.tls.root_cert(), Some(&RootCert::File("/ca.pem".into())));

        let default = PgSettings::from_lookup(lookup(&[]), false).unwrap();
        assert_eq!(default.tls.mode(), SslMode::Prefer, "libpq's default");
        assert_eq!(default.secret_arn, None);
    }

    #[test]
    fn session_timeouts_and_the_secret_are_read_and_bound_a_request() {
        let settings = PgSettings::from_lookup(
            lookup(&[
                ("PG_LOCK_TIMEOUT_MS", "1000"),
                ("PG_STATEMENT_TIMEOUT_MS", "2500"),
                ("PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", "4000"),
                ("PG_POOL_WAIT_TIMEOUT_MS", "1500"),
                ("PG_CONNECT_TIMEOUT_SECS", "2"),
                ("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:1:secret:db"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(
            settings.config.get_options(),
            Some(
                "-c lock_timeout=1000 -c statement_timeout=2500 -c idle_in_transaction_session_timeout=4000 \
                 -c jit=off"
            )
        );
        assert_eq!(settings.request_wait_max(), Duration::from_millis(1500 + 2000 + 2500));
        assert_eq!(settings.secret_arn.as_deref(), Some("arn:aws:secretsmanager:eu-west-1:1:secret:db"));
        assert!(settings.pool().is_err(), "a pool without the secret read first is refused");
        let defaults = PgSettings::from_lookup(lookup(&[]), false).unwrap();
        assert_eq!(defaults.timeouts, SessionTimeouts::DEFAULT);
    }

    #[test]
    fn a_bad_url_error_does_not_repeat_the_password() {
        let err = PgSettings::from_lookup(lookup(&[("DATABASE_URL", "postgres://u:hunter2@h:x/db")]), false)
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
