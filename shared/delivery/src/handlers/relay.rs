//! The Postgres outbox relay: publishes `outbox_events` rows to the bus, in each stream's order.
//!
//! One cycle ([`Relay::relay_batch`]) claims a batch ([`PgOutbox::claim`]: `FOR UPDATE SKIP LOCKED`,
//! in position order, under a lease), hands it to the [`EventPublisher`] in one call, and settles every
//! row from its own outcome:
//!
//! | outcome | what happens to the row |
//! | --- | --- |
//! | acknowledged | marked published |
//! | retryable failure (broker down, timeout) | `attempts + 1`, `last_error`, claimable again after an exponential, jittered backoff capped at [`RelayConfig::backoff_max`], for as long as it takes: a transient failure never dead-letters a row. From [`RelayConfig::alert_after_attempts`] on, health reports the row as stuck (degraded). |
//! | permanent failure (the bus refuses the message itself) | dead-lettered at once |
//! | a later row of a stream whose earlier row failed in this batch | given back without counting an attempt |
//!
//! # Order
//! The claim only hands out a prefix of each stream's unpublished rows, and a failed row holds back
//! the rest of its stream (its backoff, its lease or its dead letter), so version N+1 of a stream is
//! never published before N. A dead-lettered row therefore blocks its stream's later rows until an
//! operator requeues it ([`PgOutbox::requeue_dead_letters`]); that is by design, and it shows in
//! [`RelayMetrics`] and health.
//!
//! # A cycle that fails half way
//! When the database fails after a batch was handed to the bus (a restart, a dropped connection),
//! the cycle keeps what it had still to write (published, failed, given back) and writes it first
//! in the next cycle, so its rows are not left waiting for their lease to run out; each part is
//! written once.
//!
//! # Crashes
//! A relay that dies after claiming keeps its rows only until the lease ([`RelayConfig::lease`]) ends;
//! another relay then takes them over. Rows the dead relay had already handed to the bus are published
//! again (at-least-once; consumers skip what their checkpoint has seen), never out of order. The lease
//! must be longer than the publisher's own delivery bound (`KAFKA_MESSAGE_TIMEOUT_MS`), so that a
//! live relay settles its batch before anyone may take it over.
//!
//! # Hosts
//! - [`Relay::run`]: a long-running task (the local runner). `NOTIFY corebank_events` (sent by every
//!   append) wakes it at once through the event store's feed head ([`Relay::with_wakeup`]); a fallback
//!   poll ([`RelayConfig::poll_interval`]) covers lost notifications and retries coming due.
//! - [`Relay::drain`]: publish until nothing is pending or a deadline: the scheduled Lambda
//!   (`functions/outbox-relay`).
//!
//! Both also delete published rows older than [`RelayConfig::retention`], in small batches.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use corebank_app::ConfigError;
use corebank_app::read_side::PipelineHealth;
use corebank_backoff::Backoff;
use corebank_domain::EventEnvelope;
use corebank_messaging::{EventPublisher, PublishError};
use corebank_store::StoreError;
use corebank_store::postgres::{MAX_CLAIM_BATCH, OutboxStats, PgOutbox, RetryLater};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest pause after a failed cycle (the database was unreachable).
const ERROR_PAUSE_MAX: Duration = Duration::from_secs(5);

/// How often [`Relay::run`] re-reads the backlog for health and metrics, beside the cycles (so the
/// figure stays fresh while a publish waits on a broker that is away).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// How the relay claims, retries and cleans up. Every field has a limit and a default; see
/// [`RelayConfig::from_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Rows per claim (and per publish call), 1..=[`MAX_CLAIM_BATCH`].
    pub batch_size: usize,
    /// How long a claim holds its rows before another relay may take them over.
    pub lease: Duration,
    /// Failed attempts after which health reports a row as stuck (at least 1). The relay keeps
    /// retrying it: only a message the bus refuses for what it is is dead-lettered.
    pub alert_after_attempts: u32,
    /// Backoff after the first failure; it doubles per failure.
    pub backoff_initial: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Fallback poll when no notification arrives.
    pub poll_interval: Duration,
    /// How long published rows are kept before deletion.
    pub retention: Duration,
    /// Rows deleted per statement.
    pub cleanup_batch: usize,
    /// How often [`Relay::run`] deletes expired rows.
    pub cleanup_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            lease: Duration::from_secs(60),
            alert_after_attempts: 20,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(24 * 3600),
            cleanup_batch: 500,
            cleanup_interval: Duration::from_secs(60),
        }
    }
}

impl RelayConfig {
    /// Reads the process environment; see [`RelayConfig::from_lookup`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`; unset or blank variables keep their defaults:
    ///
    /// | variable | default | limit |
    /// | --- | --- | --- |
    /// | `RELAY_BATCH_SIZE` | 256 | 1..=1000 |
    /// | `RELAY_LEASE_SECS` | 60 | ≥ 1; keep it above `KAFKA_MESSAGE_TIMEOUT_MS` |
    /// | `RELAY_ALERT_AFTER_ATTEMPTS` | 20 | ≥ 1 |
    /// | `RELAY_BACKOFF_INITIAL_MS` | 200 | ≥ 1 |
    /// | `RELAY_BACKOFF_MAX_MS` | 300000 | ≥ `RELAY_BACKOFF_INITIAL_MS` |
    /// | `RELAY_POLL_INTERVAL_MS` | 500 | ≥ 1 |
    /// | `RELAY_RETENTION_SECS` | 86400 | any |
    /// | `RELAY_CLEANUP_BATCH` | 500 | 1..=10000 |
    /// | `RELAY_CLEANUP_INTERVAL_SECS` | 60 | ≥ 1 |
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            let Some(raw) = lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
                return Ok(default);
            };
            let invalid = |reason: String| ConfigError { name: name.to_owned(), reason };
            let value: u64 = raw.parse().map_err(|e: std::num::ParseIntError| invalid(e.to_string()))?;
            if !(min..=max).contains(&value) {
                return Err(invalid(format!("{value} is outside {min}..={max}")));
            }
            Ok(value)
        };
        let d = Self::default();
        let secs = |d: Duration| d.as_secs();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let max_batch = u64::try_from(MAX_CLAIM_BATCH).unwrap_or(u64::MAX);
        let batch = get("RELAY_BATCH_SIZE", d.batch_size as u64, 1, max_batch)?;
        let backoff_initial = get("RELAY_BACKOFF_INITIAL_MS", ms(d.backoff_initial), 1, u64::MAX)?;
        let config = Self {
            batch_size: usize::try_from(batch).unwrap_or(MAX_CLAIM_BATCH),
            lease: Duration::from_secs(get("RELAY_LEASE_SECS", secs(d.lease), 1, u64::MAX)?),
            alert_after_attempts: u32::try_from(get(
                "RELAY_ALERT_AFTER_ATTEMPTS",
                u64::from(d.alert_after_attempts),
                1,
                u64::from(u32::MAX),
            )?)
            .unwrap_or(u32::MAX),
            backoff_initial: Duration::from_millis(backoff_initial),
            backoff_max: Duration::from_millis(get(
                "RELAY_BACKOFF_MAX_MS",
                ms(d.backoff_max).max(backoff_initial),
                backoff_initial,
                u64::MAX,
            )?),
            poll_interval: Duration::from_millis(get(
                "RELAY_POLL_INTERVAL_MS",
                ms(d.poll_interval),
                1,
                u64::MAX,
            )?),
            retention: Duration::from_secs(get("RELAY_RETENTION_SECS", secs(d.retention), 0, u64::MAX)?),
            cleanup_batch: usize::try_from(get("RELAY_CLEANUP_BATCH", d.cleanup_batch as u64, 1, 10_000)?)
                .unwrap_or(d.cleanup_batch),
            cleanup_interval: Duration::from_secs(get(
                "RELAY_CLEANUP_INTERVAL_SECS",
                secs(d.cleanup_interval),
                1,
                u64::MAX,
            )?),
        };
        Ok(config)
    }

    /// The pause before the next try of a row that has now failed `attempts` times: doubling from
    /// [`RelayConfig::backoff_initial`], capped at [`RelayConfig::backoff_max`], the upper half
    /// jittered so that rows failing together do not come due together.
    pub fn backoff(&self, attempts: u32) -> Duration {
        Backoff::new(self.backoff_initial, self.backoff_max).delay(attempts)
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Rows claimed.
    pub claimed: u64,
    /// Rows acknowledged by the bus and marked published.
    pub published: u64,
    /// Rows that failed and will be retried after their backoff.
    pub failed: u64,
    /// Rows dead-lettered.
    pub dead_lettered: u64,
    /// Rows given back untried (held behind an earlier failure of their stream).
    pub released: u64,
}

/// Why [`Relay::drain`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DrainStop {
    /// Nothing is pending (dead-lettered rows and the rows behind them aside).
    Empty,
    /// The deadline came first.
    Deadline,
    /// Everything pending is backing off past the deadline.
    Backoff,
}

/// The summary of one [`Relay::drain`]: the scheduled Lambda's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    /// Rows published by this drain.
    pub published: u64,
    /// Failed attempts recorded by this drain (rows to be retried).
    pub failed: u64,
    /// Rows this drain dead-lettered.
    pub dead_lettered: u64,
    /// Claims made.
    pub batches: u64,
    /// Expired published rows deleted.
    pub deleted: u64,
    /// Idempotency records deleted an hour or more after their TTL.
    pub expired_keys_deleted: u64,
    /// Rows still pending at the end (dead-lettered and blocked rows aside).
    pub remaining: u64,
    /// Dead-lettered rows in the outbox at the end, from any run.
    pub dead_lettered_total: u64,
    /// Rows waiting behind a dead-lettered row of their stream.
    pub blocked: u64,
    /// Why it stopped.
    pub stopped: DrainStop,
}

/// Counters since the relay started, and the last backlog it saw: metrics and health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayMetrics {
    /// Rows published.
    pub published: u64,
    /// Failed attempts recorded.
    pub failed: u64,
    /// Rows dead-lettered by this relay.
    pub dead_lettered: u64,
    /// Claims that returned rows.
    pub batches: u64,
    /// Expired published rows deleted.
    pub deleted: u64,
    /// Idempotency records deleted an hour or more after their TTL.
    pub expired_keys_deleted: u64,
    /// The last failure (publishing or the database), cleared by a clean cycle.
    pub last_error: Option<String>,
    /// The outbox as last read (after an idle cycle, and at the end of a drain).
    pub outbox: Option<OutboxStats>,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    batches: AtomicU64,
    deleted: AtomicU64,
    expired_keys_deleted: AtomicU64,
}

/// What a cycle still has to write about its claimed rows; each part is emptied once written.
#[derive(Debug, Default)]
struct Settlement {
    token: uuid::Uuid,
    published: Vec<u64>,
    retry: Vec<RetryLater>,
    dead: Vec<(u64, String)>,
    held: Vec<u64>,
}

impl Settlement {
    fn is_done(&self) -> bool {
        self.published.is_empty() && self.retry.is_empty() && self.dead.is_empty() && self.held.is_empty()
    }
}

/// Aborts a spawned task when dropped (when [`Relay::run`] returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes the Postgres outbox (see the module docs).
pub struct Relay {
    outbox: PgOutbox,
    publisher: Arc<dyn EventPublisher>,
    config: RelayConfig,
    wake: Option<watch::Receiver<u64>>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    stats: Mutex<Option<OutboxStats>>,
    /// A failed cycle's settlement, written first by the next cycle.
    unsettled: Mutex<Option<Settlement>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay over `outbox` that publishes through `publisher`.
    pub fn new(outbox: PgOutbox, publisher: Arc<dyn EventPublisher>, config: RelayConfig) -> Self {
        Self {
            outbox,
            publisher,
            config,
            wake: None,
            counters: Counters::default(),
            last_error: Mutex::new(None),
            stats: Mutex::new(None),
            unsettled: Mutex::new(None),
        }
    }

    /// Wakes [`Relay::run`] whenever `head` changes: pass the feed head of a
    /// [`PgEventStore`](corebank_store::postgres::PgEventStore) whose listener runs, so that each
    /// append's `NOTIFY` starts a cycle at once.
    pub fn with_wakeup(mut self, head: watch::Receiver<u64>) -> Self {
        self.wake = Some(head);
        self
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// The outbox this relay publishes.
    pub fn outbox(&self) -> &PgOutbox {
        &self.outbox
    }

    /// Counters, the last error and the last backlog seen.
    pub fn metrics(&self) -> RelayMetrics {
        RelayMetrics {
            published: self.counters.published.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dead_lettered: self.counters.dead_lettered.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            deleted: self.counters.deleted.load(Ordering::Relaxed),
            expired_keys_deleted: self.counters.expired_keys_deleted.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
            outbox: lock(&self.stats).clone(),
        }
    }

    /// Reads the backlog and keeps it for [`Relay::metrics`] and health.
    pub async fn refresh_stats(&self) -> Result<OutboxStats, StoreError> {
        let stats = self.outbox.stats().await?;
        metrics::gauge!(corebank_app::telemetry::OUTBOX_BACKLOG).set(stats.pending as f64);
        let age = stats.oldest_pending_at.map_or(0, |at| (chrono::Utc::now() - at).num_seconds().max(0));
        metrics::gauge!(corebank_app::telemetry::OUTBOX_OLDEST_AGE_SECONDS).set(age as f64);
        *lock(&self.stats) = Some(stats.clone());
        Ok(stats)
    }

    /// Writes a settlement's parts in order, emptying each once written, and adds what they did to
    /// `report`. On an error the parts not yet written stay in `settlement`.
    async fn settle(&self, settlement: &mut Settlement, report: &mut BatchReport) -> Result<(), StoreError> {
        let token = settlement.token;
        if !settlement.published.is_empty() {
            report.published += self.outbox.mark_published(token, &settlement.published).await?;
            settlement.published.clear();
        }
        if !settlement.retry.is_empty() {
            // Transient failures are retried for as long as it takes (never dead-lettered).
            metrics::counter!(corebank_app::telemetry::DELIVERY_TRANSIENT_FAILURES, "stage" => "relay")
                .increment(settlement.retry.len() as u64);
            let failures = self.outbox.mark_failed(token, &settlement.retry, u32::MAX).await?;
            report.failed += failures.retrying + failures.dead_lettered;
            report.dead_lettered += failures.dead_lettered;
            settlement.retry.clear();
        }
        if !settlement.dead.is_empty() {
            report.dead_lettered += self.outbox.dead_letter(token, &settlement.dead).await?;
            settlement.dead.clear();
        }
        if !settlement.held.is_empty() {
            report.released += self.outbox.release(token, &settlement.held).await?;
            settlement.held.clear();
        }
        Ok(())
    }

    /// Writes what a failed cycle left unwritten, if anything; an error keeps the rest for the next
    /// try.
    async fn settle_leftover(&self) -> Result<(), StoreError> {
        let Some(mut leftover) = lock(&self.unsettled).take() else { return Ok(()) };
        let mut report = BatchReport::default();
        let result = self.settle(&mut leftover, &mut report).await;
        self.count(&report);
        if !leftover.is_done() {
            *lock(&self.unsettled) = Some(leftover);
        }
        result?;
        tracing::info!(?report, "the settlement of a failed cycle was written");
        Ok(())
    }

    /// One cycle: claim, publish in one call, settle each row by its outcome.
    #[tracing::instrument(level = "debug", name = "relay_batch", skip_all)]
    pub async fn relay_batch(&self) -> Result<BatchReport, StoreError> {
        self.settle_leftover().await?;
        let claim = self.outbox.claim(self.config.batch_size, self.config.lease).await?;
        let mut report = BatchReport { claimed: claim.rows.len() as u64, ..BatchReport::default() };
        if claim.rows.is_empty() {
            return Ok(report);
        }
        let events: Vec<EventEnvelope> = claim.rows.iter().map(|r| r.envelope.clone()).collect();
        let mut outcomes = self.publisher.publish(&events).await.into_iter();

        let mut published = Vec::new();
        let mut retry = Vec::new();
        let mut dead = Vec::new();
        let mut held = Vec::new();
        let mut broken: HashSet<&str> = HashSet::new();
        let mut first_error: Option<String> = None;
        for row in &claim.rows {
            // A publisher that breaks its contract and returns fewer outcomes leaves the rest unknown:
            // try them again.
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(PublishError::Transient { reason: "the publisher returned no outcome".to_owned() })
            });
            let stream = row.envelope.stream_id.as_str();
            match outcome {
                Ok(()) => {
                    if broken.contains(stream) {
                        tracing::warn!(
                            stream_id = stream,
                            version = row.envelope.version,
                            "acknowledged after an earlier event of its stream failed"
                        );
                    }
                    published.push(row.position);
                }
                Err(_) if broken.contains(stream) => held.push(row.position),
                Err(PublishError::EarlierEventFailed { .. }) => {
                    broken.insert(stream);
                    held.push(row.position);
                }
                Err(err) => {
                    broken.insert(stream);
                    let error = err.to_string();
                    first_error.get_or_insert_with(|| error.clone());
                    if err.is_retryable() {
                        let attempts = row.attempts.saturating_add(1);
                        retry.push(RetryLater {
                            position: row.position,
                            error,
                            retry_after: self.config.backoff(attempts),
                        });
                    } else {
                        dead.push((row.position, error));
                    }
                }
            }
        }

        let mut settlement = Settlement { token: claim.token, published, retry, dead, held };
        if let Err(e) = self.settle(&mut settlement, &mut report).await {
            tracing::warn!(error = %e, "settling a published batch failed; the next cycle writes the rest");
            *lock(&self.unsettled) = Some(settlement);
            self.count(&report);
            *lock(&self.last_error) = Some(e.to_string());
            return Err(e);
        }

        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.count(&report);
        if report.dead_lettered > 0 {
            tracing::error!(
                dead_lettered = report.dead_lettered,
                error = first_error.as_deref().unwrap_or_default(),
                "outbox rows dead-lettered; their streams wait until they are requeued"
            );
        } else if let Some(error) = &first_error {
            tracing::warn!(failed = report.failed, %error, "publishing failed; rows will be retried");
        }
        *lock(&self.last_error) = first_error;
        Ok(report)
    }

    fn count(&self, report: &BatchReport) {
        self.counters.published.fetch_add(report.published, Ordering::Relaxed);
        self.counters.failed.fetch_add(report.failed, Ordering::Relaxed);
        self.counters.dead_lettered.fetch_add(report.dead_lettered, Ordering::Relaxed);
    }

    /// Deletes published rows older than the retention, then idempotency records an hour or more
    /// past their TTL, a batch at a time, until none is left or `deadline`; returns (outbox rows,
    /// idempotency records) deleted.
    pub async fn cleanup(&self, deadline: Instant) -> Result<(u64, u64), StoreError> {
        let batch = self.config.cleanup_batch;
        let mut deleted = 0;
        loop {
            let n = self.outbox.delete_published_before(self.config.retention, batch).await?;
            deleted += n;
            self.counters.deleted.fetch_add(n, Ordering::Relaxed);
            if n < batch as u64 || Instant::now() >= deadline {
                break;
            }
        }
        let mut keys = 0;
        while Instant::now() < deadline {
            let n = self.outbox.delete_expired_idempotency_records(batch).await?;
            keys += n;
            self.counters.expired_keys_deleted.fetch_add(n, Ordering::Relaxed);
            if n < batch as u64 {
                break;
            }
        }
        Ok((deleted, keys))
    }

    /// Publishes until nothing is pending or `deadline` passes, then deletes expired rows. A claim
    /// is only started before the deadline; give the deadline a margin of one publish (the
    /// producer's delivery timeout) before the host's own limit.
    pub async fn drain(&self, deadline: Instant) -> Result<DrainReport, StoreError> {
        let mut total = BatchReport::default();
        let mut batches = 0;
        let stopped = loop {
            if Instant::now() >= deadline {
                break DrainStop::Deadline;
            }
            let report = match self.relay_batch().await {
                Ok(report) => report,
                Err(e) => {
                    self.record_error(&e);
                    return Err(e);
                }
            };
            if report.claimed > 0 {
                batches += 1;
                total.published += report.published;
                total.failed += report.failed;
                total.dead_lettered += report.dead_lettered;
                continue;
            }
            let stats = self.refresh_stats().await?;
            if stats.pending == 0 {
                break DrainStop::Empty;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let retry_in =
                stats.next_retry_at.map(|at| (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO));
            if stats.in_flight == 0 && retry_in.is_some_and(|d| d >= left) {
                break DrainStop::Backoff;
            }
            // Rows leased by another relay, or coming due soon: look again shortly.
            let pause = retry_in.unwrap_or(self.config.poll_interval).min(self.config.poll_interval);
            if pause >= left {
                break DrainStop::Deadline;
            }
            tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
        };
        let (deleted, expired_keys_deleted) = self.cleanup(deadline).await?;
        let stats = self.refresh_stats().await?;
        Ok(DrainReport {
            published: total.published,
            failed: total.failed,
            dead_lettered: total.dead_lettered,
            batches,
            deleted,
            expired_keys_deleted,
            remaining: stats.pending,
            dead_lettered_total: stats.dead_lettered,
            blocked: stats.blocked,
            stopped,
        })
    }

    /// Relays until `shutdown` completes: a cycle at once after each append notification, else every
    /// [`RelayConfig::poll_interval`]; a full batch is followed by the next at once. A cycle in
    /// progress when `shutdown` completes is finished first, so no claim is left to its lease.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut wake = self.wake.clone();
        let mut next_cleanup = Instant::now();
        // After failed cycles (the database unreachable): the poll interval doubling to
        // ERROR_PAUSE_MAX, jittered.
        let error_backoff = Backoff::new(self.config.poll_interval, ERROR_PAUSE_MAX);
        let mut failed_cycles = 0;
        // The backlog is read on its own timer, off the publish path: a cycle stuck on a broker that
        // is away does not freeze the figure health reports.
        let _stats = {
            let relay = Arc::clone(&self);
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    if let Err(e) = relay.refresh_stats().await {
                        relay.record_error(&e);
                    }
                    tokio::time::sleep(STATS_INTERVAL).await;
                }
            }))
        };
        loop {
            if Instant::now() >= next_cleanup {
                if let Err(e) = self.cleanup(Instant::now() + Duration::from_secs(1)).await {
                    tracing::warn!(error = %e, "deleting published outbox rows or expired keys failed");
                }
                next_cleanup = Instant::now() + self.config.cleanup_interval;
            }
            if let Some(w) = wake.as_mut() {
                // Appends notified before this cycle are covered by it.
                w.borrow_and_update();
            }
            let pause = match self.relay_batch().await {
                Ok(report) if report.claimed > 0 => {
                    failed_cycles = 0;
                    continue;
                }
                Ok(_) => {
                    failed_cycles = 0;
                    self.config.poll_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay cycle failed");
                    self.record_error(&e);
                    failed_cycles += 1;
                    error_backoff.delay(failed_cycles)
                }
            };
            let notified = async {
                match wake.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            // The store is gone: only the poll is left.
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = notified => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn record_error(&self, error: &StoreError) {
        *lock(&self.last_error) = Some(format!("outbox relay: {error}"));
    }
}

/// A Lambda deadline (wall clock) as a Tokio instant, `margin` earlier.
pub fn deadline_before(deadline: SystemTime, margin: Duration) -> Instant {
    let left = deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Instant::now() + left.saturating_sub(margin)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PipelineHealth for Relay {
    /// Rows waiting to be published (dead-lettered and blocked rows aside), as last read.
    fn lag(&self) -> u64 {
        lock(&self.stats).as_ref().map_or(0, |s| s.pending)
    }

    /// The last failure; dead-lettered rows count as a failure until they are requeued, and a row that
    /// has failed [`RelayConfig::alert_after_attempts`] times as one while it keeps failing.
    fn last_error(&self) -> Option<String> {
        if let Some(stats) = lock(&self.stats)
            .as_ref()
            .filter(|s| s.dead_lettered == 0 && s.max_attempts >= self.config.alert_after_attempts)
        {
            return Some(format!(
                "an outbox row has failed {} times and is still being retried (last error: {})",
                stats.max_attempts,
                lock(&self.last_error).as_deref().unwrap_or("see the relay's log"),
            ));
        }
        if let Some(stats) = lock(&self.stats).as_ref().filter(|s| s.dead_lettered > 0) {
            return Some(format!(
                "{} outbox row(s) dead-lettered (first: stream {}: {}); {} later row(s) of their streams \
                 wait behind them until they are requeued",
                stats.dead_lettered,
                stats.first_dead_letter_stream.as_deref().unwrap_or("?"),
                stats.first_dead_letter_error.as_deref().unwrap_or("?"),
                stats.blocked,
            ));
        }
        lock(&self.last_error).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn every_setting_has_a_default_and_the_environment_overrides_it() {
        assert_eq!(RelayConfig::from_lookup(lookup(&[])).unwrap(), RelayConfig::default());
        let config = RelayConfig::from_lookup(lookup(&[
            ("RELAY_BATCH_SIZE", "10"),
            ("RELAY_LEASE_SECS", "5"),
            ("RELAY_ALERT_AFTER_ATTEMPTS", "3"),
            ("RELAY_BACKOFF_INITIAL_MS", "7"),
            ("RELAY_BACKOFF_MAX_MS", "70"),
            ("RELAY_POLL_INTERVAL_MS", "100"),
            ("RELAY_RETENTION_SECS", "0"),
            ("RELAY_CLEANUP_BATCH", "50"),
            ("RELAY_CLEANUP_INTERVAL_SECS", "2"),
        ]))
        .unwrap();
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.lease, Duration::from_secs(5));
        assert_eq!(config.alert_after_attempts, 3);
        assert_eq!(config.backoff_initial, Duration::from_millis(7));
        assert_eq!(config.backoff_max, Duration::from_millis(70));
        assert_eq!(config.poll_interval, Duration::from_millis(100));
        assert_eq!(config.retention, Duration::ZERO);
        assert_eq!(config.cleanup_batch, 50);
        assert_eq!(config.cleanup_interval, Duration::from_secs(2));
    }

    #[test]
    fn values_outside_their_limits_are_refused_naming_the_variable() {
        for (name, value) in [
            ("RELAY_BATCH_SIZE", "0"),
            ("RELAY_BATCH_SIZE", "1001"),
            ("RELAY_ALERT_AFTER_ATTEMPTS", "0"),
            ("RELAY_LEASE_SECS", "soon"),
            ("RELAY_CLEANUP_BATCH", "0"),
        ] {
            let err = RelayConfig::from_lookup(lookup(&[(name, value)])).unwrap_err();
            assert_eq!(err.name, name, "{name}={value}: {err}");
        }
        let err = RelayConfig::from_lookup(lookup(&[
            ("RELAY_BACKOFF_INITIAL_MS", "100"),
            ("RELAY_BACKOFF_MAX_MS", "10"),
        ]))
        .unwrap_err();
        assert_eq!(err.name, "RELAY_BACKOFF_MAX_MS");
    }
}
