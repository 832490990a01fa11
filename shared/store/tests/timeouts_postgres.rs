//! The session bounds every pooled connection carries (`SessionTimeouts`): an append that meets a lock
//! held by a stuck transaction fails fast with a transient error instead of hanging, and the stuck
//! transaction is ended by the server after its idle timeout, freeing the lock.

#![cfg(test)]

mod pg;

use std::time::Duration;

use corebank_domain::{EventEnvelope, EventMetadata};
use corebank_store::postgres::{PgStores, SessionTimeouts};
use corebank_store::{AppendRequest, StoreError};
use serde_json::json;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Bounds a wait so that a broken server fails the test instead of hanging it; nothing asserts on
/// how long the wait takes.
const PATIENCE: Duration = Duration::from_secs(60);

const TIMEOUTS: SessionTimeouts = SessionTimeouts {
    lock: Duration::from_millis(200),
    statement: Duration::from_secs(30),
    idle_in_transaction: Duration::from_secs(1),
};

fn request(stream_id: &str, expected_version: u64) -> AppendRequest {
    let envelope = EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version: expected_version + 1,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        payload: json!({"amountMinor": "100", "currency": "EUR"}),
        metadata: EventMetadata::default(),
    };
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events: vec![envelope],
        idempotency: None,
        transaction: None,
    }
}

#[tokio::test]
async fn an_append_behind_a_held_lock_fails_transiently_and_succeeds_once_the_idle_holder_is_ended() {
    let db = pg::migrated_database().await;
    let mut config = db.config.clone();
    TIMEOUTS.apply(&mut config);
    let stores = PgStores::new(pg::pool(&config)).stores();
    let stream = format!("account-{}", Uuid::new_v4());
    stores.events.append(request(&stream, 0)).await.unwrap();

    // A writer that took the stream's row lock and then stopped answering (a killed Lambda).
    let (holder, connection) = config.connect(NoTls).await.unwrap();
    let holder_session = tokio::spawn(connection);
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .query_one("SELECT version FROM streams WHERE stream_id = $1 FOR UPDATE", &[&stream])
        .await
        .unwrap();

    let err = stores.events.append(request(&stream, 1)).await.expect_err("the row is locked");
    assert!(err.is_transient(), "a lock wait past lock_timeout is retryable (503), not a 500: {err:?}");
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("55P03")), "lock_not_available: {err:?}");
    assert_eq!(stores.events.load_stream(&stream, 0).await.unwrap().len(), 1, "nothing was written");

    // The server ends the idle transaction's session, which releases the lock.
    tokio::time::timeout(PATIENCE, holder_session).await.expect("the server ends the idle session").ok();
    assert!(holder.is_closed());
    assert!(holder.batch_execute("COMMIT").await.is_err(), "the holder's transaction is gone");

    stores.events.append(request(&stream, 1)).await.unwrap();
    assert_eq!(stores.events.load_stream(&stream, 0).await.unwrap().len(), 2);
}
