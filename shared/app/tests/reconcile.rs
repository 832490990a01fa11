//! The reconciler's transfer walk on the memory adapters, with a pipeline that delivers only what a
//! test hands it: a transfer whose status row was never written, and a row left behind its stream.
//!
//! Run: `cargo test -p corebank-app --test reconcile`.

#![cfg(test)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use corebank_app::command::Operation;
use corebank_app::reconcile::ReconcileSettings;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_domain::{AccountCommand, AccountId, Amount, OwnerId, TransactionId, TransferId, TransferTerms};
use corebank_store::TransferPhase;
use support::{ctx, usd};

/// A bank on the memory adapters whose pipeline never runs: events are committed and nothing reaches
/// the projector or the saga unless a test hands it over.
fn bank() -> App {
    let (stores, _memory) = corebank_store::memory::stores();
    App::new(AppConfig::default(), stores, corebank_api::renderer(), Arc::new(SystemClock))
}

async fn open(app: &App, id: &str, minor: i64) -> AccountId {
    let account_id = AccountId::parse(id).unwrap();
    let create = AccountCommand::Create {
        account_id: account_id.clone(),
        owner_id: OwnerId::parse("owner-1").unwrap(),
        currency: usd(),
    };
    let open = ctx(&format!("open-{id}"), Operation::CreateAccount);
    assert_eq!(app.commands.execute(&open, &account_id, &create).await.unwrap().code, None);
    if minor > 0 {
        let deposit = AccountCommand::Deposit {
            amount: Amount::from_minor(minor).unwrap(),
            currency: usd(),
            transaction_id: TransactionId::parse(&format!("fund-{id}")).unwrap(),
        };
        let fund = ctx(&format!("fund-{id}"), Operation::Deposit);
        assert_eq!(app.commands.execute(&fund, &account_id, &deposit).await.unwrap().code, None);
    }
    account_id
}

/// Requests a transfer of 40.00 from `source` to `destination`; only its first event is written.
async fn request(app: &App, id: &str, source: &AccountId, destination: &AccountId) -> TransferId {
    let transfer_id = TransferId::parse(id).unwrap();
    let terms = TransferTerms {
        transfer_id: transfer_id.clone(),
        source_account_id: source.clone(),
        destination_account_id: destination.clone(),
        amount: Amount::from_minor(4_000).unwrap(),
        currency: usd(),
        initiated_by: Some("local-operator".to_owned()),
    };
    let answer = app.transfers.start(&ctx(&format!("start-{id}"), Operation::StartTransfer), &terms).await;
    assert_eq!(answer.unwrap().code, None);
    transfer_id
}

async fn balance(app: &App, id: &AccountId) -> i64 {
    let events = app.stores.events.load_stream(&id.stream_id(), 0).await.unwrap();
    let (summary, _) = corebank_app::projection::project_all(None, &events).unwrap();
    summary.map_or(0, |s| s.balance_minor)
}

fn past_the_bound() -> ReconcileSettings {
    ReconcileSettings { pending_after: Duration::from_millis(1), batch_max: 10 }
}

#[tokio::test]
async fn the_reconciler_finishes_a_transfer_that_never_got_a_status_row() {
    let app = bank();
    let source = open(&app, "acc-norow-src", 10_000).await;
    let destination = open(&app, "acc-norow-dst", 0).await;
    let transfer_id = request(&app, "t-norow", &source, &destination).await;
    // No event was delivered: no status row, so the pending listing cannot see the transfer.
    assert_eq!(app.stores.transfers.get(transfer_id.as_str()).await.unwrap(), None);
    let reconciler = app.reconciler.clone();

    // Younger than the bound: it may still be on its way through the pipeline, so it is left alone.
    let report = reconciler.pass(&ReconcileSettings::default()).await.unwrap();
    assert_eq!(
        (report.examined, report.transfers_checked, report.transfer_rows_missing),
        (0, 1, 0),
        "{report:?}"
    );
    assert_eq!(app.stores.transfers.get(transfer_id.as_str()).await.unwrap(), None);
    assert!(!report.found_work(), "{report:?}");

    // Past the bound: the row is projected from the stream, the saga drives the transfer to its end,
    // and the row follows it there.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = reconciler.pass(&past_the_bound()).await.unwrap();
    assert_eq!(
        (
            report.transfers_checked,
            report.transfer_rows_missing,
            report.transfer_rows_repaired,
            report.transfer_rows_failed
        ),
        (1, 1, 1, 0),
        "{report:?}"
    );
    assert!(report.found_work());
    let row = app.stores.transfers.get(transfer_id.as_str()).await.unwrap().expect("the row was written");
    let head = app.stores.events.load_stream(&transfer_id.stream_id(), 0).await.unwrap();
    assert_eq!(row.status, TransferPhase::Completed, "{row:?}");
    assert_eq!(Some(row.version), head.last().map(|e| e.version), "the row is at the stream's head");
    assert!(row.version > 1, "the saga wrote its steps: {row:?}");
    assert_eq!((balance(&app, &source).await, balance(&app, &destination).await), (6_000, 4_000));

    // Nothing is left: the row is at its head and no longer pending, and money moved once.
    let report = reconciler.pass(&past_the_bound()).await.unwrap();
    assert_eq!(
        (report.examined, report.transfer_rows_missing, report.transfer_rows_behind),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!((balance(&app, &source).await, balance(&app, &destination).await), (6_000, 4_000));
}

#[tokio::test]
async fn the_reconciler_brings_a_status_row_left_behind_its_stream_to_the_head() {
    let app = bank();
    let source = open(&app, "acc-behind-src", 10_000).await;
    let destination = open(&app, "acc-behind-dst", 0).await;
    let transfer_id = request(&app, "t-behind", &source, &destination).await;
    // The request reached the projector and the saga, but none of the saga's steps reached the
    // projector: the row stands PENDING at version 1 while the stream is settled.
    let stream = transfer_id.stream_id();
    let first = app.stores.events.load_stream(&stream, 0).await.unwrap().remove(0);
    app.projector.handle(&first).await.unwrap();
    app.saga.handle(&first).await.unwrap();
    let head = app.stores.events.load_stream(&stream, 0).await.unwrap().last().map(|e| e.version).unwrap();
    let row = app.stores.transfers.get(transfer_id.as_str()).await.unwrap().unwrap();
    assert_eq!((row.status, row.version), (TransferPhase::Pending, 1));
    assert!(head > 1, "the saga settled the stream at v{head}");
    let reconciler = app.reconciler.clone();

    let report = reconciler.pass(&ReconcileSettings::default()).await.unwrap();
    assert_eq!((report.transfers_checked, report.transfer_rows_behind), (1, 0), "{report:?}");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = reconciler.pass(&past_the_bound()).await.unwrap();
    assert_eq!(
        (
            report.transfer_rows_missing,
            report.transfer_rows_behind,
            report.transfer_rows_repaired,
            report.transfer_rows_failed
        ),
        (0, 1, 1, 0),
        "{report:?}"
    );
    let row = app.stores.transfers.get(transfer_id.as_str()).await.unwrap().unwrap();
    assert_eq!((row.status, row.version), (TransferPhase::Completed, head), "{row:?}");

    // The pending listing no longer finds it, and nothing is behind.
    let report = reconciler.pass(&past_the_bound()).await.unwrap();
    assert_eq!(
        (report.examined, report.transfer_rows_behind, report.transfer_rows_repaired),
        (0, 0, 0),
        "{report:?}"
    );
    assert_eq!((balance(&app, &source).await, balance(&app, &destination).await), (6_000, 4_000));
}

#[tokio::test]
async fn a_transfer_stream_that_projects_to_no_row_is_counted_as_failed_not_repaired() {
    use corebank_domain::transfer::TransferEvent;
    use corebank_domain::{EventEnvelope, EventMetadata};
    let app = bank();
    // A stream that does not start with a request: nothing can be projected from it.
    let transfer_id = TransferId::parse("t-headless").unwrap();
    let event = TransferEvent::HoldPlaced;
    let stray = EventEnvelope {
        event_id: uuid::Uuid::new_v4(),
        stream_id: transfer_id.stream_id(),
        version: 1,
        event_type: event.event_type().to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: event.payload(),
        metadata: EventMetadata::default(),
    };
    app.stores
        .events
        .append(corebank_store::AppendRequest {
            stream_id: stray.stream_id.clone(),
            expected_version: 0,
            events: vec![stray],
            idempotency: None,
            transaction: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    for _ in 0..2 {
        let report = app.reconciler.pass(&past_the_bound()).await.unwrap();
        assert_eq!(
            (report.transfer_rows_missing, report.transfer_rows_repaired, report.transfer_rows_failed),
            (1, 0, 1),
            "{report:?}"
        );
    }
    assert_eq!(app.stores.transfers.get(transfer_id.as_str()).await.unwrap(), None);
}

#[tokio::test]
async fn the_transfer_walk_takes_a_batch_per_pass_and_resumes_where_it_stopped() {
    let app = bank();
    let source = open(&app, "acc-walk-src", 10_000).await;
    let destination = open(&app, "acc-walk-dst", 0).await;
    let first = request(&app, "t-walk-1", &source, &destination).await;
    let second = request(&app, "t-walk-2", &source, &destination).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let one_at_a_time = ReconcileSettings { pending_after: Duration::from_millis(1), batch_max: 1 };
    let row = |id: TransferId| {
        let app = &app;
        async move { app.stores.transfers.get(id.as_str()).await.unwrap().map(|r| r.status) }
    };

    let report = app.reconciler.pass(&one_at_a_time).await.unwrap();
    assert_eq!((report.transfers_checked, report.transfer_rows_repaired), (1, 1), "{report:?}");
    assert_eq!((row(first.clone()).await, row(second.clone()).await), (Some(TransferPhase::Completed), None));

    let report = app.reconciler.pass(&one_at_a_time).await.unwrap();
    assert_eq!((report.transfers_checked, report.transfer_rows_repaired), (1, 1), "{report:?}");
    assert_eq!(row(second).await, Some(TransferPhase::Completed));

    // Past the last stream the walk finds none and starts over on the next pass: nothing is left.
    let report = app.reconciler.pass(&one_at_a_time).await.unwrap();
    assert_eq!(report.transfers_checked, 0, "{report:?}");
    let report = app.reconciler.pass(&one_at_a_time).await.unwrap();
    assert_eq!(
        (report.transfers_checked, report.transfer_rows_missing, report.transfer_rows_behind),
        (1, 0, 0)
    );
    assert_eq!((balance(&app, &source).await, balance(&app, &destination).await), (2_000, 8_000));
}
