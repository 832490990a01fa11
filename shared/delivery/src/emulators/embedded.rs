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
//! lane's position only moves past a batch once its handler has taken (or parked) every event of it.
//! Given [`Parking`] ([`EmbeddedPipeline::park_with`]), a lane parks as the MSK handlers do (see
//! [`crate::handlers::batch`]): an event that fails for a reason that will not pass is tried
//! [`PARK_ATTEMPTS_MAX`](corebank_app::parked::PARK_ATTEMPTS_MAX) times, then parked with the later
//! events of its stream behind it, and the lane moves on; a transient failure is retried as before.
//!
//! The projector takes events one at a time in feed order (or stream by stream, see
//! [`EmbeddedPipeline::with_saga_concurrent_projection`]). The saga only needs one transfer's events
//! in order, so within a batch it runs different transfers concurrently: the [fan-out](crate::fanout),
//! at most [`STREAMS_IN_FLIGHT_MAX`] keys at once. Over a remote store, one transfer at a time would cap
//! the lane at one transfer's round trips. Failed handlings pause by [`LANE_BACKOFF`].

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use corebank_app::AppError;
use corebank_app::parked::Parking;
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
/// How long a reader whose page came back empty below the feed head waits before reading again: a
/// lower position was still committing (or rolled back, which the feed passes once it is sure).
const BELOW_HEAD_POLL: Duration = Duration::from_millis(2);

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
    /// Where the lane parks what its handler refuses for good; without it, it retries for ever.
    parking: OnceLock<Parking>,
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
            parking: OnceLock::new(),
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

/// Hands one event over until it is taken or parked; `false` when shutdown came first. `parked` holds
/// the streams the lane has parked (as of the batch's start, plus those this group parked since).
async fn deliver(
    lane: &Lane,
    envelope: &EventEnvelope,
    parked: &mut HashSet<String>,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let parking = lane.parking.get();
    if let Some(parking) = parking
        && parked.contains(&envelope.stream_id)
    {
        // Asked again, since a retry may have emptied the stream after the batch began; when the
        // answer cannot be read, the stream stays parked.
        if parking.still_parked(&envelope.stream_id).await.unwrap_or(true) {
            let reason = format!("parked behind an earlier parked record of {}", envelope.stream_id);
            return park(lane, parking, envelope, &reason, stopped).await;
        }
        parked.remove(&envelope.stream_id);
    }
    let mut failures = 0;
    loop {
        let outcome = match parking {
            Some(parking) => parking.handle(|| lane.handler.handle_event(envelope)).await,
            None => lane.handler.handle_event(envelope).await,
        };
        match outcome {
            Ok(()) => return true,
            Err(e) => {
                tracing::error!(error = %e, lane = lane.name, stream_id = %envelope.stream_id, version = envelope.version, "event handling failed");
                lane.set_error(Some(format!("{}: {e}", lane.name)));
                if let Some(parking) = parking
                    && !e.is_transient()
                {
                    parked.insert(envelope.stream_id.clone());
                    return park(lane, parking, envelope, &e.to_string(), stopped).await;
                }
                failures += 1;
                if !pause(stopped, failures).await {
                    return false;
                }
            }
        }
    }
}

/// Parks `envelope`, retrying while the store fails; `false` when shutdown came first.
async fn park(
    lane: &Lane,
    parking: &Parking,
    envelope: &EventEnvelope,
    reason: &str,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let mut failures = 0;
    loop {
        match parking.park_envelope(envelope, reason).await {
            Ok(()) => {
                tracing::error!(lane = lane.name, stream_id = %envelope.stream_id, version = envelope.version, error = reason, "event parked");
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, lane = lane.name, stream_id = %envelope.stream_id, "parking failed; retrying");
                lane.set_error(Some(format!("{}: {e}", lane.name)));
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

    /// Lets the lanes park what their handlers refuse for good, as the MSK consumers do: `projection`
    /// for the projection lane, `saga` for the saga's (if the pipeline runs one). Set once; later calls
    /// change nothing.
    pub fn park_with(&self, projection: Parking, saga: Parking) {
        let _ = self.projection.parking.set(projection);
        if let Some(lane) = &self.saga {
            let _ = lane.parking.set(saga);
        }
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
                if *head.borrow_and_update() > position {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return position,
                        () = tokio::time::sleep(BELOW_HEAD_POLL) => {}
                    }
                } else {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return position,
                        changed = head.changed() => if changed.is_err() { return position },
                    }
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
        let parked_before = match lane.parking.get() {
            Some(parking) => match parking.parked_streams().await {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::error!(error = %e, lane = lane.name, "the parked streams could not be read");
                    lane.set_error(Some(format!("{}: {e}", lane.name)));
                    return Batch::Retry;
                }
            },
            None => HashSet::new(),
        };
        let parked_before = &parked_before;
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
                let mut parked = parked_before.clone();
                for envelope in &events {
                    if !deliver(lane, envelope, &mut parked, &mut stopped).await {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use corebank_app::SystemClock;
    use corebank_backoff::Backoff;
    use corebank_store::{AppendRequest, ParkedConsumer, Stores};

    use super::*;
    use crate::test_support::envelope;

    /// Takes every event but those of one stream, which it refuses as corrupt; counts every try.
    #[derive(Default)]
    struct Refuser {
        tries: Mutex<BTreeMap<(String, u64), u32>>,
        taken: Mutex<Vec<(String, u64)>>,
    }

    #[async_trait]
    impl EventHandler for Refuser {
        async fn handle_event(&self, envelope: &EventEnvelope) -> Result<(), AppError> {
            let name = (envelope.stream_id.clone(), envelope.version);
            *self.tries.lock().unwrap().entry(name.clone()).or_default() += 1;
            if envelope.stream_id == "account-x" {
                return Err(AppError::Corrupt("refused".to_owned()));
            }
            self.taken.lock().unwrap().push(name);
            Ok(())
        }
    }

    async fn append(stores: &Stores, stream: &str, versions: std::ops::RangeInclusive<u64>) {
        let events: Vec<EventEnvelope> = versions.clone().map(|v| envelope(stream, v)).collect();
        let request = AppendRequest {
            stream_id: stream.to_owned(),
            expected_version: versions.start() - 1,
            events,
            idempotency: None,
            transaction: None,
        };
        stores.events.append(request).await.unwrap();
    }

    async fn projected(pipeline: &EmbeddedPipeline, position: u64) {
        let mut at = pipeline.projection.position.subscribe();
        tokio::time::timeout(Duration::from_secs(10), at.wait_for(|p| *p >= position))
            .await
            .expect("the lane moves on")
            .unwrap();
    }

    #[tokio::test]
    async fn a_lane_parks_a_stream_its_handler_refuses_for_good_and_moves_on() {
        let (stores, feed) = corebank_store::memory::stores();
        append(&stores, "account-a", 1..=2).await;
        append(&stores, "account-x", 1..=3).await;
        append(&stores, "account-a", 3..=3).await;
        let handler = Arc::new(Refuser::default());
        let pipeline = Arc::new(EmbeddedPipeline {
            feed,
            projection: Lane::new("projection", handler.clone()),
            saga: None,
        });
        let parking = |consumer| {
            Parking::new(stores.parked.clone(), consumer, Arc::new(SystemClock))
                .with_attempts(Backoff::from_millis(1, 1), 3)
        };
        pipeline.park_with(parking(ParkedConsumer::Projector), parking(ParkedConsumer::Saga));
        let (stop, stop_rx) = watch::channel(false);
        let running = tokio::spawn(pipeline.clone().run(async move {
            let mut stop_rx = stop_rx;
            let _ = stop_rx.wait_for(|s| *s).await;
        }));

        projected(&pipeline, 6).await;
        let taken = handler.taken.lock().unwrap().clone();
        assert_eq!(taken, [1, 2, 3].map(|v| ("account-a".to_owned(), v)).to_vec());
        assert_eq!(
            handler.tries.lock().unwrap()[&("account-x".to_owned(), 1)],
            3,
            "three tries, then parked"
        );
        assert!(!handler.tries.lock().unwrap().contains_key(&("account-x".to_owned(), 2)), "the rest waits");
        let parked = stores.parked.stream(ParkedConsumer::Projector, "account-x", 10).await.unwrap();
        assert_eq!(parked.iter().map(|r| r.position).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(parked[0].error, "corrupt data: refused");

        // A later batch parks the stream's new event behind, untried.
        append(&stores, "account-x", 4..=4).await;
        projected(&pipeline, 7).await;
        assert_eq!(stores.parked.stats().await.unwrap().count, 4);
        assert!(!handler.tries.lock().unwrap().contains_key(&("account-x".to_owned(), 4)));
        assert_eq!(pipeline.last_error(), None, "a parked stream is not a failing lane");

        stop.send(true).unwrap();
        running.await.unwrap();
    }
}
