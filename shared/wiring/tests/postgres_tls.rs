//! `connect` against the TLS-only PostgreSQL of `infra/scripts/with-services.sh` (`DATABASE_TLS_URL`):
//! a server that verifies is used, one that does not (or that refuses plaintext) stops start-up.

#![cfg(test)]

use corebank_wiring::WiringError;
use corebank_wiring::postgres::{PgSettings, connect};

fn tls_url() -> String {
    std::env::var("DATABASE_TLS_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_TLS_URL is not set: these tests need the TLS-only PostgreSQL and never skip. Run them \
             under `SERVICES=postgres infra/scripts/with-services.sh`"
        )
    })
}

fn settings(url: &str) -> PgSettings {
    let url = url.to_owned();
    PgSettings::from_lookup(move |name| (name == "DATABASE_URL").then(|| url.clone()), false).unwrap()
}

fn setup_error(result: Result<impl std::fmt::Debug, WiringError>) -> String {
    match result {
        Err(WiringError::Setup(message)) => message,
        other => panic!("expected start-up to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_verifies_is_connected_to() {
    let pg = connect(settings(&tls_url())).await.unwrap();
    let client = pg.pool.get().await.unwrap();
    let row =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>("ssl"));
}

#[tokio::test]
async fn a_certificate_for_another_host_name_stops_start_up() {
    // The same server under a name its certificate does not carry; hostaddr still reaches it.
    let url = tls_url().replacen("@localhost:", "@db.wrong-name.invalid:", 1).replacen(
        '?',
        "?hostaddr=127.0.0.1&",
        1,
    );
    let message = setup_error(connect(settings(&url)).await);
    assert!(message.contains("failed TLS (sslmode=verify-full)"), "{message}");
    assert!(message.contains("invalid peer certificate"), "{message}");
}

#[tokio::test]
async fn plaintext_to_a_server_that_requires_tls_stops_start_up() {
    let url = tls_url().replacen("sslmode=verify-full", "sslmode=disable", 1);
    let message = setup_error(connect(settings(&url)).await);
    assert!(message.contains("refused the connection (sslmode=disable)"), "{message}");
    assert!(message.contains("no encryption"), "{message}");
}
