//! The Idempotency-Key contract (docs/idempotency.md, docs/http-api.md "Commands").

use crate::helpers::{key, money_body, spawn_app, txid};

#[tokio::test]
async fn same_idempotency_key_replays_the_stored_response_and_writes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-idem", "USD").await;
    let k = key();
    let first = app
        .post_json(
            "/api/accounts/acc-idem/deposits",
            Some(&k),
            r#"{"amount":12.5,"currency":"USD","transactionId":"tx-i1"}"#,
        )
        .await
        .accepted("acc-idem");
    assert_eq!(first.version(), 2);
    // Same body with keys in another order and other whitespace.
    let replay = app
        .post_json(
            "/api/accounts/acc-idem/deposits",
            Some(&k),
            "{\n  \"transactionId\" : \"tx-i1\",\n\t\"currency\": \"USD\",   \"amount\": 12.5\n}",
        )
        .await;
    assert_eq!(replay.status, first.status);
    assert_eq!(replay.text, first.text, "the replay is the stored body, byte for byte");
    assert_eq!(app.stored_version("acc-idem").await, 2);
    assert_eq!(app.balance_minor("acc-idem").await, ("1250".to_owned(), 2));
}

#[tokio::test]
async fn a_create_account_replay_returns_the_first_answer() {
    let app = spawn_app().await;
    let k = key();
    let first = app.create_account_with_key(&k, "acc-cr", "owner-1", "USD").await.accepted("acc-cr");
    let again = app.create_account_with_key(&k, "acc-cr", "owner-1", "USD").await;
    assert_eq!(again.code(), 201);
    assert_eq!(again.text, first.text);
    assert_eq!(app.stored_version("acc-cr").await, 1);
}

#[tokio::test]
async fn same_key_with_another_body_is_rejected_as_reused_and_writes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-reuse", "USD").await;
    let k = key();
    app.post_deposit(&k, "acc-reuse", "5", "USD", "tx-r1").await.accepted("acc-reuse");
    let other_amount = app.post_deposit(&k, "acc-reuse", "6", "USD", "tx-r1").await;
    other_amount.error(422, "IDEMPOTENCY_KEY_REUSED");
    let other_tx = app.post_deposit(&k, "acc-reuse", "5", "USD", "tx-r2").await;
    other_tx.error(422, "IDEMPOTENCY_KEY_REUSED");
    // Another operation under the same key is another request too.
    let other_op = app.post_withdrawal(&k, "acc-reuse", "5", "USD", "tx-r1").await;
    other_op.error(422, "IDEMPOTENCY_KEY_REUSED");
    // So is a freeze: the key namespace is shared by all account commands.
    let freeze = app.post_json("/api/accounts/acc-reuse/freeze", Some(&k), r#"{"reason":"x"}"#).await;
    freeze.error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.stored_version("acc-reuse").await, 2);
    assert_eq!(app.balance_minor("acc-reuse").await, ("500".to_owned(), 2));
}

#[tokio::test]
async fn same_key_on_another_account_path_is_rejected_as_reused() {
    let app = spawn_app().await;
    app.new_account("acc-pa", "USD").await;
    app.new_account("acc-pb", "USD").await;
    let k = key();
    let body = money_body("3", "USD", "tx-path");
    app.post_json("/api/accounts/acc-pa/deposits", Some(&k), &body).await.accepted("acc-pa");
    let resp = app.post_json("/api/accounts/acc-pb/deposits", Some(&k), &body).await;
    resp.error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.stored_version("acc-pb").await, 1);
}

#[tokio::test]
async fn a_business_rejection_is_stored_and_replayed_even_after_its_cause_is_gone() {
    let app = spawn_app().await;
    app.new_account("acc-rej", "USD").await;
    let k = key();
    let tx = txid();
    let first = app.post_withdrawal(&k, "acc-rej", "50", "USD", &tx).await;
    first.error(400, "INSUFFICIENT_FUNDS");
    // The cause goes away...
    app.deposit_ok("acc-rej", "100", "USD").await;
    // ...but the key keeps its decision.
    let replay = app.post_withdrawal(&k, "acc-rej", "50", "USD", &tx).await;
    replay.error(400, "INSUFFICIENT_FUNDS");
    assert_eq!(replay.text, first.text);
    assert_eq!(app.balance_minor("acc-rej").await, ("10000".to_owned(), 2));
    // A new key with the same transaction id may now succeed: the domain rejection wrote no record.
    app.post_withdrawal(&key(), "acc-rej", "50", "USD", &tx).await.accepted("acc-rej");
    assert_eq!(app.balance_minor("acc-rej").await, ("5000".to_owned(), 3));
}

#[tokio::test]
async fn account_not_found_is_stored_and_replayed_after_the_account_appears() {
    let app = spawn_app().await;
    let k = key();
    let tx = txid();
    let first = app.post_deposit(&k, "acc-late", "1", "USD", &tx).await;
    first.error(404, "ACCOUNT_NOT_FOUND");
    app.new_account("acc-late", "USD").await;
    let replay = app.post_deposit(&k, "acc-late", "1", "USD", &tx).await;
    replay.error(404, "ACCOUNT_NOT_FOUND");
    assert_eq!(replay.text, first.text);
    assert_eq!(app.stored_version("acc-late").await, 1);
}

#[tokio::test]
async fn a_validation_failure_is_not_stored_so_the_fixed_body_can_reuse_the_key() {
    let app = spawn_app().await;
    app.new_account("acc-fix", "USD").await;
    let k = key();
    let tx = txid();
    app.post_deposit(&k, "acc-fix", "10.255", "USD", &tx).await.error(400, "VALIDATION_FAILED");
    app.post_json("/api/accounts/acc-fix/deposits", Some(&k), "{not json")
        .await
        .error(400, "VALIDATION_FAILED");
    assert_eq!(app.stored_version("acc-fix").await, 1);
    let fixed = app.post_deposit(&k, "acc-fix", "10.25", "USD", &tx).await.accepted("acc-fix");
    assert_eq!(fixed.version(), 2);
    assert_eq!(app.balance_minor("acc-fix").await, ("1025".to_owned(), 2));
}

#[tokio::test]
async fn a_missing_or_empty_idempotency_key_is_rejected_and_writes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-nokey", "USD").await;
    let body = money_body("1", "USD", "tx-nokey");
    for key in [None, Some(""), Some("   ")] {
        let resp = app.post_json("/api/accounts/acc-nokey/deposits", key, &body).await;
        resp.error(400, "IDEMPOTENCY_KEY_MISSING");
    }
    let resp = app
        .post_json("/api/accounts", None, r#"{"accountId":"acc-nk2","ownerId":"own","currency":"USD"}"#)
        .await;
    resp.error(400, "IDEMPOTENCY_KEY_MISSING");
    let resp = app.post_json("/api/accounts/acc-nokey/freeze", None, r#"{"reason":"r"}"#).await;
    resp.error(400, "IDEMPOTENCY_KEY_MISSING");
    assert_eq!(app.stored_version("acc-nokey").await, 1);
    assert_eq!(app.stored_version("acc-nk2").await, 0);
}

#[tokio::test]
async fn an_idempotency_key_of_256_characters_is_refused_and_255_is_accepted() {
    let app = spawn_app().await;
    app.new_account("acc-klen", "USD").await;
    let long = "k".repeat(256);
    let resp = app.post_deposit(&long, "acc-klen", "1", "USD", &txid()).await;
    resp.error(400, "VALIDATION_FAILED");
    assert!(resp.body["message"].as_str().expect("message").contains("Idempotency-Key"), "{}", resp.text);
    assert_eq!(app.stored_version("acc-klen").await, 1);
    let max = "k".repeat(255);
    let tx = txid();
    let first = app.post_deposit(&max, "acc-klen", "1", "USD", &tx).await.accepted("acc-klen");
    let replay = app.post_deposit(&max, "acc-klen", "1", "USD", &tx).await;
    assert_eq!(replay.text, first.text);
    assert_eq!(app.stored_version("acc-klen").await, 2);
}

#[tokio::test]
async fn the_same_amount_written_differently_is_the_same_request() {
    let app = spawn_app().await;
    app.new_account("acc-eq", "USD").await;
    let k = key();
    let first = app.post_deposit(&k, "acc-eq", "1000", "USD", "tx-eq").await.accepted("acc-eq");
    for same in ["1000.0", "1000.00", "1000.000"] {
        let replay = app.post_deposit(&k, "acc-eq", same, "USD", "tx-eq").await;
        assert_eq!(replay.text, first.text, "{same}");
    }
    app.post_deposit(&k, "acc-eq", "1000.01", "USD", "tx-eq").await.error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.balance_minor("acc-eq").await, ("100000".to_owned(), 2));
}

#[tokio::test]
async fn an_idempotency_key_in_the_transfer_legs_namespace_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-legkey", "USD").await;
    // What the saga would use for a transfer's hold leg: a client must not be able to claim it first.
    let leg_key = "saga:xfer-0b0e2c3a-5d1f-5a7e-9c2b-1f4e6a8d0c3b-hold";
    let resp = app.post_deposit(leg_key, "acc-legkey", "1", "USD", &txid()).await;
    resp.error(400, "VALIDATION_FAILED");
    assert!(resp.body["message"].as_str().expect("message").contains("\"saga:\""), "{}", resp.text);
    assert_eq!(app.stored_version("acc-legkey").await, 1);
    // The prefix only: a key that merely contains it elsewhere is a client key like any other.
    app.post_deposit("order-saga:1", "acc-legkey", "1", "USD", &txid()).await.accepted("acc-legkey");
    assert_eq!(app.stored_version("acc-legkey").await, 2);
}
