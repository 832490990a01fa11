//! Quarantine, not stall: what the MSK consumers (the projection and the transfer saga) do with a
//! record they cannot take, and how an operator takes it after a fix.
//!
//! A failure is either transient or permanent ([`AppError::is_transient`]). A transient one (a store
//! unavailable or timing out, throttling, a version race, a claim still in progress) fails the batch as
//! before: the event source mapping (or the local consumer) delivers it again, and nothing is parked. A
//! permanent one is tried [`PARK_ATTEMPTS_MAX`] times in all within the invocation ([`Parking::handle`]);
//! if it still fails, the record is parked (its stream, version, envelope, the error and the time) and
//! the partition moves on. A record that does not decode is parked under `topic-partition@offset`.
//! Every later record of a parked stream is parked behind it, in order, without being handled, so one
//! stream's order holds. A failure to park (the store is down) fails the batch.
//!
//! [`ParkedRecords::retry`] takes a parked stream back: it hands its records, in position order, to the
//! same handler, removes each one handled, and stops at the first that still fails.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corebank_backoff::{Attempts, Backoff};
use corebank_domain::EventEnvelope;
use corebank_store::{
    PARKED_PAGE_MAX, ParkedConsumer, ParkedKind, ParkedRecord, ParkedRecordStore, ParkedStats, StoreError,
};
use serde::Serialize;

use crate::projector::Projector;
use crate::saga::TransferSaga;
use crate::{AppError, Clock};

/// Tries of a record that fails permanently, the first included, before it is parked.
pub const PARK_ATTEMPTS_MAX: u32 = 3;

/// Pauses between those tries: 20 ms doubling to 200 ms, jittered (well inside an invocation).
pub const PARK_BACKOFF: Backoff = Backoff::from_millis(20, 200);

/// The most bytes of an undecodable record's value that are parked; the rest is cut off (such a
/// record is kept for an operator to read, and an item must fit DynamoDB's 400 KB).
pub const UNDECODABLE_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// The most characters of an error that are parked with a record.
pub const PARKED_ERROR_CHARS_MAX: usize = 2048;

/// How one consumer parks: where, under which name, by which clock, after how many tries.
#[derive(Clone)]
pub struct Parking {
    store: Arc<dyn ParkedRecordStore>,
    consumer: ParkedConsumer,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    attempts_max: u32,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking").field("consumer", &self.consumer).finish_non_exhaustive()
    }
}

fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Parking {
    /// Parking of `consumer` in `store`, [`PARK_ATTEMPTS_MAX`] tries paced by [`PARK_BACKOFF`].
    pub fn new(store: Arc<dyn ParkedRecordStore>, consumer: ParkedConsumer, clock: Arc<dyn Clock>) -> Self {
        Self { store, consumer, clock, backoff: PARK_BACKOFF, attempts_max: PARK_ATTEMPTS_MAX }
    }

    /// The same, with `attempts_max` tries (at least one) paced by `backoff`.
    pub fn with_attempts(mut self, backoff: Backoff, attempts_max: u32) -> Self {
        self.backoff = backoff;
        self.attempts_max = attempts_max.max(1);
        self
    }

    /// Whose records these are.
    pub fn consumer(&self) -> ParkedConsumer {
        self.consumer
    }

    /// The streams this consumer has parked: asked once per batch.
    pub async fn parked_streams(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self.store.parked_streams(self.consumer).await?.into_iter().collect())
    }

    /// Whether `stream_key` still has a record parked: asked before parking a record behind a stream
    /// the batch found parked, since a retry may have emptied it meanwhile.
    pub async fn still_parked(&self, stream_key: &str) -> Result<bool, StoreError> {
        Ok(!self.store.stream(self.consumer, stream_key, 1).await?.is_empty())
    }

    /// Runs `attempt` until it succeeds, fails transiently (returned at once: the batch is delivered
    /// again), or has failed permanently as many times as allowed (the last error is returned: park).
    pub async fn handle<T, F, Fut>(&self, mut attempt: F) -> Result<T, AppError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AppError>>,
    {
        let mut attempts = Attempts::new(self.backoff, self.attempts_max);
        loop {
            match attempt().await {
                Ok(done) => return Ok(done),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => match attempts.failed() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(e),
                },
            }
        }
    }

    /// Parks an envelope that was not handled, or that waits behind its stream's parked record.
    pub async fn park_envelope(&self, envelope: &EventEnvelope, error: &str) -> Result<(), StoreError> {
        let payload = serde_json::to_string(envelope)
            .map_err(|e| StoreError::Invalid(format!("the envelope does not serialise: {e}")))?;
        self.park(ParkedRecord {
            consumer: self.consumer,
            stream_key: envelope.stream_id.clone(),
            position: envelope.version,
            kind: ParkedKind::Envelope,
            payload,
            error: cut(error, PARKED_ERROR_CHARS_MAX),
            parked_at: self.clock.now(),
        })
        .await
    }

    /// Parks a record that does not decode; `value` is its value as delivered (base64), if it had one.
    pub async fn park_undecodable(
        &self,
        topic: &str,
        partition: i64,
        offset: i64,
        value: Option<&str>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.park(ParkedRecord {
            consumer: self.consumer,
            stream_key: ParkedRecord::undecodable_key(topic, partition, offset),
            position: u64::try_from(offset).unwrap_or(0),
            kind: ParkedKind::Undecodable,
            payload: cut(value.unwrap_or_default(), UNDECODABLE_PAYLOAD_BYTES_MAX),
            error: cut(error, PARKED_ERROR_CHARS_MAX),
            parked_at: self.clock.now(),
        })
        .await
    }

    /// Stores a parked record and counts it under its consumer.
    async fn park(&self, record: ParkedRecord) -> Result<(), StoreError> {
        self.store.park(record).await?;
        metrics::counter!(crate::telemetry::RECORDS_PARKED, "consumer" => self.consumer.as_str())
            .increment(1);
        Ok(())
    }
}

/// The envelope a parked record holds: its JSON, or the undecodable value decoded as a record's
/// value is (base64, then JSON), which succeeds only once the cause was fixed.
pub fn parked_envelope(record: &ParkedRecord) -> Result<EventEnvelope, String> {
    match record.kind {
        ParkedKind::Envelope => serde_json::from_str(&record.payload)
            .map_err(|e| format!("the parked envelope does not decode: {e}")),
        ParkedKind::Undecodable => {
            let bytes =
                BASE64.decode(&record.payload).map_err(|e| format!("the value is not base64: {e}"))?;
            serde_json::from_slice(&bytes).map_err(|e| format!("the value is not an event envelope: {e}"))
        }
    }
}

/// What a retry of a parked stream did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryOutcome {
    /// The consumer.
    pub consumer: ParkedConsumer,
    /// The stream key.
    pub stream_key: String,
    /// Positions handled and removed, in order.
    pub applied: Vec<u64>,
    /// The record that still fails, if one did: the retry stopped there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<RetryFailure>,
    /// Records of the stream still parked (at most [`PARKED_PAGE_MAX`] are counted).
    pub still_parked: usize,
}

/// A record a retry could not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryFailure {
    /// Its position.
    pub position: u64,
    /// Why.
    pub error: String,
}

/// The operator's side of parked records: list, count, retry.
pub struct ParkedRecords {
    store: Arc<dyn ParkedRecordStore>,
    projector: Arc<Projector>,
    saga: Arc<TransferSaga>,
}

impl std::fmt::Debug for ParkedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedRecords").finish_non_exhaustive()
    }
}

impl ParkedRecords {
    /// Over the parked-record store and the two consumers' handlers.
    pub fn new(
        store: Arc<dyn ParkedRecordStore>,
        projector: Arc<Projector>,
        saga: Arc<TransferSaga>,
    ) -> Self {
        Self { store, projector, saga }
    }

    /// Parked records, oldest first; `limit` is at most [`PARKED_PAGE_MAX`] (checked by the caller).
    pub async fn list(
        &self,
        consumer: Option<ParkedConsumer>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, AppError> {
        Ok(self.store.list(consumer, offset, limit.min(PARKED_PAGE_MAX)).await?)
    }

    /// How many records are parked and since when.
    pub async fn stats(&self) -> Result<ParkedStats, AppError> {
        Ok(self.store.stats().await?)
    }

    async fn apply(&self, consumer: ParkedConsumer, envelope: &EventEnvelope) -> Result<(), AppError> {
        match consumer {
            ParkedConsumer::Projector => self.projector.handle(envelope).await.map(|_| ()),
            ParkedConsumer::Saga => self.saga.handle(envelope).await.map(|_| ()),
        }
    }

    /// Hands `stream_key`'s parked records of `consumer` to that consumer's handler in position order,
    /// removing each one handled, and stops at the first that fails permanently. A transient failure
    /// is returned as an error (what was handled before it stays removed). `ParkedStreamNotFound` when
    /// nothing is parked under the key.
    #[tracing::instrument(skip(self))]
    pub async fn retry(&self, consumer: ParkedConsumer, stream_key: &str) -> Result<RetryOutcome, AppError> {
        let mut outcome = RetryOutcome {
            consumer,
            stream_key: stream_key.to_owned(),
            applied: Vec::new(),
            failed: None,
            still_parked: 0,
        };
        let mut first = true;
        'pages: loop {
            let page = self.store.stream(consumer, stream_key, PARKED_PAGE_MAX).await?;
            if page.is_empty() {
                if first {
                    return Err(AppError::ParkedStreamNotFound);
                }
                break;
            }
            first = false;
            for record in page {
                let handled = match parked_envelope(&record) {
                    Ok(envelope) => match self.apply(consumer, &envelope).await {
                        Ok(()) => Ok(()),
                        Err(e) if e.is_transient() => return Err(e),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e),
                };
                match handled {
                    Ok(()) => {
                        self.store.remove(consumer, stream_key, record.position).await?;
                        outcome.applied.push(record.position);
                    }
                    Err(error) => {
                        outcome.failed = Some(RetryFailure { position: record.position, error });
                        break 'pages;
                    }
                }
            }
        }
        outcome.still_parked = self.store.stream(consumer, stream_key, PARKED_PAGE_MAX).await?.len();
        tracing::info!(
            applied = outcome.applied.len(),
            still_parked = outcome.still_parked,
            "parked stream retried"
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use corebank_domain::EventMetadata;

    use super::*;

    fn record(kind: ParkedKind, payload: String) -> ParkedRecord {
        ParkedRecord {
            consumer: ParkedConsumer::Projector,
            stream_key: "t-0@7".to_owned(),
            position: 7,
            kind,
            payload,
            error: "e".to_owned(),
            parked_at: Utc::now(),
        }
    }

    fn envelope() -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            stream_id: "account-a".to_owned(),
            version: 2,
            event_type: "MoneyDeposited".to_owned(),
            schema_version: 1,
            occurred_at: Utc::now(),
            payload: serde_json::json!({"amountMinor": "100"}),
            metadata: EventMetadata::default(),
        }
    }

    #[test]
    fn a_parked_envelope_reads_back_and_an_undecodable_value_decodes_only_once_it_is_an_envelope() {
        let event = envelope();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(parked_envelope(&record(ParkedKind::Envelope, json.clone())).unwrap(), event);
        assert_eq!(parked_envelope(&record(ParkedKind::Undecodable, BASE64.encode(&json))).unwrap(), event);

        let junk = parked_envelope(&record(ParkedKind::Undecodable, BASE64.encode(b"{\"not\":1}")));
        assert!(junk.unwrap_err().contains("not an event envelope"));
        let not_base64 = parked_envelope(&record(ParkedKind::Undecodable, "%%%".to_owned()));
        assert!(not_base64.unwrap_err().contains("not base64"));
        let broken = parked_envelope(&record(ParkedKind::Envelope, "{".to_owned()));
        assert!(broken.unwrap_err().contains("does not decode"));
    }

    #[test]
    fn long_values_and_errors_are_cut_at_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 4), "abcd");
        assert_eq!(cut("aé", 2), "a", "é is two bytes and is not split");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_tried_the_allowed_times_and_a_transient_one_once() {
        let store: Arc<dyn ParkedRecordStore> =
            Arc::new(corebank_store::memory::MemoryParkedRecordStore::default());
        let parking = Parking::new(store, ParkedConsumer::Saga, Arc::new(crate::SystemClock))
            .with_attempts(Backoff::from_millis(1, 1), 3);
        let tries = std::sync::atomic::AtomicU32::new(0);
        let permanent = parking
            .handle(|| async {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err::<(), _>(AppError::Corrupt("no".to_owned()))
            })
            .await;
        assert!(matches!(permanent, Err(AppError::Corrupt(_))));
        assert_eq!(tries.swap(0, std::sync::atomic::Ordering::SeqCst), 3);

        let transient = parking
            .handle(|| async {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err::<(), _>(AppError::Store(StoreError::Unavailable("down".to_owned())))
            })
            .await;
        assert!(transient.unwrap_err().is_transient());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1, "left to the redelivery");
    }
}
