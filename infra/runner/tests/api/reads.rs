//! Reads: summary, balance, history paging, minVersion read-your-writes.

use crate::helpers::{TestApp, config, key, spawn_app, spawn_app_with, txid};

#[tokio::test]
async fn reads_of_an_unknown_account_are_not_found() {
    let app = spawn_app().await;
    for path in ["/api/accounts/nobody-1", "/api/accounts/nobody-1/balance", "/api/accounts/nobody-1/history"]
    {
        app.get(path).await.error(404, "ACCOUNT_NOT_FOUND");
        app.get(&format!("{path}?minVersion=1")).await.error(404, "ACCOUNT_NOT_FOUND");
    }
    // An invalid id is a validation failure, not a lookup.
    app.get("/api/accounts/x").await.error(400, "VALIDATION_FAILED");
    app.get("/api/accounts/bad%20id/balance").await.error(400, "VALIDATION_FAILED");
}

async fn account_with_deposits(app: &TestApp, id: &str, n: usize) {
    app.new_account(id, "JPY").await;
    for i in 1..=n {
        app.deposit_ok(id, &i.to_string(), "JPY").await;
    }
}

#[tokio::test]
async fn history_pages_with_a_default_of_100_a_maximum_of_1000_and_an_offset() {
    let app = spawn_app().await;
    account_with_deposits(&app, "acc-page", 120).await;

    let page = app.get_history("acc-page", "").await;
    assert_eq!(page.code(), 200, "{}", page.text);
    let entries = page.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 100, "default limit is 100");
    assert_eq!(entries[0]["streamVersion"], 1);
    assert_eq!(entries[99]["streamVersion"], 100);

    let page = app.get_history("acc-page", "limit=1000").await;
    assert_eq!(page.body["entries"].as_array().expect("entries").len(), 121);

    let page = app.get_history("acc-page", "limit=10&offset=115").await;
    let entries = page.body["entries"].as_array().expect("entries");
    let versions: Vec<u64> = entries.iter().map(|e| e["streamVersion"].as_u64().expect("v")).collect();
    assert_eq!(versions, (116..=121).collect::<Vec<_>>());
    assert_eq!(entries[0]["amountMinorUnits"], "115");
    assert_eq!(entries[0]["eventType"], "MoneyDeposited");

    let page = app.get_history("acc-page", "offset=500").await;
    assert_eq!(page.code(), 200);
    assert!(page.body["entries"].as_array().expect("entries").is_empty());

    // Consecutive pages tile the history without gaps or overlaps.
    let mut seen = Vec::new();
    for offset in (0..121).step_by(25) {
        let page = app.get_history("acc-page", &format!("limit=25&offset={offset}")).await;
        for e in page.body["entries"].as_array().expect("entries") {
            seen.push(e["streamVersion"].as_u64().expect("v"));
        }
    }
    assert_eq!(seen, (1..=121).collect::<Vec<_>>());
}

#[tokio::test]
async fn invalid_history_limits_and_offsets_are_refused_never_clamped() {
    let app = spawn_app().await;
    account_with_deposits(&app, "acc-lim", 1).await;
    for query in [
        "limit=1001",
        "limit=-1",
        "limit=1.5",
        "limit=ten",
        "limit=",
        "limit=0",
        "limit=99999999999999999999999",
        "offset=-1",
        "offset=2.0",
        "offset=abc",
        "offset=",
        "limit=+5",
    ] {
        let resp = app.get_history("acc-lim", query).await;
        resp.error(400, "VALIDATION_FAILED");
        let name = query.split('=').next().expect("name");
        assert!(resp.body["message"].as_str().expect("message").contains(name), "{query}: {}", resp.text);
    }
    let ok = app.get_history("acc-lim", "limit=1000&offset=0").await;
    assert_eq!(ok.code(), 200, "{}", ok.text);
    assert_eq!(ok.body["entries"].as_array().expect("entries").len(), 2);
}

#[tokio::test]
async fn min_version_must_be_a_positive_integer() {
    let app = spawn_app().await;
    account_with_deposits(&app, "acc-mv", 1).await;
    for mv in ["0", "-1", "1.5", "abc", "", "1e3"] {
        for path in ["/api/accounts/acc-mv", "/api/accounts/acc-mv/balance", "/api/accounts/acc-mv/history"] {
            let resp = app.get(&format!("{path}?minVersion={mv}")).await;
            resp.error(400, "VALIDATION_FAILED");
            assert!(resp.body["message"].as_str().expect("message").contains("minVersion"), "{}", resp.text);
        }
    }
}

async fn min_version_reads(app: &TestApp) {
    app.new_account("acc-ryw", "USD").await;
    app.deposit_ok("acc-ryw", "1", "USD").await;
    let last = app.deposit_ok("acc-ryw", "2.5", "USD").await;
    let v = last.version();
    assert_eq!(v, 3);

    // At the current version: answered at that version, with the write in it.
    let balance = app.get(&format!("/api/accounts/acc-ryw/balance?minVersion={v}")).await;
    assert_eq!(balance.code(), 200, "{}", balance.text);
    assert_eq!(balance.version(), v);
    assert_eq!(balance.raw("balance"), "3.5");
    assert_eq!(balance.body["balanceMinorUnits"], "350");
    let summary = app.get(&format!("/api/accounts/acc-ryw?minVersion={v}")).await;
    assert_eq!(summary.code(), 200, "{}", summary.text);
    assert_eq!(summary.version(), v);
    assert_eq!(summary.raw("balance"), "3.5");
    let history = app.get(&format!("/api/accounts/acc-ryw/history?minVersion={v}")).await;
    assert_eq!(history.code(), 200, "{}", history.text);
    let entries = history.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2]["eventId"], last.event_ids()[0].as_str());
    // Summary timestamps come from the events whichever side answers.
    assert_eq!(summary.body["createdAt"], entries[0]["occurredAt"]);
    assert_eq!(summary.body["updatedAt"], entries[2]["occurredAt"]);

    // Lower versions are fine too: the answer is at that version or later.
    let older = app.get("/api/accounts/acc-ryw/balance?minVersion=1").await;
    assert_eq!(older.code(), 200);
    assert!(older.version() >= 1);

    // Above the event store's version: not reached.
    for path in ["/api/accounts/acc-ryw", "/api/accounts/acc-ryw/balance", "/api/accounts/acc-ryw/history"] {
        let resp = app.get(&format!("{path}?minVersion={}", v + 1)).await;
        resp.error(409, "VERSION_NOT_REACHED");
    }

    // Every write is readable at the version its 201 named, immediately.
    for i in 0..20 {
        let w = app.post_withdrawal(&key(), "acc-ryw", "0.01", "USD", &txid()).await.accepted("acc-ryw");
        let b = app.get(&format!("/api/accounts/acc-ryw/balance?minVersion={}", w.version())).await;
        assert_eq!(b.code(), 200, "{}", b.text);
        assert!(b.version() >= w.version());
        assert_eq!(b.body["balanceMinorUnits"], (350 - (i + 1)).to_string());
    }
}

#[tokio::test]
async fn min_version_reads_your_writes_when_commands_wait_for_the_projection() {
    let app = spawn_app().await;
    min_version_reads(&app).await;
}

#[tokio::test]
async fn min_version_reads_your_writes_in_the_eventually_consistent_mode() {
    let app = spawn_app_with(config(), false).await;
    min_version_reads(&app).await;
    // Without minVersion a read still finds a brand-new account (the event store answers).
    app.new_account("acc-fresh", "USD").await;
    let summary = app.get_account("acc-fresh").await;
    assert_eq!(summary.code(), 200, "{}", summary.text);
    assert_eq!(summary.body["status"], "ACTIVE");
}
