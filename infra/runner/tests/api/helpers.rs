//! The test harness: a real runner on an ephemeral port, and a real HTTP client in front of it.
//!
//! `spawn_app()` builds the embedded bank (memory stores, in-process pipeline, commands that answer
//! once the read side has them), serves it on `127.0.0.1:0` and returns a [`TestApp`] whose typed
//! methods speak HTTP/1.1 to it through hyper-util's client. Every response that passes through
//! [`TestApp::send`] is checked for an `x-request-id` header, so that guarantee is asserted by every
//! test, not just the one named after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use corebank_api::Deps;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_delivery::emulators::embedded::EmbeddedPipeline;
use corebank_domain::EventEnvelope;
use corebank_store::{
    AppendOutcome, AppendRequest, ClaimOutcome, EventStore, IdempotencyClaim, IdempotencyCompletion,
    IdempotencyKey, IdempotencyStore, StoreError, TransactionRecord,
};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// The admin token every spawned app is configured with.
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token";

/// One HTTP answer, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    /// The status.
    pub(crate) status: StatusCode,
    /// The headers.
    pub(crate) headers: HeaderMap,
    /// The body text, exactly as sent.
    pub(crate) text: String,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub(crate) body: Value,
}

impl Resp {
    /// The status as a number.
    pub(crate) fn code(&self) -> u16 {
        self.status.as_u16()
    }

    /// A field of the JSON body as its exact JSON text (`70.25`, `"7025"`), never through a float.
    pub(crate) fn raw(&self, field: &str) -> String {
        let map: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not a JSON object ({e}): {}", self.text));
        map.get(field).unwrap_or_else(|| panic!("no field {field} in {}", self.text)).get().to_owned()
    }

    /// The `version` field.
    pub(crate) fn version(&self) -> u64 {
        self.body["version"].as_u64().unwrap_or_else(|| panic!("no version in {}", self.text))
    }

    /// The `eventIds` field.
    pub(crate) fn event_ids(&self) -> Vec<String> {
        self.body["eventIds"]
            .as_array()
            .unwrap_or_else(|| panic!("no eventIds in {}", self.text))
            .iter()
            .map(|v| v.as_str().expect("event id is a string").to_owned())
            .collect()
    }

    /// The `x-request-id` header.
    pub(crate) fn request_id(&self) -> String {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id header")
            .to_owned()
    }

    /// Asserts a 201 command acceptance for `account_id` and returns `self` for chaining.
    #[track_caller]
    pub(crate) fn accepted(self, account_id: &str) -> Self {
        assert_eq!(self.status, StatusCode::CREATED, "expected 201, got {}: {}", self.status, self.text);
        assert_eq!(self.body["status"], "accepted", "{}", self.text);
        assert_eq!(self.body["accountId"], account_id, "{}", self.text);
        assert!(self.version() >= 1, "{}", self.text);
        let ids = self.event_ids();
        assert!(!ids.is_empty(), "{}", self.text);
        for id in &ids {
            uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("event id {id} is not a UUID: {e}"));
        }
        self
    }

    /// Asserts the error envelope `{statusCode, error, code, message}` with this status and code.
    #[track_caller]
    pub(crate) fn error(&self, status: u16, code: &str) {
        assert_eq!(self.code(), status, "expected {status} {code}, got {}: {}", self.status, self.text);
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["statusCode"], status, "{}", self.text);
        let reason = self.status.canonical_reason().expect("a standard status");
        assert_eq!(self.body["error"], reason, "{}", self.text);
        let message = self.body["message"].as_str().unwrap_or_else(|| panic!("no message in {}", self.text));
        assert!(!message.trim().is_empty(), "empty message in {}", self.text);
        assert_eq!(
            self.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "error bodies are JSON"
        );
    }
}

/// A running bank on an ephemeral port. Dropping it stops the server and the pipeline.
pub(crate) struct TestApp {
    /// `http://127.0.0.1:{port}`.
    pub(crate) origin: String,
    /// The handlers' dependencies, kept to inspect what the event store really holds.
    pub(crate) deps: Deps,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: watch::Sender<bool>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A fresh Idempotency-Key.
pub(crate) fn key() -> String {
    format!("key-{}", uuid::Uuid::new_v4())
}

/// A fresh transaction id.
pub(crate) fn txid() -> String {
    format!("tx-{}", uuid::Uuid::new_v4())
}

/// A deposit or withdrawal body with the amount written verbatim as JSON number text.
pub(crate) fn money_body(amount: &str, currency: &str, transaction_id: &str) -> String {
    format!(r#"{{"amount":{amount},"currency":"{currency}","transactionId":"{transaction_id}"}}"#)
}

/// The app every test uses: admin token set, commands answer once projected.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(config(), true).await
}

/// The default test configuration (with the admin token).
pub(crate) fn config() -> AppConfig {
    AppConfig { admin_token: Some(secrecy::SecretString::from(ADMIN_TOKEN)), ..Default::default() }
}

/// Faults to inject into the event store of [`spawn_faulty_app`].
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Every append answers a version conflict, as if a writer in another process always won.
    conflict: AtomicBool,
    /// Every call answers `Unavailable`, as a store that is down or timing out.
    unavailable: AtomicBool,
    /// The next command parks right after it claimed its Idempotency-Key (before it takes the
    /// account's lock) until [`Faults::release`]: a request that is still running.
    park: AtomicBool,
    parked: Notify,
    released: Notify,
}

impl Faults {
    pub(crate) fn set_conflict(&self, on: bool) {
        self.conflict.store(on, Ordering::SeqCst);
    }

    pub(crate) fn set_unavailable(&self, on: bool) {
        self.unavailable.store(on, Ordering::SeqCst);
    }

    /// Parks the next command that reaches the event store.
    pub(crate) fn park_next(&self) {
        self.park.store(true, Ordering::SeqCst);
    }

    /// Waits (bounded) until a command is parked.
    pub(crate) async fn wait_parked(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.parked.notified())
            .await
            .expect("a command parks within 10 s");
    }

    /// Lets the parked command go on.
    pub(crate) fn release(&self) {
        self.released.notify_one();
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: event store down".to_owned()));
        }
        Ok(())
    }

    async fn maybe_park(&self) {
        if self.park.swap(false, Ordering::SeqCst) {
            self.parked.notify_one();
            self.released.notified().await;
        }
    }
}

/// An app over `config` whose event store fails on demand (see [`Faults`]); wired like
/// [`corebank_runner::embedded`] with commands waiting for the projection.
pub(crate) async fn spawn_faulty_app(config: AppConfig) -> (TestApp, Arc<Faults>) {
    let (mut stores, feed) = corebank_store::memory::stores();
    let faults = Arc::new(Faults::default());
    stores.events = Arc::new(FaultyEvents { inner: stores.events.clone(), faults: faults.clone() });
    stores.idempotency =
        Arc::new(FaultyIdempotency { inner: stores.idempotency.clone(), faults: faults.clone() });
    let app = App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock));
    let pipeline = EmbeddedPipeline::new(feed, app.projector.clone());
    let mut deps = Deps::new(app);
    deps.pipeline = Some(pipeline.clone());
    deps.barrier = Some(pipeline.clone());
    (serve_deps(deps, pipeline).await, faults)
}

struct FaultyEvents {
    inner: Arc<dyn EventStore>,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl EventStore for FaultyEvents {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.faults.check()?;
        if self.faults.conflict.load(Ordering::SeqCst) {
            return Err(StoreError::VersionConflict {
                stream_id: request.stream_id.clone(),
                expected: request.expected_version,
                actual: request.expected_version + 1,
            });
        }
        self.inner.append(request).await
    }

    async fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.faults.check()?;
        self.inner.load_stream(stream_id, after_version).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.faults.check()?;
        self.inner.list_streams(prefix, after, limit).await
    }

    async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        self.faults.check()?;
        self.inner.transaction(transaction_id).await
    }
}

struct FaultyIdempotency {
    inner: Arc<dyn IdempotencyStore>,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl IdempotencyStore for FaultyIdempotency {
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        let outcome = self.inner.claim(claim).await?;
        if outcome == ClaimOutcome::Claimed {
            self.faults.maybe_park().await;
        }
        Ok(outcome)
    }

    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError> {
        self.inner.complete(completion).await
    }

    async fn release(&self, key: &IdempotencyKey, claim_token: uuid::Uuid) -> Result<(), StoreError> {
        self.inner.release(key, claim_token).await
    }
}

/// An app over `config`; `wait_for_projection = false` is the eventually-consistent mode where a
/// command's 201 does not wait for the read side.
pub(crate) async fn spawn_app_with(config: AppConfig, wait_for_projection: bool) -> TestApp {
    let (deps, pipeline) = corebank_runner::embedded(config, wait_for_projection);
    serve_deps(deps, pipeline).await
}

async fn serve_deps(deps: Deps, pipeline: Arc<EmbeddedPipeline>) -> TestApp {
    serve_gated(deps, pipeline, corebank_runner::Gate::Open).await
}

/// An app whose callers are authenticated by `gate` (the embedded default otherwise).
pub(crate) async fn spawn_gated_app(gate: corebank_runner::Gate) -> TestApp {
    let (deps, pipeline) = corebank_runner::embedded(config(), true);
    serve_gated(deps, pipeline, gate).await
}

async fn serve_gated(deps: Deps, pipeline: Arc<EmbeddedPipeline>, gate: corebank_runner::Gate) -> TestApp {
    let inspect = deps.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(pipeline.run(stopped(stop_rx.clone())));
    tokio::spawn(async move {
        corebank_runner::serve_gated(listener, deps, gate, stopped(stop_rx)).await.expect("serve");
    });
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http::<Full<Bytes>>();
    TestApp { origin: format!("http://{addr}"), deps: inspect, client, stop }
}

impl TestApp {
    /// Sends a request to `path` (which includes `/api`) and decodes the answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut builder = Request::builder().method(method).uri(format!("{}{path}", self.origin));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(Bytes::from(body))).expect("request");
        let response = self.client.request(request).await.unwrap_or_else(|e| panic!("{path}: {e:?}"));
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("response body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8 body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        let resp = Resp { status: parts.status, headers: parts.headers, text, body: json };
        let rid = resp.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(!rid.is_empty(), "{path} answered {} without x-request-id", resp.status);
        resp
    }

    /// `POST path` with a JSON text body, `Content-Type: application/json` and, if given, an
    /// Idempotency-Key.
    pub(crate) async fn post_json(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        self.send(Method::POST, path, &headers, body.as_bytes().to_vec()).await
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    /// `POST /api/accounts` under `key`.
    pub(crate) async fn create_account_with_key(
        &self,
        key: &str,
        account_id: &str,
        owner_id: &str,
        currency: &str,
    ) -> Resp {
        let body = serde_json::json!({"accountId": account_id, "ownerId": owner_id, "currency": currency});
        self.post_json("/api/accounts", Some(key), &body.to_string()).await
    }

    /// `POST /api/accounts` under a fresh key.
    pub(crate) async fn create_account(&self, account_id: &str, owner_id: &str, currency: &str) -> Resp {
        self.create_account_with_key(&key(), account_id, owner_id, currency).await
    }

    /// Creates an account and asserts the 201.
    pub(crate) async fn new_account(&self, account_id: &str, currency: &str) {
        let resp = self.create_account(account_id, "owner-1", currency).await.accepted(account_id);
        assert_eq!(resp.version(), 1);
    }

    /// `POST /api/accounts/{id}/deposits` under `key`.
    pub(crate) async fn post_deposit(
        &self,
        key: &str,
        account_id: &str,
        amount: &str,
        currency: &str,
        txid: &str,
    ) -> Resp {
        self.post_json(
            &format!("/api/accounts/{account_id}/deposits"),
            Some(key),
            &money_body(amount, currency, txid),
        )
        .await
    }

    /// `POST /api/accounts/{id}/withdrawals` under `key`.
    pub(crate) async fn post_withdrawal(
        &self,
        key: &str,
        account_id: &str,
        amount: &str,
        currency: &str,
        txid: &str,
    ) -> Resp {
        self.post_json(
            &format!("/api/accounts/{account_id}/withdrawals"),
            Some(key),
            &money_body(amount, currency, txid),
        )
        .await
    }

    /// Deposits under a fresh key and transaction id and asserts the 201.
    pub(crate) async fn deposit_ok(&self, account_id: &str, amount: &str, currency: &str) -> Resp {
        self.post_deposit(&key(), account_id, amount, currency, &txid()).await.accepted(account_id)
    }

    /// Withdraws under a fresh key and transaction id and asserts the 201.
    pub(crate) async fn withdraw_ok(&self, account_id: &str, amount: &str, currency: &str) -> Resp {
        self.post_withdrawal(&key(), account_id, amount, currency, &txid()).await.accepted(account_id)
    }

    /// `POST /api/accounts/{id}/freeze` under a fresh key.
    pub(crate) async fn freeze(&self, account_id: &str, reason: &str) -> Resp {
        let body = serde_json::json!({ "reason": reason }).to_string();
        self.post_json(&format!("/api/accounts/{account_id}/freeze"), Some(&key()), &body).await
    }

    /// `POST /api/accounts/{id}/unfreeze` under a fresh key.
    pub(crate) async fn unfreeze(&self, account_id: &str, reason: &str) -> Resp {
        let body = serde_json::json!({ "reason": reason }).to_string();
        self.post_json(&format!("/api/accounts/{account_id}/unfreeze"), Some(&key()), &body).await
    }

    /// `GET /api/accounts/{id}`.
    pub(crate) async fn get_account(&self, account_id: &str) -> Resp {
        self.get(&format!("/api/accounts/{account_id}")).await
    }

    /// `GET /api/accounts/{id}/balance`.
    pub(crate) async fn get_balance(&self, account_id: &str) -> Resp {
        self.get(&format!("/api/accounts/{account_id}/balance")).await
    }

    /// `GET /api/accounts/{id}/history?{query}` (`query` may be empty).
    pub(crate) async fn get_history(&self, account_id: &str, query: &str) -> Resp {
        if query.is_empty() {
            self.get(&format!("/api/accounts/{account_id}/history")).await
        } else {
            self.get(&format!("/api/accounts/{account_id}/history?{query}")).await
        }
    }

    /// The events the event store holds for an account (empty when it does not exist).
    pub(crate) async fn stored_events(&self, account_id: &str) -> Vec<EventEnvelope> {
        self.deps
            .app
            .stores
            .events
            .load_stream(&format!("account-{account_id}"), 0)
            .await
            .expect("load stream")
    }

    /// The account's stream version in the event store (0 when it does not exist).
    pub(crate) async fn stored_version(&self, account_id: &str) -> u64 {
        let events = self.stored_events(account_id).await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.version, i as u64 + 1, "stream versions are gapless");
        }
        events.last().map_or(0, |e| e.version)
    }

    /// Every event of every account stream in the store.
    pub(crate) async fn total_events(&self) -> u64 {
        let streams =
            self.deps.app.stores.events.list_streams("account-", None, 10_000).await.expect("list streams");
        let mut total = 0;
        for stream in streams {
            total += self.deps.app.stores.events.load_stream(&stream, 0).await.expect("load").len() as u64;
        }
        total
    }

    /// The balance's exact `balanceMinorUnits` and the version, asserting a 200.
    pub(crate) async fn balance_minor(&self, account_id: &str) -> (String, u64) {
        let resp = self.get_balance(account_id).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        let minor = resp.body["balanceMinorUnits"].as_str().expect("balanceMinorUnits").to_owned();
        (minor, resp.version())
    }

    /// An admin request with an optional bearer token.
    pub(crate) async fn admin(&self, method: Method, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
        self.send(method, path, &headers, Vec::new()).await
    }
}
