//! A seeded differential test of the HTTP handlers over three stores: the same pseudo-random requests
//! (valid and invalid, over a small pool of account and transfer ids so that most of them meet
//! existing state) go through `corebank_api::dispatch` on memory, Postgres and DynamoDB (moto), in the
//! same order. Every request must get the same status and error `code` from all three, never a 5xx,
//! and the same JSON body once the fields that legitimately differ (event ids, timestamps) are
//! removed. No pipeline runs: reads fall back to the event store and transfers stay `PENDING` on
//! every store. Admin routes and `GET /health` are not generated.
//!
//! Run: `SERVICES="postgres dynamodb" infra/scripts/with-services.sh cargo test -p corebank-runner
//! --test differential`. `FUZZ_SEED` (a number) replays a seed, `FUZZ_REQUESTS` sets the request
//! count (default 500), `FUZZ_VERBOSE` (with `--nocapture`) prints every request and its answer. A
//! failure prints the seed, the request's index, the request and the three answers. Without
//! `DATABASE_URL` or `AWS_ENDPOINT_URL` the test fails; it never skips.

#![cfg(test)]

use std::sync::Arc;

use corebank_api::Deps;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_auth::{Authentication, Principal, PrincipalId, Scope, Scopes};
use http::Method;
use lambda_http::Body;
use serde_json::Value;
use uuid::Uuid;

#[path = "support/fresh_postgres.rs"]
mod fresh_postgres;

const HOW_TO_RUN: &str = "Run it through `SERVICES=\"postgres dynamodb\" infra/scripts/with-services.sh \
                          cargo test -p corebank-runner --test differential`";

fn required(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!("{name} is not set: this test needs PostgreSQL and moto and never skips. {HOW_TO_RUN}")
    })
}

fn memory_deps() -> Deps {
    let (stores, _feed) = corebank_store::memory::stores();
    Deps::new(App::new(AppConfig::default(), stores, corebank_api::renderer(), Arc::new(SystemClock)))
}

/// Handlers over the Postgres stores of a new, migrated database on the server in `DATABASE_URL`.
async fn postgres_deps() -> Deps {
    let mut settings = fresh_postgres::fresh_database("corebank_fuzz", HOW_TO_RUN).await;
    settings.pool_max_size = 4;
    let pg = corebank_wiring::postgres::connect(settings).await.expect("connect and migrate");
    Deps::new(App::new(
        AppConfig::default(),
        pg.stores.stores(),
        corebank_api::renderer(),
        Arc::new(SystemClock),
    ))
}

/// Handlers over the DynamoDB stores of fresh tables (a unique prefix) on the server in
/// `AWS_ENDPOINT_URL`.
async fn dynamodb_deps() -> Deps {
    required("AWS_ENDPOINT_URL");
    let sdk = corebank_wiring::dynamodb::sdk_config_from_env().await;
    assert!(sdk.region().is_some(), "no AWS_REGION. {HOW_TO_RUN}");
    let client = corebank_wiring::dynamodb::client(&sdk);
    let prefix = format!("fuzz_{}_", Uuid::new_v4().simple());
    let tables = corebank_store::dynamodb::create_tables(&client, &prefix).await.expect("create the tables");
    let stores = corebank_store::dynamodb::stores(client, tables);
    Deps::new(App::new(AppConfig::default(), stores, corebank_api::renderer(), Arc::new(SystemClock)))
}

/// One generated request, kept printable for a failure report.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    /// Relative to `/api`, percent-encoded, with its query.
    path: String,
    idempotency_key: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
    customer: bool,
}

impl Req {
    fn get(path: String) -> Self {
        Self { method: Method::GET, path, idempotency_key: None, body: None, customer: false }
    }

    fn post(path: String, body: String) -> Self {
        Self {
            method: Method::POST,
            path,
            idempotency_key: None,
            body: Some(body.into_bytes()),
            customer: false,
        }
    }

    fn to_lambda(&self, request_id: &str) -> lambda_http::Request {
        let mut builder = http::Request::builder().method(self.method.clone()).uri(self.path.as_str());
        if let Some(key) = &self.idempotency_key {
            builder = builder
                .header("idempotency-key", http::HeaderValue::from_bytes(key).expect("a header value"));
        }
        let body = match &self.body {
            Some(bytes) => {
                builder = builder.header("content-type", "application/json");
                match String::from_utf8(bytes.clone()) {
                    Ok(text) => Body::Text(text),
                    Err(e) => Body::Binary(e.into_bytes()),
                }
            }
            None => Body::Empty,
        };
        let req = builder.body(body).expect("a request");
        let principal = if self.customer {
            Principal {
                id: PrincipalId::subject("cust-1").expect("a subject"),
                scopes: Scopes::of(&[Scope::Customer]),
                via: Authentication::Token,
            }
        } else {
            Principal::local_operator()
        };
        corebank_api::access::with_principal(req, &principal, request_id)
    }

    fn describe(&self) -> String {
        let shown = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            if text.chars().count() > 300 {
                let head: String = text.chars().take(300).collect();
                format!("{head:?}... ({} bytes)", bytes.len())
            } else {
                format!("{text:?}")
            }
        };
        format!(
            "{} {} as {}, Idempotency-Key {}, body {}",
            self.method,
            self.path,
            if self.customer { "customer cust-1" } else { "operator" },
            self.idempotency_key.as_deref().map_or("none".to_owned(), shown),
            self.body.as_deref().map_or("none".to_owned(), shown),
        )
    }
}

/// The answer of one store: status, error code (when the body has one) and the body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    code: Option<String>,
    body: Value,
}

async fn send(deps: &Deps, req: &Req, request_id: &str) -> Answer {
    let response = corebank_api::dispatch(deps, req.to_lambda(request_id)).await;
    let status = response.status().as_u16();
    let text = match response.into_body() {
        Body::Text(t) => t,
        Body::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let code = body.get("code").and_then(Value::as_str).map(str::to_owned);
    Answer { status, code, body }
}

/// Fields whose values legitimately differ between runs and stores.
const VOLATILE: &[&str] = &[
    "eventId",
    "eventIds",
    "createdAt",
    "updatedAt",
    "occurredAt",
    "completedAt",
    "failedAt",
    "requestId",
    "timestamp",
    "correlationId",
];

fn stripped(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), stripped(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(stripped).collect()),
        other => other.clone(),
    }
}

/// The generator: a seeded source of requests over small id pools.
struct Gen {
    rng: fastrand::Rng,
    index: usize,
    /// This request is meant to be valid: no odd ids, amounts, currencies, keys or bodies.
    tame: bool,
    /// The last command sent, to send again as it was (a client's retry).
    last_post: Option<Req>,
}

const ACCOUNTS: &[&str] = &["acc-1", "acc-2", "acc-3", "acc-jpy", "acc-bhd"];
const TRANSFERS: &[&str] = &["tr-1", "tr-2", "tr-3"];
const TRANSACTIONS: &[&str] = &["tx-1", "tx-2", "tx-3", "tx-4"];
const KEYS: &[&str] = &["key-1", "key-2", "key-3", "key-4", "key-5"];

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.usize(..items.len())]
    }

    fn chance(&mut self, percent: u8) -> bool {
        self.rng.u8(..100) < percent
    }

    /// An identifier: mostly from the pool, sometimes odd.
    fn id(&mut self, pool: &[&str]) -> String {
        if self.tame || self.chance(88) {
            return self.pick(pool).to_owned();
        }
        match self.rng.u8(..12) {
            0 => String::new(),
            1 => "a".repeat(64),
            2 => "b".repeat(65),
            3 => format!("{}\u{0}x", self.pick(pool)),
            4 => format!("{}\u{202e}", self.pick(pool)),
            5 => "acc-\u{1F600}".to_owned(),
            6 => "ACC-1".to_owned(),
            7 => format!(" {}", self.pick(pool)),
            8 => "acc-\u{7}\u{1b}[0m".to_owned(),
            9 => "acc-\u{00e9}\u{0301}".to_owned(),
            10 => "acc 1".to_owned(),
            _ => "acc-\u{200f}\u{05d0}".to_owned(),
        }
    }

    fn currency(&mut self) -> String {
        match self.rng.u8(..14) {
            0..=5 => "\"USD\"".to_owned(),
            6 | 7 => "\"JPY\"".to_owned(),
            8 | 9 => "\"BHD\"".to_owned(),
            10 => "\"EUR\"".to_owned(),
            11 => "\"usd\"".to_owned(),
            12 => "\"\"".to_owned(),
            _ => "840".to_owned(),
        }
    }

    /// An amount as raw JSON text.
    fn amount(&mut self) -> String {
        const AMOUNTS: &[&str] = &[
            "1",
            "10.25",
            "0.01",
            "0.001",
            "0.0001",
            "0",
            "-1",
            "-0",
            "1e400",
            "1e2",
            "10000000000000",
            "10000000000000.01",
            "1000000000000000",
            "1000000000000001",
            "1000000000000",
            "1000000000000.001",
            "99999999999999999999999",
            "\"10\"",
            "null",
            "true",
            "[1]",
            "{}",
            "5",
            "2.5",
            "100",
        ];
        if self.chance(50) {
            self.pick(&["1", "10.25", "5", "2.5", "100"]).to_owned()
        } else {
            self.pick(AMOUNTS).to_owned()
        }
    }

    fn reason(&mut self) -> String {
        if self.tame {
            return "review".to_owned();
        }
        match self.rng.u8(..9) {
            0..=2 => "review".to_owned(),
            3 => "r\u{0}n".to_owned(),
            4 => "x".repeat(500),
            5 => "y".repeat(501),
            6 => "line\nbreak\t\u{7f}".to_owned(),
            7 => "\u{202e}\u{1F600} examen".to_owned(),
            _ => String::new(),
        }
    }

    fn idempotency_key(&mut self) -> Option<Vec<u8>> {
        let fresh = format!("fresh-{}", self.index);
        if self.tame {
            return Some(if self.chance(85) {
                fresh.into_bytes()
            } else {
                self.pick(KEYS).as_bytes().to_vec()
            });
        }
        Some(match self.rng.u8(..40) {
            0..=13 => self.pick(KEYS).as_bytes().to_vec(),
            14..=33 => fresh.into_bytes(),
            34 => return None,
            35 => "k".repeat(255).into_bytes(),
            36 => "k".repeat(256).into_bytes(),
            37 => "cl\u{00e9}".as_bytes().to_vec(),
            _ => self.pick(&["saga:x", "   "]).as_bytes().to_vec(),
        })
    }

    /// A JSON string literal for `text`.
    fn quoted(text: &str) -> String {
        Value::String(text.to_owned()).to_string()
    }

    /// `text` with one of the body mutations applied now and then.
    fn mangle(&mut self, body: String) -> Vec<u8> {
        if self.tame || !self.chance(15) {
            return body.into_bytes();
        }
        let inner = body.trim_start_matches('{').trim_end_matches('}').to_owned();
        match self.rng.u8(..9) {
            0 => b"{".to_vec(),
            1 => format!("[{body}]").into_bytes(),
            2 => b"\"text\"".to_vec(),
            3 => b"null".to_vec(),
            4 => format!("{{{inner},\"extra\":1}}").into_bytes(),
            5 => format!("{{{inner},{inner}}}").into_bytes(),
            6 => format!("{{{inner},\"pad\":\"{}\"}}", "p".repeat(70 * 1024)).into_bytes(),
            7 => vec![b'{', 0xff, 0xfe, b'}'],
            _ => Vec::new(),
        }
    }

    /// `/{segment}` with everything but unreserved characters percent-encoded.
    fn segment(id: &str) -> String {
        let mut out = String::new();
        for b in id.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn next(&mut self) -> Req {
        if self.index >= ACCOUNTS.len()
            && self.chance(6)
            && let Some(retry) = self.last_post.clone()
        {
            self.index += 1;
            return retry;
        }
        // The first requests create the pool's accounts, so that the rest meet existing state.
        self.tame = self.index < ACCOUNTS.len() || self.chance(45);
        let roll = if self.index < ACCOUNTS.len() { 0 } else { self.rng.u8(..100) };
        let mut req = match roll {
            0..=14 => {
                let id = match ACCOUNTS.get(self.index) {
                    Some(id) => (*id).to_owned(),
                    None => self.id(ACCOUNTS),
                };
                let currency = match id.as_str() {
                    "acc-jpy" => "\"JPY\"".to_owned(),
                    "acc-bhd" => "\"BHD\"".to_owned(),
                    _ if self.tame || self.chance(70) => "\"USD\"".to_owned(),
                    _ => self.currency(),
                };
                let owner = if self.chance(90) {
                    self.pick(&["cust-1", "cust-2"])
                } else {
                    self.pick(&["owner-\u{0}", "", "ow"])
                };
                Req::post(
                    "/accounts".to_owned(),
                    format!(
                        r#"{{"accountId":{},"ownerId":{},"currency":{currency}}}"#,
                        Self::quoted(&id),
                        Self::quoted(owner)
                    ),
                )
            }
            15..=44 => {
                let kind = if self.chance(55) { "deposits" } else { "withdrawals" };
                let id = self.id(ACCOUNTS);
                let currency = match id.as_str() {
                    "acc-jpy" if self.tame || self.chance(70) => "\"JPY\"".to_owned(),
                    "acc-bhd" if self.tame || self.chance(70) => "\"BHD\"".to_owned(),
                    _ if self.tame || self.chance(60) => "\"USD\"".to_owned(),
                    _ => self.currency(),
                };
                let tx = if self.chance(if self.tame { 85 } else { 40 }) {
                    format!("tx-fresh-{}", self.index)
                } else {
                    self.id(TRANSACTIONS)
                };
                let amount = self.amount();
                Req::post(
                    format!("/accounts/{}/{kind}", Self::segment(&id)),
                    format!(
                        r#"{{"amount":{amount},"currency":{currency},"transactionId":{}}}"#,
                        Self::quoted(&tx)
                    ),
                )
            }
            45..=54 => {
                let kind = if self.chance(40) { "freeze" } else { "unfreeze" };
                let id = self.id(ACCOUNTS);
                let reason = self.reason();
                let body = if self.chance(10) {
                    "{}".to_owned()
                } else {
                    format!(r#"{{"reason":{}}}"#, Self::quoted(&reason))
                };
                Req::post(format!("/accounts/{}/{kind}", Self::segment(&id)), body)
            }
            55..=66 => {
                let transfer =
                    if self.chance(30) { format!("tr-fresh-{}", self.index) } else { self.id(TRANSFERS) };
                let source = self.id(ACCOUNTS);
                let destination = if self.chance(10) { source.clone() } else { self.id(ACCOUNTS) };
                let currency = if self.chance(75) { "\"USD\"".to_owned() } else { self.currency() };
                let amount = self.amount();
                let id_field = if self.chance(10) {
                    String::new()
                } else {
                    format!(r#""transferId":{},"#, Self::quoted(&transfer))
                };
                Req::post(
                    "/transfers".to_owned(),
                    format!(
                        r#"{{{id_field}"sourceAccountId":{},"destinationAccountId":{},"amount":{amount},"currency":{currency}}}"#,
                        Self::quoted(&source),
                        Self::quoted(&destination)
                    ),
                )
            }
            67..=93 => {
                let query = self.query();
                match self.rng.u8(..4) {
                    0 => Req::get(format!("/accounts/{}{query}", Self::segment(&self.id(ACCOUNTS)))),
                    1 => Req::get(format!("/accounts/{}/balance{query}", Self::segment(&self.id(ACCOUNTS)))),
                    2 => Req::get(format!("/accounts/{}/history{query}", Self::segment(&self.id(ACCOUNTS)))),
                    _ => Req::get(format!("/transfers/{}{query}", Self::segment(&self.id(TRANSFERS)))),
                }
            }
            94..=96 => Req::get("/nope".to_owned()),
            _ => Req {
                method: Method::DELETE,
                path: format!("/accounts/{}", self.pick(ACCOUNTS)),
                idempotency_key: None,
                body: None,
                customer: false,
            },
        };
        if let Some(body) = req.body.take() {
            req.body = Some(self.mangle(String::from_utf8(body).expect("generated bodies are UTF-8")));
            req.idempotency_key = self.idempotency_key();
        }
        req.customer = self.index >= ACCOUNTS.len() && self.chance(20);
        if req.method == Method::POST {
            self.last_post = Some(req.clone());
        }
        self.index += 1;
        req
    }

    fn query(&mut self) -> String {
        if self.chance(50) {
            return String::new();
        }
        let mut parts = Vec::new();
        let values = [
            "0",
            "1",
            "2",
            "3",
            "10",
            "100",
            "101",
            "-1",
            "x",
            "",
            "18446744073709551616",
            "9223372036854775807",
        ];
        for name in ["limit", "offset", "minVersion"] {
            if self.chance(40) {
                parts.push(format!("{name}={}", self.pick(&values)));
            }
        }
        if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number: {v:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_postgres_and_dynamodb_answer_the_same_random_requests_alike() {
    let seed = env_number("FUZZ_SEED").unwrap_or(0x5eed_c0de);
    let count = usize::try_from(env_number("FUZZ_REQUESTS").unwrap_or(500)).expect("FUZZ_REQUESTS fits");
    println!("differential fuzz: FUZZ_SEED={seed} FUZZ_REQUESTS={count}");
    required("DATABASE_URL");
    required("AWS_ENDPOINT_URL");
    let memory = memory_deps();
    let postgres = postgres_deps().await;
    let dynamodb = dynamodb_deps().await;

    let mut generator = Gen { rng: fastrand::Rng::with_seed(seed), index: 0, tame: false, last_post: None };
    let mut answers = std::collections::BTreeMap::<(u16, String), usize>::new();
    for index in 0..count {
        let req = generator.next();
        let request_id = format!("fuzz-{seed}-{index}");
        let (m, p, d) = tokio::join!(
            send(&memory, &req, &request_id),
            send(&postgres, &req, &request_id),
            send(&dynamodb, &req, &request_id)
        );
        let report = || {
            format!(
                "FUZZ_SEED={seed}, request #{index}: {}\n  memory:   {} {}\n  postgres: {} {}\n  dynamodb: {} {}",
                req.describe(),
                m.status,
                m.body,
                p.status,
                p.body,
                d.status,
                d.body
            )
        };
        assert!([m.status, p.status, d.status].iter().all(|s| *s < 500), "a 5xx answer\n{}", report());
        assert!(
            (m.status, &m.code) == (p.status, &p.code) && (m.status, &m.code) == (d.status, &d.code),
            "the stores disagree on status or code\n{}",
            report()
        );
        let (sm, sp, sd) = (stripped(&m.body), stripped(&p.body), stripped(&d.body));
        assert!(sm == sp && sm == sd, "the stores disagree on the body\n{}", report());
        if std::env::var("FUZZ_VERBOSE").is_ok() {
            println!("#{index} {} -> {} {}", req.describe(), m.status, m.body);
        }
        *answers.entry((m.status, m.code.clone().unwrap_or_default())).or_default() += 1;
    }
    println!("differential fuzz: {count} requests; answers (status, code) and counts: {answers:?}");
}
