//! The embedded delivery pipeline: tails the store's feed in commit order and hands every event to
//! the same [`Projector`] that the Kafka projection function uses and, when it has one, to the same
//! [`TransferSaga`] that the Kafka transfer-saga function uses.
//!
//! The projector and the saga each tail the feed on their own lane with their own position, so a
//! saga step that waits (a retry, a lease) never holds back the read side, nor the other way round.
//! Neither lane skips an event: a failed handling is retried with backoff until it succeeds, and a
//! lane's position only moves past an event once its handler has taken it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corebank_domain::EventEnvelope;
use corebank_store::EventFeed;
use tokio::sync::watch;

use crate::AppError;
use crate::projector::Projector;
use crate::saga::TransferSaga;

/// Something a delivery pipeline hands every event to, in commit order, at least once.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event; an error means "deliver it again later".
    async fn handle_event(&self, envelope: &EventEnvelope) -> Result<(), AppError>;
}

#[async_trait]
impl EventHandler for Projector {
    async fn handle_event(&self, envelope: &EventEnvelope) -> Result<(), AppError> {
        self.handle(envelope).await.map(|_| ())
    }
}

#[async_trait]
impl EventHandler for TransferSaga {
    async fn handle_event(&self, envelope: &EventEnvelope) -> Result<(), AppError> {
        self.handle(envelope).await.map(|_| ())
    }
}

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

/// One tailing reader of the feed: its handler, how far it got, and its current failure.
struct Lane {
    name: &'static str,
    handler: Arc<dyn EventHandler>,
    position: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
}

impl Lane {
    fn new(name: &'static str, handler: Arc<dyn EventHandler>) -> Self {
        Self { name, handler, position: watch::Sender::new(0), last_error: Mutex::new(None) }
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The in-process pipeline.
pub struct EmbeddedPipeline {
    feed: Arc<dyn EventFeed>,
    projection: Lane,
    saga: Option<Lane>,
}

impl std::fmt::Debug for EmbeddedPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPipeline")
            .field("projected", &*self.projection.position.borrow())
            .field("saga", &self.saga.as_ref().map(|l| *l.position.borrow()))
            .finish_non_exhaustive()
    }
}

impl EmbeddedPipeline {
    /// Builds a pipeline that starts at the beginning of the feed and only projects.
    pub fn new(feed: Arc<dyn EventFeed>, projector: Arc<Projector>) -> Arc<Self> {
        Arc::new(Self { feed, projection: Lane::new("projection", projector), saga: None })
    }

    /// Builds a pipeline that projects and also runs the transfer saga in process.
    pub fn with_saga(
        feed: Arc<dyn EventFeed>,
        projector: Arc<Projector>,
        saga: Arc<TransferSaga>,
    ) -> Arc<Self> {
        Arc::new(Self {
            feed,
            projection: Lane::new("projection", projector),
            saga: Some(Lane::new("saga", saga)),
        })
    }

    /// The last position projected.
    pub fn projected(&self) -> u64 {
        *self.projection.position.borrow()
    }

    /// The last position the saga has handled (the head when there is no saga).
    pub fn saga_position(&self) -> u64 {
        match &self.saga {
            Some(lane) => *lane.position.borrow(),
            None => *self.feed.head().borrow(),
        }
    }

    /// Runs every lane until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let projection = self.tail(&self.projection, until_stopped(stopped.clone()));
        let saga = async {
            if let Some(lane) = &self.saga {
                self.tail(lane, until_stopped(stopped.clone())).await;
            }
        };
        tokio::join!(signal, projection, saga);
    }

    async fn tail(&self, lane: &Lane, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut head = self.feed.head();
        let mut position = *lane.position.borrow();
        let mut backoff_ms = 10;
        loop {
            let batch = match self.feed.read_after(position, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, lane = lane.name, "feed read failed");
                    lane.set_error(Some(e.to_string()));
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
                    match lane.handler.handle_event(&envelope).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, lane = lane.name, stream_id = %envelope.stream_id, version = envelope.version, "event handling failed; retrying");
                            lane.set_error(Some(format!("{}: {e}", lane.name)));
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
            lane.position.send_replace(position);
            backoff_ms = 10;
            lane.set_error(None);
        }
    }
}

impl PipelineHealth for EmbeddedPipeline {
    fn lag(&self) -> u64 {
        let head = *self.feed.head().borrow();
        head.saturating_sub(self.projected())
    }

    fn last_error(&self) -> Option<String> {
        self.projection.last_error().or_else(|| self.saga.as_ref().and_then(Lane::last_error))
    }
}

#[async_trait]
impl ProjectionBarrier for EmbeddedPipeline {
    async fn settle(&self) {
        let target = *self.feed.head().borrow();
        let mut projected = self.projection.position.subscribe();
        let reached = projected.wait_for(|p| *p >= target);
        // Bounded: a stalled projector must not stall commands; reads then fall back to the store.
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, reached).await;
    }
}
