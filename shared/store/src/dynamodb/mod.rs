//! DynamoDB adapters of every store port but [`EventFeed`](crate::EventFeed): DynamoDB's feed is its
//! table stream, which the outbox publisher reads.
//!
//! The adapters take a ready [`Client`] and the [`DynamoTables`] names, and never load AWS configuration
//! themselves, so a Lambda builds the client once per cold start and tests point it at a local server.
//! [`create_tables`] creates the tables from the JSON definitions in `infra/dynamodb/tables/`, which the
//! SAM template uses too.
//!
//! # Tables
//!
//! | table | key | holds |
//! |---|---|---|
//! | `events` | `stream_id` (S), `version` (N) | one item per event; stream `NEW_IMAGE`; sparse GSI `streams_by_id` |
//! | `idempotency` | `pk` (S) = `scope#key` | claims and completed responses; TTL on `expires_at_epoch` |
//! | `transactions` | `transaction_id` (S) | one record per business transaction id |
//! | `snapshots` | `stream_id` (S) | the newest snapshot of a stream |
//! | `account_summary` | `account_id` (S) | the summary row |
//! | `account_statement` | `account_id` (S), `stream_version` (N) | statement rows |
//! | `projection_checkpoints` | `stream_id` (S) | `checkpoint` (N) |
//! | `rebuild_jobs` | `rebuild_id` (S) | rebuild-all progress; parked records under `parked#..` keys |
//! | `transfer_status` | `transfer_id` (S) | the transfer status row; its `version` is its checkpoint |
//!
//! Why one table per record kind rather than a single-table design: the table stream then carries events
//! and nothing else, so the outbox publisher needs no filter and cannot publish a guard record by
//! mistake; TTL applies to idempotency records only; and each function's IAM policy names exactly the
//! tables it touches (the query functions cannot write the event store). The checkpoint stays in its own
//! table instead of on the summary item because it is keyed by stream while the summary is keyed by
//! account, and a change may move the checkpoint without having a summary row at all.
//!
//! # Append
//!
//! One `TransactWriteItems`: a `Put` per event conditioned on `attribute_not_exists(version)` (the stream
//! is not ahead of the writer), the transaction record (`attribute_not_exists`), the idempotency
//! completion (absent, or in progress under the writer's token), and, when `expected_version > 0`, a
//! `ConditionCheck` that item `(stream_id, expected_version)` exists (the stream is not behind the
//! writer: appending after a gap is refused). A cancellation is mapped by the index of the failed item:
//! an event or the check gives `VersionConflict`, the transaction record `TransactionExists`, the
//! idempotency item `IdempotencyClaimLost`.
//!
//! An append of [`MAX_EVENTS_PER_APPEND`](crate::MAX_EVENTS_PER_APPEND) events with both guards already
//! uses all 100 actions; the version check then runs as a consistent read just before the transaction
//! instead. That is as safe as the in-transaction check because events are never deleted: once item
//! `(stream_id, expected_version)` exists it keeps existing.
//!
//! # Listing streams
//!
//! The first event of every stream carries `stream_index = "streams"`, the partition key of the sparse
//! global secondary index `streams_by_id` (sort key `stream_id`, keys only). `list_streams` is then one
//! ordered `Query` with `begins_with` or `>` on the sort key, paged by DynamoDB, instead of a `Scan` of
//! every event. It costs no extra action in the append transaction (an extra marker item would push a
//! full append to 101). Two trade-offs, accepted for a listing that only rebuilds use: index reads are
//! eventually consistent (a stream created a moment ago may be missing; its live projection covers it),
//! and every stream creation writes the same index partition, which bounds account creation at about
//! 1,000 per second before the index throttles.
//!
//! # Read model
//!
//! `apply` writes the statement rows, the summary and the checkpoint in one transaction conditioned on
//! the checkpoint being the expected one. A change too large for one transaction writes its leading rows
//! first, in transactions that each carry a `ConditionCheck` of the checkpoint, and the rest with the
//! summary and checkpoint last; rows are keyed by `(account_id, stream_version)` and projected
//! deterministically from the events, so rows a failed attempt left behind are rewritten with the same
//! content by whoever moves the checkpoint. `replace` writes the rebuilt rows, deletes the rows the
//! rebuild no longer has, then sets the summary and checkpoint: a rebuild is idempotent and resumable,
//! so it needs no single transaction.
//!
//! # Limits
//!
//! - Events per append: [`MAX_EVENTS_PER_APPEND`](crate::MAX_EVENTS_PER_APPEND) (98), checked before the
//!   call.
//! - Item size: [`ITEM_SIZE_BYTES_MAX`] (400 KB), estimated from above and checked before the call.
//! - Transaction request size: [`TRANSACTION_SIZE_BYTES_MAX`] (4 MB), checked before the call.
//! - Contention (`TransactionConflict`, throttling) is retried [`CONTENTION_ATTEMPTS_MAX`] times with
//!   jittered exponential backoff; unprocessed batch items the same way.

mod codec;
mod events;
mod parked;
mod read_model;
mod records;
mod tables;
mod transfers;

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, WriteRequest};
pub use aws_sdk_dynamodb::{self, Client};
use corebank_backoff::Backoff;

pub use self::codec::envelope_from_stream_image;
pub use self::events::DynamoEventStore;
pub use self::parked::DynamoParkedRecordStore;
pub use self::read_model::DynamoReadModelStore;
pub use self::records::{DynamoRebuildJobStore, DynamoSnapshotStore};
pub use self::tables::create_tables;
pub use self::transfers::DynamoTransferStatusStore;
use crate::{StoreError, Stores};

/// The name of the sparse index on `events` that lists streams.
pub const STREAMS_INDEX: &str = "streams_by_id";

/// DynamoDB's limit on one item, names and values included.
pub const ITEM_SIZE_BYTES_MAX: usize = 400 * 1024;

/// DynamoDB's limit on the size of one `TransactWriteItems` request.
pub const TRANSACTION_SIZE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// DynamoDB's limit on actions in one `TransactWriteItems`.
pub const TRANSACTION_ACTIONS_MAX: usize = 100;

/// How often a write cancelled only by contention is tried before it counts as unavailable.
pub const CONTENTION_ATTEMPTS_MAX: u32 = 8;

/// Pauses between contended tries: 40 ms doubling to 1 s, anywhere below that (the writers race for
/// one item, and the sooner one of them wins the better).
const CONTENTION_BACKOFF: Backoff = Backoff::from_millis(40, 1_000).full_jitter();

/// `BatchWriteItem` takes at most this many requests.
const BATCH_WRITE_MAX: usize = 25;

/// The table names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoTables {
    /// Events, one item per event, streamed to the outbox publisher.
    pub events: String,
    /// Idempotency-Key claims and responses.
    pub idempotency: String,
    /// Business transaction records.
    pub transactions: String,
    /// Aggregate snapshots.
    pub snapshots: String,
    /// Account summary rows.
    pub account_summary: String,
    /// Account statement rows.
    pub account_statement: String,
    /// Projection checkpoints per stream.
    pub projection_checkpoints: String,
    /// Rebuild-all job records.
    pub rebuild_jobs: String,
    /// Transfer status rows.
    pub transfer_status: String,
}

impl DynamoTables {
    /// The tables `create_tables(client, prefix)` creates: `<prefix>events`, `<prefix>idempotency`, ...
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |suffix: &str| format!("{prefix}{suffix}");
        Self {
            events: name("events"),
            idempotency: name("idempotency"),
            transactions: name("transactions"),
            snapshots: name("snapshots"),
            account_summary: name("account_summary"),
            account_statement: name("account_statement"),
            projection_checkpoints: name("projection_checkpoints"),
            rebuild_jobs: name("rebuild_jobs"),
            transfer_status: name("transfer_status"),
        }
    }
}

/// Every port on DynamoDB, sharing one client.
pub fn stores(client: Client, tables: DynamoTables) -> Stores {
    let tables = Arc::new(tables);
    let events = Arc::new(DynamoEventStore::new(client.clone(), Arc::clone(&tables)));
    Stores {
        events: events.clone(),
        idempotency: events,
        snapshots: Arc::new(DynamoSnapshotStore::new(client.clone(), Arc::clone(&tables))),
        read_model: Arc::new(DynamoReadModelStore::new(client.clone(), Arc::clone(&tables))),
        transfers: Arc::new(DynamoTransferStatusStore::new(client.clone(), Arc::clone(&tables))),
        parked: Arc::new(DynamoParkedRecordStore::new(client.clone(), Arc::clone(&tables))),
        rebuilds: Arc::new(DynamoRebuildJobStore::new(client, tables)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// Translates an SDK failure: a request DynamoDB refuses as malformed is `Invalid`, everything else
/// (network, throttling after the SDK's own retries, service errors) is `Unavailable`.
pub(crate) fn sdk_error<E>(operation: &str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let validation = err.code() == Some("ValidationException");
    let text = format!("{operation}: {}", DisplayErrorContext(err));
    if validation { StoreError::Invalid(text) } else { StoreError::Unavailable(text) }
}

fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(format!("request could not be built: {}", DisplayErrorContext(err)))
}

pub(crate) fn check_item_size(item: &codec::Item) -> Result<usize, StoreError> {
    let size = codec::item_size(item);
    if size > ITEM_SIZE_BYTES_MAX {
        return Err(StoreError::LimitExceeded {
            what: "item size in bytes",
            limit: ITEM_SIZE_BYTES_MAX,
            actual: size,
        });
    }
    Ok(size)
}

// ---------------------------------------------------------------------------------------------------------
// Expressions and transaction actions
// ---------------------------------------------------------------------------------------------------------

/// A condition expression with its placeholders.
#[derive(Debug, Clone, Default)]
pub(crate) struct Condition {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Condition {
    pub(crate) fn new(expression: &str) -> Self {
        Self { expression: expression.to_owned(), ..Self::default() }
    }

    pub(crate) fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    pub(crate) fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// DynamoDB refuses empty placeholder maps, so an empty one is sent as none.
    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }

    pub(crate) fn expression(&self) -> &str {
        &self.expression
    }
}

pub(crate) fn put_action(
    table: &str,
    item: codec::Item,
    condition: Option<&Condition>,
) -> Result<TransactWriteItem, StoreError> {
    let mut put = Put::builder().table_name(table).set_item(Some(item));
    if let Some(c) = condition {
        put = put
            .condition_expression(c.expression())
            .set_expression_attribute_names(c.names())
            .set_expression_attribute_values(c.values());
    }
    Ok(TransactWriteItem::builder().put(put.build().map_err(build_error)?).build())
}

pub(crate) fn check_action(
    table: &str,
    key: codec::Item,
    condition: &Condition,
) -> Result<TransactWriteItem, StoreError> {
    let check = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key))
        .condition_expression(condition.expression())
        .set_expression_attribute_names(condition.names())
        .set_expression_attribute_values(condition.values())
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().condition_check(check).build())
}

pub(crate) fn delete_action(table: &str, key: codec::Item) -> Result<TransactWriteItem, StoreError> {
    let delete = Delete::builder().table_name(table).set_key(Some(key)).build().map_err(build_error)?;
    Ok(TransactWriteItem::builder().delete(delete).build())
}

/// Why DynamoDB cancelled one action of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The action was fine; another one cancelled the transaction.
    None,
    /// Its condition expression was false.
    ConditionalCheckFailed,
    /// Another transaction or a throttle held the item: retrying may succeed.
    Contention,
    /// Anything else, with DynamoDB's code and message.
    Other(String),
}

impl Reason {
    fn from_code(code: Option<&str>, message: Option<&str>) -> Self {
        match code {
            None | Some("None") => Self::None,
            Some("ConditionalCheckFailed") => Self::ConditionalCheckFailed,
            Some("TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded") => {
                Self::Contention
            }
            Some(other) => Self::Other(format!("{other}: {}", message.unwrap_or_default())),
        }
    }
}

/// A cancelled transaction: one reason per action, in request order.
#[derive(Debug)]
pub(crate) struct Cancelled {
    pub(crate) reasons: Vec<Reason>,
}

impl Cancelled {
    pub(crate) fn failed(&self, index: usize) -> bool {
        self.reasons.get(index) == Some(&Reason::ConditionalCheckFailed)
    }

    pub(crate) fn contended(&self, index: usize) -> bool {
        self.reasons.get(index) == Some(&Reason::Contention)
    }

    pub(crate) fn any_failed(&self) -> bool {
        self.reasons.contains(&Reason::ConditionalCheckFailed)
    }

    /// The error when no condition failed: contention that outlasted the retries, or an odd reason.
    pub(crate) fn into_error(self) -> StoreError {
        let validation = self.reasons.iter().find_map(|r| match r {
            Reason::Other(text) if text.starts_with("ValidationError") => Some(text.clone()),
            _ => None,
        });
        match validation {
            Some(text) => StoreError::Invalid(format!("TransactWriteItems: {text}")),
            None => StoreError::Unavailable(format!("TransactWriteItems cancelled: {:?}", self.reasons)),
        }
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(CONTENTION_BACKOFF.delay(attempt)).await;
}

/// Runs one `TransactWriteItems`. A cancellation in which no condition failed but some action met
/// contention is retried with jittered backoff, up to [`CONTENTION_ATTEMPTS_MAX`] attempts; a failed
/// condition is returned at once as [`Cancelled`], since trying again cannot change it.
///
/// The SDK gives each call a `ClientRequestToken`, so its own retries of a request whose answer was lost
/// cannot apply the transaction twice nor report a committed write as a failed condition.
pub(crate) async fn transact(
    client: &Client,
    actions: Vec<TransactWriteItem>,
) -> Result<Result<(), Cancelled>, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client.transact_write_items().set_transact_items(Some(actions.clone())).send().await;
        let err = match result {
            Ok(_) => return Ok(Ok(())),
            Err(err) => err,
        };
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
        let cancelled = match err.as_service_error() {
            Some(E::TransactionCanceledException(e)) => Cancelled {
                reasons: e
                    .cancellation_reasons()
                    .iter()
                    .map(|r| Reason::from_code(r.code(), r.message()))
                    .collect(),
            },
            Some(E::TransactionInProgressException(_)) if attempt < CONTENTION_ATTEMPTS_MAX => {
                backoff(attempt).await;
                continue;
            }
            _ => return Err(sdk_error("TransactWriteItems", err)),
        };
        let contended = cancelled.reasons.contains(&Reason::Contention);
        if !cancelled.any_failed() && contended && attempt < CONTENTION_ATTEMPTS_MAX {
            backoff(attempt).await;
            continue;
        }
        return Ok(Err(cancelled));
    }
}

/// Writes requests to one table with `BatchWriteItem`, 25 at a time, resending unprocessed items with
/// jittered backoff up to [`CONTENTION_ATTEMPTS_MAX`] times.
pub(crate) async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<(), StoreError> {
    for chunk in requests.chunks(BATCH_WRITE_MAX) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            if attempt > CONTENTION_ATTEMPTS_MAX {
                return Err(StoreError::Unavailable(format!(
                    "BatchWriteItem on {table}: {} items unprocessed after {CONTENTION_ATTEMPTS_MAX} attempts",
                    pending.len()
                )));
            }
            if attempt > 1 {
                backoff(attempt).await;
            }
            let output = client
                .batch_write_item()
                .request_items(table, std::mem::take(&mut pending))
                .send()
                .await
                .map_err(|e| sdk_error("BatchWriteItem", e))?;
            pending = output.unprocessed_items.and_then(|mut m| m.remove(table)).unwrap_or_default();
        }
    }
    Ok(())
}
