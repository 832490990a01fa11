//! The durable store under a crash: the runner (the real binary, `STORE_KIND=sqlite`) is killed with
//! SIGKILL in the middle of a stream of deposits and started again on the same data directory. Every
//! deposit it acknowledged (201) must still be there, every deposit whose answer was lost must resolve
//! to exactly one outcome when retried with its Idempotency-Key, and the read side must catch up from
//! the saved cursors: each balance equals the sum of the deposits acknowledged for it.

#![cfg(test)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use uuid::Uuid;

const ACCOUNTS: usize = 8;
const DEPOSIT_MINOR: u64 = 100;

type Http = Client<HttpConnector, Full<Bytes>>;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The runner's process, killed when dropped, so a failing assertion leaves no runner behind.
struct Runner(Child);

impl Runner {
    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_runner(dir: &Path, port: u16) -> Runner {
    let child = Command::new(env!("CARGO_BIN_EXE_corebank-runner"))
        .env("STORE_KIND", "sqlite")
        .env("DATA_DIR", dir)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        // A claim the kill interrupted holds its key this long; retries before then answer 409.
        .env("IDEMPOTENCY_LEASE_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Runner(child)
}

async fn wait_until_serving(http: &Http, port: u16) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok((StatusCode::OK, _)) = call(http, port, Method::GET, "/health", None, None).await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the runner did not serve /health within 30 s");
}

/// One request; `Err` when no answer came (refused, reset, killed mid-request).
async fn call(
    http: &Http,
    port: u16,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value), String> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}/api{path}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), http.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

fn deposit_body(txid: &str) -> serde_json::Value {
    serde_json::json!({"amount": 1.00, "currency": "USD", "transactionId": txid})
}

/// What one writer saw: deposits acknowledged, and the keys whose answer was lost.
#[derive(Default)]
struct Outcomes {
    acknowledged: u64,
    unanswered: Vec<String>,
}

async fn deposit_until(http: Http, port: u16, account: String, stop: Arc<AtomicBool>) -> Outcomes {
    let mut outcomes = Outcomes::default();
    while !stop.load(Ordering::SeqCst) {
        let key = Uuid::new_v4().to_string();
        let path = format!("/accounts/{account}/deposits");
        match call(&http, port, Method::POST, &path, Some(&key), Some(deposit_body(&key))).await {
            Ok((StatusCode::CREATED, _)) => outcomes.acknowledged += 1,
            Ok((status, body)) => panic!("deposit answered {status}: {body}"),
            Err(_) => {
                outcomes.unanswered.push(key);
                // The server is gone; wait for the test to stop the writers.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    outcomes
}

/// The read side's balance (minor units) and stream version of an account.
async fn balance(http: &Http, port: u16, account: &str) -> (u64, u64) {
    let (status, body) =
        call(http, port, Method::GET, &format!("/accounts/{account}/balance"), None, None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    (body["balanceMinorUnits"].as_str().unwrap().parse().unwrap(), body["version"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_deposits_survive_a_sigkill_and_the_read_side_catches_up_after_the_restart() {
    let dir = std::env::temp_dir().join(format!("corebank-crash-{}", Uuid::new_v4().simple()));
    let port = free_port();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();

    let mut runner = start_runner(&dir, port);
    wait_until_serving(&http, port).await;
    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("crash-{i}")).collect();
    for account in &accounts {
        let body = serde_json::json!({"accountId": account, "ownerId": "owner-1", "currency": "USD"});
        let key = Uuid::new_v4().to_string();
        let (status, body) =
            call(&http, port, Method::POST, "/accounts", Some(&key), Some(body)).await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = accounts
        .iter()
        .map(|account| tokio::spawn(deposit_until(http.clone(), port, account.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    runner.kill();
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.unwrap());
    }
    let acknowledged_before: u64 = outcomes.iter().map(|o| o.acknowledged).sum();
    assert!(acknowledged_before > 50, "only {acknowledged_before} deposits before the kill: no load to lose");

    let mut runner = start_runner(&dir, port);
    wait_until_serving(&http, port).await;
    // A lost answer resolves to one outcome: applied before the kill (the stored answer comes back),
    // or never applied (it runs now, once the interrupted claim's lease has lapsed). Either way the
    // deposit counts once.
    for (account, outcome) in accounts.iter().zip(outcomes.iter_mut()) {
        for key in std::mem::take(&mut outcome.unanswered) {
            let path = format!("/accounts/{account}/deposits");
            let retried_until = Instant::now() + Duration::from_secs(30);
            loop {
                let (status, body) =
                    call(&http, port, Method::POST, &path, Some(&key), Some(deposit_body(&key)))
                        .await
                        .unwrap();
                if status == StatusCode::CONFLICT
                    && body["code"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"
                    && Instant::now() < retried_until
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                assert_eq!(status, StatusCode::CREATED, "retry of {key}: {body}");
                break;
            }
            outcome.acknowledged += 1;
        }
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    for (account, outcome) in accounts.iter().zip(&outcomes) {
        // One event per deposit after the account's creation: nothing lost, nothing applied twice.
        let expected = (outcome.acknowledged * DEPOSIT_MINOR, 1 + outcome.acknowledged);
        loop {
            let seen = balance(&http, port, account).await;
            if seen == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{account}: (balance, version) {seen:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    runner.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
