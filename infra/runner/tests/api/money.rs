//! Exact money at the edge: amounts are decimal text in major units, never a float.

use crate::helpers::{key, spawn_app, txid};

#[tokio::test]
async fn usd_amounts_with_two_decimals_or_trailing_zeros_are_accepted_exactly() {
    let app = spawn_app().await;
    app.new_account("acc-usd", "USD").await;
    app.deposit_ok("acc-usd", "10.25", "USD").await;
    assert_eq!(app.balance_minor("acc-usd").await, ("1025".to_owned(), 2));
    app.deposit_ok("acc-usd", "10.250", "USD").await;
    let balance = app.get_balance("acc-usd").await;
    assert_eq!(balance.raw("balance"), "20.5");
    assert_eq!(balance.body["balanceMinorUnits"], "2050");
    let history = app.get_history("acc-usd", "").await;
    let entries = history.body["entries"].as_array().expect("entries");
    assert_eq!(entries[1]["amountMinorUnits"], "1025");
    assert_eq!(entries[2]["amountMinorUnits"], "1025");
}

#[tokio::test]
async fn a_usd_amount_with_three_significant_decimals_is_a_validation_failure_naming_amount() {
    let app = spawn_app().await;
    app.new_account("acc-usd3", "USD").await;
    let resp = app.post_deposit(&key(), "acc-usd3", "10.255", "USD", &txid()).await;
    resp.error(400, "VALIDATION_FAILED");
    assert!(resp.body["message"].as_str().expect("message").contains("amount"), "{}", resp.text);
    assert_eq!(app.stored_version("acc-usd3").await, 1);
}

#[tokio::test]
async fn jpy_takes_whole_amounts_only() {
    let app = spawn_app().await;
    app.new_account("acc-jpy", "JPY").await;
    app.deposit_ok("acc-jpy", "1000", "JPY").await;
    app.post_deposit(&key(), "acc-jpy", "1.5", "JPY", &txid()).await.error(400, "VALIDATION_FAILED");
    // `1.0` is exactly representable in yen.
    app.deposit_ok("acc-jpy", "1.0", "JPY").await;
    let balance = app.get_balance("acc-jpy").await;
    assert_eq!(balance.raw("balance"), "1001");
    assert_eq!(balance.body["balanceMinorUnits"], "1001");
    assert_eq!(balance.version(), 3);
}

#[tokio::test]
async fn bhd_takes_three_decimals() {
    let app = spawn_app().await;
    app.new_account("acc-bhd", "BHD").await;
    app.deposit_ok("acc-bhd", "1.234", "BHD").await;
    app.post_deposit(&key(), "acc-bhd", "1.2345", "BHD", &txid()).await.error(400, "VALIDATION_FAILED");
    app.withdraw_ok("acc-bhd", "0.004", "BHD").await;
    let summary = app.get_account("acc-bhd").await;
    assert_eq!(summary.raw("balance"), "1.23");
    assert_eq!(summary.body["balanceMinorUnits"], "1230");
    assert_eq!(summary.raw("availableBalance"), "1.23");
    assert_eq!(summary.version(), 3);
}

#[tokio::test]
async fn zero_negative_string_exponent_and_oversized_amounts_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    app.new_account("acc-bad", "USD").await;
    let refused = [
        "0",
        "0.00",
        "-1",
        "-0.01",
        "-0",
        "\"10\"",
        "\"10.25\"",
        "1e2",
        "1E2",
        "1.5e1",
        "1e15",
        "1e-2",
        "10000000000000.01",
        "10000000000001",
        "1000000000000000000000000000000",
        "null",
        "true",
        "[1]",
        "{\"value\":1}",
        "01",
    ];
    for amount in refused {
        let resp = app.post_deposit(&key(), "acc-bad", amount, "USD", &txid()).await;
        assert_eq!(resp.code(), 400, "amount {amount}: {}", resp.text);
        resp.error(400, "VALIDATION_FAILED");
        let resp = app.post_withdrawal(&key(), "acc-bad", amount, "USD", &txid()).await;
        resp.error(400, "VALIDATION_FAILED");
    }
    assert_eq!(app.stored_version("acc-bad").await, 1);
    // The upper bound itself, 10^15 minor units, is accepted.
    app.deposit_ok("acc-bad", "10000000000000", "USD").await;
    assert_eq!(app.balance_minor("acc-bad").await, ("1000000000000000".to_owned(), 2));
    // The smallest unit is accepted.
    app.deposit_ok("acc-bad", "0.01", "USD").await;
    assert_eq!(app.balance_minor("acc-bad").await, ("1000000000000001".to_owned(), 3));
}

#[tokio::test]
async fn balances_are_rendered_exactly_so_point_one_plus_point_two_is_point_three() {
    let app = spawn_app().await;
    app.new_account("acc-float", "USD").await;
    app.deposit_ok("acc-float", "0.1", "USD").await;
    app.deposit_ok("acc-float", "0.2", "USD").await;
    let summary = app.get_account("acc-float").await;
    assert_eq!(summary.raw("balance"), "0.3");
    assert_eq!(summary.raw("balanceMinorUnits"), "\"30\"");
    assert_eq!(summary.raw("availableBalance"), "0.3");
    let balance = app.get_balance("acc-float").await;
    assert_eq!(balance.raw("balance"), "0.3");
    // Large balances keep every digit, which a float would not.
    app.deposit_ok("acc-float", "9999999999999.99", "USD").await;
    let balance = app.get_balance("acc-float").await;
    assert_eq!(balance.raw("balance"), "10000000000000.29");
    assert_eq!(balance.body["balanceMinorUnits"], "1000000000000029");
}

#[tokio::test]
async fn a_deposit_that_would_pass_the_balance_limit_is_refused() {
    let app = spawn_app().await;
    app.new_account("acc-lim", "JPY").await;
    // 100 deposits of the largest amount reach exactly 10^17 minor units, which is allowed.
    for _ in 0..100 {
        app.deposit_ok("acc-lim", "1000000000000000", "JPY").await;
    }
    assert_eq!(app.balance_minor("acc-lim").await, ("100000000000000000".to_owned(), 101));
    let resp = app.post_deposit(&key(), "acc-lim", "1", "JPY", &txid()).await;
    resp.error(400, "BALANCE_LIMIT_EXCEEDED");
    assert_eq!(app.stored_version("acc-lim").await, 101);
    let balance = app.get_balance("acc-lim").await;
    assert_eq!(balance.raw("balance"), "100000000000000000");
}
