//! What the Postgres adapter offers beyond the shared contract: the commit-ordered feed and its head,
//! the outbox rows written with each append, and what the schema itself refuses.

#![cfg(test)]

mod pg;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corebank_domain::{EventEnvelope, EventMetadata};
use corebank_store::postgres::{PgStores, Pool};
use corebank_store::{
    AppendRequest, EventFeed, StoreError, StoredResponse, TransactionIntent, TransactionRecord,
};
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// A bound on waiting for a notification, so that a broken listener fails the test instead of hanging
/// it; no assertion depends on how long the wait takes.
const PATIENCE: Duration = Duration::from_secs(60);

fn new_stream() -> String {
    format!("account-{}", Uuid::new_v4())
}

fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        payload: json!({"amountMinor": (version * 100).to_string(), "currency": "EUR"}),
        metadata: EventMetadata { actor: Some("feed-test".to_owned()), ..EventMetadata::default() },
    }
}

fn request(stream_id: &str, expected_version: u64, count: u64) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events: (1..=count).map(|i| envelope(stream_id, expected_version + i)).collect(),
        idempotency: None,
        transaction: None,
    }
}

async fn append(stores: &PgStores, stream_id: &str, expected_version: u64, count: u64) -> Vec<EventEnvelope> {
    let request = request(stream_id, expected_version, count);
    let events = request.events.clone();
    stores.stores().events.append(request).await.unwrap();
    events
}

async fn last_position(stores: &PgStores) -> u64 {
    let all = stores.events.read_after(0, 100_000).await.unwrap();
    all.last().map_or(0, |(p, _)| *p)
}

#[tokio::test]
async fn read_after_pages_every_event_in_commit_order() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let (a, b) = (new_stream(), new_stream());
    let mut written = append(&stores, &a, 0, 2).await;
    written.extend(append(&stores, &b, 0, 3).await);
    written.extend(append(&stores, &a, 2, 1).await);

    let all = stores.events.read_after(0, 100).await.unwrap();

    let events: Vec<EventEnvelope> = all.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(events, written);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "positions increase: {:?}", positions(&all));
    assert_eq!(stores.events.read_after(all[1].0, 2).await.unwrap(), all[2..4]);
    assert_eq!(stores.events.read_after(all[4].0, 10).await.unwrap(), all[5..]);
    assert!(stores.events.read_after(all[5].0, 10).await.unwrap().is_empty());
    assert!(stores.events.read_after(0, 0).await.unwrap().is_empty());
}

fn positions(batch: &[(u64, EventEnvelope)]) -> Vec<u64> {
    batch.iter().map(|(p, _)| *p).collect()
}

#[tokio::test]
async fn a_lane_cursor_starts_at_zero_survives_a_new_pool_and_only_moves_forward() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    assert_eq!(stores.events.cursor("projection").await.unwrap(), 0);

    stores.events.save_cursor("projection", 41).await.unwrap();
    stores.events.save_cursor("saga", 7).await.unwrap();
    stores.events.save_cursor("projection", 12).await.unwrap();

    let reopened = PgStores::new(pg::pool(&db.config));
    assert_eq!(
        reopened.events.cursor("projection").await.unwrap(),
        41,
        "an older save does not move it back"
    );
    assert_eq!(reopened.events.cursor("saga").await.unwrap(), 7);
    assert_eq!(reopened.events.cursor("unknown").await.unwrap(), 0);
}

#[tokio::test]
async fn head_moves_to_the_last_position_after_an_own_append() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let mut head = stores.events.head();
    assert_eq!(*head.borrow_and_update(), 0);

    append(&stores, &new_stream(), 0, 3).await;

    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), last_position(&stores).await);
}

#[tokio::test]
async fn refresh_head_reads_what_another_process_committed() {
    let db = pg::migrated_database().await;
    let writer = PgStores::new(db.pool.clone());
    append(&writer, &new_stream(), 0, 2).await;
    let reader = PgStores::new(pg::pool(&db.config));
    assert_eq!(*reader.events.head().borrow(), 0);

    let head = reader.events.refresh_head().await.unwrap();

    assert_eq!(head, last_position(&writer).await);
    assert_eq!(*reader.events.head().borrow(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_raises_the_head_for_appends_by_another_process() {
    let db = pg::migrated_database().await;
    let writer = PgStores::new(db.pool.clone());
    let stream = new_stream();
    append(&writer, &stream, 0, 1).await;
    let reader = PgStores::new(pg::pool(&db.config));
    let mut head = reader.events.head();

    reader.events.spawn_listener(db.config.clone(), NoTls).unwrap();

    // Committed before the listener connected: found by the read after LISTEN.
    let first = last_position(&writer).await;
    tokio::time::timeout(PATIENCE, head.wait_for(|h| *h >= first)).await.unwrap().unwrap();
    // Committed while it listens: delivered by NOTIFY.
    for expected in [1, 3, 5] {
        append(&writer, &stream, expected, 2).await;
        let latest = last_position(&writer).await;
        tokio::time::timeout(PATIENCE, head.wait_for(|h| *h >= latest)).await.unwrap().unwrap();
        assert_eq!(*head.borrow(), latest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_concurrent_append_exactly_once_in_position_order() {
    const WRITERS: usize = 8;
    const APPENDS_PER_WRITER: u64 = 15;
    // Writers alternate batches of one and two events.
    const TOTAL: usize = 180;
    let db = pg::migrated_database().await;
    // Writers and the reader use separate pools, as separate processes would.
    let writers = PgStores::new(db.pool.clone());
    let reader = PgStores::new(pg::pool(&db.config));
    let start = Arc::new(Barrier::new(WRITERS + 1));

    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let stores = writers.clone();
        let start = Arc::clone(&start);
        tasks.spawn(async move {
            let stream = new_stream();
            let mut ids = Vec::new();
            let mut version = 0;
            start.wait().await;
            for append_no in 0..APPENDS_PER_WRITER {
                let count = 1 + (u64::try_from(writer).unwrap() + append_no) % 2;
                ids.extend(append(&stores, &stream, version, count).await.iter().map(|e| e.event_id));
                version += count;
            }
            ids
        });
    }
    let writers_done = Arc::new(AtomicBool::new(false));
    let tail = {
        let feed = Arc::clone(&reader.events);
        let start = Arc::clone(&start);
        let writers_done = Arc::clone(&writers_done);
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen = Vec::new();
            start.wait().await;
            loop {
                // Read the flag first: an empty page after every writer committed means the end.
                let done = writers_done.load(Ordering::SeqCst);
                let batch = feed.read_after(cursor, 7).await.unwrap();
                if batch.is_empty() {
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for (position, event) in batch {
                    assert!(position > cursor, "position {position} after cursor {cursor}");
                    cursor = position;
                    seen.push(event.event_id);
                }
            }
            seen
        })
    };

    let mut written = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        written.extend(joined.unwrap());
    }
    writers_done.store(true, Ordering::SeqCst);
    let seen = tail.await.unwrap();

    assert_eq!(written.len(), TOTAL);
    assert_eq!(seen.len(), written.len(), "the reader saw every event once");
    assert_eq!(seen.iter().copied().collect::<HashSet<Uuid>>(), written);
}

async fn outbox(pool: &Pool) -> Vec<(i64, String, i64, bool, i32, bool, bool)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT position, stream_id, version, published_at IS NULL, attempts, claimed_until IS NULL, \
                 last_error IS NULL \
             FROM outbox_events ORDER BY position",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))).collect()
}

#[tokio::test]
async fn every_append_writes_one_unpublished_outbox_row_per_event_and_a_failed_append_writes_none() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let (a, b) = (new_stream(), new_stream());
    append(&stores, &a, 0, 2).await;
    let mut with_guard = request(&b, 0, 1);
    with_guard.transaction = Some(TransactionRecord {
        transaction_id: format!("tx-{}", Uuid::new_v4()),
        intent: TransactionIntent {
            account_id: b.clone(),
            operation: "deposit".to_owned(),
            amount_minor: 100,
            currency: "EUR".to_owned(),
        },
        response: StoredResponse { status: 201, body: "{}".to_owned(), code: None },
        recorded_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
    });
    stores.stores().events.append(with_guard.clone()).await.unwrap();
    let before = outbox(&db.pool).await;

    // A stale writer and a reused transaction id: both refused, and neither leaves an outbox row.
    let err = stores.stores().events.append(request(&a, 1, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { actual: 2, .. }), "got {err:?}");
    let mut reused = request(&a, 2, 1);
    reused.transaction = with_guard.transaction.clone();
    let err = stores.stores().events.append(reused).await.unwrap_err();
    assert!(matches!(err, StoreError::TransactionExists { .. }), "got {err:?}");

    let feed = stores.events.read_after(0, 100).await.unwrap();
    let want: Vec<(i64, String, i64, bool, i32, bool, bool)> = feed
        .iter()
        .map(|(p, e)| {
            (
                i64::try_from(*p).unwrap(),
                e.stream_id.clone(),
                i64::try_from(e.version).unwrap(),
                true,
                0,
                true,
                true,
            )
        })
        .collect();
    assert_eq!(want.len(), 3);
    assert_eq!(before, want);
    assert_eq!(outbox(&db.pool).await, want);
}

#[tokio::test]
async fn stored_events_cannot_be_updated_or_deleted() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let stream = new_stream();
    let events = append(&stores, &stream, 0, 1).await;
    let client = db.pool.get().await.unwrap();

    let update = client.execute("UPDATE events SET event_type = 'Edited'", &[]).await;
    let delete = client.execute("DELETE FROM events", &[]).await;

    for refused in [update.unwrap_err(), delete.unwrap_err()] {
        let message = refused.as_db_error().map(|e| e.message().to_owned());
        assert!(message.as_deref().is_some_and(|m| m.contains("events are immutable")), "{refused:?}");
    }
    assert_eq!(stores.stores().events.load_stream(&stream, 0).await.unwrap(), events);
}

#[tokio::test]
async fn a_payload_postgres_cannot_store_is_invalid_and_writes_nothing() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let stream = new_stream();
    let mut bad = request(&stream, 0, 2);
    // JSONB has no NUL character.
    bad.events[1].payload = json!({"text": "nul \u{0} inside"});

    let err = stores.stores().events.append(bad).await.unwrap_err();

    assert!(matches!(err, StoreError::Invalid(_)), "got {err:?}");
    assert!(stores.stores().events.load_stream(&stream, 0).await.unwrap().is_empty());
    assert!(stores.stores().events.list_streams(&stream, None, 10).await.unwrap().is_empty());
    // The stream is still free to start.
    append(&stores, &stream, 0, 1).await;
}

/// Starts an append by hand in its own transaction, up to and including the event insert, so that it
/// holds the next feed position without committing it. Returns the open transaction's client.
async fn hold_a_position(config: &tokio_postgres::Config, stream_id: &str) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "BEGIN; \
             INSERT INTO streams (stream_id, version) VALUES ('{stream_id}', 1); \
             INSERT INTO events (stream_id, version, event_id, event_type, schema_version, occurred_at, \
                                 payload, metadata) \
             VALUES ('{stream_id}', 1, gen_random_uuid(), 'MoneyDeposited', 1, now(), '{{}}', '{{}}');"
        ))
        .await
        .unwrap();
    client
}

/// Reads the whole feed until it shows `want` events, at most for [`PATIENCE`] (other tests' transactions
/// on the same server may hold the snapshot's `xmin` back for a moment).
async fn read_until(stores: &PgStores, want: usize) -> Vec<(u64, EventEnvelope)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = stores.events.read_after(0, 100).await.unwrap();
        if page.len() >= want || tokio::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_reader_waits_below_an_append_still_committing_and_then_reads_both_in_position_order() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let (held, later) = (new_stream(), new_stream());
    let holder = hold_a_position(&db.config, &held).await;

    // Commits while the held append is open, at a higher position, without waiting for it.
    let written = append(&stores, &later, 0, 1).await;
    for _ in 0..3 {
        assert!(
            stores.events.read_after(0, 100).await.unwrap().is_empty(),
            "the later event is not handed out while a lower position may still commit"
        );
    }
    holder.batch_execute("COMMIT").await.unwrap();

    let page = read_until(&stores, 2).await;
    assert_eq!(page.len(), 2, "{page:?}");
    assert_eq!(page[0].1.stream_id, held);
    assert_eq!(page[1].1, written[0]);
    assert!(page[0].0 < page[1].0);
}

#[tokio::test]
async fn a_position_whose_append_rolled_back_is_passed_once_no_transaction_could_still_commit_it() {
    let db = pg::migrated_database().await;
    let stores = PgStores::new(db.pool.clone());
    let (held, later) = (new_stream(), new_stream());
    let holder = hold_a_position(&db.config, &held).await;
    let written = append(&stores, &later, 0, 1).await;
    assert!(stores.events.read_after(0, 100).await.unwrap().is_empty());

    holder.batch_execute("ROLLBACK").await.unwrap();

    let page = read_until(&stores, 1).await;
    assert_eq!(page.len(), 1, "{page:?}");
    assert_eq!(page[0].1, written[0]);
    let head = stores.events.refresh_head().await.unwrap();
    assert_eq!(page[0].0, head, "the hole below it is never handed out");
    // Another reader with its own memory of gaps passes the hole too.
    let other = PgStores::new(pg::pool(&db.config));
    assert_eq!(read_until(&other, 1).await, page);
}
