//! The command engine: the write side's one path for every aggregate (accounts, transfers).
//!
//! A command runs as: claim its Idempotency-Key (when it has one); answer from a transaction record if
//! its transaction id was seen; load the aggregate (in-process cache, else snapshot + tail); `decide`;
//! append the events together with the idempotency completion and the transaction record in one
//! atomic write; on a version conflict reload and decide again, a bounded number of times with jitter.
//! Decisions (acceptances and business rejections) are stored under the key and replayed; transient
//! failures release the key so the client's retry can run.
//!
//! Two paths share the load, decide and write steps:
//! - [`Engine::execute`] runs a [`GuardedCommand`]: under its guards, with its decision rendered into
//!   the response that is stored and sent;
//! - [`Engine::decide_and_append`] runs a command with no guards and nothing rendered (a process
//!   manager recording a step): the state after it, or the rule that refused it.
//!
//! The engine knows nothing of HTTP: what a decision answers is rendered by the caller (a closure
//! over the API's renderer), because that answer must be stored atomically with the events.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use corebank_backoff::{Attempts, Backoff};
use corebank_domain::{Aggregate, DomainError, EventEnvelope, EventMetadata};
use corebank_store::{
    AppendRequest, ClaimOutcome, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey, IdempotencyState,
    Snapshot, StoreError, StoredResponse, Stores, TransactionIntent, TransactionRecord,
};
use uuid::Uuid;

use crate::{AppConfig, AppError, Clock};

/// The schema version of snapshot state; an unknown one means a full replay.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

const LOCK_SHARDS: usize = 1024;
const CACHE_CAPACITY: usize = 100_000;

/// The Idempotency-Key guard of a command.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyGuard<'a> {
    /// The key namespace (`accounts`, `transfers`).
    pub scope: &'a str,
    /// The key.
    pub key: &'a str,
    /// The operation's stable name.
    pub operation: &'a str,
    /// The canonical hash of the request.
    pub request_hash: &'a str,
}

/// The transaction-record guard of a command: its business transaction id and intent.
#[derive(Debug, Clone)]
pub struct TransactionGuard<'a> {
    /// The transaction id, unique across the bank.
    pub transaction_id: &'a str,
    /// What it does; a second use with another intent is a conflict.
    pub intent: TransactionIntent,
}

/// What a command is guarded by besides the stream version.
#[derive(Debug, Clone, Default)]
pub struct Guards<'a> {
    /// Replays the first decision under a key.
    pub idempotency: Option<IdempotencyGuard<'a>>,
    /// Makes a money movement happen at most once.
    pub transaction: Option<TransactionGuard<'a>>,
}

/// A decision to render into the response that is stored and sent.
#[derive(Debug)]
pub enum Decided<'a, S> {
    /// Accepted: the state after the command, the stream version and the ids of the events written
    /// (none when the command changed nothing, such as repeating a transfer request).
    Accepted {
        /// The aggregate after the command.
        state: &'a S,
        /// The stream version after the command.
        version: u64,
        /// The events written.
        event_ids: &'a [Uuid],
    },
    /// Refused by a decision (`AppError::is_decision`).
    Rejected(&'a AppError),
}

/// Renders a decision into its stored response.
pub type Render<'r, S> = dyn Fn(Decided<'_, S>) -> StoredResponse + Send + Sync + 'r;

/// A command run under its guards, whose decision is rendered into the response that is stored and
/// sent.
pub struct GuardedCommand<'a, A: Aggregate> {
    /// The Idempotency-Key and transaction-record guards.
    pub guards: Guards<'a>,
    /// The aggregate's stream.
    pub stream_id: &'a str,
    /// The command.
    pub command: &'a A::Command,
    /// What the events record about who and what caused them.
    pub metadata: &'a EventMetadata,
    /// Renders the decision.
    pub render: &'a Render<'a, A::State>,
}

impl<A: Aggregate> std::fmt::Debug for GuardedCommand<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedCommand")
            .field("guards", &self.guards)
            .field("stream_id", &self.stream_id)
            .finish_non_exhaustive()
    }
}

/// An Idempotency-Key this request holds: what completes it with the response.
struct Claim {
    key: IdempotencyKey,
    operation: String,
    request_hash: String,
    claim_token: Uuid,
    expires_at: DateTime<Utc>,
}

impl Claim {
    /// The claim on the store: this key, held until `lease_expires_at`.
    fn request(&self, lease_expires_at: DateTime<Utc>, now: DateTime<Utc>) -> IdempotencyClaim {
        IdempotencyClaim {
            key: self.key.clone(),
            operation: self.operation.clone(),
            request_hash: self.request_hash.clone(),
            claim_token: self.claim_token,
            lease_expires_at,
            expires_at: self.expires_at,
            now,
        }
    }

    fn completion(&self, response: StoredResponse) -> IdempotencyCompletion {
        IdempotencyCompletion {
            key: self.key.clone(),
            operation: self.operation.clone(),
            request_hash: self.request_hash.clone(),
            claim_token: self.claim_token,
            response,
            expires_at: self.expires_at,
        }
    }
}

/// A guarded command once its key is held (or when it has none), stamped with the time of its start.
struct Claimed<'c, 'a, A: Aggregate> {
    command: &'c GuardedCommand<'a, A>,
    claim: Option<Claim>,
    now: DateTime<Utc>,
}

/// What `decide` made of a command on the current state.
enum Decision<A: Aggregate> {
    /// A rule refused it.
    Refused(DomainError),
    /// Accepted with nothing to write (a repeated, already recorded step).
    Unchanged {
        /// The state, as loaded.
        state: A::State,
        /// Its version.
        version: u64,
    },
    /// Accepted with events to append.
    Append(Pending<A>),
}

/// Events to append at the version they were decided on, and the state they lead to.
struct Pending<A: Aggregate> {
    expected_version: u64,
    envelopes: Vec<EventEnvelope>,
    new_state: A::State,
}

impl<A: Aggregate> Pending<A> {
    fn new_version(&self) -> u64 {
        self.expected_version + self.envelopes.len() as u64
    }

    fn event_ids(&self) -> Vec<Uuid> {
        self.envelopes.iter().map(|e| e.event_id).collect()
    }
}

/// How one pass of a guarded command ended.
enum GuardedPass {
    /// The response to send, stored.
    Answered(StoredResponse),
    /// Another writer appended first: decide again.
    VersionConflict,
    /// The transaction id was recorded between the check and the append: answer from its record.
    TransactionSeen,
}

/// How one pass of an unguarded command ended.
enum PlainPass<S> {
    /// The state after the command, or the rule that refused it.
    Decided(Result<S, DomainError>),
    /// Another writer appended first: decide again.
    VersionConflict,
}

/// Loads, decides and appends commands of one aggregate type, under the idempotency and transaction
/// contracts.
pub struct Engine<A: Aggregate> {
    config: Arc<AppConfig>,
    stores: Stores,
    clock: Arc<dyn Clock>,
    // Commands on one stream are serialised inside a process, so in-process writers never conflict;
    // writers in other processes are handled by optimistic concurrency and retries.
    locks: Vec<tokio::sync::Mutex<()>>,
    // A fixed hasher: shard choice only spreads load, and a fixed one keeps a seeded simulation's
    // schedule the same from run to run.
    hasher: BuildHasherDefault<DefaultHasher>,
    // The last known state per stream. Only ever a starting point: the tail is always read, and the
    // append is conditional, so a stale entry costs a retry, never correctness.
    cache: Mutex<HashMap<String, A::State>>,
}

impl<A: Aggregate> std::fmt::Debug for Engine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl<A: Aggregate> Engine<A> {
    /// Builds an engine over the stores.
    pub fn new(config: Arc<AppConfig>, stores: Stores, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            stores,
            clock,
            locks: (0..LOCK_SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: BuildHasherDefault::default(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The clock commands are stamped with.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs one command under its guards and returns the response to send (fresh or replayed).
    /// Errors are failures that were not stored: the caller may retry them.
    pub async fn execute(&self, command: &GuardedCommand<'_, A>) -> Result<StoredResponse, AppError> {
        let now = self.clock.now();
        let Some(idem) = command.guards.idempotency else {
            return self.run_claimed(&Claimed { command, claim: None, now }).await;
        };
        let key = IdempotencyKey { scope: idem.scope.to_owned(), key: idem.key.to_owned() };
        let claim = Claim {
            key,
            operation: idem.operation.to_owned(),
            request_hash: idem.request_hash.to_owned(),
            claim_token: Uuid::new_v4(),
            expires_at: now + chrono::Duration::seconds(self.config.idempotency_ttl_secs),
        };
        let lease_expires_at = now + chrono::Duration::seconds(self.config.idempotency_lease_secs);
        match self.stores.idempotency.claim(claim.request(lease_expires_at, now)).await? {
            ClaimOutcome::Claimed => {}
            ClaimOutcome::Existing(record) => {
                if record.request_hash != idem.request_hash {
                    return Err(AppError::IdempotencyKeyReused);
                }
                return match record.state {
                    IdempotencyState::Completed(response) => {
                        metrics::counter!(crate::telemetry::IDEMPOTENT_REPLAYS).increment(1);
                        Ok(response)
                    }
                    IdempotencyState::InProgress { .. } => Err(AppError::IdempotencyInProgress),
                };
            }
        }
        let (key, claim_token) = (claim.key.clone(), claim.claim_token);
        match self.run_claimed(&Claimed { command, claim: Some(claim), now }).await {
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

    /// Decides and appends a command that needs no guards (a process manager recording a step):
    /// the state after it, or the rule that refused it. Nothing is stored for a refusal.
    pub async fn decide_and_append(
        &self,
        stream_id: &str,
        command: &A::Command,
        metadata: &EventMetadata,
    ) -> Result<Result<A::State, DomainError>, AppError> {
        let now = self.clock.now();
        let _serialised = self.locks[self.shard(stream_id)].lock().await;
        let mut attempts = self.attempts();
        loop {
            let decision = self.decide(stream_id, command, metadata, now).await?;
            match self.pass_plain(stream_id, decision).await? {
                PlainPass::Decided(outcome) => return Ok(outcome),
                PlainPass::VersionConflict => pause(&mut attempts).await?,
            }
        }
    }

    async fn run_claimed(&self, run: &Claimed<'_, '_, A>) -> Result<StoredResponse, AppError> {
        let cmd = run.command;
        let _serialised = self.locks[self.shard(cmd.stream_id)].lock().await;
        let mut attempts = self.attempts();
        loop {
            if let Some(tx) = &cmd.guards.transaction
                && let Some(response) = self.answer_from_transaction(run, tx).await?
            {
                return Ok(response);
            }
            match self.pass_guarded(run).await? {
                GuardedPass::Answered(response) => return Ok(response),
                GuardedPass::TransactionSeen => {
                    // The transaction record appeared between our check and our append: the next
                    // pass answers from it, at once. Counted, so a misbehaving store cannot loop us
                    // forever.
                    if attempts.failed().is_none() {
                        return Err(AppError::ConcurrencyConflict);
                    }
                }
                GuardedPass::VersionConflict => pause(&mut attempts).await?,
            }
        }
    }

    /// The tries a command gets against version conflicts: `RETRY_ATTEMPTS_MAX` in all, pausing
    /// anywhere up to 2^n ms after the n-th conflict, at most `RETRY_BACKOFF_MAX_MS` (full jitter:
    /// the writers of one hot stream race, and the sooner one of them wins the better).
    fn attempts(&self) -> Attempts {
        let backoff = Backoff::from_millis(2, self.config.retry_backoff_max_ms).full_jitter();
        Attempts::new(backoff, self.config.retry_attempts_max)
    }

    /// When the transaction id is recorded, answers as the first command did (same intent) or with a
    /// stored `TRANSACTION_ID_CONFLICT` (another intent).
    async fn answer_from_transaction(
        &self,
        run: &Claimed<'_, '_, A>,
        tx: &TransactionGuard<'_>,
    ) -> Result<Option<StoredResponse>, AppError> {
        let Some(record) = self.stores.events.transaction(tx.transaction_id).await? else { return Ok(None) };
        let response = if record.intent == tx.intent {
            metrics::counter!(crate::telemetry::IDEMPOTENT_REPLAYS).increment(1);
            record.response
        } else {
            (run.command.render)(Decided::Rejected(&AppError::TransactionIdConflict))
        };
        self.answer(run, response).await.map(Some)
    }

    /// Stores a response that is sent without an append under the request's key, if it holds one.
    async fn answer(
        &self,
        run: &Claimed<'_, '_, A>,
        response: StoredResponse,
    ) -> Result<StoredResponse, AppError> {
        if let Some(claim) = &run.claim {
            self.stores.idempotency.complete(claim.completion(response.clone())).await?;
        }
        Ok(response)
    }

    /// One pass of a guarded command: decide, render, and append the events with the idempotency
    /// completion and the transaction record (or store the answer alone when nothing is appended).
    async fn pass_guarded(&self, run: &Claimed<'_, '_, A>) -> Result<GuardedPass, AppError> {
        let cmd = run.command;
        let pending = match self.decide(cmd.stream_id, cmd.command, cmd.metadata, run.now).await? {
            Decision::Refused(rule) => {
                let response = (cmd.render)(Decided::Rejected(&AppError::Domain(rule)));
                return Ok(GuardedPass::Answered(self.answer(run, response).await?));
            }
            // Nothing changes: nothing to append, and nothing to guard, since no money moves.
            Decision::Unchanged { state, version } => {
                let response = (cmd.render)(Decided::Accepted { state: &state, version, event_ids: &[] });
                return Ok(GuardedPass::Answered(self.answer(run, response).await?));
            }
            Decision::Append(pending) => pending,
        };
        let response = (cmd.render)(Decided::Accepted {
            state: &pending.new_state,
            version: pending.new_version(),
            event_ids: &pending.event_ids(),
        });
        let transaction = cmd.guards.transaction.as_ref().map(|tx| TransactionRecord {
            transaction_id: tx.transaction_id.to_owned(),
            intent: tx.intent.clone(),
            response: response.clone(),
            recorded_at: run.now,
        });
        let idempotency = run.claim.as_ref().map(|claim| claim.completion(response.clone()));
        match self.write(cmd.stream_id, pending, idempotency, transaction).await {
            Ok(_) => Ok(GuardedPass::Answered(response)),
            Err(StoreError::VersionConflict { .. }) => Ok(GuardedPass::VersionConflict),
            Err(StoreError::TransactionExists { .. }) => Ok(GuardedPass::TransactionSeen),
            Err(e) => Err(e.into()),
        }
    }

    /// One pass of an unguarded command: decide and append the events alone.
    async fn pass_plain(
        &self,
        stream_id: &str,
        decision: Decision<A>,
    ) -> Result<PlainPass<A::State>, AppError> {
        let pending = match decision {
            Decision::Refused(rule) => return Ok(PlainPass::Decided(Err(rule))),
            Decision::Unchanged { state, .. } => return Ok(PlainPass::Decided(Ok(state))),
            Decision::Append(pending) => pending,
        };
        match self.write(stream_id, pending, None, None).await {
            Ok(state) => Ok(PlainPass::Decided(Ok(state))),
            Err(StoreError::VersionConflict { .. }) => Ok(PlainPass::VersionConflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the stream and decides the command on it; accepted events become envelopes stamped
    /// with `now` and `metadata`.
    async fn decide(
        &self,
        stream_id: &str,
        command: &A::Command,
        metadata: &EventMetadata,
        now: DateTime<Utc>,
    ) -> Result<Decision<A>, AppError> {
        let state = self.load(stream_id).await?;
        let events = match A::decide(&state, command) {
            Ok(events) => events,
            Err(rule) => return Ok(Decision::Refused(rule)),
        };
        let version = A::version(&state);
        if events.is_empty() {
            return Ok(Decision::Unchanged { state, version });
        }
        let envelopes = events
            .iter()
            .zip(version + 1..)
            .map(|(event, version)| EventEnvelope {
                // Time-ordered (UUIDv7): each store's unique index of event ids then grows at its
                // end, as the events do, instead of taking every new id on a random page.
                event_id: Uuid::now_v7(),
                stream_id: stream_id.to_owned(),
                version,
                event_type: A::event_type(event).to_owned(),
                schema_version: A::SCHEMA_VERSION,
                occurred_at: now,
                payload: A::payload(event),
                metadata: metadata.clone(),
            })
            .collect();
        let new_state = events.iter().fold(state, A::evolve);
        Ok(Decision::Append(Pending { expected_version: version, envelopes, new_state }))
    }

    /// Appends decided events with their guard records; the cache follows what the store answered.
    async fn write(
        &self,
        stream_id: &str,
        pending: Pending<A>,
        idempotency: Option<IdempotencyCompletion>,
        transaction: Option<TransactionRecord>,
    ) -> Result<A::State, StoreError> {
        let request = AppendRequest {
            stream_id: stream_id.to_owned(),
            expected_version: pending.expected_version,
            events: pending.envelopes,
            idempotency,
            transaction,
        };
        match self.stores.events.append(request).await {
            Ok(_) => {
                self.after_append(stream_id, pending.new_state.clone());
                Ok(pending.new_state)
            }
            // The stream is as we read it; only the transaction id was taken.
            Err(e @ StoreError::TransactionExists { .. }) => Err(e),
            Err(e) => {
                self.forget(stream_id);
                Err(e)
            }
        }
    }

    /// The current state of a stream: cached or snapshot state plus the stored tail.
    pub async fn load(&self, stream_id: &str) -> Result<A::State, AppError> {
        let cached = self.cache_lock().get(stream_id).cloned();
        let base = match cached {
            Some(state) => state,
            None => self.load_snapshot(stream_id).await,
        };
        let tail = self.stores.events.load_stream(stream_id, A::version(&base)).await?;
        let mut state = base;
        for envelope in &tail {
            if envelope.version != A::version(&state) + 1 {
                return Err(AppError::Corrupt(format!(
                    "{stream_id}: version {} follows {}",
                    envelope.version,
                    A::version(&state)
                )));
            }
            state = A::evolve(state, &decode::<A>(envelope)?);
        }
        Ok(state)
    }

    /// The state as the in-process cache holds it when `settled` says it already carries what the
    /// caller reads, else [`Engine::load`]. A cached state may be behind the stream's head, so only
    /// facts that never change once written may be read from it (an account's owner, a transfer's
    /// terms): no store round trip for them on a warm cache.
    pub async fn load_settled(
        &self,
        stream_id: &str,
        settled: impl Fn(&A::State) -> bool,
    ) -> Result<A::State, AppError> {
        if let Some(state) = self.cache_lock().get(stream_id).filter(|s| settled(s)).cloned() {
            return Ok(state);
        }
        self.load(stream_id).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> A::State {
        match self.stores.snapshots.load(stream_id).await {
            Ok(Some(s)) if s.schema_version == SNAPSHOT_SCHEMA_VERSION => {
                match serde_json::from_value::<A::State>(s.state) {
                    Ok(state) if A::version(&state) == s.version => state,
                    _ => {
                        tracing::warn!(stream_id, "unreadable snapshot ignored; replaying the stream");
                        A::State::default()
                    }
                }
            }
            Ok(_) => A::State::default(),
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "snapshot load failed; replaying the stream");
                A::State::default()
            }
        }
    }

    fn after_append(&self, stream_id: &str, state: A::State) {
        let every = self.config.snapshot_every_versions.max(1);
        let version = A::version(&state);
        if version.is_multiple_of(every) {
            let snapshots = self.stores.snapshots.clone();
            if let Ok(value) = serde_json::to_value(&state) {
                let snapshot = Snapshot {
                    stream_id: stream_id.to_owned(),
                    version,
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

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, A::State>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard(&self, stream_id: &str) -> usize {
        (self.hasher.hash_one(stream_id) % LOCK_SHARDS as u64) as usize
    }
}

/// Pauses before the next try, or gives up with `CONCURRENCY_CONFLICT` when none is left.
async fn pause(attempts: &mut Attempts) -> Result<(), AppError> {
    let Some(delay) = attempts.failed() else {
        metrics::counter!(crate::telemetry::CONCURRENCY_CONFLICTS).increment(1);
        return Err(AppError::ConcurrencyConflict);
    };
    metrics::counter!(crate::telemetry::CONCURRENCY_RETRIES).increment(1);
    tokio::time::sleep(delay).await;
    Ok(())
}

/// Decodes a stored event of aggregate `A`.
pub fn decode<A: Aggregate>(envelope: &EventEnvelope) -> Result<A::Event, AppError> {
    A::decode(&envelope.event_type, envelope.schema_version, &envelope.payload)
        .map_err(|e| AppError::Corrupt(format!("{} v{}: {e}", envelope.stream_id, envelope.version)))
}
