//! One row per error code of docs/http-api.md ("Error codes"): a new code without a row is visible here.

use std::collections::BTreeSet;
use std::sync::Arc;

use http::Method;

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, config, key, money_body, spawn_app, spawn_faulty_app};

/// How a row reaches its code.
enum Req {
    /// `POST` with `Content-Type: application/json`, an optional Idempotency-Key and a body.
    Post { path: &'static str, key: Option<String>, body: String },
    /// `GET`.
    Get(&'static str),
    /// Anything else, raw.
    Raw { method: Method, path: &'static str, headers: Vec<(&'static str, String)>, body: Vec<u8> },
}

struct Row {
    code: &'static str,
    status: u16,
    req: Req,
    /// Appends conflict while this row runs, as if another process always won the race.
    contended: bool,
}

fn row(code: &'static str, status: u16, req: Req) -> Row {
    Row { code, status, req, contended: false }
}

async fn send(app: &TestApp, req: &Req) -> Resp {
    match req {
        Req::Post { path, key, body } => app.post_json(path, key.as_deref(), body).await,
        Req::Get(path) => app.get(path).await,
        Req::Raw { method, path, headers, body } => {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            app.send(method.clone(), path, &headers, body.clone()).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_is_reachable() {
    // IDEMPOTENCY_REQUEST_IN_PROGRESS and CONCURRENCY_CONFLICT depend on timing in real life; here
    // they are reached deterministically (a request parked while it holds its key; a store whose
    // appends always conflict), and concurrency.rs reaches them with real concurrent requests.
    let (app, faults) = spawn_faulty_app(corebank_app::AppConfig { retry_attempts_max: 2, ..config() }).await;
    let app = Arc::new(app);

    // Given: an active USD account with 10.00, a frozen one, one at the balance limit, a used key,
    // a used transaction id and a key still held by a running request.
    app.new_account("acc-e", "USD").await;
    app.deposit_ok("acc-e", "10", "USD").await;
    app.new_account("acc-frozen", "USD").await;
    app.freeze("acc-frozen", "audit").await.accepted("acc-frozen");
    app.new_account("acc-full", "JPY").await;
    for _ in 0..100 {
        app.deposit_ok("acc-full", "1000000000000000", "JPY").await;
    }
    let used_key = key();
    app.post_deposit(&used_key, "acc-e", "1", "USD", "tx-used").await.accepted("acc-e");
    let transfer = |amount: &str| {
        format!(
            r#"{{"transferId":"t-used","sourceAccountId":"acc-e","destinationAccountId":"acc-frozen","amount":{amount},"currency":"USD"}}"#
        )
    };
    let started = app.post_json("/api/transfers", Some(&key()), &transfer("1")).await;
    assert_eq!(started.code(), 202, "{}", started.text);
    let events_before = app.total_events().await;
    let held_key = key();
    let held_body = money_body("2", "USD", "tx-held");
    faults.park_next();
    let running = tokio::spawn({
        let (app, held_key, held_body) = (app.clone(), held_key.clone(), held_body.clone());
        async move { app.post_json("/api/accounts/acc-e/deposits", Some(&held_key), &held_body).await }
    });
    faults.wait_parked().await;

    let deposit = |amount: &str, currency: &str, tx: &str| money_body(amount, currency, tx);
    let rows = vec![
        row(
            "VALIDATION_FAILED",
            400,
            Req::Post {
                path: "/api/accounts/acc-e/deposits",
                key: Some(key()),
                body: deposit("10.255", "USD", "tx-v"),
            },
        ),
        row(
            "IDEMPOTENCY_KEY_MISSING",
            400,
            Req::Post { path: "/api/accounts/acc-e/deposits", key: None, body: deposit("1", "USD", "tx-m") },
        ),
        row(
            "IDEMPOTENCY_KEY_REUSED",
            422,
            Req::Post {
                path: "/api/accounts/acc-e/deposits",
                key: Some(used_key.clone()),
                body: deposit("2", "USD", "tx-used"),
            },
        ),
        row(
            "IDEMPOTENCY_REQUEST_IN_PROGRESS",
            409,
            Req::Post {
                path: "/api/accounts/acc-e/deposits",
                key: Some(held_key.clone()),
                body: held_body.clone(),
            },
        ),
        row(
            "TRANSACTION_ID_CONFLICT",
            409,
            Req::Post {
                path: "/api/accounts/acc-e/deposits",
                key: Some(key()),
                body: deposit("3", "USD", "tx-used"),
            },
        ),
        row(
            "ACCOUNT_NOT_FOUND",
            404,
            Req::Post {
                path: "/api/accounts/no-such-acc/deposits",
                key: Some(key()),
                body: deposit("1", "USD", "tx-nf"),
            },
        ),
        row("ACCOUNT_NOT_FOUND", 404, Req::Get("/api/accounts/no-such-acc")),
        row(
            "ACCOUNT_ALREADY_EXISTS",
            409,
            Req::Post {
                path: "/api/accounts",
                key: Some(key()),
                body: r#"{"accountId":"acc-e","ownerId":"owner-2","currency":"USD"}"#.to_owned(),
            },
        ),
        row(
            "ACCOUNT_NOT_ACTIVE",
            400,
            Req::Post {
                path: "/api/accounts/acc-frozen/deposits",
                key: Some(key()),
                body: deposit("1", "USD", "tx-na"),
            },
        ),
        row(
            "ACCOUNT_ALREADY_FROZEN",
            400,
            Req::Post {
                path: "/api/accounts/acc-frozen/freeze",
                key: Some(key()),
                body: r#"{"reason":"again"}"#.to_owned(),
            },
        ),
        row(
            "ACCOUNT_NOT_FROZEN",
            400,
            Req::Post {
                path: "/api/accounts/acc-e/unfreeze",
                key: Some(key()),
                body: r#"{"reason":"not frozen"}"#.to_owned(),
            },
        ),
        row(
            "CURRENCY_MISMATCH",
            400,
            Req::Post {
                path: "/api/accounts/acc-e/deposits",
                key: Some(key()),
                body: deposit("1", "EUR", "tx-cm"),
            },
        ),
        row(
            "INSUFFICIENT_FUNDS",
            400,
            Req::Post {
                path: "/api/accounts/acc-e/withdrawals",
                key: Some(key()),
                body: deposit("1000", "USD", "tx-if"),
            },
        ),
        row(
            "BALANCE_LIMIT_EXCEEDED",
            400,
            Req::Post {
                path: "/api/accounts/acc-full/deposits",
                key: Some(key()),
                body: deposit("1", "JPY", "tx-ble"),
            },
        ),
        Row {
            contended: true,
            ..row(
                "CONCURRENCY_CONFLICT",
                409,
                Req::Post {
                    path: "/api/accounts/acc-e/deposits",
                    key: Some(key()),
                    body: deposit("1", "USD", "tx-cc"),
                },
            )
        },
        row("VERSION_NOT_REACHED", 409, Req::Get("/api/accounts/acc-e/balance?minVersion=99")),
        row(
            "TRANSFER_ID_CONFLICT",
            409,
            Req::Post { path: "/api/transfers", key: Some(key()), body: transfer("2") },
        ),
        row("TRANSFER_NOT_FOUND", 404, Req::Get("/api/transfers/no-such-transfer")),
        row(
            "UNAUTHORIZED",
            401,
            Req::Raw {
                method: Method::POST,
                path: "/api/admin/projections/accounts/acc-e/rebuild",
                headers: vec![("authorization", format!("Bearer not-{ADMIN_TOKEN}"))],
                body: Vec::new(),
            },
        ),
        row("NOT_FOUND", 404, Req::Get("/api/no/such/route")),
        row(
            "METHOD_NOT_ALLOWED",
            405,
            Req::Raw {
                method: Method::DELETE,
                path: "/api/accounts/acc-e",
                headers: Vec::new(),
                body: Vec::new(),
            },
        ),
        row(
            "PAYLOAD_TOO_LARGE",
            413,
            Req::Raw {
                method: Method::POST,
                path: "/api/accounts/acc-e/deposits",
                headers: vec![("content-type", "application/json".to_owned()), ("idempotency-key", key())],
                body: vec![b' '; 64 * 1024 + 1],
            },
        ),
    ];

    let mut covered = BTreeSet::new();
    for row in &rows {
        faults.set_conflict(row.contended);
        let resp = send(&app, &row.req).await;
        faults.set_conflict(false);
        resp.error(row.status, row.code);
        covered.insert(row.code);
    }
    let expected: BTreeSet<&str> = [
        "VALIDATION_FAILED",
        "IDEMPOTENCY_KEY_MISSING",
        "IDEMPOTENCY_KEY_REUSED",
        "IDEMPOTENCY_REQUEST_IN_PROGRESS",
        "TRANSACTION_ID_CONFLICT",
        "ACCOUNT_NOT_FOUND",
        "ACCOUNT_ALREADY_EXISTS",
        "ACCOUNT_NOT_ACTIVE",
        "ACCOUNT_ALREADY_FROZEN",
        "ACCOUNT_NOT_FROZEN",
        "CURRENCY_MISMATCH",
        "INSUFFICIENT_FUNDS",
        "BALANCE_LIMIT_EXCEEDED",
        "CONCURRENCY_CONFLICT",
        "VERSION_NOT_REACHED",
        "TRANSFER_ID_CONFLICT",
        "TRANSFER_NOT_FOUND",
        "UNAUTHORIZED",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "PAYLOAD_TOO_LARGE",
    ]
    .into_iter()
    .collect();
    assert_eq!(covered, expected);
    // None of them wrote anything.
    assert_eq!(app.total_events().await, events_before);
    // The running request completes once let go.
    faults.release();
    running.await.expect("running request").accepted("acc-e");
    assert_eq!(app.total_events().await, events_before + 1);
}

#[tokio::test]
async fn every_response_carries_an_x_request_id() {
    let app = spawn_app().await;
    app.new_account("acc-rid", "USD").await;
    let answers = [
        app.get("/api/health").await,
        app.get_account("acc-rid").await,
        app.get_account("missing-acc").await,
        app.get("/api/accounts/acc-rid/nothing-here").await,
        app.get("/outside/the/api").await,
        app.get("/api").await,
        app.send(Method::PUT, "/api/accounts/acc-rid", &[], Vec::new()).await,
        app.send(Method::GET, "/api/accounts", &[], Vec::new()).await,
        app.post_json("/api/accounts/acc-rid/deposits", None, "{}").await,
        app.post_json("/api/accounts/acc-rid/deposits", Some(&key()), "[]").await,
        app.admin(Method::POST, "/api/admin/projections/accounts/rebuild-all", None).await,
    ];
    let mut ids = BTreeSet::new();
    for resp in &answers {
        let id = resp.request_id();
        assert!(!id.is_empty());
        ids.insert(id);
    }
    assert_eq!(ids.len(), answers.len(), "each request gets its own id");
    app.get("/api/accounts/acc-rid/nothing-here").await.error(404, "NOT_FOUND");
    app.get("/outside/the/api").await.error(404, "NOT_FOUND");
    app.send(Method::PUT, "/api/accounts/acc-rid", &[], Vec::new()).await.error(405, "METHOD_NOT_ALLOWED");
    app.send(Method::GET, "/api/accounts", &[], Vec::new()).await.error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn a_sane_client_request_id_is_echoed_and_an_unusable_one_is_replaced() {
    let app = spawn_app().await;
    let resp = app.send(Method::GET, "/api/health", &[("x-request-id", "client-req-42")], Vec::new()).await;
    assert_eq!(resp.request_id(), "client-req-42");
    let resp = app.send(Method::GET, "/api/no-route", &[("x-request-id", "client-req-43")], Vec::new()).await;
    resp.error(404, "NOT_FOUND");
    assert_eq!(resp.request_id(), "client-req-43");
    let long = "r".repeat(300);
    let resp = app.send(Method::GET, "/api/health", &[("x-request-id", long.as_str())], Vec::new()).await;
    assert_ne!(resp.request_id(), long);
}

#[tokio::test]
async fn a_store_outage_answers_503_without_details_and_is_not_stored_so_the_retry_succeeds() {
    let (app, faults) = spawn_faulty_app(config()).await;
    app.new_account("acc-down", "USD").await;
    let k = key();
    let tx = crate::helpers::txid();
    faults.set_unavailable(true);
    let resp = app.post_deposit(&k, "acc-down", "4", "USD", &tx).await;
    resp.error(503, "SERVICE_UNAVAILABLE");
    let message = resp.body["message"].as_str().expect("message");
    assert!(message.contains(&resp.request_id()), "a 5xx names its request id: {message}");
    assert!(!message.contains("injected"), "a 5xx does not leak its cause: {message}");
    // A read that needs the event store (the read model has never seen this account) fails the same
    // way, never with a 500.
    app.get_balance("acc-unseen").await.error(503, "SERVICE_UNAVAILABLE");
    faults.set_unavailable(false);
    // The failure was not stored under the key: the same request now runs.
    let ok = app.post_deposit(&k, "acc-down", "4", "USD", &tx).await.accepted("acc-down");
    assert_eq!(ok.version(), 2);
    assert_eq!(app.balance_minor("acc-down").await, ("400".to_owned(), 2));
}

#[tokio::test]
async fn health_is_degraded_with_503_while_the_event_store_fails_and_recovers_after() {
    let (app, faults) = spawn_faulty_app(config()).await;
    faults.set_unavailable(true);
    let resp = app.get("/api/health").await;
    assert_eq!(resp.code(), 503, "{}", resp.text);
    assert_eq!(resp.body["status"], "degraded");
    assert_eq!(resp.body["service"], "corebank");
    assert_eq!(resp.body["checks"]["eventStore"]["status"], "failing");
    faults.set_unavailable(false);
    let resp = app.get("/api/health").await;
    assert_eq!(resp.code(), 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "ok");
    assert_eq!(resp.body["checks"]["eventStore"]["status"], "ok");
}

#[tokio::test]
async fn the_request_id_a_command_answers_with_is_the_correlation_id_of_its_events() {
    let app = spawn_app().await;
    app.new_account("acc-corr", "USD").await;
    let long = "r".repeat(300);
    let cases: [Option<&str>; 4] = [None, Some("client-corr-1"), Some(long.as_str()), Some("has space")];
    for (i, client_id) in cases.into_iter().enumerate() {
        let k = key();
        let body = money_body("1", "USD", &format!("tx-corr-{i}"));
        let mut headers = vec![("content-type", "application/json"), ("idempotency-key", k.as_str())];
        if let Some(id) = client_id {
            headers.push(("x-request-id", id));
        }
        let resp =
            app.send(Method::POST, "/api/accounts/acc-corr/deposits", &headers, body.into_bytes()).await;
        let resp = resp.accepted("acc-corr");
        let rid = resp.request_id();
        if i == 1 {
            assert_eq!(rid, "client-corr-1");
        }
        let events = app.stored_events("acc-corr").await;
        let event = events.last().expect("event");
        assert_eq!(event.metadata.correlation_id.as_deref(), Some(rid.as_str()), "client id {client_id:?}");
        assert_eq!(event.metadata.causation_id.as_deref(), Some(rid.as_str()));
    }
}
