//! Rebuild-all over more streams than one page, on the memory adapters, with a pipeline that never
//! runs: the read tables hold nothing until the rebuild writes them. Then a job resumed from a stream
//! in the middle rebuilds only what comes after it.
//!
//! Run: `cargo test -p corebank-app --test rebuild`.

#![cfg(test)]

mod support;

use std::sync::Arc;

use corebank_app::command::Operation;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_domain::{AccountCommand, AccountId, Amount, OwnerId, TransactionId, TransferId, TransferTerms};
use corebank_store::{RebuildStatus, TransferPhase};
use support::{ctx, usd};

/// More than two pages of account streams.
const ACCOUNTS: usize = 1_100;

fn account(n: usize) -> AccountId {
    AccountId::parse(&format!("acc-r{n:05}")).unwrap()
}

/// Account `n` opened with a deposit of `n + 1` minor units: two events.
async fn open(app: &App, n: usize) {
    let account_id = account(n);
    let create = AccountCommand::Create {
        account_id: account_id.clone(),
        owner_id: OwnerId::parse("owner-1").unwrap(),
        currency: usd(),
    };
    let opened = ctx(&format!("open-{n}"), Operation::CreateAccount);
    assert_eq!(app.commands.execute(&opened, &account_id, &create).await.unwrap().code, None);
    let deposit = AccountCommand::Deposit {
        amount: Amount::from_minor(i64::try_from(n).unwrap() + 1).unwrap(),
        currency: usd(),
        transaction_id: TransactionId::parse(&format!("fund-{n}")).unwrap(),
    };
    let funded = ctx(&format!("fund-{n}"), Operation::Deposit);
    assert_eq!(app.commands.execute(&funded, &account_id, &deposit).await.unwrap().code, None);
}

/// A bank on the memory adapters whose pipeline never runs, with [`ACCOUNTS`] accounts and one
/// transfer requested between the first two.
async fn bank() -> (App, TransferId) {
    let (stores, _memory) = corebank_store::memory::stores();
    let app = App::new(AppConfig::default(), stores, corebank_api::renderer(), Arc::new(SystemClock));
    for n in 0..ACCOUNTS {
        open(&app, n).await;
    }
    let transfer_id = TransferId::parse("t-rebuild").unwrap();
    let terms = TransferTerms {
        transfer_id: transfer_id.clone(),
        source_account_id: account(1),
        destination_account_id: account(0),
        amount: Amount::from_minor(1).unwrap(),
        currency: usd(),
        initiated_by: Some("local-operator".to_owned()),
    };
    let started = app.transfers.start(&ctx("start", Operation::StartTransfer), &terms).await;
    assert_eq!(started.unwrap().code, None);
    (app, transfer_id)
}

async fn rebuilt(app: &App, n: usize) -> Option<(i64, u64, usize)> {
    let id = account(n);
    let summary = app.stores.read_model.summary(id.as_str()).await.unwrap()?;
    let rows = app.stores.read_model.statement(id.as_str(), 0, 100).await.unwrap();
    let checkpoint = app.stores.read_model.checkpoint(&id.stream_id()).await.unwrap();
    assert_eq!(checkpoint, summary.version, "checkpoint and summary of {id}");
    Some((summary.balance_minor, summary.version, rows.len()))
}

#[tokio::test]
async fn rebuild_all_walks_every_page_of_accounts_then_the_transfers() {
    let (app, transfer_id) = bank().await;
    assert_eq!(rebuilt(&app, 7).await, None, "nothing projected before the rebuild");

    let job = app.rebuilder.create_job().await.unwrap();
    let done = app.rebuilder.run_job(job.clone()).await;

    assert_eq!(done.status, RebuildStatus::Completed, "{done:?}");
    assert_eq!(done.streams_rebuilt, u64::try_from(ACCOUNTS).unwrap() + 1);
    assert_eq!(done.events_replayed, 2 * u64::try_from(ACCOUNTS).unwrap() + 1);
    assert_eq!(done.last_stream_id.as_deref(), Some(transfer_id.stream_id().as_str()));
    for n in 0..ACCOUNTS {
        let want = (i64::try_from(n).unwrap() + 1, 2, 2);
        assert_eq!(rebuilt(&app, n).await, Some(want), "account {n}");
    }
    let status = app.stores.transfers.get(transfer_id.as_str()).await.unwrap().unwrap();
    assert_eq!((status.status, status.version), (TransferPhase::Pending, 1));
    assert_eq!(app.stores.rebuilds.get(&job.rebuild_id).await.unwrap(), Some(done));
}

#[tokio::test]
async fn a_resumed_job_rebuilds_only_the_streams_after_its_cursor() {
    let (app, transfer_id) = bank().await;
    let mut job = app.rebuilder.create_job().await.unwrap();
    job.last_stream_id = Some(account(699).stream_id());

    let done = app.rebuilder.run_job(job).await;

    assert_eq!(done.status, RebuildStatus::Completed, "{done:?}");
    assert_eq!(done.streams_rebuilt, u64::try_from(ACCOUNTS - 700).unwrap() + 1);
    assert_eq!(rebuilt(&app, 699).await, None, "before the cursor: untouched");
    assert_eq!(rebuilt(&app, 700).await, Some((701, 2, 2)));
    assert_eq!(rebuilt(&app, ACCOUNTS - 1).await, Some((i64::try_from(ACCOUNTS).unwrap(), 2, 2)));
    assert!(app.stores.transfers.get(transfer_id.as_str()).await.unwrap().is_some());
}
