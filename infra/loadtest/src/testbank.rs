//! A tiny in-memory bank speaking the HTTP contract, with injectable faults, so the whole tool (seeding, load,
//! settlement of lost replies, transfer polling, audit, report) can be tested without the real server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Faults the bank can inject.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Every Nth deposit is applied and stored for replay, but answered 500 (a lost reply).
    pub(crate) lose_reply_every: Option<u64>,
    /// Every Nth deposit is applied twice (a double-apply bug the audit must catch).
    pub(crate) double_apply_every: Option<u64>,
}

#[derive(Default)]
struct Account {
    minor: i64,
    versions: u64,
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    replies: HashMap<String, (u16, String)>,
    transfers: HashMap<String, (String, u32)>,
    deposits: u64,
}

type Shared = Arc<(Mutex<State>, Faults)>;

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

fn error(status: u16, code: &str) -> (u16, String) {
    (status, json!({"statusCode": status, "error": "x", "code": code, "message": code}).to_string())
}

fn accepted(id: &str, version: u64) -> (u16, String) {
    (201, json!({"status": "accepted", "accountId": id, "version": version, "eventIds": []}).to_string())
}

fn money(state: &mut State, faults: Faults, id: &str, body: &Value, deposit: bool) -> (u16, String) {
    let amount = body.get("amount").and_then(Value::as_i64).unwrap_or(0) * 100;
    let Some(account) = state.accounts.get_mut(id) else { return error(404, "ACCOUNT_NOT_FOUND") };
    if !deposit {
        if account.minor < amount {
            return error(400, "INSUFFICIENT_FUNDS");
        }
        account.minor -= amount;
        account.versions += 1;
        return accepted(id, account.versions);
    }
    account.minor += amount;
    account.versions += 1;
    state.deposits += 1;
    if faults.double_apply_every.is_some_and(|n| state.deposits.is_multiple_of(n)) {
        account.minor += amount;
    }
    accepted(id, account.versions)
}

fn command(state: &mut State, faults: Faults, path: &[&str], key: &str, body: &Value) -> (u16, String) {
    if let Some(stored) = state.replies.get(key) {
        return stored.clone();
    }
    let answer = match path {
        ["accounts"] => {
            let id = body.get("accountId").and_then(Value::as_str).unwrap_or_default().to_owned();
            if state.accounts.contains_key(&id) {
                error(409, "ACCOUNT_ALREADY_EXISTS")
            } else {
                state.accounts.insert(id.clone(), Account { minor: 0, versions: 1 });
                accepted(&id, 1)
            }
        }
        ["accounts", id, "deposits"] => money(state, faults, id, body, true),
        ["accounts", id, "withdrawals"] => money(state, faults, id, body, false),
        ["transfers"] => {
            let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            let (id, source, destination) =
                (field("transferId"), field("sourceAccountId"), field("destinationAccountId"));
            let amount = body.get("amount").and_then(Value::as_i64).unwrap_or(0) * 100;
            let funded = state.accounts.get(&source).is_some_and(|a| a.minor >= amount)
                && state.accounts.contains_key(&destination);
            let status = if funded {
                for (account, delta) in [(&source, -amount), (&destination, amount)] {
                    if let Some(a) = state.accounts.get_mut(account) {
                        a.minor += delta;
                        a.versions += 1;
                    }
                }
                "COMPLETED"
            } else {
                "FAILED"
            };
            state.transfers.insert(id.clone(), (status.to_owned(), 0));
            (202, json!({"transferId": id, "status": "PENDING"}).to_string())
        }
        _ => error(404, "NOT_FOUND"),
    };
    state.replies.insert(key.to_owned(), answer.clone());
    let lose = path.last() == Some(&"deposits")
        && answer.0 == 201
        && faults.lose_reply_every.is_some_and(|n| state.deposits.is_multiple_of(n));
    if lose { error(500, "INTERNAL") } else { answer }
}

fn query(state: &mut State, path: &[&str], params: &HashMap<&str, usize>) -> (u16, String) {
    match path {
        ["accounts", id, "balance"] => match state.accounts.get(*id) {
            Some(a) => (
                200,
                json!({"accountId": id, "balance": a.minor as f64 / 100.0, "balanceMinorUnits": a.minor.to_string(),
                       "currency": "USD", "status": "ACTIVE", "version": a.versions})
                .to_string(),
            ),
            None => error(404, "ACCOUNT_NOT_FOUND"),
        },
        ["accounts", id, "history"] => match state.accounts.get(*id) {
            Some(a) => {
                let limit = params.get("limit").copied().unwrap_or(100) as u64;
                let offset = params.get("offset").copied().unwrap_or(0) as u64;
                let entries: Vec<Value> = (offset + 1..=a.versions)
                    .take(limit as usize)
                    .map(|v| json!({"streamVersion": v, "eventType": "X"}))
                    .collect();
                (200, json!({"accountId": id, "entries": entries}).to_string())
            }
            None => error(404, "ACCOUNT_NOT_FOUND"),
        },
        ["transfers", id] => match state.transfers.get_mut(*id) {
            Some((status, polls)) => {
                *polls += 1;
                let shown = if *polls == 1 { "PENDING" } else { status.as_str() };
                (200, json!({"transferId": id, "status": shown}).to_string())
            }
            None => error(404, "NOT_FOUND"),
        },
        _ => error(404, "NOT_FOUND"),
    }
}

async fn handle(shared: Shared, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().trim_start_matches("/api/").to_owned();
    let raw_query = request.uri().query().unwrap_or_default().to_owned();
    let post = request.method() == http::Method::POST;
    let key = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = request.into_body().collect().await?.to_bytes();
    let segments: Vec<&str> = path.split('/').collect();
    let params: HashMap<&str, usize> = raw_query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let (state, faults) = &*shared;
    let mut state = state.lock().unwrap();
    let (status, text) = match (post, key) {
        (true, Some(key)) => {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            command(&mut state, *faults, &segments, &key, &body)
        }
        (true, None) => error(400, "IDEMPOTENCY_KEY_MISSING"),
        (false, _) => query(&mut state, &segments, &params),
    };
    Ok(reply(status, text))
}

/// Starts the bank on 127.0.0.1 (an ephemeral port) and returns its base URL.
pub(crate) async fn start(faults: Faults) -> String {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new((Mutex::new(State::default()), faults));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/api")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::args::Config;
    use crate::report::{self, Report};
    use crate::{audit, scenario};

    async fn run(faults: Faults, config: impl FnOnce(&mut Config)) -> Report {
        let mut c = Config {
            base_url: start(faults).await,
            duration_secs: 1,
            workers: 4,
            accounts: 12,
            seed_concurrency: 4,
            initial_deposit: 2_000,
            audit_timeout_secs: 5,
            ..Config::default()
        };
        c.weights.transfer = 10;
        config(&mut c);
        let ctx = Arc::new(scenario::Ctx::new(&c).unwrap());
        let setup = scenario::seed(&ctx, &c).await.unwrap();
        let load = scenario::run_load(&ctx, &c).await.unwrap();
        let audit = audit::run(&ctx, &c, load.end).await.unwrap();
        report::build(&c, &ctx.run_id, &setup, &load, audit)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clean_run_passes_with_transfers_settled() {
        let report = run(Faults::default(), |_| {}).await;
        assert!(report.verdict.pass, "{report}");
        assert_eq!(report.setup.accounts_created, 12);
        assert!(report.load.total_requests > 100, "{report}");
        assert_eq!(report.load.failures, 0, "{report}");
        let transfers = &report.audit.transfers;
        assert!(transfers.tracked > 0 && transfers.completed > 0, "{report}");
        assert_eq!(transfers.tracked, transfers.completed + transfers.failed);
        assert!(report.audit.converged && report.audit.mismatches == 0, "{report}");
        assert_eq!(report.audit.history.contiguous, report.audit.accounts);
        assert_eq!(report.audit.expected_total_minor, report.audit.observed_total_minor);
        assert!(
            report.load.operations.iter().any(|o| o.name == "transfer" && o.statuses.contains_key("202"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_replies_are_settled_by_replaying_the_key() {
        let report =
            run(Faults { lose_reply_every: Some(7), ..Faults::default() }, |c| c.weights.transfer = 0).await;
        let pending = &report.audit.pending_writes;
        assert!(pending.total > 0, "{report}");
        assert_eq!(pending.applied, pending.total, "{report}");
        assert!(report.audit.converged, "{report}");
        // The 500s still fail the run, as any 5xx does.
        assert!(!report.verdict.pass);
        assert_eq!(report.verdict.reasons.len(), 1, "{:?}", report.verdict.reasons);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn double_applies_are_caught() {
        let report = run(Faults { double_apply_every: Some(50), ..Faults::default() }, |c| {
            c.audit_timeout_secs = 1;
        })
        .await;
        assert!(!report.audit.converged, "{report}");
        assert!(report.audit.mismatches > 0);
        assert!(!report.audit.mismatch_sample.is_empty());
        assert!(report.audit.observed_total_minor > report.audit.expected_total_minor);
        assert_eq!(report.verdict.exit_code, 1);
        assert!(report.to_string().contains("MISMATCHES"));
    }
}
