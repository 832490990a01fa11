//! The ports: what the application asks of persistence.

use async_trait::async_trait;
use corebank_domain::EventEnvelope;

use crate::{
    AccountSummary, AppendOutcome, AppendRequest, ClaimOutcome, IdempotencyClaim, IdempotencyCompletion,
    IdempotencyKey, ParkedConsumer, ParkedRecord, ParkedStats, ProjectionChange, ProjectionReplacement,
    RebuildJob, Snapshot, StatementEntry, StoreError, TransactionRecord, TransferStatus,
};

/// Event streams with optimistic concurrency and atomic guard records.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends events at `expected_version + 1 ..` together with the request's guards, atomically.
    ///
    /// Fails with `VersionConflict` when the stream is not at `expected_version`, `TransactionExists`
    /// when the transaction id is recorded, `IdempotencyClaimLost` when the writer's claim is gone; in
    /// every failure nothing is written.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// The events of a stream with a version above `after_version`, in version order.
    async fn load_stream(
        &self,
        stream_id: &str,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// The events of many streams at once: for each `(stream id, after version)` asked, that stream's
    /// events above the version, in version order, one list per stream in the order asked (empty for a
    /// stream with none). A store that can answers in one round trip; the default asks stream by stream.
    async fn load_streams(&self, streams: &[(String, u64)]) -> Result<Vec<Vec<EventEnvelope>>, StoreError> {
        let mut loaded = Vec::with_capacity(streams.len());
        for (stream_id, after_version) in streams {
            loaded.push(self.load_stream(stream_id, *after_version).await?);
        }
        Ok(loaded)
    }

    /// Stream ids starting with `prefix`, in ascending order, after `after` (exclusive), at most `limit`.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// The transaction record of a business transaction id, if any.
    async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError>;
}

/// Idempotency-Key claims. Completion happens alone (a rejected command) or inside an append.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes the key if it is free, expired, or held under an expired lease; otherwise returns what is
    /// stored.
    async fn claim(&self, claim: IdempotencyClaim) -> Result<ClaimOutcome, StoreError>;

    /// Completes a claim with its response; `IdempotencyClaimLost` if the claim is not held.
    async fn complete(&self, completion: IdempotencyCompletion) -> Result<(), StoreError>;

    /// Gives a claim back (after a transient failure) so that a retry can run; a no-op if not held.
    async fn release(&self, key: &IdempotencyKey, claim_token: uuid::Uuid) -> Result<(), StoreError>;
}

/// Aggregate snapshots: an optimisation only.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of a stream.
    async fn load(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Saves a snapshot unless a newer one is stored.
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError>;
}

/// The account read tables (`account_summary`, `account_statement`, `projection_checkpoints`).
#[async_trait]
pub trait ReadModelStore: Send + Sync {
    /// The last version of a stream applied to the read tables (0 if none).
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError>;

    /// Applies one change and moves the checkpoint, atomically, only from `expected_checkpoint`.
    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError>;

    /// The checkpoints of many streams, in the order asked (0 for a stream never applied). The
    /// default asks for each stream, all at once.
    async fn checkpoints(&self, stream_ids: &[String]) -> Result<Vec<u64>, StoreError> {
        futures_util::future::try_join_all(stream_ids.iter().map(|id| self.checkpoint(id))).await
    }

    /// The summary rows of many accounts, in the order asked. The default asks for each account, all
    /// at once.
    async fn summaries(&self, account_ids: &[String]) -> Result<Vec<Option<AccountSummary>>, StoreError> {
        futures_util::future::try_join_all(account_ids.iter().map(|id| self.summary(id))).await
    }

    /// Applies many changes, each of a different stream, each as [`ReadModelStore::apply`] would, and
    /// says of each whether it was applied: `false` when its stream's checkpoint was no longer at
    /// `expected_checkpoint`, and then nothing of that change is written. A stream named twice makes
    /// the call `Invalid` before anything is written; any other failure fails the call, which then
    /// writes nothing where the store has transactions (a store without them may have applied some of
    /// the other changes, each whole). The default applies each change on its own, all at once.
    async fn apply_all(&self, changes: Vec<ProjectionChange>) -> Result<Vec<bool>, StoreError> {
        let distinct: std::collections::HashSet<&str> =
            changes.iter().map(|c| c.stream_id.as_str()).collect();
        if distinct.len() != changes.len() {
            return Err(StoreError::Invalid("a stream appears twice among the changes".to_owned()));
        }
        let applies = changes.into_iter().map(|change| async move {
            match self.apply(change).await {
                Ok(()) => Ok(true),
                Err(StoreError::CheckpointMoved { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        });
        futures_util::future::try_join_all(applies).await
    }

    /// Replaces everything held for one stream with a rebuilt copy.
    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError>;

    /// Replaces many accounts' rows and checkpoints as [`ReadModelStore::replace`] does each. An
    /// invalid replacement fails the call before anything is written; past that, all or none where
    /// the store has transactions. The default replaces them one by one.
    async fn replace_all(&self, replacements: Vec<ProjectionReplacement>) -> Result<(), StoreError> {
        for replacement in &replacements {
            replacement.validate()?;
        }
        for replacement in replacements {
            self.replace(replacement).await?;
        }
        Ok(())
    }

    /// The summary row of an account.
    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError>;

    /// Statement rows of an account ordered by version, skipping `offset`, at most `limit`.
    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError>;
}

/// The `transfer_status` read table. A row's `version` is its projection checkpoint: the row and its
/// checkpoint are one item, so they always move together.
#[async_trait]
pub trait TransferStatusStore: Send + Sync {
    /// The status row of a transfer.
    async fn get(&self, transfer_id: &str) -> Result<Option<TransferStatus>, StoreError>;

    /// Writes `status` only if the stored row is at `expected_version` (an absent row counts as 0);
    /// otherwise nothing is written and the answer is `CheckpointMoved` (stream `transfer-{id}`).
    async fn apply(&self, expected_version: u64, status: TransferStatus) -> Result<(), StoreError>;

    /// Overwrites the row with a rebuilt one, whatever is stored.
    async fn replace(&self, status: TransferStatus) -> Result<(), StoreError>;

    /// Transfers still `PENDING` whose row was last updated before `updated_before`, oldest update
    /// first, at most `limit`: what the reconciler re-drives.
    async fn pending(
        &self,
        updated_before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<TransferStatus>, StoreError>;
}

/// Progress records of rebuild-all jobs.
#[async_trait]
pub trait RebuildJobStore: Send + Sync {
    /// Creates or overwrites a job record.
    async fn put(&self, job: RebuildJob) -> Result<(), StoreError>;

    /// A job by id.
    async fn get(&self, rebuild_id: &str) -> Result<Option<RebuildJob>, StoreError>;
}

/// Records the MSK consumers set aside instead of stalling a partition on them (see
/// `corebank_delivery::handlers::batch`). A record is named by `(consumer, stream_key, position)`.
#[async_trait]
pub trait ParkedRecordStore: Send + Sync {
    /// Parks `record` unless a record is parked under its name already; the first one stays (a
    /// redelivered batch parks the same records again).
    async fn park(&self, record: ParkedRecord) -> Result<(), StoreError>;

    /// The stream keys `consumer` has records parked under, in ascending order. Asked once per batch.
    async fn parked_streams(&self, consumer: ParkedConsumer) -> Result<Vec<String>, StoreError>;

    /// Parked records of `consumer` (of every consumer when `None`), oldest parked first (then by
    /// consumer, stream key and position), skipping `offset`, at most `limit`.
    async fn list(
        &self,
        consumer: Option<ParkedConsumer>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError>;

    /// The first `limit` records parked under one stream key of `consumer`, in position order.
    async fn stream(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError>;

    /// Removes one parked record (after it was handled); `false` when none was parked under that name.
    async fn remove(
        &self,
        consumer: ParkedConsumer,
        stream_key: &str,
        position: u64,
    ) -> Result<bool, StoreError>;

    /// How many records are parked, over every consumer, and since when.
    async fn stats(&self) -> Result<ParkedStats, StoreError>;
}

/// The whole store in position order: what the embedded pipeline tails. Positions start at 1 and
/// increase; a reader is never handed a position while a lower one may still commit, so a reader
/// that moves its cursor to the last position of each page misses nothing.
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// Events with a global position above `position`, in position order, at most `limit`. A page may
    /// stop short of `limit`, or be empty, while an append below the head is still committing.
    async fn read_after(&self, position: u64, limit: usize) -> Result<Vec<(u64, EventEnvelope)>, StoreError>;

    /// The latest committed position; its changes wake a tailing reader. A reader whose page is empty
    /// while its cursor is below the head reads again after a short pause.
    fn head(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Where the tailing reader named `lane` got to, as it last saved it (0 when never): a reader of a
    /// feed that outlives the process resumes there instead of replaying the feed from the start.
    async fn cursor(&self, lane: &str) -> Result<u64, StoreError> {
        let _ = lane;
        Ok(0)
    }

    /// Saves `lane`'s position. Everything at or below it has been handled. A feed that does not
    /// outlive the process keeps nothing (the default).
    async fn save_cursor(&self, lane: &str, position: u64) -> Result<(), StoreError> {
        let _ = (lane, position);
        Ok(())
    }
}
