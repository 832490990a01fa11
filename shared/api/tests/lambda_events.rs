//! API Gateway REST proxy events (tests/fixtures/*.json, modelled on the AWS shape) go through
//! `lambda_http::request::from_str` into the handler functions, exactly as in Lambda.
//!
//! The deps are built over the memory stores with no pipeline: reads fall back to the event store,
//! which is also what `minVersion` asks for.

// Test code: helpers outside `#[test]` functions may panic (clippy.toml allows it in tests).
#![cfg(test)]

use std::sync::Arc;

use corebank_api::{Deps, handlers};
use corebank_app::{App, AppConfig, SystemClock};
use lambda_http::{Body, Request, Response};
use serde_json::Value;

fn deps() -> Deps {
    let (stores, _feed) = corebank_store::memory::stores();
    let app = App::new(AppConfig::default(), stores, corebank_api::renderer(), Arc::new(SystemClock));
    Deps::new(app)
}

fn fixture_text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The event parsed as Lambda parses it, and the API Gateway request id it carries.
fn event(name: &str) -> (Request, String) {
    let text = fixture_text(name);
    let raw: Value = serde_json::from_str(&text).expect("fixture JSON");
    let request_id =
        raw["requestContext"]["requestId"].as_str().expect("requestContext.requestId").to_owned();
    let request = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    (request, request_id)
}

struct Answer {
    status: u16,
    text: String,
    body: Value,
}

/// Checks that the answer carries the event's request id and decodes it.
fn answer(response: Response<Body>, request_id: &str) -> Answer {
    let header = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header.as_deref(), Some(request_id), "the API Gateway requestId is the x-request-id");
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let status = response.status().as_u16();
    let text = match response.into_body() {
        Body::Text(t) => t,
        Body::Binary(b) => String::from_utf8(b).expect("UTF-8"),
        _ => String::new(),
    };
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    Answer { status, text, body }
}

/// The event with its authorizer context edited (`None` removes it, as without an authorizer).
fn event_as(name: &str, authorizer: Option<Value>) -> (Request, String) {
    let mut raw: Value = serde_json::from_str(&fixture_text(name)).expect("fixture JSON");
    let request_id = raw["requestContext"]["requestId"].as_str().expect("requestId").to_owned();
    match authorizer {
        Some(a) => raw["requestContext"]["authorizer"] = a,
        None => {
            raw["requestContext"].as_object_mut().map(|c| c.remove("authorizer"));
        }
    }
    (lambda_http::request::from_str(&raw.to_string()).unwrap_or_else(|e| panic!("{name}: {e}")), request_id)
}

fn customer(id: &str) -> Option<Value> {
    Some(serde_json::json!({"principalId": id, "scope": "ledger:customer", "integrationLatency": 12}))
}

macro_rules! call {
    ($handler:path, $deps:expr, $fixture:literal) => {{
        let (req, rid) = event($fixture);
        answer($handler($deps, req).await, &rid)
    }};
}

async fn created_account(deps: &Deps) {
    let a = call!(handlers::create_account, deps, "create_account");
    assert_eq!(a.status, 201, "{}", a.text);
}

#[tokio::test]
async fn the_create_account_event_opens_the_account() {
    let deps = deps();
    let a = call!(handlers::create_account, &deps, "create_account");
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["status"], "accepted");
    assert_eq!(a.body["accountId"], "acc-lambda-1");
    assert_eq!(a.body["ownerId"], "owner-lambda");
    assert_eq!(a.body["currency"], "USD");
    assert_eq!(a.body["version"], 1);
    assert_eq!(a.body["eventIds"].as_array().map(Vec::len), Some(1));
    let events = deps.app.stores.events.load_stream("account-acc-lambda-1", 0).await.expect("load");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "AccountCreated");
    // The API Gateway request id correlates the event; the Idempotency-Key is its command id.
    assert_eq!(events[0].metadata.correlation_id.as_deref(), Some("c0a80101-0001-4f00-9000-000000000001"));
    assert_eq!(events[0].metadata.command_id.as_deref(), Some("idem-create-0001"));
}

#[tokio::test]
async fn deposit_and_withdrawal_events_move_money_and_a_redelivered_event_replays() {
    let deps = deps();
    created_account(&deps).await;
    let d = call!(handlers::deposit, &deps, "deposit");
    assert_eq!(d.status, 201, "{}", d.text);
    assert_eq!(d.body["version"], 2);
    let w = call!(handlers::withdraw, &deps, "withdrawal");
    assert_eq!(w.status, 201, "{}", w.text);
    assert_eq!(w.body["version"], 3);

    // API Gateway or a client retries the very same event: same answer, nothing written.
    let again = call!(handlers::deposit, &deps, "deposit");
    assert_eq!(again.status, 201);
    assert_eq!(again.text, d.text);
    let events = deps.app.stores.events.load_stream("account-acc-lambda-1", 0).await.expect("load");
    assert_eq!(events.len(), 3);
    // The authorizer's principal is the actor; the body's actor is only what was asked.
    assert_eq!(events[1].metadata.actor.as_deref(), Some("operator-7"));
    assert_eq!(events[1].metadata.requested_actor.as_deref(), Some("teller-3"));
    assert_eq!(events[1].metadata.transaction_id.as_deref(), Some("tx-lambda-dep-1"));

    let b = call!(handlers::get_balance, &deps, "get_balance_min_version");
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.body["accountId"], "acc-lambda-1");
    assert!(b.text.contains("\"balance\":100.5,"), "exact balance: {}", b.text);
    assert_eq!(b.body["balanceMinorUnits"], "10050");
    assert_eq!(b.body["version"], 3);
}

#[tokio::test]
async fn the_transfer_event_is_accepted_with_a_location_and_reads_back_pending_without_a_saga() {
    let deps = deps();
    let (req, rid) = event("start_transfer");
    let response = handlers::start_transfer(&deps, req).await;
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let a = answer(response, &rid);
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body, serde_json::json!({"transferId": "t-lambda-1", "status": "PENDING"}));
    assert_eq!(location.as_deref(), Some("/api/transfers/t-lambda-1"));
    let stored = deps.app.stores.events.load_stream("transfer-t-lambda-1", 0).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "TransferRequested");
    assert_eq!(stored[0].metadata.command_id.as_deref(), Some("idem-transfer-0001"));
    assert_eq!(stored[0].metadata.actor.as_deref(), Some("operator-7"));
    assert_eq!(stored[0].metadata.requested_actor.as_deref(), Some("teller-3"));
    assert_eq!(stored[0].payload["initiatedBy"], "operator-7");
    assert_eq!(stored[0].metadata.correlation_id.as_deref(), Some(rid.as_str()));

    // Nothing drives these deps' transfers: the read, folded from the event store, is PENDING.
    let g = call!(handlers::get_transfer, &deps, "get_transfer");
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["status"], "PENDING");
    assert_eq!(g.body["amountMinorUnits"], "2550");
    assert!(g.text.contains("\"amount\":25.5,"), "exact amount: {}", g.text);
    assert_eq!(g.body["legs"], serde_json::json!([]));
}

#[tokio::test]
async fn the_balance_event_with_min_version_above_the_stream_is_not_reached() {
    let deps = deps();
    created_account(&deps).await;
    let b = call!(handlers::get_balance, &deps, "get_balance_min_version");
    assert_eq!(b.status, 409, "{}", b.text);
    assert_eq!(b.body["code"], "VERSION_NOT_REACHED");
    assert_eq!(b.body["statusCode"], 409);
    assert_eq!(b.body["error"], "Conflict");
}

#[tokio::test]
async fn the_history_event_pages_with_limit_and_offset() {
    let deps = deps();
    created_account(&deps).await;
    call!(handlers::deposit, &deps, "deposit");
    call!(handlers::withdraw, &deps, "withdrawal");
    call!(handlers::freeze, &deps, "freeze");
    let h = call!(handlers::get_history, &deps, "get_history_paged");
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.body["accountId"], "acc-lambda-1");
    let entries = h.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "limit=2: {}", h.text);
    assert_eq!(entries[0]["streamVersion"], 2);
    assert_eq!(entries[0]["eventType"], "MoneyDeposited");
    assert_eq!(entries[0]["amountMinorUnits"], "15075");
    assert_eq!(entries[0]["transactionId"], "tx-lambda-dep-1");
    assert!(h.text.contains("\"amount\":150.75,"), "{}", h.text);
    assert_eq!(entries[1]["streamVersion"], 3);
    assert_eq!(entries[1]["eventType"], "MoneyWithdrawn");
    assert_eq!(entries[1]["currency"], "USD");
}

#[tokio::test]
async fn the_freeze_event_freezes_and_a_later_deposit_is_not_active() {
    let deps = deps();
    created_account(&deps).await;
    let f = call!(handlers::freeze, &deps, "freeze");
    assert_eq!(f.status, 201, "{}", f.text);
    assert_eq!(f.body["version"], 2);
    let d = call!(handlers::deposit, &deps, "deposit");
    assert_eq!(d.status, 400, "{}", d.text);
    assert_eq!(d.body["code"], "ACCOUNT_NOT_ACTIVE");
    let events = deps.app.stores.events.load_stream("account-acc-lambda-1", 0).await.expect("load");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type, "AccountFrozen");
}

#[tokio::test]
async fn a_base64_encoded_body_is_decoded_like_a_text_body() {
    let deps = deps();
    created_account(&deps).await;
    let (req, _) = event("deposit_base64");
    assert!(matches!(req.body(), Body::Binary(_)), "isBase64Encoded gives a binary body");
    let d = call!(handlers::deposit, &deps, "deposit_base64");
    assert_eq!(d.status, 201, "{}", d.text);
    assert_eq!(d.body["version"], 2);
    let events = deps.app.stores.events.load_stream("account-acc-lambda-1", 0).await.expect("load");
    assert_eq!(events[1].metadata.transaction_id.as_deref(), Some("tx-lambda-dep-b64"));
    assert_eq!(events[1].payload["amountMinorUnits"], "30");
}

#[tokio::test]
async fn an_event_without_an_idempotency_key_is_refused_and_writes_nothing() {
    let deps = deps();
    created_account(&deps).await;
    let d = call!(handlers::deposit, &deps, "deposit_missing_idempotency_key");
    assert_eq!(d.status, 400, "{}", d.text);
    assert_eq!(d.body["code"], "IDEMPOTENCY_KEY_MISSING");
    assert_eq!(d.body["statusCode"], 400);
    assert_eq!(d.body["error"], "Bad Request");
    assert!(d.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let events = deps.app.stores.events.load_stream("account-acc-lambda-1", 0).await.expect("load");
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn the_events_route_through_the_shared_route_table() {
    // API Gateway's `resource` and `httpMethod` name the route the runner's table serves.
    for (name, route) in [
        ("create_account", corebank_api::Route::CreateAccount),
        ("deposit", corebank_api::Route::Deposit),
        ("withdrawal", corebank_api::Route::Withdraw),
        ("freeze", corebank_api::Route::Freeze),
        ("get_balance_min_version", corebank_api::Route::GetBalance),
        ("get_history_paged", corebank_api::Route::GetHistory),
        ("deposit_base64", corebank_api::Route::Deposit),
        ("deposit_missing_idempotency_key", corebank_api::Route::Deposit),
        ("start_transfer", corebank_api::Route::StartTransfer),
        ("get_transfer", corebank_api::Route::GetTransfer),
    ] {
        let raw: Value = serde_json::from_str(&fixture_text(name)).expect("JSON");
        let method = raw["httpMethod"].as_str().expect("httpMethod");
        let resource = raw["resource"].as_str().expect("resource");
        let found = corebank_api::router::ROUTES.iter().find(|(m, p, _)| *m == method && *p == resource);
        assert_eq!(found.map(|(_, _, r)| *r), Some(route), "{name}");
        assert_eq!(raw["requestContext"]["resourcePath"], resource, "{name}");
    }
}

#[tokio::test]
async fn an_event_without_an_authorizer_context_is_unauthorized_and_writes_nothing() {
    let deps = deps();
    for (name, handler) in [("create_account", 0), ("deposit", 1), ("get_balance_min_version", 2)] {
        let (req, rid) = event_as(name, None);
        let response = match handler {
            0 => handlers::create_account(&deps, req).await,
            1 => handlers::deposit(&deps, req).await,
            _ => handlers::get_balance(&deps, req).await,
        };
        let challenge =
            response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let a = answer(response, &rid);
        assert_eq!((a.status, a.body["code"].as_str()), (401, Some("UNAUTHORIZED")), "{name}: {}", a.text);
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{name}");
    }
    let streams = deps.app.stores.events.list_streams("", None, 10).await.expect("list");
    assert!(streams.is_empty(), "nothing was written: {streams:?}");
}

#[tokio::test]
async fn a_customer_is_refused_what_its_scope_does_not_allow_and_sees_only_its_own_accounts() {
    let deps = deps();
    // The fixture's account belongs to owner-lambda; an operator opens it.
    created_account(&deps).await;
    // A customer may not deposit (403), and another customer's account is unknown to it (404).
    let (req, rid) = event_as("deposit", customer("owner-lambda"));
    let a = answer(handlers::deposit(&deps, req).await, &rid);
    assert_eq!((a.status, a.body["code"].as_str()), (403, Some("FORBIDDEN")), "{}", a.text);
    let (req, rid) = event_as("withdrawal", customer("someone-else"));
    let a = answer(handlers::withdraw(&deps, req).await, &rid);
    assert_eq!((a.status, a.body["code"].as_str()), (404, Some("ACCOUNT_NOT_FOUND")), "{}", a.text);
    let (req, rid) = event_as("get_history_paged", customer("someone-else"));
    let a = answer(handlers::get_history(&deps, req).await, &rid);
    assert_eq!((a.status, a.body["code"].as_str()), (404, Some("ACCOUNT_NOT_FOUND")), "{}", a.text);
    // Its own account it reads.
    let (req, rid) = event_as("get_history_paged", customer("owner-lambda"));
    let a = answer(handlers::get_history(&deps, req).await, &rid);
    assert_eq!(a.status, 200, "{}", a.text);
    let events = deps.app.stores.events.load_stream("account-acc-lambda-1", 0).await.expect("load");
    assert_eq!(events.len(), 1, "only the creation was written");
}
