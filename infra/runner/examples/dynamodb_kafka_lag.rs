//! Benchmark (not a test): end-to-end projection lag and append latency of the runner mode
//! `STORE_KIND=dynamodb PIPELINE=kafka` against local emulators (moto and tansu).
//!
//! ```sh
//! SERVICES="dynamodb kafka" infra/scripts/with-services.sh \
//!   cargo run --release -p corebank-runner --example dynamodb_kafka_lag
//! ```
//!
//! It starts the mode in process on fresh tables, topics and consumer group, then, one command at a
//! time (so no queueing hides in the figures):
//! - **deposit latency**: `POST /api/accounts/{id}/deposits` until its 201, which is when the append
//!   is acknowledged (idempotency claim, load, `TransactWriteItems`);
//! - **projection lag**: from that 201 until the `account_summary` row shows the new version
//!   (DynamoDB Streams poll -> outbox handler -> Kafka -> consumer -> projector), polled every
//!   `BENCH_POLL_MS` (2 ms), so each figure is exact to within that;
//!   split at the Kafka acknowledgement of the event (stream poll + outbox, then consumer + projector);
//! - **raw append latency**: `EventStore::append` of one event with its transaction record, alone.
//!
//! `BENCH_EVENTS` (200) commands over `BENCH_ACCOUNTS` (4) accounts, after `BENCH_WARMUP` (20).
//! moto is an emulator that serves one request at a time: the figures catch regressions in this
//! code; they say nothing about DynamoDB's latency in AWS.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

mod common;

use common::{env_or, report};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use bytes::Bytes;
use corebank_app::AppConfig;
use corebank_domain::account::{AccountCreated, AccountEvent, MoneyMoved};
use corebank_domain::{AccountId, Amount, Currency, EventEnvelope, EventMetadata, OwnerId, TransactionId};
use corebank_messaging::{EventPublisher, KafkaPublisher, PublishError};
use corebank_runner::modes::dynamodb::{Settings, start_with};
use corebank_runner::serve;
use corebank_store::{AppendRequest, StoredResponse, TransactionIntent, TransactionRecord};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

/// The Kafka publisher, noting when each event was acknowledged, to split the lag into its two halves.
struct Timed {
    inner: KafkaPublisher,
    acked: Mutex<HashMap<(String, u64), Instant>>,
}

#[async_trait]
impl EventPublisher for Timed {
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>> {
        let outcomes = self.inner.publish(events).await;
        let now = Instant::now();
        let mut acked = self.acked.lock().unwrap();
        for (event, outcome) in events.iter().zip(&outcomes) {
            if outcome.is_ok() {
                acked.entry((event.stream_id.clone(), event.version)).or_insert(now);
            }
        }
        outcomes
    }
}

fn envelope(stream_id: &str, version: u64, event: &AccountEvent) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: event.event_type().to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: event.payload(),
        metadata: EventMetadata::default(),
    }
}

#[tokio::main]
async fn main() {
    let events = env_or::<usize>("BENCH_EVENTS", 200);
    let accounts = env_or::<usize>("BENCH_ACCOUNTS", 4).max(1);
    let warmup = env_or::<usize>("BENCH_WARMUP", 20);
    let poll = Duration::from_millis(env_or::<u64>("BENCH_POLL_MS", 2));

    let run = Uuid::new_v4().simple().to_string();
    let settings = Settings::from_lookup(|name| match name {
        "TABLE_PREFIX" => Some(format!("bench_{run}_")),
        "KAFKA_ACCOUNT_EVENTS_TOPIC" => Some(format!("bench.account-events.{run}")),
        "KAFKA_TRANSFER_EVENTS_TOPIC" => Some(format!("bench.transfer-events.{run}")),
        "PROJECTOR_GROUP_ID" => Some(format!("bench-projector-{run}")),
        "KAFKA_SESSION_TIMEOUT_MS" => Some("1000".to_owned()),
        other => std::env::var(other).ok(),
    })
    .expect("settings: run under infra/scripts/with-services.sh (KAFKA_BOOTSTRAP, AWS_ENDPOINT_URL)");
    println!(
        "DynamoDB + Kafka (local emulators): events table {}, poll idle {} ms, consumer window {} ms",
        settings.tables.events,
        settings.poller.idle_poll_ms,
        corebank_delivery::emulators::kafka_consumer::ConsumerConfig::DEFAULT_MAX_WAIT_MS
    );

    let timed = Arc::new(Timed {
        inner: KafkaPublisher::new(&settings.kafka, settings.topics.clone()).expect("producer"),
        acked: Mutex::default(),
    });
    let (stop, stopped) = watch::channel(false);
    let started = start_with(AppConfig::default(), settings, Some(timed.clone()), stopped.clone())
        .await
        .expect("mode starts");
    let app = started.deps.app.clone();
    let mut tasks: Vec<_> = started.tasks.into_iter().map(tokio::spawn).collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}/api", listener.local_addr().unwrap());
    let deps = started.deps;
    let mut shutdown = stopped;
    tasks.push(tokio::spawn(async move {
        let _ = serve(listener, deps, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let post = |path: String, body: String| {
        let client = client.clone();
        let origin = origin.clone();
        async move {
            let request = Request::builder()
                .method(Method::POST)
                .uri(format!("{origin}{path}"))
                .header("content-type", "application/json")
                .header("idempotency-key", format!("key-{}", Uuid::new_v4()))
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let response = client.request(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body
        }
    };

    let ids: Vec<String> = (0..accounts).map(|_| format!("bench-{}", Uuid::new_v4().simple())).collect();
    for id in &ids {
        post("/accounts".to_owned(), format!(r#"{{"accountId":"{id}","ownerId":"bench","currency":"USD"}}"#))
            .await;
    }

    let mut deposit_latency = Vec::with_capacity(events);
    let mut lag = Vec::with_capacity(events);
    let mut to_kafka = Vec::with_capacity(events);
    let mut from_kafka = Vec::with_capacity(events);
    for i in 0..warmup + events {
        let id = &ids[i % ids.len()];
        let body =
            format!(r#"{{"amount":1.25,"currency":"USD","transactionId":"tx-{}"}}"#, Uuid::new_v4().simple());
        let sent = Instant::now();
        let accepted = post(format!("/accounts/{id}/deposits"), body).await;
        let acked = Instant::now();
        let version = accepted["version"].as_u64().unwrap();
        loop {
            let summary = app.stores.read_model.summary(id).await.unwrap();
            if summary.is_some_and(|s| s.version >= version) {
                break;
            }
            assert!(acked.elapsed() < Duration::from_secs(60), "{id} v{version} never projected");
            tokio::time::sleep(poll).await;
        }
        let projected = Instant::now();
        if i >= warmup {
            deposit_latency.push(acked - sent);
            lag.push(projected - acked);
            let published = timed.acked.lock().unwrap().get(&(format!("account-{id}"), version)).copied();
            if let Some(published) = published {
                to_kafka.push(published.saturating_duration_since(acked));
                from_kafka.push(projected.saturating_duration_since(published));
            }
        }
    }

    // Raw appends: one event plus its transaction record, as a deposit writes, on a stream of its own.
    let account = AccountId::parse(&format!("raw-{run}")).unwrap();
    let stream = format!("account-{}", account.as_str());
    let usd = Currency::parse("USD").unwrap();
    let created = AccountEvent::Created(AccountCreated {
        account_id: account.clone(),
        owner_id: OwnerId::parse("bench").unwrap(),
        currency: usd,
    });
    let append =
        |version: u64, events: Vec<EventEnvelope>, transaction: Option<TransactionRecord>| AppendRequest {
            stream_id: stream.clone(),
            expected_version: version,
            events,
            idempotency: None,
            transaction,
        };
    app.stores.events.append(append(0, vec![envelope(&stream, 1, &created)], None)).await.unwrap();
    let mut raw = Vec::with_capacity(events);
    for i in 0..events as u64 {
        let transaction_id = format!("raw-tx-{}", Uuid::new_v4().simple());
        let deposit = AccountEvent::Deposited(MoneyMoved {
            account_id: account.clone(),
            amount: Amount::from_minor(1).unwrap(),
            currency: usd,
            transaction_id: TransactionId::parse(&transaction_id).unwrap(),
            balance_after: i64::try_from(i).unwrap() + 1,
        });
        let record = TransactionRecord {
            transaction_id,
            intent: TransactionIntent {
                account_id: account.as_str().to_owned(),
                operation: "deposit".to_owned(),
                amount_minor: 1,
                currency: "USD".to_owned(),
            },
            response: StoredResponse { status: 201, body: "{}".to_owned(), code: None },
            recorded_at: chrono::Utc::now(),
        };
        let started = Instant::now();
        app.stores
            .events
            .append(append(i + 1, vec![envelope(&stream, i + 2, &deposit)], Some(record)))
            .await
            .unwrap();
        raw.push(started.elapsed());
    }

    report("deposit (HTTP 201)", deposit_latency);
    report("projection lag (201->row)", lag);
    report("  201 -> Kafka ack", to_kafka);
    report("  Kafka ack -> row", from_kafka);
    report("EventStore::append (moto)", raw);

    let _ = stop.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
