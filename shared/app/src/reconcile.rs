//! The reconciler: finishes what was left half done. A transfer whose saga delivery stalled (a
//! consumer stopped, a record that failed for good, a crash between steps) stays `PENDING`, its hold
//! keeping the customer's money. The reconciler lists transfers still `PENDING` beyond a bound and
//! drives each from the event store with [`TransferSaga::advance`], exactly as a redelivered event would:
//! every leg is idempotent (a deterministic transaction id and key per leg), so driving a transfer the
//! saga is driving at the same moment is safe, and one already done is left as it is.
//!
//! A pass also walks account streams, `RECONCILE_BATCH_MAX` at a time from where the last pass
//! stopped, and repairs the read side of any whose events stopped short of it: a stream whose last
//! event is older than the bound and above its projection checkpoint is handed to the projector, whose
//! gap repair applies what is missing from the event store (an event the pipeline never delivered).
//!
//! Transfer streams are walked the same way, with a cursor of their own, for the two holes the
//! `PENDING` listing cannot see: a transfer stream with **no status row at all** (its first event
//! never reached the projector, so nothing lists it), and a status row **behind its stream** (a row
//! still `PENDING` at an earlier version while the saga already finished, which the listing would
//! re-drive every pass without the row ever moving). Once the stream's last event is older than the
//! bound, the projector's gap repair brings the row to the stream's head; a transfer that is still not
//! settled is then driven by the saga, and the row brought up to the events the saga wrote. Both
//! steps are the ones a redelivered event takes, so they are safe beside a pipeline that is running.
//!
//! The local runner runs a pass every `RECONCILE_INTERVAL_SECS`; in AWS the `reconciler` function runs
//! one on a schedule.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `RECONCILE_PENDING_AFTER_SECS` | 300 | a transfer is re-driven once its status row has not moved for this long (1..=86400) |
//! | `RECONCILE_BATCH_MAX` | 500 | most transfers re-driven in one pass, oldest first; and, each, transfer and account streams walked per pass (1..=10000) |

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use corebank_domain::{EventEnvelope, StreamKind, TransferId};
use corebank_store::{EventStore, ReadModelStore, TransferPhase, TransferStatusStore};
use serde::Serialize;

use crate::projector::{Applied, Projector};
use crate::saga::{SagaOutcome, TransferSaga};
use crate::{AppError, Clock, ConfigError};

/// Every variable [`ReconcileSettings::from_lookup`] reads.
pub const ENV_VARS: &[&str] = &["RECONCILE_PENDING_AFTER_SECS", "RECONCILE_BATCH_MAX"];

/// The cause recorded on the events a reconciler pass writes.
pub const RECONCILER_CAUSE: &str = "reconciler";

/// What one pass looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// How long a transfer's status row must have stood still before it is re-driven.
    pub pending_after: Duration,
    /// Most transfers re-driven in one pass.
    pub batch_max: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self { pending_after: Duration::from_secs(300), batch_max: 500 }
    }
}

impl ReconcileSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`; blank counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |name: &str, default: u64, max: u64| -> Result<u64, ConfigError> {
            let Some(raw) = lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
                return Ok(default);
            };
            match raw.parse::<u64>() {
                Ok(v) if (1..=max).contains(&v) => Ok(v),
                Ok(v) => {
                    Err(ConfigError { name: name.to_owned(), reason: format!("{v} is outside 1..={max}") })
                }
                Err(e) => Err(ConfigError { name: name.to_owned(), reason: e.to_string() }),
            }
        };
        let defaults = Self::default();
        Ok(Self {
            pending_after: Duration::from_secs(number(
                "RECONCILE_PENDING_AFTER_SECS",
                defaults.pending_after.as_secs(),
                86_400,
            )?),
            batch_max: usize::try_from(number("RECONCILE_BATCH_MAX", defaults.batch_max as u64, 10_000)?)
                .unwrap_or(defaults.batch_max),
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Transfers found `PENDING` beyond the bound.
    pub examined: usize,
    /// Of those, driven to `COMPLETED` or `FAILED` (or found so in the event store).
    pub settled: usize,
    /// Of those, not settled by this pass (an error, or a status row with no transfer stream).
    pub failed: usize,
    /// Seconds since the oldest of them last moved, if any was found.
    pub oldest_pending_secs: Option<u64>,
    /// Transfer streams whose status row was checked in this pass.
    pub transfers_checked: usize,
    /// Of those, streams older than the bound with no status row at all.
    pub transfer_rows_missing: usize,
    /// Of those, status rows older than the bound and behind their stream.
    pub transfer_rows_behind: usize,
    /// Of the missing and behind, rows brought to their stream's head (the transfer driven first when
    /// it was not settled).
    pub transfer_rows_repaired: usize,
    /// Of the missing and behind, rows whose repair failed (retried by a later pass).
    pub transfer_rows_failed: usize,
    /// Account streams whose read side was checked in this pass.
    pub streams_checked: usize,
    /// Of those, streams whose missing events were applied to the read side.
    pub streams_repaired: usize,
    /// Of those, streams whose repair failed (retried by a later pass).
    pub streams_failed: usize,
}

impl ReconcileReport {
    /// Whether the pass found anything to do: a stalled transfer, a transfer row missing or behind, an
    /// account read side behind.
    pub fn found_work(&self) -> bool {
        self.examined > 0
            || self.transfer_rows_missing > 0
            || self.transfer_rows_behind > 0
            || self.streams_repaired > 0
            || self.streams_failed > 0
    }
}

/// Where the read side of stalled streams is checked and repaired.
pub struct ReadSide {
    /// The event store, walked by stream.
    pub events: Arc<dyn EventStore>,
    /// The account read tables' checkpoints.
    pub read_model: Arc<dyn ReadModelStore>,
    /// Applies what is missing.
    pub projector: Arc<Projector>,
}

/// Re-drives stalled transfers and repairs a read side that stopped short.
pub struct Reconciler {
    transfers: Arc<dyn TransferStatusStore>,
    saga: Arc<TransferSaga>,
    read_side: ReadSide,
    clock: Arc<dyn Clock>,
    /// The last account stream the previous pass checked: the walk resumes after it.
    cursor: Mutex<Option<String>>,
    /// The last transfer stream the previous pass checked.
    transfer_cursor: Mutex<Option<String>>,
}

/// How a transfer's status row stood against its stream when a pass found it stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowGap {
    /// The stream has events and the row does not exist.
    Missing,
    /// The row exists at a version below the stream's head.
    Behind,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler reading pending transfers from `transfers`, driving them with `saga`, and
    /// repairing `read_side`.
    pub fn new(
        transfers: Arc<dyn TransferStatusStore>,
        saga: Arc<TransferSaga>,
        read_side: ReadSide,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            transfers,
            saga,
            read_side,
            clock,
            cursor: Mutex::new(None),
            transfer_cursor: Mutex::new(None),
        }
    }

    /// Checks the next `settings.batch_max` account streams (after the previous pass's last, from the
    /// start once the end is reached) and repairs those whose last event, older than the bound, is not
    /// on the read side yet.
    async fn repair_read_side(
        &self,
        settings: &ReconcileSettings,
        cutoff: chrono::DateTime<chrono::Utc>,
        report: &mut ReconcileReport,
    ) -> Result<(), AppError> {
        let after = self.cursor.lock().ok().and_then(|c| c.clone());
        let streams = self
            .read_side
            .events
            .list_streams(StreamKind::Account.prefix(), after.as_deref(), settings.batch_max)
            .await?;
        if let Ok(mut cursor) = self.cursor.lock() {
            *cursor = if streams.len() < settings.batch_max { None } else { streams.last().cloned() };
        }
        for stream in &streams {
            report.streams_checked += 1;
            let checkpoint = self.read_side.read_model.checkpoint(stream).await?;
            let tail = self.read_side.events.load_stream(stream, checkpoint).await?;
            // Nothing missing, or events still in flight through the pipeline.
            let Some(last) = tail.last().filter(|e| e.occurred_at < cutoff) else { continue };
            match self.read_side.projector.handle(last).await {
                Ok(Applied::Applied { events }) => {
                    tracing::warn!(stream_id = %stream, events, "events the read side never received were applied");
                    report.streams_repaired += 1;
                }
                Ok(Applied::Duplicate | Applied::Ignored) => {}
                Err(e) => {
                    tracing::warn!(stream_id = %stream, error = %e, "repairing a stream's read side failed");
                    report.streams_failed += 1;
                }
            }
        }
        Ok(())
    }

    /// Checks the next `settings.batch_max` transfer streams (after the previous pass's last, from the
    /// start once the end is reached) and repairs those whose status row is missing or behind the
    /// stream, once the stream's last event is older than the bound.
    async fn repair_transfer_rows(
        &self,
        settings: &ReconcileSettings,
        cutoff: chrono::DateTime<chrono::Utc>,
        report: &mut ReconcileReport,
    ) -> Result<(), AppError> {
        let after = self.transfer_cursor.lock().ok().and_then(|c| c.clone());
        let streams = self
            .read_side
            .events
            .list_streams(StreamKind::Transfer.prefix(), after.as_deref(), settings.batch_max)
            .await?;
        if let Ok(mut cursor) = self.transfer_cursor.lock() {
            *cursor = if streams.len() < settings.batch_max { None } else { streams.last().cloned() };
        }
        for stream in &streams {
            report.transfers_checked += 1;
            let Some(transfer_id) = stream.strip_prefix(StreamKind::Transfer.prefix()) else { continue };
            let Ok(transfer_id) = TransferId::parse(transfer_id) else {
                tracing::error!(stream_id = %stream, "a transfer stream names an invalid transfer id");
                report.transfer_rows_failed += 1;
                continue;
            };
            let row = self.transfers.get(transfer_id.as_str()).await?;
            let gap = if row.is_some() { RowGap::Behind } else { RowGap::Missing };
            let version = row.map_or(0, |r| r.version);
            let tail = self.read_side.events.load_stream(stream, version).await?;
            // Nothing missing, or events still in flight through the pipeline.
            let Some(last) = tail.last().filter(|e| e.occurred_at < cutoff) else { continue };
            match gap {
                RowGap::Missing => report.transfer_rows_missing += 1,
                RowGap::Behind => report.transfer_rows_behind += 1,
            }
            match self.repair_transfer(&transfer_id, last).await {
                Ok(steps) => {
                    tracing::warn!(%transfer_id, ?gap, from_version = version, to_version = last.version, saga_steps = steps, "a transfer status row the pipeline left behind was repaired");
                    report.transfer_rows_repaired += 1;
                }
                Err(e) => {
                    tracing::warn!(%transfer_id, ?gap, error = %e, "repairing a transfer status row failed; the next pass retries");
                    report.transfer_rows_failed += 1;
                }
            }
        }
        Ok(())
    }

    /// Brings a transfer's status row to `last` (the stream's head when it was read) through the
    /// projector; a transfer not settled there is driven by the saga, and the row brought up to the
    /// events the saga wrote. Answers the saga's steps.
    async fn repair_transfer(
        &self,
        transfer_id: &TransferId,
        last: &EventEnvelope,
    ) -> Result<usize, AppError> {
        self.read_side.projector.handle(last).await?;
        let row = self.transfers.get(transfer_id.as_str()).await?;
        // A stream the projection cannot turn into a row (its first event is not a request) would
        // otherwise count as repaired on every pass.
        let Some(row) = row.filter(|row| row.version >= last.version) else {
            return Err(AppError::Corrupt(format!(
                "transfer {transfer_id}: its status row did not reach v{} of its stream",
                last.version
            )));
        };
        if row.status != TransferPhase::Pending {
            return Ok(0);
        }
        let steps = match self.saga.advance(transfer_id, RECONCILER_CAUSE).await? {
            SagaOutcome::Settled { steps, .. } => steps,
            SagaOutcome::Ignored => return Ok(0),
        };
        if steps > 0 {
            let stream = transfer_id.stream_id();
            let events = self.read_side.events.load_stream(&stream, last.version).await?;
            if let Some(head) = events.last() {
                self.read_side.projector.handle(head).await?;
            }
        }
        Ok(steps)
    }

    /// One pass: every transfer `PENDING` for longer than `settings.pending_after` (at most
    /// `settings.batch_max`, oldest first) is driven as far as it goes. A transfer that fails is
    /// counted and logged and the pass goes on; only failing to list them is an error.
    #[tracing::instrument(name = "reconcile", skip_all)]
    pub async fn pass(&self, settings: &ReconcileSettings) -> Result<ReconcileReport, AppError> {
        let now = self.clock.now();
        let bound = chrono::Duration::from_std(settings.pending_after).unwrap_or(chrono::Duration::MAX);
        let cutoff = now.checked_sub_signed(bound).unwrap_or(now);
        let stalled = self.transfers.pending(cutoff, settings.batch_max).await?;
        let mut report = ReconcileReport {
            examined: stalled.len(),
            oldest_pending_secs: stalled
                .first()
                .map(|s| u64::try_from((now - s.updated_at).num_seconds()).unwrap_or(0)),
            ..ReconcileReport::default()
        };
        for status in &stalled {
            let Ok(transfer_id) = TransferId::parse(&status.transfer_id) else {
                tracing::error!(transfer_id = %status.transfer_id, "a status row names an invalid transfer id");
                report.failed += 1;
                continue;
            };
            match self.saga.advance(&transfer_id, RECONCILER_CAUSE).await {
                Ok(SagaOutcome::Settled { steps, status }) => {
                    tracing::info!(%transfer_id, steps, status, "stalled transfer driven to its end");
                    report.settled += 1;
                }
                Ok(SagaOutcome::Ignored) => {
                    tracing::error!(%transfer_id, "a pending status row has no transfer stream");
                    report.failed += 1;
                }
                Err(e) => {
                    tracing::warn!(%transfer_id, error = %e, "a stalled transfer could not be driven; the next pass retries");
                    report.failed += 1;
                }
            }
        }
        self.repair_transfer_rows(settings, cutoff, &mut report).await?;
        self.repair_read_side(settings, cutoff, &mut report).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_bounds() {
        assert_eq!(ReconcileSettings::from_lookup(|_| None).ok(), Some(ReconcileSettings::default()));
        let set =
            |value: &'static str| move |name: &str| (name == "RECONCILE_BATCH_MAX").then(|| value.to_owned());
        assert_eq!(ReconcileSettings::from_lookup(set("7")).ok().map(|s| s.batch_max), Some(7));
        assert!(ReconcileSettings::from_lookup(set("0")).is_err());
        assert!(ReconcileSettings::from_lookup(set("10001")).is_err());
        assert!(ReconcileSettings::from_lookup(set("many")).is_err());
    }
}
