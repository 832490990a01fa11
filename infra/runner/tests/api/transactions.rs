//! The transactionId guard: one business transaction moves money once, whatever the key.

use crate::helpers::{key, spawn_app, txid};

#[tokio::test]
async fn same_transaction_id_and_intent_under_a_new_key_replays_the_first_answer_and_moves_no_money() {
    let app = spawn_app().await;
    app.new_account("acc-tx", "USD").await;
    let tx = txid();
    let first = app.post_deposit(&key(), "acc-tx", "40", "USD", &tx).await.accepted("acc-tx");
    app.deposit_ok("acc-tx", "1", "USD").await;
    let again = app.post_deposit(&key(), "acc-tx", "40.00", "USD", &tx).await;
    assert_eq!(again.code(), 201, "{}", again.text);
    assert_eq!(again.version(), first.version(), "same version as the first answer");
    assert_eq!(again.event_ids(), first.event_ids(), "same eventIds as the first answer");
    assert_eq!(again.text, first.text);
    assert_eq!(app.stored_version("acc-tx").await, 3);
    assert_eq!(app.balance_minor("acc-tx").await, ("4100".to_owned(), 3));
    // The same goes for withdrawals.
    let wtx = txid();
    let w1 = app.post_withdrawal(&key(), "acc-tx", "10", "USD", &wtx).await.accepted("acc-tx");
    let w2 = app.post_withdrawal(&key(), "acc-tx", "10", "USD", &wtx).await;
    assert_eq!(w2.text, w1.text);
    assert_eq!(app.balance_minor("acc-tx").await, ("3100".to_owned(), 4));
}

#[tokio::test]
async fn same_transaction_id_with_another_intent_is_a_conflict_that_is_itself_replayed() {
    let app = spawn_app().await;
    app.new_account("acc-txa", "USD").await;
    app.new_account("acc-txb", "USD").await;
    app.new_account("acc-txe", "EUR").await;
    app.deposit_ok("acc-txa", "100", "USD").await;
    let tx = txid();
    app.post_deposit(&key(), "acc-txa", "10", "USD", &tx).await.accepted("acc-txa");

    // Another amount, another account, another operation, another currency: all conflicts.
    let k_amount = key();
    let conflict = app.post_deposit(&k_amount, "acc-txa", "11", "USD", &tx).await;
    conflict.error(409, "TRANSACTION_ID_CONFLICT");
    app.post_deposit(&key(), "acc-txb", "10", "USD", &tx).await.error(409, "TRANSACTION_ID_CONFLICT");
    app.post_withdrawal(&key(), "acc-txa", "10", "USD", &tx).await.error(409, "TRANSACTION_ID_CONFLICT");
    app.post_deposit(&key(), "acc-txe", "10", "EUR", &tx).await.error(409, "TRANSACTION_ID_CONFLICT");

    assert_eq!(app.stored_version("acc-txa").await, 3);
    assert_eq!(app.stored_version("acc-txb").await, 1);
    assert_eq!(app.stored_version("acc-txe").await, 1);
    assert_eq!(app.balance_minor("acc-txa").await, ("11000".to_owned(), 3));

    // The 409 is stored under its key: replayed byte for byte.
    let replay = app.post_deposit(&k_amount, "acc-txa", "11", "USD", &tx).await;
    replay.error(409, "TRANSACTION_ID_CONFLICT");
    assert_eq!(replay.text, conflict.text);
}

#[tokio::test]
async fn a_transaction_id_first_rejected_by_the_domain_can_be_reused_once_funds_exist() {
    let app = spawn_app().await;
    app.new_account("acc-txr", "USD").await;
    let tx = txid();
    app.post_withdrawal(&key(), "acc-txr", "25", "USD", &tx).await.error(400, "INSUFFICIENT_FUNDS");
    app.deposit_ok("acc-txr", "30", "USD").await;
    let ok = app.post_withdrawal(&key(), "acc-txr", "25", "USD", &tx).await.accepted("acc-txr");
    assert_eq!(ok.version(), 3);
    assert_eq!(app.balance_minor("acc-txr").await, ("500".to_owned(), 3));
    // And now it is taken: the same intent replays, no second debit.
    let again = app.post_withdrawal(&key(), "acc-txr", "25", "USD", &tx).await;
    assert_eq!(again.text, ok.text);
    assert_eq!(app.balance_minor("acc-txr").await, ("500".to_owned(), 3));
}
