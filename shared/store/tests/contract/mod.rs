//! The adapter contract suite: one set of test bodies that every adapter of the store ports must pass.
//!
//! Each body takes a fresh, isolated [`Stores`] and asserts both the answer of every call and the stored
//! state afterwards. An adapter runs the whole suite from its own integration test file:
//!
//! ```ignore
//! mod contract;
//!
//! contract_suite!(async { corebank_store::memory::stores().0 });
//! ```
//!
//! The factory is a future giving a `Stores`; it is evaluated once per test, so an adapter isolates tests
//! by creating a fresh random table prefix, database or schema inside it. The bodies also use random ids
//! throughout, so they hold even when an adapter shares its tables between tests.
//!
//! Timestamps are whole seconds, so adapters that keep microseconds (Postgres) or epoch seconds (a
//! DynamoDB TTL attribute) round-trip them exactly. No assertion depends on the wall clock: the clock
//! only gives a realistic base, and idempotency expiry is judged against the `now` each claim carries.

#![cfg(test)]

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use corebank_domain::transfer::Leg;
use corebank_domain::{AccountStatus, Currency, EventEnvelope, EventMetadata};
use corebank_store::{
    AccountSummary, AppendOutcome, AppendRequest, ClaimOutcome, IdempotencyClaim, IdempotencyCompletion,
    IdempotencyKey, IdempotencyRecord, IdempotencyState, LegStatus, MAX_EVENTS_PER_APPEND, ParkedConsumer,
    ParkedKind, ParkedRecord, ParkedStats, ProjectionChange, ProjectionReplacement, RebuildJob,
    RebuildStatus, Snapshot, StatementEntry, StoreError, StoredResponse, Stores, TransactionIntent,
    TransactionRecord, TransferLegStatus, TransferPhase, TransferStatus,
};
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Expands to one `#[tokio::test]` per contract body. `$factory` is a future whose output is a fresh,
/// isolated `corebank_store::Stores`; it is awaited once per test. The file invoking it must declare
/// this module as `mod contract;` at its crate root.
#[macro_export]
macro_rules! contract_suite {
    ($factory:expr) => {
        $crate::contract_suite!(@tests $factory;
            append_then_load_round_trips_every_envelope_field,
            load_stream_after_a_version_returns_only_later_events_in_order,
            loading_an_unknown_stream_is_empty,
            load_streams_answers_each_stream_asked_from_its_own_version_in_the_order_asked,
            stale_expected_version_conflicts_and_writes_nothing,
            empty_append_is_invalid_and_writes_nothing,
            non_consecutive_versions_or_a_foreign_stream_id_are_invalid_and_write_nothing,
            append_beyond_the_event_limit_is_refused_and_writes_nothing,
            append_of_exactly_the_event_limit_with_both_guards_is_accepted,
            idempotency_completion_is_written_atomically_with_the_events,
            idempotency_claim_stays_in_progress_when_the_append_conflicts,
            append_naming_a_claim_token_that_is_not_the_holder_fails_and_writes_nothing,
            append_after_the_claim_was_taken_over_fails_with_claim_lost_and_writes_nothing,
            transaction_record_is_written_with_the_events_and_reads_back,
            rejection_codes_round_trip_in_idempotency_completions_and_transaction_records,
            second_append_with_the_same_transaction_id_fails_and_writes_none_of_its_events,
            first_claim_takes_the_key_and_a_second_claim_sees_it_in_progress,
            completed_key_returns_the_stored_response_to_later_claims,
            completing_with_a_token_that_is_not_the_holder_fails_and_changes_nothing,
            released_key_can_be_claimed_again,
            release_with_a_wrong_token_or_after_completion_is_a_no_op,
            expired_lease_is_taken_over_by_the_same_request_only,
            record_past_its_ttl_is_claimable_again,
            keys_in_different_scopes_are_independent,
            the_same_key_of_two_principals_is_two_records,
            concurrent_appends_at_the_same_version_let_exactly_one_writer_win,
            writers_that_reload_and_retry_build_one_gapless_stream,
            concurrent_appends_with_one_transaction_id_record_it_exactly_once,
            concurrent_claims_on_one_key_let_exactly_one_request_hold_it,
            list_streams_filters_by_prefix_in_ascending_order,
            list_streams_pages_after_an_exclusive_cursor_with_a_limit,
            missing_snapshot_loads_as_none,
            saved_snapshot_loads_back_and_a_newer_one_replaces_it,
            older_snapshot_does_not_replace_a_newer_one,
            unprojected_stream_has_checkpoint_zero_and_no_rows,
            apply_moves_rows_and_checkpoint_together,
            checkpoints_and_summaries_of_many_streams_answer_in_the_order_asked,
            apply_all_applies_each_change_whose_checkpoint_is_where_it_expects_and_no_other,
            apply_all_naming_a_stream_twice_is_invalid_and_writes_nothing,
            apply_from_a_stale_checkpoint_fails_and_changes_nothing,
            applying_the_same_change_twice_fails_the_second_time_and_leaves_rows_unchanged,
            statement_pages_by_offset_and_limit_in_version_order,
            replace_overwrites_summary_statement_and_checkpoint,
            replace_all_replaces_each_account_and_leaves_the_others,
            rebuild_job_put_then_get_round_trips_and_put_overwrites,
            unknown_rebuild_job_is_none,
            unknown_transfer_has_no_status,
            transfer_status_applied_from_zero_reads_back_every_field,
            transfer_status_moves_only_from_the_version_the_projector_read,
            transfer_status_from_a_stale_version_fails_and_changes_nothing,
            replace_overwrites_a_transfer_status_whatever_its_version,
            concurrent_transfer_status_applies_from_one_version_let_exactly_one_win,
            pending_transfers_are_listed_oldest_first_until_they_settle,
            nothing_is_parked_in_a_fresh_store,
            parked_records_list_oldest_first_per_consumer_or_all_and_page_by_offset,
            a_record_parks_once_under_its_name_and_the_first_one_stays,
            parked_streams_name_each_stream_of_one_consumer_once_in_order,
            a_parked_stream_reads_in_position_order_and_removal_takes_one_record,
            parked_stats_count_every_consumer_and_date_the_oldest,
        );
    };
    (@tests $factory:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let stores: corebank_store::Stores = $factory.await;
                $crate::contract::$name(stores).await;
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------------------

const HASH_A: &str = "sha256:request-a";
const HASH_B: &str = "sha256:request-b";
const PROBE_HASH: &str = "sha256:probe";

/// A whole-second "now", so every store round-trips it exactly.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("whole seconds since the epoch are in range")
}

fn lease() -> Duration {
    Duration::seconds(30)
}

fn ttl() -> Duration {
    Duration::hours(24)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4())
}

fn new_stream() -> String {
    new_id("account")
}

fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: now(),
        payload: json!({
            "amountMinor": (version * 100).to_string(),
            "currency": "EUR",
            "transactionId": format!("tx-{stream_id}-{version}"),
        }),
        metadata: EventMetadata {
            correlation_id: Some(new_id("corr")),
            causation_id: Some(new_id("cause")),
            command_id: Some(new_id("cmd")),
            transaction_id: Some(format!("tx-{stream_id}-{version}")),
            actor: Some("contract-suite".to_owned()),
            requested_actor: Some("named-in-body".to_owned()),
            trace_id: Some(format!("1-{version:08x}-{}", "0123456789abcdef01234567")),
        },
    }
}

/// `count` consecutive events starting at `first_version`.
fn envelopes(stream_id: &str, first_version: u64, count: usize) -> Vec<EventEnvelope> {
    (first_version..).take(count).map(|v| envelope(stream_id, v)).collect()
}

fn append(stream_id: &str, expected_version: u64, events: Vec<EventEnvelope>) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_owned(),
        expected_version,
        events,
        idempotency: None,
        transaction: None,
    }
}

fn idem_key(scope: &str) -> IdempotencyKey {
    IdempotencyKey { scope: scope.to_owned(), key: Uuid::new_v4().to_string() }
}

fn claim(
    key: &IdempotencyKey,
    request_hash: &str,
    claim_token: Uuid,
    now: DateTime<Utc>,
) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.clone(),
        operation: "deposit".to_owned(),
        request_hash: request_hash.to_owned(),
        claim_token,
        lease_expires_at: now + lease(),
        expires_at: now + ttl(),
        now,
    }
}

fn completion(
    key: &IdempotencyKey,
    request_hash: &str,
    claim_token: Uuid,
    now: DateTime<Utc>,
    status: u16,
) -> IdempotencyCompletion {
    IdempotencyCompletion {
        key: key.clone(),
        operation: "deposit".to_owned(),
        request_hash: request_hash.to_owned(),
        claim_token,
        response: StoredResponse {
            status,
            body: json!({"status": status, "key": key.key, "token": claim_token.to_string()}).to_string(),
            // A rejection carries its code, as the API's renderer stores it.
            code: (!(200..300).contains(&status)).then(|| format!("CODE_{status}")),
        },
        expires_at: now + ttl(),
    }
}

/// What a store holds right after `claim` was granted.
fn in_progress(claim: &IdempotencyClaim) -> IdempotencyRecord {
    IdempotencyRecord {
        key: claim.key.clone(),
        operation: claim.operation.clone(),
        request_hash: claim.request_hash.clone(),
        state: IdempotencyState::InProgress {
            claim_token: claim.claim_token,
            lease_expires_at: claim.lease_expires_at,
        },
        expires_at: claim.expires_at,
    }
}

/// What a store holds right after `completion` was written.
fn completed(completion: &IdempotencyCompletion) -> IdempotencyRecord {
    IdempotencyRecord {
        key: completion.key.clone(),
        operation: completion.operation.clone(),
        request_hash: completion.request_hash.clone(),
        state: IdempotencyState::Completed(completion.response.clone()),
        expires_at: completion.expires_at,
    }
}

/// What is stored under `key` at `at`, read through a claim by another request. Under an unexpired
/// record that claim changes nothing; if the key was free it takes it, and `None` says so.
async fn stored_key(s: &Stores, key: &IdempotencyKey, at: DateTime<Utc>) -> Option<IdempotencyRecord> {
    match s.idempotency.claim(claim(key, PROBE_HASH, Uuid::new_v4(), at)).await.unwrap() {
        ClaimOutcome::Existing(record) => Some(record),
        ClaimOutcome::Claimed => None,
    }
}

fn transaction_record(transaction_id: &str, account_id: &str, amount_minor: i64) -> TransactionRecord {
    TransactionRecord {
        transaction_id: transaction_id.to_owned(),
        intent: TransactionIntent {
            account_id: account_id.to_owned(),
            operation: "deposit".to_owned(),
            amount_minor,
            currency: "EUR".to_owned(),
        },
        response: StoredResponse {
            status: 200,
            body: json!({"accountId": account_id, "amountMinor": amount_minor.to_string()}).to_string(),
            code: None,
        },
        recorded_at: now(),
    }
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is an ISO 4217 code")
}

fn summary(account_id: &str, version: u64, balance_minor: i64) -> AccountSummary {
    let created_at = now();
    AccountSummary {
        account_id: account_id.to_owned(),
        owner_id: "owner-contract".to_owned(),
        currency: eur(),
        status: AccountStatus::Active,
        balance_minor,
        held_minor: 0,
        version,
        created_at,
        updated_at: created_at + Duration::seconds(i64::try_from(version).unwrap()),
    }
}

fn statement_entry(account_id: &str, version: u64) -> StatementEntry {
    let amount = i64::try_from(version).unwrap() * 100;
    StatementEntry {
        event_id: Uuid::new_v4(),
        account_id: account_id.to_owned(),
        stream_version: version,
        event_type: "MoneyDeposited".to_owned(),
        occurred_at: now(),
        amount_minor: Some(amount),
        currency: Some(eur()),
        transaction_id: Some(new_id("tx")),
        balance_after_minor: Some(amount * 2),
        reason: None,
    }
}

fn freeze_entry(account_id: &str, version: u64) -> StatementEntry {
    StatementEntry {
        event_id: Uuid::new_v4(),
        account_id: account_id.to_owned(),
        stream_version: version,
        event_type: "AccountFrozen".to_owned(),
        occurred_at: now(),
        amount_minor: None,
        currency: None,
        transaction_id: None,
        balance_after_minor: None,
        reason: Some("suspected fraud".to_owned()),
    }
}

/// A fresh account id and its stream id.
fn new_account() -> (String, String) {
    let account_id = Uuid::new_v4().to_string();
    let stream_id = format!("account-{account_id}");
    (account_id, stream_id)
}

fn change(
    stream_id: &str,
    expected_checkpoint: u64,
    new_checkpoint: u64,
    summary: Option<AccountSummary>,
    statement: Vec<StatementEntry>,
) -> ProjectionChange {
    ProjectionChange {
        stream_id: stream_id.to_owned(),
        expected_checkpoint,
        new_checkpoint,
        summary,
        statement,
    }
}

async fn all_statement(s: &Stores, account_id: &str) -> Vec<StatementEntry> {
    s.read_model.statement(account_id, 0, 1_000).await.unwrap()
}

fn rebuild_job(rebuild_id: &str, status: RebuildStatus, streams_rebuilt: u64) -> RebuildJob {
    let started_at = now();
    RebuildJob {
        rebuild_id: rebuild_id.to_owned(),
        status,
        streams_rebuilt,
        events_replayed: streams_rebuilt * 7,
        last_stream_id: Some(new_stream()),
        error: None,
        started_at,
        updated_at: started_at + Duration::seconds(5),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Event store: append and load
// ---------------------------------------------------------------------------------------------------------

pub(crate) async fn append_then_load_round_trips_every_envelope_field(s: Stores) {
    let stream = new_stream();
    let mut first = envelope(&stream, 1);
    first.payload = json!({
        "nested": {"list": [1, 2, 3], "flag": true, "nothing": null},
        "text": "Zürich – \"quoted\" \\ ✓",
        "amountMinor": "9007199254740993",
        "negative": -42,
    });
    let mut second = envelope(&stream, 2);
    second.event_type = "AccountFrozen".to_owned();
    second.schema_version = 2;
    second.metadata = EventMetadata::default();
    second.payload = json!({});
    let third = envelope(&stream, 3);
    let sent = vec![first, second, third];

    let outcome = s.events.append(append(&stream, 0, sent.clone())).await.unwrap();

    assert_eq!(outcome, AppendOutcome { stream_version: 3 });
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), sent);
}

pub(crate) async fn load_stream_after_a_version_returns_only_later_events_in_order(s: Stores) {
    let stream = new_stream();
    let first = envelopes(&stream, 1, 2);
    let second = envelopes(&stream, 3, 3);

    let outcome = s.events.append(append(&stream, 0, first.clone())).await.unwrap();
    assert_eq!(outcome, AppendOutcome { stream_version: 2 });
    let outcome = s.events.append(append(&stream, 2, second.clone())).await.unwrap();
    assert_eq!(outcome, AppendOutcome { stream_version: 5 });

    let all: Vec<EventEnvelope> = first.into_iter().chain(second).collect();
    for after in 0..=5_u64 {
        let loaded = s.events.load_stream(&stream, after).await.unwrap();
        assert_eq!(loaded, all[usize::try_from(after).unwrap()..], "loading after version {after}");
    }
    assert!(s.events.load_stream(&stream, 6).await.unwrap().is_empty());
    assert!(s.events.load_stream(&stream, 100).await.unwrap().is_empty());
}

pub(crate) async fn load_streams_answers_each_stream_asked_from_its_own_version_in_the_order_asked(
    s: Stores,
) {
    let (a, b, unknown) = (new_stream(), new_stream(), new_stream());
    let a_events = envelopes(&a, 1, 4);
    let b_events = envelopes(&b, 1, 2);
    s.events.append(append(&a, 0, a_events.clone())).await.unwrap();
    s.events.append(append(&b, 0, b_events.clone())).await.unwrap();

    let asked = vec![
        (b.clone(), 0),
        (unknown.clone(), 0),
        (a.clone(), 2),
        (b.clone(), 2),
        (a.clone(), 0),
        (a.clone(), u64::MAX),
    ];
    let loaded = s.events.load_streams(&asked).await.unwrap();

    assert_eq!(loaded.len(), asked.len(), "one list per stream asked");
    assert_eq!(loaded[0], b_events);
    assert!(loaded[1].is_empty(), "a stream that does not exist has no events");
    assert_eq!(loaded[2], a_events[2..], "above version 2 only");
    assert!(loaded[3].is_empty(), "nothing above the stream's last version");
    assert_eq!(loaded[4], a_events, "the same stream asked again from another version");
    assert!(loaded[5].is_empty());
    assert!(s.events.load_streams(&[]).await.unwrap().is_empty());
}

pub(crate) async fn loading_an_unknown_stream_is_empty(s: Stores) {
    let stream = new_stream();
    assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty());

    // A stream whose id merely starts with the unknown one does not leak into it.
    let longer = format!("{stream}-other");
    s.events.append(append(&longer, 0, envelopes(&longer, 1, 2))).await.unwrap();

    assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty());
    assert_eq!(s.events.load_stream(&longer, 0).await.unwrap().len(), 2);
}

pub(crate) async fn stale_expected_version_conflicts_and_writes_nothing(s: Stores) {
    let stream = new_stream();
    let original = envelopes(&stream, 1, 2);
    s.events.append(append(&stream, 0, original.clone())).await.unwrap();

    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    let held = claim(&key, HASH_A, token, t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);
    let tx = transaction_record(&new_id("tx"), &stream, 500);

    // Behind (0, 1) and ahead (3, 7) of the stream's version 2 are both conflicts; an append ahead must
    // never leave a gap.
    for expected in [0, 1, 3, 7] {
        let mut request = append(&stream, expected, envelopes(&stream, expected + 1, 2));
        request.idempotency = Some(completion(&key, HASH_A, token, t, 201));
        request.transaction = Some(tx.clone());

        let err = s.events.append(request).await.unwrap_err();

        let StoreError::VersionConflict { stream_id, expected: reported, .. } = err else {
            panic!("expected a version conflict at expected version {expected}, got {err:?}");
        };
        assert_eq!(stream_id, stream);
        assert_eq!(reported, expected);
    }

    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), original);
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));
}

pub(crate) async fn empty_append_is_invalid_and_writes_nothing(s: Stores) {
    let stream = new_stream();
    let tx = transaction_record(&new_id("tx"), &stream, 100);

    let mut request = append(&stream, 0, Vec::new());
    request.transaction = Some(tx.clone());
    let err = s.events.append(request).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "expected Invalid, got {err:?}");

    assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty());
    assert!(s.events.list_streams(&stream, None, 10).await.unwrap().is_empty());
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);

    // The same on an existing stream at its right version.
    let original = envelopes(&stream, 1, 1);
    s.events.append(append(&stream, 0, original.clone())).await.unwrap();
    let err = s.events.append(append(&stream, 1, Vec::new())).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "expected Invalid, got {err:?}");
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), original);
}

pub(crate) async fn non_consecutive_versions_or_a_foreign_stream_id_are_invalid_and_write_nothing(s: Stores) {
    let stream = new_stream();
    let original = envelopes(&stream, 1, 2);
    s.events.append(append(&stream, 0, original.clone())).await.unwrap();

    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    let held = claim(&key, HASH_A, token, t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);
    let tx = transaction_record(&new_id("tx"), &stream, 300);

    let foreign = new_stream();
    let mut foreign_second = envelopes(&stream, 3, 2);
    foreign_second[1].stream_id.clone_from(&foreign);
    let cases: Vec<(&str, Vec<EventEnvelope>)> = vec![
        ("a gap", vec![envelope(&stream, 3), envelope(&stream, 5)]),
        ("a repeated version", vec![envelope(&stream, 3), envelope(&stream, 3)]),
        ("a start after the next version", envelopes(&stream, 4, 2)),
        ("a start at a stored version", envelopes(&stream, 2, 2)),
        ("descending versions", vec![envelope(&stream, 4), envelope(&stream, 3)]),
        ("an event of another stream", foreign_second),
    ];
    for (case, events) in cases {
        let mut request = append(&stream, 2, events);
        request.idempotency = Some(completion(&key, HASH_A, token, t, 201));
        request.transaction = Some(tx.clone());

        let err = s.events.append(request).await.unwrap_err();

        assert!(matches!(err, StoreError::Invalid(_)), "{case}: expected Invalid, got {err:?}");
    }

    // A new stream must start at version 1.
    let fresh = new_stream();
    let err = s.events.append(append(&fresh, 0, envelopes(&fresh, 0, 2))).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "version 0: expected Invalid, got {err:?}");

    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), original);
    assert!(s.events.load_stream(&foreign, 0).await.unwrap().is_empty());
    assert!(s.events.load_stream(&fresh, 0).await.unwrap().is_empty());
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));
}

pub(crate) async fn append_beyond_the_event_limit_is_refused_and_writes_nothing(s: Stores) {
    let stream = new_stream();
    let tx = transaction_record(&new_id("tx"), &stream, 100);
    let mut request = append(&stream, 0, envelopes(&stream, 1, MAX_EVENTS_PER_APPEND + 1));
    request.transaction = Some(tx.clone());

    let err = s.events.append(request).await.unwrap_err();

    let StoreError::LimitExceeded { limit, actual, .. } = err else {
        panic!("expected LimitExceeded, got {err:?}");
    };
    assert_eq!(limit, MAX_EVENTS_PER_APPEND);
    assert_eq!(actual, MAX_EVENTS_PER_APPEND + 1);
    assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty());
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);
}

pub(crate) async fn append_of_exactly_the_event_limit_with_both_guards_is_accepted(s: Stores) {
    let stream = new_stream();
    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, token, t)).await.unwrap(), ClaimOutcome::Claimed);
    let done = completion(&key, HASH_A, token, t, 201);
    let tx = transaction_record(&new_id("tx"), &stream, 100);
    let events = envelopes(&stream, 1, MAX_EVENTS_PER_APPEND);
    let mut request = append(&stream, 0, events.clone());
    request.idempotency = Some(done.clone());
    request.transaction = Some(tx.clone());

    let outcome = s.events.append(request).await.unwrap();

    let max = u64::try_from(MAX_EVENTS_PER_APPEND).unwrap();
    assert_eq!(outcome, AppendOutcome { stream_version: max });
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), events);
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), Some(tx));
    assert_eq!(stored_key(&s, &key, t).await, Some(completed(&done)));
}

// ---------------------------------------------------------------------------------------------------------
// Event store: guard records written with the events
// ---------------------------------------------------------------------------------------------------------

pub(crate) async fn idempotency_completion_is_written_atomically_with_the_events(s: Stores) {
    let stream = new_stream();
    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, token, t)).await.unwrap(), ClaimOutcome::Claimed);
    let done = completion(&key, HASH_A, token, t, 201);
    let events = envelopes(&stream, 1, 2);
    let mut request = append(&stream, 0, events.clone());
    request.idempotency = Some(done.clone());

    let outcome = s.events.append(request).await.unwrap();

    assert_eq!(outcome, AppendOutcome { stream_version: 2 });
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), events);
    // A retry of the same request sees the stored response, and so does another request under the key.
    let retry = s.idempotency.claim(claim(&key, HASH_A, Uuid::new_v4(), t)).await.unwrap();
    assert_eq!(retry, ClaimOutcome::Existing(completed(&done)));
    let other = s.idempotency.claim(claim(&key, HASH_B, Uuid::new_v4(), t)).await.unwrap();
    assert_eq!(other, ClaimOutcome::Existing(completed(&done)));
}

pub(crate) async fn idempotency_claim_stays_in_progress_when_the_append_conflicts(s: Stores) {
    let stream = new_stream();
    let theirs = envelopes(&stream, 1, 1);
    s.events.append(append(&stream, 0, theirs.clone())).await.unwrap();

    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    let held = claim(&key, HASH_A, token, t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);
    let done = completion(&key, HASH_A, token, t, 201);

    let mut stale = append(&stream, 0, envelopes(&stream, 1, 1));
    stale.idempotency = Some(done.clone());
    let err = s.events.append(stale).await.unwrap_err();

    assert!(matches!(err, StoreError::VersionConflict { .. }), "expected VersionConflict, got {err:?}");
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), theirs);

    // The writer reloads, decides again and still holds its claim.
    let ours = envelopes(&stream, 2, 1);
    let mut retry = append(&stream, 1, ours.clone());
    retry.idempotency = Some(done.clone());
    assert_eq!(s.events.append(retry).await.unwrap(), AppendOutcome { stream_version: 2 });
    assert_eq!(stored_key(&s, &key, t).await, Some(completed(&done)));
    let all: Vec<EventEnvelope> = theirs.into_iter().chain(ours).collect();
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), all);
}

pub(crate) async fn append_naming_a_claim_token_that_is_not_the_holder_fails_and_writes_nothing(s: Stores) {
    let stream = new_stream();
    let t = now();
    let key = idem_key("accounts");
    let held = claim(&key, HASH_A, Uuid::new_v4(), t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);
    let tx = transaction_record(&new_id("tx"), &stream, 100);
    let mut request = append(&stream, 0, envelopes(&stream, 1, 2));
    request.idempotency = Some(completion(&key, HASH_A, Uuid::new_v4(), t, 201));
    request.transaction = Some(tx.clone());

    let err = s.events.append(request).await.unwrap_err();

    let StoreError::IdempotencyClaimLost { key: reported } = err else {
        panic!("expected IdempotencyClaimLost, got {err:?}");
    };
    assert_eq!(reported, key.key);
    assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty());
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));
}

pub(crate) async fn append_after_the_claim_was_taken_over_fails_with_claim_lost_and_writes_nothing(
    s: Stores,
) {
    let stream = new_stream();
    let t0 = now();
    let key = idem_key("accounts");
    let first = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, first, t0)).await.unwrap(), ClaimOutcome::Claimed);
    // The first holder stalls past its lease; a retry of the same request takes the key over.
    let t1 = t0 + lease() + Duration::seconds(30);
    let second = Uuid::new_v4();
    let takeover = claim(&key, HASH_A, second, t1);
    assert_eq!(s.idempotency.claim(takeover.clone()).await.unwrap(), ClaimOutcome::Claimed);

    let tx = transaction_record(&new_id("tx"), &stream, 100);
    let mut stalled = append(&stream, 0, envelopes(&stream, 1, 1));
    stalled.idempotency = Some(completion(&key, HASH_A, first, t0, 201));
    stalled.transaction = Some(tx.clone());
    let err = s.events.append(stalled).await.unwrap_err();

    assert!(matches!(err, StoreError::IdempotencyClaimLost { .. }), "expected claim lost, got {err:?}");
    assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty());
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);
    assert_eq!(stored_key(&s, &key, t1).await, Some(in_progress(&takeover)));

    // The new holder's append goes through.
    let done = completion(&key, HASH_A, second, t1, 201);
    let events = envelopes(&stream, 1, 1);
    let mut request = append(&stream, 0, events.clone());
    request.idempotency = Some(done.clone());
    request.transaction = Some(tx.clone());
    assert_eq!(s.events.append(request).await.unwrap(), AppendOutcome { stream_version: 1 });
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), events);
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), Some(tx));
    assert_eq!(stored_key(&s, &key, t1).await, Some(completed(&done)));
}

pub(crate) async fn transaction_record_is_written_with_the_events_and_reads_back(s: Stores) {
    let stream = new_stream();
    let tx = transaction_record(&new_id("tx"), &stream, 12_345);
    assert_eq!(s.events.transaction(&tx.transaction_id).await.unwrap(), None);
    let events = envelopes(&stream, 1, 1);
    let mut request = append(&stream, 0, events.clone());
    request.transaction = Some(tx.clone());

    let outcome = s.events.append(request).await.unwrap();

    assert_eq!(outcome, AppendOutcome { stream_version: 1 });
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), events);
    let stored = s.events.transaction(&tx.transaction_id).await.unwrap().expect("the record is stored");
    assert_eq!(stored.intent, tx.intent);
    assert_eq!(stored.response, tx.response);
    assert_eq!(stored, tx);
    assert_eq!(s.events.transaction(&new_id("tx")).await.unwrap(), None);
}

fn rejection(status: u16, code: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: json!({"statusCode": status, "code": code, "message": "refused"}).to_string(),
        code: Some(code.to_owned()),
    }
}

pub(crate) async fn rejection_codes_round_trip_in_idempotency_completions_and_transaction_records(s: Stores) {
    let t = now();
    // A completion written on its own (a decision that appended nothing).
    let alone = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&alone, HASH_A, token, t)).await.unwrap(), ClaimOutcome::Claimed);
    let mut refused = completion(&alone, HASH_A, token, t, 400);
    refused.response = rejection(400, "INSUFFICIENT_FUNDS");
    s.idempotency.complete(refused.clone()).await.unwrap();
    let Some(stored) = stored_key(&s, &alone, t).await else { panic!("the completion is stored") };
    let IdempotencyState::Completed(response) = &stored.state else { panic!("completed: {stored:?}") };
    assert_eq!(response.code.as_deref(), Some("INSUFFICIENT_FUNDS"));
    assert_eq!(stored, completed(&refused));

    // A completion and a transaction record written with events.
    let stream = new_stream();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, token, t)).await.unwrap(), ClaimOutcome::Claimed);
    let mut done = completion(&key, HASH_A, token, t, 409);
    done.response = rejection(409, "HOLD_NOT_FOUND");
    let mut tx = transaction_record(&new_id("tx"), &stream, 100);
    tx.response = rejection(409, "TRANSACTION_ID_CONFLICT");
    let mut request = append(&stream, 0, envelopes(&stream, 1, 1));
    request.idempotency = Some(done.clone());
    request.transaction = Some(tx.clone());

    s.events.append(request).await.unwrap();

    assert_eq!(stored_key(&s, &key, t).await, Some(completed(&done)));
    let stored = s.events.transaction(&tx.transaction_id).await.unwrap().expect("the record is stored");
    assert_eq!(stored.response.code.as_deref(), Some("TRANSACTION_ID_CONFLICT"));
    assert_eq!(stored, tx);

    // An acceptance has no code, and reads back without one.
    let accepted = transaction_record(&new_id("tx"), &stream, 100);
    let mut request = append(&stream, 1, envelopes(&stream, 2, 1));
    request.transaction = Some(accepted.clone());
    s.events.append(request).await.unwrap();
    let stored = s.events.transaction(&accepted.transaction_id).await.unwrap().expect("the record is stored");
    assert_eq!(stored.response.code, None);
}

pub(crate) async fn second_append_with_the_same_transaction_id_fails_and_writes_none_of_its_events(
    s: Stores,
) {
    let stream = new_stream();
    let transaction_id = new_id("tx");
    let first = transaction_record(&transaction_id, &stream, 500);
    let original = envelopes(&stream, 1, 2);
    let mut request = append(&stream, 0, original.clone());
    request.transaction = Some(first.clone());
    s.events.append(request).await.unwrap();

    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    let held = claim(&key, HASH_A, token, t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);

    // Another stream, then the same stream at its right version: both refused.
    let other = new_stream();
    let attempts = [
        (other.clone(), 0, transaction_record(&transaction_id, &other, 700)),
        (stream.clone(), 2, transaction_record(&transaction_id, &stream, 500)),
    ];
    for (target, expected, record) in attempts {
        let mut request = append(&target, expected, envelopes(&target, expected + 1, 2));
        request.transaction = Some(record);
        request.idempotency = Some(completion(&key, HASH_A, token, t, 200));

        let err = s.events.append(request).await.unwrap_err();

        let StoreError::TransactionExists { transaction_id: reported } = err else {
            panic!("expected TransactionExists on {target}, got {err:?}");
        };
        assert_eq!(reported, transaction_id);
    }

    assert!(s.events.load_stream(&other, 0).await.unwrap().is_empty());
    assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), original);
    assert_eq!(s.events.transaction(&transaction_id).await.unwrap(), Some(first));
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));
}

// ---------------------------------------------------------------------------------------------------------
// Idempotency claims
// ---------------------------------------------------------------------------------------------------------

pub(crate) async fn first_claim_takes_the_key_and_a_second_claim_sees_it_in_progress(s: Stores) {
    let t = now();
    let key = idem_key("accounts");
    let first = claim(&key, HASH_A, Uuid::new_v4(), t);

    assert_eq!(s.idempotency.claim(first.clone()).await.unwrap(), ClaimOutcome::Claimed);

    let same_request = s.idempotency.claim(claim(&key, HASH_A, Uuid::new_v4(), t)).await.unwrap();
    assert_eq!(same_request, ClaimOutcome::Existing(in_progress(&first)));
    let later = t + Duration::seconds(10);
    let other_request = s.idempotency.claim(claim(&key, HASH_B, Uuid::new_v4(), later)).await.unwrap();
    assert_eq!(other_request, ClaimOutcome::Existing(in_progress(&first)));
}

pub(crate) async fn completed_key_returns_the_stored_response_to_later_claims(s: Stores) {
    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, token, t)).await.unwrap(), ClaimOutcome::Claimed);
    let done = completion(&key, HASH_A, token, t, 422);

    s.idempotency.complete(done.clone()).await.unwrap();

    let retry = s.idempotency.claim(claim(&key, HASH_A, Uuid::new_v4(), t)).await.unwrap();
    assert_eq!(retry, ClaimOutcome::Existing(completed(&done)));
    // A completed key has no lease: long after it, within the TTL, it still answers the same.
    let later = t + Duration::hours(1);
    let retry = s.idempotency.claim(claim(&key, HASH_A, Uuid::new_v4(), later)).await.unwrap();
    assert_eq!(retry, ClaimOutcome::Existing(completed(&done)));
    let other = s.idempotency.claim(claim(&key, HASH_B, Uuid::new_v4(), later)).await.unwrap();
    assert_eq!(other, ClaimOutcome::Existing(completed(&done)));
}

pub(crate) async fn completing_with_a_token_that_is_not_the_holder_fails_and_changes_nothing(s: Stores) {
    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    let held = claim(&key, HASH_A, token, t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);

    let err = s.idempotency.complete(completion(&key, HASH_A, Uuid::new_v4(), t, 201)).await.unwrap_err();

    let StoreError::IdempotencyClaimLost { key: reported } = err else {
        panic!("expected IdempotencyClaimLost, got {err:?}");
    };
    assert_eq!(reported, key.key);
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));

    // Once completed, the first response stays: a second completion is refused.
    let done = completion(&key, HASH_A, token, t, 201);
    s.idempotency.complete(done.clone()).await.unwrap();
    let again = completion(&key, HASH_A, token, t, 500);
    let err = s.idempotency.complete(again).await.unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyClaimLost { .. }), "expected claim lost, got {err:?}");
    assert_eq!(stored_key(&s, &key, t).await, Some(completed(&done)));
}

pub(crate) async fn released_key_can_be_claimed_again(s: Stores) {
    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, token, t)).await.unwrap(), ClaimOutcome::Claimed);

    s.idempotency.release(&key, token).await.unwrap();

    // Free again, even for a different request and before the lease would have run out.
    let next = claim(&key, HASH_B, Uuid::new_v4(), t);
    assert_eq!(s.idempotency.claim(next.clone()).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&next)));
}

pub(crate) async fn release_with_a_wrong_token_or_after_completion_is_a_no_op(s: Stores) {
    let t = now();
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    let held = claim(&key, HASH_A, token, t);
    assert_eq!(s.idempotency.claim(held.clone()).await.unwrap(), ClaimOutcome::Claimed);

    s.idempotency.release(&key, Uuid::new_v4()).await.unwrap();
    assert_eq!(stored_key(&s, &key, t).await, Some(in_progress(&held)));

    // Releasing a key nobody holds is fine too.
    let unknown = idem_key("accounts");
    s.idempotency.release(&unknown, Uuid::new_v4()).await.unwrap();

    // A completed key keeps its response even when its former holder releases it.
    let done = completion(&key, HASH_A, token, t, 201);
    s.idempotency.complete(done.clone()).await.unwrap();
    s.idempotency.release(&key, token).await.unwrap();
    assert_eq!(stored_key(&s, &key, t).await, Some(completed(&done)));
}

pub(crate) async fn expired_lease_is_taken_over_by_the_same_request_only(s: Stores) {
    let t0 = now();
    let key = idem_key("accounts");
    let first_token = Uuid::new_v4();
    let first = claim(&key, HASH_A, first_token, t0);
    assert_eq!(s.idempotency.claim(first.clone()).await.unwrap(), ClaimOutcome::Claimed);

    let t1 = t0 + lease() + Duration::seconds(1);
    let different = s.idempotency.claim(claim(&key, HASH_B, Uuid::new_v4(), t1)).await.unwrap();
    assert_eq!(different, ClaimOutcome::Existing(in_progress(&first)));

    let second_token = Uuid::new_v4();
    let takeover = claim(&key, HASH_A, second_token, t1);
    assert_eq!(s.idempotency.claim(takeover.clone()).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(stored_key(&s, &key, t1).await, Some(in_progress(&takeover)));

    // The old holder lost the key; the new one completes it.
    let err = s.idempotency.complete(completion(&key, HASH_A, first_token, t0, 201)).await.unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyClaimLost { .. }), "expected claim lost, got {err:?}");
    let done = completion(&key, HASH_A, second_token, t1, 201);
    s.idempotency.complete(done.clone()).await.unwrap();
    assert_eq!(stored_key(&s, &key, t1).await, Some(completed(&done)));
}

pub(crate) async fn record_past_its_ttl_is_claimable_again(s: Stores) {
    let t0 = now();
    let after_ttl = t0 + ttl() + Duration::seconds(1);

    // A completed record.
    let key = idem_key("accounts");
    let token = Uuid::new_v4();
    assert_eq!(s.idempotency.claim(claim(&key, HASH_A, token, t0)).await.unwrap(), ClaimOutcome::Claimed);
    s.idempotency.complete(completion(&key, HASH_A, token, t0, 201)).await.unwrap();
    let fresh = claim(&key, HASH_B, Uuid::new_v4(), after_ttl);
    assert_eq!(s.idempotency.claim(fresh.clone()).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(stored_key(&s, &key, after_ttl).await, Some(in_progress(&fresh)));

    // An abandoned claim.
    let abandoned = idem_key("accounts");
    assert_eq!(
        s.idempotency.claim(claim(&abandoned, HASH_A, Uuid::new_v4(), t0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let fresh = claim(&abandoned, HASH_B, Uuid::new_v4(), after_ttl);
    assert_eq!(s.idempotency.claim(fresh.clone()).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(stored_key(&s, &abandoned, after_ttl).await, Some(in_progress(&fresh)));
}

pub(crate) async fn keys_in_different_scopes_are_independent(s: Stores) {
    let t = now();
    let accounts = idem_key("accounts");
    let transfers = IdempotencyKey { scope: "transfers".to_owned(), key: accounts.key.clone() };
    let accounts_token = Uuid::new_v4();
    let transfers_claim = claim(&transfers, HASH_B, Uuid::new_v4(), t);

    assert_eq!(
        s.idempotency.claim(claim(&accounts, HASH_A, accounts_token, t)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(s.idempotency.claim(transfers_claim.clone()).await.unwrap(), ClaimOutcome::Claimed);

    let done = completion(&accounts, HASH_A, accounts_token, t, 201);
    s.idempotency.complete(done.clone()).await.unwrap();
    assert_eq!(stored_key(&s, &transfers, t).await, Some(in_progress(&transfers_claim)));

    s.idempotency.release(&transfers, transfers_claim.claim_token).await.unwrap();
    assert_eq!(stored_key(&s, &accounts, t).await, Some(completed(&done)));
    let again = s.idempotency.claim(claim(&transfers, HASH_B, Uuid::new_v4(), t)).await.unwrap();
    assert_eq!(again, ClaimOutcome::Claimed);
}

/// Keys are scoped by principal (`accounts/<principal id>`; an IAM caller's id is its ARN, with `:`
/// and `/`), and the process manager's keys by the bare family: one key, three independent records.
pub(crate) async fn the_same_key_of_two_principals_is_two_records(s: Stores) {
    let t = now();
    let key = Uuid::new_v4().to_string();
    let scoped = |scope: &str| IdempotencyKey { scope: scope.to_owned(), key: key.clone() };
    let (alice, service, process) = (
        scoped("accounts/alice"),
        scoped("accounts/arn:aws:sts::123456789012:assumed-role/payments/session-1"),
        scoped("accounts"),
    );
    let alice_token = Uuid::new_v4();
    assert_eq!(
        s.idempotency.claim(claim(&alice, HASH_A, alice_token, t)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let done = completion(&alice, HASH_A, alice_token, t, 201);
    s.idempotency.complete(done.clone()).await.unwrap();
    // Another principal's claim of the same key with another request is a fresh claim, not a reuse.
    let service_claim = claim(&service, HASH_B, Uuid::new_v4(), t);
    assert_eq!(s.idempotency.claim(service_claim.clone()).await.unwrap(), ClaimOutcome::Claimed);
    let process_claim = claim(&process, HASH_B, Uuid::new_v4(), t);
    assert_eq!(s.idempotency.claim(process_claim.clone()).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(stored_key(&s, &alice, t).await, Some(completed(&done)));
    assert_eq!(stored_key(&s, &service, t).await, Some(in_progress(&service_claim)));
    assert_eq!(stored_key(&s, &process, t).await, Some(in_progress(&process_claim)));
}

// ---------------------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------------------

pub(crate) async fn concurrent_appends_at_the_same_version_let_exactly_one_writer_win(s: Stores) {
    const WRITERS: usize = 32;
    let stream = new_stream();
    let start = Arc::new(Barrier::new(WRITERS));
    let mut tasks = JoinSet::new();
    for _ in 0..WRITERS {
        let events = Arc::clone(&s.events);
        let start = Arc::clone(&start);
        let stream = stream.clone();
        tasks.spawn(async move {
            let event = envelope(&stream, 1);
            let event_id = event.event_id;
            start.wait().await;
            (event_id, events.append(append(&stream, 0, vec![event])).await)
        });
    }

    let mut winners = Vec::new();
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        let (event_id, result) = joined.unwrap();
        match result {
            Ok(outcome) => {
                assert_eq!(outcome, AppendOutcome { stream_version: 1 });
                winners.push(event_id);
            }
            Err(StoreError::VersionConflict { stream_id, expected, .. }) => {
                assert_eq!(stream_id, stream);
                assert_eq!(expected, 0);
                conflicts += 1;
            }
            Err(other) => panic!("expected success or VersionConflict, got {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one writer wins");
    assert_eq!(conflicts, WRITERS - 1);
    let stored = s.events.load_stream(&stream, 0).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id, winners[0]);
    assert_eq!(stored[0].version, 1);
}

pub(crate) async fn writers_that_reload_and_retry_build_one_gapless_stream(s: Stores) {
    const WRITERS: usize = 8;
    const APPENDS_PER_WRITER: usize = 10;
    const MAX_ATTEMPTS: usize = 10_000;
    let stream = new_stream();
    let start = Arc::new(Barrier::new(WRITERS));
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let events = Arc::clone(&s.events);
        let start = Arc::clone(&start);
        let stream = stream.clone();
        tasks.spawn(async move {
            start.wait().await;
            let mut written = Vec::new();
            let mut known = 0_u64;
            for append_no in 0..APPENDS_PER_WRITER {
                // Batches of one or two events, so a torn batch would show as foreign events inside it.
                let size = 1 + (writer + append_no) % 2;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts <= MAX_ATTEMPTS, "writer {writer} never got through");
                    if let Some(last) = events.load_stream(&stream, known).await.unwrap().last() {
                        known = last.version;
                    }
                    let batch = envelopes(&stream, known + 1, size);
                    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                    match events.append(append(&stream, known, batch)).await {
                        Ok(outcome) => {
                            known += u64::try_from(size).unwrap();
                            assert_eq!(outcome, AppendOutcome { stream_version: known });
                            written.push(ids);
                            break;
                        }
                        Err(StoreError::VersionConflict { .. }) => tokio::task::yield_now().await,
                        Err(other) => panic!("expected success or VersionConflict, got {other:?}"),
                    }
                }
            }
            written
        });
    }

    let mut batches = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        batches.extend(joined.unwrap());
    }

    let total: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(total, WRITERS * APPENDS_PER_WRITER * 3 / 2);
    let stored = s.events.load_stream(&stream, 0).await.unwrap();
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    let gapless: Vec<u64> = (1..=u64::try_from(total).unwrap()).collect();
    assert_eq!(versions, gapless);
    let stored_ids: HashSet<Uuid> = stored.iter().map(|e| e.event_id).collect();
    let written_ids: HashSet<Uuid> = batches.iter().flatten().copied().collect();
    assert_eq!(stored_ids.len(), total);
    assert_eq!(stored_ids, written_ids);
    // Every accepted batch sits in the stream as one consecutive run.
    for batch in &batches {
        let first = stored.iter().position(|e| e.event_id == batch[0]).unwrap();
        let run: Vec<Uuid> = stored[first..first + batch.len()].iter().map(|e| e.event_id).collect();
        assert_eq!(&run, batch);
    }
}

pub(crate) async fn concurrent_appends_with_one_transaction_id_record_it_exactly_once(s: Stores) {
    const WRITERS: usize = 16;
    let transaction_id = new_id("tx");
    let start = Arc::new(Barrier::new(WRITERS));
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let events = Arc::clone(&s.events);
        let start = Arc::clone(&start);
        let transaction_id = transaction_id.clone();
        tasks.spawn(async move {
            let stream = new_stream();
            let record = transaction_record(&transaction_id, &stream, 100 + i64::try_from(writer).unwrap());
            let mut request = append(&stream, 0, envelopes(&stream, 1, 2));
            request.transaction = Some(record.clone());
            start.wait().await;
            (stream, record, events.append(request).await)
        });
    }

    let mut winners = Vec::new();
    let mut losers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (stream, record, result) = joined.unwrap();
        match result {
            Ok(outcome) => {
                assert_eq!(outcome, AppendOutcome { stream_version: 2 });
                winners.push((stream, record));
            }
            Err(StoreError::TransactionExists { transaction_id: reported }) => {
                assert_eq!(reported, transaction_id);
                losers.push(stream);
            }
            Err(other) => panic!("expected success or TransactionExists, got {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "exactly one writer records the transaction");
    assert_eq!(losers.len(), WRITERS - 1);
    let (winning_stream, winning_record) = winners.pop().unwrap();
    assert_eq!(s.events.transaction(&transaction_id).await.unwrap(), Some(winning_record));
    assert_eq!(s.events.load_stream(&winning_stream, 0).await.unwrap().len(), 2);
    for stream in losers {
        assert!(s.events.load_stream(&stream, 0).await.unwrap().is_empty(), "{stream} has events");
    }
}

pub(crate) async fn concurrent_claims_on_one_key_let_exactly_one_request_hold_it(s: Stores) {
    const CLAIMANTS: usize = 16;
    let t = now();
    let key = idem_key("accounts");
    let start = Arc::new(Barrier::new(CLAIMANTS));
    let mut tasks = JoinSet::new();
    for _ in 0..CLAIMANTS {
        let idempotency = Arc::clone(&s.idempotency);
        let start = Arc::clone(&start);
        let request = claim(&key, HASH_A, Uuid::new_v4(), t);
        tasks.spawn(async move {
            start.wait().await;
            let outcome = idempotency.claim(request.clone()).await.unwrap();
            (request, outcome)
        });
    }

    let mut holders = Vec::new();
    let mut seen = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (request, ClaimOutcome::Claimed) => holders.push(request),
            (_, ClaimOutcome::Existing(record)) => seen.push(record),
        }
    }

    assert_eq!(holders.len(), 1, "exactly one claim holds the key");
    assert_eq!(seen.len(), CLAIMANTS - 1);
    let holder = in_progress(&holders[0]);
    assert!(seen.iter().all(|r| *r == holder), "every other claim sees the holder: {seen:?}");
    assert_eq!(stored_key(&s, &key, t).await, Some(holder));
}

// ---------------------------------------------------------------------------------------------------------
// Listing streams
// ---------------------------------------------------------------------------------------------------------

async fn create_streams(s: &Stores, ids: &[String]) {
    for id in ids {
        s.events.append(append(id, 0, envelopes(id, 1, 1))).await.unwrap();
    }
}

pub(crate) async fn list_streams_filters_by_prefix_in_ascending_order(s: Stores) {
    let prefix = format!("contract-{}-", Uuid::new_v4().simple());
    let other = format!("contract-{}-", Uuid::new_v4().simple());
    let named = |p: &str, n: &str| format!("{p}{n}");
    create_streams(
        &s,
        &[
            named(&prefix, "c"),
            named(&prefix, "a9"),
            named(&other, "a"),
            named(&prefix, "b"),
            named(&prefix, "a10"),
            prefix.trim_end_matches('-').to_owned(),
        ],
    )
    .await;

    let listed = s.events.list_streams(&prefix, None, 100).await.unwrap();
    let want = ["a10", "a9", "b", "c"].map(|n| named(&prefix, n));
    assert_eq!(listed, want);
    assert_eq!(s.events.list_streams(&other, None, 100).await.unwrap(), [named(&other, "a")]);
    assert_eq!(s.events.list_streams(&named(&prefix, "a"), None, 100).await.unwrap(), want[..2]);
    let unused = format!("contract-{}-", Uuid::new_v4().simple());
    assert!(s.events.list_streams(&unused, None, 100).await.unwrap().is_empty());
}

pub(crate) async fn list_streams_pages_after_an_exclusive_cursor_with_a_limit(s: Stores) {
    let prefix = format!("contract-{}-", Uuid::new_v4().simple());
    let ids: Vec<String> = ["d", "a", "e", "c", "b"].iter().map(|n| format!("{prefix}{n}")).collect();
    create_streams(&s, &ids).await;
    let id = |n: &str| format!("{prefix}{n}");
    let list = |after: Option<String>, limit: usize| {
        let events = Arc::clone(&s.events);
        let prefix = prefix.clone();
        async move { events.list_streams(&prefix, after.as_deref(), limit).await.unwrap() }
    };

    assert_eq!(list(None, 2).await, [id("a"), id("b")]);
    assert_eq!(list(Some(id("b")), 2).await, [id("c"), id("d")]);
    assert_eq!(list(Some(id("d")), 2).await, [id("e")]);
    assert!(list(Some(id("e")), 2).await.is_empty());
    // The cursor need not name a stream.
    assert_eq!(list(Some(id("bb")), 10).await, [id("c"), id("d"), id("e")]);

    // Walking page by page with the last id as cursor sees every stream once, in order.
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(cursor.clone(), 1).await;
        let Some(last) = page.last() else { break };
        cursor = Some(last.clone());
        walked.extend(page);
        assert!(walked.len() <= ids.len(), "paging does not end: {walked:?}");
    }
    assert_eq!(walked, ["a", "b", "c", "d", "e"].map(id));
}

// ---------------------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------------------

fn snapshot(stream_id: &str, version: u64) -> Snapshot {
    Snapshot {
        stream_id: stream_id.to_owned(),
        version,
        schema_version: 1,
        state: json!({"balanceMinor": (version * 1_000).to_string(), "status": "ACTIVE", "holds": []}),
    }
}

pub(crate) async fn missing_snapshot_loads_as_none(s: Stores) {
    assert_eq!(s.snapshots.load(&new_stream()).await.unwrap(), None);
}

pub(crate) async fn saved_snapshot_loads_back_and_a_newer_one_replaces_it(s: Stores) {
    let stream = new_stream();
    let first = snapshot(&stream, 50);
    s.snapshots.save(first.clone()).await.unwrap();
    assert_eq!(s.snapshots.load(&stream).await.unwrap(), Some(first));

    let newer = snapshot(&stream, 100);
    s.snapshots.save(newer.clone()).await.unwrap();
    assert_eq!(s.snapshots.load(&stream).await.unwrap(), Some(newer));
    assert_eq!(s.snapshots.load(&new_stream()).await.unwrap(), None);
}

pub(crate) async fn older_snapshot_does_not_replace_a_newer_one(s: Stores) {
    let stream = new_stream();
    let newer = snapshot(&stream, 100);
    s.snapshots.save(newer.clone()).await.unwrap();

    s.snapshots.save(snapshot(&stream, 50)).await.unwrap();

    assert_eq!(s.snapshots.load(&stream).await.unwrap(), Some(newer));
}

// ---------------------------------------------------------------------------------------------------------
// Read model
// ---------------------------------------------------------------------------------------------------------

pub(crate) async fn unprojected_stream_has_checkpoint_zero_and_no_rows(s: Stores) {
    let (account, stream) = new_account();
    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 0);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), None);
    assert!(all_statement(&s, &account).await.is_empty());
}

pub(crate) async fn apply_moves_rows_and_checkpoint_together(s: Stores) {
    let (account, stream) = new_account();
    let e1 = statement_entry(&account, 1);
    let s1 = summary(&account, 1, 100);

    s.read_model.apply(change(&stream, 0, 1, Some(s1.clone()), vec![e1.clone()])).await.unwrap();

    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 1);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), Some(s1));
    assert_eq!(all_statement(&s, &account).await, std::slice::from_ref(&e1));

    let e2 = statement_entry(&account, 2);
    let e3 = freeze_entry(&account, 3);
    let mut s3 = summary(&account, 3, 300);
    s3.status = AccountStatus::Frozen;
    s3.held_minor = 50;

    s.read_model.apply(change(&stream, 1, 3, Some(s3.clone()), vec![e2.clone(), e3.clone()])).await.unwrap();

    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 3);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), Some(s3));
    assert_eq!(all_statement(&s, &account).await, [e1, e2, e3]);
}

pub(crate) async fn checkpoints_and_summaries_of_many_streams_answer_in_the_order_asked(s: Stores) {
    let (one, one_stream) = new_account();
    let (two, two_stream) = new_account();
    let (never, never_stream) = new_account();
    // Built once: a summary carries the clock's second.
    let (one_summary, two_summary) = (summary(&one, 1, 100), summary(&two, 4, 400));
    s.read_model.apply(change(&one_stream, 0, 1, Some(one_summary.clone()), Vec::new())).await.unwrap();
    s.read_model.apply(change(&two_stream, 0, 4, Some(two_summary.clone()), Vec::new())).await.unwrap();

    let streams = [two_stream.clone(), never_stream, one_stream.clone(), two_stream];
    assert_eq!(s.read_model.checkpoints(&streams).await.unwrap(), [4, 0, 1, 4]);
    let accounts = [one.clone(), never, two.clone()];
    assert_eq!(
        s.read_model.summaries(&accounts).await.unwrap(),
        [Some(one_summary), None, Some(two_summary)]
    );
    assert!(s.read_model.checkpoints(&[]).await.unwrap().is_empty());
    assert!(s.read_model.summaries(&[]).await.unwrap().is_empty());
}

pub(crate) async fn apply_all_applies_each_change_whose_checkpoint_is_where_it_expects_and_no_other(
    s: Stores,
) {
    let (fresh, fresh_stream) = new_account();
    let (going, going_stream) = new_account();
    let (stale, stale_stream) = new_account();
    let (ahead, ahead_stream) = new_account();
    for (account, stream) in [(&going, &going_stream), (&stale, &stale_stream), (&ahead, &ahead_stream)] {
        let rows = vec![statement_entry(account, 1), statement_entry(account, 2)];
        s.read_model.apply(change(stream, 0, 2, Some(summary(account, 2, 200)), rows)).await.unwrap();
    }
    let before_stale = all_statement(&s, &stale).await;
    let (stale_summary, ahead_summary) =
        (s.read_model.summary(&stale).await.unwrap(), s.read_model.summary(&ahead).await.unwrap());

    let fresh_rows = vec![statement_entry(&fresh, 1)];
    let going_rows = vec![statement_entry(&going, 3), freeze_entry(&going, 4)];
    // Built once: a summary carries the clock's second.
    let (fresh_summary, going_summary) = (summary(&fresh, 1, 100), summary(&going, 4, 400));
    let applied = s
        .read_model
        .apply_all(vec![
            change(&fresh_stream, 0, 1, Some(fresh_summary.clone()), fresh_rows.clone()),
            change(&going_stream, 2, 4, Some(going_summary.clone()), going_rows.clone()),
            // Read at 1, but the stream is at 2: another writer got there first.
            change(&stale_stream, 1, 2, Some(summary(&stale, 2, 999)), vec![statement_entry(&stale, 2)]),
            // Expects a fresh stream, but it has rows.
            change(&ahead_stream, 0, 1, Some(summary(&ahead, 1, 999)), vec![statement_entry(&ahead, 1)]),
        ])
        .await
        .unwrap();

    assert_eq!(applied, [true, true, false, false]);
    assert_eq!(s.read_model.checkpoint(&fresh_stream).await.unwrap(), 1);
    assert_eq!(s.read_model.summary(&fresh).await.unwrap(), Some(fresh_summary));
    assert_eq!(all_statement(&s, &fresh).await, fresh_rows);
    assert_eq!(s.read_model.checkpoint(&going_stream).await.unwrap(), 4);
    assert_eq!(s.read_model.summary(&going).await.unwrap(), Some(going_summary));
    assert_eq!(all_statement(&s, &going).await[2..], going_rows);
    for (account, stream, before) in
        [(&stale, &stale_stream, stale_summary), (&ahead, &ahead_stream, ahead_summary)]
    {
        assert_eq!(s.read_model.checkpoint(stream).await.unwrap(), 2);
        assert_eq!(s.read_model.summary(account).await.unwrap(), before);
        assert!(before.is_some_and(|b| b.version == 2));
    }
    assert_eq!(all_statement(&s, &stale).await, before_stale);
    assert!(s.read_model.apply_all(Vec::new()).await.unwrap().is_empty());
}

pub(crate) async fn apply_all_naming_a_stream_twice_is_invalid_and_writes_nothing(s: Stores) {
    let (account, stream) = new_account();
    let (other, other_stream) = new_account();

    let err = s
        .read_model
        .apply_all(vec![
            change(&other_stream, 0, 1, Some(summary(&other, 1, 100)), vec![statement_entry(&other, 1)]),
            change(&stream, 0, 1, Some(summary(&account, 1, 100)), vec![statement_entry(&account, 1)]),
            change(&stream, 1, 2, Some(summary(&account, 2, 200)), vec![statement_entry(&account, 2)]),
        ])
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::Invalid(_)), "got {err:?}");
    for (account, stream) in [(&account, &stream), (&other, &other_stream)] {
        assert_eq!(s.read_model.checkpoint(stream).await.unwrap(), 0);
        assert_eq!(s.read_model.summary(account).await.unwrap(), None);
        assert!(all_statement(&s, account).await.is_empty());
    }
}

pub(crate) async fn apply_from_a_stale_checkpoint_fails_and_changes_nothing(s: Stores) {
    let (account, stream) = new_account();
    let rows = vec![statement_entry(&account, 1), statement_entry(&account, 2)];
    let s2 = summary(&account, 2, 200);
    s.read_model.apply(change(&stream, 0, 2, Some(s2.clone()), rows.clone())).await.unwrap();

    for expected in [0, 1, 3, 5] {
        let next = change(
            &stream,
            expected,
            expected + 1,
            Some(summary(&account, expected + 1, 999)),
            vec![statement_entry(&account, expected + 1)],
        );

        let err = s.read_model.apply(next).await.unwrap_err();

        let StoreError::CheckpointMoved { stream_id, expected: reported, actual } = err else {
            panic!("expected CheckpointMoved from {expected}, got {err:?}");
        };
        assert_eq!(stream_id, stream);
        assert_eq!(reported, expected);
        assert_eq!(actual, 2);
    }

    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 2);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), Some(s2));
    assert_eq!(all_statement(&s, &account).await, rows);
}

pub(crate) async fn applying_the_same_change_twice_fails_the_second_time_and_leaves_rows_unchanged(
    s: Stores,
) {
    let (account, stream) = new_account();
    let rows = vec![statement_entry(&account, 1), statement_entry(&account, 2)];
    let s2 = summary(&account, 2, 200);
    let once = change(&stream, 0, 2, Some(s2.clone()), rows.clone());
    s.read_model.apply(once.clone()).await.unwrap();

    // A redelivered change carrying different row content must not overwrite what was applied.
    let mut twice = once;
    twice.summary = Some(summary(&account, 2, 123_456));
    for row in &mut twice.statement {
        row.event_id = Uuid::new_v4();
    }
    let err = s.read_model.apply(twice).await.unwrap_err();

    assert!(matches!(err, StoreError::CheckpointMoved { expected: 0, actual: 2, .. }), "got {err:?}");
    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 2);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), Some(s2));
    assert_eq!(all_statement(&s, &account).await, rows);
}

pub(crate) async fn statement_pages_by_offset_and_limit_in_version_order(s: Stores) {
    let (account, stream) = new_account();
    let rows: Vec<StatementEntry> = (1..=5).map(|v| statement_entry(&account, v)).collect();
    // Rows arrive out of order inside a change; a neighbouring account has rows of its own.
    let first = vec![rows[2].clone(), rows[0].clone(), rows[1].clone()];
    s.read_model.apply(change(&stream, 0, 3, Some(summary(&account, 3, 300)), first)).await.unwrap();
    let second = vec![rows[4].clone(), rows[3].clone()];
    s.read_model.apply(change(&stream, 3, 5, Some(summary(&account, 5, 500)), second)).await.unwrap();
    let (neighbour, neighbour_stream) = new_account();
    let theirs = vec![statement_entry(&neighbour, 1), statement_entry(&neighbour, 2)];
    s.read_model.apply(change(&neighbour_stream, 0, 2, None, theirs.clone())).await.unwrap();

    let page = |offset: usize, limit: usize| {
        let read_model = Arc::clone(&s.read_model);
        let account = account.clone();
        async move { read_model.statement(&account, offset, limit).await.unwrap() }
    };
    assert_eq!(page(0, 100).await, rows);
    assert_eq!(page(0, 2).await, rows[0..2]);
    assert_eq!(page(2, 2).await, rows[2..4]);
    assert_eq!(page(4, 2).await, rows[4..5]);
    assert_eq!(page(1, 3).await, rows[1..4]);
    assert!(page(5, 2).await.is_empty());
    assert!(page(50, 2).await.is_empty());
    assert_eq!(all_statement(&s, &neighbour).await, theirs);
}

pub(crate) async fn replace_all_replaces_each_account_and_leaves_the_others(s: Stores) {
    let (one, one_stream) = new_account();
    let (two, two_stream) = new_account();
    let (gone, gone_stream) = new_account();
    let (neighbour, neighbour_stream) = new_account();
    for (account, stream) in [(&one, &one_stream), (&gone, &gone_stream), (&neighbour, &neighbour_stream)] {
        let rows: Vec<StatementEntry> = (1..=3).map(|v| statement_entry(account, v)).collect();
        s.read_model.apply(change(stream, 0, 3, Some(summary(account, 3, 300)), rows)).await.unwrap();
    }

    let neighbour_summary = s.read_model.summary(&neighbour).await.unwrap();
    let one_rows = vec![statement_entry(&one, 1), freeze_entry(&one, 2)];
    let two_rows: Vec<StatementEntry> = (1..=4).map(|v| statement_entry(&two, v)).collect();
    // Built once: a summary carries the clock's second.
    let (one_summary, two_summary) = (summary(&one, 2, 4_200), summary(&two, 4, 400));
    let replacement = |stream: &str, account: &str, checkpoint, summary, statement| ProjectionReplacement {
        stream_id: stream.to_owned(),
        account_id: account.to_owned(),
        checkpoint,
        summary,
        statement,
    };
    s.read_model
        .replace_all(vec![
            replacement(&one_stream, &one, 2, Some(one_summary.clone()), one_rows.clone()),
            replacement(&two_stream, &two, 4, Some(two_summary.clone()), two_rows.clone()),
            replacement(&gone_stream, &gone, 0, None, Vec::new()),
        ])
        .await
        .unwrap();

    assert_eq!(s.read_model.checkpoint(&one_stream).await.unwrap(), 2);
    assert_eq!(s.read_model.summary(&one).await.unwrap(), Some(one_summary));
    assert_eq!(all_statement(&s, &one).await, one_rows, "row 3 is gone, rows 1-2 replaced");
    assert_eq!(s.read_model.checkpoint(&two_stream).await.unwrap(), 4);
    assert_eq!(s.read_model.summary(&two).await.unwrap(), Some(two_summary));
    assert_eq!(all_statement(&s, &two).await, two_rows);
    assert_eq!(s.read_model.checkpoint(&gone_stream).await.unwrap(), 0);
    assert_eq!(s.read_model.summary(&gone).await.unwrap(), None);
    assert!(all_statement(&s, &gone).await.is_empty());
    assert_eq!(s.read_model.checkpoint(&neighbour_stream).await.unwrap(), 3);
    assert_eq!(s.read_model.summary(&neighbour).await.unwrap(), neighbour_summary);
    assert!(neighbour_summary.is_some_and(|n| n.version == 3));
    assert_eq!(all_statement(&s, &neighbour).await.len(), 3);

    // A replacement naming rows of another account is refused, and nothing of the call is written.
    let mut foreign = replacement(&one_stream, &one, 1, None, vec![statement_entry(&neighbour, 1)]);
    foreign.statement.push(statement_entry(&one, 1));
    let err = s
        .read_model
        .replace_all(vec![replacement(&two_stream, &two, 1, None, Vec::new()), foreign])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "got {err:?}");
    assert_eq!(s.read_model.checkpoint(&two_stream).await.unwrap(), 4);
    assert_eq!(all_statement(&s, &two).await, two_rows);
    s.read_model.replace_all(Vec::new()).await.unwrap();
}

pub(crate) async fn replace_overwrites_summary_statement_and_checkpoint(s: Stores) {
    let (account, stream) = new_account();
    let rows: Vec<StatementEntry> = (1..=3).map(|v| statement_entry(&account, v)).collect();
    s.read_model.apply(change(&stream, 0, 3, Some(summary(&account, 3, 300)), rows)).await.unwrap();
    let (neighbour, neighbour_stream) = new_account();
    let theirs = vec![statement_entry(&neighbour, 1)];
    let their_summary = summary(&neighbour, 1, 100);
    s.read_model
        .apply(change(&neighbour_stream, 0, 1, Some(their_summary.clone()), theirs.clone()))
        .await
        .unwrap();

    let rebuilt_rows = vec![statement_entry(&account, 1), freeze_entry(&account, 2)];
    let rebuilt_summary = summary(&account, 2, 4_200);
    s.read_model
        .replace(ProjectionReplacement {
            stream_id: stream.clone(),
            account_id: account.clone(),
            checkpoint: 2,
            summary: Some(rebuilt_summary.clone()),
            statement: rebuilt_rows.clone(),
        })
        .await
        .unwrap();

    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 2);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), Some(rebuilt_summary));
    assert_eq!(all_statement(&s, &account).await, rebuilt_rows, "row 3 is gone, rows 1-2 replaced");
    assert_eq!(s.read_model.checkpoint(&neighbour_stream).await.unwrap(), 1);
    assert_eq!(s.read_model.summary(&neighbour).await.unwrap(), Some(their_summary));
    assert_eq!(all_statement(&s, &neighbour).await, theirs);

    // Projection continues from the replaced checkpoint.
    let e3 = statement_entry(&account, 3);
    let s3 = summary(&account, 3, 4_300);
    s.read_model.apply(change(&stream, 2, 3, Some(s3.clone()), vec![e3.clone()])).await.unwrap();
    assert_eq!(s.read_model.summary(&account).await.unwrap(), Some(s3));
    assert_eq!(all_statement(&s, &account).await.last(), Some(&e3));

    // A replacement without an account removes every row.
    s.read_model
        .replace(ProjectionReplacement {
            stream_id: stream.clone(),
            account_id: account.clone(),
            checkpoint: 0,
            summary: None,
            statement: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), 0);
    assert_eq!(s.read_model.summary(&account).await.unwrap(), None);
    assert!(all_statement(&s, &account).await.is_empty());
}

// ---------------------------------------------------------------------------------------------------------
// Rebuild jobs
// ---------------------------------------------------------------------------------------------------------

pub(crate) async fn rebuild_job_put_then_get_round_trips_and_put_overwrites(s: Stores) {
    let rebuild_id = new_id("rebuild");
    let running = rebuild_job(&rebuild_id, RebuildStatus::Running, 3);
    s.rebuilds.put(running.clone()).await.unwrap();
    assert_eq!(s.rebuilds.get(&rebuild_id).await.unwrap(), Some(running.clone()));

    let mut failed = rebuild_job(&rebuild_id, RebuildStatus::Failed, 4);
    failed.started_at = running.started_at;
    failed.error = Some("event store unavailable".to_owned());
    failed.last_stream_id = None;
    s.rebuilds.put(failed.clone()).await.unwrap();
    assert_eq!(s.rebuilds.get(&rebuild_id).await.unwrap(), Some(failed));

    let other_id = new_id("rebuild");
    let completed = rebuild_job(&other_id, RebuildStatus::Completed, 10);
    s.rebuilds.put(completed.clone()).await.unwrap();
    assert_eq!(s.rebuilds.get(&other_id).await.unwrap(), Some(completed));
}

pub(crate) async fn unknown_rebuild_job_is_none(s: Stores) {
    assert_eq!(s.rebuilds.get(&new_id("rebuild")).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------------------
// Transfer status
// ---------------------------------------------------------------------------------------------------------

/// A transfer's status row at `version`: pending with its first `version - 1` legs, or completed at 4.
fn transfer_status(transfer_id: &str, version: u64) -> TransferStatus {
    let created = now() - Duration::seconds(60);
    let legs = [Leg::Hold, Leg::Credit, Leg::Capture]
        .into_iter()
        .zip(1_i64..)
        .take(usize::try_from(version.saturating_sub(1)).unwrap())
        .map(|(leg, i)| TransferLegStatus {
            leg,
            status: LegStatus::Completed,
            at: created + Duration::seconds(i),
        })
        .collect();
    TransferStatus {
        transfer_id: transfer_id.to_owned(),
        status: if version >= 4 { TransferPhase::Completed } else { TransferPhase::Pending },
        failure_reason: None,
        source_account_id: "acc-source".to_owned(),
        destination_account_id: "acc-destination".to_owned(),
        amount_minor: 1025,
        currency: eur(),
        legs,
        version,
        created_at: created,
        updated_at: created + Duration::seconds(i64::try_from(version).unwrap()),
    }
}

fn failed_transfer_status(transfer_id: &str) -> TransferStatus {
    let mut status = transfer_status(transfer_id, 2);
    status.status = TransferPhase::Failed;
    status.failure_reason = Some("ACCOUNT_NOT_FOUND".to_owned());
    status.legs.push(TransferLegStatus {
        leg: Leg::Credit,
        status: LegStatus::Failed,
        at: status.updated_at,
    });
    status.legs.push(TransferLegStatus {
        leg: Leg::Release,
        status: LegStatus::Completed,
        at: status.updated_at,
    });
    status.version = 4;
    status
}

/// What the reconciler asks: rows still PENDING, last updated before a time, oldest first, bounded.
/// The rows are dated in 2001, so rows other tests write now never fall before the cut-offs used here.
pub(crate) async fn pending_transfers_are_listed_oldest_first_until_they_settle(s: Stores) {
    let at = |secs: i64| {
        DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
            + Duration::seconds(secs)
    };
    let dated = |id: &str, version: u64, updated: i64| {
        let mut status = transfer_status(id, version);
        status.created_at = at(0);
        status.updated_at = at(updated);
        status
    };
    let ids: Vec<String> = (0..4).map(|_| new_id("t-pending")).collect();
    s.transfers.replace(dated(&ids[0], 2, 30)).await.unwrap();
    s.transfers.replace(dated(&ids[1], 1, 10)).await.unwrap();
    s.transfers.replace(dated(&ids[2], 3, 20)).await.unwrap();
    // Settled: never listed, however old.
    s.transfers.replace(dated(&ids[3], 4, 5)).await.unwrap();
    let listed = |rows: Vec<TransferStatus>| rows.into_iter().map(|r| r.transfer_id).collect::<Vec<_>>();

    let all = listed(s.transfers.pending(at(3600), 10).await.unwrap());
    assert_eq!(all, vec![ids[1].clone(), ids[2].clone(), ids[0].clone()], "oldest update first");
    assert_eq!(listed(s.transfers.pending(at(3600), 2).await.unwrap()), all[..2].to_vec(), "bounded");
    assert_eq!(
        listed(s.transfers.pending(at(20), 10).await.unwrap()),
        vec![ids[1].clone()],
        "strictly before"
    );
    let row = s.transfers.pending(at(11), 10).await.unwrap();
    assert_eq!(row, vec![dated(&ids[1], 1, 10)], "whole rows");

    // Once it settles, a transfer leaves the list.
    let mut completed = dated(&ids[1], 4, 40);
    completed.status = TransferPhase::Completed;
    s.transfers.apply(1, completed).await.unwrap();
    assert_eq!(
        listed(s.transfers.pending(at(3600), 10).await.unwrap()),
        vec![ids[2].clone(), ids[0].clone()]
    );
}

pub(crate) async fn unknown_transfer_has_no_status(s: Stores) {
    assert_eq!(s.transfers.get(&new_id("t")).await.unwrap(), None);
}

pub(crate) async fn transfer_status_applied_from_zero_reads_back_every_field(s: Stores) {
    let id = new_id("t");
    let first = transfer_status(&id, 1);
    s.transfers.apply(0, first.clone()).await.unwrap();
    assert_eq!(s.transfers.get(&id).await.unwrap(), Some(first));

    // A failed transfer has a reason and legs of both statuses; every field round-trips.
    let other = new_id("t");
    let failed = failed_transfer_status(&other);
    s.transfers.apply(0, failed.clone()).await.unwrap();
    assert_eq!(s.transfers.get(&other).await.unwrap(), Some(failed));
}

pub(crate) async fn transfer_status_moves_only_from_the_version_the_projector_read(s: Stores) {
    let id = new_id("t");
    s.transfers.apply(0, transfer_status(&id, 1)).await.unwrap();
    s.transfers.apply(1, transfer_status(&id, 3)).await.unwrap();
    let done = transfer_status(&id, 4);
    s.transfers.apply(3, done.clone()).await.unwrap();
    assert_eq!(s.transfers.get(&id).await.unwrap(), Some(done));
}

pub(crate) async fn transfer_status_from_a_stale_version_fails_and_changes_nothing(s: Stores) {
    let id = new_id("t");
    let at_two = transfer_status(&id, 2);
    s.transfers.apply(0, transfer_status(&id, 1)).await.unwrap();
    s.transfers.apply(1, at_two.clone()).await.unwrap();

    for expected in [0, 1, 3, 7] {
        let err = s.transfers.apply(expected, transfer_status(&id, expected + 1)).await.unwrap_err();
        let StoreError::CheckpointMoved { stream_id, expected: reported, actual } = err else {
            panic!("expected CheckpointMoved from {expected}, got {err:?}");
        };
        assert_eq!(stream_id, format!("transfer-{id}"));
        assert_eq!((reported, actual), (expected, 2));
    }
    assert_eq!(s.transfers.get(&id).await.unwrap(), Some(at_two));

    // A row that does not exist yet only takes a change from zero.
    let absent = new_id("t");
    let err = s.transfers.apply(2, transfer_status(&absent, 3)).await.unwrap_err();
    assert!(matches!(err, StoreError::CheckpointMoved { expected: 2, actual: 0, .. }), "got {err:?}");
    assert_eq!(s.transfers.get(&absent).await.unwrap(), None);
}

pub(crate) async fn replace_overwrites_a_transfer_status_whatever_its_version(s: Stores) {
    let id = new_id("t");
    s.transfers.apply(0, transfer_status(&id, 1)).await.unwrap();
    s.transfers.apply(1, transfer_status(&id, 4)).await.unwrap();

    // A rebuild may take the row back (the live projector then catches up from it) or forward.
    let rebuilt = transfer_status(&id, 2);
    s.transfers.replace(rebuilt.clone()).await.unwrap();
    assert_eq!(s.transfers.get(&id).await.unwrap(), Some(rebuilt));
    let failed = failed_transfer_status(&id);
    s.transfers.replace(failed.clone()).await.unwrap();
    assert_eq!(s.transfers.get(&id).await.unwrap(), Some(failed));

    let fresh = new_id("t");
    s.transfers.replace(transfer_status(&fresh, 3)).await.unwrap();
    assert_eq!(s.transfers.get(&fresh).await.unwrap(), Some(transfer_status(&fresh, 3)));
    s.transfers.apply(3, transfer_status(&fresh, 4)).await.unwrap();
}

pub(crate) async fn concurrent_transfer_status_applies_from_one_version_let_exactly_one_win(s: Stores) {
    const WRITERS: usize = 16;
    let id = new_id("t");
    s.transfers.apply(0, transfer_status(&id, 1)).await.unwrap();
    let start = Arc::new(Barrier::new(WRITERS));
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let transfers = Arc::clone(&s.transfers);
        let start = Arc::clone(&start);
        let mut status = transfer_status(&id, 2);
        status.amount_minor = 1000 + i64::try_from(writer).unwrap();
        tasks.spawn(async move {
            start.wait().await;
            (status.clone(), transfers.apply(1, status).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (status, Ok(())) => winners.push(status),
            (_, Err(StoreError::CheckpointMoved { expected: 1, actual: 2, .. })) => {}
            (_, Err(other)) => panic!("expected success or CheckpointMoved, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    assert_eq!(s.transfers.get(&id).await.unwrap().as_ref(), winners.first());
}

// ---------------------------------------------------------------------------------------------------------
// Parked records
// ---------------------------------------------------------------------------------------------------------

/// A parked envelope of `stream_key` at `position`, parked `secs` after a base time in 2001.
fn parked(consumer: ParkedConsumer, stream_key: &str, position: u64, secs: i64) -> ParkedRecord {
    let base = DateTime::parse_from_rfc3339("2001-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    ParkedRecord {
        consumer,
        stream_key: stream_key.to_owned(),
        position,
        kind: ParkedKind::Envelope,
        payload: serde_json::to_string(&envelope(stream_key, position)).unwrap(),
        error: format!("{stream_key} v{position} refused"),
        parked_at: base + Duration::seconds(secs),
    }
}

fn names(records: &[ParkedRecord]) -> Vec<(ParkedConsumer, String, u64)> {
    records.iter().map(|r| (r.consumer, r.stream_key.clone(), r.position)).collect()
}

pub(crate) async fn nothing_is_parked_in_a_fresh_store(s: Stores) {
    assert_eq!(s.parked.stats().await.unwrap(), ParkedStats { count: 0, oldest_parked_at: None });
    assert!(s.parked.list(None, 0, 10).await.unwrap().is_empty());
    for consumer in ParkedConsumer::ALL {
        assert!(s.parked.parked_streams(consumer).await.unwrap().is_empty());
    }
    assert!(s.parked.stream(ParkedConsumer::Projector, "account-x", 10).await.unwrap().is_empty());
    assert!(!s.parked.remove(ParkedConsumer::Projector, "account-x", 1).await.unwrap());
}

pub(crate) async fn parked_records_list_oldest_first_per_consumer_or_all_and_page_by_offset(s: Stores) {
    use ParkedConsumer::{Projector, Saga};
    let a = new_stream();
    let t = new_id("transfer");
    let bad = ParkedRecord {
        kind: ParkedKind::Undecodable,
        payload: "bm90IGpzb24=".to_owned(),
        ..parked(Projector, &ParkedRecord::undecodable_key("test.account-events", 2, 41), 41, 15)
    };
    let rows = [
        parked(Projector, &a, 3, 20),
        parked(Saga, &t, 2, 10),
        bad.clone(),
        parked(Projector, &a, 4, 20),
        parked(Saga, &t, 5, 30),
    ];
    for row in rows.clone() {
        s.parked.park(row).await.unwrap();
    }

    let all = s.parked.list(None, 0, 10).await.unwrap();
    assert_eq!(
        names(&all),
        names(&[rows[1].clone(), bad.clone(), rows[0].clone(), rows[3].clone(), rows[4].clone()]),
        "oldest parked first, then by consumer, stream and position"
    );
    assert_eq!(all[1], bad, "every field reads back, the undecodable payload as stored");
    assert_eq!(all[2], rows[0]);
    assert_eq!(s.parked.list(None, 1, 2).await.unwrap(), all[1..3].to_vec(), "paged by offset and limit");
    assert!(s.parked.list(None, 5, 10).await.unwrap().is_empty());
    assert_eq!(
        names(&s.parked.list(Some(Saga), 0, 10).await.unwrap()),
        names(&[rows[1].clone(), rows[4].clone()])
    );
    assert_eq!(
        names(&s.parked.list(Some(Projector), 0, 10).await.unwrap()),
        names(&[bad, rows[0].clone(), rows[3].clone()])
    );
}

pub(crate) async fn a_record_parks_once_under_its_name_and_the_first_one_stays(s: Stores) {
    let a = new_stream();
    let first = parked(ParkedConsumer::Projector, &a, 2, 10);
    s.parked.park(first.clone()).await.unwrap();
    let again =
        ParkedRecord { error: "parked behind v1".to_owned(), ..parked(ParkedConsumer::Projector, &a, 2, 50) };
    s.parked.park(again).await.unwrap();
    // The same stream and position of the other consumer is another record.
    let saga = parked(ParkedConsumer::Saga, &a, 2, 60);
    s.parked.park(saga.clone()).await.unwrap();

    assert_eq!(s.parked.list(None, 0, 10).await.unwrap(), vec![first, saga]);
}

pub(crate) async fn parked_streams_name_each_stream_of_one_consumer_once_in_order(s: Stores) {
    let (a, b, c) = (new_id("account-a"), new_id("account-b"), new_id("transfer"));
    for row in [
        parked(ParkedConsumer::Projector, &b, 1, 1),
        parked(ParkedConsumer::Projector, &a, 2, 2),
        parked(ParkedConsumer::Projector, &b, 2, 3),
        parked(ParkedConsumer::Saga, &c, 1, 4),
    ] {
        s.parked.park(row).await.unwrap();
    }
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(s.parked.parked_streams(ParkedConsumer::Projector).await.unwrap(), expected);
    assert_eq!(s.parked.parked_streams(ParkedConsumer::Saga).await.unwrap(), vec![c]);
}

pub(crate) async fn a_parked_stream_reads_in_position_order_and_removal_takes_one_record(s: Stores) {
    use ParkedConsumer::{Projector, Saga};
    let a = new_stream();
    // A stream whose id extends `a`'s is another stream.
    let longer = format!("{a}0");
    let head = parked(Projector, &a, 9, 5);
    for row in [
        parked(Projector, &a, 10, 1),
        head.clone(),
        parked(Projector, &a, 11, 2),
        parked(Projector, &longer, 1, 1),
        parked(Saga, &a, 3, 1),
    ] {
        s.parked.park(row).await.unwrap();
    }
    let positions = |rows: Vec<ParkedRecord>| rows.into_iter().map(|r| r.position).collect::<Vec<_>>();

    assert_eq!(positions(s.parked.stream(Projector, &a, 10).await.unwrap()), vec![9, 10, 11]);
    assert_eq!(positions(s.parked.stream(Projector, &a, 2).await.unwrap()), vec![9, 10], "bounded");
    assert_eq!(s.parked.stream(Projector, &a, 1).await.unwrap(), vec![head], "whole records");

    assert!(s.parked.remove(Projector, &a, 9).await.unwrap());
    assert!(!s.parked.remove(Projector, &a, 9).await.unwrap(), "removed once");
    assert!(!s.parked.remove(Projector, &a, 3).await.unwrap(), "the saga's record is not the projector's");
    assert_eq!(positions(s.parked.stream(Projector, &a, 10).await.unwrap()), vec![10, 11]);
    assert_eq!(positions(s.parked.stream(Saga, &a, 10).await.unwrap()), vec![3]);
    assert_eq!(positions(s.parked.stream(Projector, &longer, 10).await.unwrap()), vec![1]);

    assert!(s.parked.remove(Projector, &a, 10).await.unwrap());
    assert!(s.parked.remove(Projector, &a, 11).await.unwrap());
    assert!(s.parked.stream(Projector, &a, 10).await.unwrap().is_empty());
    assert!(
        !s.parked.parked_streams(Projector).await.unwrap().contains(&a),
        "an emptied stream is not parked"
    );
}

pub(crate) async fn parked_stats_count_every_consumer_and_date_the_oldest(s: Stores) {
    let (a, t) = (new_stream(), new_id("transfer"));
    let oldest = parked(ParkedConsumer::Saga, &t, 1, 7);
    for row in [
        parked(ParkedConsumer::Projector, &a, 1, 9),
        oldest.clone(),
        parked(ParkedConsumer::Projector, &a, 2, 30),
    ] {
        s.parked.park(row).await.unwrap();
    }
    assert_eq!(
        s.parked.stats().await.unwrap(),
        ParkedStats { count: 3, oldest_parked_at: Some(oldest.parked_at) }
    );

    s.parked.remove(ParkedConsumer::Saga, &t, 1).await.unwrap();
    assert_eq!(
        s.parked.stats().await.unwrap(),
        ParkedStats {
            count: 2,
            oldest_parked_at: Some(parked(ParkedConsumer::Projector, &a, 1, 9).parked_at)
        }
    );
}
