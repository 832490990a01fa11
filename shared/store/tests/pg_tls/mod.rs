//! The TLS-only PostgreSQL of `infra/scripts/with-services.sh`, reached the way a deployed function
//! reaches RDS: `sslmode=verify-full` against the server's own CA, through a `PgConnector`.
//!
//! `DATABASE_TLS_URL` names it (with `sslmode` and `sslrootcert`); without it every test fails. Each
//! call to [`migrated_database`] creates `corebank_tls_test_<random>`, so tests never see each other's
//! rows; the throw-away cluster is deleted as a whole.

#![cfg(test)]

use std::sync::Arc;
use std::time::Duration;

use corebank_store::postgres::{
    self, ParsedUrl, PgConnector, Pool, PoolLimits, SslMode, TlsSettings, parse_url,
};
use uuid::Uuid;

/// Tests run in parallel, each with its own pool; this keeps the server's connection count bounded.
/// The waits only keep a broken server from hanging a test; nothing asserts on them.
pub(crate) const LIMITS: PoolLimits =
    PoolLimits { max_size: 4, wait: Duration::from_secs(60), connect: Duration::from_secs(60) };

/// The server's URL, parsed.
pub(crate) fn server() -> ParsedUrl {
    let url = std::env::var("DATABASE_TLS_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_TLS_URL is not set: the TLS tests need the TLS-only PostgreSQL and never skip. Run \
             `SERVICES=postgres infra/scripts/with-services.sh cargo test -p corebank-store --features \
             postgres`, or export DATABASE_TLS_URL=postgres://USER@localhost:PORT/postgres?sslmode=verify-full&sslrootcert=CA.pem"
        )
    });
    parse_url(&url).unwrap_or_else(|e| panic!("DATABASE_TLS_URL is not usable: {e}"))
}

/// The URL's TLS settings (`verify-full` unless it says otherwise).
pub(crate) fn tls(url: &ParsedUrl) -> TlsSettings {
    TlsSettings::new(url.ssl_mode.unwrap_or(SslMode::VerifyFull), url.root_cert.clone())
        .unwrap_or_else(|e| panic!("DATABASE_TLS_URL's TLS parameters: {e}"))
}

/// The URL's connection settings with the driver's TLS mode set from `tls`.
pub(crate) fn config(url: &ParsedUrl, tls: &TlsSettings) -> tokio_postgres::Config {
    let mut config = url.config.clone();
    tls.apply(&mut config);
    config
}

/// A connector that enforces `tls`.
pub(crate) fn connector(tls: &TlsSettings) -> Arc<PgConnector> {
    Arc::new(PgConnector::new(tls.connector().unwrap_or_else(|e| panic!("TLS connector: {e}"))))
}

/// A client on its own connection, driven by a spawned task.
pub(crate) async fn client(
    connector: &PgConnector,
    config: &tokio_postgres::Config,
) -> tokio_postgres::Client {
    let (client, connection) =
        connector.connect(config).await.unwrap_or_else(|e| panic!("cannot connect to DATABASE_TLS_URL: {e}"));
    tokio::spawn(connection);
    client
}

/// An empty database of its own, every migration applied, and a pool to it over `verify-full`.
#[allow(dead_code, reason = "each test binary compiles this module; not all of them create databases")]
pub(crate) struct TestDatabase {
    /// The pool.
    pub(crate) pool: Pool,
}

/// A new database with every migration applied.
#[allow(dead_code, reason = "each test binary compiles this module; not all of them create databases")]
pub(crate) async fn migrated_database() -> TestDatabase {
    let url = server();
    let tls = tls(&url);
    let connector = connector(&tls);
    let mut config = config(&url, &tls);
    let admin = client(&connector, &config).await;
    let name = format!("corebank_tls_test_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    config.dbname(&name);
    let pool = postgres::pool(config, connector, LIMITS).expect("a pool with these limits builds");
    postgres::migrate(&pool).await.unwrap_or_else(|e| panic!("cannot migrate {name}: {e}"));
    TestDatabase { pool }
}
