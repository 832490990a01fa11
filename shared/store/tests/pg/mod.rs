//! Fresh PostgreSQL databases for the Postgres test binaries.
//!
//! Each call creates `corebank_test_<random>` on the server named by `DATABASE_URL`, so tests running
//! in parallel never see each other's rows. The databases are left behind: the throw-away cluster of
//! `infra/scripts/with-services.sh` is deleted as a whole. A missing `DATABASE_URL` fails the test.

#![cfg(test)]

use corebank_store::postgres::{self, Pool};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Tests run in parallel, each with its own pool; this keeps the server's connection count bounded.
const MAX_CONNECTIONS_PER_TEST: usize = 4;

/// An empty database of its own and a pool to it.
pub(crate) struct TestDatabase {
    /// The database name.
    pub(crate) name: String,
    /// How to connect to it (for a second pool or a listener).
    #[allow(dead_code, reason = "each test binary compiles this module; not all of them connect twice")]
    pub(crate) config: tokio_postgres::Config,
    /// A small pool to it.
    pub(crate) pool: Pool,
}

fn server_config() -> tokio_postgres::Config {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the Postgres tests need a running PostgreSQL and never skip. Run \
             `SERVICES=postgres infra/scripts/with-services.sh cargo test -p corebank-store --features \
             postgres`, or export DATABASE_URL=postgres://USER@127.0.0.1:PORT/postgres"
        )
    });
    url.parse().unwrap_or_else(|e| panic!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
}

/// A pool of at most [`MAX_CONNECTIONS_PER_TEST`] connections.
pub(crate) fn pool(config: &tokio_postgres::Config) -> Pool {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager).max_size(MAX_CONNECTIONS_PER_TEST).build().expect("a pool without timeouts builds")
}

/// A new, empty database (no migrations applied).
pub(crate) async fn empty_database() -> TestDatabase {
    let server = server_config();
    let (client, connection) = server
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the server in DATABASE_URL: {e}"));
    let driver = tokio::spawn(connection);
    let name = format!("corebank_test_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    drop(client);
    driver.await.expect("the admin connection task ends").expect("the admin connection closes cleanly");
    let mut config = server;
    config.dbname(&name);
    let pool = pool(&config);
    TestDatabase { name, config, pool }
}

/// A new database with every migration applied.
pub(crate) async fn migrated_database() -> TestDatabase {
    let db = empty_database().await;
    postgres::migrate(&db.pool).await.unwrap_or_else(|e| panic!("cannot migrate {}: {e}", db.name));
    db
}
