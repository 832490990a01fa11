//! The embedded pipeline: the whole asynchronous path in process. It tails the store's feed in commit
//! order and hands every event to the same [`Projector`] that the `projector` function uses and, when
//! it has one, to the same [`TransferSaga`] that the `transfer-saga` function uses.
//!
//! The projector and the saga each tail the feed on their own lane with their own position, so a
//! saga step that waits (a retry, a lease) never holds back the read side, nor the other way round.
//! Each lane starts from the cursor it saved in the feed (a feed that outlives the process keeps one
//! per lane; the memory feed keeps none, so its lanes start at the beginning) and saves it every
//! 250 ms and at shutdown.
//! Neither lane skips an event: a failed handling is retried with backoff until it succeeds, and a
//! lane's position only moves past a batch once its handler has taken every event of it.
//!
//! The projector takes events one at a time in feed order (or stream by stream, see
//! [`EmbeddedPipeline::with_saga_concurrent_projection`]). The saga only needs one transfer's events
//! in order, so within a batch it runs different transfers concurrently: the [fan-out](crate::fanout),
//! at most [`STREAMS_IN_FLIGHT_MAX`] keys at once. Over a remote store, one transfer at a time would cap
//! the lane at one transfer's round trips. Failed handlings pause by [`LANE_BACKOFF`].

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use corebank_app::AppError;
use corebank_app::projector::Projector;
use corebank_app::read_side::{PipelineHealth, ProjectionBarrier};
use corebank_app::saga::{TransferSaga, transfer_of};
use corebank_backoff::Backoff;
use corebank_domain::EventEnvelope;
use corebank_store::EventFeed;
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fanout::{STREAMS_IN_FLIGHT_MAX, bounded, group_by_key};

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
        let transfer = transfer_of(envelope).ok().flatten();
        Some(transfer.map_or_else(|| envelope.stream_id.clone(), |t| t.stream_id()))
    }
}

const BATCH: usize = 512;
/// How often a lane saves its cursor while it runs (and once more at shutdown): a restart hands over
/// again at most this long's worth of events.
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_millis(250);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pauses after a failed handling or a failed feed read: 10 ms doubling to 2 s, jittered.
pub const LANE_BACKOFF: Backoff = Backoff::from_millis(10, 2_000);

/// Sleeps the pause after `failures` failures in a row; `false` when shutdown came first.
async fn pause(stopped: &mut watch::Receiver<bool>, failures: u32) -> bool {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => false,
        () = tokio::time::sleep(LANE_BACKOFF.delay(failures)) => true,
    }
}

/// One tailing reader of the feed: its handler, how far it got, and its current failure.
struct Lane {
    name: &'static str,
    handler: Arc<dyn EventHandler>,
    /// Hand different streams' events over concurrently even when the handler names no order key.
    by_stream: bool,
    position: watch::Sender<u64>,
    last_error: Mutex<Option<String>>,
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
            last_error: Mutex::new(None),
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
    let mut failures = 0;
    loop {
        match handler.handle_event(envelope).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, lane = name, stream_id = %envelope.stream_id, version = envelope.version, "event handling failed; retrying");
                set_error(errors, Some(format!("{name}: {e}")));
                failures += 1;
                if !pause(stopped, failures).await {
                    return false;
                }
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
    /// stream's in order), at most [`STREAMS_IN_FLIGHT_MAX`] streams at once. Worth it over a remote
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

    /// Tails the feed on `lane` until shutdown, from the lane's saved cursor; saves the cursor now and
    /// then and once more on the way out.
    async fn tail(&self, lane: &Lane, mut stopped: watch::Receiver<bool>) {
        let Some(start) = self.resume(lane, &mut stopped).await else { return };
        lane.position.send_replace(start);
        let position = self.tail_from(lane, start, &mut stopped).await;
        self.save_cursor(lane, position).await;
    }

    /// The lane's saved cursor (0 on a feed that keeps none), read again after a failure until it is
    /// read or shutdown comes first.
    async fn resume(&self, lane: &Lane, stopped: &mut watch::Receiver<bool>) -> Option<u64> {
        let mut failures = 0;
        loop {
            match self.feed.cursor(lane.name).await {
                Ok(position) => {
                    if position > 0 {
                        tracing::info!(lane = lane.name, position, "resuming from the saved cursor");
                    }
                    return Some(position);
                }
                Err(e) => {
                    tracing::error!(error = %e, lane = lane.name, "reading the saved cursor failed");
                    lane.set_error(Some(e.to_string()));
                    failures += 1;
                    if !pause(stopped, failures).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Best effort: a cursor that is not saved only means that a restart hands over again what was
    /// handled since the last save, which every handler takes as a duplicate.
    async fn save_cursor(&self, lane: &Lane, position: u64) {
        if let Err(e) = self.feed.save_cursor(lane.name, position).await {
            tracing::warn!(error = %e, lane = lane.name, position, "saving the cursor failed");
        }
    }

    /// The tailing loop; returns the last position handled when shutdown comes.
    async fn tail_from(&self, lane: &Lane, start: u64, stopped: &mut watch::Receiver<bool>) -> u64 {
        let mut head = self.feed.head();
        let mut position = start;
        let mut saved_at = Instant::now();
        let mut failures = 0;
        loop {
            let batch = match self.feed.read_after(position, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, lane = lane.name, "feed read failed");
                    lane.set_error(Some(e.to_string()));
                    failures += 1;
                    if !pause(stopped, failures).await {
                        return position;
                    }
                    continue;
                }
            };
            let Some(last) = batch.last().map(|(pos, _)| *pos) else {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return position,
                    changed = head.changed() => if changed.is_err() { return position },
                }
                continue;
            };
            match Self::deliver_batch(lane, batch, stopped).await {
                Batch::Taken => {}
                Batch::Stopped => return position,
                Batch::Retry => {
                    failures += 1;
                    if !pause(stopped, failures).await {
                        return position;
                    }
                    continue;
                }
            }
            position = last;
            // Once per batch, not per event: every change wakes every waiting command.
            lane.position.send_replace(position);
            failures = 0;
            lane.set_error(None);
            if saved_at.elapsed() >= CURSOR_SAVE_INTERVAL {
                self.save_cursor(lane, position).await;
                saved_at = Instant::now();
            }
        }
    }

    /// Hands a batch over through the fan-out: grouped by the handler's order key (by stream on a
    /// `by_stream` lane; one group in feed order when the handler names no key), each group in order,
    /// groups concurrently. A group whose handler panicked makes the whole batch come again; handlers
    /// take duplicates.
    async fn deliver_batch(
        lane: &Lane,
        batch: Vec<(u64, EventEnvelope)>,
        stopped: &watch::Receiver<bool>,
    ) -> Batch {
        let events: Vec<EventEnvelope> = batch.into_iter().map(|(_, envelope)| envelope).collect();
        let keyed = lane.by_stream || events.first().is_some_and(|e| lane.handler.order_key(e).is_some());
        let groups = if keyed {
            group_by_key(events, |e| lane.handler.order_key(e).unwrap_or_else(|| e.stream_id.clone()))
        } else {
            vec![events]
        };
        let outcomes = bounded(groups, STREAMS_IN_FLIGHT_MAX, |events: Vec<EventEnvelope>| {
            let mut stopped = stopped.clone();
            let run = async move {
                for envelope in &events {
                    if !deliver(lane.name, lane.handler.as_ref(), &lane.last_error, envelope, &mut stopped)
                        .await
                    {
                        return false;
                    }
                }
                true
            };
            AssertUnwindSafe(run).catch_unwind()
        })
        .await;
        let mut outcome = Batch::Taken;
        for joined in outcomes {
            match joined {
                Ok(true) => {}
                Ok(false) => outcome = Batch::Stopped,
                Err(_) => {
                    tracing::error!(lane = lane.name, "an event handler panicked; retrying the batch");
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
