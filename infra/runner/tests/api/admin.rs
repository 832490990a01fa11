//! Admin routes (rebuilds) and health.

use std::time::Duration;

use http::Method;

use crate::helpers::{ADMIN_TOKEN, TestApp, spawn_app};

const REBUILD_ALL: &str = "/api/admin/projections/accounts/rebuild-all";

async fn seed(app: &TestApp) {
    app.new_account("acc-a1", "USD").await;
    app.deposit_ok("acc-a1", "12.34", "USD").await;
    app.withdraw_ok("acc-a1", "2.34", "USD").await;
    app.new_account("acc-a2", "JPY").await;
    app.deposit_ok("acc-a2", "500", "JPY").await;
    app.freeze("acc-a2", "review").await.accepted("acc-a2");
    app.new_account("acc-a3", "BHD").await;
}

/// Summary, balance and full history of an account as text.
async fn reads(app: &TestApp, id: &str) -> [String; 3] {
    let s = app.get_account(id).await;
    let b = app.get_balance(id).await;
    let h = app.get_history(id, "limit=1000").await;
    for r in [&s, &b, &h] {
        assert_eq!(r.code(), 200, "{}", r.text);
    }
    [s.text, b.text, h.text]
}

#[tokio::test]
async fn admin_routes_without_or_with_a_wrong_token_are_unauthorized() {
    let app = spawn_app().await;
    app.new_account("acc-auth", "USD").await;
    let paths = [
        (Method::POST, "/api/admin/projections/accounts/acc-auth/rebuild"),
        (Method::POST, REBUILD_ALL),
        (Method::GET, "/api/admin/projections/rebuilds/some-id"),
    ];
    for (method, path) in paths {
        for token in [None, Some("wrong"), Some(""), Some(&format!("{ADMIN_TOKEN}x"))] {
            app.admin(method.clone(), path, token.map(|t| t as &str)).await.error(401, "UNAUTHORIZED");
        }
        // A non-bearer scheme with the right secret is refused too.
        let basic = format!("Basic {ADMIN_TOKEN}");
        app.send(method.clone(), path, &[("authorization", basic.as_str())], Vec::new())
            .await
            .error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn admin_routes_are_disabled_without_a_configured_token() {
    let app = crate::helpers::spawn_app_with(corebank_app::AppConfig::default(), true).await;
    app.admin(Method::POST, REBUILD_ALL, Some(ADMIN_TOKEN)).await.error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn a_single_account_rebuild_answers_its_version_and_leaves_reads_unchanged() {
    let app = spawn_app().await;
    seed(&app).await;
    let before = reads(&app, "acc-a1").await;
    let resp =
        app.admin(Method::POST, "/api/admin/projections/accounts/acc-a1/rebuild", Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.code(), 200, "{}", resp.text);
    assert_eq!(resp.body["accountId"], "acc-a1");
    assert_eq!(resp.body["version"], 3);
    assert_eq!(reads(&app, "acc-a1").await, before);
    // Twice is the same.
    let again =
        app.admin(Method::POST, "/api/admin/projections/accounts/acc-a1/rebuild", Some(ADMIN_TOKEN)).await;
    assert_eq!(again.text, resp.text);
    assert_eq!(reads(&app, "acc-a1").await, before);
}

#[tokio::test]
async fn a_rebuild_of_an_unknown_account_is_not_found() {
    let app = spawn_app().await;
    let resp =
        app.admin(Method::POST, "/api/admin/projections/accounts/acc-none/rebuild", Some(ADMIN_TOKEN)).await;
    resp.error(404, "ACCOUNT_NOT_FOUND");
    assert_eq!(app.total_events().await, 0);
}

#[tokio::test]
async fn rebuild_all_is_accepted_with_a_location_that_reaches_completed_and_reads_are_unchanged() {
    let app = spawn_app().await;
    seed(&app).await;
    let mut before = Vec::new();
    for id in ["acc-a1", "acc-a2", "acc-a3"] {
        before.push(reads(&app, id).await);
    }

    let started = app.admin(Method::POST, REBUILD_ALL, Some(ADMIN_TOKEN)).await;
    assert_eq!(started.code(), 202, "{}", started.text);
    let rebuild_id = started.body["rebuildId"].as_str().expect("rebuildId").to_owned();
    assert!(!rebuild_id.is_empty());
    let status = started.body["status"].as_str().expect("status");
    assert!(["RUNNING", "COMPLETED"].contains(&status), "{}", started.text);
    let location =
        started.headers.get(http::header::LOCATION).expect("Location").to_str().expect("ascii").to_owned();
    assert_eq!(location, format!("/api/admin/projections/rebuilds/{rebuild_id}"));

    // The location needs the token too.
    app.admin(Method::GET, &location, None).await.error(401, "UNAUTHORIZED");

    // Poll, bounded.
    let mut job = None;
    for _ in 0..200 {
        let resp = app.admin(Method::GET, &location, Some(ADMIN_TOKEN)).await;
        assert_eq!(resp.code(), 200, "{}", resp.text);
        assert_eq!(resp.body["rebuildId"], rebuild_id.as_str());
        match resp.body["status"].as_str().expect("status") {
            "RUNNING" => tokio::time::sleep(Duration::from_millis(10)).await,
            "COMPLETED" => {
                job = Some(resp);
                break;
            }
            other => panic!("rebuild ended {other}: {}", resp.text),
        }
    }
    let job = job.expect("the rebuild completes within 200 polls");
    assert_eq!(job.body["streamsRebuilt"], 3, "{}", job.text);
    assert_eq!(job.body["eventsReplayed"], 3 + 3 + 1, "{}", job.text);

    for (id, before) in ["acc-a1", "acc-a2", "acc-a3"].into_iter().zip(before) {
        assert_eq!(reads(&app, id).await, before, "{id} reads the same after the rebuild");
    }
}

#[tokio::test]
async fn an_unknown_rebuild_id_is_not_found() {
    let app = spawn_app().await;
    let resp =
        app.admin(Method::GET, "/api/admin/projections/rebuilds/no-such-rebuild", Some(ADMIN_TOKEN)).await;
    resp.error(404, "NOT_FOUND");
}

#[tokio::test]
async fn health_reports_ok_with_service_and_checks() {
    let app = spawn_app().await;
    app.new_account("acc-h", "USD").await;
    let resp = app.get("/api/health").await;
    assert_eq!(resp.code(), 200, "{}", resp.text);
    assert_eq!(resp.body["status"], "ok");
    assert_eq!(resp.body["service"], "corebank");
    let checks = resp.body["checks"].as_object().expect("checks object");
    assert_eq!(checks["eventStore"]["status"], "ok");
    assert_eq!(checks["pipeline"]["status"], "ok");
    assert!(checks["pipeline"]["lag"].is_u64(), "{}", resp.text);
    assert_eq!(checks["parked"]["status"], "ok");
    assert_eq!(checks["parked"]["count"], 0);
    assert!(checks["parked"]["oldestAgeSecs"].is_null(), "{}", resp.text);
    // Health is public: no error text from a store or the pipeline, ever.
    assert!(checks["pipeline"].get("lastError").is_none(), "{}", resp.text);
    assert!(checks["eventStore"].get("error").is_none(), "{}", resp.text);
    // Health is GET only.
    app.send(Method::POST, "/api/health", &[], Vec::new()).await.error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn health_is_degraded_while_records_are_parked_and_names_their_count_and_oldest_age() {
    let app = spawn_app().await;
    let now = app.deps.app.clock.now();
    for (stream, position, secs_ago) in [("account-a", 2, 90), ("account-a", 3, 30), ("transfer-t", 1, 10)] {
        app.deps
            .app
            .stores
            .parked
            .park(corebank_store::ParkedRecord {
                consumer: corebank_store::ParkedConsumer::Projector,
                stream_key: stream.to_owned(),
                position,
                kind: corebank_store::ParkedKind::Envelope,
                payload: "{}".to_owned(),
                error: "corrupt data".to_owned(),
                parked_at: now - chrono::Duration::seconds(secs_ago),
            })
            .await
            .unwrap();
    }

    let resp = app.get("/api/health").await;

    assert_eq!(resp.code(), 503, "{}", resp.text);
    assert_eq!(resp.body["status"], "degraded");
    let parked = &resp.body["checks"]["parked"];
    assert_eq!(parked["status"], "parked", "{}", resp.text);
    assert_eq!(parked["count"], 3);
    let age = parked["oldestAgeSecs"].as_i64().expect("an age in seconds");
    assert!((90..100).contains(&age), "{}", resp.text);
    assert!(parked.get("error").is_none(), "no record text in public health: {}", resp.text);
}

/// Parks `(position, payload)` records of the projector under `stream`, `secs_ago` apart.
async fn park(app: &TestApp, stream: &str, records: &[(u64, String)]) {
    let now = app.deps.app.clock.now();
    for (i, (position, payload)) in (0i64..).zip(records) {
        app.deps
            .app
            .stores
            .parked
            .park(corebank_store::ParkedRecord {
                consumer: corebank_store::ParkedConsumer::Projector,
                stream_key: stream.to_owned(),
                position: *position,
                kind: corebank_store::ParkedKind::Envelope,
                payload: payload.clone(),
                error: "corrupt data: refused".to_owned(),
                parked_at: now - chrono::Duration::seconds(60 - i),
            })
            .await
            .unwrap();
    }
}

/// The stored envelope of `stream` at `version`, as JSON.
async fn stored(app: &TestApp, stream: &str, version: u64) -> String {
    let events = app.deps.app.stores.events.load_stream(stream, version - 1).await.unwrap();
    serde_json::to_string(&events[0]).unwrap()
}

#[tokio::test]
async fn parked_records_are_listed_oldest_first_by_page_and_only_for_admins() {
    let app = spawn_app().await;
    park(&app, "account-acc-x", &[(2, "{}".to_owned()), (3, "{}".to_owned())]).await;

    app.admin(Method::GET, "/api/admin/parked", None).await.error(401, "UNAUTHORIZED");
    let resp = app.admin(Method::GET, "/api/admin/parked", Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.code(), 200, "{}", resp.text);
    let records = resp.body["records"].as_array().unwrap();
    let positions: Vec<u64> = records.iter().map(|r| r["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, vec![2, 3], "oldest first");
    assert_eq!(records[0]["consumer"], "projector");
    assert_eq!(records[0]["streamKey"], "account-acc-x");
    assert_eq!(records[0]["kind"], "ENVELOPE");
    assert_eq!(records[0]["error"], "corrupt data: refused");
    assert_eq!((resp.body["offset"].as_u64(), resp.body["limit"].as_u64()), (Some(0), Some(100)));

    let page = app
        .admin(Method::GET, "/api/admin/parked?consumer=projector&limit=1&offset=1", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(page.body["records"].as_array().unwrap().len(), 1, "{}", page.text);
    assert_eq!(page.body["records"][0]["position"], 3);
    let saga = app.admin(Method::GET, "/api/admin/parked?consumer=saga", Some(ADMIN_TOKEN)).await;
    assert_eq!(saga.body["records"], serde_json::json!([]), "{}", saga.text);

    for bad in ["consumer=nobody", "limit=0", "limit=1001", "offset=-1", "limit=x"] {
        app.admin(Method::GET, &format!("/api/admin/parked?{bad}"), Some(ADMIN_TOKEN))
            .await
            .error(400, "VALIDATION_FAILED");
    }
}

#[tokio::test]
async fn a_retry_applies_a_parked_stream_in_order_removes_what_it_applied_and_stops_at_what_still_fails() {
    let app = spawn_app().await;
    app.new_account("acc-r", "USD").await;
    app.deposit_ok("acc-r", "10.00", "USD").await;
    app.deposit_ok("acc-r", "5.00", "USD").await;
    let stream = "account-acc-r";
    // v2 and v4 are real events (already on the read side, so applying them again is a duplicate);
    // v3's stored envelope is broken.
    park(
        &app,
        stream,
        &[
            (2, stored(&app, stream, 2).await),
            (3, "{\"not\":".to_owned()),
            (4, stored(&app, stream, 3).await),
        ],
    )
    .await;
    let retry = format!("/api/admin/parked/projector/streams/{stream}/retry");

    app.admin(Method::POST, &retry, None).await.error(401, "UNAUTHORIZED");
    let resp = app.admin(Method::POST, &retry, Some(ADMIN_TOKEN)).await;

    assert_eq!(resp.code(), 200, "{}", resp.text);
    assert_eq!(resp.body["consumer"], "projector");
    assert_eq!(resp.body["streamKey"], stream);
    assert_eq!(resp.body["applied"], serde_json::json!([2]), "{}", resp.text);
    assert_eq!(resp.body["failed"]["position"], 3, "{}", resp.text);
    assert!(resp.body["failed"]["error"].as_str().unwrap().contains("does not decode"), "{}", resp.text);
    assert_eq!(resp.body["stillParked"], 2, "what failed and what is behind it stay parked");
    let left = app
        .deps
        .app
        .stores
        .parked
        .stream(corebank_store::ParkedConsumer::Projector, stream, 10)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|r| r.position).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(
        app.balance_minor("acc-r").await,
        ("1500".to_owned(), 3),
        "the read side is untouched by the duplicates"
    );
}

#[tokio::test]
async fn a_retry_of_an_unknown_stream_is_not_found_and_bad_names_are_refused() {
    let app = spawn_app().await;
    app.admin(Method::POST, "/api/admin/parked/projector/streams/account-none/retry", Some(ADMIN_TOKEN))
        .await
        .error(404, "NOT_FOUND");
    app.admin(Method::POST, "/api/admin/parked/nobody/streams/account-none/retry", Some(ADMIN_TOKEN))
        .await
        .error(400, "VALIDATION_FAILED");
    app.admin(Method::POST, "/api/admin/parked/saga/streams/account%20x/retry", Some(ADMIN_TOKEN))
        .await
        .error(400, "VALIDATION_FAILED");
    let long = "a".repeat(301);
    app.admin(Method::POST, &format!("/api/admin/parked/saga/streams/{long}/retry"), Some(ADMIN_TOKEN))
        .await
        .error(400, "VALIDATION_FAILED");
    app.admin(Method::GET, "/api/admin/parked/saga/streams/account-x/retry", Some(ADMIN_TOKEN))
        .await
        .error(405, "METHOD_NOT_ALLOWED");
}
