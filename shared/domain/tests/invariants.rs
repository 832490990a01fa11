//! Invariants of the account aggregate over random command sequences.
//!
//! Each case draws a currency, an optional prelude that takes the balance close to its limit, and up to 60
//! commands (creates, deposits, withdrawals, freezes, unfreezes, commands in a wrong currency, commands
//! before the account exists). Every command goes through `decide`; accepted events go through `evolve`.
//! A small reference model predicts each outcome, so a rule that silently changes shows up here too.

use corebank_domain::account::{ACCOUNT_EVENT_SCHEMA_VERSION, decide, evolve, replay};
use corebank_domain::money::{MAX_AMOUNT_MINOR, MAX_BALANCE_MINOR, format_major};
use corebank_domain::{
    AccountCommand, AccountEvent, AccountId, AccountState, AccountStatus, Amount, Currency, DomainError,
    OwnerId, Reason, TransactionId,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

const CODES: [&str; 3] = ["USD", "JPY", "BHD"];

/// A command as drawn, before it is resolved against the current balance.
#[derive(Debug, Clone)]
enum Op {
    Create,
    Deposit(i64),
    Withdraw(i64),
    /// Withdraw this percentage of the balance (above 100 overdraws; 100 empties the account).
    WithdrawPercent(u8),
    Freeze,
    Unfreeze,
    DepositOtherCurrency(i64),
    WithdrawOtherCurrency(i64),
}

fn amount_minor() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 1_i64..=10_000,
        2 => 1_i64..=MAX_AMOUNT_MINOR,
        1 => Just(MAX_AMOUNT_MINOR),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Create),
        6 => amount_minor().prop_map(Op::Deposit),
        3 => amount_minor().prop_map(Op::Withdraw),
        3 => (1_u8..=120).prop_map(Op::WithdrawPercent),
        1 => Just(Op::Freeze),
        1 => Just(Op::Unfreeze),
        1 => amount_minor().prop_map(Op::DepositOtherCurrency),
        1 => amount_minor().prop_map(Op::WithdrawOtherCurrency),
    ]
}

/// Create, then 99 deposits of the largest amount: the balance sits one largest deposit below its limit.
fn near_limit_prelude() -> Vec<Op> {
    let mut ops = vec![Op::Create];
    ops.extend(std::iter::repeat_n(Op::Deposit(MAX_AMOUNT_MINOR), 99));
    ops
}

fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap_or_else(|e| panic!("{e}"))
}

fn amount(minor: i64) -> Amount {
    Amount::from_minor(minor).unwrap_or_else(|e| panic!("{minor}: {e}"))
}

fn tx(n: usize) -> TransactionId {
    TransactionId::parse(&format!("tx-{n}")).unwrap_or_else(|e| panic!("{e}"))
}

fn reason(text: &str) -> Reason {
    Reason::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// What the rules say, kept as simply as possible and independently of the crate's types.
#[derive(Debug, Clone, Copy, Default)]
struct Model {
    exists: bool,
    frozen: bool,
    balance: i64,
}

/// The expected outcome of a command: `Ok` with the model after it, or the error.
fn expected(
    model: Model,
    command: &AccountCommand,
    account_currency: Currency,
) -> Result<Model, DomainError> {
    let movement = |currency: Currency| {
        if !model.exists {
            Err(DomainError::AccountNotFound)
        } else if model.frozen {
            Err(DomainError::AccountNotActive)
        } else if currency != account_currency {
            Err(DomainError::CurrencyMismatch { account: account_currency, requested: currency })
        } else {
            Ok(())
        }
    };
    match command {
        AccountCommand::Create { .. } if model.exists => Err(DomainError::AccountAlreadyExists),
        AccountCommand::Create { .. } => Ok(Model { exists: true, frozen: false, balance: 0 }),
        AccountCommand::Deposit { amount, currency, .. } => {
            movement(*currency)?;
            let after = model.balance + amount.minor();
            if after > MAX_BALANCE_MINOR {
                return Err(DomainError::BalanceLimitExceeded { limit_minor: MAX_BALANCE_MINOR });
            }
            Ok(Model { balance: after, ..model })
        }
        AccountCommand::Withdraw { amount, currency, .. } => {
            movement(*currency)?;
            if amount.minor() > model.balance {
                return Err(DomainError::InsufficientFunds {
                    available_minor: model.balance,
                    requested_minor: amount.minor(),
                });
            }
            Ok(Model { balance: model.balance - amount.minor(), ..model })
        }
        AccountCommand::Freeze { .. } if !model.exists => Err(DomainError::AccountNotFound),
        AccountCommand::Freeze { .. } if model.frozen => Err(DomainError::AccountAlreadyFrozen),
        AccountCommand::Freeze { .. } => Ok(Model { frozen: true, ..model }),
        AccountCommand::Unfreeze { .. } if !model.exists => Err(DomainError::AccountNotFound),
        AccountCommand::Unfreeze { .. } if !model.frozen => Err(DomainError::AccountNotFrozen),
        AccountCommand::Unfreeze { .. } => Ok(Model { frozen: false, ..model }),
        AccountCommand::PlaceHold { .. }
        | AccountCommand::CaptureHold { .. }
        | AccountCommand::ReleaseHold { .. } => {
            panic!("this model generates no hold commands")
        }
    }
}

/// Turns a drawn operation into a command, reading the balance only for percentage withdrawals.
fn command(op: &Op, n: usize, own: Currency, other: Currency, balance: i64) -> AccountCommand {
    let deposit =
        |minor, currency| AccountCommand::Deposit { amount: amount(minor), currency, transaction_id: tx(n) };
    let withdraw =
        |minor, currency| AccountCommand::Withdraw { amount: amount(minor), currency, transaction_id: tx(n) };
    match op {
        Op::Create => AccountCommand::Create {
            account_id: AccountId::parse("acc-prop").unwrap_or_else(|e| panic!("{e}")),
            owner_id: OwnerId::parse("owner-prop").unwrap_or_else(|e| panic!("{e}")),
            currency: own,
        },
        Op::Deposit(minor) => deposit(*minor, own),
        Op::Withdraw(minor) => withdraw(*minor, own),
        Op::WithdrawPercent(percent) => {
            let share = i128::from(balance) * i128::from(*percent) / 100;
            let minor =
                i64::try_from(share.clamp(1, i128::from(MAX_AMOUNT_MINOR))).unwrap_or(MAX_AMOUNT_MINOR);
            withdraw(minor, own)
        }
        Op::Freeze => AccountCommand::Freeze { reason: reason(&format!("freeze {n}")) },
        Op::Unfreeze => AccountCommand::Unfreeze { reason: reason(&format!("unfreeze {n}")) },
        Op::DepositOtherCurrency(minor) => deposit(*minor, other),
        Op::WithdrawOtherCurrency(minor) => withdraw(*minor, other),
    }
}

/// The balance as the fold of accepted money events, computed without `evolve`.
fn folded_balance(events: &[AccountEvent]) -> i64 {
    events
        .iter()
        .map(|e| match e {
            AccountEvent::Deposited(m) => m.amount.minor(),
            AccountEvent::Withdrawn(m) => -m.amount.minor(),
            _ => 0,
        })
        .sum()
}

fn balance_of(state: &AccountState) -> i64 {
    state.account.as_ref().map_or(0, |a| a.balance)
}

fn version_for(events: &[AccountEvent]) -> u64 {
    u64::try_from(events.len()).unwrap_or(u64::MAX)
}

/// Runs one drawn sequence and checks every invariant after every command. Returns the accepted events.
fn run(ops: &[Op], currency_index: usize) -> Result<(AccountState, Vec<AccountEvent>), TestCaseError> {
    let own = currency(CODES[currency_index]);
    let other = currency(CODES[(currency_index + 1) % CODES.len()]);
    let mut state = AccountState::default();
    let mut model = Model::default();
    let mut events: Vec<AccountEvent> = Vec::new();

    for (n, op) in ops.iter().enumerate() {
        let cmd = command(op, n, own, other, model.balance);
        let before = state.clone();
        let outcome = decide(&state, &cmd);

        // (c) `decide` is a function of its inputs alone, and leaves the state it read untouched.
        prop_assert_eq!(&decide(&state, &cmd), &outcome, "decide is not deterministic for {:?}", cmd);
        prop_assert_eq!(&state, &before);

        // The outcome is the one the rules predict.
        let predicted = expected(model, &cmd, own);
        match (&outcome, predicted) {
            (Ok(new_events), Ok(next)) => {
                prop_assert_eq!(new_events.len(), 1, "one command, one event: {:?}", new_events);
                for event in new_events {
                    // (d) evolve is deterministic.
                    let once = evolve(state.clone(), event);
                    prop_assert_eq!(&evolve(state.clone(), event), &once);
                    state = once;
                    events.push(event.clone());

                    // The stored form of every accepted event reads back as the same event.
                    let decoded = AccountEvent::decode(
                        event.event_type(),
                        ACCOUNT_EVENT_SCHEMA_VERSION,
                        &event.payload(),
                    );
                    prop_assert_eq!(decoded.as_ref(), Ok(event));

                    // A money event records the balance it leaves behind.
                    if let AccountEvent::Deposited(m) | AccountEvent::Withdrawn(m) = event {
                        prop_assert_eq!(m.balance_after, balance_of(&state));
                    }
                }
                model = next;
            }
            (Err(actual), Err(wanted)) => {
                prop_assert_eq!(actual, &wanted, "wrong rule for {:?}", cmd);
                // (c) A refused command writes nothing: the state is exactly what it was.
                prop_assert_eq!(&state, &before);
            }
            (actual, wanted) => {
                return Err(TestCaseError::fail(format!(
                    "{cmd:?} on {model:?}: got {actual:?}, the rules say {wanted:?}"
                )));
            }
        }

        // (a) The balance is the fold of the accepted money events, and matches the model.
        prop_assert_eq!(balance_of(&state), folded_balance(&events));
        prop_assert_eq!(balance_of(&state), model.balance);
        // (b) Never negative, never above the limit; nothing is held, so available equals balance.
        if let Some(account) = &state.account {
            prop_assert!(account.balance >= 0 && account.balance <= MAX_BALANCE_MINOR, "{account:?}");
            prop_assert!(account.available() >= 0, "{account:?}");
            prop_assert_eq!(account.available(), account.balance);
            prop_assert_eq!(account.currency, own);
            prop_assert_eq!(account.status == AccountStatus::Frozen, model.frozen);
        }
        prop_assert_eq!(state.account.is_some(), model.exists);
        // (f) The version counts the accepted events.
        prop_assert_eq!(state.version, version_for(&events));
    }
    Ok((state, events))
}

fn sequence() -> impl Strategy<Value = (Vec<Op>, usize)> {
    (any::<bool>(), prop::collection::vec(op(), 0..=60), 0..CODES.len()).prop_map(|(near_limit, ops, c)| {
        let mut all = if near_limit { near_limit_prelude() } else { Vec::new() };
        all.extend(ops);
        (all, c)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_outcome_follows_the_rules_and_the_balance_is_the_never_negative_fold_of_its_events(
        (ops, currency_index) in sequence(),
    ) {
        let (state, events) = run(&ops, currency_index)?;

        // (d) Replaying the whole stream twice gives the same state, and the same as evolving step by step.
        let full = replay(AccountState::default(), &events);
        prop_assert_eq!(&replay(AccountState::default(), &events), &full);
        prop_assert_eq!(&full, &state);
        // (f) The version equals the number of events.
        prop_assert_eq!(full.version, version_for(&events));
    }

    #[test]
    fn replay_from_a_json_snapshot_at_any_cut_equals_a_full_replay(
        (ops, currency_index) in sequence(),
        cut in any::<Index>(),
    ) {
        let (_, events) = run(&ops, currency_index)?;
        let cut = cut.index(events.len() + 1);
        let (head, tail) = events.split_at(cut);

        let snapshot = replay(AccountState::default(), head);
        prop_assert_eq!(snapshot.version, version_for(head));
        let stored = serde_json::to_string(&snapshot).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let restored: AccountState =
            serde_json::from_str(&stored).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&restored, &snapshot);

        let from_snapshot = replay(restored, tail);
        let full = replay(AccountState::default(), &events);
        prop_assert_eq!(&from_snapshot, &full);
        prop_assert_eq!(from_snapshot.version, version_for(&events));
    }

    #[test]
    fn any_amount_formatted_in_major_units_parses_back_exactly(
        minor in 1_i64..=MAX_AMOUNT_MINOR,
        currency_index in 0..CODES.len(),
    ) {
        let c = currency(CODES[currency_index]);
        let text = format_major(minor, c);
        prop_assert_eq!(Amount::parse_major(&text, c).map(Amount::minor), Ok(minor), "{}", text);
    }
}
