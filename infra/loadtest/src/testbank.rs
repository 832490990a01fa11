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
    /// Every Nth withdrawal is shed with 429 and not applied (a throttle in front of the bank).
    pub(crate) throttle_withdrawals_every: Option<u64>,
    /// Requests whose SigV4 signature does not verify with these credentials are answered 403.
    pub(crate) require_sigv4: Option<SigV4Check>,
    /// Deposits and withdrawals take this long to answer (a slow server, for the open model).
    pub(crate) money_delay_ms: Option<u64>,
}

/// The credentials and region a SigV4-checking bank verifies with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigV4Check {
    pub(crate) access_key_id: &'static str,
    pub(crate) secret_access_key: &'static str,
    pub(crate) session_token: Option<&'static str>,
    pub(crate) region: &'static str,
}

#[derive(Default)]
struct Account {
    minor: i64,
    versions: u64,
}

#[derive(Default)]
pub(crate) struct State {
    accounts: HashMap<String, Account>,
    replies: HashMap<String, (u16, String)>,
    transfers: HashMap<String, (String, u32)>,
    deposits: u64,
    withdrawals: u64,
    /// Requests that reached the handlers (passed the SigV4 check, if any).
    pub(crate) served: u64,
}

pub(crate) type Shared = Arc<(Mutex<State>, Faults)>;

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
        state.withdrawals += 1;
        if faults.throttle_withdrawals_every.is_some_and(|n| state.withdrawals.is_multiple_of(n)) {
            return error(429, "TOO_MANY_REQUESTS");
        }
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
    if answer.0 != 429 {
        state.replies.insert(key.to_owned(), answer.clone());
    }
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

/// Verifies a request's SigV4 signature the way API Gateway does: rebuild the canonical request from what
/// arrived (method, host, path, the headers the `Authorization` names, the body) and sign it again at its
/// `X-Amz-Date` with the known secret; the two `Authorization` values must be equal.
fn verifies_sigv4(parts: &http::request::Parts, body: &[u8], check: &SigV4Check) -> bool {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authorization = header("authorization");
    let Some((_, rest)) = authorization.split_once("SignedHeaders=") else { return false };
    let Some((signed, _)) = rest.split_once(", ") else { return false };
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(header("x-amz-date"), "%Y%m%dT%H%M%SZ") else {
        return false;
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut copy = Request::builder()
        .method(parts.method.clone())
        .uri(format!("http://{}{path}", header("host")))
        .body(())
        .unwrap();
    // The signer adds the date and the session token itself.
    for name in signed.split(';').filter(|n| !matches!(*n, "x-amz-date" | "x-amz-security-token")) {
        if let (Ok(name), Some(value)) =
            (http::HeaderName::from_bytes(name.as_bytes()), parts.headers.get(name))
        {
            copy.headers_mut().insert(name, value.clone());
        }
    }
    let credentials = crate::args::AwsCredentials {
        access_key_id: check.access_key_id.to_owned(),
        secret_access_key: check.secret_access_key.to_owned(),
        session_token: check.session_token.map(str::to_owned),
    };
    let signer = crate::sigv4::Signer::new(check.region, &credentials);
    signer.sign(&mut copy, body, std::time::SystemTime::from(at.and_utc())).is_ok()
        && copy.headers().get("authorization") == parts.headers.get("authorization")
}

async fn handle(shared: Shared, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some(check) = &shared.1.require_sigv4
        && !verifies_sigv4(&parts, &body, check)
    {
        let (status, body) = error(403, "INVALID_SIGNATURE");
        return Ok(reply(status, body));
    }
    let path = parts.uri.path().trim_start_matches("/api/").to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let post = parts.method == http::Method::POST;
    let key = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(ms) = shared.1.money_delay_ms
        && post
        && (path.ends_with("/deposits") || path.ends_with("/withdrawals"))
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let segments: Vec<&str> = path.split('/').collect();
    let params: HashMap<&str, usize> = raw_query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let (state, faults) = &*shared;
    let mut state = state.lock().unwrap();
    state.served += 1;
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
    serve(faults, None).await.0
}

/// Starts the bank, over TLS when `tls` is given, and returns its base URL and its state.
pub(crate) async fn serve(faults: Faults, tls: Option<tokio_rustls::TlsAcceptor>) -> (String, Shared) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared: Shared = Arc::new((Mutex::new(State::default()), faults));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = Arc::clone(&shared);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (shared, tls) = (Arc::clone(&shared), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    });
    (format!("{scheme}://{addr}/api"), state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::args::{Authentication, AwsCredentials, Config, Model};
    use crate::error::Error;
    use crate::report::{self, Report};
    use crate::{audit, scenario};

    async fn run(faults: Faults, config: impl FnOnce(&mut Config)) -> Report {
        let base_url = start(faults).await;
        run_against(base_url, config).await.unwrap()
    }

    async fn run_against(base_url: String, config: impl FnOnce(&mut Config)) -> Result<Report, Error> {
        let mut c = Config {
            base_url,
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
        let ctx = Arc::new(scenario::Ctx::new(&c)?);
        let setup = scenario::seed(&ctx, &c).await?;
        let load = scenario::run_load(&ctx, &c).await?;
        let audit = audit::run(&ctx, &c, load.end).await?;
        Ok(report::build(&c, &ctx.run_id, &setup, &load, audit))
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throttled_requests_are_counted_apart_and_do_not_fail_the_run() {
        let faults = Faults { throttle_withdrawals_every: Some(4), ..Faults::default() };
        let report = run(faults, |c| c.weights.transfer = 0).await;
        assert!(report.load.status_429 > 0, "{report}");
        assert_eq!(report.load.failures, 0, "429s are not failures: {report}");
        let withdraw = report.load.operations.iter().find(|o| o.name == "withdraw").unwrap();
        assert_eq!(withdraw.throttled, report.load.status_429);
        assert_eq!(withdraw.statuses.get("429"), Some(&report.load.status_429));
        assert!(report.audit.converged, "a throttled withdrawal moved no money: {report}");
        assert!(report.verdict.pass, "{report}");
        assert!(report.to_string().contains(&format!("429 {}", report.load.status_429)), "{report}");
    }

    const CHECK: SigV4Check = SigV4Check {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: Some("session/token"),
        region: "eu-west-1",
    };

    fn sigv4(secret_access_key: &str) -> Authentication {
        Authentication::Sigv4 {
            region: CHECK.region.into(),
            credentials: AwsCredentials {
                access_key_id: CHECK.access_key_id.into(),
                secret_access_key: secret_access_key.into(),
                session_token: CHECK.session_token.map(str::to_owned),
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigv4_signatures_of_seeding_load_and_audit_all_verify() {
        let (base_url, bank) = serve(Faults { require_sigv4: Some(CHECK), ..Faults::default() }, None).await;
        let report =
            run_against(base_url, |c| c.authentication = sigv4(CHECK.secret_access_key)).await.unwrap();
        assert!(report.verdict.pass, "{report}");
        assert_eq!(report.load.failures, 0, "{report}");
        let served = bank.0.lock().unwrap().served;
        assert!(served >= report.load.total_requests + 12, "{served} requests reached the bank");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unsigned_or_wrongly_signed_requests_are_refused_by_a_bank_that_checks_sigv4() {
        for auth in [Authentication::None, sigv4("another-secret")] {
            let (base_url, bank) =
                serve(Faults { require_sigv4: Some(CHECK), ..Faults::default() }, None).await;
            let err = run_against(base_url, |c| c.authentication = auth).await.unwrap_err();
            assert!(err.to_string().contains("INVALID_SIGNATURE"), "{err}");
            assert_eq!(bank.0.lock().unwrap().served, 0);
        }
    }

    /// A throw-away CA and a certificate for 127.0.0.1 it signed, made with the `openssl` command.
    struct Pki {
        dir: std::path::PathBuf,
    }

    impl Pki {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("corebank-loadtest-tls-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
                .unwrap();
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            let steps: [Vec<&str>; 3] = [
                [&["req", "-x509"], &ec[..], &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]].concat(),
                [
                    &["req"],
                    &ec[..],
                    &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
                ]
                .concat(),
                vec![
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ],
            ];
            for (i, mut args) in steps.into_iter().enumerate() {
                if i == 0 {
                    args.extend([
                        "-subj",
                        "/CN=corebank-loadtest test CA",
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign",
                    ]);
                }
                let out =
                    std::process::Command::new("openssl").args(&args).current_dir(&dir).output().unwrap();
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Self { dir }
        }

        fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            use rustls_pki_types::pem::PemObject as _;
            use rustls_pki_types::{CertificateDer, PrivateKeyDer};
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(self.dir.join("server.pem"))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_file(self.dir.join("server.key")).unwrap();
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_with_the_private_ca_runs_clean() {
        let pki = Pki::new();
        let (base_url, bank) = serve(Faults::default(), Some(pki.acceptor())).await;
        assert!(base_url.starts_with("https://127.0.0.1:"), "{base_url}");
        let ca = pki.dir.join("ca.pem");
        let report = run_against(base_url, |c| c.ca_file = Some(ca)).await.unwrap();
        assert!(report.verdict.pass, "{report}");
        assert_eq!(report.load.failures, 0, "{report}");
        assert!(report.load.total_requests > 50, "{report}");
        assert!(bank.0.lock().unwrap().served > 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_refuses_a_server_whose_ca_is_not_trusted() {
        let pki = Pki::new();
        let (base_url, bank) = serve(Faults::default(), Some(pki.acceptor())).await;
        // A CA file that holds some other CA: the bank's certificate does not chain to it.
        let other = Pki::new();
        let ca = other.dir.join("ca.pem");
        let err = run_against(base_url, |c| c.ca_file = Some(ca)).await.unwrap_err();
        assert!(err.to_string().contains("TRANSPORT_CONNECT"), "{err}");
        assert_eq!(bank.0.lock().unwrap().served, 0, "no request got through the handshake");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_model_sends_the_scheduled_rate_whatever_the_replies() {
        let report = run(Faults::default(), |c| {
            // A cap of the whole second's requests: none can be missed, even on a busy machine.
            c.model = Model::Open { rate: 200, max_in_flight: 200 };
            c.weights.transfer = 0;
        })
        .await;
        let open = report.load.open_model.unwrap();
        assert_eq!(open.scheduled, 200, "200 a second for 1 s");
        assert_eq!((open.issued, open.missed), (200, 0), "{report}");
        assert!(open.peak_in_flight >= 1 && open.peak_in_flight <= 200);
        assert_eq!(report.load.total_requests, 200);
        assert!(report.verdict.pass, "{report}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["load"]["openModel"]["issued"], 200);
        assert!(report.to_string().contains("200 req/s scheduled"), "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_model_counts_what_the_in_flight_cap_kept_from_being_sent() {
        let faults = Faults { money_delay_ms: Some(100), ..Faults::default() };
        let report = run(faults, |c| {
            c.model = Model::Open { rate: 200, max_in_flight: 2 };
            c.weights = crate::args::Weights {
                deposit: 1,
                withdraw: 1,
                balance: 0,
                history: 0,
                create: 0,
                transfer: 0,
            };
        })
        .await;
        let open = report.load.open_model.unwrap();
        assert_eq!(open.scheduled, 200);
        assert_eq!(open.issued + open.missed, open.scheduled);
        // Two lanes of 100 ms requests answer about 20 a second: most of the 200 cannot be sent on time.
        assert!(open.missed > 150, "{report}");
        assert_eq!(open.peak_in_flight, 2);
        assert_eq!(report.load.total_requests, open.issued);
        assert!(report.load.write_latency_ms.p50 >= 100.0, "{report}");
        assert!(report.audit.converged, "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_closed_model_reports_no_schedule() {
        let report = run(Faults::default(), |c| c.weights.transfer = 0).await;
        assert!(report.load.open_model.is_none());
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["load"].get("openModel").is_none(), "the closed model's JSON keeps its shape");
        assert_eq!(json["config"]["model"], serde_json::json!({"kind": "closed"}));
    }
}
