//! How a pool reaches PostgreSQL: TLS after libpq's `sslmode` and `sslrootcert`, bounds on every wait
//! a session can make, and credentials that may change while the process runs (a rotated secret).
//!
//! Nothing here reads the environment: `corebank-wiring` does, and the tests build the same pieces from
//! their own URLs.
//!
//! | `sslmode` | encrypted | chain verified | host name verified |
//! | --- | --- | --- | --- |
//! | `disable` | no | no | no |
//! | `prefer` | if the server offers TLS | only with a root certificate file | no |
//! | `require` | yes | only with a root certificate file (libpq: then as `verify-ca`) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes (DNS name or IP address in the certificate) |
//!
//! `sslrootcert` is a PEM file of the certificates a chain may end at (for RDS, the region's or the
//! global CA bundle), or `system` for the platform's roots, which libpq allows with `verify-full` only.
//! `verify-ca` and `verify-full` need one of them. A server that fails verification fails the
//! connection: nothing falls back to plaintext or to an unverified session.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Connection, Socket};

pub use super::tls::{MakeRustlsConnect, RustlsConnect, RustlsStream};

/// libpq's `sslmode`: whether to encrypt, and what to check of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, else plaintext.
    Prefer,
    /// TLS always; the certificate is checked only when a root certificate file is given.
    Require,
    /// TLS always; the chain must lead to a trusted root, whatever host name it names.
    VerifyCa,
    /// TLS always; the chain must lead to a trusted root and name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(TlsError::UnknownMode(other.to_owned())),
        }
    }
}

/// libpq's `sslrootcert`: where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// The platform's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR`, else the usual bundle locations).
    System,
    /// A PEM file of one or more certificates.
    File(PathBuf),
}

impl RootCert {
    /// `system` or a file path, as libpq reads the parameter.
    pub fn parse(value: &str) -> Self {
        if value == "system" { Self::System } else { Self::File(PathBuf::from(value)) }
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Nothing: the session is encrypted (or not) but the server is not authenticated.
    None,
    /// The chain leads to a trusted root.
    Chain,
    /// The chain leads to a trusted root and the certificate names the host.
    ChainAndHostName,
}

/// Why TLS settings were refused or could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Not one of libpq's five modes.
    #[error("unknown sslmode {0:?} (disable, prefer, require, verify-ca or verify-full)")]
    UnknownMode(String),
    /// `verify-ca` / `verify-full` without anything to verify against.
    #[error("sslmode={0} needs root certificates: set sslrootcert (a PEM file, or system)")]
    NoRootCert(SslMode),
    /// libpq refuses a weaker mode with the platform's roots: any public CA could vouch for the server.
    #[error("sslrootcert=system needs sslmode=verify-full, not {0}")]
    SystemRootsNeedVerifyFull(SslMode),
    /// The root certificate file is missing, unreadable or holds no PEM certificate.
    #[error("cannot use root certificates from {path}: {reason}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `sslrootcert=system` and the platform has no usable root certificates.
    #[error("cannot use the system's root certificates: {0}")]
    SystemRoots(String),
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Setup(#[from] rustls::Error),
}

/// `sslmode` and `sslrootcert` together, checked for consistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<RootCert>,
}

impl TlsSettings {
    /// The settings, refused when libpq would refuse them (see the module docs).
    pub fn new(mode: SslMode, root_cert: Option<RootCert>) -> Result<Self, TlsError> {
        match (mode, &root_cert) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => Err(TlsError::NoRootCert(mode)),
            (mode, Some(RootCert::System)) if mode != SslMode::VerifyFull => {
                Err(TlsError::SystemRootsNeedVerifyFull(mode))
            }
            _ => Ok(Self { mode, root_cert }),
        }
    }

    /// Plaintext.
    pub const fn disabled() -> Self {
        Self { mode: SslMode::Disable, root_cert: None }
    }

    /// The mode.
    pub const fn mode(&self) -> SslMode {
        self.mode
    }

    /// The root certificates, if any.
    pub const fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    /// What is checked of the server's certificate.
    pub const fn verification(&self) -> Verification {
        match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => Verification::None,
            (SslMode::VerifyFull, _) => Verification::ChainAndHostName,
            (SslMode::VerifyCa, _) | (SslMode::Prefer | SslMode::Require, Some(_)) => Verification::Chain,
        }
    }

    /// Sets the driver's own mode on `config`: tokio-postgres knows `disable`, `prefer` and `require`
    /// only; the verifying modes are `require` to it, with the checks done by [`Self::connector`].
    pub fn apply(&self, config: &mut Config) {
        use tokio_postgres::config::SslMode as Driver;
        config.ssl_mode(match self.mode {
            SslMode::Disable => Driver::Disable,
            SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        });
    }

    /// The connector that enforces these settings: rustls with the aws-lc-rs provider, TLS 1.2 or
    /// later, the root certificates loaded now (so a missing file fails at start-up, not at the first
    /// connection), chain and host name checks as [`Self::verification`] says.
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsError> {
        let verification = self.verification();
        let roots = match (verification, &self.root_cert) {
            (Verification::None, _) | (_, None) => RootCertStore::empty(),
            (_, Some(RootCert::System)) => system_roots()?,
            (_, Some(RootCert::File(path))) => pem_roots(path)?,
        };
        Ok(MakeRustlsConnect::new(super::tls::client_config(verification, roots)?))
    }
}

/// Every certificate of a PEM file. One that rustls cannot use as a root is skipped (and logged), as
/// long as at least one is left.
fn pem_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let unusable = |reason: String| TlsError::RootCert { path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("malformed PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(unusable("no PEM certificate in it".to_owned()));
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(unusable("no certificate in it can be used as a root".to_owned()));
    }
    if ignored > 0 {
        tracing::warn!(path = %path.display(), added, ignored, "some root certificates were not usable and are ignored");
    }
    Ok(roots)
}

/// The platform's roots: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the usual bundle locations
/// (on Lambda, Amazon Linux's CA bundle), as `rustls-native-certs` finds them.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    let errors = found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    if added == 0 {
        let reason = if errors.is_empty() { "none found".to_owned() } else { errors };
        return Err(TlsError::SystemRoots(reason));
    }
    if ignored > 0 || !errors.is_empty() {
        tracing::warn!(
            added,
            ignored,
            errors,
            "some system root certificates were not usable and are ignored"
        );
    }
    Ok(roots)
}

/// A connection URL (or key=value string) split into what tokio-postgres reads and libpq's TLS
/// parameters, which it does not read (`verify-ca`, `verify-full`, `sslrootcert`).
#[derive(Debug)]
pub struct ParsedUrl {
    /// Everything else, as tokio-postgres parsed it. Its `Debug` output redacts the password.
    pub config: Config,
    /// `sslmode`, if the URL names one.
    pub ssl_mode: Option<SslMode>,
    /// `sslrootcert`, if the URL names one.
    pub root_cert: Option<RootCert>,
}

/// Why a connection URL was refused. No variant repeats the URL, so none can show its password.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// tokio-postgres refused it; its message names the offending part, never the password.
    #[error("not a PostgreSQL connection URL: {0}")]
    Invalid(String),
    /// A TLS parameter was malformed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Parses `url`, taking `sslmode` and `sslrootcert` out before tokio-postgres sees it.
pub fn parse_url(url: &str) -> Result<ParsedUrl, UrlError> {
    let (rest, ssl_mode, root_cert) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url_query(url)?
    } else {
        split_key_values(url)
    };
    let config = rest.parse::<Config>().map_err(|e| UrlError::Invalid(e.to_string()))?;
    let ssl_mode = ssl_mode.as_deref().map(SslMode::from_str).transpose()?;
    Ok(ParsedUrl { config, ssl_mode, root_cert: root_cert.as_deref().map(RootCert::parse) })
}

type Split = (String, Option<String>, Option<String>);

fn split_url_query(url: &str) -> Result<Split, UrlError> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None, None)) };
    let (mut ssl_mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", value)) => ssl_mode = Some(percent_decode(value)?),
            Some(("sslrootcert", value)) => root_cert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, ssl_mode, root_cert))
}

/// The key=value form, for values without quotes or spaces (paths and modes never need them).
fn split_key_values(text: &str) -> Split {
    let (mut ssl_mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for token in text.split_whitespace() {
        match token.split_once('=') {
            Some(("sslmode", value)) if !value.starts_with('\'') => ssl_mode = Some(value.to_owned()),
            Some(("sslrootcert", value)) if !value.starts_with('\'') => root_cert = Some(value.to_owned()),
            _ => kept.push(token),
        }
    }
    (kept.join(" "), ssl_mode, root_cert)
}

fn percent_decode(value: &str) -> Result<String, UrlError> {
    let bad = || UrlError::Invalid("a TLS parameter has a malformed %-escape".to_owned());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Bounds the server enforces on every session (set as startup options, so they hold from the first
/// statement and cost no round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// `lock_timeout`: the longest one statement waits for a row, table or advisory lock.
    pub lock: Duration,
    /// `statement_timeout`: the longest one statement runs, lock waits included.
    pub statement: Duration,
    /// `idle_in_transaction_session_timeout`: how long a transaction may sit idle (its client stuck or
    /// killed) before the server ends the session and frees its locks.
    pub idle_in_transaction: Duration,
}

impl SessionTimeouts {
    /// 2 s for a lock, 5 s for a statement, 10 s idle in a transaction.
    pub const DEFAULT: Self = Self {
        lock: Duration::from_secs(2),
        statement: Duration::from_secs(5),
        idle_in_transaction: Duration::from_secs(10),
    };

    /// Adds `-c name=value` options for the three settings to `config`'s startup options, after any
    /// the URL already has (the last one given wins), and `jit=off`: every statement of the bank is a
    /// short one over indexes, and compiling one (which the server does when it overestimates a
    /// plan's cost, as it does for the relay's claim) costs tens of milliseconds for nothing.
    pub fn apply(&self, config: &mut Config) {
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in [
            ("lock_timeout", self.lock.as_millis().to_string()),
            ("statement_timeout", self.statement.as_millis().to_string()),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction.as_millis().to_string()),
            ("jit", "off".to_owned()),
        ] {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(&format!("-c {name}={value}"));
        }
        config.options(&options);
    }
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A user name and password for new connections. `Debug` shows the user only.
#[derive(Clone)]
pub struct Credentials {
    /// The role to log in as.
    pub user: String,
    /// Its password.
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"[redacted]").finish()
    }
}

/// The credential source failed (network, permissions, a secret without the expected keys). The
/// message never holds the secret's value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// Where the current credentials are read from: Secrets Manager deployed, a fake in tests.
#[async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// Reads the credentials as they are now. Called at start-up and again when the server refuses
    /// the ones in use; the caller caches the answer.
    async fn fetch(&self) -> Result<Credentials, CredentialError>;
}

/// The shortest time between two re-reads of the credentials, so a wrong secret does not turn every
/// failing connection attempt into a call to the secret store.
pub const CREDENTIAL_REREAD_INTERVAL_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Cached {
    credentials: Option<Credentials>,
    /// Bumped on every successful re-read, so concurrent failures re-read once.
    generation: u64,
    read_at: Option<Instant>,
}

/// A connection's client and the task that drives it, as deadpool's `Connect` returns them.
pub type SpawnedConnection = (Client, JoinHandle<()>);

/// Opens connections: TLS as configured, the latest credentials, and one re-read of them when the
/// server refuses the ones in use (SQLSTATE 28P01 or 28000), so a rotated password is picked up by the
/// next connection instead of failing until the process restarts.
pub struct PgConnector {
    tls: MakeRustlsConnect,
    source: Option<Arc<dyn CredentialSource>>,
    cached: Mutex<Cached>,
    reread: tokio::sync::Mutex<()>,
}

impl fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnector").field("source", &self.source).finish_non_exhaustive()
    }
}

impl PgConnector {
    /// Connects with the user and password of the `Config` it is given.
    pub fn new(tls: MakeRustlsConnect) -> Self {
        Self { tls, source: None, cached: Mutex::default(), reread: tokio::sync::Mutex::new(()) }
    }

    /// Connects with the credentials `source` gives, which override the `Config`'s.
    pub fn with_credentials(tls: MakeRustlsConnect, source: Arc<dyn CredentialSource>) -> Self {
        Self { source: Some(source), ..Self::new(tls) }
    }

    /// Reads the credentials now (at start-up, so a missing or unreadable secret fails the process
    /// before it serves). Without a source there is nothing to read.
    pub async fn load_credentials(&self) -> Result<(), CredentialError> {
        let Some(source) = &self.source else { return Ok(()) };
        let credentials = source.fetch().await?;
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        cached.credentials = Some(credentials);
        cached.read_at = Some(Instant::now());
        Ok(())
    }

    /// `base` with the current credentials, and the generation they belong to.
    fn config_for(&self, base: &Config) -> (u64, Config) {
        let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let mut config = base.clone();
        if let Some(credentials) = &cached.credentials {
            config.user(&credentials.user);
            config.password(credentials.password.expose_secret());
        }
        (cached.generation, config)
    }

    /// Re-reads the credentials unless another caller already did after generation `seen`; true when
    /// there are credentials newer than `seen` to try.
    async fn reread_after(&self, seen: u64) -> bool {
        let Some(source) = &self.source else { return false };
        let _one_at_a_time = self.reread.lock().await;
        {
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if cached.generation != seen {
                return true;
            }
            if cached.read_at.is_some_and(|at| at.elapsed() < CREDENTIAL_REREAD_INTERVAL_MIN) {
                return false;
            }
        }
        match source.fetch().await {
            Ok(credentials) => {
                let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
                cached.credentials = Some(credentials);
                cached.generation += 1;
                cached.read_at = Some(Instant::now());
                tracing::info!("the server refused the database credentials; read them again");
                true
            }
            Err(e) => {
                self.cached.lock().unwrap_or_else(PoisonError::into_inner).read_at = Some(Instant::now());
                tracing::warn!(error = %e, "the server refused the database credentials and re-reading them failed");
                false
            }
        }
    }

    /// Runs `attempt` with `base` and the current credentials; when it fails because the server refused
    /// them (`is_auth_failure`), re-reads them once and tries again with the new ones.
    async fn with_fresh_credentials<T, E, F, Fut>(
        &self,
        base: &Config,
        attempt: F,
        is_auth_failure: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: Fn(Config) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (generation, config) = self.config_for(base);
        match attempt(config).await {
            Err(e) if is_auth_failure(&e) && self.reread_after(generation).await => {
                attempt(self.config_for(base).1).await
            }
            outcome => outcome,
        }
    }

    /// Opens one connection to the server `base` names. The caller drives the returned connection
    /// (a pool spawns it; a listener polls it for notifications).
    pub async fn connect(
        &self,
        base: &Config,
    ) -> Result<(Client, Connection<Socket, RustlsStream<Socket>>), tokio_postgres::Error> {
        let attempt = |config: Config| {
            let tls = self.tls.clone();
            async move { config.connect(tls).await }
        };
        self.with_fresh_credentials(base, attempt, is_auth_failure).await
    }
}

/// The server refused the user or password: SQLSTATE 28P01 (`invalid_password`) or 28000
/// (`invalid_authorization_specification`, e.g. no such role or no `pg_hba.conf` entry).
pub fn is_auth_failure(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// An error and its causes, `: `-separated. tokio-postgres's own message names only the kind of failure
/// ("error performing TLS handshake", "db error"); the causes say which (the certificate check that
/// failed, the server's refusal). Neither holds the password.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The connection failed in the TLS handshake: the server's certificate did not verify (wrong CA, wrong
/// host name, expired), or the server offers no TLS where it is required.
pub fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if super::tls::is_rustls_error(cause) {
            return true;
        }
        source = cause.source();
    }
    // tokio-postgres's own refusal when `require` meets a server without TLS.
    e.to_string().contains("server does not support TLS")
}

/// deadpool's hook for opening pooled connections through a [`PgConnector`].
#[derive(Debug, Clone)]
struct PoolConnect(Arc<PgConnector>);

impl deadpool_postgres::Connect for PoolConnect {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> Pin<Box<dyn Future<Output = Result<SpawnedConnection, tokio_postgres::Error>> + Send + '_>> {
        let config = pg_config.clone();
        Box::pin(async move {
            let (client, connection) = self.0.connect(&config).await?;
            let driver = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "a pooled postgres connection ended with an error");
                }
            });
            Ok((client, driver))
        })
    }
}

/// Bounds on what a caller waits for a pooled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most connections open at once.
    pub max_size: usize,
    /// Longest wait for a free connection when all are in use.
    pub wait: Duration,
    /// Longest wait for a new connection to open (TCP, TLS, authentication, a credential re-read).
    pub connect: Duration,
}

/// A pool whose connections `connector` opens to the server `config` names. It connects lazily:
/// nothing is opened until the first use.
pub fn pool(
    config: Config,
    connector: Arc<PgConnector>,
    limits: PoolLimits,
) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_connect(
        config,
        PoolConnect(connector),
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(limits.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(limits.wait))
        .create_timeout(Some(limits.connect))
        .recycle_timeout(Some(limits.connect))
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn libpq_modes_parse_and_anything_else_is_refused() {
        for mode in
            [SslMode::Disable, SslMode::Prefer, SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull]
        {
            assert_eq!(mode.as_str().parse::<SslMode>().unwrap(), mode);
        }
        assert!(matches!("allow-ish".parse::<SslMode>(), Err(TlsError::UnknownMode(m)) if m == "allow-ish"));
    }

    #[test]
    fn verification_follows_libpq_including_require_with_a_root_file() {
        let file = || Some(RootCert::File("/ca.pem".into()));
        let cases = [
            (SslMode::Disable, None, Verification::None),
            (SslMode::Prefer, None, Verification::None),
            (SslMode::Require, None, Verification::None),
            (SslMode::Require, file(), Verification::Chain),
            (SslMode::Prefer, file(), Verification::Chain),
            (SslMode::VerifyCa, file(), Verification::Chain),
            (SslMode::VerifyFull, file(), Verification::ChainAndHostName),
            (SslMode::VerifyFull, Some(RootCert::System), Verification::ChainAndHostName),
        ];
        for (mode, root, expected) in cases {
            assert_eq!(
                TlsSettings::new(mode, root.clone()).unwrap().verification(),
                expected,
                "{mode} {root:?}"
            );
        }
    }

    #[test]
    fn verifying_without_roots_and_system_roots_below_verify_full_are_refused() {
        assert!(matches!(TlsSettings::new(SslMode::VerifyFull, None), Err(TlsError::NoRootCert(_))));
        assert!(matches!(TlsSettings::new(SslMode::VerifyCa, None), Err(TlsError::NoRootCert(_))));
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::Prefer, SslMode::Disable] {
            assert!(matches!(
                TlsSettings::new(mode, Some(RootCert::System)),
                Err(TlsError::SystemRootsNeedVerifyFull(_))
            ));
        }
    }

    #[test]
    fn a_missing_root_file_fails_when_the_connector_is_built() {
        let settings =
            TlsSettings::new(SslMode::VerifyFull, Some(RootCert::File("/nonexistent/ca.pem".into())))
                .unwrap();
        let err = settings.connector().err().unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(TlsSettings::new(SslMode::VerifyFull, Some(RootCert::System)).unwrap().connector().is_ok());
    }

    #[test]
    fn url_tls_parameters_are_taken_out_and_the_rest_goes_to_the_driver() {
        let parsed = parse_url(
            "postgres://bank:hunter2@db.internal:6543/ledger?application_name=x&sslmode=verify-full&sslrootcert=%2Fopt%2Frds%20ca.pem",
        )
        .unwrap();
        assert_eq!(parsed.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(parsed.root_cert, Some(RootCert::File("/opt/rds ca.pem".into())));
        assert_eq!(parsed.config.get_application_name(), Some("x"));
        assert_eq!(parsed.config.get_password(), Some(&b"hunter2"[..]));
        let plain = parse_url("postgres://u@h/db").unwrap();
        assert_eq!((plain.ssl_mode, plain.root_cert), (None, None));
        let kv = parse_url("host=h user=u sslmode=verify-ca sslrootcert=system").unwrap();
        assert_eq!((kv.ssl_mode, kv.root_cert), (Some(SslMode::VerifyCa), Some(RootCert::System)));
        assert_eq!(kv.config.get_user(), Some("u"));
    }

    #[test]
    fn url_errors_never_repeat_the_password() {
        for url in [
            "postgres://u:hunter2@h:x/db",
            "postgres://u:hunter2@h/db?sslmode=strict",
            "postgres://u:hunter2@h/db?sslrootcert=%zz",
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn session_timeouts_are_startup_options_after_the_urls_own() {
        let mut config = parse_url("postgres://u@h/db?options=-c%20search_path%3Dbank").unwrap().config;
        SessionTimeouts {
            lock: Duration::from_millis(1500),
            statement: Duration::from_secs(4),
            idle_in_transaction: Duration::from_secs(9),
        }
        .apply(&mut config);
        assert_eq!(
            config.get_options(),
            Some(
                "-c search_path=bank -c lock_timeout=1500 -c statement_timeout=4000 \
                 -c idle_in_transaction_session_timeout=9000 -c jit=off"
            )
        );
    }

    /// A secret store whose value the test changes, counting reads.
    #[derive(Debug)]
    struct FakeSecret {
        password: Mutex<String>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl CredentialSource for FakeSecret {
        async fn fetch(&self) -> Result<Credentials, CredentialError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let password = self.password.lock().unwrap().clone();
            Ok(Credentials { user: "bank".to_owned(), password: SecretString::from(password) })
        }
    }

    /// Stands in for the server: accepts only `server_password`, and records what it was offered.
    async fn login(config: Config, server_password: &str) -> Result<String, &'static str> {
        let offered = String::from_utf8(config.get_password().unwrap_or_default().to_vec()).unwrap();
        if offered == server_password { Ok(offered) } else { Err("28P01") }
    }

    fn connector_over(secret: &Arc<FakeSecret>) -> PgConnector {
        let tls = TlsSettings::disabled().connector().unwrap();
        PgConnector::with_credentials(tls, Arc::clone(secret) as Arc<dyn CredentialSource>)
    }

    /// A connector over a fake secret holding `password`, read once already.
    async fn loaded_with(password: &str) -> (Arc<FakeSecret>, PgConnector) {
        let secret =
            Arc::new(FakeSecret { password: Mutex::new(password.to_owned()), reads: AtomicUsize::new(0) });
        let connector = connector_over(&secret);
        connector.load_credentials().await.unwrap();
        (secret, connector)
    }

    #[tokio::test]
    async fn a_refused_password_is_read_again_once_and_the_new_one_is_used_from_then_on() {
        let (secret, connector) = loaded_with("old").await;
        let base = Config::new();
        let is_auth = |e: &&str| *e == "28P01";

        let ok = connector.with_fresh_credentials(&base, |c| login(c, "old"), is_auth).await;
        assert_eq!(ok, Ok("old".to_owned()));
        assert_eq!(secret.reads.load(Ordering::SeqCst), 1, "cached after the first read");

        // Rotation: the server and the secret both move to "new".
        *secret.password.lock().unwrap() = "new".to_owned();
        tokio::time::sleep(CREDENTIAL_REREAD_INTERVAL_MIN).await;
        let ok = connector.with_fresh_credentials(&base, |c| login(c, "new"), is_auth).await;
        assert_eq!(ok, Ok("new".to_owned()));
        assert_eq!(secret.reads.load(Ordering::SeqCst), 2, "one re-read after the refusal");
        let ok = connector.with_fresh_credentials(&base, |c| login(c, "new"), is_auth).await;
        assert_eq!(ok, Ok("new".to_owned()));
        assert_eq!(secret.reads.load(Ordering::SeqCst), 2, "the new password is cached");
    }

    #[tokio::test]
    async fn other_failures_and_a_secret_that_is_still_wrong_do_not_loop() {
        let (secret, connector) = loaded_with("old").await;
        let base = Config::new();
        let is_auth = |e: &&str| *e == "28P01";

        let attempts = AtomicUsize::new(0);
        let refused = connector
            .with_fresh_credentials(
                &base,
                |_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>("08006") }
                },
                is_auth,
            )
            .await;
        assert_eq!(refused, Err("08006"));
        assert_eq!((attempts.load(Ordering::SeqCst), secret.reads.load(Ordering::SeqCst)), (1, 1));

        // The server wants a password the secret does not have: one re-read, one retry, then the error.
        tokio::time::sleep(CREDENTIAL_REREAD_INTERVAL_MIN).await;
        let refused = connector.with_fresh_credentials(&base, |c| login(c, "elsewhere"), is_auth).await;
        assert_eq!(refused, Err("28P01"));
        assert_eq!(secret.reads.load(Ordering::SeqCst), 2);
        // Straight after, a further refusal does not call the secret store again.
        let refused = connector.with_fresh_credentials(&base, |c| login(c, "elsewhere"), is_auth).await;
        assert_eq!(refused, Err("28P01"));
        assert_eq!(secret.reads.load(Ordering::SeqCst), 2, "re-reads are at least a second apart");
    }

    #[test]
    fn credentials_debug_output_hides_the_password() {
        let credentials = Credentials { user: "bank".to_owned(), password: SecretString::from("hunter2") };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
