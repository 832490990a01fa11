//! The embedded delivery pipeline: tails the store's feed in commit order and hands every event to
//! the same [`Projector`] that the Kafka projection function uses and, when it has one, to the same
//! [`TransferSaga`] that the Kafka transfer-saga function uses.
//!
//! The projector and the saga each tail the feed on their own lane with their own position, so a
//! saga step that waits (a retry, a lease) never holds back the read side, nor the other way round.
//! Neither lane skips an event: a failed handling is retried with backoff until it succeeds, and a
//! lane's position only moves past a batch once its handler has taken every event of it.
//!
//! The projector takes events one at a time in feed order. The saga only needs one transfer's events
//! in order, so within a batch it runs different transfers concurrently (at most
//! [`KEYED_CONCURRENCY_MAX`] at once): over a remote store, one transfer at a time would cap the lane at
//! one transfer's round trips.

use std::collections::BTreeMap;
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

    /// The key whose events must be handled in feed order; events of different keys may be handled
    /// concurrently. `None` (the default) hands every event over one at a time, in feed order.
    fn order_key(&self, _envelope: &EventEnvelope) -> Option<String> {
        None
    }
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

    /// One transfer's events (its own and its holds') in order; transfers concurrently.
    fn order_key(&self, envelope: &EventEnvelope) -> Option<String> {
        let transfer = crate::saga::transfer_of(envelope).ok().flatten();
        Some(transfer.map_or_else(|| envelope.stream_id.clone(), |t| t.stream_id()))
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

/// The most keys a keyed lane (the saga) handles at once.
pub const KEYED_CONCURRENCY_MAX: usize = 64;

/// One tailing reader of the feed: its handler, how far it got, and its current failure.
struct Lane {
    name: &'static str,
    handler: Arc<dyn EventHandler>,
    /// Hand different streams' events over concurrently even when the handler names no order key.
    by_stream: bool,
    position: watch::Sender<u64>,
    last_error: Arc<Mutex<Option<String>>>,
}

fn set_error(slot: &Mutex<Option<String>>, error: Option<String>) {
    *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
}

impl Lane {
    fn new(name: &'static str, handler: Arc<dyn EventHandler>) -> Self {
        Self {
            name,
            handler,
            by_stream: false,
            position: watch::Sender::new(0),
            last_error: Arc::new(Mutex::new(None)),
        }
    }

    fn set_error(&self, error: Option<String>) {
        set_error(&self.last_error, error);
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// How a batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Every event was taken.
    Taken,
    /// Shutdown came first.
    Stopped,
    /// Something failed outside the handlers' own retries: deliver the batch again.
    Retry,
}

/// Hands one event over until it is taken; `false` when shutdown came first.
async fn deliver(
    name: &'static str,
    handler: &dyn EventHandler,
    errors: &Mutex<Option<String>>,
    envelope: &EventEnvelope,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let mut backoff_ms = 10;
    loop {
        match handler.handle_event(envelope).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, lane = name, stream_id = %envelope.stream_id, version = envelope.version, "event handling failed; retrying");
                set_error(errors, Some(format!("{name}: {e}")));
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return false,
                    () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(2_000);
            }
        }
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

    /// As [`Self::with_saga`], but the projector takes different streams' events concurrently (each
    /// stream's in order), at most [`KEYED_CONCURRENCY_MAX`] streams at once. Worth it over a remote
    /// read store, where one event at a time caps the lane at one round trip per event; the projector
    /// keeps one checkpoint per stream, so streams need no order between them.
    pub fn with_saga_concurrent_projection(
        feed: Arc<dyn EventFeed>,
        projector: Arc<Projector>,
        saga: Arc<TransferSaga>,
    ) -> Arc<Self> {
        let mut projection = Lane::new("projection", projector);
        projection.by_stream = true;
        Arc::new(Self { feed, projection, saga: Some(Lane::new("saga", saga)) })
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
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let projection = self.tail(&self.projection, stopped.clone());
        let saga = async {
            if let Some(lane) = &self.saga {
                self.tail(lane, stopped.clone()).await;
            }
        };
        tokio::join!(signal, projection, saga);
    }

    async fn tail(&self, lane: &Lane, mut stopped: watch::Receiver<bool>) {
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
                        _ = stopped.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    }
                    backoff_ms = (backoff_ms * 2).min(2_000);
                    continue;
                }
            };
            let Some(last) = batch.last().map(|(pos, _)| *pos) else {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    changed = head.changed() => if changed.is_err() { return },
                }
                continue;
            };
            let keyed =
                lane.by_stream || batch.first().is_some_and(|(_, e)| lane.handler.order_key(e).is_some());
            let outcome = if keyed {
                Self::deliver_keyed(lane, &batch, &stopped).await
            } else {
                let mut outcome = Batch::Taken;
                for (_, envelope) in &batch {
                    if !deliver(lane.name, lane.handler.as_ref(), &lane.last_error, envelope, &mut stopped)
                        .await
                    {
                        outcome = Batch::Stopped;
                        break;
                    }
                }
                outcome
            };
            match outcome {
                Batch::Taken => {}
                Batch::Stopped => return,
                Batch::Retry => {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    }
                    backoff_ms = (backoff_ms * 2).min(2_000);
                    continue;
                }
            }
            position = last;
            // Once per batch, not per event: every change wakes every waiting command.
            lane.position.send_replace(position);
            backoff_ms = 10;
            lane.set_error(None);
        }
    }

    /// Hands a batch over key by key: each key's events in order, different keys concurrently.
    async fn deliver_keyed(
        lane: &Lane,
        batch: &[(u64, EventEnvelope)],
        stopped: &watch::Receiver<bool>,
    ) -> Batch {
        let mut by_key: BTreeMap<String, Vec<EventEnvelope>> = BTreeMap::new();
        for (_, envelope) in batch {
            let key = lane.handler.order_key(envelope).unwrap_or_else(|| envelope.stream_id.clone());
            by_key.entry(key).or_default().push(envelope.clone());
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(KEYED_CONCURRENCY_MAX));
        let mut tasks = tokio::task::JoinSet::new();
        for events in by_key.into_values() {
            let (handler, errors, name) = (lane.handler.clone(), lane.last_error.clone(), lane.name);
            let (permits, mut stopped) = (permits.clone(), stopped.clone());
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else { return false };
                for envelope in &events {
                    if !deliver(name, handler.as_ref(), &errors, envelope, &mut stopped).await {
                        return false;
                    }
                }
                true
            });
        }
        let mut outcome = Batch::Taken;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(true) => {}
                Ok(false) => outcome = Batch::Stopped,
                Err(e) => {
                    // Delivered again (every event of the batch): handlers take duplicates.
                    tracing::error!(error = %e, lane = lane.name, "an event handler panicked; retrying the batch");
                    lane.set_error(Some(format!("{}: a handler panicked", lane.name)));
                    if outcome == Batch::Taken {
                        outcome = Batch::Retry;
                    }
                }
            }
        }
        outcome
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
