//! Holds on accounts and the transfer aggregate: every rule as a given/when/then scenario, the pure half
//! of the process manager (`next_step`, `leg_command`, `record_leg`, leg transaction ids), and property
//! tests over random interleavings of transfers, deposits, withdrawals, freezes and redelivered steps.

// Test code: helpers outside `#[test]` functions may panic (clippy.toml allows it in tests).
#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use corebank_domain::account::{
    ACCOUNT_EVENT_SCHEMA_VERSION, AccountCreated, FundsReserved, MoneyMoved, ReservationSettled,
    StatusChanged,
};
use corebank_domain::testing::{given, given_transfer};
use corebank_domain::transfer::{
    LEG_TRANSACTION_PREFIX, Leg, LegCommand, LegOutcome, NextStep, TRANSFER_EVENT_SCHEMA_VERSION,
    TransferReason, TransferStep, leg_command, leg_transaction_id, next_step, record_leg,
};
use corebank_domain::{
    AccountCommand, AccountEvent, AccountId, AccountState, Amount, Currency, DomainError, OwnerId, Reason,
    TransactionId, TransferCommand, TransferEvent, TransferId, TransferState, TransferTerms, account,
    transfer,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap_or_else(|e| panic!("{e}"))
}

fn usd() -> Currency {
    currency("USD")
}

fn acc(id: &str) -> AccountId {
    AccountId::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

fn xfer(id: &str) -> TransferId {
    TransferId::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

fn tx(id: &str) -> TransactionId {
    TransactionId::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

fn amount(minor: i64) -> Amount {
    Amount::from_minor(minor).unwrap_or_else(|e| panic!("{e}"))
}

fn reason(text: &str) -> Reason {
    Reason::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

// --- account holds --------------------------------------------------------------------------------------

const SOURCE: &str = "acc-src";

fn created() -> AccountEvent {
    AccountEvent::Created(AccountCreated {
        account_id: acc(SOURCE),
        owner_id: OwnerId::parse("owner-1").unwrap_or_else(|e| panic!("{e}")),
        currency: usd(),
    })
}

fn deposited(minor: i64, balance_after: i64) -> AccountEvent {
    AccountEvent::Deposited(MoneyMoved {
        account_id: acc(SOURCE),
        amount: amount(minor),
        currency: usd(),
        transaction_id: tx("dep-1"),
        balance_after,
    })
}

fn frozen() -> AccountEvent {
    AccountEvent::Frozen(StatusChanged { account_id: acc(SOURCE), reason: reason("audit") })
}

fn hold_tx(transfer: &str) -> TransactionId {
    leg_transaction_id(&xfer(transfer), Leg::Hold)
}

fn place_hold(transfer: &str, minor: i64) -> AccountCommand {
    AccountCommand::PlaceHold {
        transfer_id: xfer(transfer),
        amount: amount(minor),
        currency: usd(),
        transaction_id: hold_tx(transfer),
    }
}

fn capture(transfer: &str) -> AccountCommand {
    AccountCommand::CaptureHold {
        transfer_id: xfer(transfer),
        transaction_id: leg_transaction_id(&xfer(transfer), Leg::Capture),
    }
}

fn release(transfer: &str) -> AccountCommand {
    AccountCommand::ReleaseHold {
        transfer_id: xfer(transfer),
        transaction_id: leg_transaction_id(&xfer(transfer), Leg::Release),
    }
}

fn hold_placed(transfer: &str, minor: i64) -> AccountEvent {
    AccountEvent::FundsReserved(FundsReserved {
        account_id: acc(SOURCE),
        transfer_id: xfer(transfer),
        amount: amount(minor),
        currency: usd(),
        transaction_id: hold_tx(transfer),
    })
}

fn settled(transfer: &str, leg: Leg, minor: i64, balance_after: i64) -> ReservationSettled {
    ReservationSettled {
        account_id: acc(SOURCE),
        transfer_id: xfer(transfer),
        amount: amount(minor),
        currency: usd(),
        transaction_id: leg_transaction_id(&xfer(transfer), leg),
        balance_after,
    }
}

fn captured(transfer: &str, minor: i64, balance_after: i64) -> AccountEvent {
    AccountEvent::ReservationCaptured(settled(transfer, Leg::Capture, minor, balance_after))
}

fn released(transfer: &str, minor: i64, balance_after: i64) -> AccountEvent {
    AccountEvent::ReservationReleased(settled(transfer, Leg::Release, minor, balance_after))
}

fn balances(state: &AccountState) -> (i64, i64) {
    let a = state.account.as_ref().unwrap_or_else(|| panic!("the account exists"));
    (a.balance, a.available())
}

#[test]
fn a_hold_reduces_the_available_balance_but_not_the_posted_one() {
    let state = given(&[created(), deposited(1000, 1000)])
        .when(&place_hold("t-1", 300))
        .then_events(&[hold_placed("t-1", 300)]);
    assert_eq!(balances(&state), (1000, 700));
}

#[test]
fn a_hold_beyond_the_available_balance_is_refused_with_the_exact_figures() {
    given(&[created(), deposited(1000, 1000), hold_placed("t-1", 700)])
        .when(&place_hold("t-2", 301))
        .then_error(&DomainError::InsufficientFunds { available_minor: 300, requested_minor: 301 });
}

#[test]
fn a_hold_of_exactly_the_available_balance_is_accepted_and_leaves_nothing_available() {
    let state = given(&[created(), deposited(1000, 1000), hold_placed("t-1", 700)])
        .when(&place_hold("t-2", 300))
        .then_events(&[hold_placed("t-2", 300)]);
    assert_eq!(balances(&state), (1000, 0));
}

#[test]
fn a_withdrawal_sees_the_available_balance_not_the_posted_one() {
    given(&[created(), deposited(1000, 1000), hold_placed("t-1", 700)])
        .when(&AccountCommand::Withdraw { amount: amount(301), currency: usd(), transaction_id: tx("w-1") })
        .then_error(&DomainError::InsufficientFunds { available_minor: 300, requested_minor: 301 });
}

#[test]
fn a_second_hold_for_the_same_transfer_is_refused_while_the_first_is_open() {
    given(&[created(), deposited(1000, 1000), hold_placed("t-1", 100)])
        .when(&place_hold("t-1", 100))
        .then_error(&DomainError::HoldAlreadyExists);
}

#[test]
fn a_frozen_account_takes_no_new_hold() {
    given(&[created(), deposited(1000, 1000), frozen()])
        .when(&place_hold("t-1", 1))
        .then_error(&DomainError::AccountNotActive);
}

#[test]
fn a_hold_in_another_currency_is_refused_naming_both_currencies() {
    let command = AccountCommand::PlaceHold {
        transfer_id: xfer("t-1"),
        amount: amount(1),
        currency: currency("EUR"),
        transaction_id: hold_tx("t-1"),
    };
    given(&[created(), deposited(1000, 1000)])
        .when(&command)
        .then_error(&DomainError::CurrencyMismatch { account: usd(), requested: currency("EUR") });
}

#[test]
fn a_hold_on_a_missing_account_is_not_found() {
    given(&[]).when(&place_hold("t-1", 1)).then_error(&DomainError::AccountNotFound);
}

#[test]
fn capturing_a_hold_debits_the_posted_balance_once() {
    let past = [created(), deposited(1000, 1000), hold_placed("t-1", 300)];
    let state = given(&past).when(&capture("t-1")).then_events(&[captured("t-1", 300, 700)]);
    assert_eq!(balances(&state), (700, 700));
    let mut after = past.to_vec();
    after.push(captured("t-1", 300, 700));
    given(&after).when(&capture("t-1")).then_error(&DomainError::HoldNotFound);
    given(&after).when(&release("t-1")).then_error(&DomainError::HoldNotFound);
}

#[test]
fn releasing_a_hold_gives_the_money_back_to_the_available_balance_once() {
    let past = [created(), deposited(1000, 1000), hold_placed("t-1", 300)];
    let state = given(&past).when(&release("t-1")).then_events(&[released("t-1", 300, 1000)]);
    assert_eq!(balances(&state), (1000, 1000));
    let mut after = past.to_vec();
    after.push(released("t-1", 300, 1000));
    given(&after).when(&release("t-1")).then_error(&DomainError::HoldNotFound);
    given(&after).when(&capture("t-1")).then_error(&DomainError::HoldNotFound);
}

#[test]
fn settling_a_hold_that_was_never_placed_is_refused() {
    given(&[created(), deposited(1000, 1000)]).when(&capture("t-9")).then_error(&DomainError::HoldNotFound);
    given(&[created(), deposited(1000, 1000)]).when(&release("t-9")).then_error(&DomainError::HoldNotFound);
}

#[test]
fn a_frozen_account_still_settles_the_holds_it_committed_before_the_freeze() {
    let past = [created(), deposited(1000, 1000), hold_placed("t-1", 300), hold_placed("t-2", 200), frozen()];
    let state = given(&past).when(&capture("t-1")).then_events(&[captured("t-1", 300, 700)]);
    assert_eq!(balances(&state), (700, 500));
    given(&past).when(&release("t-2")).then_events(&[released("t-2", 200, 1000)]);
}

#[test]
fn hold_events_round_trip_through_their_stored_payloads_with_their_leg_transaction_ids() {
    for event in [hold_placed("t-1", 300), captured("t-1", 300, 700), released("t-1", 300, 1000)] {
        let decoded =
            AccountEvent::decode(event.event_type(), ACCOUNT_EVENT_SCHEMA_VERSION, &event.payload());
        assert_eq!(decoded.as_ref(), Ok(&event));
        assert_eq!(event.transfer_id(), Some(&xfer("t-1")));
        let txid = event.transaction_id().unwrap_or_else(|| panic!("hold events carry a transaction id"));
        assert!(txid.as_str().starts_with(LEG_TRANSACTION_PREFIX));
    }
    assert_eq!(
        captured("t-1", 300, 700).payload(),
        serde_json::json!({
            "accountId": SOURCE,
            "transferId": "t-1",
            "amountMinorUnits": "300",
            "currency": "USD",
            "transactionId": leg_transaction_id(&xfer("t-1"), Leg::Capture).as_str(),
            "balanceAfterMinorUnits": "700",
        })
    );
}

#[test]
fn a_snapshot_written_before_holds_existed_still_reads_with_nothing_held() {
    let old = serde_json::json!({
        "version": 2,
        "account": {"accountId": SOURCE, "ownerId": "owner-1", "currency": "USD", "status": "ACTIVE",
                    "balance": "1000"},
    });
    let state: AccountState = serde_json::from_value(old).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(balances(&state), (1000, 1000));
}

// --- the transfer aggregate -----------------------------------------------------------------------------

fn terms(id: &str) -> TransferTerms {
    TransferTerms {
        transfer_id: xfer(id),
        source_account_id: acc("acc-src"),
        destination_account_id: acc("acc-dst"),
        amount: amount(250),
        currency: usd(),
        initiated_by: Some("customer-1".to_owned()),
    }
}

fn requested() -> TransferEvent {
    TransferEvent::Requested(terms("t-1"))
}

fn why(code: &str) -> TransferReason {
    TransferReason { reason: code.to_owned() }
}

#[test]
fn requesting_a_transfer_records_its_terms_and_leaves_it_pending() {
    let state = given_transfer(&[]).when(&TransferCommand::Request(terms("t-1"))).then_events(&[requested()]);
    assert_eq!(state.step.as_ref().map(TransferStep::status), Some("PENDING"));
    assert_eq!(next_step(&state), NextStep::PlaceHold);
}

#[test]
fn requesting_the_same_transfer_again_changes_nothing() {
    given_transfer(&[requested()]).when(&TransferCommand::Request(terms("t-1"))).then_events(&[]);
    given_transfer(&[
        requested(),
        TransferEvent::HoldPlaced,
        TransferEvent::Credited,
        TransferEvent::Completed,
    ])
    .when(&TransferCommand::Request(terms("t-1")))
    .then_events(&[]);
}

#[test]
fn the_same_movement_asked_for_by_another_principal_is_the_same_transfer() {
    let mut by_operator = terms("t-1");
    by_operator.initiated_by = Some("operator-1".to_owned());
    let state = given_transfer(&[requested()]).when(&TransferCommand::Request(by_operator)).then_events(&[]);
    // Who started it stays who asked first.
    assert_eq!(state.terms.and_then(|t| t.initiated_by).as_deref(), Some("customer-1"));
}

#[test]
fn transfers_requested_before_principals_were_recorded_read_back_without_one() {
    let mut payload = requested().payload();
    payload.as_object_mut().map(|m| m.remove("initiatedBy"));
    let event = TransferEvent::decode("TransferRequested", 1, &payload).unwrap_or_else(|e| panic!("{e}"));
    let TransferEvent::Requested(old) = event else { panic!("not a request: {event:?}") };
    assert_eq!(old.initiated_by, None);
    assert!(old.same_movement(&terms("t-1")));
    assert_eq!(requested().payload()["initiatedBy"], "customer-1");
}

#[test]
fn reusing_a_transfer_id_for_other_terms_is_a_conflict() {
    let mut other = terms("t-1");
    other.amount = amount(251);
    given_transfer(&[requested()])
        .when(&TransferCommand::Request(other))
        .then_error(&DomainError::TransferIdConflict);
    let mut swapped = terms("t-1");
    std::mem::swap(&mut swapped.source_account_id, &mut swapped.destination_account_id);
    given_transfer(&[requested()])
        .when(&TransferCommand::Request(swapped))
        .then_error(&DomainError::TransferIdConflict);
}

#[test]
fn a_transfer_to_the_same_account_is_refused() {
    let mut same = terms("t-1");
    same.destination_account_id = same.source_account_id.clone();
    given_transfer(&[]).when(&TransferCommand::Request(same)).then_error(&DomainError::TransferToSameAccount);
}

#[test]
fn steps_of_a_transfer_that_was_never_requested_are_not_found() {
    for command in [
        TransferCommand::RecordHoldPlaced,
        TransferCommand::RecordCredited,
        TransferCommand::Complete,
        TransferCommand::RecordCreditFailed { reason: "ACCOUNT_NOT_FOUND".to_owned() },
        TransferCommand::Fail { reason: "INSUFFICIENT_FUNDS".to_owned() },
    ] {
        given_transfer(&[]).when(&command).then_error(&DomainError::TransferNotFound);
    }
}

#[test]
fn a_transfer_completes_through_hold_credit_and_capture() {
    let mut past = vec![requested()];
    for (command, event, next) in [
        (TransferCommand::RecordHoldPlaced, TransferEvent::HoldPlaced, NextStep::Credit),
        (TransferCommand::RecordCredited, TransferEvent::Credited, NextStep::Capture),
        (TransferCommand::Complete, TransferEvent::Completed, NextStep::Done),
    ] {
        let state = given_transfer(&past).when(&command).then_events(std::slice::from_ref(&event));
        assert_eq!(next_step(&state), next);
        // Recording the same step again is accepted with no events: a repeated step is harmless.
        past.push(event);
        given_transfer(&past).when(&command).then_events(&[]);
    }
    let done = given_transfer(&past);
    assert_eq!(done.state().step, Some(TransferStep::Completed));
    assert_eq!(done.state().step.as_ref().map(TransferStep::status), Some("COMPLETED"));
}

#[test]
fn a_refused_hold_fails_the_transfer_at_once() {
    let state = given_transfer(&[requested()])
        .when(&TransferCommand::Fail { reason: "INSUFFICIENT_FUNDS".to_owned() })
        .then_events(&[TransferEvent::Failed(why("INSUFFICIENT_FUNDS"))]);
    assert_eq!(state.step, Some(TransferStep::Failed { reason: "INSUFFICIENT_FUNDS".to_owned() }));
    assert_eq!(next_step(&state), NextStep::Done);
}

#[test]
fn a_refused_credit_releases_the_hold_before_the_transfer_fails() {
    let past = [requested(), TransferEvent::HoldPlaced];
    let state = given_transfer(&past)
        .when(&TransferCommand::RecordCreditFailed { reason: "ACCOUNT_NOT_ACTIVE".to_owned() })
        .then_events(&[TransferEvent::CreditFailed(why("ACCOUNT_NOT_ACTIVE"))]);
    assert_eq!(next_step(&state), NextStep::Release);
    assert_eq!(
        state.step.as_ref().map(TransferStep::status),
        Some("PENDING"),
        "FAILED only once compensated"
    );
    // The hold is placed, so the transfer cannot fail before the release.
    given_transfer(&past)
        .when(&TransferCommand::Fail { reason: "ACCOUNT_NOT_ACTIVE".to_owned() })
        .then_error(&DomainError::TransferStepNotAllowed { state: "hold placed", step: "fail" });
    let after =
        [requested(), TransferEvent::HoldPlaced, TransferEvent::CreditFailed(why("ACCOUNT_NOT_ACTIVE"))];
    given_transfer(&after)
        .when(&TransferCommand::Fail { reason: "ACCOUNT_NOT_ACTIVE".to_owned() })
        .then_events(&[TransferEvent::Failed(why("ACCOUNT_NOT_ACTIVE"))]);
    // Once the credit failed, it cannot be recorded as done.
    given_transfer(&after)
        .when(&TransferCommand::RecordCredited)
        .then_error(&DomainError::TransferStepNotAllowed { state: "credit failed", step: "credit" });
}

#[test]
fn steps_out_of_order_are_refused() {
    given_transfer(&[requested()])
        .when(&TransferCommand::RecordCredited)
        .then_error(&DomainError::TransferStepNotAllowed { state: "requested", step: "credit" });
    given_transfer(&[requested(), TransferEvent::HoldPlaced])
        .when(&TransferCommand::Complete)
        .then_error(&DomainError::TransferStepNotAllowed { state: "hold placed", step: "complete" });
    given_transfer(&[requested(), TransferEvent::HoldPlaced, TransferEvent::Credited])
        .when(&TransferCommand::RecordCreditFailed { reason: "ACCOUNT_NOT_FOUND".to_owned() })
        .then_error(&DomainError::TransferStepNotAllowed { state: "credited", step: "credit failure" });
    given_transfer(&[requested(), TransferEvent::Failed(why("INSUFFICIENT_FUNDS"))])
        .when(&TransferCommand::RecordHoldPlaced)
        .then_error(&DomainError::TransferStepNotAllowed { state: "failed", step: "hold" });
}

#[test]
fn every_transfer_event_round_trips_through_its_stored_payload() {
    let events = [
        requested(),
        TransferEvent::HoldPlaced,
        TransferEvent::Credited,
        TransferEvent::Completed,
        TransferEvent::CreditFailed(why("CURRENCY_MISMATCH")),
        TransferEvent::Failed(why("CURRENCY_MISMATCH")),
    ];
    for event in &events {
        let decoded =
            TransferEvent::decode(event.event_type(), TRANSFER_EVENT_SCHEMA_VERSION, &event.payload());
        assert_eq!(decoded.as_ref(), Ok(event));
        assert!(
            TransferEvent::decode(event.event_type(), TRANSFER_EVENT_SCHEMA_VERSION + 1, &event.payload())
                .is_err()
        );
    }
    assert_eq!(
        requested().payload(),
        serde_json::json!({"transferId": "t-1", "sourceAccountId": "acc-src", "destinationAccountId": "acc-dst",
                           "amountMinorUnits": "250", "currency": "USD", "initiatedBy": "customer-1"})
    );
}

// --- the pure process manager ---------------------------------------------------------------------------

#[test]
fn leg_transaction_ids_are_deterministic_distinct_prefixed_and_short() {
    let long = "t".repeat(128);
    for id in ["t-1", "t-2", long.as_str()] {
        let ids: BTreeSet<String> = [Leg::Hold, Leg::Credit, Leg::Capture, Leg::Release]
            .into_iter()
            .map(|leg| {
                let txid = leg_transaction_id(&xfer(id), leg);
                assert_eq!(txid, leg_transaction_id(&xfer(id), leg), "deterministic");
                assert!(txid.as_str().starts_with(LEG_TRANSACTION_PREFIX));
                assert!(txid.as_str().ends_with(leg.as_str()));
                assert!(txid.as_str().len() <= 49, "{txid}");
                assert!(TransactionId::parse(txid.as_str()).is_ok());
                txid.as_str().to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 4, "one id per leg");
    }
    assert_ne!(leg_transaction_id(&xfer("t-1"), Leg::Hold), leg_transaction_id(&xfer("t-2"), Leg::Hold));
}

#[test]
fn each_step_issues_its_account_command_with_the_leg_transaction_id() {
    let t = terms("t-1");
    let id = xfer("t-1");
    let leg = |step| leg_command(&t, &step);
    assert_eq!(
        leg(NextStep::PlaceHold),
        Some(LegCommand {
            leg: Leg::Hold,
            account_id: acc("acc-src"),
            command: AccountCommand::PlaceHold {
                transfer_id: id.clone(),
                amount: amount(250),
                currency: usd(),
                transaction_id: leg_transaction_id(&id, Leg::Hold),
            },
        })
    );
    assert_eq!(
        leg(NextStep::Credit),
        Some(LegCommand {
            leg: Leg::Credit,
            account_id: acc("acc-dst"),
            command: AccountCommand::Deposit {
                amount: amount(250),
                currency: usd(),
                transaction_id: leg_transaction_id(&id, Leg::Credit),
            },
        })
    );
    assert_eq!(leg(NextStep::Capture).map(|l| (l.leg, l.account_id)), Some((Leg::Capture, acc("acc-src"))));
    assert_eq!(leg(NextStep::Release).map(|l| (l.leg, l.account_id)), Some((Leg::Release, acc("acc-src"))));
    assert_eq!(leg(NextStep::Done), None);
}

#[test]
fn each_leg_outcome_maps_to_the_transfer_command_that_records_it() {
    let requested_state = given_transfer(&[requested()]).state().clone();
    let refused = |code: &str| LegOutcome::Refused(code.to_owned());
    assert_eq!(
        record_leg(&requested_state, Leg::Hold, &LegOutcome::Accepted),
        Some(TransferCommand::RecordHoldPlaced)
    );
    assert_eq!(
        record_leg(&requested_state, Leg::Hold, &refused("INSUFFICIENT_FUNDS")),
        Some(TransferCommand::Fail { reason: "INSUFFICIENT_FUNDS".to_owned() })
    );
    assert_eq!(
        record_leg(&requested_state, Leg::Credit, &LegOutcome::Accepted),
        Some(TransferCommand::RecordCredited)
    );
    assert_eq!(
        record_leg(&requested_state, Leg::Credit, &refused("ACCOUNT_NOT_FOUND")),
        Some(TransferCommand::RecordCreditFailed { reason: "ACCOUNT_NOT_FOUND".to_owned() })
    );
    assert_eq!(
        record_leg(&requested_state, Leg::Capture, &LegOutcome::Accepted),
        Some(TransferCommand::Complete)
    );
    let credit_failed = given_transfer(&[
        requested(),
        TransferEvent::HoldPlaced,
        TransferEvent::CreditFailed(why("CURRENCY_MISMATCH")),
    ])
    .state()
    .clone();
    assert_eq!(
        record_leg(&credit_failed, Leg::Release, &LegOutcome::Accepted),
        Some(TransferCommand::Fail { reason: "CURRENCY_MISMATCH".to_owned() })
    );
    // The process's own hold cannot be refused its settlement: that is an error, not an outcome.
    assert_eq!(record_leg(&credit_failed, Leg::Capture, &refused("HOLD_NOT_FOUND")), None);
    assert_eq!(record_leg(&credit_failed, Leg::Release, &refused("HOLD_NOT_FOUND")), None);
}

// --- properties -----------------------------------------------------------------------------------------

/// Accounts 0..=2 exist in USD, account 3 exists in EUR, account 4 never exists.
const ACCOUNTS: usize = 5;
const MISSING: usize = 4;
const EUR_ACCOUNT: usize = 3;

fn account_name(i: usize) -> AccountId {
    acc(&format!("acc-{i}"))
}

/// One drawn operation.
#[derive(Debug, Clone)]
enum Op {
    /// A client deposit.
    Deposit { account: usize, minor: i64 },
    /// A client withdrawal.
    Withdraw { account: usize, minor: i64 },
    /// Freeze or unfreeze (whichever the account takes).
    ToggleFreeze { account: usize },
    /// Request a new transfer.
    Start { source: usize, destination: usize, minor: i64 },
    /// The process manager takes the next step of a transfer (index into those started, modulo).
    Step { transfer: usize },
    /// A stale redelivery runs an earlier leg of a transfer again, whatever its state now.
    Redeliver { transfer: usize, leg: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let account = 0..ACCOUNTS;
    let minor = 1_i64..=600;
    prop_oneof![
        3 => (account.clone(), minor.clone()).prop_map(|(account, minor)| Op::Deposit { account, minor }),
        3 => (account.clone(), minor.clone()).prop_map(|(account, minor)| Op::Withdraw { account, minor }),
        1 => account.clone().prop_map(|account| Op::ToggleFreeze { account }),
        3 => (account.clone(), account, minor).prop_map(|(source, destination, minor)| Op::Start { source, destination, minor }),
        8 => any::<usize>().prop_map(|transfer| Op::Step { transfer }),
        2 => (any::<usize>(), 0_usize..4).prop_map(|(transfer, leg)| Op::Redeliver { transfer, leg }),
    ]
}

/// Accounts, transfers and the two guards the command service keeps: a leg's first decision is
/// replayed (its idempotency record) and an accepted transaction id never applies twice (its
/// transaction record).
#[derive(Default)]
struct Bank {
    accounts: Vec<AccountState>,
    events: Vec<Vec<AccountEvent>>,
    transfers: Vec<TransferState>,
    decisions: HashMap<String, LegOutcome>,
    transactions: BTreeSet<String>,
    /// Client deposits minus client withdrawals, in minor units.
    external: i64,
}

fn code(error: &DomainError) -> String {
    match error {
        DomainError::AccountNotFound => "ACCOUNT_NOT_FOUND",
        DomainError::AccountNotActive => "ACCOUNT_NOT_ACTIVE",
        DomainError::CurrencyMismatch { .. } => "CURRENCY_MISMATCH",
        DomainError::InsufficientFunds { .. } => "INSUFFICIENT_FUNDS",
        DomainError::BalanceLimitExceeded { .. } => "BALANCE_LIMIT_EXCEEDED",
        DomainError::HoldNotFound => "HOLD_NOT_FOUND",
        DomainError::HoldAlreadyExists => "HOLD_ALREADY_EXISTS",
        other => panic!("no leg is refused with {other:?}"),
    }
    .to_owned()
}

impl Bank {
    fn new() -> Self {
        let mut bank = Self::default();
        for i in 0..ACCOUNTS {
            bank.accounts.push(AccountState::default());
            bank.events.push(Vec::new());
            if i != MISSING {
                let currency = if i == EUR_ACCOUNT { currency("EUR") } else { usd() };
                let create = AccountCommand::Create {
                    account_id: account_name(i),
                    owner_id: OwnerId::parse("owner-p").unwrap_or_else(|e| panic!("{e}")),
                    currency,
                };
                bank.run(i, &create).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        bank
    }

    fn index(id: &AccountId) -> usize {
        (0..ACCOUNTS).find(|i| &account_name(*i) == id).unwrap_or_else(|| panic!("{id}"))
    }

    /// `decide` then `evolve` on one account; a refusal leaves it untouched.
    fn run(&mut self, account: usize, command: &AccountCommand) -> Result<(), DomainError> {
        let before = self.accounts[account].clone();
        let events = account::decide(&before, command)?;
        for event in &events {
            self.accounts[account] = account::evolve(self.accounts[account].clone(), event);
        }
        self.events[account].extend(events);
        Ok(())
    }

    /// A leg as the command service runs it: replay its first decision, else decide now and keep it.
    fn run_leg(&mut self, leg: &LegCommand) -> LegOutcome {
        let txid = match &leg.command {
            AccountCommand::PlaceHold { transaction_id, .. }
            | AccountCommand::CaptureHold { transaction_id, .. }
            | AccountCommand::ReleaseHold { transaction_id, .. }
            | AccountCommand::Deposit { transaction_id, .. } => transaction_id.as_str().to_owned(),
            other => panic!("not a leg command: {other:?}"),
        };
        if let Some(first) = self.decisions.get(&txid) {
            return first.clone();
        }
        let outcome = match self.run(Self::index(&leg.account_id), &leg.command) {
            Ok(()) => {
                assert!(self.transactions.insert(txid.clone()), "{txid} applied twice");
                LegOutcome::Accepted
            }
            Err(e) => LegOutcome::Refused(code(&e)),
        };
        self.decisions.insert(txid, outcome.clone());
        outcome
    }

    fn step(&mut self, t: usize) -> Result<(), TestCaseError> {
        let state = self.transfers[t].clone();
        let Some(terms) = state.terms.clone() else { return Ok(()) };
        let Some(leg) = leg_command(&terms, &next_step(&state)) else { return Ok(()) };
        let outcome = self.run_leg(&leg);
        let command = record_leg(&state, leg.leg, &outcome)
            .ok_or_else(|| TestCaseError::fail(format!("{:?} refused its own hold: {outcome:?}", leg.leg)))?;
        let events = transfer::decide(&state, &command).map_err(|e| TestCaseError::fail(e.to_string()))?;
        self.transfers[t] = events.iter().fold(state, transfer::evolve);
        Ok(())
    }

    fn redeliver(&mut self, t: usize, leg: usize) {
        let Some(terms) = self.transfers[t].terms.clone() else { return };
        let step = [NextStep::PlaceHold, NextStep::Credit, NextStep::Capture, NextStep::Release][leg];
        let Some(leg) = leg_command(&terms, &step) else { return };
        // A stale duplicate only runs a leg that was decided before; it must replay, never apply.
        let txid = leg_transaction_id(&terms.transfer_id, leg.leg);
        if self.decisions.contains_key(txid.as_str()) {
            let before = self.events.iter().map(Vec::len).sum::<usize>();
            self.run_leg(&leg);
            assert_eq!(
                self.events.iter().map(Vec::len).sum::<usize>(),
                before,
                "a replayed leg wrote events"
            );
        }
    }

    fn apply(&mut self, op: &Op, n: usize) -> Result<(), TestCaseError> {
        match op {
            Op::Deposit { account, minor } => {
                let command = AccountCommand::Deposit {
                    amount: amount(*minor),
                    currency: usd(),
                    transaction_id: tx(&format!("dep-{n}")),
                };
                if self.run(*account, &command).is_ok() {
                    self.external += minor;
                }
            }
            Op::Withdraw { account, minor } => {
                let command = AccountCommand::Withdraw {
                    amount: amount(*minor),
                    currency: usd(),
                    transaction_id: tx(&format!("wd-{n}")),
                };
                if self.run(*account, &command).is_ok() {
                    self.external -= minor;
                }
            }
            Op::ToggleFreeze { account } => {
                let frozen = self.accounts[*account]
                    .account
                    .as_ref()
                    .is_some_and(|a| a.status == corebank_domain::AccountStatus::Frozen);
                let command = if frozen {
                    AccountCommand::Unfreeze { reason: reason("cleared") }
                } else {
                    AccountCommand::Freeze { reason: reason("review") }
                };
                let _ = self.run(*account, &command);
            }
            Op::Start { source, destination, minor } => {
                let terms = TransferTerms {
                    transfer_id: xfer(&format!("t-{n}")),
                    source_account_id: account_name(*source),
                    destination_account_id: account_name(*destination),
                    amount: amount(*minor),
                    currency: usd(),
                    initiated_by: None,
                };
                if let Ok(events) =
                    transfer::decide(&TransferState::default(), &TransferCommand::Request(terms))
                {
                    self.transfers.push(events.iter().fold(TransferState::default(), transfer::evolve));
                } else {
                    prop_assert_eq!(
                        source,
                        destination,
                        "only a same-account transfer is refused at the start"
                    );
                }
            }
            Op::Step { transfer } if !self.transfers.is_empty() => {
                let t = transfer % self.transfers.len();
                self.step(t)?;
            }
            Op::Redeliver { transfer, leg } if !self.transfers.is_empty() => {
                let t = transfer % self.transfers.len();
                self.redeliver(t, *leg);
            }
            Op::Step { .. } | Op::Redeliver { .. } => {}
        }
        Ok(())
    }

    /// Amounts credited to destinations whose source holds are not captured yet.
    fn in_flight(&self) -> i64 {
        self.transfers
            .iter()
            .filter(|t| t.step == Some(TransferStep::Credited))
            .filter_map(|t| t.terms.as_ref())
            .map(|t| t.amount.minor())
            .sum()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut total = 0;
        for state in &self.accounts {
            let Some(a) = &state.account else { continue };
            let open: i64 = a.holds.values().sum();
            prop_assert!(a.balance >= 0, "posted balance negative: {a:?}");
            prop_assert!(a.available() >= 0, "available balance negative: {a:?}");
            prop_assert_eq!(a.held, open, "held is the sum of the open holds");
            prop_assert_eq!(a.available(), a.balance - open);
            total += a.balance;
        }
        // Transfers neither create nor destroy money: between a credit and its capture the destination
        // holds money the source still has, and that is the only difference.
        prop_assert_eq!(total - self.in_flight(), self.external, "money conserved");
        // Every leg transaction id moved money at most once, so each hold is settled at most once.
        let mut seen = BTreeSet::new();
        let mut settlements: BTreeMap<String, usize> = BTreeMap::new();
        for event in self.events.iter().flatten() {
            if let Some(txid) = event.transaction_id() {
                prop_assert!(seen.insert(txid.as_str().to_owned()), "{} applied twice", txid);
            }
            if let AccountEvent::ReservationCaptured(h) | AccountEvent::ReservationReleased(h) = event {
                *settlements.entry(h.transfer_id.as_str().to_owned()).or_default() += 1;
            }
        }
        prop_assert!(settlements.values().all(|n| *n == 1), "a hold settled twice: {settlements:?}");
        Ok(())
    }

    /// Runs every transfer to its end and checks what each one did to its accounts.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for t in 0..self.transfers.len() {
            for _ in 0..4 {
                self.step(t)?;
            }
            let state = &self.transfers[t];
            let status = state.step.as_ref().map(TransferStep::status);
            prop_assert!(matches!(status, Some("COMPLETED" | "FAILED")), "{state:?} did not finish");
        }
        self.check()?;
        prop_assert_eq!(
            self.accounts.iter().flat_map(|s| &s.account).map(|a| a.balance).sum::<i64>(),
            self.external
        );
        for state in &self.accounts {
            if let Some(a) = &state.account {
                prop_assert!(a.holds.is_empty(), "a hold outlived its transfer: {a:?}");
            }
        }
        for state in &self.transfers {
            let Some(terms) = &state.terms else { continue };
            let moved =
                |leg| self.transactions.contains(leg_transaction_id(&terms.transfer_id, leg).as_str());
            let completed = state.step == Some(TransferStep::Completed);
            // A completed transfer captured and credited; a failed one did neither.
            prop_assert_eq!(moved(Leg::Capture), completed, "{:?}", state);
            prop_assert_eq!(moved(Leg::Credit), completed, "{:?}", state);
            if let Some(TransferStep::Failed { reason }) = &state.step {
                let codes =
                    ["ACCOUNT_NOT_FOUND", "ACCOUNT_NOT_ACTIVE", "CURRENCY_MISMATCH", "INSUFFICIENT_FUNDS"];
                prop_assert!(codes.contains(&reason.as_str()), "unexpected failure reason {reason}");
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_interleaving_of_transfers_and_client_commands_conserves_money_and_never_goes_negative(
        ops in prop::collection::vec(op(), 0..=120),
    ) {
        let mut bank = Bank::new();
        for (n, op) in ops.iter().enumerate() {
            bank.apply(op, n)?;
            bank.check()?;
        }
        bank.drain()?;
    }

    #[test]
    fn account_state_with_open_holds_replays_from_a_json_snapshot_at_any_cut(
        ops in prop::collection::vec(op(), 0..=80),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bank = Bank::new();
        for (n, op) in ops.iter().enumerate() {
            bank.apply(op, n)?;
        }
        for (i, events) in bank.events.iter().enumerate() {
            let cut = cut.index(events.len() + 1);
            let head = account::replay(AccountState::default(), &events[..cut]);
            let text = serde_json::to_string(&head).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let restored: AccountState =
                serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&restored, &head);
            prop_assert_eq!(&account::replay(restored, &events[cut..]), &bank.accounts[i]);
        }
    }
}
