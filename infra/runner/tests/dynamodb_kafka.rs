//! End to end through the runner mode `STORE_KIND=dynamodb PIPELINE=kafka`, started in process on an
//! ephemeral port: HTTP -> DynamoDB (moto) -> stream poller -> outbox-publisher handler -> Kafka
//! (tansu) -> batch consumer -> projector handler -> read tables -> HTTP.
//!
//! Run: `SERVICES="dynamodb kafka" infra/scripts/with-services.sh cargo test -p corebank-runner --test
//! dynamodb_kafka`. Without `AWS_ENDPOINT_URL` or `KAFKA_BOOTSTRAP` these tests fail; they never skip.
//! Each test has its own tables, topics and consumer group. Waits are bounded polls: no assertion
//! depends on how long anything takes.

#![cfg(test)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use corebank_app::{App, AppConfig};
use corebank_domain::EventEnvelope;
use corebank_messaging::{EventPublisher, KafkaConfig, KafkaPublisher, PublishError};
use corebank_runner::modes::dynamodb::{Settings, start_with};
use corebank_runner::serve;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Upper bound of every wait, so that a broken pipeline fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(90);

fn required(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!(
            "{name} is not set: these tests need moto and a Kafka broker. Run them through \
             `SERVICES=\"dynamodb kafka\" infra/scripts/with-services.sh cargo test -p corebank-runner --test dynamodb_kafka`"
        )
    })
}

/// The mode's settings for a fresh table set, fresh topics and a fresh consumer group.
fn settings() -> Settings {
    required("AWS_ENDPOINT_URL");
    required("KAFKA_BOOTSTRAP");
    let run = Uuid::new_v4().simple().to_string();
    let mut settings = Settings::from_lookup(|name| match name {
        "TABLE_PREFIX" => Some(format!("e2e_{run}_")),
        "KAFKA_ACCOUNT_EVENTS_TOPIC" => Some(format!("test.account-events.{run}")),
        "KAFKA_TRANSFER_EVENTS_TOPIC" => Some(format!("test.transfer-events.{run}")),
        "PROJECTOR_GROUP_ID" => Some(format!("test-projector-{run}")),
        // tansu answers JoinGroup after about half the session timeout: keep it short.
        "KAFKA_SESSION_TIMEOUT_MS" => Some("1000".to_owned()),
        "STREAM_IDLE_POLL_MS" => Some("20".to_owned()),
        other => std::env::var(other).ok(),
    })
    .expect("settings");
    settings.poller.retry_backoff_max_ms = 400;
    settings
}

/// A running bank on an ephemeral port. Dropping it signals shutdown.
struct Bank {
    origin: String,
    app: App,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Bank {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn spawn_bank(settings: Settings, publisher: Option<Arc<dyn EventPublisher>>) -> Bank {
    let (stop, stopped) = watch::channel(false);
    let started =
        start_with(AppConfig::default(), settings, publisher, stopped.clone()).await.expect("mode starts");
    let app = started.deps.app.clone();
    let mut tasks: Vec<JoinHandle<()>> = started.tasks.into_iter().map(tokio::spawn).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let deps = started.deps;
    let mut shutdown = stopped;
    tasks.push(tokio::spawn(async move {
        let _ = serve(listener, deps, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    }));
    Bank { origin, app, client: Client::builder(TokioExecutor::new()).build_http(), stop, tasks }
}

impl Bank {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(format!("{}/api{path}", self.origin));
        if body.is_some() {
            request = request
                .header("content-type", "application/json")
                .header("idempotency-key", format!("key-{}", Uuid::new_v4()));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self.client.request(request.body(Full::new(body)).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {body}");
        body
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    async fn create_account(&self, currency: &str) -> String {
        let id = format!("acc-{}", Uuid::new_v4().simple());
        self.post("/accounts", json!({"accountId": id, "ownerId": "owner-1", "currency": currency})).await;
        id
    }

    async fn money(&self, id: &str, kind: &str, amount: &str, currency: &str) -> u64 {
        let body: Value = serde_json::from_str(&format!(
            r#"{{"amount":{amount},"currency":"{currency}","transactionId":"tx-{}"}}"#,
            Uuid::new_v4().simple()
        ))
        .unwrap();
        self.post(&format!("/accounts/{id}/{kind}"), body).await["version"].as_u64().unwrap()
    }

    /// Waits until the read tables (not the event-store fallback) hold `id` at `version`.
    async fn projected(&self, id: &str, version: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let summary = self.app.stores.read_model.summary(id).await.unwrap();
            if summary.as_ref().is_some_and(|s| s.version >= version) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not projected to v{version}: read model at {:?}",
                summary.map(|s| s.version)
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `GET /health` until its status is `want`, returning the body.
    async fn health_becomes(&self, want: StatusCode) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get("/health").await;
            if status == want {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "health stayed {status}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn money_movements_over_http_converge_in_the_read_tables_through_the_stream_and_kafka() {
    let bank = spawn_bank(settings(), None).await;
    let usd = bank.create_account("USD").await;
    let jpy = bank.create_account("JPY").await;
    bank.money(&usd, "deposits", "100.25", "USD").await;
    bank.money(&jpy, "deposits", "5000", "JPY").await;
    bank.money(&usd, "deposits", "50", "USD").await;
    bank.money(&usd, "withdrawals", "30.10", "USD").await;
    bank.money(&jpy, "withdrawals", "1", "JPY").await;
    bank.post(&format!("/accounts/{jpy}/freeze"), json!({"reason": "review"})).await;
    let usd_version = bank.money(&usd, "deposits", "0.01", "USD").await;
    assert_eq!(usd_version, 5);

    bank.projected(&usd, 5).await;
    bank.projected(&jpy, 4).await;

    let (status, summary) = bank.get(&format!("/accounts/{usd}")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["balance"], json!(120.16));
    assert_eq!(summary["balanceMinorUnits"], "12016");
    assert_eq!(summary["status"], "ACTIVE");
    assert_eq!(summary["version"], 5);
    let (_, balance) = bank.get(&format!("/accounts/{jpy}/balance")).await;
    assert_eq!(balance["balanceMinorUnits"], "4999", "{balance}");
    assert_eq!(balance["status"], "FROZEN");
    assert_eq!(balance["version"], 4);
    let (_, history) = bank.get(&format!("/accounts/{usd}/history")).await;
    let entries = history["entries"].as_array().unwrap();
    let types: Vec<&str> = entries.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["AccountCreated", "MoneyDeposited", "MoneyDeposited", "MoneyWithdrawn", "MoneyDeposited"]
    );
    let amounts: Vec<&str> = entries[1..].iter().map(|e| e["amountMinorUnits"].as_str().unwrap()).collect();
    assert_eq!(amounts, ["10025", "5000", "3010", "1"]);

    let health = bank.health_becomes(StatusCode::OK).await;
    assert_eq!(health["checks"]["pipeline"]["status"], "ok", "{health}");
}

/// The live publisher, or, while `down`, a producer pointed at a port where no broker listens: the
/// outbox then gets the real client's timeouts.
struct Switch {
    down: AtomicBool,
    live: KafkaPublisher,
    dead: KafkaPublisher,
}

#[async_trait]
impl EventPublisher for Switch {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        if self.down.load(Ordering::SeqCst) {
            self.dead.publish(events).await
        } else {
            self.live.publish(events).await
        }
    }
}

#[tokio::test]
async fn commands_keep_landing_while_the_broker_is_unreachable_and_the_backlog_drains_after_recovery() {
    let settings = settings();
    let mut unreachable = KafkaConfig::new("127.0.0.1:1");
    unreachable.message_timeout_ms = 1_000;
    let switch = Arc::new(Switch {
        down: AtomicBool::new(false),
        live: KafkaPublisher::new(&settings.kafka, settings.topics.clone()).unwrap(),
        dead: KafkaPublisher::new(&unreachable, settings.topics.clone()).unwrap(),
    });
    let bank = spawn_bank(settings, Some(switch.clone())).await;
    let id = bank.create_account("EUR").await;
    bank.money(&id, "deposits", "10", "EUR").await;
    bank.projected(&id, 2).await;

    switch.down.store(true, Ordering::SeqCst);
    let mut version = 2;
    for amount in ["1", "2", "3", "4", "5"] {
        version = bank.money(&id, "deposits", amount, "EUR").await;
    }
    assert_eq!(version, 7, "every command was accepted while the broker was unreachable");

    let degraded = bank.health_becomes(StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(degraded["checks"]["pipeline"]["status"], "failing", "{degraded}");
    let projected = bank.app.stores.read_model.summary(&id).await.unwrap().unwrap();
    assert_eq!(projected.version, 2, "nothing reached the read tables while the broker was down");
    // Read-your-writes still holds: the event store answers what the projection cannot yet.
    let (status, balance) = bank.get(&format!("/accounts/{id}/balance?minVersion=7")).await;
    assert_eq!(status, StatusCode::OK, "{balance}");
    assert_eq!(balance["balanceMinorUnits"], "2500");

    switch.down.store(false, Ordering::SeqCst);
    bank.projected(&id, 7).await;
    let (_, balance) = bank.get(&format!("/accounts/{id}/balance")).await;
    assert_eq!(balance["balanceMinorUnits"], "2500", "{balance}");
    assert_eq!(balance["version"], 7);
    let (_, history) = bank.get(&format!("/accounts/{id}/history")).await;
    let versions: Vec<u64> =
        history["entries"].as_array().unwrap().iter().map(|e| e["streamVersion"].as_u64().unwrap()).collect();
    assert_eq!(versions, (1..=7).collect::<Vec<_>>(), "nothing lost, nothing twice");
    let healthy = bank.health_becomes(StatusCode::OK).await;
    assert_eq!(healthy["checks"]["pipeline"]["lag"], 0, "{healthy}");
}

/// The live publisher, or, while `losing`, one that acknowledges events without sending them: the
/// stream records are then consumed and gone, as when they outlived the stream's 24 h.
struct Lossy {
    losing: AtomicBool,
    lost: AtomicUsize,
    live: KafkaPublisher,
}

#[async_trait]
impl EventPublisher for Lossy {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        if self.losing.load(Ordering::SeqCst) {
            self.lost.fetch_add(events.len(), Ordering::SeqCst);
            events.iter().map(|_| Ok(())).collect()
        } else {
            self.live.publish(events).await
        }
    }
}

#[tokio::test]
async fn events_the_outbox_never_published_reach_the_read_tables_after_the_republish_command() {
    use corebank_runner::cli::{RepublishArgs, republish_with};
    let settings = settings();
    let lossy = Arc::new(Lossy {
        losing: AtomicBool::new(false),
        lost: AtomicUsize::new(0),
        live: KafkaPublisher::new(&settings.kafka, settings.topics.clone()).unwrap(),
    });
    let bank = spawn_bank(settings.clone(), Some(lossy.clone())).await;
    let started = chrono::Utc::now();
    let id = bank.create_account("EUR").await;
    bank.money(&id, "deposits", "10", "EUR").await;
    bank.projected(&id, 2).await;

    lossy.losing.store(true, Ordering::SeqCst);
    // Events keep their time to the millisecond: the window starts at this one, which the next event's
    // time is not below.
    let now = chrono::Utc::now();
    let lost_from = chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    bank.money(&id, "deposits", "1", "EUR").await;
    bank.money(&id, "deposits", "2", "EUR").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while lossy.lost.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the outbox never took the two events");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    lossy.losing.store(false, Ordering::SeqCst);
    let until = chrono::Utc::now() + chrono::Duration::seconds(1);
    let projected = bank.app.stores.read_model.summary(&id).await.unwrap().unwrap();
    assert_eq!(projected.version, 2, "the lost events never reached the read tables");

    // The window of the lost events: exactly they are published, and the projector applies them.
    let window = |from: chrono::DateTime<chrono::Utc>| RepublishArgs {
        from,
        to: until,
        stream_prefix: Some(format!("account-{id}")),
        dry_run: false,
        segments: Some(2),
        page_items: None,
    };
    let summary = republish_with(&settings, &window(lost_from)).await.expect("republish");
    assert_eq!((summary["read"].as_u64(), summary["published"].as_u64()), (Some(2), Some(2)), "{summary}");
    assert_eq!(summary["byTopic"], json!({ settings.topics.account_events.clone(): 2 }), "{summary}");
    bank.projected(&id, 4).await;
    let (_, balance) = bank.get(&format!("/accounts/{id}/balance")).await;
    assert_eq!((balance["balanceMinorUnits"].as_str(), balance["version"].as_u64()), (Some("1300"), Some(4)));

    // The whole history again: published, and skipped by the projector as duplicates.
    let again = republish_with(&settings, &window(started)).await.expect("republish");
    assert_eq!(
        (again["read"].as_u64(), again["published"].as_u64(), again["failed"].as_u64()),
        (Some(4), Some(4), Some(0))
    );
    let healthy = bank.health_becomes(StatusCode::OK).await;
    assert_eq!(healthy["checks"]["pipeline"]["status"], "ok", "{healthy}");
    let (_, history) = bank.get(&format!("/accounts/{id}/history")).await;
    let versions: Vec<u64> =
        history["entries"].as_array().unwrap().iter().map(|e| e["streamVersion"].as_u64().unwrap()).collect();
    assert_eq!(versions, (1..=4).collect::<Vec<_>>(), "nothing applied twice");
    let (_, balance) = bank.get(&format!("/accounts/{id}/balance")).await;
    assert_eq!(balance["balanceMinorUnits"], "1300", "{balance}");
}
