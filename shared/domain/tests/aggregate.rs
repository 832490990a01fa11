//! Every rule of the account aggregate, written as given/when/then scenarios, plus the stored forms the
//! aggregate depends on: event payloads, snapshots and decimal money text.

use corebank_domain::account::{
    ACCOUNT_EVENT_SCHEMA_VERSION, AccountCreated, DecodeError, MoneyMoved, StatusChanged,
};
use corebank_domain::money::{MAX_AMOUNT_MINOR, MAX_BALANCE_MINOR, format_major};
use corebank_domain::testing::given;
use corebank_domain::{
    Account, AccountCommand, AccountEvent, AccountId, AccountState, AccountStatus, Amount, Currency,
    DomainError, EventEnvelope, EventMetadata, MoneyError, OwnerId, Reason, TransactionId,
};

const ACCOUNT: &str = "acc-1";
const OWNER: &str = "owner-1";

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap_or_else(|e| panic!("{e}"))
}

fn usd() -> Currency {
    currency("USD")
}

fn eur() -> Currency {
    currency("EUR")
}

fn account_id() -> AccountId {
    AccountId::parse(ACCOUNT).unwrap_or_else(|e| panic!("{e}"))
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

fn create() -> AccountCommand {
    AccountCommand::Create {
        account_id: account_id(),
        owner_id: OwnerId::parse(OWNER).unwrap_or_else(|e| panic!("{e}")),
        currency: usd(),
    }
}

fn deposit(id: &str, minor: i64) -> AccountCommand {
    AccountCommand::Deposit { amount: amount(minor), currency: usd(), transaction_id: tx(id) }
}

fn withdraw(id: &str, minor: i64) -> AccountCommand {
    AccountCommand::Withdraw { amount: amount(minor), currency: usd(), transaction_id: tx(id) }
}

fn freeze(text: &str) -> AccountCommand {
    AccountCommand::Freeze { reason: reason(text) }
}

fn unfreeze(text: &str) -> AccountCommand {
    AccountCommand::Unfreeze { reason: reason(text) }
}

fn created() -> AccountEvent {
    AccountEvent::Created(AccountCreated {
        account_id: account_id(),
        owner_id: OwnerId::parse(OWNER).unwrap_or_else(|e| panic!("{e}")),
        currency: usd(),
    })
}

fn moved(id: &str, minor: i64, balance_after: i64) -> MoneyMoved {
    MoneyMoved {
        account_id: account_id(),
        amount: amount(minor),
        currency: usd(),
        transaction_id: tx(id),
        balance_after,
    }
}

fn deposited(id: &str, minor: i64, balance_after: i64) -> AccountEvent {
    AccountEvent::Deposited(moved(id, minor, balance_after))
}

fn withdrawn(id: &str, minor: i64, balance_after: i64) -> AccountEvent {
    AccountEvent::Withdrawn(moved(id, minor, balance_after))
}

fn frozen(text: &str) -> AccountEvent {
    AccountEvent::Frozen(StatusChanged { account_id: account_id(), reason: reason(text) })
}

fn unfrozen(text: &str) -> AccountEvent {
    AccountEvent::Unfrozen(StatusChanged { account_id: account_id(), reason: reason(text) })
}

/// The account inside a state that must hold one.
fn account_of(state: &AccountState) -> &Account {
    state.account.as_ref().unwrap_or_else(|| panic!("the account exists in this scenario"))
}

/// Create, then enough deposits of the largest single amount to reach `balance`, which must be a
/// multiple of it.
fn history_with_balance(balance: i64) -> Vec<AccountEvent> {
    let mut events = vec![created()];
    let mut running = 0;
    let mut n = 0;
    while running < balance {
        running += MAX_AMOUNT_MINOR;
        n += 1;
        events.push(deposited(&format!("fill-{n}"), MAX_AMOUNT_MINOR, running));
    }
    assert_eq!(running, balance, "the helper only builds multiples of the largest amount");
    events
}

// --- create -------------------------------------------------------------------------------------------

#[test]
fn creating_a_new_account_records_account_created_and_opens_it_active_and_empty() {
    let state = given(&[]).when(&create()).then_events(&[created()]);

    assert_eq!(state.version, 1);
    let account = account_of(&state);
    assert_eq!(account.account_id, account_id());
    assert_eq!(account.owner_id.as_str(), OWNER);
    assert_eq!(account.currency, usd());
    assert_eq!(account.status, AccountStatus::Active);
    assert_eq!((account.balance, account.held, account.available()), (0, 0, 0));
}

#[test]
fn creating_an_account_that_already_exists_is_refused() {
    given(&[created()]).when(&create()).then_error(&DomainError::AccountAlreadyExists);
}

#[test]
fn creating_an_account_that_exists_is_refused_whatever_its_balance_or_status() {
    given(&[created(), deposited("t1", 500, 500), frozen("review")])
        .when(&create())
        .then_error(&DomainError::AccountAlreadyExists);
}

// --- commands on a missing account ----------------------------------------------------------------------

#[test]
fn every_command_other_than_create_on_a_missing_account_is_refused_as_not_found() {
    let commands = [deposit("t1", 100), withdraw("t2", 100), freeze("review"), unfreeze("cleared")];
    for command in &commands {
        given(&[]).when(command).then_error(&DomainError::AccountNotFound);
    }
}

#[test]
fn a_withdrawal_on_a_missing_account_is_not_found_rather_than_insufficient_funds() {
    given(&[]).when(&withdraw("t1", MAX_AMOUNT_MINOR)).then_error(&DomainError::AccountNotFound);
}

// --- deposits -----------------------------------------------------------------------------------------

#[test]
fn a_deposit_credits_the_account_and_records_the_balance_after_it() {
    let state = given(&[created()]).when(&deposit("t1", 1025)).then_events(&[deposited("t1", 1025, 1025)]);

    assert_eq!(state.version, 2);
    assert_eq!(account_of(&state).balance, 1025);
    assert_eq!(account_of(&state).available(), 1025);
}

#[test]
fn consecutive_deposits_record_a_running_balance_after_each() {
    let past = [created(), deposited("t1", 1000, 1000), deposited("t2", 250, 1250)];
    let state = given(&past).when(&deposit("t3", 5)).then_events(&[deposited("t3", 5, 1255)]);

    assert_eq!(account_of(&state).balance, 1255);
    assert_eq!(state.version, 4);
}

#[test]
fn a_deposit_into_a_frozen_account_is_refused_as_not_active() {
    given(&[created(), frozen("review")])
        .when(&deposit("t1", 100))
        .then_error(&DomainError::AccountNotActive);
}

#[test]
fn a_deposit_in_another_currency_is_refused_naming_both_currencies() {
    let command = AccountCommand::Deposit { amount: amount(100), currency: eur(), transaction_id: tx("t1") };
    given(&[created()])
        .when(&command)
        .then_error(&DomainError::CurrencyMismatch { account: usd(), requested: eur() });
}

#[test]
fn a_deposit_on_a_frozen_account_in_another_currency_is_refused_as_not_active_first() {
    let command = AccountCommand::Deposit { amount: amount(100), currency: eur(), transaction_id: tx("t1") };
    given(&[created(), frozen("review")]).when(&command).then_error(&DomainError::AccountNotActive);
}

#[test]
fn a_deposit_that_reaches_exactly_the_balance_limit_is_accepted() {
    let past = history_with_balance(MAX_BALANCE_MINOR - MAX_AMOUNT_MINOR);
    let state = given(&past).when(&deposit("last", MAX_AMOUNT_MINOR)).then_events(&[deposited(
        "last",
        MAX_AMOUNT_MINOR,
        MAX_BALANCE_MINOR,
    )]);

    assert_eq!(account_of(&state).balance, 100_000_000_000_000_000);
    assert_eq!(state.version, u64::try_from(past.len() + 1).unwrap());
}

#[test]
fn a_deposit_that_would_take_the_balance_above_the_limit_is_refused() {
    let at_limit = history_with_balance(MAX_BALANCE_MINOR);
    given(&at_limit)
        .when(&deposit("over", 1))
        .then_error(&DomainError::BalanceLimitExceeded { limit_minor: 100_000_000_000_000_000 });

    let mut just_below = history_with_balance(MAX_BALANCE_MINOR - MAX_AMOUNT_MINOR);
    just_below.push(deposited("near", MAX_AMOUNT_MINOR - 1, MAX_BALANCE_MINOR - 1));
    given(&just_below)
        .when(&deposit("over", 2))
        .then_error(&DomainError::BalanceLimitExceeded { limit_minor: MAX_BALANCE_MINOR });
    given(&just_below).when(&deposit("exact", 1)).then_events(&[deposited("exact", 1, MAX_BALANCE_MINOR)]);
}

// --- withdrawals --------------------------------------------------------------------------------------

#[test]
fn a_withdrawal_debits_the_account_and_records_the_balance_after_it() {
    let past = [created(), deposited("t1", 1000, 1000)];
    let state = given(&past).when(&withdraw("t2", 250)).then_events(&[withdrawn("t2", 250, 750)]);

    assert_eq!(account_of(&state).balance, 750);
    assert_eq!(account_of(&state).available(), 750);
    assert_eq!(state.version, 3);
}

#[test]
fn withdrawing_exactly_the_balance_is_allowed_and_leaves_zero() {
    let past = [created(), deposited("t1", 1000, 1000), withdrawn("t2", 300, 700)];
    let state = given(&past).when(&withdraw("t3", 700)).then_events(&[withdrawn("t3", 700, 0)]);

    assert_eq!(account_of(&state).balance, 0);
    assert_eq!(account_of(&state).available(), 0);
}

#[test]
fn a_withdrawal_beyond_the_available_balance_is_refused_with_the_exact_figures() {
    let past = [created(), deposited("t1", 1000, 1000), withdrawn("t2", 300, 700)];
    given(&past)
        .when(&withdraw("t3", 701))
        .then_error(&DomainError::InsufficientFunds { available_minor: 700, requested_minor: 701 });
}

#[test]
fn a_withdrawal_from_an_empty_account_is_refused_with_zero_available() {
    given(&[created()])
        .when(&withdraw("t1", 1))
        .then_error(&DomainError::InsufficientFunds { available_minor: 0, requested_minor: 1 });
}

#[test]
fn a_withdrawal_from_a_frozen_account_is_refused_as_not_active_even_with_funds() {
    let past = [created(), deposited("t1", 1000, 1000), frozen("review")];
    given(&past).when(&withdraw("t2", 10)).then_error(&DomainError::AccountNotActive);
}

#[test]
fn a_withdrawal_in_another_currency_is_refused_naming_both_currencies() {
    let past = [created(), deposited("t1", 1000, 1000)];
    let jpy = currency("JPY");
    let command = AccountCommand::Withdraw { amount: amount(10), currency: jpy, transaction_id: tx("t2") };
    given(&past).when(&command).then_error(&DomainError::CurrencyMismatch { account: usd(), requested: jpy });
}

#[test]
fn a_withdrawal_in_another_currency_is_a_mismatch_even_when_it_exceeds_the_balance() {
    let command = AccountCommand::Withdraw { amount: amount(10), currency: eur(), transaction_id: tx("t1") };
    given(&[created()])
        .when(&command)
        .then_error(&DomainError::CurrencyMismatch { account: usd(), requested: eur() });
}

// --- freeze and unfreeze ------------------------------------------------------------------------------

#[test]
fn freezing_an_active_account_records_the_reason_and_freezes_it() {
    let state =
        given(&[created()]).when(&freeze("compliance review")).then_events(&[frozen("compliance review")]);

    assert_eq!(account_of(&state).status, AccountStatus::Frozen);
    assert_eq!(state.version, 2);
}

#[test]
fn freezing_keeps_the_balance() {
    let past = [created(), deposited("t1", 1000, 1000)];
    let state = given(&past).when(&freeze("review")).then_events(&[frozen("review")]);

    assert_eq!(account_of(&state).balance, 1000);
}

#[test]
fn freezing_a_frozen_account_is_refused_as_already_frozen() {
    given(&[created(), frozen("review")])
        .when(&freeze("again"))
        .then_error(&DomainError::AccountAlreadyFrozen);
}

#[test]
fn unfreezing_a_frozen_account_records_the_reason_and_activates_it() {
    let state =
        given(&[created(), frozen("review")]).when(&unfreeze("cleared")).then_events(&[unfrozen("cleared")]);

    assert_eq!(account_of(&state).status, AccountStatus::Active);
    assert_eq!(state.version, 3);
}

#[test]
fn unfreezing_an_active_account_is_refused_as_not_frozen() {
    given(&[created()]).when(&unfreeze("cleared")).then_error(&DomainError::AccountNotFrozen);
    given(&[created(), frozen("review"), unfrozen("cleared")])
        .when(&unfreeze("again"))
        .then_error(&DomainError::AccountNotFrozen);
}

#[test]
fn an_unfrozen_account_accepts_deposits_and_withdrawals_again() {
    let past = [created(), deposited("t1", 1000, 1000), frozen("review"), unfrozen("cleared")];
    let state = given(&past).when(&deposit("t2", 500)).then_events(&[deposited("t2", 500, 1500)]);
    assert_eq!(account_of(&state).balance, 1500);

    let mut past = past.to_vec();
    past.push(deposited("t2", 500, 1500));
    let state = given(&past).when(&withdraw("t3", 1500)).then_events(&[withdrawn("t3", 1500, 0)]);
    assert_eq!(account_of(&state).balance, 0);
    assert_eq!(state.version, 6);
}

#[test]
fn an_account_can_be_frozen_again_after_being_unfrozen() {
    let past = [created(), frozen("review"), unfrozen("cleared")];
    let state = given(&past).when(&freeze("second review")).then_events(&[frozen("second review")]);
    assert_eq!(account_of(&state).status, AccountStatus::Frozen);
}

// --- stored events ------------------------------------------------------------------------------------

fn one_of_each_event() -> Vec<AccountEvent> {
    vec![created(), deposited("t1", 1025, 1025), withdrawn("t2", 25, 1000), frozen("review"), unfrozen("ok")]
}

#[test]
fn every_account_event_round_trips_through_its_stored_payload() {
    let events = one_of_each_event();
    let types: Vec<&str> = events.iter().map(AccountEvent::event_type).collect();
    assert_eq!(
        types,
        ["AccountCreated", "MoneyDeposited", "MoneyWithdrawn", "AccountFrozen", "AccountUnfrozen"]
    );
    for event in &events {
        let decoded =
            AccountEvent::decode(event.event_type(), ACCOUNT_EVENT_SCHEMA_VERSION, &event.payload());
        assert_eq!(decoded.as_ref(), Ok(event), "{}", event.event_type());
    }
}

#[test]
fn money_payloads_carry_minor_units_as_strings_under_their_contract_names() {
    let payload = withdrawn("t2", 25, 1000).payload();
    assert_eq!(
        payload,
        serde_json::json!({
            "accountId": "acc-1",
            "amountMinorUnits": "25",
            "currency": "USD",
            "transactionId": "t2",
            "balanceAfterMinorUnits": "1000",
        })
    );
    assert_eq!(
        created().payload(),
        serde_json::json!({"accountId": "acc-1", "ownerId": "owner-1", "currency": "USD"})
    );
    assert_eq!(frozen("review").payload(), serde_json::json!({"accountId": "acc-1", "reason": "review"}));
}

#[test]
fn an_event_stored_in_an_envelope_reads_back_after_a_trip_through_json() {
    let event = deposited("t1", 1025, 1025);
    let envelope = EventEnvelope {
        event_id: uuid::Uuid::from_u128(7),
        stream_id: account_id().stream_id(),
        version: 2,
        event_type: event.event_type().to_owned(),
        schema_version: ACCOUNT_EVENT_SCHEMA_VERSION,
        occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        payload: event.payload(),
        metadata: EventMetadata { transaction_id: Some("t1".to_owned()), ..EventMetadata::default() },
    };
    let text = serde_json::to_string(&envelope).unwrap();
    let stored: EventEnvelope = serde_json::from_str(&text).unwrap();

    assert_eq!(stored, envelope);
    assert_eq!(AccountEvent::decode(&stored.event_type, stored.schema_version, &stored.payload), Ok(event));
}

#[test]
fn decoding_an_unknown_event_type_is_refused() {
    let payload = deposited("t1", 1, 1).payload();
    let error = AccountEvent::decode("MoneyTeleported", ACCOUNT_EVENT_SCHEMA_VERSION, &payload).unwrap_err();

    assert_eq!(error.event_type, "MoneyTeleported");
    assert_eq!(error.schema_version, ACCOUNT_EVENT_SCHEMA_VERSION);
    assert!(error.reason.contains("unknown event type"), "{}", error.reason);
}

#[test]
fn decoding_an_unknown_schema_version_is_refused_for_every_type() {
    for event in one_of_each_event() {
        for version in [0, ACCOUNT_EVENT_SCHEMA_VERSION + 1, u32::MAX] {
            let result = AccountEvent::decode(event.event_type(), version, &event.payload());
            assert_eq!(
                result,
                Err(DecodeError {
                    event_type: event.event_type().to_owned(),
                    schema_version: version,
                    reason: "unknown schema version".to_owned(),
                })
            );
        }
    }
}

#[test]
fn decoding_a_payload_of_the_wrong_shape_is_refused() {
    let mut payload = deposited("t1", 1, 1).payload();
    payload["amountMinorUnits"] = serde_json::json!("0");
    assert!(AccountEvent::decode("MoneyDeposited", ACCOUNT_EVENT_SCHEMA_VERSION, &payload).is_err());

    let created_payload = created().payload();
    assert!(AccountEvent::decode("MoneyDeposited", ACCOUNT_EVENT_SCHEMA_VERSION, &created_payload).is_err());

    let mut bad_currency = created().payload();
    bad_currency["currency"] = serde_json::json!("usd");
    assert!(AccountEvent::decode("AccountCreated", ACCOUNT_EVENT_SCHEMA_VERSION, &bad_currency).is_err());
}

// --- snapshots ----------------------------------------------------------------------------------------

#[test]
fn account_state_round_trips_through_json_as_a_snapshot() {
    let histories: [&[AccountEvent]; 4] = [
        &[],
        &[created()],
        &[created(), deposited("t1", 1025, 1025), withdrawn("t2", 25, 1000)],
        &[created(), deposited("t1", 1025, 1025), frozen("review")],
    ];
    for history in histories {
        let state = corebank_domain::account::replay(AccountState::default(), history);
        let text = serde_json::to_string(&state).unwrap();
        let back: AccountState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state, "{text}");
    }
}

#[test]
fn a_snapshot_keeps_balances_as_strings_and_the_status_as_its_contract_name() {
    let past = [created(), deposited("t1", MAX_AMOUNT_MINOR, MAX_AMOUNT_MINOR), frozen("review")];
    let state = corebank_domain::account::replay(AccountState::default(), &past);
    let value = serde_json::to_value(&state).unwrap();

    assert_eq!(value["version"], serde_json::json!(3));
    assert_eq!(value["account"]["balance"], serde_json::json!("1000000000000000"));
    assert_eq!(value["account"]["held"], serde_json::json!("0"));
    assert_eq!(value["account"]["status"], serde_json::json!("FROZEN"));
    assert_eq!(value["account"]["currency"], serde_json::json!("USD"));
}

// --- decimal money text -------------------------------------------------------------------------------

/// Deterministic sample of `1 ..= 10^15`: every value up to 10 000, every power of ten and its
/// neighbours, values with every fractional shape, and a spread from a fixed xorshift sequence.
fn sampled_amounts() -> Vec<i64> {
    let mut values: Vec<i64> = (1..=10_000).collect();
    let mut power = 1_i64;
    while power <= MAX_AMOUNT_MINOR {
        values.extend([power - 1, power, power + 1, 5 * power, 9 * power + 99]);
        power *= 10;
    }
    values.extend([MAX_AMOUNT_MINOR - 1, MAX_AMOUNT_MINOR, 123_456_789_012_345, 999_999_999_999_999]);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let minor = i64::try_from(x % 1_000_000_000_000_000).unwrap_or_else(|e| panic!("{e}")) + 1;
        values.push(minor);
    }
    values.retain(|v| (1..=MAX_AMOUNT_MINOR).contains(v));
    values
}

#[test]
fn formatted_major_units_parse_back_to_the_same_minor_units_in_usd_jpy_and_bhd() {
    let values = sampled_amounts();
    assert!(values.len() > 30_000);
    for code in ["USD", "JPY", "BHD"] {
        let c = currency(code);
        for &minor in &values {
            let text = format_major(minor, c);
            assert_eq!(Amount::parse_major(&text, c).map(Amount::minor), Ok(minor), "{code} {text}");
        }
    }
}

#[test]
fn formatted_major_units_have_the_expected_shape_per_minor_unit() {
    assert_eq!(format_major(MAX_AMOUNT_MINOR, usd()), "10000000000000");
    assert_eq!(format_major(MAX_AMOUNT_MINOR, currency("JPY")), "1000000000000000");
    assert_eq!(format_major(MAX_AMOUNT_MINOR, currency("BHD")), "1000000000000");
    assert_eq!(format_major(1, currency("BHD")), "0.001");
    assert_eq!(format_major(1010, currency("BHD")), "1.01");
    assert_eq!(format_major(MAX_BALANCE_MINOR, usd()), "1000000000000000");
    assert_eq!(format_major(-1025, usd()), "-10.25");
}

#[test]
fn one_minor_unit_above_the_amount_limit_formats_but_does_not_parse() {
    for code in ["USD", "JPY", "BHD"] {
        let c = currency(code);
        let text = format_major(MAX_AMOUNT_MINOR + 1, c);
        assert_eq!(Amount::parse_major(&text, c), Err(MoneyError::TooLarge), "{code} {text}");
    }
}
