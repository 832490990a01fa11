//! Quarantine, not stall, end to end on real servers: HTTP writes -> Postgres -> outbox relay -> Kafka
//! (tansu) -> the batch consumers (the MSK mappings' local emulators) -> the `projector` and
//! `transfer-saga` handlers, with one stream of each refused by a fault that stays until it is "fixed".
//!
//! What it shows: the poisoned stream is parked with its later records behind it, in order; the
//! partition moves on and other streams' later records are applied; health counts what is parked;
//! after the fix, the admin retry applies the parked records in order and the stream is live again.
//!
//! Run: `SERVICES="postgres kafka" infra/scripts/with-services.sh cargo test -p corebank-runner --test
//! parked_postgres_kafka`. Without `DATABASE_URL` or `KAFKA_BOOTSTRAP` this test fails; it never skips.

#![cfg(test)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::kafka::KafkaEvent;
use bytes::Bytes;
use corebank_api::Deps;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_delivery::emulators::kafka_consumer::{ConsumerConfig, KafkaBatchConsumer};
use corebank_delivery::handlers::relay::{Relay, RelayConfig};
use corebank_delivery::handlers::{projection, saga};
use corebank_messaging::{KafkaConfig, KafkaPublisher, Topics, ensure_topics};
use corebank_runner::modes::stopped;
use corebank_store::{
    AccountSummary, ClaimOutcome, EventFeed, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey,
    IdempotencyStore, ProjectionChange, ProjectionReplacement, ReadModelStore, StatementEntry, StoreError,
};
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

/// A bound on every wait, so that a broken pipeline fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(90);

const ADMIN_TOKEN: &str = "parked-test-admin-token";

// ---------------------------------------------------------------------------------------------
// The faults: each refuses one stream, permanently, until it is switched off (the "fix").

/// The read tables, refusing every change of one stream with corrupt data while `on`.
struct RefusesStream {
    inner: Arc<dyn ReadModelStore>,
    stream_id: String,
    on: Arc<AtomicBool>,
}

#[async_trait]
impl ReadModelStore for RefusesStream {
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.checkpoint(stream_id).await
    }

    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
        if self.on.load(Ordering::SeqCst) && change.stream_id == self.stream_id {
            return Err(StoreError::Corrupt(format!("{} refused by the fault", change.stream_id)));
        }
        self.inner.apply(change).await
    }

    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
        self.inner.replace(replacement).await
    }

    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
        self.inner.summary(account_id).await
    }

    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError> {
        self.inner.statement(account_id, offset, limit).await
    }
}

/// Idempotency claims, refusing with corrupt data every claim whose key holds `needle` while `on`:
/// the saga's legs of one transfer cannot run.
struct RefusesClaims {
    inner: Arc<dyn IdempotencyStore>,
    needle: String,
    on: Arc<AtomicBool>,
}

#[async_trait]
impl IdempotencyStore for RefusesClaims {
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        if self.on.load(Ordering::SeqCst) && claim.key.key.contains(&self.needle) {
            return Err(StoreError::Corrupt(format!("claim {} refused by the fault", claim.key.key)));
        }
        self.inner.claim(claim).await
    }

    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError> {
        self.inner.complete(completion).await
    }

    async fn release(&self, key: &IdempotencyKey, claim_token: Uuid) -> Result<(), StoreError> {
        self.inner.release(key, claim_token).await
    }
}

// ---------------------------------------------------------------------------------------------
// The bank over HTTP

struct Bank {
    origin: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Bank {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        admin: bool,
    ) -> (StatusCode, Value) {
        let mut builder = Request::builder().method(method).uri(format!("{}/api{path}", self.origin));
        if body.is_some() {
            builder = builder
                .header("content-type", "application/json")
                .header("idempotency-key", Uuid::new_v4().to_string());
        }
        if admin {
            builder = builder.header("x-admin-token", ADMIN_TOKEN);
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let response =
            self.client.request(builder.body(Full::new(Bytes::from(bytes))).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(Method::POST, path, Some(body), false).await;
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn open(&self, id: &str) {
        self.command("/accounts", json!({"accountId": id, "ownerId": "owner-1", "currency": "USD"})).await;
    }

    async fn deposit(&self, id: &str, amount: u64) {
        let tx = format!("tx-{}", Uuid::new_v4().simple());
        self.command(
            &format!("/accounts/{id}/deposits"),
            json!({"amount": amount, "currency": "USD", "transactionId": tx}),
        )
        .await;
    }

    /// Polls `GET path` until `done` accepts the answer.
    async fn eventually(&self, path: &str, admin: bool, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self.send(Method::GET, path, None, admin).await;
            if done(status, &body) {
                return body;
            }
            assert!(started.elapsed() < PATIENCE, "GET {path} did not converge: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the read side has `id` at `version`.
    async fn balance_at(&self, id: &str, version: u64) -> Value {
        self.eventually(&format!("/accounts/{id}/balance"), false, |status, body| {
            status == StatusCode::OK && body["version"].as_u64() == Some(version)
        })
        .await
    }

    /// The parked records of `consumer`, `(streamKey, position)` in listing order, once there are
    /// `count` of them.
    async fn parked(&self, consumer: &str, count: usize) -> Vec<Value> {
        let page = self
            .eventually(&format!("/admin/parked?consumer={consumer}"), true, |status, body| {
                status == StatusCode::OK && body["records"].as_array().is_some_and(|r| r.len() == count)
            })
            .await;
        page["records"].as_array().unwrap().clone()
    }
}

fn kafka_config() -> KafkaConfig {
    let brokers =
        std::env::var("KAFKA_BOOTSTRAP").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
            panic!(
                "KAFKA_BOOTSTRAP is not set: this test needs a Kafka broker and never skips. Run it through \
             `SERVICES=\"postgres kafka\" infra/scripts/with-services.sh`"
            )
        });
    let mut kafka = KafkaConfig::new(brokers);
    kafka.session_timeout_ms = 1_000;
    kafka.message_timeout_ms = 10_000;
    kafka
}

/// A batch consumer of `topics` in group `group_id`, handing each batch to `handle` until shutdown.
fn consume<F, Fut>(
    kafka: &KafkaConfig,
    group_id: String,
    topics: Vec<String>,
    shutdown: watch::Receiver<bool>,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(KafkaEvent) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let mut config = ConsumerConfig::new(group_id, topics);
    config.retry_backoff_initial_ms = 50;
    config.retry_backoff_max_ms = 200;
    let consumer = KafkaBatchConsumer::new(kafka, config).expect("the consumer is created");
    tokio::spawn(async move {
        consumer.run(handle, stopped(shutdown)).await.expect("the consumer runs until shutdown");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poisoned_streams_are_parked_in_order_the_partitions_move_on_and_a_retry_after_the_fix_applies_them()
{
    let run = Uuid::new_v4().simple().to_string();
    let (healthy, poisoned) = (format!("acc-{}-ok", &run[..8]), format!("acc-{}-bad", &run[..8]));
    let (source, destination) = (format!("acc-{}-src", &run[..8]), format!("acc-{}-dst", &run[..8]));
    let (good_transfer, bad_transfer) = (format!("t-{}-ok", &run[..8]), format!("t-{}-bad", &run[..8]));

    // Postgres stores behind the two faults, and the app over them.
    let settings = fresh_postgres::fresh_database(
        "corebank_parked",
        "This test needs PostgreSQL and never skips. Run it through \
         `SERVICES=\"postgres kafka\" infra/scripts/with-services.sh`",
    )
    .await;
    let pg = corebank_wiring::postgres::connect(settings).await.expect("postgres connects and migrates");
    let (projector_fault, saga_fault) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
    let mut stores = pg.stores.stores();
    stores.read_model = Arc::new(RefusesStream {
        inner: stores.read_model.clone(),
        stream_id: format!("account-{poisoned}"),
        on: projector_fault.clone(),
    });
    // The legs' keys carry the transfer's leg transaction ids, `xfer-<uuid of the transfer>-<leg>`.
    let transfer_id = corebank_domain::TransferId::parse(&bad_transfer).expect("a transfer id");
    let hold =
        corebank_domain::transfer::leg_transaction_id(&transfer_id, corebank_domain::transfer::Leg::Hold);
    let legs = hold.as_str().trim_end_matches(corebank_domain::transfer::Leg::Hold.as_str()).to_owned();
    stores.idempotency =
        Arc::new(RefusesClaims { inner: stores.idempotency.clone(), needle: legs, on: saga_fault.clone() });
    let config =
        AppConfig { admin_token: Some(secrecy::SecretString::from(ADMIN_TOKEN)), ..AppConfig::default() };
    let app = App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock));

    // Kafka: fresh topics, the relay publishing the outbox, the projection consumer on both topics.
    let kafka = kafka_config();
    let topics = Topics {
        account_events: format!("test.parked.accounts.{run}"),
        transfer_events: format!("test.parked.transfers.{run}"),
    };
    ensure_topics(&kafka, &topics.all(), 3).await.expect("topics are created");
    let (stop, stop_rx) = watch::channel(false);
    let publisher = Arc::new(KafkaPublisher::new(&kafka, topics.clone()).expect("the producer is created"));
    let relay = Arc::new(
        Relay::new(
            pg.outbox(),
            publisher,
            RelayConfig { poll_interval: Duration::from_millis(50), ..RelayConfig::default() },
        )
        .with_wakeup(pg.stores.events.head()),
    );
    let mut tasks = vec![tokio::spawn(relay.run(stopped(stop_rx.clone())))];
    let (projector, parking) = (app.projector.clone(), app.parking(projection::CONSUMER));
    tasks.push(consume(
        &kafka,
        format!("test-parked-projector-{run}"),
        topics.all().into_iter().map(str::to_owned).collect(),
        stop_rx.clone(),
        move |event| {
            let (projector, parking) = (projector.clone(), parking.clone());
            async move {
                projection::handle_kafka_event(&event, &projector, &parking)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bank = Bank {
        origin: format!("http://{}", listener.local_addr().expect("addr")),
        client: Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>(),
    };
    let deps = Deps::new(app.clone());
    let shutdown = stopped(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        corebank_runner::serve(listener, deps, shutdown).await.expect("serve");
    }));

    // --- The account topic: one stream refused by the projector. -------------------------------
    for id in [&healthy, &poisoned, &source, &destination] {
        bank.open(id).await;
    }
    for amount in [10, 20] {
        bank.deposit(&healthy, amount).await;
        bank.deposit(&poisoned, amount).await;
    }
    bank.deposit(&source, 100).await;
    assert_eq!(bank.balance_at(&healthy, 3).await["balanceMinorUnits"], "3000");
    let parked = bank.parked("projector", 3).await;
    let names: Vec<(String, u64)> = parked
        .iter()
        .map(|r| (r["streamKey"].as_str().unwrap().to_owned(), r["position"].as_u64().unwrap()))
        .collect();
    let stream = format!("account-{poisoned}");
    assert_eq!(names, [1, 2, 3].map(|v| (stream.clone(), v)).to_vec(), "the stream, parked in order");
    assert!(parked[0]["error"].as_str().unwrap().contains("refused by the fault"), "{}", parked[0]);
    assert!(
        parked[1]["error"].as_str().unwrap().starts_with(&format!("parked behind {stream} v1")),
        "{}",
        parked[1]
    );

    // A later batch: the healthy stream goes on, the parked one parks behind.
    bank.deposit(&healthy, 5).await;
    bank.deposit(&poisoned, 7).await;
    assert_eq!(bank.balance_at(&healthy, 4).await["balanceMinorUnits"], "3500");
    let parked = bank.parked("projector", 4).await;
    assert_eq!(parked[3]["position"], 4, "{parked:?}");
    // (A balance read would fall back to the event store; the read table itself has nothing.)
    let row = app.stores.read_model.summary(&poisoned).await.expect("the read table answers");
    assert_eq!(row, None, "nothing of the parked stream reached the read table");

    // --- The transfer topic: one transfer refused by the saga. ---------------------------------
    saga_fault.store(true, Ordering::SeqCst);
    for (id, amount) in [(&good_transfer, 10), (&bad_transfer, 20)] {
        bank.command(
            "/transfers",
            json!({"transferId": id, "sourceAccountId": source, "destinationAccountId": destination,
                   "amount": amount, "currency": "USD"}),
        )
        .await;
    }
    let (saga_app, saga_parking) = (app.saga.clone(), app.parking(saga::CONSUMER));
    tasks.push(consume(
        &kafka,
        format!("test-parked-saga-{run}"),
        vec![topics.transfer_events.clone()],
        stop_rx.clone(),
        move |event| {
            let (saga_app, saga_parking) = (saga_app.clone(), saga_parking.clone());
            async move {
                saga::handle_kafka_event(&event, &saga_app, &saga_parking)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    ));
    let settled = bank
        .eventually(&format!("/transfers/{good_transfer}"), false, |status, body| {
            status == StatusCode::OK && body["status"] == "COMPLETED"
        })
        .await;
    assert_eq!(settled["status"], "COMPLETED", "the other transfer of the topic settled: {settled}");
    let parked = bank.parked("saga", 1).await;
    assert_eq!(parked[0]["streamKey"], format!("transfer-{bad_transfer}"));
    assert_eq!(parked[0]["position"], 1);
    let pending = bank
        .eventually(&format!("/transfers/{bad_transfer}"), false, |status, _| status == StatusCode::OK)
        .await;
    assert_eq!(pending["status"], "PENDING", "the parked transfer did not move: {pending}");

    // --- Health counts what is parked. ----------------------------------------------------------
    let health = bank
        .eventually("/health", false, |status, body| {
            status == StatusCode::SERVICE_UNAVAILABLE && body["checks"]["parked"]["count"] == 5
        })
        .await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["checks"]["parked"]["status"], "parked");
    assert!(health["checks"]["parked"]["oldestAgeSecs"].is_i64(), "{health}");

    // --- The fix, then the retries. ----------------------------------------------------------
    let retry = |consumer: &str, stream: String| format!("/admin/parked/{consumer}/streams/{stream}/retry");
    projector_fault.store(false, Ordering::SeqCst);
    let (status, outcome) = bank.send(Method::POST, &retry("projector", stream.clone()), None, true).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["applied"], json!([1, 2, 3, 4]), "applied in order: {outcome}");
    assert_eq!(outcome["stillParked"], 0);
    assert!(outcome.get("failed").is_none(), "{outcome}");
    assert_eq!(bank.balance_at(&poisoned, 4).await["balanceMinorUnits"], "3700");

    saga_fault.store(false, Ordering::SeqCst);
    let (status, outcome) =
        bank.send(Method::POST, &retry("saga", format!("transfer-{bad_transfer}")), None, true).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    // The retry of the request runs the saga, whose leg events reach the consumer while the stream
    // is still parked: they park behind it and the same retry applies them, in order.
    let applied: Vec<u64> =
        outcome["applied"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(applied, (1..=applied.len() as u64).collect::<Vec<_>>(), "applied in order from 1: {outcome}");
    assert!(!applied.is_empty(), "{outcome}");
    assert_eq!(outcome["stillParked"], 0, "{outcome}");
    let settled = bank
        .eventually(&format!("/transfers/{bad_transfer}"), false, |status, body| {
            status == StatusCode::OK && body["status"] == "COMPLETED"
        })
        .await;
    assert_eq!(settled["status"], "COMPLETED", "{settled}");

    // The retried stream is live again, and nothing is parked.
    bank.deposit(&poisoned, 3).await;
    assert_eq!(bank.balance_at(&poisoned, 5).await["balanceMinorUnits"], "4000");
    let health = bank
        .eventually("/health", false, |status, body| {
            status == StatusCode::OK && body["checks"]["parked"]["count"] == 0
        })
        .await;
    assert_eq!(health["status"], "ok", "{health}");
    let (status, again) = bank.send(Method::POST, &retry("projector", stream), None, true).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing left to retry: {again}");

    let _ = stop.send(true);
    for task in tasks {
        task.await.expect("a task ends cleanly");
    }
}
