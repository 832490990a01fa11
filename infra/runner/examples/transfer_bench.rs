//! Benchmark (not a test): transfer completion latency and transfer throughput through the runner.
//!
//! ```sh
//! # the embedded runner, started in this process on an ephemeral port
//! cargo run --release -p corebank-runner --example transfer_bench
//! # any running runner (another mode, another machine)
//! BENCH_BASE_URL=http://127.0.0.1:3000/api cargo run --release -p corebank-runner --example transfer_bench
//! ```
//!
//! It opens `BENCH_ACCOUNTS` (1000) USD accounts with 1,000,000.00 each, then runs `BENCH_CLIENTS` (50)
//! concurrent clients for `BENCH_SECONDS` (20) seconds. Each client loops: pick two distinct random
//! accounts, `POST /transfers` (fresh Idempotency-Key and transferId, 1.00 to 100.00), then poll
//! `GET /transfers/{id}` every `BENCH_POLL_MS` (1) ms until it says COMPLETED or FAILED.
//!
//! Reported:
//! - **completion latency**: from sending the POST until the first GET that shows the transfer done
//!   (includes the 202, the saga's three account steps and three transfer steps, the projection of
//!   the transfer's status, and up to one poll interval);
//! - **POST latency** (the 202);
//! - **transfers/s**: completed transfers per second of the run, with 50 clients each waiting for its
//!   transfer to complete before starting the next (a closed loop);
//! - then, with `BENCH_FIRE=1`, an open burst: every client posts without waiting for completion, and
//!   the figure is transfers completed per second until the last one is done.
//!
//! `BENCH_WARMUP_SECONDS` (0) runs the closed loop that long before counting.
//!
//! At the end it checks the books through the read model: every transfer done, the sum of all
//! balances unchanged and no hold open. Where the read side trails the writes (the Kafka modes), it
//! waits up to `BENCH_SETTLE_SECONDS` (180) for the read tables to settle and reports how long that took.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

mod common;

use common::{env_or, report};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

type Http = Client<HttpConnector, Full<Bytes>>;

/// xorshift64*, seeded per client: picks accounts and amounts.
struct Rng(u64);

impl Rng {
    fn with_seed(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `range`.
    fn u64(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        range.start + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (range.end - range.start).max(1)
    }
}

async fn send(
    http: &Http,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: String,
) -> (StatusCode, serde_json::Value) {
    let mut builder = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    let response = http.request(builder.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Posts one transfer and returns its id and the POST latency.
async fn post_transfer(http: &Http, base: &str, accounts: u64, rng: &mut Rng) -> (String, Duration) {
    let source = rng.u64(0..accounts);
    let destination = (source + 1 + rng.u64(0..accounts - 1)) % accounts;
    let id = format!("bench-{}", Uuid::new_v4().simple());
    let body = format!(
        r#"{{"transferId":"{id}","sourceAccountId":"bench-{source}","destinationAccountId":"bench-{destination}","amount":{},"currency":"USD"}}"#,
        rng.u64(1..101)
    );
    let started = Instant::now();
    let (status, answer) =
        send(http, Method::POST, &format!("{base}/transfers"), Some(&Uuid::new_v4().to_string()), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    (id, started.elapsed())
}

/// Polls until the transfer is done; returns its status.
async fn wait_done(http: &Http, base: &str, id: &str, poll: Duration) -> String {
    loop {
        let (status, body) =
            send(http, Method::GET, &format!("{base}/transfers/{id}"), None, String::new()).await;
        if status == StatusCode::OK && body["status"] != "PENDING" {
            return body["status"].as_str().unwrap_or_default().to_owned();
        }
        tokio::time::sleep(poll).await;
    }
}

/// The sum of all posted balances and of all open holds, read through the read model (no
/// `minVersion`), so it shows what the read tables hold.
async fn books(http: &Http, base: &str, accounts: u64) -> (i64, i64) {
    books_at(http, base, &vec![None; usize::try_from(accounts).unwrap()]).await
}

/// As [`books`], but account `bench-{i}` is read at `min_versions[i]` or later when given: the
/// answer then comes from the event store while the read model is behind that version.
async fn books_at(http: &Http, base: &str, min_versions: &[Option<u64>]) -> (i64, i64) {
    let (mut total, mut held) = (0, 0);
    for (i, min_version) in min_versions.iter().enumerate() {
        let query = min_version.map_or_else(String::new, |v| format!("?minVersion={v}"));
        let (status, body) = send(
            http,
            Method::GET,
            &format!("{base}/accounts/bench-{i}/balance{query}"),
            None,
            String::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let minor: i64 = body["balanceMinorUnits"].as_str().unwrap().parse().unwrap();
        let available: i64 = body["availableBalanceMinorUnits"].as_str().unwrap().parse().unwrap();
        total += minor;
        held += minor - available;
    }
    (total, held)
}

#[tokio::main]
async fn main() {
    let accounts = env_or::<u64>("BENCH_ACCOUNTS", 1_000).max(2);
    let clients = env_or::<u64>("BENCH_CLIENTS", 50);
    let seconds = env_or::<u64>("BENCH_SECONDS", 20);
    let poll = Duration::from_millis(env_or::<u64>("BENCH_POLL_MS", 1));
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::try_from(clients * 2).unwrap_or(128))
        .build_http();

    let (_stop, base) = match std::env::var("BENCH_BASE_URL") {
        Ok(base) => (None, base.trim_end_matches('/').to_owned()),
        Err(_) => {
            let (deps, pipeline) = corebank_runner::embedded(corebank_app::AppConfig::default(), true);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = watch::channel(false);
            let until = |mut rx: watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            tokio::spawn(pipeline.run(until(stopped.clone())));
            tokio::spawn(corebank_runner::serve(listener, deps, until(stopped)));
            (Some(stop), format!("http://{addr}/api"))
        }
    };
    println!("transfers against {base}: {accounts} accounts, {clients} clients, {seconds} s, poll {poll:?}");

    // Open the accounts, 25 at a time, keeping each account's version after its deposit.
    let opened = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in (0..accounts).collect::<Vec<_>>().chunks(usize::try_from(accounts.div_ceil(25)).unwrap()) {
        let (http, base, chunk) = (http.clone(), base.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut versions = Vec::with_capacity(chunk.len());
            for i in chunk {
                let body = format!(r#"{{"accountId":"bench-{i}","ownerId":"owner-{i}","currency":"USD"}}"#);
                let key = Uuid::new_v4().to_string();
                let (status, answer) =
                    send(&http, Method::POST, &format!("{base}/accounts"), Some(&key), body).await;
                assert!(
                    status == StatusCode::CREATED || answer["code"] == "ACCOUNT_ALREADY_EXISTS",
                    "{answer}"
                );
                let body =
                    format!(r#"{{"amount":1000000,"currency":"USD","transactionId":"{}"}}"#, Uuid::new_v4());
                let (status, answer) = send(
                    &http,
                    Method::POST,
                    &format!("{base}/accounts/bench-{i}/deposits"),
                    Some(&Uuid::new_v4().to_string()),
                    body,
                )
                .await;
                assert_eq!(status, StatusCode::CREATED, "{answer}");
                versions.push((i, answer["version"].as_u64().unwrap()));
            }
            versions
        });
    }
    let mut deposited = vec![None; usize::try_from(accounts).unwrap()];
    while let Some(joined) = tasks.join_next().await {
        for (i, version) in joined.unwrap() {
            deposited[usize::try_from(i).unwrap()] = Some(version);
        }
    }
    println!("opened {accounts} accounts in {:.1} s", opened.elapsed().as_secs_f64());
    // The books before the transfers, read at each account's deposit version: where the read side
    // trails the writes (the Kafka modes answer a command before projecting it), a plain read here
    // could still show an account opened but not yet credited, and the final check would then wait
    // for a sum the read side can never reach.
    // (The plain read comes first, where the books were once taken, to show how far behind it is.)
    let (seen, _) = books(&http, &base, accounts).await;
    let (before, _) = books_at(&http, &base, &deposited).await;
    if seen != before {
        println!(
            "read side still behind the openings: it shows {seen} of {before} minor units (the books use the event store)"
        );
    }

    // Closed loop: each client waits for its transfer to complete.
    // Transfers posted during the warm-up run but are not counted (a read side still working off the
    // account openings would otherwise make the first transfers look slow).
    let warmup = Duration::from_secs(env_or::<u64>("BENCH_WARMUP_SECONDS", 0));
    let stop = Arc::new(AtomicBool::new(false));
    let counted_from = Instant::now() + warmup;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        tasks.spawn(async move {
            let mut rng = Rng::with_seed(c);
            let (mut done, mut posts, mut failed) = (Vec::new(), Vec::new(), 0_u64);
            while !stop.load(Ordering::Relaxed) {
                let begun = Instant::now();
                let (id, post) = post_transfer(&http, &base, accounts, &mut rng).await;
                let status = wait_done(&http, &base, &id, poll).await;
                if begun >= counted_from {
                    posts.push(post);
                    failed += u64::from(status == "FAILED");
                    done.push(begun.elapsed());
                }
            }
            (done, posts, failed)
        });
    }
    tokio::time::sleep(warmup).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut posts, mut failed) = (Vec::new(), Vec::new(), 0);
    while let Some(joined) = tasks.join_next().await {
        let (d, p, f) = joined.unwrap();
        done.extend(d);
        posts.extend(p);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = done.len() as f64 / elapsed;
    println!(
        "closed loop: {} transfers completed ({failed} FAILED) in {elapsed:.1} s = {rate:.0} transfers/s",
        done.len()
    );
    report("completion latency", done);
    report("POST /transfers (202)", posts);

    if env_or::<u64>("BENCH_FIRE", 0) == 1 {
        // Open burst: post for the same duration without waiting, then wait for the last completion.
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
            tasks.spawn(async move {
                let mut rng = Rng::with_seed(1_000 + c);
                let mut ids = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    ids.push(post_transfer(&http, &base, accounts, &mut rng).await.0);
                }
                ids
            });
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut ids = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            ids.extend(joined.unwrap());
        }
        let posted = started.elapsed().as_secs_f64();
        for id in &ids {
            wait_done(&http, &base, id, Duration::from_millis(5)).await;
        }
        let drained = started.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let (accepted, completed) = (ids.len() as f64 / posted, ids.len() as f64 / drained);
        println!(
            "open burst: {} transfers accepted in {posted:.1} s ({accepted:.0}/s), all done after {drained:.1} s ({completed:.0} completed/s)",
            ids.len()
        );
    }

    // Where the read side trails the saga (the Kafka modes), the account summaries converge after
    // the transfers report done, once the projection has worked off its backlog: give them 3 minutes.
    let settling = Instant::now();
    let mut after = books(&http, &base, accounts).await;
    let deadline = settling + Duration::from_secs(env_or::<u64>("BENCH_SETTLE_SECONDS", 180));
    while after != (before, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = books(&http, &base, accounts).await;
    }
    let settled = settling.elapsed().as_secs_f64();
    assert_eq!(
        after,
        (before, 0),
        "the read side did not settle within {settled:.1} s: the sum of all balances changed or a hold is open"
    );
    let after = after.0;
    println!(
        "books: sum of {accounts} balances unchanged ({after} minor units), no open hold; read side settled in {settled:.1} s"
    );
}
