//! Records the ports read and write.

use chrono::{DateTime, Utc};
use corebank_domain::money::minor_string;
use corebank_domain::transfer::Leg;
use corebank_domain::{AccountStatus, Currency, EventEnvelope};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most events one append may carry. DynamoDB allows 100 actions per transaction and an append
/// also writes up to two guard items.
pub const MAX_EVENTS_PER_APPEND: usize = 98;

/// A response as the API first answered it: replayed byte for byte on a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body text.
    pub body: String,
    /// The stable error code of a rejection (the body's `code`), `None` for an acceptance. Kept beside
    /// the body so that a process manager learns a command's outcome without parsing HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The code a stored rejection reads back with when it was written without one (by a build older than
/// the `code` field).
pub const UNKNOWN_RESPONSE_CODE: &str = "UNKNOWN";

impl StoredResponse {
    /// A response as an adapter reads it back. A rejection stored without its code (written before
    /// the code was stored) reads as [`UNKNOWN_RESPONSE_CODE`], so it is never mistaken for a success.
    pub fn read_back(status: u16, body: String, code: Option<String>) -> Self {
        let code = match code {
            None if !(200..300).contains(&status) => Some(UNKNOWN_RESPONSE_CODE.to_owned()),
            other => other,
        };
        Self { status, body, code }
    }
}

/// Where an idempotency key lives: keys are unique per operation family (`accounts`, `transfers`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The operation family.
    pub scope: String,
    /// The client's Idempotency-Key.
    pub key: String,
}

/// Whether the first request under a key is still running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdempotencyState {
    /// A request holds the key until `lease_expires_at`; after that anyone may take it over, so a
    /// crashed request never blocks its key for longer than the lease.
    InProgress {
        /// Identifies the holder.
        claim_token: Uuid,
        /// When the claim may be taken over.
        lease_expires_at: DateTime<Utc>,
    },
    /// The request was decided; this is its response.
    Completed(StoredResponse),
}

/// What is known about one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The key.
    pub key: IdempotencyKey,
    /// The operation the key was first used for (`deposit`, ...).
    pub operation: String,
    /// Canonical hash of the first request (operation, path id, body with sorted keys).
    pub request_hash: String,
    /// Running or done.
    pub state: IdempotencyState,
    /// When the record may be forgotten (the TTL).
    pub expires_at: DateTime<Utc>,
}

/// A request to take a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The key.
    pub key: IdempotencyKey,
    /// The operation.
    pub operation: String,
    /// Canonical hash of the request.
    pub request_hash: String,
    /// Identifies this holder.
    pub claim_token: Uuid,
    /// How long the claim holds before others may take it over.
    pub lease_expires_at: DateTime<Utc>,
    /// When the record may be forgotten.
    pub expires_at: DateTime<Utc>,
    /// The caller's clock, for judging expiry of what is stored.
    pub now: DateTime<Utc>,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is ours until the lease expires.
    Claimed,
    /// Someone holds or completed the key; here is what is stored.
    Existing(IdempotencyRecord),
}

/// Completes a claimed key with its response; written alone or inside an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyCompletion {
    /// The key.
    pub key: IdempotencyKey,
    /// The operation.
    pub operation: String,
    /// Canonical hash of the request.
    pub request_hash: String,
    /// The claim this writer holds; the write fails with `IdempotencyClaimLost` if another holds it.
    pub claim_token: Uuid,
    /// The response to replay.
    pub response: StoredResponse,
    /// When the record may be forgotten.
    pub expires_at: DateTime<Utc>,
}

/// The business intent of a money movement, compared when a transaction id is seen again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionIntent {
    /// The account.
    pub account_id: String,
    /// `deposit` or `withdraw`.
    pub operation: String,
    /// The amount in minor units.
    #[serde(with = "minor_string")]
    pub amount_minor: i64,
    /// The currency code.
    pub currency: String,
}

/// A business transaction id, its intent and the response the first command gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionRecord {
    /// The transaction id, unique across the bank.
    pub transaction_id: String,
    /// What it did.
    pub intent: TransactionIntent,
    /// How the first command answered.
    pub response: StoredResponse,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// One atomic append: events at `expected_version + 1 ..` plus guard records.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The stream.
    pub stream_id: String,
    /// The version the writer decided on (0 for a new stream).
    pub expected_version: u64,
    /// Events with versions `expected_version + 1 ..`, consecutive.
    pub events: Vec<EventEnvelope>,
    /// Completes the writer's idempotency claim in the same atomic write.
    pub idempotency: Option<IdempotencyCompletion>,
    /// Records the transaction id in the same atomic write; fails if it exists.
    pub transaction: Option<TransactionRecord>,
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the append.
    pub stream_version: u64,
}

impl AppendRequest {
    /// The stream's version once the append is written.
    pub fn new_version(&self) -> Result<u64, crate::StoreError> {
        let added = u64::try_from(self.events.len()).unwrap_or(u64::MAX);
        self.expected_version
            .checked_add(added)
            .ok_or_else(|| crate::StoreError::Invalid("stream version overflows".to_owned()))
    }

    /// Checks the shape every adapter relies on: a non-empty batch within the limit, for this stream,
    /// with consecutive versions after `expected_version`.
    pub fn validate(&self) -> Result<(), crate::StoreError> {
        if self.events.is_empty() {
            return Err(crate::StoreError::Invalid("an append needs at least one event".to_owned()));
        }
        if self.events.len() > MAX_EVENTS_PER_APPEND {
            return Err(crate::StoreError::LimitExceeded {
                what: "events per append",
                limit: MAX_EVENTS_PER_APPEND,
                actual: self.events.len(),
            });
        }
        for (i, e) in self.events.iter().enumerate() {
            let want = self.expected_version + 1 + i as u64;
            if e.stream_id != self.stream_id || e.version != want {
                return Err(crate::StoreError::Invalid(format!(
                    "event {} of {} has version {}, expected {want}",
                    e.event_id, e.stream_id, e.version
                )));
            }
        }
        Ok(())
    }
}

/// A saved aggregate state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The stream.
    pub stream_id: String,
    /// The version the state was folded to.
    pub version: u64,
    /// The shape of `state`; an unknown shape is ignored (full replay).
    pub schema_version: u32,
    /// The serialised state.
    pub state: serde_json::Value,
}

/// The `account_summary` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    /// The account.
    pub account_id: String,
    /// Its owner.
    pub owner_id: String,
    /// Its currency.
    pub currency: Currency,
    /// Active or frozen.
    pub status: AccountStatus,
    /// Posted balance.
    #[serde(with = "minor_string")]
    pub balance_minor: i64,
    /// Open holds.
    #[serde(with = "minor_string")]
    pub held_minor: i64,
    /// The stream version this row reflects.
    pub version: u64,
    /// Time of the first event.
    pub created_at: DateTime<Utc>,
    /// Time of the last event.
    pub updated_at: DateTime<Utc>,
}

/// One `account_statement` row: one per account event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementEntry {
    /// The event.
    pub event_id: Uuid,
    /// The account.
    pub account_id: String,
    /// The event's stream version.
    pub stream_version: u64,
    /// The event's type.
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Money events: the amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// Money events: the currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// Money events: the transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// Money events: the posted balance after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after_minor: Option<i64>,
    /// Freeze and unfreeze: the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One atomic projection step for one stream: rows and checkpoint move together, and only from the
/// checkpoint the projector read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionChange {
    /// The stream projected.
    pub stream_id: String,
    /// The checkpoint the projector read; the write fails with `CheckpointMoved` otherwise.
    pub expected_checkpoint: u64,
    /// The checkpoint after this change (the last applied version).
    pub new_checkpoint: u64,
    /// The summary row after the change (`None` leaves it absent).
    pub summary: Option<AccountSummary>,
    /// Statement rows to add.
    pub statement: Vec<StatementEntry>,
}

/// Rebuild output for one stream: replaces whatever the read tables held for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionReplacement {
    /// The stream.
    pub stream_id: String,
    /// The account whose rows are replaced.
    pub account_id: String,
    /// The checkpoint after the rebuild.
    pub checkpoint: u64,
    /// The summary row, if the stream holds an account.
    pub summary: Option<AccountSummary>,
    /// Every statement row, in version order.
    pub statement: Vec<StatementEntry>,
}

impl ProjectionReplacement {
    /// Checks that every statement row belongs to the account being replaced.
    pub fn validate(&self) -> Result<(), crate::StoreError> {
        match self.statement.iter().find(|e| e.account_id != self.account_id) {
            Some(foreign) => Err(crate::StoreError::Invalid(format!(
                "statement row of {} in a replacement of {}",
                foreign.account_id, self.account_id
            ))),
            None => Ok(()),
        }
    }
}

/// State of a rebuild-all job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RebuildStatus {
    /// Still going.
    Running,
    /// Every stream was rebuilt.
    Completed,
    /// Stopped on an error.
    Failed,
}

impl RebuildStatus {
    /// The stored (and serialised) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    /// The status a stored name stands for; an unknown name is corrupt data.
    pub fn from_stored(text: &str) -> Result<Self, crate::StoreError> {
        match text {
            "RUNNING" => Ok(Self::Running),
            "COMPLETED" => Ok(Self::Completed),
            "FAILED" => Ok(Self::Failed),
            other => Err(crate::StoreError::Corrupt(format!("unknown rebuild status {other:?}"))),
        }
    }
}

/// Progress of a rebuild-all job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildJob {
    /// The job id.
    pub rebuild_id: String,
    /// Running, completed or failed.
    pub status: RebuildStatus,
    /// Streams rebuilt so far.
    pub streams_rebuilt: u64,
    /// Events replayed so far.
    pub events_replayed: u64,
    /// The last stream rebuilt: a resumed job starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stream_id: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// Where a transfer stands: `PENDING` until it is `COMPLETED`, or `FAILED` once any compensation is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferPhase {
    /// Still moving.
    Pending,
    /// Money moved.
    Completed,
    /// No money moved (any hold was released).
    Failed,
}

impl TransferPhase {
    /// `PENDING`, `COMPLETED` or `FAILED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    /// Reads the stored name back.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(Self::Pending),
            "COMPLETED" => Some(Self::Completed),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Whether a leg's account command was accepted or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LegStatus {
    /// The account took the command.
    Completed,
    /// The account refused it (the transfer's `failureReason` says why).
    Failed,
}

/// One leg of a transfer as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferLegStatus {
    /// `hold`, `credit`, `capture` or `release`.
    pub leg: Leg,
    /// Done or refused.
    pub status: LegStatus,
    /// When the transfer recorded it (the time of the recording event).
    pub at: DateTime<Utc>,
}

/// The `transfer_status` row: one per transfer. Its `version` is the last transfer event applied, and
/// serves as the row's projection checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferStatus {
    /// The transfer.
    pub transfer_id: String,
    /// Pending, completed or failed.
    pub status: TransferPhase,
    /// A failed transfer's reason code (`INSUFFICIENT_FUNDS`, `ACCOUNT_NOT_FOUND`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Debited account.
    pub source_account_id: String,
    /// Credited account.
    pub destination_account_id: String,
    /// The amount in minor units.
    #[serde(with = "minor_string")]
    pub amount_minor: i64,
    /// The currency.
    pub currency: Currency,
    /// Legs recorded so far, in order.
    pub legs: Vec<TransferLegStatus>,
    /// The transfer stream version this row reflects.
    pub version: u64,
    /// Time of the request.
    pub created_at: DateTime<Utc>,
    /// Time of the last event.
    pub updated_at: DateTime<Utc>,
}

impl TransferStatus {
    /// The first `limit` of `rows` by oldest update (then transfer id): the order
    /// [`TransferStatusStore::pending`](crate::TransferStatusStore::pending) answers in, for adapters
    /// that filter in memory.
    pub fn oldest_updates_first(mut rows: Vec<TransferStatus>, limit: usize) -> Vec<TransferStatus> {
        rows.sort_by(|a, b| (a.updated_at, &a.transfer_id).cmp(&(b.updated_at, &b.transfer_id)));
        rows.truncate(limit);
        rows
    }
}

/// The most parked records one listing answers, and the page size a retry walks a stream by.
pub const PARKED_PAGE_MAX: usize = 1000;

/// A consumer of the event topics that parks what it cannot handle: each keeps its own parked streams,
/// so a record the saga parks still reaches the read side and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParkedConsumer {
    /// The projection (consumer group `corebank-projector-accounts`).
    Projector,
    /// The transfer saga (consumer group `corebank-transfer-saga`).
    Saga,
}

impl ParkedConsumer {
    /// Both consumers.
    pub const ALL: [ParkedConsumer; 2] = [Self::Projector, Self::Saga];

    /// The stored (and serialised) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Projector => "projector",
            Self::Saga => "saga",
        }
    }

    /// The consumer a name stands for, `None` for any other name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "projector" => Some(Self::Projector),
            "saga" => Some(Self::Saga),
            _ => None,
        }
    }

    /// The consumer a stored name stands for; an unknown name is corrupt data.
    pub fn from_stored(text: &str) -> Result<Self, crate::StoreError> {
        Self::parse(text)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("unknown parked consumer {text:?}")))
    }
}

/// What a parked record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParkedKind {
    /// An event envelope that decoded but was not handled: the payload is the envelope's JSON.
    Envelope,
    /// A record that did not decode: the payload is its value as delivered (base64 text, empty when
    /// the record had no value), and the stream key is `topic-partition@offset`.
    Undecodable,
}

impl ParkedKind {
    /// The stored (and serialised) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Envelope => "ENVELOPE",
            Self::Undecodable => "UNDECODABLE",
        }
    }

    /// The kind a stored name stands for; an unknown name is corrupt data.
    pub fn from_stored(text: &str) -> Result<Self, crate::StoreError> {
        match text {
            "ENVELOPE" => Ok(Self::Envelope),
            "UNDECODABLE" => Ok(Self::Undecodable),
            other => Err(crate::StoreError::Corrupt(format!("unknown parked record kind {other:?}"))),
        }
    }
}

/// A record a consumer set aside instead of stalling its partition on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedRecord {
    /// Whose record.
    pub consumer: ParkedConsumer,
    /// The event's stream id, or `topic-partition@offset` for a record that did not decode.
    pub stream_key: String,
    /// The event's version, or the record's offset for a record that did not decode: a stream's
    /// parked records are retried in this order.
    pub position: u64,
    /// What `payload` is.
    pub kind: ParkedKind,
    /// The envelope's JSON, or the undecodable value as delivered.
    pub payload: String,
    /// Why it was parked: the failure, or the record parked ahead of it.
    pub error: String,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

impl ParkedRecord {
    /// The stream key of a record that does not decode.
    pub fn undecodable_key(topic: &str, partition: i64, offset: i64) -> String {
        format!("{topic}-{partition}@{offset}")
    }

    /// `rows` in the order [`ParkedRecordStore::list`](crate::ParkedRecordStore::list) answers (oldest
    /// parked first, then consumer, stream key and position), `offset` skipped, at most `limit`: for
    /// adapters that sort in memory.
    pub fn oldest_first(mut rows: Vec<ParkedRecord>, offset: usize, limit: usize) -> Vec<ParkedRecord> {
        rows.sort_by(|a, b| a.list_order().cmp(&b.list_order()));
        rows.into_iter().skip(offset).take(limit).collect()
    }

    fn list_order(&self) -> (DateTime<Utc>, ParkedConsumer, &str, u64) {
        (self.parked_at, self.consumer, &self.stream_key, self.position)
    }
}

/// How many records are parked and since when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedStats {
    /// Parked records of every consumer.
    pub count: u64,
    /// When the oldest of them was parked; `None` when none is.
    pub oldest_parked_at: Option<DateTime<Utc>>,
}

impl ParkedStats {
    /// The stats of `rows`, for adapters that count in memory.
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a ParkedRecord>) -> Self {
        rows.into_iter().fold(Self::default(), |stats, row| Self {
            count: stats.count + 1,
            oldest_parked_at: Some(stats.oldest_parked_at.map_or(row.parked_at, |t| t.min(row.parked_at))),
        })
    }
}
