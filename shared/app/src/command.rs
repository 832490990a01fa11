//! The command service: the write side's one path for every account command.
//!
//! A command runs as: claim the Idempotency-Key; answer from a transaction record if the
//! transaction id was seen; load the aggregate (in-process cache, else snapshot + tail); `decide`;
//! append the events together with the idempotency completion and the transaction record in one
//! atomic write; on a version conflict reload and decide again, a bounded number of times with jitter.
//! Decisions (acceptances and business rejections) are stored under the key and replayed; transient
//! failures release the key so the client's retry can run.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_domain::account::{ACCOUNT_EVENT_SCHEMA_VERSION, decide, evolve};
use corebank_domain::{AccountCommand, AccountId, AccountState, EventEnvelope, EventMetadata};
use corebank_store::{
    AppendRequest, ClaimOutcome, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyState,
    Snapshot, StoreError, StoredResponse, Stores, TransactionIntent, TransactionRecord,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::projection::decode;
use crate::{AppConfig, AppError, Clock};

/// The schema version of snapshot state; an unknown one means a full replay.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// Idempotency keys of account commands live in this namespace.
pub const ACCOUNTS_SCOPE: &str = "accounts";

/// The account commands, named as in the idempotency records and transaction intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /accounts`.
    CreateAccount,
    /// `POST /accounts/{id}/deposits`.
    Deposit,
    /// `POST /accounts/{id}/withdrawals`.
    Withdraw,
    /// `POST /accounts/{id}/freeze`.
    Freeze,
    /// `POST /accounts/{id}/unfreeze`.
    Unfreeze,
}

impl Operation {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateAccount => "create-account",
            Self::Deposit => "deposit",
            Self::Withdraw => "withdraw",
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
        }
    }
}

/// What arrives with every command besides the command itself.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The validated Idempotency-Key.
    pub idempotency_key: String,
    /// Canonical hash of the request (see [`request_hash`]).
    pub request_hash: String,
    /// Which command.
    pub operation: Operation,
    /// The request id, used as correlation and causation id.
    pub request_id: String,
    /// The optional actor named by the client.
    pub actor: Option<String>,
}

/// A command that was accepted and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Which command.
    pub operation: Operation,
    /// The account.
    pub account_id: AccountId,
    /// The stream version after the command.
    pub version: u64,
    /// The ids of the events written.
    pub event_ids: Vec<Uuid>,
    /// The command, for renderers that echo fields (create echoes owner and currency).
    pub command: AccountCommand,
}

/// Turns decisions into the HTTP responses that are stored and replayed. Implemented by the API
/// layer, which owns the wire format.
pub trait ResponseRenderer: Send + Sync {
    /// The response of an accepted command.
    fn accepted(&self, accepted: &Accepted) -> StoredResponse;
    /// The response of a command refused by a decision (`AppError::is_decision`).
    fn rejected(&self, error: &AppError) -> StoredResponse;
}

/// The canonical request hash: SHA-256 over the operation, the path's account id and the JSON body
/// with object keys sorted, so that key order and whitespace never matter.
pub fn request_hash(operation: Operation, path_id: Option<&str>, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(operation.as_str().as_bytes());
    h.update([0]);
    h.update(path_id.unwrap_or("").as_bytes());
    h.update([0]);
    // serde_json's map is ordered by key (no `preserve_order`), so this text is canonical.
    h.update(body.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const LOCK_SHARDS: usize = 1024;
const CACHE_CAPACITY: usize = 100_000;

/// The write side's command service.
pub struct CommandService {
    config: Arc<AppConfig>,
    stores: Stores,
    renderer: Arc<dyn ResponseRenderer>,
    clock: Arc<dyn Clock>,
    // Commands on one stream are serialised inside a process, so in-process writers never conflict;
    // writers in other processes are handled by optimistic concurrency and retries.
    locks: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    // The last known state per stream. Only ever a starting point: the tail is always read, and the
    // append is conditional, so a stale entry costs a retry, never correctness.
    cache: Mutex<HashMap<String, AccountState>>,
}

impl std::fmt::Debug for CommandService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService").finish_non_exhaustive()
    }
}

enum Attempt {
    Done(StoredResponse),
    Retry,
    TransactionSeen,
}

impl CommandService {
    /// Builds the service.
    pub fn new(
        config: Arc<AppConfig>,
        stores: Stores,
        renderer: Arc<dyn ResponseRenderer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            stores,
            renderer,
            clock,
            locks: (0..LOCK_SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Runs one account command under the idempotency contract and returns the response to send
    /// (fresh or replayed). Errors are failures that were not stored: the client may retry them.
    #[tracing::instrument(
        level = "debug",
        name = "command",
        skip_all,
        fields(account_id = %account_id, operation = ctx.operation.as_str(), idempotency_key = %ctx.idempotency_key, request_id = %ctx.request_id)
    )]
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        account_id: &AccountId,
        command: &AccountCommand,
    ) -> Result<StoredResponse, AppError> {
        let now = self.clock.now();
        let key = IdempotencyKey { scope: ACCOUNTS_SCOPE.to_owned(), key: ctx.idempotency_key.clone() };
        let claim_token = Uuid::new_v4();
        let claim = IdempotencyClaim {
            key: key.clone(),
            operation: ctx.operation.as_str().to_owned(),
            request_hash: ctx.request_hash.clone(),
            claim_token,
            lease_expires_at: now + chrono::Duration::seconds(self.config.idempotency_lease_secs),
            expires_at: now + chrono::Duration::seconds(self.config.idempotency_ttl_secs),
            now,
        };
        match self.stores.idempotency.claim(claim).await? {
            ClaimOutcome::Claimed => {}
            ClaimOutcome::Existing(record) => {
                if record.request_hash != ctx.request_hash {
                    return Err(AppError::IdempotencyKeyReused);
                }
                return match record.state {
                    IdempotencyState::Completed(response) => Ok(response),
                    IdempotencyState::InProgress { .. } => Err(AppError::IdempotencyInProgress),
                };
            }
        }
        let completion = |response: StoredResponse| IdempotencyCompletion {
            key: key.clone(),
            operation: ctx.operation.as_str().to_owned(),
            request_hash: ctx.request_hash.clone(),
            claim_token,
            response,
            expires_at: now + chrono::Duration::seconds(self.config.idempotency_ttl_secs),
        };
        let outcome = self.run_claimed(ctx, account_id, command, now, &completion).await;
        match outcome {
            Ok(response) => Ok(response),
            Err(AppError::Store(StoreError::IdempotencyClaimLost { .. })) => {
                Err(AppError::IdempotencyInProgress)
            }
            Err(error) => {
                if let Err(release_error) = self.stores.idempotency.release(&key, claim_token).await {
                    // The lease expires on its own; a retry after it succeeds.
                    tracing::warn!(error = %release_error, "could not release idempotency claim");
                }
                Err(error)
            }
        }
    }

    async fn run_claimed(
        &self,
        ctx: &CommandContext,
        account_id: &AccountId,
        command: &AccountCommand,
        now: DateTime<Utc>,
        completion: &(dyn Fn(StoredResponse) -> IdempotencyCompletion + Sync),
    ) -> Result<StoredResponse, AppError> {
        let intent = intent_of(account_id, command, ctx.operation);
        let stream_id = account_id.stream_id();
        let _serialised = self.locks[self.shard(&stream_id)].lock().await;
        let mut attempt = 0;
        loop {
            if let Some(intent) = &intent
                && let Some(response) = self.answer_from_transaction(intent, command, completion).await?
            {
                return Ok(response);
            }
            match self.attempt(ctx, account_id, command, now, &stream_id, intent.as_ref(), completion).await?
            {
                Attempt::Done(response) => return Ok(response),
                Attempt::TransactionSeen => {
                    // The transaction record appeared between our check and our append: the next
                    // pass answers from it. Counted, so a misbehaving store cannot loop us forever.
                    attempt += 1;
                    if attempt >= self.config.retry_attempts_max {
                        return Err(AppError::ConcurrencyConflict);
                    }
                }
                Attempt::Retry => {
                    attempt += 1;
                    if attempt >= self.config.retry_attempts_max {
                        return Err(AppError::ConcurrencyConflict);
                    }
                    let cap = self.config.retry_backoff_max_ms.min(1 << attempt.min(10)).max(1);
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
                }
            }
        }
    }

    /// When the transaction id is recorded, answers as the first command did (same intent) or with a
    /// stored `TRANSACTION_ID_CONFLICT` (another intent).
    async fn answer_from_transaction(
        &self,
        intent: &TransactionIntent,
        command: &AccountCommand,
        completion: &(dyn Fn(StoredResponse) -> IdempotencyCompletion + Sync),
    ) -> Result<Option<StoredResponse>, AppError> {
        let Some(txid) = transaction_id_of(command) else { return Ok(None) };
        let Some(record) = self.stores.events.transaction(txid).await? else { return Ok(None) };
        let response = if &record.intent == intent {
            record.response
        } else {
            self.renderer.rejected(&AppError::TransactionIdConflict)
        };
        self.stores.idempotency.complete(completion(response.clone())).await?;
        Ok(Some(response))
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        ctx: &CommandContext,
        account_id: &AccountId,
        command: &AccountCommand,
        now: DateTime<Utc>,
        stream_id: &str,
        intent: Option<&TransactionIntent>,
        completion: &(dyn Fn(StoredResponse) -> IdempotencyCompletion + Sync),
    ) -> Result<Attempt, AppError> {
        let state = self.load(stream_id).await?;
        let events = match decide(&state, command) {
            Ok(events) => events,
            Err(rule) => {
                let response = self.renderer.rejected(&AppError::Domain(rule));
                self.stores.idempotency.complete(completion(response.clone())).await?;
                return Ok(Attempt::Done(response));
            }
        };
        let metadata = EventMetadata {
            correlation_id: Some(ctx.request_id.clone()),
            causation_id: Some(ctx.request_id.clone()),
            command_id: Some(ctx.idempotency_key.clone()),
            transaction_id: transaction_id_of(command).map(str::to_owned),
            actor: ctx.actor.clone(),
        };
        let envelopes: Vec<EventEnvelope> = events
            .iter()
            .zip(state.version + 1..)
            .map(|(event, version)| EventEnvelope {
                event_id: Uuid::new_v4(),
                stream_id: stream_id.to_owned(),
                version,
                event_type: event.event_type().to_owned(),
                schema_version: ACCOUNT_EVENT_SCHEMA_VERSION,
                occurred_at: now,
                payload: event.payload(),
                metadata: metadata.clone(),
            })
            .collect();
        let new_version = state.version + envelopes.len() as u64;
        let accepted = Accepted {
            operation: ctx.operation,
            account_id: account_id.clone(),
            version: new_version,
            event_ids: envelopes.iter().map(|e| e.event_id).collect(),
            command: command.clone(),
        };
        let response = self.renderer.accepted(&accepted);
        let transaction = match (intent, transaction_id_of(command)) {
            (Some(intent), Some(txid)) => Some(TransactionRecord {
                transaction_id: txid.to_owned(),
                intent: intent.clone(),
                response: response.clone(),
                recorded_at: now,
            }),
            _ => None,
        };
        let request = AppendRequest {
            stream_id: stream_id.to_owned(),
            expected_version: state.version,
            events: envelopes,
            idempotency: Some(completion(response.clone())),
            transaction,
        };
        match self.stores.events.append(request).await {
            Ok(_) => {
                let new_state = events.iter().fold(state, evolve);
                self.after_append(stream_id, new_state);
                Ok(Attempt::Done(response))
            }
            Err(StoreError::VersionConflict { .. }) => {
                self.forget(stream_id);
                Ok(Attempt::Retry)
            }
            Err(StoreError::TransactionExists { .. }) => Ok(Attempt::TransactionSeen),
            Err(e) => {
                self.forget(stream_id);
                Err(e.into())
            }
        }
    }

    /// The current state of a stream: cached or snapshot state plus the stored tail.
    pub async fn load(&self, stream_id: &str) -> Result<AccountState, AppError> {
        let cached = self.cache_lock().get(stream_id).cloned();
        let base = match cached {
            Some(state) => state,
            None => self.load_snapshot(stream_id).await,
        };
        let tail = self.stores.events.load_stream(stream_id, base.version).await?;
        let mut state = base;
        for envelope in &tail {
            if envelope.version != state.version + 1 {
                return Err(AppError::Corrupt(format!(
                    "{stream_id}: version {} follows {}",
                    envelope.version, state.version
                )));
            }
            state = evolve(state, &decode(envelope)?);
        }
        Ok(state)
    }

    async fn load_snapshot(&self, stream_id: &str) -> AccountState {
        match self.stores.snapshots.load(stream_id).await {
            Ok(Some(s)) if s.schema_version == SNAPSHOT_SCHEMA_VERSION => {
                match serde_json::from_value::<AccountState>(s.state) {
                    Ok(state) if state.version == s.version => state,
                    _ => {
                        tracing::warn!(stream_id, "unreadable snapshot ignored; replaying the stream");
                        AccountState::default()
                    }
                }
            }
            Ok(_) => AccountState::default(),
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "snapshot load failed; replaying the stream");
                AccountState::default()
            }
        }
    }

    fn after_append(&self, stream_id: &str, state: AccountState) {
        let every = self.config.snapshot_every_versions.max(1);
        if state.version.is_multiple_of(every) {
            let snapshots = self.stores.snapshots.clone();
            if let Ok(value) = serde_json::to_value(&state) {
                let snapshot = Snapshot {
                    stream_id: stream_id.to_owned(),
                    version: state.version,
                    schema_version: SNAPSHOT_SCHEMA_VERSION,
                    state: value,
                };
                // Off the critical path: a lost snapshot only means a longer replay later.
                tokio::spawn(async move {
                    if let Err(e) = snapshots.save(snapshot).await {
                        tracing::warn!(error = %e, "snapshot save failed");
                    }
                });
            }
        }
        let mut cache = self.cache_lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(stream_id.to_owned(), state);
    }

    fn forget(&self, stream_id: &str) {
        self.cache_lock().remove(stream_id);
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AccountState>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard(&self, stream_id: &str) -> usize {
        (self.hasher.hash_one(stream_id) % LOCK_SHARDS as u64) as usize
    }
}

fn transaction_id_of(command: &AccountCommand) -> Option<&str> {
    match command {
        AccountCommand::Deposit { transaction_id, .. } | AccountCommand::Withdraw { transaction_id, .. } => {
            Some(transaction_id.as_str())
        }
        _ => None,
    }
}

fn intent_of(
    account_id: &AccountId,
    command: &AccountCommand,
    operation: Operation,
) -> Option<TransactionIntent> {
    match command {
        AccountCommand::Deposit { amount, currency, .. }
        | AccountCommand::Withdraw { amount, currency, .. } => Some(TransactionIntent {
            account_id: account_id.as_str().to_owned(),
            operation: operation.as_str().to_owned(),
            amount_minor: amount.minor(),
            currency: currency.code().to_owned(),
        }),
        _ => None,
    }
}
