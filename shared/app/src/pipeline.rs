//! The embedded delivery pipeline: tails the store's feed in commit order and hands every event to
//! the same [`Projector`] that the Kafka projection function uses.
//!
//! It never skips an event: a failed apply is retried with backoff until it succeeds, and the
//! position only moves past an event once the projector has taken it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corebank_store::EventFeed;
use tokio::sync::watch;

use crate::projector::Projector;

/// What health reports about a delivery pipeline.
pub trait PipelineHealth: Send + Sync {
    /// Events committed but not yet projected.
    fn lag(&self) -> u64;
    /// The last failure, if the pipeline is currently failing.
    fn last_error(&self) -> Option<String>;
}

/// Lets a command's response wait until the read side has seen it, where a host can offer that.
#[async_trait]
pub trait ProjectionBarrier: Send + Sync {
    /// Waits (bounded) until everything committed so far is projected.
    async fn settle(&self);
}

const BATCH: usize = 512;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The in-process pipeline.
pub struct EmbeddedPipeline {
    feed: Arc<dyn EventFeed>,
    projector: Arc<Projector>,
    projected: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for EmbeddedPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPipeline")
            .field("projected", &*self.projected.borrow())
            .finish_non_exhaustive()
    }
}

impl EmbeddedPipeline {
    /// Builds a pipeline that starts at the beginning of the feed.
    pub fn new(feed: Arc<dyn EventFeed>, projector: Arc<Projector>) -> Arc<Self> {
        Arc::new(Self { feed, projector, projected: watch::Sender::new(0), last_error: Mutex::new(None) })
    }

    /// The last position projected.
    pub fn projected(&self) -> u64 {
        *self.projected.borrow()
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut head = self.feed.head();
        let mut position = self.projected();
        let mut backoff_ms = 10;
        loop {
            let batch = match self.feed.read_after(position, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "feed read failed");
                    self.set_error(Some(e.to_string()));
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    }
                    backoff_ms = (backoff_ms * 2).min(2_000);
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    () = &mut shutdown => return,
                    changed = head.changed() => if changed.is_err() { return },
                }
                continue;
            }
            for (pos, envelope) in batch {
                loop {
                    match self.projector.handle(&envelope).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!(error = %e, stream_id = %envelope.stream_id, version = envelope.version, "projection failed; retrying");
                            self.set_error(Some(e.to_string()));
                            tokio::select! {
                                () = &mut shutdown => return,
                                () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                            }
                            backoff_ms = (backoff_ms * 2).min(2_000);
                        }
                    }
                }
                position = pos;
            }
            // Once per batch, not per event: every change wakes every waiting command.
            self.projected.send_replace(position);
            backoff_ms = 10;
            self.set_error(None);
        }
    }
}

impl PipelineHealth for EmbeddedPipeline {
    fn lag(&self) -> u64 {
        let head = *self.feed.head().borrow();
        head.saturating_sub(self.projected())
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl ProjectionBarrier for EmbeddedPipeline {
    async fn settle(&self) {
        let target = *self.feed.head().borrow();
        let mut projected = self.projected.subscribe();
        let reached = projected.wait_for(|p| *p >= target);
        // Bounded: a stalled projector must not stall commands; reads then fall back to the store.
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, reached).await;
    }
}
