//! In-memory adapters: the embedded default and the reference behaviour for the contract suite.
//!
//! Each adapter keeps its data behind one lock, so an append and its guards are atomic exactly as a
//! database transaction would make them. Maps that grow with the traffic are [`ShardedMap`]s (or
//! B-trees), so no single growth step holds the lock for long. Nothing survives the process.

mod sharded;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use corebank_domain::{EventEnvelope, StreamKind};
use tokio::sync::watch;
use uuid::Uuid;

use self::sharded::ShardedMap;
use crate::{
    AccountSummary, AppendOutcome, AppendRequest, ClaimOutcome, EventFeed, EventStore, IdempotencyClaim,
    IdempotencyCompletion, IdempotencyKey, IdempotencyRecord, IdempotencyState, IdempotencyStore,
    ParkedConsumer, ParkedRecord, ParkedRecordStore, ParkedStats, ProjectionChange, ProjectionReplacement,
    ReadModelStore, RebuildJob, RebuildJobStore, Snapshot, SnapshotStore, StatementEntry, StoreError, Stores,
    TransactionRecord, TransferStatus, TransferStatusStore,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave half an append behind (every append checks before
    // it writes), so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds a full set of memory stores plus the feed the embedded pipeline tails.
pub fn stores() -> (Stores, Arc<MemoryEventStore>) {
    let events = Arc::new(MemoryEventStore::default());
    let stores = Stores {
        events: events.clone(),
        idempotency: events.clone(),
        snapshots: Arc::new(MemorySnapshotStore::default()),
        read_model: Arc::new(MemoryReadModelStore::default()),
        transfers: Arc::new(MemoryTransferStatusStore::default()),
        parked: Arc::new(MemoryParkedRecordStore::default()),
        rebuilds: Arc::new(MemoryRebuildJobStore::default()),
    };
    (stores, events)
}

#[derive(Default)]
struct EventsInner {
    /// Ordered, so listing a prefix is a range walk.
    streams: BTreeMap<String, Vec<Arc<EventEnvelope>>>,
    log: Vec<Arc<EventEnvelope>>,
    idempotency: ShardedMap<IdempotencyKey, IdempotencyRecord>,
    transactions: ShardedMap<String, TransactionRecord>,
}

/// Event streams, idempotency records and transaction records under one lock, plus a global log.
pub struct MemoryEventStore {
    inner: Mutex<EventsInner>,
    head: watch::Sender<u64>,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self { inner: Mutex::new(EventsInner::default()), head: watch::Sender::new(0) }
    }
}

impl std::fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEventStore").finish_non_exhaustive()
    }
}

fn claim_is_held_by(record: Option<&IdempotencyRecord>, token: Uuid) -> bool {
    match record {
        None => true,
        Some(r) => {
            matches!(r.state, IdempotencyState::InProgress { claim_token, .. } if claim_token == token)
        }
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        request.validate()?;
        let stream_version = request.expected_version + request.events.len() as u64;
        let position = {
            let mut inner = lock(&self.inner);
            let actual = inner.streams.get(&request.stream_id).map_or(0, |s| s.len() as u64);
            if actual != request.expected_version {
                return Err(StoreError::VersionConflict {
                    stream_id: request.stream_id,
                    expected: request.expected_version,
                    actual,
                });
            }
            if let Some(t) = &request.transaction
                && inner.transactions.contains_key(&t.transaction_id)
            {
                return Err(StoreError::TransactionExists { transaction_id: t.transaction_id.clone() });
            }
            if let Some(c) = &request.idempotency
                && !claim_is_held_by(inner.idempotency.get(&c.key), c.claim_token)
            {
                return Err(StoreError::IdempotencyClaimLost { key: c.key.key.clone() });
            }
            if let Some(c) = request.idempotency {
                inner.idempotency.insert(c.key.clone(), completed(c));
            }
            if let Some(t) = request.transaction {
                inner.transactions.insert(t.transaction_id.clone(), t);
            }
            let events: Vec<Arc<EventEnvelope>> = request.events.into_iter().map(Arc::new).collect();
            inner.log.extend(events.iter().cloned());
            inner.streams.entry(request.stream_id).or_default().extend(events);
            inner.log.len() as u64
        };
        self.head.send_replace(position);
        Ok(AppendOutcome { stream_version })
    }

    async fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let inner = lock(&self.inner);
        let start = usize::try_from(after_version).unwrap_or(usize::MAX);
        Ok(inner
            .streams
            .get(stream_id)
            .map(|s| s.iter().skip(start).map(|e| EventEnvelope::clone(e)).collect())
            .unwrap_or_default())
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let inner = lock(&self.inner);
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        Ok(inner
            .streams
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        Ok(lock(&self.inner).transactions.get(transaction_id).cloned())
    }
}

fn completed(c: IdempotencyCompletion) -> IdempotencyRecord {
    IdempotencyRecord {
        key: c.key,
        operation: c.operation,
        request_hash: c.request_hash,
        state: IdempotencyState::Completed(c.response),
        expires_at: c.expires_at,
    }
}

#[async_trait]
impl IdempotencyStore for MemoryEventStore {
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError> {
        let mut inner = lock(&self.inner);
        if let Some(existing) = inner.idempotency.get(&claim.key) {
            let expired = existing.expires_at <= claim.now;
            let lease_over = matches!(
                existing.state,
                IdempotencyState::InProgress { lease_expires_at, .. } if lease_expires_at <= claim.now
            );
            // A lapsed lease is only taken over by the same request; another request under the key
            // still learns that the key is in use.
            let takeover = lease_over && existing.request_hash == claim.request_hash;
            if !expired && !takeover {
                return Ok(ClaimOutcome::Existing(existing.clone()));
            }
        }
        inner.idempotency.insert(
            claim.key.clone(),
            IdempotencyRecord {
                key: claim.key,
                operation: claim.operation,
                request_hash: claim.request_hash,
                state: IdempotencyState::InProgress {
                    claim_token: claim.claim_token,
                    lease_expires_at: claim.lease_expires_at,
                },
                expires_at: claim.expires_at,
            },
        );
        Ok(ClaimOutcome::Claimed)
    }

    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        if !claim_is_held_by(inner.idempotency.get(&completion.key), completion.claim_token) {
            return Err(StoreError::IdempotencyClaimLost { key: completion.key.key });
        }
        inner.idempotency.insert(completion.key.clone(), completed(completion));
        Ok(())
    }

    async fn release(&self, key: &IdempotencyKey, claim_token: Uuid) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let held = matches!(
            inner.idempotency.get(key).map(|r| &r.state),
            Some(IdempotencyState::InProgress { claim_token: t, .. }) if *t == claim_token
        );
        if held {
            inner.idempotency.remove(key);
        }
        Ok(())
    }
}

#[async_trait]
impl EventFeed for MemoryEventStore {
    async fn read_after(&self, position: u64, limit: usize) -> Result<Vec<(u64, EventEnvelope)>, StoreError> {
        let inner = lock(&self.inner);
        let start = usize::try_from(position).unwrap_or(usize::MAX);
        Ok(inner
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, e)| (i as u64 + 1, EventEnvelope::clone(e)))
            .collect())
    }

    fn head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

/// Snapshots in a map, newest per stream.
#[derive(Debug, Default)]
pub struct MemorySnapshotStore {
    inner: Mutex<HashMap<String, Snapshot>>,
}

#[async_trait]
impl SnapshotStore for MemorySnapshotStore {
    async fn load(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(lock(&self.inner).get(stream_id).cloned())
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let newer_stored = inner.get(&snapshot.stream_id).is_some_and(|s| s.version >= snapshot.version);
        if !newer_stored {
            inner.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ReadInner {
    checkpoints: ShardedMap<String, u64>,
    summaries: ShardedMap<String, AccountSummary>,
    statements: ShardedMap<String, BTreeMap<u64, StatementEntry>>,
}

/// Read tables in maps, under one lock so a change and its checkpoint move together.
#[derive(Debug, Default)]
pub struct MemoryReadModelStore {
    inner: Mutex<ReadInner>,
}

#[async_trait]
impl ReadModelStore for MemoryReadModelStore {
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
        Ok(lock(&self.inner).checkpoints.get(stream_id).copied().unwrap_or(0))
    }

    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let actual = inner.checkpoints.get(&change.stream_id).copied().unwrap_or(0);
        if actual != change.expected_checkpoint {
            return Err(StoreError::CheckpointMoved {
                stream_id: change.stream_id,
                expected: change.expected_checkpoint,
                actual,
            });
        }
        for entry in change.statement {
            inner.statements.entry(entry.account_id.clone()).or_default().insert(entry.stream_version, entry);
        }
        if let Some(summary) = change.summary {
            inner.summaries.insert(summary.account_id.clone(), summary);
        }
        inner.checkpoints.insert(change.stream_id, change.new_checkpoint);
        Ok(())
    }

    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let rows: BTreeMap<u64, StatementEntry> =
            replacement.statement.into_iter().map(|e| (e.stream_version, e)).collect();
        inner.statements.insert(replacement.account_id.clone(), rows);
        match replacement.summary {
            Some(s) => inner.summaries.insert(replacement.account_id, s),
            None => inner.summaries.remove(&replacement.account_id),
        };
        inner.checkpoints.insert(replacement.stream_id, replacement.checkpoint);
        Ok(())
    }

    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
        Ok(lock(&self.inner).summaries.get(account_id).cloned())
    }

    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError> {
        Ok(lock(&self.inner)
            .statements
            .get(account_id)
            .map(|rows| {
                // Rows are keyed by version and a projected stream's versions run 1..=N without
                // gaps, so the page starts at version offset + 1: a range seek, not a walk.
                let from = u64::try_from(offset).unwrap_or(u64::MAX).saturating_add(1);
                rows.range(from..).map(|(_, row)| row).take(limit).cloned().collect()
            })
            .unwrap_or_default())
    }
}

/// Transfer status rows in a map, each carrying its own checkpoint (`version`).
#[derive(Debug, Default)]
pub struct MemoryTransferStatusStore {
    inner: Mutex<ShardedMap<String, TransferStatus>>,
}

#[async_trait]
impl TransferStatusStore for MemoryTransferStatusStore {
    async fn get(&self, transfer_id: &str) -> Result<Option<TransferStatus>, StoreError> {
        Ok(lock(&self.inner).get(transfer_id).cloned())
    }

    async fn apply(&self, expected_version: u64, status: TransferStatus) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let actual = inner.get(&status.transfer_id).map_or(0, |s| s.version);
        if actual != expected_version {
            return Err(StoreError::CheckpointMoved {
                stream_id: StreamKind::Transfer.stream_id(&status.transfer_id),
                expected: expected_version,
                actual,
            });
        }
        inner.insert(status.transfer_id.clone(), status);
        Ok(())
    }

    async fn replace(&self, status: TransferStatus) -> Result<(), StoreError> {
        lock(&self.inner).insert(status.transfer_id.clone(), status);
        Ok(())
    }

    async fn pending(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TransferStatus>, StoreError> {
        let pending: Vec<TransferStatus> = lock(&self.inner)
            .values()
            .filter(|s| s.status == crate::TransferPhase::Pending && s.updated_at < updated_before)
            .cloned()
            .collect();
        Ok(TransferStatus::oldest_updates_first(pending, limit))
    }
}

/// Rebuild jobs in a map.
#[derive(Debug, Default)]
pub struct MemoryRebuildJobStore {
    inner: Mutex<HashMap<String, RebuildJob>>,
}

#[async_trait]
impl RebuildJobStore for MemoryRebuildJobStore {
    async fn put(&self, job: RebuildJob) -> Result<(), StoreError> {
        lock(&self.inner).insert(job.rebuild_id.clone(), job);
        Ok(())
    }

    async fn get(&self, rebuild_id: &str) -> Result<Option<RebuildJob>, StoreError> {
        Ok(lock(&self.inner).get(rebuild_id).cloned())
    }
}

/// Parked records in a map ordered by name.
#[derive(Debug, Default)]
pub struct MemoryParkedRecordStore {
    inner: Mutex<BTreeMap<(ParkedConsumer, String, u64), ParkedRecord>>,
}

#[async_trait]
impl ParkedRecordStore for MemoryParkedRecordStore {
    async fn park(&self, record: ParkedRecord) -> Result<(), StoreError> {
        let key = (record.consumer, record.stream_key.clone(), record.position);
        lock(&self.inner).entry(key).or_insert(record);
        Ok(())
    }

    async fn parked_streams(&self, consumer: ParkedConsumer) -> Result<Vec<String>, StoreError> {
        let mut streams: Vec<String> = lock(&self.inner)
            .keys()
            .filter(|(c, _, _)| *c == consumer)
            .map(|(_, stream, _)| stream.clone())
            .collect();
        streams.dedup();
        Ok(streams)
    }

    async fn list(
        &self,
        consumer: Option<ParkedConsumer>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let rows: Vec<ParkedRecord> = lock(&self.inner)
            .values()
            .filter(|r| consumer.is_none_or(|c| r.consumer == c))
            .cloned()
            .collect();
        Ok(ParkedRecord::oldest_first(rows, offset, limit))
    }

    async fn stream(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let from = (consumer, stream_key.to_owned(), 0);
        let to = (consumer, stream_key.to_owned(), u64::MAX);
        Ok(lock(&self.inner).range(from..=to).take(limit).map(|(_, r)| r.clone()).collect())
    }

    async fn remove(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        position: u64,
    ) -> Result<bool, StoreError> {
        Ok(lock(&self.inner).remove(&(consumer, stream_key.to_owned(), position)).is_some())
    }

    async fn stats(&self) -> Result<ParkedStats, StoreError> {
        Ok(ParkedStats::of(lock(&self.inner).values()))
    }
}
