//! [`DynamoStreamPoller`]: the DynamoDB Streams event source mapping, emulated for hosts that are not
//! Lambda (the local runner, tests, benchmarks).
//!
//! In AWS, Lambda reads each shard of the table's stream in order, hands the function batches of
//! records as a [`aws_lambda_events::event::dynamodb::Event`], and, with `ReportBatchItemFailures`,
//! checkpoints before the lowest sequence number the function names in `batchItemFailures` and
//! retries from there. This poller does the same over the DynamoDB Streams API:
//!
//! 1. `ListStreams` for the table (the newest stream), then `DescribeStream` for its shards; the
//!    description is read again every [`StreamPollerConfig::shard_refresh_ms`] and whenever a shard
//!    ends, so shards created by a split are picked up. A child shard is read only after its parent
//!    is finished, which keeps one key's records in order across a split.
//! 2. Per shard, in order: `GetShardIterator` (`TRIM_HORIZON` the first time, `AFTER_SEQUENCE_NUMBER`
//!    of the in-memory checkpoint after a failure or an expired iterator), then `GetRecords` with the
//!    iterator each call returns.
//! 3. Records are turned into the exact JSON Lambda delivers ([`lambda_record_json`]; compare
//!    `shared/store/tests/fixtures/dynamodb_stream_insert.json`) and read back as the typed event the
//!    handler takes.
//! 4. After the handler: no failure moves the checkpoint past the batch; a failure moves it to just
//!    before the first failed record, drops the iterator and retries that shard after a jittered
//!    backoff that doubles up to [`StreamPollerConfig::retry_backoff_max_ms`]. Retries are not
//!    counted out (Lambda's default, until the record expires): the outbox stalls visibly rather than
//!    dropping an event.
//!
//! The checkpoint lives in memory, so a restarted poller starts again at `TRIM_HORIZON` and republishes
//! what the stream still holds (24 hours in AWS). That is at-least-once delivery, which every consumer
//! already tolerates.
//!
//! Limits: [`StreamPollerConfig::batch_size`] records per batch (at most 1,000, the `GetRecords`
//! maximum); an idle shard is polled every [`StreamPollerConfig::idle_poll_ms`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
pub use aws_sdk_dynamodbstreams;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corebank_backoff::Backoff;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// The `eventSource` of DynamoDB Streams records.
pub const EVENT_SOURCE_DYNAMODB: &str = "aws:dynamodb";

/// `GetRecords` returns at most this many records.
pub const GET_RECORDS_LIMIT_MAX: i32 = 1_000;

/// What one [`DynamoStreamPoller`] reads and how it paces itself.
#[derive(Debug, Clone)]
pub struct StreamPollerConfig {
    /// The table whose stream is read (the `events` table).
    pub table_name: String,
    /// Most records per batch (the mapping's `BatchSize`), 1 ..= 1,000.
    pub batch_size: i32,
    /// Pause after a round in which no shard had records.
    pub idle_poll_ms: u64,
    /// How often the shard list is read again.
    pub shard_refresh_ms: u64,
    /// First pause before retrying a failed batch or a failed call.
    pub retry_backoff_initial_ms: u64,
    /// Longest such pause.
    pub retry_backoff_max_ms: u64,
}

impl StreamPollerConfig {
    /// Default [`StreamPollerConfig::batch_size`], as the DynamoDB event source mapping.
    pub const DEFAULT_BATCH_SIZE: i32 = 100;
    /// Default [`StreamPollerConfig::idle_poll_ms`]: small, so that lag stays low.
    pub const DEFAULT_IDLE_POLL_MS: u64 = 50;
    /// Default [`StreamPollerConfig::shard_refresh_ms`].
    pub const DEFAULT_SHARD_REFRESH_MS: u64 = 1_000;
    /// Default [`StreamPollerConfig::retry_backoff_initial_ms`].
    pub const DEFAULT_RETRY_BACKOFF_INITIAL_MS: u64 = 50;
    /// Default [`StreamPollerConfig::retry_backoff_max_ms`].
    pub const DEFAULT_RETRY_BACKOFF_MAX_MS: u64 = 5_000;

    /// Settings for reading `table_name`'s stream, with every default.
    pub fn new(table_name: impl Into<String>) -> Self {
        Self {
            table_name: table_name.into(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
            idle_poll_ms: Self::DEFAULT_IDLE_POLL_MS,
            shard_refresh_ms: Self::DEFAULT_SHARD_REFRESH_MS,
            retry_backoff_initial_ms: Self::DEFAULT_RETRY_BACKOFF_INITIAL_MS,
            retry_backoff_max_ms: Self::DEFAULT_RETRY_BACKOFF_MAX_MS,
        }
    }

    /// The pauses after failures in a row: doubling from the initial pause to the maximum, the upper
    /// half jittered.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff::from_millis(self.retry_backoff_initial_ms, self.retry_backoff_max_ms)
    }
}

/// Why a polling round failed. The poller logs it, records it as its last error and tries again after
/// a backoff; it never stops on its own.
#[derive(Debug, thiserror::Error)]
pub enum StreamPollerError {
    /// A DynamoDB Streams call failed.
    #[error("{operation} failed: {message}")]
    Service {
        /// The API operation.
        operation: &'static str,
        /// The SDK's description.
        message: String,
    },
    /// The table has no stream (yet): stream creation is asynchronous, or the table is misconfigured.
    #[error("table {table} has no stream")]
    NoStream {
        /// The table.
        table: String,
    },
    /// The stream is gone (table deleted or stream disabled); the poller starts over with the newest one.
    #[error("stream {arn} no longer exists")]
    StreamGone {
        /// The stream ARN.
        arn: String,
    },
    /// Records could not be put into the shape Lambda delivers (a bug, or an attribute type this SDK
    /// version does not know).
    #[error("stream records could not be converted to a Lambda event: {0}")]
    Convert(#[source] serde_json::Error),
}

fn service<E>(operation: &'static str, err: &SdkError<E>) -> StreamPollerError
where
    E: std::error::Error + 'static,
{
    StreamPollerError::Service { operation, message: DisplayErrorContext(err).to_string() }
}

/// One attribute value in DynamoDB JSON (`{"S": "x"}`, `{"N": "1"}`, ...), as Lambda writes it.
fn attribute_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(v) => json!({ "S": v }),
        AttributeValue::N(v) => json!({ "N": v }),
        AttributeValue::B(v) => json!({ "B": BASE64.encode(v.as_ref()) }),
        AttributeValue::Bool(v) => json!({ "BOOL": v }),
        AttributeValue::Null(v) => json!({ "NULL": v }),
        AttributeValue::M(v) => json!({ "M": item_json(v) }),
        AttributeValue::L(v) => json!({ "L": v.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => {
            json!({ "BS": v.iter().map(|b| BASE64.encode(b.as_ref())).collect::<Vec<_>>() })
        }
        // A type added after this SDK version: `null` makes the conversion fail loudly.
        _ => Value::Null,
    }
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(item.iter().map(|(name, value)| (name.clone(), attribute_json(value))).collect())
}

/// The JSON of one stream record exactly as Lambda hands it to a function: `eventID`, `eventName`,
/// `eventVersion`, `eventSource`, `awsRegion`, `dynamodb` (`ApproximateCreationDateTime` in epoch
/// seconds, `Keys`, `NewImage`, `OldImage`, `SequenceNumber`, `SizeBytes`, `StreamViewType`), and the
/// stream's ARN as `eventSourceARN`. Fields the record lacks are left out, as Lambda does.
pub fn lambda_record_json(record: &Record, event_source_arn: &str) -> Value {
    let mut change = Map::new();
    if let Some(stream) = &record.dynamodb {
        if let Some(at) = &stream.approximate_creation_date_time {
            change.insert("ApproximateCreationDateTime".to_owned(), json!(at.secs()));
        }
        if let Some(keys) = &stream.keys {
            change.insert("Keys".to_owned(), item_json(keys));
        }
        if let Some(image) = &stream.new_image {
            change.insert("NewImage".to_owned(), item_json(image));
        }
        if let Some(image) = &stream.old_image {
            change.insert("OldImage".to_owned(), item_json(image));
        }
        if let Some(sequence_number) = &stream.sequence_number {
            change.insert("SequenceNumber".to_owned(), json!(sequence_number));
        }
        change.insert("SizeBytes".to_owned(), json!(stream.size_bytes.unwrap_or_default()));
        if let Some(view) = &stream.stream_view_type {
            change.insert("StreamViewType".to_owned(), json!(view.as_str()));
        }
    }
    let mut out = Map::new();
    out.insert("eventID".to_owned(), json!(record.event_id.clone().unwrap_or_default()));
    out.insert(
        "eventName".to_owned(),
        json!(record.event_name.as_ref().map(|name| name.as_str().to_owned()).unwrap_or_default()),
    );
    if let Some(version) = &record.event_version {
        out.insert("eventVersion".to_owned(), json!(version));
    }
    out.insert(
        "eventSource".to_owned(),
        json!(record.event_source.clone().unwrap_or_else(|| EVENT_SOURCE_DYNAMODB.to_owned())),
    );
    out.insert("awsRegion".to_owned(), json!(record.aws_region.clone().unwrap_or_default()));
    out.insert("dynamodb".to_owned(), Value::Object(change));
    out.insert("eventSourceARN".to_owned(), json!(event_source_arn));
    if let Some(identity) = &record.user_identity {
        out.insert(
            "userIdentity".to_owned(),
            json!({
                "type": identity.r#type.clone().unwrap_or_default(),
                "principalId": identity.principal_id.clone().unwrap_or_default(),
            }),
        );
    }
    Value::Object(out)
}

/// The batch Lambda would deliver for `records` of the stream `event_source_arn`, read through its
/// JSON so that the handler gets exactly what it would get from Lambda.
pub fn lambda_event_from_records(
    records: &[Record],
    event_source_arn: &str,
) -> Result<Event, serde_json::Error> {
    let json = json!({ "Records": records.iter().map(|r| lambda_record_json(r, event_source_arn)).collect::<Vec<_>>() });
    serde_json::from_value(json)
}

/// The index of the first record to retry after a handler answered `response` for `sequence_numbers`:
/// `None` when everything succeeded. An identifier that names no record of the batch (or none at all)
/// fails the whole batch, as Lambda treats it.
pub fn first_failed_index(
    sequence_numbers: &[Option<String>],
    response: &DynamoDbEventResponse,
) -> Option<usize> {
    response
        .batch_item_failures
        .iter()
        .map(|failure| match failure.item_identifier.as_deref() {
            Some(id) if !id.is_empty() => {
                sequence_numbers.iter().position(|s| s.as_deref() == Some(id)).unwrap_or(0)
            }
            _ => 0,
        })
        .min()
}

#[derive(Debug, Default)]
struct ShardCursor {
    parent: Option<String>,
    /// The last sequence number handed to the handler successfully.
    checkpoint: Option<String>,
    iterator: Option<String>,
    /// Closed and read to its end.
    finished: bool,
    failures: u32,
    not_before: Option<Instant>,
}

#[derive(Debug, Default)]
struct StreamCursor {
    arn: Option<String>,
    /// Shards in the order `DescribeStream` lists them (parents before children).
    shards: Vec<(String, ShardCursor)>,
    refreshed_at: Option<Instant>,
}

impl StreamCursor {
    fn finished(&self, shard_id: &str) -> Option<bool> {
        self.shards.iter().find(|(id, _)| id == shard_id).map(|(_, shard)| shard.finished)
    }
}

enum Polled {
    /// A batch went to the handler and succeeded.
    Delivered,
    /// Nothing new.
    Idle,
    /// The shard is closed and fully read.
    Finished,
    /// The handler reported failures; the shard waits for its backoff.
    Failed,
}

/// Reads a table's stream and hands Lambda-shaped batches to a handler (see the module docs).
pub struct DynamoStreamPoller {
    client: Client,
    config: StreamPollerConfig,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for DynamoStreamPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStreamPoller").field("config", &self.config).finish_non_exhaustive()
    }
}

impl DynamoStreamPoller {
    /// A poller over a ready DynamoDB Streams client.
    pub fn new(client: Client, config: StreamPollerConfig) -> Self {
        Self { client, config, last_error: Mutex::new(None) }
    }

    /// The settings.
    pub fn config(&self) -> &StreamPollerConfig {
        &self.config
    }

    /// The last failure (a failed call or a batch with failures), cleared by the next clean round.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// Delivers batches to `handler` until `shutdown` completes. A batch already in the handler when
    /// `shutdown` completes is allowed to finish.
    pub async fn run<H, Fut, S>(&self, handler: H, shutdown: S)
    where
        H: Fn(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
        S: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let mut cursor = StreamCursor::default();
        let mut failures: u32 = 0;
        loop {
            let pause = match self.round(&mut cursor, &handler).await {
                Ok(true) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(false) => {
                    failures = 0;
                    Duration::from_millis(self.config.idle_poll_ms)
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let pause = self.config.retry_backoff().delay(failures);
                    tracing::warn!(table = %self.config.table_name, error = %err, failures, "stream poll failed; retrying");
                    self.set_error(Some(err.to_string()));
                    pause
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass over every shard that may be read now. `Ok(true)` when some shard delivered records.
    async fn round<H, Fut>(&self, cursor: &mut StreamCursor, handler: &H) -> Result<bool, StreamPollerError>
    where
        H: Fn(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        let refresh_due = cursor
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(self.config.shard_refresh_ms));
        if cursor.arn.is_none() || refresh_due {
            self.refresh(cursor).await?;
        }
        let Some(arn) = cursor.arn.clone() else {
            return Err(StreamPollerError::NoStream { table: self.config.table_name.clone() });
        };
        let now = Instant::now();
        let ready: Vec<usize> = cursor
            .shards
            .iter()
            .enumerate()
            .filter(|(_, (_, shard))| {
                !shard.finished
                    && shard.not_before.is_none_or(|at| at <= now)
                    && shard.parent.as_deref().is_none_or(|p| cursor.finished(p).unwrap_or(true))
            })
            .map(|(index, _)| index)
            .collect();
        let mut delivered = false;
        let mut clean = true;
        for index in ready {
            let Some((shard_id, shard)) = cursor.shards.get_mut(index) else { continue };
            match self.poll_shard(&arn, shard_id, shard, handler).await {
                Ok(Polled::Delivered) => delivered = true,
                Ok(Polled::Idle) => {}
                Ok(Polled::Finished) => {
                    tracing::info!(shard_id = %shard_id, "shard closed and fully read");
                    // Its children may be listed by now.
                    cursor.refreshed_at = None;
                }
                Ok(Polled::Failed) => clean = false,
                Err(StreamPollerError::StreamGone { arn }) => {
                    *cursor = StreamCursor::default();
                    return Err(StreamPollerError::StreamGone { arn });
                }
                Err(err) => return Err(err),
            }
        }
        if clean && cursor.shards.iter().all(|(_, shard)| shard.failures == 0) {
            self.set_error(None);
        }
        Ok(delivered)
    }

    /// Finds the stream (once) and merges its current shard list into the cursor.
    async fn refresh(&self, cursor: &mut StreamCursor) -> Result<(), StreamPollerError> {
        if cursor.arn.is_none() {
            let listed = self
                .client
                .list_streams()
                .table_name(&self.config.table_name)
                .send()
                .await
                .map_err(|e| service("ListStreams", &e))?;
            // Stream labels are creation timestamps: the greatest is the table's current stream.
            let newest = listed
                .streams()
                .iter()
                .filter_map(|s| Some((s.stream_label.clone().unwrap_or_default(), s.stream_arn.clone()?)))
                .max();
            let Some((_, arn)) = newest else {
                return Err(StreamPollerError::NoStream { table: self.config.table_name.clone() });
            };
            tracing::info!(table = %self.config.table_name, stream_arn = %arn, "reading the table's stream");
            cursor.arn = Some(arn);
            cursor.shards.clear();
        }
        let Some(arn) = cursor.arn.clone() else { return Ok(()) };
        let mut listed: Vec<(String, Option<String>)> = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let described = self
                .client
                .describe_stream()
                .stream_arn(&arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await;
            let described = match described {
                Ok(out) => out,
                Err(e) if e.code() == Some("ResourceNotFoundException") => {
                    *cursor = StreamCursor::default();
                    return Err(StreamPollerError::StreamGone { arn });
                }
                Err(e) => return Err(service("DescribeStream", &e)),
            };
            let Some(description) = described.stream_description else { break };
            for shard in description.shards.unwrap_or_default() {
                if let Some(id) = shard.shard_id {
                    listed.push((id, shard.parent_shard_id));
                }
            }
            match description.last_evaluated_shard_id {
                Some(last) if start.as_deref() != Some(last.as_str()) => start = Some(last),
                _ => break,
            }
        }
        // Shards that aged out of the stream are forgotten once read; new ones start at TRIM_HORIZON.
        cursor.shards.retain(|(id, shard)| !shard.finished || listed.iter().any(|(l, _)| l == id));
        for (id, parent) in listed {
            if !cursor.shards.iter().any(|(known, _)| *known == id) {
                tracing::debug!(shard_id = %id, parent = ?parent, "new shard");
                cursor.shards.push((id, ShardCursor { parent, ..ShardCursor::default() }));
            }
        }
        cursor.refreshed_at = Some(Instant::now());
        Ok(())
    }

    async fn poll_shard<H, Fut>(
        &self,
        arn: &str,
        shard_id: &str,
        shard: &mut ShardCursor,
        handler: &H,
    ) -> Result<Polled, StreamPollerError>
    where
        H: Fn(Event) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        let iterator = match shard.iterator.take() {
            Some(iterator) => iterator,
            None => match self.shard_iterator(arn, shard_id, shard).await? {
                Some(iterator) => iterator,
                None => return Ok(Polled::Idle),
            },
        };
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(self.config.batch_size.clamp(1, GET_RECORDS_LIMIT_MAX))
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                return match e.code() {
                    // Iterators live 15 minutes; take a new one from the checkpoint next round.
                    Some("ExpiredIteratorException") => Ok(Polled::Idle),
                    Some("TrimmedDataAccessException") => {
                        self.trimmed(shard_id, shard);
                        Ok(Polled::Idle)
                    }
                    Some("ResourceNotFoundException") => {
                        Err(StreamPollerError::StreamGone { arn: arn.to_owned() })
                    }
                    _ => Err(service("GetRecords", &e)),
                };
            }
        };
        let next = output.next_shard_iterator;
        let records = output.records.unwrap_or_default();
        if records.is_empty() {
            return Ok(match next {
                Some(next) => {
                    shard.iterator = Some(next);
                    Polled::Idle
                }
                None => {
                    shard.finished = true;
                    Polled::Finished
                }
            });
        }
        let sequence_numbers: Vec<Option<String>> =
            records.iter().map(|r| r.dynamodb.as_ref().and_then(|d| d.sequence_number.clone())).collect();
        let event = lambda_event_from_records(&records, arn).map_err(StreamPollerError::Convert)?;
        tracing::debug!(shard_id, records = records.len(), "delivering a stream batch");
        let response = handler(event).await;
        match first_failed_index(&sequence_numbers, &response) {
            None => {
                if let Some(last) = sequence_numbers.iter().rev().flatten().next() {
                    shard.checkpoint = Some(last.clone());
                }
                shard.failures = 0;
                shard.not_before = None;
                match next {
                    Some(next) => {
                        shard.iterator = Some(next);
                        Ok(Polled::Delivered)
                    }
                    None => {
                        shard.finished = true;
                        Ok(Polled::Finished)
                    }
                }
            }
            Some(first) => {
                if let Some(before) =
                    first.checked_sub(1).and_then(|i| sequence_numbers.get(i)).cloned().flatten()
                {
                    shard.checkpoint = Some(before);
                }
                shard.failures = shard.failures.saturating_add(1);
                let pause = self.config.retry_backoff().delay(shard.failures);
                shard.not_before = Some(Instant::now() + pause);
                let message = format!(
                    "{} of {} stream records not handled; retrying shard {shard_id} from sequence number {} (attempt {})",
                    response.batch_item_failures.len(),
                    records.len(),
                    sequence_numbers.get(first).cloned().flatten().unwrap_or_default(),
                    shard.failures,
                );
                tracing::warn!(
                    retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "{message}"
                );
                self.set_error(Some(message));
                Ok(Polled::Failed)
            }
        }
    }

    /// A fresh iterator at the shard's checkpoint; `None` when the shard must be re-read from its start
    /// next round.
    async fn shard_iterator(
        &self,
        arn: &str,
        shard_id: &str,
        shard: &mut ShardCursor,
    ) -> Result<Option<String>, StreamPollerError> {
        let request = self.client.get_shard_iterator().stream_arn(arn).shard_id(shard_id);
        let request = match &shard.checkpoint {
            Some(sequence_number) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence_number),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        match request.send().await {
            Ok(output) => Ok(output.shard_iterator),
            Err(e) => match e.code() {
                Some("TrimmedDataAccessException") => {
                    self.trimmed(shard_id, shard);
                    Ok(None)
                }
                Some("ResourceNotFoundException") => {
                    Err(StreamPollerError::StreamGone { arn: arn.to_owned() })
                }
                _ => Err(service("GetShardIterator", &e)),
            },
        }
    }

    /// The checkpoint is older than the stream's retention: records were lost to the bus. Start again at
    /// the oldest record still held; the read side can be rebuilt from the event store.
    fn trimmed(&self, shard_id: &str, shard: &mut ShardCursor) {
        tracing::error!(
            table = %self.config.table_name,
            shard_id,
            checkpoint = ?shard.checkpoint,
            "stream records expired before they were delivered; restarting at TRIM_HORIZON (rebuild the read side)"
        );
        shard.checkpoint = None;
        shard.iterator = None;
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::streams::DynamoDbBatchItemFailure;

    use super::*;

    fn response(ids: &[Option<&str>]) -> DynamoDbEventResponse {
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = ids
            .iter()
            .map(|id| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = id.map(str::to_owned);
                failure
            })
            .collect();
        response
    }

    #[test]
    fn the_first_failed_record_is_the_lowest_position_named_and_unknown_names_fail_the_batch() {
        let seqs: Vec<Option<String>> = ["10", "11", "12"].iter().map(|s| Some((*s).to_owned())).collect();
        assert_eq!(first_failed_index(&seqs, &response(&[])), None);
        assert_eq!(first_failed_index(&seqs, &response(&[Some("12"), Some("11")])), Some(1));
        assert_eq!(first_failed_index(&seqs, &response(&[Some("12"), Some("99")])), Some(0));
        assert_eq!(first_failed_index(&seqs, &response(&[Some("")])), Some(0));
        assert_eq!(first_failed_index(&seqs, &response(&[None])), Some(0));
    }

    #[test]
    fn every_attribute_type_is_written_in_dynamodb_json() {
        use aws_sdk_dynamodbstreams::primitives::Blob;
        let item = HashMap::from([
            ("s".to_owned(), AttributeValue::S("x".to_owned())),
            ("n".to_owned(), AttributeValue::N("1".to_owned())),
            ("b".to_owned(), AttributeValue::B(Blob::new(b"hi".to_vec()))),
            ("t".to_owned(), AttributeValue::Bool(true)),
            ("z".to_owned(), AttributeValue::Null(true)),
            ("l".to_owned(), AttributeValue::L(vec![AttributeValue::N("2".to_owned())])),
            (
                "m".to_owned(),
                AttributeValue::M(HashMap::from([("k".to_owned(), AttributeValue::S("v".to_owned()))])),
            ),
            ("ss".to_owned(), AttributeValue::Ss(vec!["a".to_owned()])),
            ("ns".to_owned(), AttributeValue::Ns(vec!["3".to_owned()])),
            ("bs".to_owned(), AttributeValue::Bs(vec![Blob::new(b"yo".to_vec())])),
        ]);
        assert_eq!(
            item_json(&item),
            json!({
                "s": {"S": "x"}, "n": {"N": "1"}, "b": {"B": "aGk="}, "t": {"BOOL": true}, "z": {"NULL": true},
                "l": {"L": [{"N": "2"}]}, "m": {"M": {"k": {"S": "v"}}}, "ss": {"SS": ["a"]}, "ns": {"NS": ["3"]},
                "bs": {"BS": ["eW8="]},
            })
        );
    }
}
