//! The live projector: applies account events to the read tables once and in stream order.
//!
//! Delivery is at-least-once and may reorder across streams or skip ahead (a lost or delayed
//! record). So each event is judged against the stream's checkpoint: at or below it, a duplicate
//! to skip; exactly one ahead, applied; further ahead, a gap, repaired by reading the missing events
//! from the event store first. Rows and checkpoint move in one conditional write, so two projectors
//! racing on a stream cannot both apply the same event.

use std::sync::Arc;

use corebank_domain::EventEnvelope;
use corebank_store::{EventStore, ProjectionChange, ReadModelStore, StoreError};

use crate::AppError;
use crate::projection::project_all;

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
    /// Not an account event; left to other projections.
    Ignored,
}

const CHECKPOINT_RACE_RETRIES: u32 = 8;

/// Applies events to the account read tables.
pub struct Projector {
    events: Arc<dyn EventStore>,
    read_model: Arc<dyn ReadModelStore>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").finish_non_exhaustive()
    }
}

impl Projector {
    /// Builds a projector over the event store (for gap repair) and the read tables.
    pub fn new(events: Arc<dyn EventStore>, read_model: Arc<dyn ReadModelStore>) -> Self {
        Self { events, read_model }
    }

    /// Applies one delivered event, repairing any gap before it.
    #[tracing::instrument(level = "debug", name = "project", skip_all, fields(stream_id = %envelope.stream_id, version = envelope.version))]
    pub async fn handle(&self, envelope: &EventEnvelope) -> Result<Applied, AppError> {
        if !envelope.stream_id.starts_with("account-") {
            return Ok(Applied::Ignored);
        }
        let mut races = 0;
        loop {
            let checkpoint = self.read_model.checkpoint(&envelope.stream_id).await?;
            if envelope.version <= checkpoint {
                return Ok(Applied::Duplicate);
            }
            let run: Vec<EventEnvelope> = if envelope.version == checkpoint + 1 {
                vec![envelope.clone()]
            } else {
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
                run
            };
            match self.apply_run(&envelope.stream_id, checkpoint, &run).await {
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

    async fn apply_run(
        &self,
        stream_id: &str,
        checkpoint: u64,
        run: &[EventEnvelope],
    ) -> Result<(), AppError> {
        let Some(first) = run.first() else { return Ok(()) };
        let account_id = first.stream_id.trim_start_matches("account-");
        let summary = if checkpoint == 0 { None } else { self.read_model.summary(account_id).await? };
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
