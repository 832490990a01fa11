//! Transfers end to end (docs/transfers.md): 202 + Location, the saga driving the transfer
//! to COMPLETED or FAILED in process, compensation, idempotent replays and the transfer error codes.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, key, spawn_app, txid};

fn transfer_json(id: Option<&str>, source: &str, destination: &str, amount: &str, currency: &str) -> String {
    let id = id.map(|id| format!(r#""transferId":"{id}","#)).unwrap_or_default();
    format!(
        r#"{{{id}"sourceAccountId":"{source}","destinationAccountId":"{destination}","amount":{amount},"currency":"{currency}"}}"#
    )
}

async fn post_transfer(app: &TestApp, key: &str, body: &str) -> Resp {
    app.post_json("/api/transfers", Some(key), body).await
}

/// Asserts a 202 with `{transferId, status}` and the Location of the transfer; returns the id.
#[track_caller]
fn accepted_transfer(resp: &Resp) -> String {
    assert_eq!(resp.code(), 202, "{}", resp.text);
    let id = resp.body["transferId"]
        .as_str()
        .unwrap_or_else(|| panic!("no transferId in {}", resp.text))
        .to_owned();
    assert!(
        matches!(resp.body["status"].as_str(), Some("PENDING" | "COMPLETED" | "FAILED")),
        "{}",
        resp.text
    );
    let location = resp.headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("/api/transfers/{id}").as_str()));
    id
}

/// Polls `GET /transfers/{id}` until the transfer is COMPLETED or FAILED (bounded).
async fn settled(app: &TestApp, id: &str) -> Value {
    for _ in 0..500 {
        let resp = app.get(&format!("/api/transfers/{id}")).await;
        assert_eq!(resp.code(), 200, "{}", resp.text);
        if resp.body["status"] != "PENDING" {
            return resp.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("transfer {id} did not settle within 5 s");
}

/// `(balanceMinorUnits, availableBalanceMinorUnits)` of an account.
async fn balances(app: &TestApp, account: &str) -> (String, String) {
    let resp = app.get_account(account).await;
    assert_eq!(resp.code(), 200, "{}", resp.text);
    let field = |name: &str| resp.body[name].as_str().unwrap_or_else(|| panic!("no {name}")).to_owned();
    (field("balanceMinorUnits"), field("availableBalanceMinorUnits"))
}

fn owned(minor: &str) -> (String, String) {
    (minor.to_owned(), minor.to_owned())
}

fn legs(body: &Value) -> Vec<(String, String)> {
    body["legs"]
        .as_array()
        .unwrap_or_else(|| panic!("no legs in {body}"))
        .iter()
        .map(|l| {
            assert!(l["at"].as_str().is_some_and(|t| t.ends_with('Z')), "leg time: {l}");
            (
                l["leg"].as_str().unwrap_or_default().to_owned(),
                l["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn leg(name: &str, status: &str) -> (String, String) {
    (name.to_owned(), status.to_owned())
}

async fn funded(app: &TestApp, account: &str, amount: &str) {
    app.new_account(account, "USD").await;
    app.deposit_ok(account, amount, "USD").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_accepted_with_202_and_a_location_and_completes_moving_the_money_exactly() {
    let app = spawn_app().await;
    funded(&app, "acc-t-src", "100").await;
    app.new_account("acc-t-dst", "USD").await;

    let resp = post_transfer(
        &app,
        &key(),
        &transfer_json(Some("t-happy"), "acc-t-src", "acc-t-dst", "25.50", "USD"),
    )
    .await;
    assert_eq!(accepted_transfer(&resp), "t-happy");
    assert_eq!(resp.body["status"], "PENDING");

    let body = settled(&app, "t-happy").await;
    assert_eq!(body["status"], "COMPLETED", "{body}");
    assert_eq!(body["transferId"], "t-happy");
    assert_eq!(body["sourceAccountId"], "acc-t-src");
    assert_eq!(body["destinationAccountId"], "acc-t-dst");
    assert_eq!(body["amountMinorUnits"], "2550");
    assert_eq!(
        app.get("/api/transfers/t-happy").await.raw("amount"),
        "25.5",
        "an exact number in major units"
    );
    assert_eq!(body["currency"], "USD");
    assert!(body.get("failureReason").is_none(), "{body}");
    assert_eq!(
        legs(&body),
        [leg("hold", "COMPLETED"), leg("credit", "COMPLETED"), leg("capture", "COMPLETED")]
    );
    assert!(body["createdAt"].as_str() <= body["updatedAt"].as_str(), "{body}");

    assert_eq!(balances(&app, "acc-t-src").await, owned("7450"));
    assert_eq!(balances(&app, "acc-t-dst").await, owned("2550"));
    // The source's history shows the hold and its capture, the destination's the credit.
    let types = |resp: Resp| -> Vec<String> {
        resp.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["eventType"].as_str().unwrap().to_owned())
            .collect()
    };
    let source = app.get_history("acc-t-src", "").await;
    assert_eq!(
        types(source.clone()),
        ["AccountCreated", "MoneyDeposited", "FundsReserved", "ReservationCaptured"]
    );
    let captured = &source.body["entries"][3];
    assert_eq!(captured["amountMinorUnits"], "2550");
    assert_eq!(captured["balanceAfterMinorUnits"], "7450");
    assert!(
        captured["transactionId"].as_str().is_some_and(|t| t.starts_with("xfer-") && t.ends_with("-capture"))
    );
    assert_eq!(types(app.get_history("acc-t-dst", "").await), ["AccountCreated", "MoneyDeposited"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_credit_is_impossible_fails_and_gives_the_source_its_money_back() {
    let app = spawn_app().await;
    funded(&app, "acc-c-src", "50").await;
    app.new_account("acc-c-frozen", "USD").await;
    app.freeze("acc-c-frozen", "audit").await.accepted("acc-c-frozen");
    app.new_account("acc-c-eur", "EUR").await;

    let cases = [
        ("t-missing", "acc-c-nobody", "ACCOUNT_NOT_FOUND"),
        ("t-frozen", "acc-c-frozen", "ACCOUNT_NOT_ACTIVE"),
        ("t-currency", "acc-c-eur", "CURRENCY_MISMATCH"),
    ];
    for (id, destination, reason) in cases {
        let resp =
            post_transfer(&app, &key(), &transfer_json(Some(id), "acc-c-src", destination, "20", "USD"))
                .await;
        accepted_transfer(&resp);
        let body = settled(&app, id).await;
        assert_eq!(body["status"], "FAILED", "{body}");
        assert_eq!(body["failureReason"], reason, "{body}");
        // FAILED only once compensated: the hold was placed, the credit refused, the hold released.
        assert_eq!(
            legs(&body),
            [leg("hold", "COMPLETED"), leg("credit", "FAILED"), leg("release", "COMPLETED")]
        );
        assert_eq!(balances(&app, "acc-c-src").await, owned("5000"), "{id}");
    }
    assert_eq!(balances(&app, "acc-c-frozen").await, owned("0"));
    assert_eq!(balances(&app, "acc-c-eur").await, owned("0"));
    // Nothing was ever written to the missing destination.
    assert_eq!(app.stored_version("acc-c-nobody").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_beyond_the_available_balance_fails_with_insufficient_funds_and_moves_nothing() {
    let app = spawn_app().await;
    funded(&app, "acc-i-src", "10").await;
    app.new_account("acc-i-dst", "USD").await;
    let resp = post_transfer(
        &app,
        &key(),
        &transfer_json(Some("t-broke"), "acc-i-src", "acc-i-dst", "10.01", "USD"),
    )
    .await;
    accepted_transfer(&resp);
    let body = settled(&app, "t-broke").await;
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["failureReason"], "INSUFFICIENT_FUNDS");
    assert_eq!(legs(&body), [leg("hold", "FAILED")]);
    assert_eq!(balances(&app, "acc-i-src").await, owned("1000"));
    assert_eq!(balances(&app, "acc-i-dst").await, owned("0"));
    // A frozen or missing source fails the same way, at the hold.
    let resp =
        post_transfer(&app, &key(), &transfer_json(Some("t-nosrc"), "acc-i-none", "acc-i-dst", "1", "USD"))
            .await;
    accepted_transfer(&resp);
    let body = settled(&app, "t-nosrc").await;
    assert_eq!(
        (body["status"].as_str(), body["failureReason"].as_str()),
        (Some("FAILED"), Some("ACCOUNT_NOT_FOUND"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_transfer_request_answers_the_same_transfer_and_moves_the_money_once() {
    let app = spawn_app().await;
    funded(&app, "acc-r-src", "100").await;
    app.new_account("acc-r-dst", "USD").await;
    let k = key();
    let body = transfer_json(Some("t-replay"), "acc-r-src", "acc-r-dst", "30", "USD");
    let first = post_transfer(&app, &k, &body).await;
    accepted_transfer(&first);
    settled(&app, "t-replay").await;

    // Same key, same body (keys reordered, amount written differently): the stored answer, byte for byte.
    let reordered = r#"{"currency":"USD","amount":30.00,"destinationAccountId":"acc-r-dst","sourceAccountId":"acc-r-src","transferId":"t-replay"}"#;
    let again = post_transfer(&app, &k, reordered).await;
    assert_eq!((again.code(), again.text.as_str()), (202, first.text.as_str()));
    accepted_transfer(&again);
    // Another key, same transfer id and terms: the same transfer, already done.
    let other = post_transfer(&app, &key(), &body).await;
    assert_eq!(accepted_transfer(&other), "t-replay");
    assert_eq!(other.body["status"], "COMPLETED");

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(balances(&app, "acc-r-src").await, owned("7000"));
    assert_eq!(balances(&app, "acc-r-dst").await, owned("3000"));
    let stream = app.deps.app.stores.events.load_stream("transfer-t-replay", 0).await.unwrap();
    let types: Vec<&str> = stream.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["TransferRequested", "TransferHoldPlaced", "TransferCredited", "TransferCompleted"]);

    // The same key with another body is a reused key, not a new transfer.
    let reused =
        post_transfer(&app, &k, &transfer_json(Some("t-replay"), "acc-r-src", "acc-r-dst", "31", "USD"))
            .await;
    reused.error(422, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_id_reused_with_other_terms_is_a_conflict_under_any_key() {
    let app = spawn_app().await;
    funded(&app, "acc-x-src", "100").await;
    app.new_account("acc-x-dst", "USD").await;
    app.new_account("acc-x-other", "USD").await;
    accepted_transfer(
        &post_transfer(&app, &key(), &transfer_json(Some("t-dup"), "acc-x-src", "acc-x-dst", "5", "USD"))
            .await,
    );
    settled(&app, "t-dup").await;
    for other in [
        transfer_json(Some("t-dup"), "acc-x-src", "acc-x-dst", "6", "USD"),
        transfer_json(Some("t-dup"), "acc-x-src", "acc-x-other", "5", "USD"),
        transfer_json(Some("t-dup"), "acc-x-dst", "acc-x-src", "5", "USD"),
    ] {
        let k = key();
        let resp = post_transfer(&app, &k, &other).await;
        resp.error(409, "TRANSFER_ID_CONFLICT");
        assert!(resp.headers.get(http::header::LOCATION).is_none());
        // The decision is stored under its key and replayed.
        let again = post_transfer(&app, &k, &other).await;
        assert_eq!((again.code(), again.text.as_str()), (409, resp.text.as_str()));
    }
    assert_eq!(balances(&app, "acc-x-src").await, owned("9500"));
    assert_eq!(balances(&app, "acc-x-other").await, owned("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_without_an_id_gets_one_from_its_key_so_a_retry_names_the_same_transfer() {
    let app = spawn_app().await;
    funded(&app, "acc-n-src", "10").await;
    app.new_account("acc-n-dst", "USD").await;
    let k = key();
    let body = transfer_json(None, "acc-n-src", "acc-n-dst", "1", "USD");
    let first = post_transfer(&app, &k, &body).await;
    let id = accepted_transfer(&first);
    let retry = post_transfer(&app, &k, &body).await;
    assert_eq!(accepted_transfer(&retry), id);
    // Another key is another transfer.
    let second = accepted_transfer(&post_transfer(&app, &key(), &body).await);
    assert_ne!(second, id);
    assert_eq!(settled(&app, &id).await["status"], "COMPLETED");
    assert_eq!(settled(&app, &second).await["status"], "COMPLETED");
    assert_eq!(balances(&app, "acc-n-dst").await, owned("200"));
}

#[tokio::test]
async fn malformed_transfer_requests_are_refused_before_anything_is_written() {
    let app = spawn_app().await;
    app.new_account("acc-m-src", "USD").await;
    let k = key();
    let same =
        post_transfer(&app, &k, &transfer_json(Some("t-same"), "acc-m-src", "acc-m-src", "1", "USD")).await;
    same.error(400, "VALIDATION_FAILED");
    assert!(same.body["message"].as_str().unwrap().contains("destinationAccountId"), "{}", same.text);
    for body in [
        transfer_json(Some("t-bad"), "acc-m-src", "acc-m-dst", "0", "USD"),
        transfer_json(Some("t-bad"), "acc-m-src", "acc-m-dst", "1.001", "USD"),
        transfer_json(Some("t bad"), "acc-m-src", "acc-m-dst", "1", "USD"),
        transfer_json(Some("t-bad"), "a", "acc-m-dst", "1", "USD"),
        transfer_json(Some("t-bad"), "acc-m-src", "acc-m-dst", "1", "usd"),
        r#"{"sourceAccountId":"acc-m-src","destinationAccountId":"acc-m-dst","amount":1,"currency":"USD","extra":1}"#.to_owned(),
        r#"{"sourceAccountId":"acc-m-src","amount":1,"currency":"USD"}"#.to_owned(),
    ] {
        post_transfer(&app, &key(), &body).await.error(400, "VALIDATION_FAILED");
    }
    let body = transfer_json(Some("t-nokey"), "acc-m-src", "acc-m-dst", "1", "USD");
    app.post_json("/api/transfers", None, &body).await.error(400, "IDEMPOTENCY_KEY_MISSING");
    // Validation failures are not stored: the same key can carry the fixed request.
    let fixed =
        post_transfer(&app, &k, &transfer_json(Some("t-same"), "acc-m-src", "acc-m-dst", "1", "USD")).await;
    accepted_transfer(&fixed);
    let streams = app.deps.app.stores.events.list_streams("transfer-", None, 100).await.unwrap();
    assert_eq!(streams, ["transfer-t-same"]);
}

#[tokio::test]
async fn reading_an_unknown_transfer_is_404_and_a_bad_id_or_min_version_is_refused() {
    let app = spawn_app().await;
    app.get("/api/transfers/no-such-transfer").await.error(404, "TRANSFER_NOT_FOUND");
    app.get("/api/transfers/bad%20id").await.error(400, "VALIDATION_FAILED");
    app.send(Method::DELETE, "/api/transfers/t-1", &[], Vec::new()).await.error(405, "METHOD_NOT_ALLOWED");
    funded(&app, "acc-v-src", "5").await;
    app.new_account("acc-v-dst", "USD").await;
    accepted_transfer(
        &post_transfer(&app, &key(), &transfer_json(Some("t-ver"), "acc-v-src", "acc-v-dst", "1", "USD"))
            .await,
    );
    let done = settled(&app, "t-ver").await;
    assert_eq!(done["version"], 4);
    let at = app.get("/api/transfers/t-ver?minVersion=4").await;
    assert_eq!((at.code(), at.body["status"].as_str()), (200, Some("COMPLETED")));
    app.get("/api/transfers/t-ver?minVersion=5").await.error(409, "VERSION_NOT_REACHED");
    app.get("/api/transfers/t-ver?minVersion=0").await.error(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn client_transaction_ids_may_not_take_the_prefix_reserved_for_transfer_legs() {
    let app = spawn_app().await;
    app.new_account("acc-p", "USD").await;
    let resp = app
        .post_deposit(&key(), "acc-p", "1", "USD", "xfer-00000000-0000-0000-0000-000000000000-credit")
        .await;
    resp.error(400, "VALIDATION_FAILED");
    assert_eq!(app.stored_version("acc-p").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_and_withdrawals_on_one_source_conserve_money_and_never_overdraw() {
    let app = Arc::new(spawn_app().await);
    funded(&app, "acc-k-src", "100").await;
    app.new_account("acc-k-dst", "USD").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let transferring = app.clone();
        tasks.spawn(async move {
            let body = transfer_json(Some(&format!("t-k-{i}")), "acc-k-src", "acc-k-dst", "9", "USD");
            accepted_transfer(&post_transfer(&transferring, &key(), &body).await);
            None
        });
        let app = app.clone();
        tasks.spawn(async move {
            let resp = app.post_withdrawal(&key(), "acc-k-src", "7", "USD", &txid()).await;
            match resp.code() {
                201 => Some(700_i64),
                400 => {
                    resp.error(400, "INSUFFICIENT_FUNDS");
                    Some(0)
                }
                other => panic!("withdrawal answered {other}: {}", resp.text),
            }
        });
    }
    let mut withdrawn = 0;
    while let Some(joined) = tasks.join_next().await {
        withdrawn += joined.unwrap().unwrap_or(0);
    }
    let mut moved = 0;
    for i in 0..20 {
        let body = settled(&app, &format!("t-k-{i}")).await;
        match body["status"].as_str() {
            Some("COMPLETED") => moved += 900,
            Some("FAILED") => assert_eq!(body["failureReason"], "INSUFFICIENT_FUNDS", "{body}"),
            other => panic!("{other:?}"),
        }
    }
    let (src, src_available) = balances(&app, "acc-k-src").await;
    let (dst, _) = balances(&app, "acc-k-dst").await;
    let src: i64 = src.parse().unwrap();
    let dst: i64 = dst.parse().unwrap();
    assert_eq!(src_available, src.to_string(), "no hold outlives its transfer");
    assert!(src >= 0);
    assert_eq!(dst, moved);
    assert_eq!(src + dst, 10_000 - withdrawn, "transfers neither create nor destroy money");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_all_rebuilds_transfer_status_from_the_event_store() {
    let app = spawn_app().await;
    funded(&app, "acc-b-src", "10").await;
    app.new_account("acc-b-dst", "USD").await;
    accepted_transfer(
        &post_transfer(&app, &key(), &transfer_json(Some("t-rb"), "acc-b-src", "acc-b-dst", "3", "USD"))
            .await,
    );
    let before = settled(&app, "t-rb").await;
    let resp =
        app.admin(Method::POST, "/api/admin/projections/accounts/rebuild-all", Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.code(), 202, "{}", resp.text);
    let location = resp.headers.get(http::header::LOCATION).unwrap().to_str().unwrap().to_owned();
    for _ in 0..500 {
        let job = app.admin(Method::GET, &location, Some(ADMIN_TOKEN)).await;
        if job.body["status"] == "COMPLETED" {
            // Two accounts and one transfer.
            assert_eq!(job.body["streamsRebuilt"], 3, "{}", job.text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = app.get("/api/transfers/t-rb").await;
    assert_eq!(after.body, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finishes_a_transfer_whose_saga_never_ran() {
    use corebank_app::reconcile::ReconcileSettings;
    // This app projects but runs no saga: a transfer stays PENDING, as when saga delivery stalls.
    let (app, _faults) = crate::helpers::spawn_faulty_app(crate::helpers::config()).await;
    funded(&app, "acc-r-src", "100").await;
    app.new_account("acc-r-dst", "USD").await;
    let id = accepted_transfer(
        &post_transfer(
            &app,
            &key(),
            &transfer_json(Some("t-stalled"), "acc-r-src", "acc-r-dst", "40", "USD"),
        )
        .await,
    );
    let read = app.get(&format!("/api/transfers/{id}")).await;
    assert_eq!(read.body["status"], "PENDING", "{}", read.text);
    let reconciler = app.deps.app.reconciler.clone();

    // Not yet stalled by the default bound: left alone.
    let report = reconciler.pass(&ReconcileSettings::default()).await.expect("pass");
    assert_eq!(report.examined, 0, "{report:?}");
    assert_eq!(settled_or_pending(&app, &id).await, "PENDING");

    // Past the bound: driven from the event store to its end, once.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = ReconcileSettings { pending_after: Duration::from_millis(1), batch_max: 10 };
    let report = reconciler.pass(&now).await.expect("pass");
    assert_eq!((report.examined, report.settled, report.failed), (1, 1, 0), "{report:?}");
    let done = settled(&app, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(balances(&app, "acc-r-src").await, owned("6000"));
    assert_eq!(balances(&app, "acc-r-dst").await, owned("4000"));
    // The legs act for the principal that started it (local-operator in open mode).
    let hold = app.stored_events("acc-r-src").await.into_iter().find(|e| e.event_type == "FundsReserved");
    assert_eq!(hold.and_then(|e| e.metadata.actor).as_deref(), Some("local-operator"));

    // A settled transfer is no longer listed.
    let report = reconciler.pass(&now).await.expect("pass");
    assert_eq!(report.examined, 0, "{report:?}");
}

async fn settled_or_pending(app: &TestApp, id: &str) -> String {
    let resp = app.get(&format!("/api/transfers/{id}")).await;
    resp.body["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_reconciler_finishes_a_transfer_that_never_reached_the_read_side() {
    use corebank_app::reconcile::ReconcileSettings;
    use corebank_store::TransferPhase;
    // A bank whose pipeline never runs: every event is committed, none reaches the projector or the
    // saga, so the transfer has no status row and nothing lists it as pending.
    let (deps, _pipeline) = corebank_runner::embedded(crate::helpers::config(), false);
    let send = |path: &str, key: &str, body: &str| {
        let req = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(lambda_http::Body::Text(body.to_owned()))
            .expect("request");
        corebank_api::access::with_principal(req, &corebank_auth::Principal::local_operator(), key)
    };
    let transfer = transfer_json(Some("t-norow"), "acc-nr-src", "acc-nr-dst", "40", "USD");
    for (path, key, body, status) in [
        ("/accounts", "k-nr1", r#"{"accountId":"acc-nr-src","ownerId":"owner-1","currency":"USD"}"#, 201),
        ("/accounts", "k-nr2", r#"{"accountId":"acc-nr-dst","ownerId":"owner-1","currency":"USD"}"#, 201),
        (
            "/accounts/acc-nr-src/deposits",
            "k-nr3",
            r#"{"amount":100,"currency":"USD","transactionId":"tx-nr-1"}"#,
            201,
        ),
        ("/transfers", "k-nr4", transfer.as_str(), 202),
    ] {
        let answer = corebank_api::dispatch(&deps, send(path, key, body)).await;
        assert_eq!(answer.status(), status, "{path}");
    }
    let status_row = || async { deps.app.stores.transfers.get("t-norow").await.expect("read") };
    assert_eq!(status_row().await, None);
    let reconciler = deps.app.reconciler.clone();

    // Younger than the bound: it may still be on its way, so it is left alone.
    let report = reconciler.pass(&ReconcileSettings::default()).await.expect("pass");
    assert_eq!(
        (report.examined, report.transfers_checked, report.transfer_rows_missing),
        (0, 1, 0),
        "{report:?}"
    );
    assert_eq!(status_row().await, None);

    // Past the bound: the row is projected, the saga drives the transfer to its end, and the row
    // follows it there.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = ReconcileSettings { pending_after: Duration::from_millis(1), batch_max: 10 };
    let report = reconciler.pass(&now).await.expect("pass");
    assert_eq!(
        (report.transfer_rows_missing, report.transfer_rows_repaired, report.transfer_rows_failed),
        (1, 1, 0),
        "{report:?}"
    );
    let row = status_row().await.expect("the row was written");
    assert_eq!(row.status, TransferPhase::Completed, "{row:?}");

    // The accounts' read side, whose last events the saga has just written, once those are past the
    // bound too.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = reconciler.pass(&now).await.expect("pass");
    assert_eq!((report.streams_checked, report.streams_repaired), (2, 2), "{report:?}");
    let source = deps.app.stores.read_model.summary("acc-nr-src").await.expect("read").expect("projected");
    let destination =
        deps.app.stores.read_model.summary("acc-nr-dst").await.expect("read").expect("projected");
    assert_eq!((source.balance_minor, destination.balance_minor), (6_000, 4_000));

    let report = reconciler.pass(&now).await.expect("pass");
    assert!(!report.found_work(), "nothing left to repair: {report:?}");
}
