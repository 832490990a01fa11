//! Republishing a time range of the DynamoDB `events` table to Kafka: for the day an event was never
//! published and its DynamoDB stream record is gone (the stream keeps records 24 h).
//!
//! The table is read with a parallel `Scan` (`segments` segments, each paged by `page_items`), every
//! item is decoded exactly as the `outbox-publisher` decodes a stream image
//! ([`envelope_from_stream_image`]), the events whose `occurred_at` falls in the window are kept, and
//! each page's events go through [`publish_in_stream_order`], the outbox publisher's own path: the same
//! [`EventPublisher`] (the Kafka one in production), so the same topic, key and payload. Events of one
//! stream live in one partition of the table, so one segment reads them, in version order, and
//! publishes them in that order.
//!
//! Republishing is safe: every consumer skips what it has seen. The projector skips events at or below
//! its per-stream checkpoint (the account read tables and `transfer_status`), and the saga loads the
//! transfer from the event store and does only the steps left, each leg under its own idempotency
//! key and transaction id. Running the same window twice publishes it twice and changes nothing
//! downstream.
//!
//! # The window
//!
//! `from <= occurred_at < to`, `occurred_at` being the time the engine stamped on the event when it
//! decided the command, just before the append committed it. The store writes it as RFC 3339 UTC text
//! with as many fractional digits as it has, so the filter DynamoDB applies compares whole seconds
//! only (the 19-character prefix `YYYY-MM-DDTHH:MM:SS`, which orders like the instant) and the exact
//! bounds are applied to each decoded event.
//!
//! # Limits
//!
//! - Memory: at most `segments * page_items` events at a time (one page per segment).
//! - `segments`: 1..=[`SEGMENTS_MAX`]; `page_items`: 1..=[`PAGE_ITEMS_MAX`] (items evaluated per
//!   `Scan` request, before the filter).
//! - Retries: a page's scan and each event's publication are tried at most `attempts_max` times,
//!   pausing by `backoff` between tries; only transient failures (throttling, timeouts, a broker that is
//!   down) are retried. An event the bus refuses, or that fails every try, is counted as failed and
//!   logged with its stream and version; the run goes on and ends with the count.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corebank_backoff::{Attempts, Backoff};
use corebank_domain::EventEnvelope;
use corebank_messaging::{EventPublisher, PublishError, Topics};
use corebank_store::StoreError;
use corebank_store::dynamodb::aws_sdk_dynamodb::error::{
    DisplayErrorContext, ProvideErrorMetadata, SdkError,
};
use corebank_store::dynamodb::aws_sdk_dynamodb::operation::scan::ScanError;
use corebank_store::dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use corebank_store::dynamodb::{Client, envelope_from_stream_image};
use serde::Serialize;

use crate::handlers::outbox::publish_in_stream_order;

/// Most parallel `Scan` segments.
pub const SEGMENTS_MAX: u32 = 64;
/// Most items one `Scan` request evaluates (DynamoDB answers at most 1 MB whatever the limit).
pub const PAGE_ITEMS_MAX: u32 = 1_000;

/// The exact `occurred_at` prefix the filter compares: `YYYY-MM-DDTHH:MM:SS`.
const SECONDS_PREFIX: &str = "%Y-%m-%dT%H:%M:%S";

/// Why a republish could not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepublishError {
    /// `from` is not before `to`.
    #[error("the window is empty: from {from} is not before to {to}")]
    EmptyWindow {
        /// Start, inclusive.
        from: DateTime<Utc>,
        /// End, exclusive.
        to: DateTime<Utc>,
    },
    /// A setting is outside its bounds.
    #[error("{name} = {value} is outside 1..={max}")]
    OutOfBounds {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u32,
        /// Its upper bound.
        max: u32,
    },
    /// A `Scan` request failed for good (after retries, or at once when retrying cannot help).
    #[error("scanning segment {segment} failed: {source}")]
    Scan {
        /// The segment.
        segment: u32,
        /// The cause.
        #[source]
        source: StoreError,
    },
}

/// The half-open range of `occurred_at` to republish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Window {
    /// `from <= occurred_at < to`; refused when empty.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Self, RepublishError> {
        if from < to { Ok(Self { from, to }) } else { Err(RepublishError::EmptyWindow { from, to }) }
    }

    /// The start, inclusive.
    pub fn from(&self) -> DateTime<Utc> {
        self.from
    }

    /// The end, exclusive.
    pub fn to(&self) -> DateTime<Utc> {
        self.to
    }

    /// Whether `at` is in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.to
    }

    /// Text bounds `[low, high)` that every `occurred_at` in the window lies within when compared as
    /// strings: whole seconds, `from` rounded down and `to` rounded up.
    fn text_bounds(&self) -> (String, String) {
        let low = self.from.format(SECONDS_PREFIX).to_string();
        let whole = self.to.timestamp();
        let high_seconds = if self.to.timestamp_subsec_nanos() > 0 { whole.saturating_add(1) } else { whole };
        let high = DateTime::from_timestamp(high_seconds, 0).map_or_else(
            || self.to.format(SECONDS_PREFIX).to_string(),
            |t| t.format(SECONDS_PREFIX).to_string(),
        );
        (low, high)
    }
}

/// What to republish, and how.
#[derive(Debug, Clone)]
pub struct RepublishOptions {
    /// The range of `occurred_at`.
    pub window: Window,
    /// Only streams whose id starts with this (`account-`, `transfer-`, `account-acc-1`, ...).
    pub stream_prefix: Option<String>,
    /// Read and count, publish nothing.
    pub dry_run: bool,
    /// Parallel `Scan` segments (1..=[`SEGMENTS_MAX`]).
    pub segments: u32,
    /// Items per `Scan` request (1..=[`PAGE_ITEMS_MAX`]).
    pub page_items: u32,
    /// Tries per page scan and per event publication, the first included.
    pub attempts_max: u32,
    /// Pauses between tries.
    pub backoff: Backoff,
    /// Least time between two progress lines.
    pub progress_every: Duration,
}

impl RepublishOptions {
    /// Defaults for `window`: every stream, 4 segments of 500-item pages, 8 tries pausing 200 ms
    /// doubling to 10 s, a progress line every 5 s.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            stream_prefix: None,
            dry_run: false,
            segments: 4,
            page_items: 500,
            attempts_max: 8,
            backoff: Backoff::from_millis(200, 10_000),
            progress_every: Duration::from_secs(5),
        }
    }

    fn check(&self) -> Result<(), RepublishError> {
        let bounded = |name: &'static str, value: u32, max: u32| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(RepublishError::OutOfBounds { name, value, max })
            }
        };
        bounded("segments", self.segments, SEGMENTS_MAX)?;
        bounded("page_items", self.page_items, PAGE_ITEMS_MAX)?;
        bounded("attempts_max", self.attempts_max, u32::MAX)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepublishSummary {
    /// Items the scans evaluated (the whole table, once).
    pub scanned: u64,
    /// Events in the window (and under the prefix) read from the table.
    pub read: u64,
    /// Of those, events the bus acknowledged (0 in a dry run).
    pub published: u64,
    /// Of those, events not published: refused by the bus, or failing every try.
    pub failed: u64,
    /// Items the scan returned that are not events as the store writes them (logged).
    pub undecodable: u64,
    /// Events read per topic (in a dry run, the topic they would go to).
    pub by_topic: BTreeMap<String, u64>,
    /// Whether nothing was published on purpose.
    pub dry_run: bool,
}

/// Counters the segments share.
#[derive(Default)]
struct Tally {
    pages: AtomicU64,
    scanned: AtomicU64,
    read: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
    undecodable: AtomicU64,
    by_topic: Mutex<BTreeMap<String, u64>>,
    last_progress: Mutex<Option<Instant>>,
}

impl Tally {
    fn add_topic(&self, topic: &str) {
        let mut by_topic = self.by_topic.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *by_topic.entry(topic.to_owned()).or_default() += 1;
    }

    /// A progress line, at most once per `every`.
    fn progress(&self, every: Duration, started: Instant) {
        let mut last = self.last_progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < every) {
            return;
        }
        *last = Some(now);
        tracing::info!(
            pages = self.pages.load(Ordering::Relaxed),
            scanned = self.scanned.load(Ordering::Relaxed),
            read = self.read.load(Ordering::Relaxed),
            published = self.published.load(Ordering::Relaxed),
            failed = self.failed.load(Ordering::Relaxed),
            elapsed_s = started.elapsed().as_secs(),
            "republish progress"
        );
    }

    fn summary(&self, dry_run: bool) -> RepublishSummary {
        RepublishSummary {
            scanned: self.scanned.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
            by_topic: self.by_topic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            dry_run,
        }
    }
}

/// Reads the window of `table` and publishes it with `publisher` (see the module docs). `topics` names
/// the topic each event counts under in the summary; pass the publisher's own.
#[tracing::instrument(name = "republish", skip_all, fields(table = %table, from = %options.window.from, to = %options.window.to))]
pub async fn republish(
    client: &Client,
    table: &str,
    topics: &Topics,
    publisher: &dyn EventPublisher,
    options: &RepublishOptions,
) -> Result<RepublishSummary, RepublishError> {
    options.check()?;
    let started = Instant::now();
    let tally = Tally::default();
    let run = Segment { client, table, topics, publisher, options, tally: &tally, started };
    let segments = (0..options.segments).map(|segment| run.scan(segment));
    futures_util::future::try_join_all(segments).await?;
    let summary = tally.summary(options.dry_run);
    tracing::info!(
        scanned = summary.scanned,
        read = summary.read,
        published = summary.published,
        failed = summary.failed,
        undecodable = summary.undecodable,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "republish finished"
    );
    Ok(summary)
}

/// One run's shared parts, scanning one segment at a time.
struct Segment<'a> {
    client: &'a Client,
    table: &'a str,
    topics: &'a Topics,
    publisher: &'a dyn EventPublisher,
    options: &'a RepublishOptions,
    tally: &'a Tally,
    started: Instant,
}

/// Whether trying a failed `Scan` again may succeed: throttling, a server error, or a request that
/// never got an answer.
fn scan_retryable(err: &SdkError<ScanError>) -> bool {
    match err {
        SdkError::ServiceError(_) => matches!(
            err.code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            )
        ),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

impl Segment<'_> {
    async fn scan(&self, segment: u32) -> Result<(), RepublishError> {
        let (low, high) = self.options.window.text_bounds();
        let mut filter = "#at >= :low AND #at < :high".to_owned();
        if self.options.stream_prefix.is_some() {
            filter.push_str(" AND begins_with(stream_id, :prefix)");
        }
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let mut attempts = Attempts::new(self.options.backoff, self.options.attempts_max);
            let output = loop {
                let mut request = self
                    .client
                    .scan()
                    .table_name(self.table)
                    .segment(i32::try_from(segment).unwrap_or(0))
                    .total_segments(i32::try_from(self.options.segments).unwrap_or(1))
                    .limit(i32::try_from(self.options.page_items).unwrap_or(1))
                    .consistent_read(true)
                    .filter_expression(&filter)
                    .expression_attribute_names("#at", "occurred_at")
                    .expression_attribute_values(":low", AttributeValue::S(low.clone()))
                    .expression_attribute_values(":high", AttributeValue::S(high.clone()))
                    .set_exclusive_start_key(start.clone());
                if let Some(prefix) = &self.options.stream_prefix {
                    request =
                        request.expression_attribute_values(":prefix", AttributeValue::S(prefix.clone()));
                }
                match request.send().await {
                    Ok(output) => break output,
                    Err(err) => {
                        let retry = if scan_retryable(&err) { attempts.failed() } else { None };
                        let text = format!("Scan: {}", DisplayErrorContext(&err));
                        let Some(pause) = retry else {
                            return Err(RepublishError::Scan {
                                segment,
                                source: StoreError::Unavailable(text),
                            });
                        };
                        tracing::warn!(segment, error = %text, "scan failed; trying again");
                        tokio::time::sleep(pause).await;
                    }
                }
            };
            let scanned = u64::try_from(output.scanned_count()).unwrap_or(0);
            self.tally.scanned.fetch_add(scanned, Ordering::Relaxed);
            self.tally.pages.fetch_add(1, Ordering::Relaxed);
            let mut page = Vec::with_capacity(output.items().len());
            for item in output.items() {
                match envelope_from_stream_image(item) {
                    Ok(envelope) if self.wanted(&envelope) => page.push(((), envelope)),
                    Ok(_) => {}
                    Err(err) => {
                        let key = item.get("stream_id").zip(item.get("version"));
                        tracing::error!(segment, error = %err, ?key, "an item of the events table is not an event; skipped");
                        self.tally.undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.publish(page).await;
            self.tally.progress(self.options.progress_every, self.started);
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }

    fn wanted(&self, envelope: &EventEnvelope) -> bool {
        self.options.window.contains(envelope.occurred_at)
            && self.options.stream_prefix.as_deref().is_none_or(|p| envelope.stream_id.starts_with(p))
    }

    /// Publishes one page's events, trying the transient failures again.
    async fn publish(&self, page: Vec<((), EventEnvelope)>) {
        self.tally.read.fetch_add(page.len() as u64, Ordering::Relaxed);
        for (_, envelope) in &page {
            match self.topics.topic_for(&envelope.stream_id) {
                Ok(topic) => self.tally.add_topic(topic),
                Err(_) => self.tally.add_topic("(none)"),
            }
        }
        if self.options.dry_run || page.is_empty() {
            return;
        }
        let mut attempts = Attempts::new(self.options.backoff, self.options.attempts_max);
        let mut pending = page;
        while !pending.is_empty() {
            let mut again = Vec::new();
            let mut last_error: Option<PublishError> = None;
            for (tag, envelope, outcome) in publish_in_stream_order(self.publisher, pending).await {
                match outcome {
                    Ok(()) => {
                        self.tally.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) if err.is_retryable() => {
                        again.push((tag, envelope));
                        last_error = Some(err);
                    }
                    Err(err) => {
                        tracing::error!(error = %err, stream_id = %envelope.stream_id, version = envelope.version, "event refused by the bus; not republished");
                        self.tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            match attempts.failed() {
                Some(pause) => {
                    tracing::warn!(events = again.len(), error = ?last_error.map(|e| e.to_string()), "events not published; trying again");
                    tokio::time::sleep(pause).await;
                    pending = again;
                }
                None => {
                    for (_, envelope) in &again {
                        tracing::error!(stream_id = %envelope.stream_id, version = envelope.version, tries = attempts.failures(), error = ?last_error.as_ref().map(ToString::to_string), "event not published after every try");
                    }
                    self.tally.failed.fetch_add(again.len() as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_text_bounds_hold_every_instant_of_the_window_and_compare_like_instants() {
        let window = Window::new(at("2026-01-02T03:04:05.250Z"), at("2026-01-02T04:00:00.5Z")).unwrap();
        assert_eq!(
            window.text_bounds(),
            ("2026-01-02T03:04:05".to_owned(), "2026-01-02T04:00:01".to_owned())
        );
        let whole = Window::new(at("2026-01-02T03:04:05Z"), at("2026-01-02T04:00:00Z")).unwrap();
        assert_eq!(whole.text_bounds().1, "2026-01-02T04:00:00");
        // As the store writes it: a whole second without fraction, others with one; both inside.
        let (low, high) = window.text_bounds();
        for stored in ["2026-01-02T03:04:05Z", "2026-01-02T03:04:05.1Z", "2026-01-02T04:00:00.999999999Z"] {
            assert!(stored >= low.as_str() && stored < high.as_str(), "{stored}");
        }
        assert!("2026-01-02T03:04:04.999Z" < low.as_str());
    }

    #[test]
    fn the_window_is_half_open_and_never_empty() {
        let from = Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 1, 2, 4, 0, 0).unwrap();
        let window = Window::new(from, to).unwrap();
        assert!(window.contains(from));
        assert!(!window.contains(to));
        assert!(matches!(Window::new(to, from), Err(RepublishError::EmptyWindow { .. })));
        assert!(matches!(Window::new(from, from), Err(RepublishError::EmptyWindow { .. })));
    }

    #[test]
    fn settings_outside_their_bounds_are_refused() {
        let window = Window::new(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), Utc::now()).unwrap();
        let mut options = RepublishOptions::new(window);
        assert!(options.check().is_ok());
        options.segments = 65;
        assert!(matches!(options.check(), Err(RepublishError::OutOfBounds { name: "segments", .. })));
        options.segments = 1;
        options.page_items = 0;
        assert!(matches!(options.check(), Err(RepublishError::OutOfBounds { name: "page_items", .. })));
    }
}
