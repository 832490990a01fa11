//! Versioned migrations against a real PostgreSQL: a fresh install, a re-run, an upgrade from an older
//! build, concurrent starts, an edited migration and a failing one. Each test has its own database.

#![cfg(test)]

mod pg;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corebank_domain::{EventEnvelope, EventMetadata};
use corebank_store::postgres::{self, MIGRATIONS, Migration, MigrationError, PgStores, Pool};
use corebank_store::{AppendRequest, ProjectionChange};
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

const EVENT_STORE_TABLES: [&str; 7] = [
    "events",
    "idempotency_records",
    "outbox_events",
    "schema_migrations",
    "snapshots",
    "streams",
    "transaction_records",
];

const READ_MODEL_TABLES: [&str; 5] =
    ["account_statement", "account_summary", "projection_checkpoints", "rebuild_jobs", "transfer_status"];

/// Tables of migrations after the read model's (0006: the embedded pipeline's saved cursors; 0008: the
/// records the MSK consumers parked).
const LATER_TABLES: [&str; 2] = ["feed_cursors", "parked_records"];

fn all_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

fn all_tables() -> Vec<String> {
    let mut all: Vec<String> = EVENT_STORE_TABLES
        .iter()
        .chain(&READ_MODEL_TABLES)
        .chain(&LATER_TABLES)
        .map(|t| t.to_string())
        .collect();
    all.sort();
    all
}

async fn tables(pool: &Pool) -> Vec<String> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
             ORDER BY table_name",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// `schema_migrations`, version -> (name, checksum, applied_at).
async fn recorded(pool: &Pool) -> BTreeMap<i64, (String, String, DateTime<Utc>)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version", &[])
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect()
}

fn assert_records_exactly(
    recorded: &BTreeMap<i64, (String, String, DateTime<Utc>)>,
    migrations: &[Migration],
) {
    let got: Vec<(i64, &str, &str)> =
        recorded.iter().map(|(v, (name, checksum, _))| (*v, name.as_str(), checksum.as_str())).collect();
    let checksums: Vec<String> = migrations.iter().map(Migration::checksum).collect();
    let want: Vec<(i64, &str, &str)> =
        migrations.iter().zip(&checksums).map(|(m, c)| (m.version, m.name, c.as_str())).collect();
    assert_eq!(got, want);
}

fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        payload: json!({"amountMinor": "1050", "currency": "EUR"}),
        metadata: EventMetadata { actor: Some("migration-test".to_owned()), ..EventMetadata::default() },
    }
}

#[tokio::test]
async fn fresh_database_migrates_to_the_latest_version_and_records_every_file() {
    let db = pg::empty_database().await;

    let report = postgres::migrate(&db.pool).await.unwrap();

    assert_eq!(report.applied, all_versions());
    assert!(report.already_applied.is_empty());
    assert_eq!(tables(&db.pool).await, all_tables());
    assert_records_exactly(&recorded(&db.pool).await, MIGRATIONS);
}

#[tokio::test]
async fn running_migrate_twice_is_a_no_op() {
    let db = pg::migrated_database().await;
    let before = recorded(&db.pool).await;

    let report = postgres::migrate(&db.pool).await.unwrap();

    assert!(report.applied.is_empty(), "nothing is applied again: {report:?}");
    assert_eq!(report.already_applied, all_versions());
    assert_eq!(recorded(&db.pool).await, before, "rows, checksums and applied_at are untouched");
    assert_eq!(tables(&db.pool).await, all_tables());
}

#[tokio::test]
async fn upgrade_from_the_first_migration_keeps_the_data_and_applies_the_rest() {
    let db = pg::empty_database().await;
    let report = postgres::migrate_to(&db.pool, 1).await.unwrap();
    assert_eq!(report.applied, [1]);
    assert_eq!(tables(&db.pool).await, EVENT_STORE_TABLES);

    // What a build that only knew migration 1 wrote.
    let stores = PgStores::new(db.pool.clone());
    let stream = format!("account-{}", Uuid::new_v4());
    let events = vec![envelope(&stream, 1), envelope(&stream, 2)];
    let request = AppendRequest {
        stream_id: stream.clone(),
        expected_version: 0,
        events: events.clone(),
        idempotency: None,
        transaction: None,
    };
    stores.stores().events.append(request).await.unwrap();

    let report = postgres::migrate(&db.pool).await.unwrap();

    assert_eq!(report.applied, all_versions()[1..]);
    assert_eq!(report.already_applied, [1]);
    assert_eq!(tables(&db.pool).await, all_tables());
    assert_records_exactly(&recorded(&db.pool).await, MIGRATIONS);
    let s = stores.stores();
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), events);
    let change = ProjectionChange {
        stream_id: stream.clone(),
        expected_checkpoint: 0,
        new_checkpoint: 2,
        summary: None,
        statement: Vec::new(),
    };
    s.read_model.apply(change).await.unwrap();
    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_all_succeed_and_apply_each_file_once() {
    const PROCESSES: usize = 4;
    let db = pg::empty_database().await;
    let start = std::sync::Arc::new(Barrier::new(PROCESSES));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PROCESSES {
        // A pool each, as separate instances starting at once would have.
        let pool = pg::pool(&db.config);
        let start = std::sync::Arc::clone(&start);
        tasks.spawn(async move {
            start.wait().await;
            postgres::migrate(&pool).await
        });
    }

    let mut applied = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let report = joined.unwrap().expect("every concurrent migrate succeeds");
        applied.extend(report.applied);
    }

    applied.sort_unstable();
    assert_eq!(applied, all_versions(), "each migration was applied by exactly one caller");
    assert_records_exactly(&recorded(&db.pool).await, MIGRATIONS);
    assert_eq!(tables(&db.pool).await, all_tables());
}

#[tokio::test]
async fn an_edited_migration_is_refused_and_nothing_more_is_applied() {
    let db = pg::empty_database().await;
    postgres::migrate_to(&db.pool, 1).await.unwrap();
    let client = db.pool.get().await.unwrap();
    client.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", &[]).await.unwrap();
    drop(client);

    let err = postgres::migrate(&db.pool).await.unwrap_err();

    let MigrationError::Changed { version, applied_checksum, checksum, .. } = err else {
        panic!("expected Changed, got {err:?}");
    };
    assert_eq!(version, 1);
    assert_eq!(applied_checksum, "edited");
    assert_eq!(checksum, MIGRATIONS[0].checksum());
    assert_eq!(recorded(&db.pool).await.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(tables(&db.pool).await, EVENT_STORE_TABLES);
}

static BROKEN_SECOND: &[Migration] = &[
    MIGRATIONS[0],
    Migration {
        version: 2,
        name: "0002_broken",
        sql: "CREATE TABLE half_done (id INTEGER); SELECT no_such_function();",
    },
];

#[tokio::test]
async fn a_failing_migration_rolls_back_whole_and_a_fixed_build_applies_cleanly() {
    let db = pg::empty_database().await;

    let err = postgres::migrate_with(&db.pool, BROKEN_SECOND, 2).await.unwrap_err();

    let MigrationError::Failed { version, name, .. } = err else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!((version, name), (2, "0002_broken"));
    assert_eq!(tables(&db.pool).await, EVENT_STORE_TABLES, "half_done was rolled back");
    assert_records_exactly(&recorded(&db.pool).await, &MIGRATIONS[..1]);

    // The session lock was released: the real list migrates the same database.
    let report = postgres::migrate(&db.pool).await.unwrap();
    assert_eq!(report.applied, all_versions()[1..]);
    assert_eq!(tables(&db.pool).await, all_tables());
}

#[tokio::test]
async fn migrating_to_a_version_this_build_does_not_have_is_refused_before_touching_the_database() {
    let db = pg::empty_database().await;

    let err = postgres::migrate_to(&db.pool, 99).await.unwrap_err();

    assert!(matches!(err, MigrationError::UnknownTarget(99)), "got {err:?}");
    assert!(tables(&db.pool).await.is_empty());
}

#[tokio::test]
async fn upgrade_from_0002_adds_the_relay_columns_and_keeps_pending_outbox_rows_claimable_in_order() {
    let db = pg::empty_database().await;
    postgres::migrate_to(&db.pool, 2).await.unwrap();
    // What a build that only knew migrations 1 and 2 wrote: events with their pending outbox rows.
    let stores = PgStores::new(db.pool.clone());
    let stream = format!("account-{}", Uuid::new_v4());
    let events = vec![envelope(&stream, 1), envelope(&stream, 2), envelope(&stream, 3)];
    let request = AppendRequest {
        stream_id: stream.clone(),
        expected_version: 0,
        events: events.clone(),
        idempotency: None,
        transaction: None,
    };
    stores.stores().events.append(request).await.unwrap();

    let report = postgres::migrate(&db.pool).await.unwrap();

    assert!(report.applied.contains(&3), "0003 applied on top of 0002: {report:?}");
    assert_eq!(report.already_applied, [1, 2]);
    assert_records_exactly(&recorded(&db.pool).await, MIGRATIONS);
    let client = db.pool.get().await.unwrap();
    let columns: Vec<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = 'outbox_events' AND column_name IN \
                 ('next_attempt_at', 'dead_lettered_at', 'claim_token') ORDER BY column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(columns, ["claim_token", "dead_lettered_at", "next_attempt_at"]);
    let outbox = postgres::PgOutbox::new(db.pool.clone());
    let claim = outbox.claim(10, std::time::Duration::from_secs(30)).await.unwrap();
    let claimed: Vec<EventEnvelope> = claim.rows.iter().map(|r| r.envelope.clone()).collect();
    assert_eq!(claimed, events, "the old rows are claimed whole, in version order");
    let positions: Vec<u64> = claim.rows.iter().map(|r| r.position).collect();
    assert_eq!(outbox.mark_published(claim.token, &positions).await.unwrap(), 3);
    assert_eq!(outbox.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn upgrade_from_0004_backfills_rejection_codes_and_a_rejection_without_one_reads_as_unknown() {
    let db = pg::empty_database().await;
    postgres::migrate_to(&db.pool, 4).await.unwrap();
    // What a build that only knew migrations 1 to 4 wrote: responses without a code column.
    let client = db.pool.get().await.unwrap();
    let rejection = json!({"statusCode": 400, "code": "INSUFFICIENT_FUNDS", "message": "no"}).to_string();
    let rows: [(&str, i32, &str); 3] = [
        ("refused", 400, &rejection),
        ("accepted", 201, r#"{"status":"accepted"}"#),
        ("garbled", 500, "not json"),
    ];
    let intent = json!({"accountId": "a", "operation": "deposit", "amountMinor": "1", "currency": "EUR"});
    for (key, status, body) in rows {
        client
            .execute(
                "INSERT INTO idempotency_records \
                     (scope, key, operation, request_hash, state, response_status, response_body, expires_at) \
                 VALUES ('accounts', $1, 'deposit', 'h', 'completed', $2, $3, now() + interval '1 day')",
                &[&key, &status, &body],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO transaction_records \
                     (transaction_id, intent, response_status, response_body, recorded_at) \
                 VALUES ($1, $2, $3, $4, now())",
                &[&key, &intent, &status, &body],
            )
            .await
            .unwrap();
    }
    drop(client);

    let report = postgres::migrate(&db.pool).await.unwrap();

    assert_eq!(report.already_applied, [1, 2, 3, 4]);
    assert!(report.applied.contains(&5), "0005 applied on top of 0004: {report:?}");
    let stores = PgStores::new(db.pool.clone()).stores();
    let now = Utc::now();
    for (key, want) in
        [("refused", Some("INSUFFICIENT_FUNDS")), ("accepted", None), ("garbled", Some("UNKNOWN"))]
    {
        let claim = corebank_store::IdempotencyClaim {
            key: corebank_store::IdempotencyKey { scope: "accounts".to_owned(), key: key.to_owned() },
            operation: "deposit".to_owned(),
            request_hash: "h".to_owned(),
            claim_token: Uuid::new_v4(),
            lease_expires_at: now + chrono::Duration::seconds(30),
            expires_at: now + chrono::Duration::days(1),
            now,
        };
        let corebank_store::ClaimOutcome::Existing(record) = stores.idempotency.claim(claim).await.unwrap()
        else {
            panic!("{key}: the old record is still there");
        };
        let corebank_store::IdempotencyState::Completed(response) = record.state else {
            panic!("{key}: completed");
        };
        assert_eq!(response.code.as_deref(), want, "idempotency record {key}");
        let record = stores.events.transaction(key).await.unwrap().expect("the old record is still there");
        assert_eq!(record.response.code.as_deref(), want, "transaction record {key}");
    }
    let client = db.pool.get().await.unwrap();
    let garbled: Option<String> = client
        .query_one("SELECT response_code FROM idempotency_records WHERE key = 'garbled'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(garbled, None, "a body that is not JSON is left without a code, which reads as UNKNOWN");
}
