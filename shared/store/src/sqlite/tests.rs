//! What the contract suite cannot see: group commit, isolation of a failing job inside a group,
//! durability across a reopen, purging of old idempotency records and schema versioning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_domain::{AccountStatus, Currency, EventEnvelope, EventMetadata};
use serde_json::json;
use uuid::Uuid;

use super::{PURGE_BATCH, SCHEMA_VERSION, SqliteSettings, SqliteStores, Synchronous, open};
use crate::{
    AccountSummary, AppendRequest, ClaimOutcome, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey,
    IdempotencyState, ProjectionChange, Snapshot, StatementEntry, StoreError, StoredResponse, TransferPhase,
    TransferStatus,
};

/// A database path in the temporary directory; the files go when the guard is dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new() -> Self {
        Self(
            std::env::temp_dir().join(format!("corebank-sqlite-unit-{}", Uuid::new_v4())).join("bank.sqlite"),
        )
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

fn event(stream_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: now(),
        payload: json!({ "amountMinor": "100", "currency": "EUR" }),
        metadata: EventMetadata { actor: Some("unit".to_owned()), ..EventMetadata::default() },
    }
}

fn append(stream_id: &str, expected_version: u64) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events: vec![event(stream_id, expected_version + 1)],
        idempotency: None,
        transaction: None,
    }
}

/// Holds the writer inside a job until the returned sender is used or dropped, so that the jobs
/// queued meanwhile form one group. Returns once the writer is inside that job.
async fn block_writer(stores: &SqliteStores) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, inside) = tokio::sync::oneshot::channel::<()>();
    let db = stores.db.clone();
    let blocker = tokio::spawn(async move {
        db.writer
            .write(move |_conn| {
                let _ = started.send(());
                let _ = released.recv();
                Ok(())
            })
            .await
            .unwrap();
    });
    inside.await.unwrap();
    (release, blocker)
}

/// Waits until `n` jobs wait for the writer.
async fn until_queued(stores: &SqliteStores, n: usize) {
    for _ in 0..5000 {
        if stores.db.writer.queued() >= n {
            // The count moves when a sender takes its place in the queue, a moment before its job is
            // in it: give the last ones that moment.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{n} jobs never queued (now {})", stores.db.writer.queued());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_of_many_streams_share_one_commit() {
    let path = TempPath::new();
    let stores =
        open(SqliteSettings { synchronous: Synchronous::Full, ..SqliteSettings::new(&path.0) }).unwrap();
    let ports = stores.stores();
    let (release, blocker) = block_writer(&stores).await;
    let commits_before = stores.commits();

    const APPENDS: usize = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..APPENDS {
        let events = ports.events.clone();
        tasks.spawn(async move { events.append(append(&format!("account-{i:03}"), 0)).await });
    }
    until_queued(&stores, APPENDS).await;
    drop(release);
    blocker.await.unwrap();
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().unwrap().stream_version, 1);
    }

    // The blocker's group, then every append in one group.
    assert_eq!(stores.commits() - commits_before, 2, "200 appends took more than one commit");
    assert_eq!(*stores.feed().head().borrow(), APPENDS as u64);
    let feed = stores.feed().read_after(0, 1000).await.unwrap();
    let positions: Vec<u64> = feed.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (1..=APPENDS as u64).collect::<Vec<_>>());
    let mut streams: Vec<&str> = feed.iter().map(|(_, e)| e.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    assert_eq!(streams.len(), APPENDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_job_rolls_back_alone_and_the_rest_of_its_group_commits() {
    let path = TempPath::new();
    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let ports = stores.stores();
    let (release, blocker) = block_writer(&stores).await;
    let commits_before = stores.commits();

    // Queued one after another, so the group runs them in this order.
    let first = append("account-a", 0);
    let first_event = first.events[0].event_id;
    let events = ports.events.clone();
    let a = tokio::spawn(async move { events.append(first).await });
    until_queued(&stores, 1).await;
    let events = ports.events.clone();
    let b = tokio::spawn(async move { events.append(append("account-a", 0)).await });
    until_queued(&stores, 2).await;
    let key = IdempotencyKey { scope: "accounts".to_owned(), key: "k".to_owned() };
    let idempotency = ports.idempotency.clone();
    let lost = IdempotencyCompletion {
        key: key.clone(),
        operation: "deposit".to_owned(),
        request_hash: "h".to_owned(),
        claim_token: Uuid::new_v4(),
        response: StoredResponse { status: 200, body: "{}".to_owned(), code: None },
        expires_at: now() + chrono::Duration::hours(1),
    };
    // Completed once by one token, then again by another: the second is refused.
    let first_completion = lost.clone();
    let idem = idempotency.clone();
    let c = tokio::spawn(async move { idem.complete(first_completion).await });
    until_queued(&stores, 3).await;
    let d = tokio::spawn(async move {
        idempotency.complete(IdempotencyCompletion { claim_token: Uuid::new_v4(), ..lost }).await
    });
    until_queued(&stores, 4).await;
    let events = ports.events.clone();
    let e = tokio::spawn(async move { events.append(append("account-b", 0)).await });
    until_queued(&stores, 5).await;
    drop(release);
    blocker.await.unwrap();

    assert_eq!(a.await.unwrap().unwrap().stream_version, 1);
    match b.await.unwrap() {
        Err(StoreError::VersionConflict { expected: 0, actual: 1, .. }) => {}
        other => panic!("the second append at version 0 must conflict, got {other:?}"),
    }
    c.await.unwrap().unwrap();
    assert!(matches!(d.await.unwrap(), Err(StoreError::IdempotencyClaimLost { .. })));
    assert_eq!(e.await.unwrap().unwrap().stream_version, 1);
    assert_eq!(stores.commits() - commits_before, 2, "the five jobs share one commit");

    let a_events = ports.events.load_stream("account-a", 0).await.unwrap();
    assert_eq!(a_events.len(), 1);
    assert_eq!(a_events[0].event_id, first_event);
    assert_eq!(ports.events.load_stream("account-b", 0).await.unwrap().len(), 1);
    assert_eq!(stores.feed().read_after(0, 10).await.unwrap().len(), 2);
    let probe = IdempotencyClaim {
        key,
        operation: "deposit".to_owned(),
        request_hash: "h".to_owned(),
        claim_token: Uuid::new_v4(),
        lease_expires_at: now() + chrono::Duration::seconds(30),
        expires_at: now() + chrono::Duration::hours(1),
        now: now(),
    };
    match ports.idempotency.claim(probe).await.unwrap() {
        ClaimOutcome::Existing(record) => {
            assert!(matches!(record.state, IdempotencyState::Completed(ref r) if r.status == 200));
        }
        ClaimOutcome::Claimed => panic!("the first completion must have been kept"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
    let path = TempPath::new();
    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let ports = stores.stores();
    let (release, blocker) = block_writer(&stores).await;
    let events = ports.events.clone();
    let before = tokio::spawn(async move { events.append(append("account-before", 0)).await });
    until_queued(&stores, 1).await;
    let db = stores.db.clone();
    let panicking = tokio::spawn(async move {
        db.writer
            .write(|conn| -> Result<(), StoreError> {
                conn.execute_batch("INSERT INTO feed_cursors (lane, position) VALUES ('half-done', 1)")
                    .unwrap();
                panic!("a bug inside a write job")
            })
            .await
    });
    until_queued(&stores, 2).await;
    drop(release);
    blocker.await.unwrap();

    assert!(matches!(panicking.await.unwrap(), Err(StoreError::Unavailable(_))));
    assert_eq!(before.await.unwrap().unwrap().stream_version, 1);
    assert_eq!(stores.feed().cursor("half-done").await.unwrap(), 0, "the panicking job's write is undone");
    ports.events.append(append("account-after", 0)).await.unwrap();
    assert_eq!(stores.feed().read_after(0, 10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_head_moves_with_committed_events_only() {
    let path = TempPath::new();
    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let ports = stores.stores();
    let mut head = stores.feed().head();
    assert_eq!(*head.borrow_and_update(), 0);

    ports.events.append(append("account-x", 0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), head.changed()).await.unwrap().unwrap();
    assert_eq!(*head.borrow_and_update(), 1);

    // A refused append and a write without events leave it where it is.
    assert!(ports.events.append(append("account-x", 0)).await.is_err());
    stores.feed().save_cursor("lane", 1).await.unwrap();
    assert!(!head.has_changed().unwrap());
    assert_eq!(*head.borrow(), 1);
}

#[tokio::test]
async fn a_load_at_the_last_local_commit_reads_nothing_and_a_stale_one_is_corrected() {
    let path = TempPath::new();
    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let ports = stores.stores();
    ports.events.append(append("account-h", 0)).await.unwrap();
    ports.events.append(append("account-h", 1)).await.unwrap();
    // Behind this process's last commit: read from the file; at it: nothing newer.
    assert_eq!(ports.events.load_stream("account-h", 0).await.unwrap().len(), 2);
    assert_eq!(ports.events.load_stream("account-h", 1).await.unwrap().len(), 1);
    assert!(ports.events.load_stream("account-h", 2).await.unwrap().is_empty());

    // Another process writes version 3 into the same file (unsupported, but it must not corrupt
    // anything): this process does not know yet, and a decision on version 2 is refused by the
    // version check, which also teaches it where the stream stands.
    {
        let conn = rusqlite::Connection::open(&path.0).unwrap();
        let foreign = event("account-h", 3);
        conn.execute("UPDATE streams SET version = 3 WHERE stream_id = 'account-h'", []).unwrap();
        conn.execute(
            "INSERT INTO events (event_id, stream_id, version, event_type, schema_version, occurred_at, \
             payload, metadata) VALUES (?1, 'account-h', 3, 'MoneyDeposited', 1, 0, '{}', '{}')",
            [foreign.event_id.to_string()],
        )
        .unwrap();
    }
    match ports.events.append(append("account-h", 2)).await {
        Err(StoreError::VersionConflict { actual: 3, .. }) => {}
        other => panic!("expected a version conflict at 3, got {other:?}"),
    }
    let tail = ports.events.load_stream("account-h", 2).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3]);
    ports.events.append(append("account-h", 3)).await.unwrap();
    assert!(ports.events.load_stream("account-h", 4).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_file_serves_one_process_at_a_time() {
    let path = TempPath::new();
    let first = open(SqliteSettings::new(&path.0)).unwrap();
    match open(SqliteSettings::new(&path.0)) {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("in use"), "{message}"),
        other => panic!("a second open must be refused, got {other:?}"),
    }
    drop(first);
    let again = open(SqliteSettings::new(&path.0)).unwrap();
    again.stores().events.append(append("account-l", 0)).await.unwrap();
}

#[tokio::test]
async fn holds_an_earlier_process_left_in_the_file_are_gone_after_open() {
    let path = TempPath::new();
    drop(open(SqliteSettings::new(&path.0)).unwrap());
    let t = now();
    {
        let conn = rusqlite::Connection::open(&path.0).unwrap();
        conn.execute(
            "INSERT INTO idempotency_records (scope, key, operation, request_hash, state, claim_token, \
             lease_expires_at, expires_at) VALUES ('accounts', 'k', 'deposit', 'a', 'in_progress', ?1, ?2, ?3)",
            (
                Uuid::new_v4().to_string(),
                (t + chrono::Duration::hours(1)).timestamp_micros(),
                (t + chrono::Duration::hours(24)).timestamp_micros(),
            ),
        )
        .unwrap();
    }
    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let claim = IdempotencyClaim {
        key: IdempotencyKey { scope: "accounts".to_owned(), key: "k".to_owned() },
        operation: "deposit".to_owned(),
        request_hash: "b".to_owned(),
        claim_token: Uuid::new_v4(),
        lease_expires_at: t + chrono::Duration::seconds(30),
        expires_at: t + chrono::Duration::hours(24),
        now: t,
    };
    assert_eq!(stores.stores().idempotency.claim(claim).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(count_records(&stores).await, 0);
}

fn summary(account_id: &str, version: u64, balance_minor: i64) -> AccountSummary {
    AccountSummary {
        account_id: account_id.to_owned(),
        owner_id: "owner-1".to_owned(),
        currency: Currency::parse("EUR").unwrap(),
        status: AccountStatus::Active,
        balance_minor,
        held_minor: 0,
        version,
        created_at: now(),
        updated_at: now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_is_there_after_closing_and_reopening_the_file() {
    let path = TempPath::new();
    let stream = "account-acc-1";
    let written = {
        let stores = open(SqliteSettings::new(&path.0)).unwrap();
        let ports = stores.stores();
        ports.events.append(append(stream, 0)).await.unwrap();
        ports.events.append(append(stream, 1)).await.unwrap();
        let written = ports.events.load_stream(stream, 0).await.unwrap();
        ports
            .read_model
            .apply(ProjectionChange {
                stream_id: stream.to_owned(),
                expected_checkpoint: 0,
                new_checkpoint: 2,
                summary: Some(summary("acc-1", 2, 200)),
                statement: written
                    .iter()
                    .map(|e| StatementEntry {
                        event_id: e.event_id,
                        account_id: "acc-1".to_owned(),
                        stream_version: e.version,
                        event_type: e.event_type.clone(),
                        occurred_at: e.occurred_at,
                        amount_minor: Some(100),
                        currency: Currency::parse("EUR").ok(),
                        transaction_id: None,
                        balance_after_minor: Some(100 * e.version as i64),
                        reason: None,
                    })
                    .collect(),
            })
            .await
            .unwrap();
        ports
            .transfers
            .apply(
                0,
                TransferStatus {
                    transfer_id: "t-1".to_owned(),
                    status: TransferPhase::Pending,
                    failure_reason: None,
                    source_account_id: "acc-1".to_owned(),
                    destination_account_id: "acc-2".to_owned(),
                    amount_minor: 50,
                    currency: Currency::parse("EUR").unwrap(),
                    legs: Vec::new(),
                    version: 1,
                    created_at: now(),
                    updated_at: now(),
                },
            )
            .await
            .unwrap();
        ports
            .snapshots
            .save(Snapshot {
                stream_id: stream.to_owned(),
                version: 2,
                schema_version: 1,
                state: json!({"b": 200}),
            })
            .await
            .unwrap();
        stores.feed().save_cursor("projector", 2).await.unwrap();
        assert_eq!(stores.feed().cursor("projector").await.unwrap(), 2);
        written
        // Every handle goes here: the writer thread stops and the file is closed.
    };

    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let ports = stores.stores();
    assert_eq!(ports.events.load_stream(stream, 0).await.unwrap(), written);
    assert_eq!(*stores.feed().head().borrow(), 2, "the head starts at the last committed position");
    assert_eq!(stores.feed().cursor("projector").await.unwrap(), 2);
    assert_eq!(stores.feed().cursor("never-saved").await.unwrap(), 0);
    assert_eq!(ports.read_model.checkpoint(stream).await.unwrap(), 2);
    assert_eq!(ports.read_model.summary("acc-1").await.unwrap().unwrap().balance_minor, 200);
    assert_eq!(ports.read_model.statement("acc-1", 0, 10).await.unwrap().len(), 2);
    assert_eq!(ports.transfers.get("t-1").await.unwrap().unwrap().version, 1);
    assert_eq!(ports.snapshots.load(stream).await.unwrap().unwrap().state, json!({"b": 200}));
    // Positions go on after the reopen, and a stale writer still conflicts.
    ports.events.append(append(stream, 2)).await.unwrap();
    assert_eq!(stores.feed().read_after(2, 10).await.unwrap()[0].0, 3);
    assert!(matches!(
        ports.events.append(append(stream, 1)).await,
        Err(StoreError::VersionConflict { actual: 3, .. })
    ));
}

async fn count_records(stores: &SqliteStores) -> i64 {
    stores
        .db
        .readers
        .read(|conn| {
            conn.query_row("SELECT count(*) FROM idempotency_records", [], |row| row.get(0))
                .map_err(|e| super::sql_error(&e))
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_only_records_expired_longer_ago_than_the_margin_in_batches() {
    let path = TempPath::new();
    let stores = open(SqliteSettings::new(&path.0)).unwrap();
    let ports = stores.stores();
    let now = now();
    let hour = chrono::Duration::hours(1);
    // More than one batch of records that expired two hours ago, some that expired half an hour ago,
    // some still alive.
    let old = PURGE_BATCH + 7;
    let mut tasks = tokio::task::JoinSet::new();
    for (count, expires_at) in [(old, now - hour * 2), (5, now - hour / 2), (3, now + hour)] {
        for _ in 0..count {
            let idempotency = ports.idempotency.clone();
            tasks.spawn(async move {
                let claim = IdempotencyClaim {
                    key: IdempotencyKey { scope: "accounts".to_owned(), key: Uuid::new_v4().to_string() },
                    operation: "deposit".to_owned(),
                    request_hash: "h".to_owned(),
                    claim_token: Uuid::new_v4(),
                    lease_expires_at: expires_at,
                    expires_at,
                    now: expires_at - chrono::Duration::seconds(1),
                };
                assert_eq!(idempotency.claim(claim.clone()).await?, ClaimOutcome::Claimed);
                idempotency
                    .complete(IdempotencyCompletion {
                        key: claim.key,
                        operation: claim.operation,
                        request_hash: claim.request_hash,
                        claim_token: claim.claim_token,
                        response: StoredResponse { status: 201, body: "{}".to_owned(), code: None },
                        expires_at,
                    })
                    .await
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(count_records(&stores).await, (old + 8) as i64);

    let commits_before = stores.commits();
    assert_eq!(stores.purge_expired(now, hour).await.unwrap(), old as u64);
    assert_eq!(stores.commits() - commits_before, 2, "{old} rows take two batches of {PURGE_BATCH}");
    assert_eq!(count_records(&stores).await, 8);
    assert_eq!(stores.purge_expired(now, hour).await.unwrap(), 0);
    assert_eq!(stores.purge_expired(now, chrono::Duration::zero()).await.unwrap(), 5);
    assert_eq!(count_records(&stores).await, 3);
}

#[tokio::test]
async fn a_file_written_by_a_newer_schema_is_refused_untouched() {
    let path = TempPath::new();
    drop(open(SqliteSettings::new(&path.0)).unwrap());
    {
        let conn = rusqlite::Connection::open(&path.0).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1)).unwrap();
    }
    assert!(matches!(open(SqliteSettings::new(&path.0)), Err(StoreError::Corrupt(_))));
    let conn = rusqlite::Connection::open(&path.0).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1);
}

#[tokio::test]
async fn settings_out_of_range_are_invalid_and_create_nothing() {
    let path = TempPath::new();
    for settings in [
        SqliteSettings { readers: 0, ..SqliteSettings::new(&path.0) },
        SqliteSettings { readers: super::MAX_READERS + 1, ..SqliteSettings::new(&path.0) },
        SqliteSettings { group_commit_max: 0, ..SqliteSettings::new(&path.0) },
        SqliteSettings { group_commit_max: super::MAX_GROUP_COMMIT + 1, ..SqliteSettings::new(&path.0) },
    ] {
        assert!(matches!(open(settings), Err(StoreError::Invalid(_))));
    }
    assert!(!path.0.exists(), "nothing is created for invalid settings");
}
