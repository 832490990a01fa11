//! The runner's Postgres modes end to end, over HTTP: `STORE_KIND=postgres` with the embedded pipeline
//! and with the Kafka pipeline (HTTP writes -> Postgres -> outbox relay -> Kafka -> consumer ->
//! projector -> HTTP reads).
//!
//! Run: `SERVICES="postgres kafka" infra/scripts/with-services.sh cargo test -p corebank-runner --test
//! postgres_modes`. Without `DATABASE_URL` or `KAFKA_BOOTSTRAP` these tests fail; they never skip. Each
//! test has its own database, topics and consumer group.

#![cfg(test)]

use std::time::Duration;

use bytes::Bytes;
use corebank_app::AppConfig;
use corebank_delivery::handlers::relay::RelayConfig;
use corebank_messaging::{KafkaConfig, Topics};
use corebank_runner::modes::postgres::{self, KafkaSettings};
use corebank_runner::modes::{Started, stopped};
use corebank_wiring::postgres::PgSettings;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

#[path = "support/fresh_postgres.rs"]
mod fresh_postgres;

/// A bound on waiting for the read side, so that a broken pipeline fails the test instead of hanging
/// it; no assertion depends on how long convergence takes.
const PATIENCE: Duration = Duration::from_secs(90);

/// Settings for a new, empty database on the server in `DATABASE_URL` (migrated by the mode itself).
async fn fresh_database() -> PgSettings {
    let mut settings = fresh_postgres::fresh_database(
        "corebank_runner",
        "These tests need PostgreSQL and never skip. Run them through \
         `SERVICES=\"postgres kafka\" infra/scripts/with-services.sh`",
    )
    .await;
    settings.pool_max_size = 6;
    settings
}

fn kafka_settings() -> KafkaSettings {
    let brokers = std::env::var("KAFKA_BOOTSTRAP").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!(
            "KAFKA_BOOTSTRAP is not set: these tests need a Kafka broker and never skip. Run them through \
             `SERVICES=\"postgres kafka\" infra/scripts/with-services.sh`"
        )
    });
    let mut kafka = KafkaConfig::new(brokers);
    kafka.session_timeout_ms = 1_000;
    kafka.message_timeout_ms = 10_000;
    let suffix = Uuid::new_v4().simple();
    KafkaSettings {
        kafka,
        topics: Topics {
            account_events: format!("test.runner.accounts.{suffix}"),
            transfer_events: format!("test.runner.transfers.{suffix}"),
        },
        group_id: format!("test-projector-{suffix}"),
        partitions: 3,
        relay: RelayConfig { poll_interval: Duration::from_millis(50), ..RelayConfig::default() },
    }
}

struct Bank {
    origin: String,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Bank {
    async fn serve(started: Started, stop: watch::Sender<bool>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        let mut tasks: Vec<_> = started.tasks.into_iter().map(tokio::spawn).collect();
        let shutdown = stopped(stop.subscribe());
        tasks.push(tokio::spawn(async move {
            corebank_runner::serve(listener, started.deps, shutdown).await.expect("serve");
        }));
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        Self { origin, client, stop, tasks }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.expect("a runner task ends cleanly");
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method).uri(format!("{}/api{path}", self.origin));
        if body.is_some() {
            builder = builder
                .header("content-type", "application/json")
                .header("idempotency-key", Uuid::new_v4().to_string());
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let response =
            self.client.request(builder.body(Full::new(Bytes::from(bytes))).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {body}");
        body
    }

    /// Polls `GET path` until `done` accepts the body.
    async fn eventually(&self, path: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.send(Method::GET, path, None).await;
            if done(status, &body) {
                return body;
            }
            assert!(started.elapsed() < PATIENCE, "GET {path} did not converge: {status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes through HTTP: two accounts, deposits and withdrawals; returns the expected
/// `(account, balanceMinorUnits, version)`.
async fn write_some_history(bank: &Bank) -> Vec<(String, &'static str, u64)> {
    let run = Uuid::new_v4().simple().to_string();
    let (a, b) = (format!("acc-{}-a", &run[..8]), format!("acc-{}-b", &run[..8]));
    for id in [&a, &b] {
        bank.command("/accounts", json!({"accountId": id, "ownerId": "owner-1", "currency": "USD"})).await;
    }
    for i in 0..10 {
        let tx = format!("tx-{run}-{i}");
        bank.command(
            &format!("/accounts/{a}/deposits"),
            json!({"amount": 10.25, "currency": "USD", "transactionId": format!("{tx}-a")}),
        )
        .await;
        bank.command(
            &format!("/accounts/{b}/deposits"),
            json!({"amount": 1, "currency": "USD", "transactionId": format!("{tx}-b")}),
        )
        .await;
    }
    bank.command(
        &format!("/accounts/{a}/withdrawals"),
        json!({"amount": 2.5, "currency": "USD", "transactionId": format!("tx-{run}-w")}),
    )
    .await;
    vec![(a, "10000", 12), (b, "1000", 11)]
}

async fn assert_reads_converge(bank: &Bank, expected: &[(String, &'static str, u64)]) {
    for (id, minor, version) in expected {
        let balance = bank
            .eventually(&format!("/accounts/{id}/balance"), |status, body| {
                status == StatusCode::OK && body["version"].as_u64() == Some(*version)
            })
            .await;
        assert_eq!(balance["balanceMinorUnits"], *minor, "{balance}");
        let (status, history) = bank.send(Method::GET, &format!("/accounts/{id}/history"), None).await;
        assert_eq!(status, StatusCode::OK, "{history}");
        let versions: Vec<u64> = history["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["streamVersion"].as_u64().expect("streamVersion"))
            .collect();
        assert_eq!(versions, (1..=*version).collect::<Vec<_>>(), "{history}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_with_kafka_http_writes_flow_through_the_relay_and_kafka_and_reads_converge() {
    let settings = fresh_database().await;
    let (stop, stop_rx) = watch::channel(false);
    let started = postgres::start_kafka(settings, kafka_settings(), AppConfig::default(), true, stop_rx)
        .await
        .expect("the postgres + kafka mode starts");
    assert!(started.description.contains("kafka"), "{}", started.description);
    let bank = Bank::serve(started, stop).await;

    let expected = write_some_history(&bank).await;
    assert_reads_converge(&bank, &expected).await;

    let health = bank
        .eventually("/health", |status, body| {
            status == StatusCode::OK && body["checks"]["pipeline"]["lag"] == 0
        })
        .await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["pipeline"]["status"], "ok", "{health}");
    bank.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_with_the_embedded_pipeline_answers_reads_at_once_after_each_command() {
    let settings = fresh_database().await;
    let (stop, stop_rx) = watch::channel(false);
    let started = postgres::start_embedded(settings.clone(), AppConfig::default(), true, stop_rx)
        .await
        .expect("the postgres + embedded mode starts");
    let bank = Bank::serve(started, stop).await;

    let expected = write_some_history(&bank).await;
    // WAIT_FOR_PROJECTION: every 201 waited for the projection, so the first read is already there.
    for (id, minor, version) in &expected {
        let (status, balance) = bank.send(Method::GET, &format!("/accounts/{id}/balance"), None).await;
        assert_eq!(status, StatusCode::OK, "{balance}");
        assert_eq!(
            (balance["balanceMinorUnits"].as_str(), balance["version"].as_u64()),
            (Some(*minor), Some(*version))
        );
    }
    assert_reads_converge(&bank, &expected).await;
    bank.stop().await;

    // A restart over the same database (migrations already applied) serves the same state.
    let (stop, stop_rx) = watch::channel(false);
    let started = postgres::start_embedded(settings, AppConfig::default(), true, stop_rx)
        .await
        .expect("a second start over a migrated database");
    let bank = Bank::serve(started, stop).await;
    assert_reads_converge(&bank, &expected).await;
    bank.stop().await;
}

/// The embedded pipeline over Postgres projects different accounts concurrently: many accounts written
/// at once must still each read back exactly, at once, with a contiguous history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_embedded_projects_many_accounts_written_concurrently_exactly() {
    let settings = fresh_database().await;
    let (stop, stop_rx) = watch::channel(false);
    let started = postgres::start_embedded(settings, AppConfig::default(), true, stop_rx)
        .await
        .expect("the postgres + embedded mode starts");
    let bank = std::sync::Arc::new(Bank::serve(started, stop).await);
    let run = Uuid::new_v4().simple().to_string();
    let accounts: Vec<String> = (0..12).map(|i| format!("acc-{}-{i}", &run[..8])).collect();
    let mut writers = tokio::task::JoinSet::new();
    for id in accounts.clone() {
        let bank = bank.clone();
        writers.spawn(async move {
            bank.command("/accounts", json!({"accountId": id, "ownerId": "owner-1", "currency": "EUR"}))
                .await;
            for i in 0..8 {
                bank.command(
                    &format!("/accounts/{id}/deposits"),
                    json!({"amount": 1.01, "currency": "EUR", "transactionId": format!("{id}-tx-{i}")}),
                )
                .await;
                // Read-your-writes after every 201: the barrier waited for this account's projection.
                let (status, balance) =
                    bank.send(Method::GET, &format!("/accounts/{id}/balance"), None).await;
                assert_eq!(status, StatusCode::OK, "{balance}");
                assert_eq!(balance["version"].as_u64(), Some(i + 2), "{id}: {balance}");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer finishes");
    }
    let expected: Vec<(String, &'static str, u64)> = accounts.into_iter().map(|id| (id, "808", 9)).collect();
    assert_reads_converge(&bank, &expected).await;
    let health = bank.eventually("/health", |status, _| status == StatusCode::OK).await;
    assert_eq!(health["checks"]["pipeline"]["lag"], 0, "{health}");
    assert_eq!(health["checks"]["pipeline"]["status"], "ok", "{health}");
    match std::sync::Arc::try_unwrap(bank) {
        Ok(bank) => bank.stop().await,
        Err(_) => panic!("every writer has dropped its handle"),
    }
}
