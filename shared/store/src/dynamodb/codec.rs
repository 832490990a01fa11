//! Attribute values in and out: every record of the store as a DynamoDB item.
//!
//! Numbers that the domain treats as integers (versions, minor units, epoch instants) are `N`, never a
//! float; timestamps are RFC 3339 strings with every digit chrono holds, so they read back exactly;
//! free-form JSON (event payload and metadata, snapshot state) is one `S` holding its text.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use corebank_domain::{AccountStatus, Currency, EventEnvelope, EventMetadata};
use uuid::Uuid;

use crate::{
    AccountSummary, IdempotencyKey, IdempotencyRecord, IdempotencyState, RebuildJob, RebuildStatus, Snapshot,
    StatementEntry, StoreError, StoredResponse, TransactionIntent, TransactionRecord,
};

/// One DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The value of `stream_index` on the first event of every stream: the partition of the sparse
/// `streams_by_id` index that lists streams.
pub(crate) const STREAM_INDEX_PARTITION: &str = "streams";

/// `state` of an idempotency record whose request is still running.
pub(crate) const IN_PROGRESS: &str = "IN_PROGRESS";
/// `state` of an idempotency record that holds its response.
pub(crate) const COMPLETED: &str = "COMPLETED";

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// An instant as RFC 3339 text with all of its sub-second digits, in UTC.
pub(crate) fn time(at: DateTime<Utc>) -> AttributeValue {
    s(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// An instant as exact nanoseconds since the epoch, for comparisons inside condition expressions.
pub(crate) fn nanos(at: DateTime<Utc>) -> AttributeValue {
    n(epoch_nanos(at))
}

pub(crate) fn epoch_nanos(at: DateTime<Utc>) -> i128 {
    i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos())
}

/// Epoch seconds rounded up, for the TTL attribute: DynamoDB never deletes a record before it expires.
pub(crate) fn ttl_epoch_seconds(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

fn corrupt(table_item: &str, what: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{table_item}: {what}"))
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(corrupt(name, "is not a string")),
        None => Err(corrupt(name, "is missing")),
    }
}

pub(crate) fn opt_s(item: &Item, name: &str) -> Result<Option<String>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(_) => Err(corrupt(name, "is not a string")),
    }
}

pub(crate) fn get_n<T: FromStr>(item: &Item, name: &str) -> Result<T, StoreError>
where
    T::Err: Display,
{
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|e| corrupt(name, format!("{v:?}: {e}"))),
        Some(_) => Err(corrupt(name, "is not a number")),
        None => Err(corrupt(name, "is missing")),
    }
}

pub(crate) fn opt_n<T: FromStr>(item: &Item, name: &str) -> Result<Option<T>, StoreError>
where
    T::Err: Display,
{
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_n(item, name).map(Some),
    }
}

pub(crate) fn get_time(item: &Item, name: &str) -> Result<DateTime<Utc>, StoreError> {
    let text = get_s(item, name)?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(name, format!("{text:?}: {e}")))
}

fn get_uuid(item: &Item, name: &str) -> Result<Uuid, StoreError> {
    let text = get_s(item, name)?;
    Uuid::parse_str(text).map_err(|e| corrupt(name, format!("{text:?}: {e}")))
}

fn get_json<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> Result<T, StoreError> {
    serde_json::from_str(get_s(item, name)?).map_err(|e| corrupt(name, e))
}

fn json_text(value: &impl serde::Serialize, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("{what} is not serialisable: {e}")))
}

fn currency(item: &Item, name: &str) -> Result<Currency, StoreError> {
    let code = get_s(item, name)?;
    Currency::parse(code).map_err(|e| corrupt(name, e))
}

// ---------------------------------------------------------------------------------------------------------
// Item size
// ---------------------------------------------------------------------------------------------------------

/// An upper bound of the size DynamoDB charges an item with, after the rules in the developer guide
/// ("Item sizes and formats"): names and strings by their UTF-8 length, numbers by at most one byte per
/// digit plus one, and three bytes plus one per element for lists and maps.
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(v) => v.len(),
        AttributeValue::N(v) => v.len() + 1,
        AttributeValue::B(v) => v.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|x| x.len() + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|x| x.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(v) => 3 + v.iter().map(|(k, x)| 1 + k.len() + value_size(x)).sum::<usize>(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        // A variant added after this SDK version: count it generously rather than not at all.
        _ => 1024,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Events and guards
// ---------------------------------------------------------------------------------------------------------

/// An event as an `events` item. The first event of a stream also carries `stream_index`, which puts the
/// stream into the sparse `streams_by_id` index that `list_streams` reads.
pub(crate) fn event_item(event: &EventEnvelope) -> Result<Item, StoreError> {
    let mut item = Item::from([
        ("stream_id".to_owned(), s(&event.stream_id)),
        ("version".to_owned(), n(event.version)),
        ("event_id".to_owned(), s(event.event_id.to_string())),
        ("event_type".to_owned(), s(&event.event_type)),
        ("schema_version".to_owned(), n(event.schema_version)),
        ("occurred_at".to_owned(), time(event.occurred_at)),
        ("payload".to_owned(), s(json_text(&event.payload, "event payload")?)),
        ("metadata".to_owned(), s(json_text(&event.metadata, "event metadata")?)),
    ]);
    if event.version == 1 {
        item.insert("stream_index".to_owned(), s(STREAM_INDEX_PARTITION));
    }
    Ok(item)
}

pub(crate) fn event_from_item(item: &Item) -> Result<EventEnvelope, StoreError> {
    let metadata: EventMetadata = get_json(item, "metadata")?;
    Ok(EventEnvelope {
        event_id: get_uuid(item, "event_id")?,
        stream_id: get_s(item, "stream_id")?.to_owned(),
        version: get_n(item, "version")?,
        event_type: get_s(item, "event_type")?.to_owned(),
        schema_version: get_n(item, "schema_version")?,
        occurred_at: get_time(item, "occurred_at")?,
        payload: get_json(item, "payload")?,
        metadata,
    })
}

/// Rebuilds the event an `events` item holds from its DynamoDB Streams image (`NewImage` of an
/// `INSERT`): the image is the item exactly as the append wrote it, so this is the inverse of the
/// append's encoding. A missing or mistyped attribute is [`StoreError::Corrupt`].
pub fn envelope_from_stream_image(
    image: &HashMap<String, AttributeValue>,
) -> Result<EventEnvelope, StoreError> {
    event_from_item(image)
}

/// The partition key of an idempotency record. Scopes are fixed names chosen by the application, so
/// refusing a `#` in them keeps the key unambiguous whatever the client's key holds.
pub(crate) fn idempotency_pk(key: &IdempotencyKey) -> Result<String, StoreError> {
    if key.scope.contains('#') {
        return Err(StoreError::Invalid(format!("idempotency scope {:?} contains '#'", key.scope)));
    }
    Ok(format!("{}#{}", key.scope, key.key))
}

fn idempotency_base(
    key: &IdempotencyKey,
    operation: &str,
    request_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<Item, StoreError> {
    Ok(Item::from([
        ("pk".to_owned(), s(idempotency_pk(key)?)),
        ("scope".to_owned(), s(&key.scope)),
        ("idempotency_key".to_owned(), s(&key.key)),
        ("operation".to_owned(), s(operation)),
        ("request_hash".to_owned(), s(request_hash)),
        ("expires_at".to_owned(), time(expires_at)),
        ("expires_at_ns".to_owned(), nanos(expires_at)),
        ("expires_at_epoch".to_owned(), n(ttl_epoch_seconds(expires_at))),
    ]))
}

pub(crate) fn claim_item(claim: &crate::IdempotencyClaim) -> Result<Item, StoreError> {
    let mut item = idempotency_base(&claim.key, &claim.operation, &claim.request_hash, claim.expires_at)?;
    item.insert("state".to_owned(), s(IN_PROGRESS));
    item.insert("claim_token".to_owned(), s(claim.claim_token.to_string()));
    item.insert("lease_expires_at".to_owned(), time(claim.lease_expires_at));
    item.insert("lease_expires_at_ns".to_owned(), nanos(claim.lease_expires_at));
    Ok(item)
}

pub(crate) fn completion_item(completion: &crate::IdempotencyCompletion) -> Result<Item, StoreError> {
    let mut item = idempotency_base(
        &completion.key,
        &completion.operation,
        &completion.request_hash,
        completion.expires_at,
    )?;
    item.insert("state".to_owned(), s(COMPLETED));
    insert_response(&mut item, &completion.response);
    Ok(item)
}

/// A stored response's attributes: `response_status`, `response_body` and, for a rejection,
/// `response_code`.
fn insert_response(item: &mut Item, response: &StoredResponse) {
    item.insert("response_status".to_owned(), n(response.status));
    item.insert("response_body".to_owned(), s(&response.body));
    if let Some(code) = &response.code {
        item.insert("response_code".to_owned(), s(code));
    }
}

/// Reads what [`insert_response`] wrote; an item written before `response_code` existed reads with
/// the rule of [`StoredResponse::read_back`].
fn response_from_item(item: &Item) -> Result<StoredResponse, StoreError> {
    Ok(StoredResponse::read_back(
        get_n(item, "response_status")?,
        get_s(item, "response_body")?.to_owned(),
        opt_s(item, "response_code")?,
    ))
}

pub(crate) fn idempotency_from_item(item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let state = match get_s(item, "state")? {
        IN_PROGRESS => IdempotencyState::InProgress {
            claim_token: get_uuid(item, "claim_token")?,
            lease_expires_at: get_time(item, "lease_expires_at")?,
        },
        COMPLETED => IdempotencyState::Completed(response_from_item(item)?),
        other => return Err(corrupt("state", format!("unknown idempotency state {other:?}"))),
    };
    Ok(IdempotencyRecord {
        key: IdempotencyKey {
            scope: get_s(item, "scope")?.to_owned(),
            key: get_s(item, "idempotency_key")?.to_owned(),
        },
        operation: get_s(item, "operation")?.to_owned(),
        request_hash: get_s(item, "request_hash")?.to_owned(),
        state,
        expires_at: get_time(item, "expires_at")?,
    })
}

pub(crate) fn transaction_item(record: &TransactionRecord) -> Item {
    let mut item = Item::from([
        ("transaction_id".to_owned(), s(&record.transaction_id)),
        ("account_id".to_owned(), s(&record.intent.account_id)),
        ("operation".to_owned(), s(&record.intent.operation)),
        ("amount_minor".to_owned(), n(record.intent.amount_minor)),
        ("currency".to_owned(), s(&record.intent.currency)),
        ("recorded_at".to_owned(), time(record.recorded_at)),
    ]);
    insert_response(&mut item, &record.response);
    item
}

pub(crate) fn transaction_from_item(item: &Item) -> Result<TransactionRecord, StoreError> {
    Ok(TransactionRecord {
        transaction_id: get_s(item, "transaction_id")?.to_owned(),
        intent: TransactionIntent {
            account_id: get_s(item, "account_id")?.to_owned(),
            operation: get_s(item, "operation")?.to_owned(),
            amount_minor: get_n(item, "amount_minor")?,
            currency: get_s(item, "currency")?.to_owned(),
        },
        response: response_from_item(item)?,
        recorded_at: get_time(item, "recorded_at")?,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Snapshots and rebuild jobs
// ---------------------------------------------------------------------------------------------------------

pub(crate) fn snapshot_item(snapshot: &Snapshot) -> Result<Item, StoreError> {
    Ok(Item::from([
        ("stream_id".to_owned(), s(&snapshot.stream_id)),
        ("version".to_owned(), n(snapshot.version)),
        ("schema_version".to_owned(), n(snapshot.schema_version)),
        ("state".to_owned(), s(json_text(&snapshot.state, "snapshot state")?)),
    ]))
}

pub(crate) fn snapshot_from_item(item: &Item) -> Result<Snapshot, StoreError> {
    Ok(Snapshot {
        stream_id: get_s(item, "stream_id")?.to_owned(),
        version: get_n(item, "version")?,
        schema_version: get_n(item, "schema_version")?,
        state: get_json(item, "state")?,
    })
}

pub(crate) fn rebuild_job_item(job: &RebuildJob) -> Item {
    let mut item = Item::from([
        ("rebuild_id".to_owned(), s(&job.rebuild_id)),
        ("status".to_owned(), s(job.status.as_str())),
        ("streams_rebuilt".to_owned(), n(job.streams_rebuilt)),
        ("events_replayed".to_owned(), n(job.events_replayed)),
        ("started_at".to_owned(), time(job.started_at)),
        ("updated_at".to_owned(), time(job.updated_at)),
    ]);
    if let Some(last) = &job.last_stream_id {
        item.insert("last_stream_id".to_owned(), s(last));
    }
    if let Some(error) = &job.error {
        item.insert("error".to_owned(), s(error));
    }
    item
}

pub(crate) fn rebuild_job_from_item(item: &Item) -> Result<RebuildJob, StoreError> {
    let status = RebuildStatus::from_stored(get_s(item, "status")?)?;
    Ok(RebuildJob {
        rebuild_id: get_s(item, "rebuild_id")?.to_owned(),
        status,
        streams_rebuilt: get_n(item, "streams_rebuilt")?,
        events_replayed: get_n(item, "events_replayed")?,
        last_stream_id: opt_s(item, "last_stream_id")?,
        error: opt_s(item, "error")?,
        started_at: get_time(item, "started_at")?,
        updated_at: get_time(item, "updated_at")?,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Read model
// ---------------------------------------------------------------------------------------------------------

pub(crate) fn summary_item(summary: &AccountSummary) -> Item {
    Item::from([
        ("account_id".to_owned(), s(&summary.account_id)),
        ("owner_id".to_owned(), s(&summary.owner_id)),
        ("currency".to_owned(), s(summary.currency.code())),
        ("status".to_owned(), s(summary.status.as_str())),
        ("balance_minor".to_owned(), n(summary.balance_minor)),
        ("held_minor".to_owned(), n(summary.held_minor)),
        ("version".to_owned(), n(summary.version)),
        ("created_at".to_owned(), time(summary.created_at)),
        ("updated_at".to_owned(), time(summary.updated_at)),
    ])
}

pub(crate) fn summary_from_item(item: &Item) -> Result<AccountSummary, StoreError> {
    let status = match get_s(item, "status")? {
        "ACTIVE" => AccountStatus::Active,
        "FROZEN" => AccountStatus::Frozen,
        other => return Err(corrupt("status", format!("unknown account status {other:?}"))),
    };
    Ok(AccountSummary {
        account_id: get_s(item, "account_id")?.to_owned(),
        owner_id: get_s(item, "owner_id")?.to_owned(),
        currency: currency(item, "currency")?,
        status,
        balance_minor: get_n(item, "balance_minor")?,
        held_minor: get_n(item, "held_minor")?,
        version: get_n(item, "version")?,
        created_at: get_time(item, "created_at")?,
        updated_at: get_time(item, "updated_at")?,
    })
}

pub(crate) fn statement_item(entry: &StatementEntry) -> Item {
    let mut item = Item::from([
        ("account_id".to_owned(), s(&entry.account_id)),
        ("stream_version".to_owned(), n(entry.stream_version)),
        ("event_id".to_owned(), s(entry.event_id.to_string())),
        ("event_type".to_owned(), s(&entry.event_type)),
        ("occurred_at".to_owned(), time(entry.occurred_at)),
    ]);
    if let Some(amount) = entry.amount_minor {
        item.insert("amount_minor".to_owned(), n(amount));
    }
    if let Some(currency) = entry.currency {
        item.insert("currency".to_owned(), s(currency.code()));
    }
    if let Some(transaction_id) = &entry.transaction_id {
        item.insert("transaction_id".to_owned(), s(transaction_id));
    }
    if let Some(balance) = entry.balance_after_minor {
        item.insert("balance_after_minor".to_owned(), n(balance));
    }
    if let Some(reason) = &entry.reason {
        item.insert("reason".to_owned(), s(reason));
    }
    item
}

pub(crate) fn statement_from_item(item: &Item) -> Result<StatementEntry, StoreError> {
    Ok(StatementEntry {
        event_id: get_uuid(item, "event_id")?,
        account_id: get_s(item, "account_id")?.to_owned(),
        stream_version: get_n(item, "stream_version")?,
        event_type: get_s(item, "event_type")?.to_owned(),
        occurred_at: get_time(item, "occurred_at")?,
        amount_minor: opt_n(item, "amount_minor")?,
        currency: item.contains_key("currency").then(|| currency(item, "currency")).transpose()?,
        transaction_id: opt_s(item, "transaction_id")?,
        balance_after_minor: opt_n(item, "balance_after_minor")?,
        reason: opt_s(item, "reason")?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, nanos).unwrap()
    }

    #[test]
    fn timestamps_keep_every_sub_second_digit() {
        for t in [at(1_700_000_000, 0), at(1_700_000_000, 123_456_789), at(-5, 1)] {
            let item = Item::from([("t".to_owned(), time(t))]);
            assert_eq!(get_time(&item, "t").unwrap(), t);
        }
    }

    #[test]
    fn nanos_order_like_instants_and_ttl_never_rounds_down() {
        let a = at(100, 999_999_999);
        let b = at(101, 0);
        assert!(epoch_nanos(a) < epoch_nanos(b));
        assert_eq!(ttl_epoch_seconds(a), 101);
        assert_eq!(ttl_epoch_seconds(b), 101);
    }

    #[test]
    fn event_round_trips_and_only_the_first_event_joins_the_stream_index() {
        let mut event = EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: "account-1".to_owned(),
            version: 1,
            event_type: "MoneyDeposited".to_owned(),
            schema_version: 3,
            occurred_at: at(1_700_000_000, 5),
            payload: json!({"amountMinor": "9007199254740993", "n": -42, "x": null}),
            metadata: EventMetadata { actor: Some("me".to_owned()), ..EventMetadata::default() },
        };
        let item = event_item(&event).unwrap();
        assert_eq!(item.get("stream_index"), Some(&s(STREAM_INDEX_PARTITION)));
        assert_eq!(event_from_item(&item).unwrap(), event);

        event.version = 2;
        let item = event_item(&event).unwrap();
        assert!(!item.contains_key("stream_index"));
        assert_eq!(event_from_item(&item).unwrap(), event);
    }

    #[test]
    fn a_response_without_a_code_attribute_reads_as_written_before_codes_were_stored() {
        let rejection = StoredResponse { status: 400, body: "{}".to_owned(), code: Some("X".to_owned()) };
        let mut item = Item::new();
        insert_response(&mut item, &rejection);
        assert_eq!(response_from_item(&item).unwrap(), rejection);

        item.remove("response_code");
        assert_eq!(response_from_item(&item).unwrap().code.as_deref(), Some(crate::UNKNOWN_RESPONSE_CODE));

        let accepted = StoredResponse { status: 201, body: "{}".to_owned(), code: None };
        let mut item = Item::new();
        insert_response(&mut item, &accepted);
        assert!(!item.contains_key("response_code"));
        assert_eq!(response_from_item(&item).unwrap(), accepted);
    }

    #[test]
    fn missing_or_mistyped_attributes_are_corrupt() {
        let item = Item::from([("version".to_owned(), s("one"))]);
        assert!(matches!(get_n::<u64>(&item, "version"), Err(StoreError::Corrupt(_))));
        assert!(matches!(get_s(&item, "absent"), Err(StoreError::Corrupt(_))));
        let item = Item::from([("version".to_owned(), n("1.5"))]);
        assert!(matches!(get_n::<u64>(&item, "version"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn statement_rows_round_trip_with_and_without_money() {
        let money = StatementEntry {
            event_id: Uuid::new_v4(),
            account_id: "a".to_owned(),
            stream_version: 7,
            event_type: "MoneyWithdrawn".to_owned(),
            occurred_at: at(1_700_000_000, 0),
            amount_minor: Some(-i64::MAX),
            currency: Some(Currency::parse("BHD").unwrap()),
            transaction_id: Some("tx".to_owned()),
            balance_after_minor: Some(i64::MAX),
            reason: None,
        };
        assert_eq!(statement_from_item(&statement_item(&money)).unwrap(), money);
        let freeze = StatementEntry {
            amount_minor: None,
            currency: None,
            transaction_id: None,
            balance_after_minor: None,
            reason: Some("fraud".to_owned()),
            ..money
        };
        assert_eq!(statement_from_item(&statement_item(&freeze)).unwrap(), freeze);
    }

    #[test]
    fn idempotency_records_round_trip_in_both_states() {
        let key = IdempotencyKey { scope: "accounts".to_owned(), key: "k#1".to_owned() };
        let now = at(1_700_000_000, 0);
        let claim = crate::IdempotencyClaim {
            key: key.clone(),
            operation: "deposit".to_owned(),
            request_hash: "h".to_owned(),
            claim_token: Uuid::new_v4(),
            lease_expires_at: now + Duration::seconds(30),
            expires_at: now + Duration::hours(24),
            now,
        };
        let record = idempotency_from_item(&claim_item(&claim).unwrap()).unwrap();
        assert_eq!(
            record.state,
            IdempotencyState::InProgress {
                claim_token: claim.claim_token,
                lease_expires_at: claim.lease_expires_at
            }
        );
        assert_eq!(record.key, key);
        let bad = IdempotencyKey { scope: "a#b".to_owned(), key: "k".to_owned() };
        assert!(matches!(idempotency_pk(&bad), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn item_size_counts_names_and_values() {
        let item = Item::from([("ab".to_owned(), s("xyz")), ("n".to_owned(), n(12_345))]);
        assert_eq!(item_size(&item), 2 + 3 + 1 + 6);
    }
}
