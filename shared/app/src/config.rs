//! Typed settings, read from the environment once per process.

use secrecy::SecretString;

/// Settings of the use cases. Units are part of the names.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The service name reported by health.
    pub service_name: String,
    /// A snapshot is written each time a stream crosses a multiple of this many versions.
    pub snapshot_every_versions: u64,
    /// Attempts of one command on version conflicts before answering 409.
    pub retry_attempts_max: u32,
    /// Upper bound of the jittered wait between attempts.
    pub retry_backoff_max_ms: u64,
    /// How long a completed idempotency record is kept.
    pub idempotency_ttl_secs: i64,
    /// How long a running request holds its key before another may take it over.
    pub idempotency_lease_secs: i64,
    /// Default page size of history.
    pub history_limit_default: usize,
    /// Largest page size of history.
    pub history_limit_max: usize,
    /// Bearer token of the admin routes; `None` disables them.
    pub admin_token: Option<SecretString>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            service_name: "corebank".to_owned(),
            snapshot_every_versions: 50,
            retry_attempts_max: 12,
            retry_backoff_max_ms: 25,
            idempotency_ttl_secs: 24 * 3600,
            idempotency_lease_secs: 30,
            history_limit_default: 100,
            history_limit_max: 1000,
            admin_token: None,
        }
    }
}

/// A variable that is set but unusable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} is invalid: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Reads `name`, parsing it when set and non-empty.
pub fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: T::Err| ConfigError { name: name.to_owned(), reason: e.to_string() })
        }
        _ => Ok(default),
    }
}

impl AppConfig {
    /// Every variable [`AppConfig::from_env`] reads. Deployment checks (`infra/template-check`) hold
    /// each function to it, so a variable added here must be added to the functions that read it.
    pub const ENV_VARS: &'static [&'static str] = &[
        "SERVICE_NAME",
        "SNAPSHOT_EVERY_VERSIONS",
        "RETRY_ATTEMPTS_MAX",
        "RETRY_BACKOFF_MAX_MS",
        "IDEMPOTENCY_TTL_SECS",
        "IDEMPOTENCY_LEASE_SECS",
        "HISTORY_LIMIT_MAX",
        "ADMIN_TOKEN",
    ];

    /// Reads `SERVICE_NAME`, `SNAPSHOT_EVERY_VERSIONS`, `RETRY_ATTEMPTS_MAX`, `RETRY_BACKOFF_MAX_MS`,
    /// `IDEMPOTENCY_TTL_SECS`, `IDEMPOTENCY_LEASE_SECS`, `HISTORY_LIMIT_MAX` and `ADMIN_TOKEN`, each
    /// optional with the defaults of [`AppConfig::default`].
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(ConfigError { name: name.to_owned(), reason: "must be at least 1".to_owned() })
            } else {
                Ok(v)
            }
        };
        let admin_token = std::env::var("ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| SecretString::from(t.trim().to_owned()));
        Ok(Self {
            service_name: env_parse("SERVICE_NAME", d.service_name)?,
            snapshot_every_versions: positive(
                "SNAPSHOT_EVERY_VERSIONS",
                env_parse("SNAPSHOT_EVERY_VERSIONS", d.snapshot_every_versions)?,
            )?,
            retry_attempts_max: env_parse("RETRY_ATTEMPTS_MAX", d.retry_attempts_max)?.max(1),
            retry_backoff_max_ms: env_parse("RETRY_BACKOFF_MAX_MS", d.retry_backoff_max_ms)?,
            idempotency_ttl_secs: env_parse("IDEMPOTENCY_TTL_SECS", d.idempotency_ttl_secs)?.max(1),
            idempotency_lease_secs: env_parse("IDEMPOTENCY_LEASE_SECS", d.idempotency_lease_secs)?.max(1),
            history_limit_default: d.history_limit_default,
            history_limit_max: positive(
                "HISTORY_LIMIT_MAX",
                env_parse("HISTORY_LIMIT_MAX", d.history_limit_max as u64)?,
            )? as usize,
            admin_token,
        })
    }
}
