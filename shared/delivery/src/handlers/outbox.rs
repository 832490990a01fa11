//! The `outbox-publisher` handler: DynamoDB Streams batches of the `events` table to Kafka.
//!
//! The table's stream is the outbox: every committed append shows up as one `INSERT` per event, with
//! the item as `NewImage`. [`handle_stream_event`] rebuilds each envelope from its image, publishes the
//! whole batch in one [`EventPublisher::publish`] call (which keeps one stream's events in input order
//! and returns only once every event is acknowledged or failed), and answers with the records that
//! were not acknowledged, so Lambda retries from the first of them and nothing else.
//!
//! What it assumes, and why that is enough:
//! - Delivery is at least once, and a retried batch republishes records that did reach Kafka: the
//!   projector skips what its checkpoint has seen.
//! - Records of one transaction may interleave with other transactions' records; only the order of
//!   one stream matters, and the batch is published in `(stream, version)` order whatever order the
//!   records came in.
//! - Events are immutable, so `MODIFY` and `REMOVE` carry nothing to publish and are ignored.
//! - A record that cannot be decoded is reported as failed and logged, never dropped: Lambda then
//!   retries it until the mapping's retry limit sends it to the on-failure destination, where an
//!   operator sees it.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use corebank_domain::EventEnvelope;
use corebank_messaging::{EventPublisher, PublishError};
use corebank_store::StoreError;
use corebank_store::dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use corebank_store::dynamodb::envelope_from_stream_image;

/// Why one stream record could not become an event to publish.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The `eventName` is none of `INSERT`, `MODIFY`, `REMOVE`.
    #[error("unknown eventName {0:?}")]
    UnknownEventName(String),
    /// The `NewImage` is not an event as the event store writes it (missing or mistyped attribute,
    /// payload that is not JSON, or no image at all because the stream is not `NEW_IMAGE`).
    #[error("NewImage is not an event item: {0}")]
    NotAnEvent(#[source] StoreError),
}

/// The event an `INSERT` record carries; `None` for `MODIFY` and `REMOVE`, which carry nothing to
/// publish because events are never changed or deleted.
pub fn envelope_from_record(record: &EventRecord) -> Result<Option<EventEnvelope>, RecordError> {
    match record.event_name.as_str() {
        "INSERT" => {}
        "MODIFY" | "REMOVE" => return Ok(None),
        other => return Err(RecordError::UnknownEventName(other.to_owned())),
    }
    let image: HashMap<String, AttributeValue> =
        record.change.new_image.iter().map(|(name, value)| (name.clone(), value.clone().into())).collect();
    envelope_from_stream_image(&image).map(Some).map_err(RecordError::NotAnEvent)
}

/// Publishes `batch` as the outbox publishes a stream batch: sorted so that each stream's events go in
/// version order (other streams' order is free), in one [`EventPublisher::publish`] call. Answers each
/// event, with the tag it came with, beside its outcome, in the order published. An event the publisher
/// gave no outcome for (a broken contract) counts as a transient failure, so it is tried again rather
/// than taken as published.
///
/// The republish tool ([`crate::republish`]) publishes what it reads from the events table through
/// this function too, so both send the same messages to the same topics with the same keys.
pub async fn publish_in_stream_order<T>(
    publisher: &dyn EventPublisher,
    mut batch: Vec<(T, EventEnvelope)>,
) -> Vec<(T, EventEnvelope, Result<(), PublishError>)> {
    batch.sort_by(|(_, a), (_, b)| (a.stream_id.as_str(), a.version).cmp(&(b.stream_id.as_str(), b.version)));
    let envelopes: Vec<EventEnvelope> = batch.iter().map(|(_, envelope)| envelope.clone()).collect();
    let outcomes = if envelopes.is_empty() { Vec::new() } else { publisher.publish(&envelopes).await };
    if outcomes.len() != envelopes.len() {
        tracing::error!(
            expected = envelopes.len(),
            got = outcomes.len(),
            "publisher broke its contract (one outcome per event); unanswered events count as failed"
        );
    }
    let mut outcomes = outcomes.into_iter();
    batch
        .into_iter()
        .map(|(tag, envelope)| {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(PublishError::Transient {
                    reason: "the publisher gave no outcome for this event".to_owned(),
                })
            });
            (tag, envelope, outcome)
        })
        .collect()
}

/// Publishes the events of one DynamoDB Streams batch and reports the records that were not
/// acknowledged (see the module docs).
///
/// Each failure names its record by `dynamodb.SequenceNumber`, as Lambda's `ReportBatchItemFailures`
/// expects. A failed record without a sequence number (never sent by Lambda) is reported with an empty
/// identifier, which Lambda treats as a failure of the whole batch: retrying too much is safe,
/// retrying too little is not.
#[tracing::instrument(name = "outbox_publish", skip_all, fields(records = event.records.len()))]
pub async fn handle_stream_event(event: Event, publisher: &dyn EventPublisher) -> DynamoDbEventResponse {
    let mut failed: Vec<usize> = Vec::new();
    let mut batch: Vec<(usize, EventEnvelope)> = Vec::with_capacity(event.records.len());
    for (index, record) in event.records.iter().enumerate() {
        match envelope_from_record(record) {
            Ok(Some(envelope)) => batch.push((index, envelope)),
            Ok(None) => {
                tracing::debug!(event_name = %record.event_name, sequence_number = ?record.change.sequence_number, "not an insert; events are immutable, nothing to publish");
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    event_id = %record.event_id,
                    sequence_number = ?record.change.sequence_number,
                    "undecodable stream record; reported as a batch item failure"
                );
                failed.push(index);
            }
        }
    }
    let mut published = 0_usize;
    for (index, envelope, outcome) in publish_in_stream_order(publisher, batch).await {
        match outcome {
            Ok(()) => published += 1,
            Err(err) => {
                if err.is_retryable() {
                    metrics::counter!(corebank_app::telemetry::DELIVERY_TRANSIENT_FAILURES, "stage" => "publisher")
                        .increment(1);
                    tracing::warn!(error = %err, stream_id = %envelope.stream_id, version = envelope.version, trace_id = envelope.metadata.trace_id.as_deref().unwrap_or_default(), "event not published; it will be retried");
                } else {
                    tracing::error!(error = %err, stream_id = %envelope.stream_id, version = envelope.version, "event refused by the bus; it will be retried until the mapping gives up");
                }
                failed.push(index);
            }
        }
    }
    failed.sort_unstable();
    failed.dedup();
    if !failed.is_empty() {
        tracing::warn!(published, failed = failed.len(), "batch partially published");
    }
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|index| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(
                event.records.get(index).and_then(|r| r.change.sequence_number.clone()).unwrap_or_default(),
            );
            failure
        })
        .collect();
    response
}
