//! The live projector: applies account events to the account read tables and transfer events to
//! `transfer_status`, once and in stream order.
//!
//! Delivery is at-least-once and may reorder across streams or skip ahead (a lost or delayed
//! record). So each event is judged against the stream's checkpoint: at or below it, a duplicate
//! to skip; exactly one ahead, applied; further ahead, a gap, repaired by reading the missing events
//! from the event store first. Rows and checkpoint move in one conditional write, so two projectors
//! racing on a stream cannot both apply the same event.

use std::sync::Arc;

use corebank_domain::{AccountId, EventEnvelope, StreamId, TransferId};
use corebank_store::{EventStore, ProjectionChange, ReadModelStore, StoreError, TransferStatusStore};

use crate::AppError;
use crate::projection::project_all;
use crate::transfer_projection::project_transfer_all;

/// What happened to one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied (with this many events in all, more than one after a gap repair).
    Applied {
        /// Events applied, including repaired ones.
        events: usize,
    },
    /// Already at or below the checkpoint.
    Duplicate,
    /// Not an event this projector keeps a table for.
    Ignored,
}

const CHECKPOINT_RACE_RETRIES: u32 = 8;

/// Applies events to the account read tables and, when it has one, the transfer status table.
pub struct Projector {
    events: Arc<dyn EventStore>,
    read_model: Arc<dyn ReadModelStore>,
    transfers: Option<Arc<dyn TransferStatusStore>>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").finish_non_exhaustive()
    }
}

impl Projector {
    /// Builds a projector over the event store (for gap repair) and the account read tables; transfer
    /// events are ignored until [`Projector::with_transfers`] gives it their table.
    pub fn new(events: Arc<dyn EventStore>, read_model: Arc<dyn ReadModelStore>) -> Self {
        Self { events, read_model, transfers: None }
    }

    /// Also projects `transfer-*` streams into `transfer_status`.
    pub fn with_transfers(mut self, transfers: Arc<dyn TransferStatusStore>) -> Self {
        self.transfers = Some(transfers);
        self
    }

    /// Applies one delivered event, repairing any gap before it.
    #[tracing::instrument(level = "debug", name = "project", skip_all, fields(stream_id = %envelope.stream_id, version = envelope.version))]
    pub async fn handle(&self, envelope: &EventEnvelope) -> Result<Applied, AppError> {
        self.handle_up_to(envelope, std::slice::from_ref(envelope)).await
    }

    /// Applies delivered events of one stream, in one write where it can: `run` must be one stream's
    /// consecutive versions in order (what a partition delivers for a stream; anything else is applied
    /// event by event). What the read side already has is skipped and a gap before the run is repaired
    /// from the event store, as for [`Projector::handle`]; `events` counts what was applied. A failure
    /// applies nothing of the run.
    #[tracing::instrument(level = "debug", name = "project_run", skip_all, fields(events = run.len()))]
    pub async fn handle_run(&self, run: &[EventEnvelope]) -> Result<Applied, AppError> {
        let Some(last) = run.last() else { return Ok(Applied::Duplicate) };
        let consecutive = run.windows(2).all(|pair| {
            pair[1].stream_id == pair[0].stream_id && pair[1].version == pair[0].version.saturating_add(1)
        });
        if consecutive {
            return self.handle_up_to(last, run).await;
        }
        let mut applied = 0;
        for envelope in run {
            if let Applied::Applied { events } = self.handle(envelope).await? {
                applied += events;
            }
        }
        Ok(if applied > 0 { Applied::Applied { events: applied } } else { Applied::Duplicate })
    }

    /// Applies many account streams' runs at once (each run: one stream's delivered events, in
    /// order): the runs' checkpoints and summaries are read in one call each and every change is
    /// written in one ([`ReadModelStore::apply_all`]), so a batch of many accounts costs one
    /// transaction instead of one per account. Says for each run what was done: `Some(applied)` when
    /// the run is taken care of (applied, or already there: `Applied::Duplicate`), `None` when it is
    /// left for [`Projector::handle_run`]: a transfer stream, a run that is not consecutive, one with a
    /// gap before it, one whose events do not project, or one whose checkpoint moved meanwhile. A
    /// failure applies nothing.
    #[tracing::instrument(level = "debug", name = "project_runs", skip_all, fields(runs = runs.len()))]
    pub async fn handle_runs(&self, runs: &[Vec<EventEnvelope>]) -> Result<Vec<Option<Applied>>, AppError> {
        let mut outcomes: Vec<Option<Applied>> = vec![None; runs.len()];
        let mut taken: Vec<(usize, AccountId)> = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let consecutive = run.windows(2).all(|pair| {
                pair[1].stream_id == pair[0].stream_id && pair[1].version == pair[0].version.saturating_add(1)
            });
            if let (true, Some(first)) = (consecutive, run.first())
                && let Ok(StreamId::Account(account_id)) = first.stream()
            {
                taken.push((i, account_id));
            }
        }
        if taken.is_empty() {
            return Ok(outcomes);
        }
        let stream_ids: Vec<String> = taken.iter().map(|(i, _)| runs[*i][0].stream_id.clone()).collect();
        let checkpoints = self.read_model.checkpoints(&stream_ids).await?;
        let continuing: Vec<String> = taken
            .iter()
            .zip(&checkpoints)
            .filter(|(_, checkpoint)| **checkpoint > 0)
            .map(|((_, account_id), _)| account_id.as_str().to_owned())
            .collect();
        let mut summaries = self.read_model.summaries(&continuing).await?.into_iter();
        let mut changes = Vec::with_capacity(taken.len());
        let mut changed = Vec::with_capacity(taken.len());
        for ((i, _), checkpoint) in taken.iter().zip(&checkpoints) {
            let checkpoint = *checkpoint;
            let summary = if checkpoint > 0 { summaries.next().flatten() } else { None };
            let run = &runs[*i];
            let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
            if last.version <= checkpoint {
                outcomes[*i] = Some(Applied::Duplicate);
                continue;
            }
            if first.version > checkpoint.saturating_add(1) {
                continue;
            }
            let unseen: Vec<EventEnvelope> = run.iter().filter(|e| e.version > checkpoint).cloned().collect();
            let Ok((summary, statement)) = project_all(summary, &unseen) else { continue };
            changes.push(ProjectionChange {
                stream_id: last.stream_id.clone(),
                expected_checkpoint: checkpoint,
                new_checkpoint: last.version,
                summary,
                statement,
            });
            changed.push((*i, unseen.len()));
        }
        if changes.is_empty() {
            return Ok(outcomes);
        }
        let applied = self.read_model.apply_all(changes).await?;
        for ((i, events), applied) in changed.into_iter().zip(applied) {
            if applied {
                outcomes[i] = Some(Applied::Applied { events });
            }
        }
        Ok(outcomes)
    }

    /// Applies the stream of `envelope` up to it: from `delivered` (consecutive versions of the
    /// stream ending at `envelope`) when they start at or before the checkpoint's next version, else
    /// from the event store.
    async fn handle_up_to(
        &self,
        envelope: &EventEnvelope,
        delivered: &[EventEnvelope],
    ) -> Result<Applied, AppError> {
        let account_id = match envelope.stream() {
            Ok(StreamId::Account(account_id)) => account_id,
            Ok(StreamId::Transfer(transfer_id)) => {
                let Some(transfers) = &self.transfers else { return Ok(Applied::Ignored) };
                return self.handle_transfer(transfers.as_ref(), &transfer_id, envelope, delivered).await;
            }
            Err(_) => return Ok(Applied::Ignored),
        };
        let mut races = 0;
        loop {
            let checkpoint = self.read_model.checkpoint(&envelope.stream_id).await?;
            if envelope.version <= checkpoint {
                return Ok(Applied::Duplicate);
            }
            let run = self.run_to(envelope, checkpoint, delivered).await?;
            match self.apply_run(&account_id, &envelope.stream_id, checkpoint, &run).await {
                Ok(()) => return Ok(Applied::Applied { events: run.len() }),
                Err(AppError::Store(StoreError::CheckpointMoved { .. }))
                    if races < CHECKPOINT_RACE_RETRIES =>
                {
                    races += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The transfer status row carries its own checkpoint (its `version`); otherwise the same rules
    /// as accounts: skip what it has seen, repair a gap from the event store, move only from the
    /// version read.
    async fn handle_transfer(
        &self,
        transfers: &dyn TransferStatusStore,
        transfer_id: &TransferId,
        envelope: &EventEnvelope,
        delivered: &[EventEnvelope],
    ) -> Result<Applied, AppError> {
        let mut races = 0;
        loop {
            let current = transfers.get(transfer_id.as_str()).await?;
            let checkpoint = current.as_ref().map_or(0, |s| s.version);
            if envelope.version <= checkpoint {
                return Ok(Applied::Duplicate);
            }
            let run = self.run_to(envelope, checkpoint, delivered).await?;
            let Some(status) = project_transfer_all(current, &run)? else { return Ok(Applied::Ignored) };
            match transfers.apply(checkpoint, status).await {
                Ok(()) => return Ok(Applied::Applied { events: run.len() }),
                Err(StoreError::CheckpointMoved { .. }) if races < CHECKPOINT_RACE_RETRIES => races += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The events from `checkpoint + 1` up to the delivered one: taken from `delivered` (consecutive
    /// versions ending at it) when they reach back that far, or read from the store when some before
    /// them were not applied yet.
    async fn run_to(
        &self,
        envelope: &EventEnvelope,
        checkpoint: u64,
        delivered: &[EventEnvelope],
    ) -> Result<Vec<EventEnvelope>, AppError> {
        if delivered.first().is_some_and(|first| first.version <= checkpoint.saturating_add(1)) {
            return Ok(delivered.iter().filter(|e| e.version > checkpoint).cloned().collect());
        }
        tracing::info!(checkpoint, "gap before delivered event; repairing from the event store");
        let stored = self.events.load_stream(&envelope.stream_id, checkpoint).await?;
        let run: Vec<EventEnvelope> =
            stored.into_iter().take_while(|e| e.version <= envelope.version).collect();
        if run.last().map(|e| e.version) != Some(envelope.version) {
            return Err(AppError::Corrupt(format!(
                "{} v{} was delivered but is not in the event store",
                envelope.stream_id, envelope.version
            )));
        }
        Ok(run)
    }

    async fn apply_run(
        &self,
        account_id: &AccountId,
        stream_id: &str,
        checkpoint: u64,
        run: &[EventEnvelope],
    ) -> Result<(), AppError> {
        if run.is_empty() {
            return Ok(());
        }
        let summary =
            if checkpoint == 0 { None } else { self.read_model.summary(account_id.as_str()).await? };
        let (summary, statement) = project_all(summary, run)?;
        let new_checkpoint = run.last().map_or(checkpoint, |e| e.version);
        self.read_model
            .apply(ProjectionChange {
                stream_id: stream_id.to_owned(),
                expected_checkpoint: checkpoint,
                new_checkpoint,
                summary,
                statement,
            })
            .await?;
        Ok(())
    }
}
