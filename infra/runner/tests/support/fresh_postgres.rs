//! A new, empty database on the server in `DATABASE_URL`, for the runner's Postgres tests (each test
//! its own, so they never see each other's rows). The database is migrated by whoever connects.

use corebank_wiring::postgres::PgSettings;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Settings for a new database named `<prefix>_<uuid>`; `how_to_run` is the panic message when
/// `DATABASE_URL` is missing (these tests never skip).
pub(crate) async fn fresh_database(prefix: &str, how_to_run: &str) -> PgSettings {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| panic!("DATABASE_URL is not set. {how_to_run}"));
    let server: tokio_postgres::Config = url.parse().expect("DATABASE_URL parses");
    let (client, connection) = server.connect(NoTls).await.expect("connect to DATABASE_URL");
    let driver = tokio::spawn(connection);
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
    drop(client);
    let _ = driver.await;
    let mut settings =
        PgSettings::from_lookup(|n| (n == "DATABASE_URL").then(|| url.clone()), true).expect("settings");
    settings.config.dbname(&name);
    settings
}
