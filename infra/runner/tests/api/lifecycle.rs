//! The account lifecycle end to end, and what every read shows of it.

use serde_json::Value;

use crate::helpers::{key, spawn_app, txid};

fn entry_keys(entry: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = entry.as_object().expect("entry object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn an_account_lives_through_create_deposit_withdraw_freeze_and_every_read_converges() {
    let app = spawn_app().await;

    // Create.
    let created = app.create_account("acc-life", "owner-7", "USD").await.accepted("acc-life");
    assert_eq!(created.body["ownerId"], "owner-7");
    assert_eq!(created.body["currency"], "USD");
    assert_eq!(created.version(), 1);
    assert_eq!(created.event_ids().len(), 1);

    // Deposit 100.50, withdraw 30.25, freeze.
    let dep_tx = txid();
    let deposited = app.post_deposit(&key(), "acc-life", "100.50", "USD", &dep_tx).await.accepted("acc-life");
    assert_eq!(deposited.version(), 2);
    assert!(deposited.body.get("ownerId").is_none(), "only create echoes the owner: {}", deposited.text);
    let wd_tx = txid();
    let withdrawn =
        app.post_withdrawal(&key(), "acc-life", "30.25", "USD", &wd_tx).await.accepted("acc-life");
    assert_eq!(withdrawn.version(), 3);
    let frozen = app.freeze("acc-life", "suspected fraud").await.accepted("acc-life");
    assert_eq!(frozen.version(), 4);

    // A frozen account takes no money in or out, and nothing is written.
    app.post_deposit(&key(), "acc-life", "1", "USD", &txid()).await.error(400, "ACCOUNT_NOT_ACTIVE");
    app.post_withdrawal(&key(), "acc-life", "1", "USD", &txid()).await.error(400, "ACCOUNT_NOT_ACTIVE");
    assert_eq!(app.stored_version("acc-life").await, 4);

    // Summary.
    let summary = app.get_account("acc-life").await;
    assert_eq!(summary.code(), 200, "{}", summary.text);
    assert_eq!(summary.body["accountId"], "acc-life");
    assert_eq!(summary.body["ownerId"], "owner-7");
    assert_eq!(summary.body["currency"], "USD");
    assert_eq!(summary.body["status"], "FROZEN");
    assert_eq!(summary.raw("balance"), "70.25");
    assert_eq!(summary.raw("balanceMinorUnits"), "\"7025\"");
    assert_eq!(summary.raw("availableBalance"), "70.25");
    assert_eq!(summary.raw("availableBalanceMinorUnits"), "\"7025\"");
    assert_eq!(summary.version(), 4);

    // Balance.
    let balance = app.get_balance("acc-life").await;
    assert_eq!(balance.code(), 200, "{}", balance.text);
    assert_eq!(balance.body["accountId"], "acc-life");
    assert_eq!(balance.raw("balance"), "70.25");
    assert_eq!(balance.body["balanceMinorUnits"], "7025");
    assert_eq!(balance.body["currency"], "USD");
    assert_eq!(balance.body["status"], "FROZEN");
    assert_eq!(balance.version(), 4);

    // History, oldest first, with the documented fields per event type.
    let history = app.get_history("acc-life", "").await;
    assert_eq!(history.code(), 200, "{}", history.text);
    assert_eq!(history.body["accountId"], "acc-life");
    let entries = history.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4, "{}", history.text);
    let types: Vec<&str> = entries.iter().map(|e| e["eventType"].as_str().expect("eventType")).collect();
    assert_eq!(types, ["AccountCreated", "MoneyDeposited", "MoneyWithdrawn", "AccountFrozen"]);
    let first_ids = [&created, &deposited, &withdrawn, &frozen].map(|r| r.event_ids()[0].clone());
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["streamVersion"], i as u64 + 1);
        assert_eq!(entry["accountId"], "acc-life");
        assert_eq!(entry["eventId"], first_ids[i].as_str(), "history event ids are the 201s' eventIds");
        assert!(entry["occurredAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{entry}");
        for field in ["eventId", "accountId", "streamVersion", "eventType", "occurredAt"] {
            assert!(entry.get(field).is_some(), "entry {i} lacks {field}: {entry}");
        }
    }
    let created_keys = entry_keys(&entries[0]);
    for absent in ["amount", "amountMinorUnits", "transactionId", "reason"] {
        assert!(!created_keys.contains(&absent), "AccountCreated has no {absent}: {}", entries[0]);
    }
    let dep_entry = &entries[1];
    assert!(history.text.contains("\"amount\":100.5,"), "exact amount text: {}", history.text);
    assert_eq!(dep_entry["amountMinorUnits"], "10050");
    assert_eq!(dep_entry["currency"], "USD");
    assert_eq!(dep_entry["transactionId"], dep_tx.as_str());
    assert!(dep_entry.get("reason").is_none());
    let wd_entry = &entries[2];
    assert_eq!(wd_entry["amountMinorUnits"], "3025");
    assert!(history.text.contains("\"amount\":30.25,"), "exact amount text: {}", history.text);
    assert_eq!(wd_entry["currency"], "USD");
    assert_eq!(wd_entry["transactionId"], wd_tx.as_str());
    let freeze_entry = &entries[3];
    assert_eq!(freeze_entry["reason"], "suspected fraud");
    assert!(freeze_entry.get("amount").is_none() && freeze_entry.get("transactionId").is_none());

    // createdAt / updatedAt are the first and last event times.
    assert_eq!(summary.body["createdAt"], entries[0]["occurredAt"]);
    assert_eq!(summary.body["updatedAt"], entries[3]["occurredAt"]);

    // The event store agrees with the reads.
    let stored = app.stored_events("acc-life").await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[1].metadata.transaction_id.as_deref(), Some(dep_tx.as_str()));

    // Unfreeze, then money moves again.
    let unfrozen = app.unfreeze("acc-life", "cleared").await.accepted("acc-life");
    assert_eq!(unfrozen.version(), 5);
    let again = app.deposit_ok("acc-life", "0.75", "USD").await;
    assert_eq!(again.version(), 6);
    let summary = app.get_account("acc-life").await;
    assert_eq!(summary.body["status"], "ACTIVE");
    assert_eq!(summary.raw("balance"), "71");
    assert_eq!(summary.body["balanceMinorUnits"], "7100");
    assert_eq!(summary.version(), 6);
    let history = app.get_history("acc-life", "").await;
    let entries = history.body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[4]["eventType"], "AccountUnfrozen");
    assert_eq!(entries[4]["reason"], "cleared");
    assert_eq!(entries[5]["eventType"], "MoneyDeposited");
    assert_eq!(summary.body["createdAt"], entries[0]["occurredAt"]);
    assert_eq!(summary.body["updatedAt"], entries[5]["occurredAt"]);
}

#[tokio::test]
async fn the_principal_is_the_actor_and_the_body_actor_only_the_requested_one() {
    let app = spawn_app().await;
    app.new_account("acc-meta", "EUR").await;
    let k = key();
    let body = r#"{"amount": 5, "currency": "EUR", "transactionId": "tx-meta-1", "actor": "teller-9"}"#;
    app.post_json("/api/accounts/acc-meta/deposits", Some(&k), body).await.accepted("acc-meta");
    let events = app.stored_events("acc-meta").await;
    assert_eq!(events.len(), 2);
    // Open mode: every caller is local-operator; the body's actor is recorded, never believed.
    assert_eq!(events[1].metadata.actor.as_deref(), Some("local-operator"));
    assert_eq!(events[1].metadata.requested_actor.as_deref(), Some("teller-9"));
    assert_eq!(events[1].metadata.command_id.as_deref(), Some(k.as_str()));
    assert_eq!(events[1].metadata.transaction_id.as_deref(), Some("tx-meta-1"));
}

#[tokio::test]
async fn freezing_twice_and_unfreezing_an_active_account_are_rejected_and_write_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-fz", "USD").await;
    app.unfreeze("acc-fz", "nothing to undo").await.error(400, "ACCOUNT_NOT_FROZEN");
    app.freeze("acc-fz", "first").await.accepted("acc-fz");
    app.freeze("acc-fz", "second").await.error(400, "ACCOUNT_ALREADY_FROZEN");
    assert_eq!(app.stored_version("acc-fz").await, 2);
    // Blank reasons are validation failures.
    let resp = app.post_json("/api/accounts/acc-fz/unfreeze", Some(&key()), r#"{"reason":"   "}"#).await;
    resp.error(400, "VALIDATION_FAILED");
    assert_eq!(app.stored_version("acc-fz").await, 2);
}

#[tokio::test]
async fn creating_an_account_that_exists_is_a_conflict_and_changes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-dup", "USD").await;
    app.create_account("acc-dup", "someone-else", "EUR").await.error(409, "ACCOUNT_ALREADY_EXISTS");
    let summary = app.get_account("acc-dup").await;
    assert_eq!(summary.body["ownerId"], "owner-1");
    assert_eq!(summary.body["currency"], "USD");
    assert_eq!(app.stored_version("acc-dup").await, 1);
}

#[tokio::test]
async fn commands_on_an_unknown_account_are_not_found_and_write_nothing() {
    let app = spawn_app().await;
    app.post_deposit(&key(), "ghost-1", "1", "USD", &txid()).await.error(404, "ACCOUNT_NOT_FOUND");
    app.post_withdrawal(&key(), "ghost-1", "1", "USD", &txid()).await.error(404, "ACCOUNT_NOT_FOUND");
    app.freeze("ghost-1", "why").await.error(404, "ACCOUNT_NOT_FOUND");
    app.unfreeze("ghost-1", "why").await.error(404, "ACCOUNT_NOT_FOUND");
    assert_eq!(app.stored_version("ghost-1").await, 0);
    assert_eq!(app.total_events().await, 0);
}

#[tokio::test]
async fn a_command_in_another_currency_is_rejected_and_writes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-cur", "USD").await;
    app.post_deposit(&key(), "acc-cur", "10", "EUR", &txid()).await.error(400, "CURRENCY_MISMATCH");
    app.deposit_ok("acc-cur", "10", "USD").await;
    app.post_withdrawal(&key(), "acc-cur", "1", "GBP", &txid()).await.error(400, "CURRENCY_MISMATCH");
    assert_eq!(app.balance_minor("acc-cur").await, ("1000".to_owned(), 2));
}

#[tokio::test]
async fn withdrawal_beyond_available_balance_is_rejected_and_writes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-od", "USD").await;
    app.deposit_ok("acc-od", "10.00", "USD").await;
    let resp = app.post_withdrawal(&key(), "acc-od", "10.01", "USD", &txid()).await;
    resp.error(400, "INSUFFICIENT_FUNDS");
    assert_eq!(app.balance_minor("acc-od").await, ("1000".to_owned(), 2));
    // Exactly the balance is fine and leaves zero.
    app.withdraw_ok("acc-od", "10", "USD").await;
    let balance = app.get_balance("acc-od").await;
    assert_eq!(balance.raw("balance"), "0");
    assert_eq!(balance.body["balanceMinorUnits"], "0");
    assert_eq!(balance.version(), 3);
}

#[tokio::test]
async fn ids_at_the_edges_of_their_alphabet_and_length_are_accepted() {
    let app = spawn_app().await;
    let long_id = format!("A.b_c:d-{}", "9".repeat(56));
    assert_eq!(long_id.len(), 64);
    for (i, id) in ["a.b", "Z_9", "acc:1.2_3-x", long_id.as_str()].into_iter().enumerate() {
        app.new_account(id, "USD").await;
        let body = format!(
            r#"{{"amount":1,"currency":"USD","transactionId":"{i}-{}","actor":"{}"}}"#,
            "t".repeat(100),
            "a".repeat(128)
        );
        app.post_json(&format!("/api/accounts/{id}/deposits"), Some(&key()), &body).await.accepted(id);
        let summary = app.get_account(id).await;
        assert_eq!(summary.body["accountId"], id);
        assert_eq!(summary.body["balanceMinorUnits"], "100");
    }
    // The longest transaction id, 128 characters, is accepted.
    let tx = "T".repeat(128);
    app.post_deposit(&key(), "a.b", "1", "USD", &tx).await.accepted("a.b");
    assert_eq!(app.stored_events("a.b").await[2].metadata.transaction_id.as_deref(), Some(tx.as_str()));
}

#[tokio::test]
async fn the_reconciler_repairs_a_read_side_that_never_received_an_accounts_events() {
    use std::time::Duration;

    use corebank_app::reconcile::ReconcileSettings;
    // A bank whose pipeline never runs: every event is committed, none reaches the read tables.
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
    for (path, key, body) in [
        ("/accounts", "k-r1", r#"{"accountId":"acc-repair","ownerId":"owner-1","currency":"EUR"}"#),
        (
            "/accounts/acc-repair/deposits",
            "k-r2",
            r#"{"amount":12.5,"currency":"EUR","transactionId":"tx-repair-1"}"#,
        ),
    ] {
        let answer = corebank_api::dispatch(&deps, send(path, key, body)).await;
        assert_eq!(answer.status(), 201);
    }
    assert_eq!(deps.app.stores.read_model.summary("acc-repair").await.expect("read"), None);
    let reconciler = deps.app.reconciler.clone();

    // Events younger than the bound may still be on their way: left alone.
    let report = reconciler.pass(&ReconcileSettings::default()).await.expect("pass");
    assert_eq!((report.streams_checked, report.streams_repaired), (1, 0), "{report:?}");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = ReconcileSettings { pending_after: Duration::from_millis(1), batch_max: 10 };
    let report = reconciler.pass(&now).await.expect("pass");
    assert_eq!(
        (report.streams_checked, report.streams_repaired, report.streams_failed),
        (1, 1, 0),
        "{report:?}"
    );
    let summary = deps.app.stores.read_model.summary("acc-repair").await.expect("read").expect("projected");
    assert_eq!((summary.version, summary.balance_minor), (2, 1250));
    let report = reconciler.pass(&now).await.expect("pass");
    assert_eq!(report.streams_repaired, 0, "nothing left to repair: {report:?}");
}
