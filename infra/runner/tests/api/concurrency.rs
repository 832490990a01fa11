//! Concurrent commands on one account: serialised or retried, never overdrawn, never a 409 to the
//! client (docs/limits.md, "Attempts per command": up to 50 concurrent commands never surface
//! CONCURRENCY_CONFLICT).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::helpers::{Resp, config, key, spawn_app, spawn_faulty_app, txid};

async fn all<F>(tasks: impl IntoIterator<Item = F>) -> Vec<Resp>
where
    F: std::future::Future<Output = Resp> + Send + 'static,
{
    let mut set = JoinSet::new();
    for task in tasks {
        set.spawn(task);
    }
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_withdrawals_never_overdraw_and_never_surface_a_conflict() {
    let app = Arc::new(spawn_app().await);
    app.new_account("acc-cw", "USD").await;
    app.deposit_ok("acc-cw", "100", "USD").await;
    let responses = all((0..50).map(|_| {
        let app = app.clone();
        async move { app.post_withdrawal(&key(), "acc-cw", "3", "USD", &txid()).await }
    }))
    .await;
    let mut accepted_versions = BTreeSet::new();
    for r in &responses {
        match r.code() {
            201 => {
                assert!(accepted_versions.insert(r.version()), "two 201s with one version: {}", r.text);
            }
            400 => r.error(400, "INSUFFICIENT_FUNDS"),
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    // 100.00 / 3.00: exactly 33 fit, whatever the interleaving.
    let accepted = accepted_versions.len() as u64;
    assert_eq!(accepted, 33);
    assert_eq!(accepted_versions, (3..3 + accepted).collect());
    let (minor, version) = app.balance_minor("acc-cw").await;
    assert_eq!(minor, (10_000 - accepted * 300).to_string());
    assert_eq!(version, 2 + accepted);
    assert_eq!(app.stored_version("acc-cw").await, 2 + accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deposits_all_succeed_with_a_gapless_history() {
    let app = Arc::new(spawn_app().await);
    app.new_account("acc-cd", "EUR").await;
    let responses = all((0..50).map(|_| {
        let app = app.clone();
        async move { app.post_deposit(&key(), "acc-cd", "1.01", "EUR", &txid()).await }
    }))
    .await;
    let mut versions = BTreeSet::new();
    for r in responses {
        let r = r.accepted("acc-cd");
        versions.insert(r.version());
    }
    assert_eq!(versions, (2..=51).collect());
    let history = app.get_history("acc-cd", "").await;
    let entries = history.body["entries"].as_array().expect("entries");
    let got: Vec<u64> = entries.iter().map(|e| e["streamVersion"].as_u64().expect("version")).collect();
    assert_eq!(got, (1..=51).collect::<Vec<_>>());
    let balance = app.get_balance("acc-cd").await;
    assert_eq!(balance.raw("balance"), "50.5");
    assert_eq!(balance.body["balanceMinorUnits"], "5050");
    assert_eq!(balance.version(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_under_one_key_get_one_answer_or_in_progress_and_write_one_event() {
    let app = Arc::new(spawn_app().await);
    app.new_account("acc-ck", "USD").await;
    let k = key();
    let tx = txid();
    let responses = all((0..50).map(|_| {
        let (app, k, tx) = (app.clone(), k.clone(), tx.clone());
        async move { app.post_deposit(&k, "acc-ck", "7", "USD", &tx).await }
    }))
    .await;
    let mut bodies = BTreeSet::new();
    for r in &responses {
        match r.code() {
            201 => {
                bodies.insert(r.text.clone());
            }
            409 => r.error(409, "IDEMPOTENCY_REQUEST_IN_PROGRESS"),
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    assert_eq!(bodies.len(), 1, "every 201 is the same answer: {bodies:?}");
    assert_eq!(app.stored_version("acc-ck").await, 2);
    assert_eq!(app.balance_minor("acc-ck").await, ("700".to_owned(), 2));
    // After the dust settles the key replays that one answer.
    let replay = app.post_deposit(&k, "acc-ck", "7", "USD", &tx).await;
    assert_eq!(bodies.first(), Some(&replay.text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_a_running_request_answers_in_progress_and_writes_nothing() {
    let (app, faults) = spawn_faulty_app(config()).await;
    let app = Arc::new(app);
    app.new_account("acc-held", "USD").await;
    let k = key();
    // The first request claims the key and is parked inside the command, still running.
    faults.park_next();
    let first = tokio::spawn({
        let (app, k) = (app.clone(), k.clone());
        async move { app.post_deposit(&k, "acc-held", "9", "USD", "tx-held").await }
    });
    faults.wait_parked().await;
    let resp = app.post_deposit(&k, "acc-held", "9", "USD", "tx-held").await;
    resp.error(409, "IDEMPOTENCY_REQUEST_IN_PROGRESS");
    // Another body under the held key is a reuse, running or not.
    app.post_deposit(&k, "acc-held", "8", "USD", "tx-held").await.error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.stored_version("acc-held").await, 1);
    // The first request finishes, and its answer is the key's answer from then on.
    faults.release();
    let first = first.await.expect("first request").accepted("acc-held");
    assert_eq!(first.version(), 2);
    let replay = app.post_deposit(&k, "acc-held", "9", "USD", "tx-held").await;
    assert_eq!(replay.text, first.text);
    assert_eq!(app.stored_version("acc-held").await, 2);
}

#[tokio::test]
async fn exhausted_conflict_retries_answer_concurrency_conflict_unstored_so_the_retry_succeeds() {
    let (app, faults) = spawn_faulty_app(corebank_app::AppConfig { retry_attempts_max: 3, ..config() }).await;
    app.new_account("acc-cc", "USD").await;
    faults.set_conflict(true);
    let k = key();
    let tx = txid();
    let resp = app.post_deposit(&k, "acc-cc", "2", "USD", &tx).await;
    resp.error(409, "CONCURRENCY_CONFLICT");
    assert_eq!(app.stored_version("acc-cc").await, 1);
    // A transient failure is not stored: the same key and body run again once the contention is gone.
    faults.set_conflict(false);
    let ok = app.post_deposit(&k, "acc-cc", "2", "USD", &tx).await.accepted("acc-cc");
    assert_eq!(ok.version(), 2);
    assert_eq!(app.balance_minor("acc-cc").await, ("200".to_owned(), 2));
}
