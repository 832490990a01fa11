//! Postgres figures for docs/performance.md; a server is needed, so this is a bench (never part of
//! `cargo test`). Each command makes a fresh database on the server in `DATABASE_URL`:
//!
//! - `append`: `PgEventStore::append` of 1 and of 10 events, p50/p99, beside a bare
//!   `BEGIN; INSERT .. (same rows); COMMIT` into a table without constraints;
//! - `load`: aggregate load (snapshot + tail, empty state cache) of accounts with 50, 10,000 and
//!   10,049 events;
//! - `seed-rebuild [accounts] [events-per-account]`: writes valid account streams with one SQL
//!   statement (default 10,000 x 100 = 1,000,000 events) and prints the database URL for
//!   `corebank-runner rebuild all`.
//!
//! `DATABASE_URL=... cargo bench -p corebank-delivery --features postgres --bench postgres -- append`

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_domain::account::{AccountCreated, AccountEvent, AccountState, MoneyMoved};
use corebank_domain::{AccountId, Amount, Currency, EventEnvelope, EventMetadata, OwnerId, TransactionId};
use corebank_store::postgres::{PgStores, Pool, migrate};
use corebank_store::{AppendRequest, Snapshot};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio_postgres::NoTls;
use uuid::Uuid;

async fn fresh_database(tag: &str) -> (String, Pool) {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL names the PostgreSQL server to measure");
    let server: tokio_postgres::Config = url.parse().expect("DATABASE_URL parses");
    let (client, connection) = server.connect(NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    let name = format!("corebank_bench_{tag}_{}", &Uuid::new_v4().simple().to_string()[..8]);
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    drop(client);
    let _ = driver.await;
    let mut config = server;
    config.dbname(&name);
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager).max_size(4).build().expect("pool");
    migrate(&pool).await.expect("migrate");
    let db_url = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => url,
    };
    (db_url, pool)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(label: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{label:<44} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    (p50, p99)
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn created(account: &str) -> AccountEvent {
    AccountEvent::Created(AccountCreated {
        account_id: AccountId::parse(account).unwrap(),
        owner_id: OwnerId::parse("owner-bench").unwrap(),
        currency: usd(),
    })
}

fn deposited(account: &str, version: u64) -> AccountEvent {
    AccountEvent::Deposited(MoneyMoved {
        account_id: AccountId::parse(account).unwrap(),
        amount: Amount::from_minor(100).unwrap(),
        currency: usd(),
        transaction_id: TransactionId::parse(&format!("t-{account}-{version}")).unwrap(),
        balance_after: i64::try_from(version - 1).unwrap() * 100,
    })
}

fn envelope(account: &str, version: u64) -> EventEnvelope {
    let event = if version == 1 { created(account) } else { deposited(account, version) };
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: format!("account-{account}"),
        version,
        event_type: event.event_type().to_owned(),
        schema_version: corebank_domain::account::ACCOUNT_EVENT_SCHEMA_VERSION,
        occurred_at: Utc::now(),
        payload: event.payload(),
        metadata: EventMetadata { actor: Some("bench".to_owned()), ..EventMetadata::default() },
    }
}

fn request(account: &str, at: u64, count: u64) -> AppendRequest {
    AppendRequest {
        stream_id: format!("account-{account}"),
        expected_version: at,
        events: (at + 1..=at + count).map(|v| envelope(account, v)).collect(),
        idempotency: None,
        transaction: None,
    }
}

const BARE_TABLE: &str = "CREATE TABLE bare_events (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
     stream_id TEXT, version BIGINT, event_id UUID, event_type TEXT, schema_version INTEGER, \
     occurred_at TIMESTAMPTZ, payload JSONB, metadata JSONB)";

const BARE_INSERT: &str = "INSERT INTO bare_events \
     (stream_id, version, event_id, event_type, schema_version, occurred_at, payload, metadata) \
     SELECT $1, u.v, u.id, u.t, u.s, u.o, u.p, u.m FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], \
     $5::integer[], $6::timestamptz[], $7::jsonb[], $8::jsonb[]) AS u(v, id, t, s, o, p, m)";

async fn bench_append() {
    const SAMPLES: usize = 2_000;
    const WARMUP: usize = 100;
    const STREAMS: usize = 100;
    let (_, pool) = fresh_database("append").await;
    let stores = PgStores::new(pool.clone());
    let events = stores.stores().events;
    pool.get().await.unwrap().batch_execute(BARE_TABLE).await.unwrap();
    let fsync: String = pool.get().await.unwrap().query_one("SHOW fsync", &[]).await.unwrap().get(0);
    let sync: String =
        pool.get().await.unwrap().query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
    println!("server: fsync={fsync} synchronous_commit={sync}");
    let mut ratios = Vec::new();
    for batch in [1_u64, 10] {
        let accounts: Vec<String> = (0..STREAMS)
            .map(|i| format!("bench-{batch}-{i}-{}", &Uuid::new_v4().simple().to_string()[..6]))
            .collect();
        let mut at = vec![0_u64; STREAMS];
        let mut append_samples = Vec::with_capacity(SAMPLES);
        let mut bare_samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + WARMUP {
            let s = i % STREAMS;
            let req = request(&accounts[s], at[s], batch);
            let bare_rows = req.events.clone();
            let started = Instant::now();
            events.append(req).await.expect("append");
            let took = started.elapsed();
            at[s] += batch;

            let mut client = pool.get().await.unwrap();
            let started_bare = Instant::now();
            let tx = client.transaction().await.unwrap();
            let versions: Vec<i64> = bare_rows.iter().map(|e| i64::try_from(e.version).unwrap()).collect();
            let ids: Vec<Uuid> = bare_rows.iter().map(|e| e.event_id).collect();
            let types: Vec<&str> = bare_rows.iter().map(|e| e.event_type.as_str()).collect();
            let schemas: Vec<i32> = bare_rows.iter().map(|_| 1).collect();
            let times: Vec<chrono::DateTime<Utc>> = bare_rows.iter().map(|e| e.occurred_at).collect();
            let payloads: Vec<&serde_json::Value> = bare_rows.iter().map(|e| &e.payload).collect();
            let metas: Vec<serde_json::Value> =
                bare_rows.iter().map(|e| serde_json::to_value(&e.metadata).unwrap()).collect();
            let statement = tx.prepare_cached(BARE_INSERT).await.unwrap();
            let stream = format!("bare-{s}");
            tx.execute(&statement, &[&stream, &versions, &ids, &types, &schemas, &times, &payloads, &metas])
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let took_bare = started_bare.elapsed();
            if i >= WARMUP {
                append_samples.push(took);
                bare_samples.push(took_bare);
            }
        }
        let (a50, a99) = report(&format!("append {batch} event(s) (PgEventStore::append)"), append_samples);
        let (b50, b99) = report(&format!("bare INSERT {batch} row(s); COMMIT"), bare_samples);
        ratios.push((batch, a50.as_secs_f64() / b50.as_secs_f64(), a99.as_secs_f64() / b99.as_secs_f64()));
    }
    for (batch, r50, r99) in ratios {
        println!("ratio append/bare, {batch} event(s): p50 {r50:.2}x  p99 {r99:.2}x");
    }
}

async fn bench_load() {
    const SAMPLES: usize = 1_000;
    let (_, pool) = fresh_database("load").await;
    let stores = PgStores::new(pool.clone());
    let app =
        App::new(AppConfig::default(), stores.stores(), corebank_api::renderer(), Arc::new(SystemClock));
    let mut accounts = Vec::new();
    for events in [50_u64, 10_000, 10_049] {
        let account = format!("load-{events}-{}", &Uuid::new_v4().simple().to_string()[..6]);
        let mut at = 0;
        while at < events {
            let n = (events - at).min(90);
            stores.stores().events.append(request(&account, at, n)).await.expect("append");
            at += n;
        }
        let stream = format!("account-{account}");
        // The snapshot the command service would have written at the last multiple of 50.
        let full = Instant::now();
        let state = app.commands.load(&stream).await.expect("full replay");
        let full = full.elapsed();
        let every = app.config.snapshot_every_versions.max(1);
        let snap_version = events / every * every;
        let snap_state = if snap_version == events {
            state
        } else {
            // Replay only up to the snapshot version for the snapshot itself.
            let all = stores.stores().events.load_stream(&stream, 0).await.unwrap();
            let mut st = AccountState::default();
            for e in all.iter().take(usize::try_from(snap_version).unwrap()) {
                let event = AccountEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap();
                st = corebank_domain::account::evolve(st, &event);
            }
            st
        };
        stores
            .stores()
            .snapshots
            .save(Snapshot {
                stream_id: stream.clone(),
                version: snap_version,
                schema_version: corebank_app::command::SNAPSHOT_SCHEMA_VERSION,
                state: serde_json::to_value(&snap_state).unwrap(),
            })
            .await
            .unwrap();
        println!("full replay of {events} events without a snapshot: {:.3} ms", full.as_secs_f64() * 1e3);
        accounts.push((events, snap_version, stream));
    }
    // Interleaved, so that background load on the machine falls on every account alike.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(SAMPLES); accounts.len()];
    for _ in 0..SAMPLES {
        for (i, (events, _, stream)) in accounts.iter().enumerate() {
            // A new app each time: its command service starts with an empty state cache, so every
            // load reads the snapshot and the tail, as a cold Lambda instance does.
            let cold = App::new(
                AppConfig::default(),
                stores.stores(),
                corebank_api::renderer(),
                Arc::new(SystemClock),
            );
            let started = Instant::now();
            let state = cold.commands.load(stream).await.expect("load");
            samples[i].push(started.elapsed());
            assert_eq!(state.version, *events);
        }
    }
    let mut medians = Vec::new();
    for ((events, snap_version, _), samples) in accounts.iter().zip(samples) {
        let (p50, _) = report(&format!("load {events} events (snapshot at {snap_version} + tail)"), samples);
        medians.push((*events, p50));
    }
    let base = medians[0].1.as_secs_f64();
    for (events, p50) in &medians[1..] {
        println!("ratio load {events} / load 50 events (p50): {:.2}x", p50.as_secs_f64() / base);
    }
}

async fn seed_rebuild(accounts: u64, per_account: u64) {
    let (url, pool) = fresh_database("rebuild").await;
    let created = created("ACCOUNT").payload().to_string();
    let deposit = deposited("ACCOUNT", 2).payload().to_string();
    let metadata =
        serde_json::to_string(&EventMetadata { actor: Some("seed".to_owned()), ..EventMetadata::default() })
            .unwrap();
    let client = pool.get().await.unwrap();
    let started = Instant::now();
    client
        .execute(
            "INSERT INTO streams (stream_id, version) \
             SELECT 'account-seed-' || a, $2 FROM generate_series(1, $1::bigint) a",
            &[&i64::try_from(accounts).unwrap(), &i64::try_from(per_account).unwrap()],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, occurred_at, \
                                 payload, metadata) \
             SELECT 'account-seed-' || a, v, gen_random_uuid(), \
                    CASE WHEN v = 1 THEN 'AccountCreated' ELSE 'MoneyDeposited' END, 1, \
                    timestamptz '2026-01-01' + v * interval '1 second', \
                    CASE WHEN v = 1 THEN jsonb_set($3::jsonb, '{accountId}', to_jsonb('seed-' || a)) \
                         ELSE jsonb_set(jsonb_set(jsonb_set($4::jsonb, '{accountId}', to_jsonb('seed-' || a)), \
                                  '{transactionId}', to_jsonb('t-seed-' || a || '-' || v)), \
                              '{balanceAfterMinorUnits}', to_jsonb(((v - 1) * 100)::text)) END, \
                    $5::jsonb \
             FROM generate_series(1, $1::bigint) a, generate_series(1, $2::bigint) v ORDER BY a, v",
            &[
                &i64::try_from(accounts).unwrap(),
                &i64::try_from(per_account).unwrap(),
                &created,
                &deposit,
                &metadata,
            ],
        )
        .await
        .unwrap();
    client.batch_execute("ANALYZE").await.unwrap();
    println!(
        "seeded {} events in {accounts} accounts in {:.1} s; deposit template {deposit}",
        accounts * per_account,
        started.elapsed().as_secs_f64()
    );
    println!("DATABASE_URL={url}");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("append") => bench_append().await,
        Some("load") => bench_load().await,
        Some("seed-rebuild") => {
            let accounts = args.get(1).map_or(10_000, |a| a.parse().expect("accounts"));
            let per_account = args.get(2).map_or(100, |a| a.parse().expect("events per account"));
            seed_rebuild(accounts, per_account).await;
        }
        _ => println!("usage: postgres [append | load | seed-rebuild [accounts] [events-per-account]]"),
    }
}
