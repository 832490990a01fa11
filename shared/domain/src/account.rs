//! The account aggregate: commands, events, state, `decide` and `evolve`.

use serde::{Deserialize, Serialize};

use crate::money::{MAX_BALANCE_MINOR, minor_string};
use std::collections::BTreeMap;

use crate::{AccountId, Amount, Currency, DomainError, OwnerId, Reason, TransactionId, TransferId};

/// The schema version every account event is written with today.
pub const ACCOUNT_EVENT_SCHEMA_VERSION: u32 = 1;

/// Whether an account accepts money movements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountStatus {
    /// Open for deposits and withdrawals.
    Active,
    /// Frozen: no debit, credit or hold until unfrozen.
    Frozen,
}

impl AccountStatus {
    /// `ACTIVE` or `FROZEN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Frozen => "FROZEN",
        }
    }
}

/// What a client may ask of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open a new account.
    Create {
        /// The new account's id.
        account_id: AccountId,
        /// Its owner.
        owner_id: OwnerId,
        /// Its currency, fixed for life.
        currency: Currency,
    },
    /// Credit money.
    Deposit {
        /// How much.
        amount: Amount,
        /// Must be the account's currency.
        currency: Currency,
        /// The business transaction id.
        transaction_id: TransactionId,
    },
    /// Debit money, never below zero available.
    Withdraw {
        /// How much.
        amount: Amount,
        /// Must be the account's currency.
        currency: Currency,
        /// The business transaction id.
        transaction_id: TransactionId,
    },
    /// Stop all money movements.
    Freeze {
        /// Why.
        reason: Reason,
    },
    /// Allow money movements again.
    Unfreeze {
        /// Why.
        reason: Reason,
    },
    /// Reserve money for a transfer: reduces the available balance, not the posted one.
    PlaceHold {
        /// The transfer the hold is for; at most one open hold per transfer.
        transfer_id: TransferId,
        /// How much.
        amount: Amount,
        /// Must be the account's currency.
        currency: Currency,
        /// The transfer leg's transaction id (see [`crate::transfer::leg_transaction_id`]).
        transaction_id: TransactionId,
    },
    /// Turn a transfer's hold into a debit.
    CaptureHold {
        /// The transfer.
        transfer_id: TransferId,
        /// The transfer leg's transaction id.
        transaction_id: TransactionId,
    },
    /// Give a transfer's hold back to the available balance.
    ReleaseHold {
        /// The transfer.
        transfer_id: TransferId,
        /// The transfer leg's transaction id.
        transaction_id: TransactionId,
    },
}

/// Payload of `AccountCreated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountCreated {
    /// The account.
    pub account_id: AccountId,
    /// Its owner.
    pub owner_id: OwnerId,
    /// Its currency.
    pub currency: Currency,
}

/// Payload of `MoneyDeposited` and `MoneyWithdrawn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoneyMoved {
    /// The account.
    pub account_id: AccountId,
    /// The amount in minor units.
    #[serde(rename = "amountMinorUnits")]
    pub amount: Amount,
    /// The currency.
    pub currency: Currency,
    /// The business transaction id.
    pub transaction_id: TransactionId,
    /// The posted balance after this event, in minor units.
    #[serde(rename = "balanceAfterMinorUnits", with = "minor_string")]
    pub balance_after: i64,
}

/// Payload of `AccountFrozen` and `AccountUnfrozen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChanged {
    /// The account.
    pub account_id: AccountId,
    /// Why.
    pub reason: Reason,
}

/// Payload of `FundsReserved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FundsReserved {
    /// The account.
    pub account_id: AccountId,
    /// The transfer the hold is for.
    pub transfer_id: TransferId,
    /// The amount reserved.
    #[serde(rename = "amountMinorUnits")]
    pub amount: Amount,
    /// The currency.
    pub currency: Currency,
    /// The transaction id of the transfer's hold leg.
    pub transaction_id: TransactionId,
}

/// Payload of `ReservationCaptured` and `ReservationReleased`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationSettled {
    /// The account.
    pub account_id: AccountId,
    /// The transfer the hold was for.
    pub transfer_id: TransferId,
    /// The amount of the hold.
    #[serde(rename = "amountMinorUnits")]
    pub amount: Amount,
    /// The currency.
    pub currency: Currency,
    /// The transaction id of the transfer's capture or release leg.
    pub transaction_id: TransactionId,
    /// The posted balance after this event, in minor units.
    #[serde(rename = "balanceAfterMinorUnits", with = "minor_string")]
    pub balance_after: i64,
}

/// Facts about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    /// `AccountCreated`.
    Created(AccountCreated),
    /// `MoneyDeposited`.
    Deposited(MoneyMoved),
    /// `MoneyWithdrawn`.
    Withdrawn(MoneyMoved),
    /// `AccountFrozen`.
    Frozen(StatusChanged),
    /// `AccountUnfrozen`.
    Unfrozen(StatusChanged),
    /// `FundsReserved`: a hold for a transfer.
    FundsReserved(FundsReserved),
    /// `ReservationCaptured`: a hold became a debit.
    ReservationCaptured(ReservationSettled),
    /// `ReservationReleased`: a hold was given back.
    ReservationReleased(ReservationSettled),
}

/// A stored event that cannot be read as an account event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {event_type} v{schema_version}: {reason}")]
pub struct DecodeError {
    /// The stored type name.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// What went wrong.
    pub reason: String,
}

impl AccountEvent {
    /// The type name stored with the event.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created(_) => "AccountCreated",
            Self::Deposited(_) => "MoneyDeposited",
            Self::Withdrawn(_) => "MoneyWithdrawn",
            Self::Frozen(_) => "AccountFrozen",
            Self::Unfrozen(_) => "AccountUnfrozen",
            Self::FundsReserved(_) => "FundsReserved",
            Self::ReservationCaptured(_) => "ReservationCaptured",
            Self::ReservationReleased(_) => "ReservationReleased",
        }
    }

    /// The JSON payload stored with the event.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            Self::Created(p) => serde_json::to_value(p),
            Self::Deposited(p) | Self::Withdrawn(p) => serde_json::to_value(p),
            Self::Frozen(p) | Self::Unfrozen(p) => serde_json::to_value(p),
            Self::FundsReserved(p) => serde_json::to_value(p),
            Self::ReservationCaptured(p) | Self::ReservationReleased(p) => serde_json::to_value(p),
        };
        // Serialising these plain structs cannot fail: they hold only strings and integers.
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Reads a stored event, upcasting older schema versions when there are any.
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self, DecodeError> {
        let fail = |reason: String| DecodeError { event_type: event_type.to_owned(), schema_version, reason };
        if schema_version != ACCOUNT_EVENT_SCHEMA_VERSION {
            return Err(fail("unknown schema version".to_owned()));
        }
        let de = |e: serde_json::Error| fail(e.to_string());
        Ok(match event_type {
            "AccountCreated" => Self::Created(AccountCreated::deserialize(payload).map_err(de)?),
            "MoneyDeposited" => Self::Deposited(MoneyMoved::deserialize(payload).map_err(de)?),
            "MoneyWithdrawn" => Self::Withdrawn(MoneyMoved::deserialize(payload).map_err(de)?),
            "AccountFrozen" => Self::Frozen(StatusChanged::deserialize(payload).map_err(de)?),
            "AccountUnfrozen" => Self::Unfrozen(StatusChanged::deserialize(payload).map_err(de)?),
            "FundsReserved" => Self::FundsReserved(FundsReserved::deserialize(payload).map_err(de)?),
            "ReservationCaptured" => {
                Self::ReservationCaptured(ReservationSettled::deserialize(payload).map_err(de)?)
            }
            "ReservationReleased" => {
                Self::ReservationReleased(ReservationSettled::deserialize(payload).map_err(de)?)
            }
            other => return Err(fail(format!("unknown event type {other}"))),
        })
    }

    /// The transaction id of a money movement or of a transfer's hold leg.
    pub fn transaction_id(&self) -> Option<&TransactionId> {
        match self {
            Self::Deposited(m) | Self::Withdrawn(m) => Some(&m.transaction_id),
            Self::FundsReserved(h) => Some(&h.transaction_id),
            Self::ReservationCaptured(h) | Self::ReservationReleased(h) => Some(&h.transaction_id),
            Self::Created(_) | Self::Frozen(_) | Self::Unfrozen(_) => None,
        }
    }

    /// The transfer a hold event belongs to.
    pub fn transfer_id(&self) -> Option<&TransferId> {
        match self {
            Self::FundsReserved(h) => Some(&h.transfer_id),
            Self::ReservationCaptured(h) | Self::ReservationReleased(h) => Some(&h.transfer_id),
            _ => None,
        }
    }
}

/// An account that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Its id.
    pub account_id: AccountId,
    /// Its owner.
    pub owner_id: OwnerId,
    /// Its currency.
    pub currency: Currency,
    /// Active or frozen.
    pub status: AccountStatus,
    /// Posted balance in minor units.
    #[serde(with = "minor_string")]
    pub balance: i64,
    /// Money reserved by open holds, in minor units (the sum of `holds`). Defaults to zero so a
    /// snapshot written before holds existed still reads.
    #[serde(default, with = "minor_string")]
    pub held: i64,
    /// Open holds by transfer id, in minor units.
    #[serde(default)]
    pub holds: BTreeMap<String, i64>,
}

impl Account {
    /// Posted balance minus open holds.
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }
}

/// The state of one account stream: the fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountState {
    /// The number of events folded so far (the stream version).
    pub version: u64,
    /// `None` until `AccountCreated`.
    pub account: Option<Account>,
}

/// Decides which events a command produces, or why it is refused. Holds every business rule.
pub fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
    let account = match (&state.account, command) {
        (Some(_), AccountCommand::Create { .. }) => return Err(DomainError::AccountAlreadyExists),
        (None, AccountCommand::Create { account_id, owner_id, currency }) => {
            return Ok(vec![AccountEvent::Created(AccountCreated {
                account_id: account_id.clone(),
                owner_id: owner_id.clone(),
                currency: *currency,
            })]);
        }
        (None, _) => return Err(DomainError::AccountNotFound),
        (Some(account), _) => account,
    };
    let event = match command {
        AccountCommand::Create { .. } => return Err(DomainError::AccountAlreadyExists),
        AccountCommand::Deposit { amount, currency, transaction_id } => {
            check_movement(account, *currency)?;
            let balance_after = account
                .balance
                .checked_add(amount.minor())
                .filter(|b| *b <= MAX_BALANCE_MINOR)
                .ok_or(DomainError::BalanceLimitExceeded { limit_minor: MAX_BALANCE_MINOR })?;
            AccountEvent::Deposited(MoneyMoved {
                account_id: account.account_id.clone(),
                amount: *amount,
                currency: *currency,
                transaction_id: transaction_id.clone(),
                balance_after,
            })
        }
        AccountCommand::Withdraw { amount, currency, transaction_id } => {
            check_movement(account, *currency)?;
            if amount.minor() > account.available() {
                return Err(DomainError::InsufficientFunds {
                    available_minor: account.available(),
                    requested_minor: amount.minor(),
                });
            }
            AccountEvent::Withdrawn(MoneyMoved {
                account_id: account.account_id.clone(),
                amount: *amount,
                currency: *currency,
                transaction_id: transaction_id.clone(),
                balance_after: account.balance - amount.minor(),
            })
        }
        AccountCommand::Freeze { reason } => {
            if account.status == AccountStatus::Frozen {
                return Err(DomainError::AccountAlreadyFrozen);
            }
            AccountEvent::Frozen(StatusChanged {
                account_id: account.account_id.clone(),
                reason: reason.clone(),
            })
        }
        AccountCommand::Unfreeze { reason } => {
            if account.status == AccountStatus::Active {
                return Err(DomainError::AccountNotFrozen);
            }
            AccountEvent::Unfrozen(StatusChanged {
                account_id: account.account_id.clone(),
                reason: reason.clone(),
            })
        }
        AccountCommand::PlaceHold { transfer_id, amount, currency, transaction_id } => {
            check_movement(account, *currency)?;
            if account.holds.contains_key(transfer_id.as_str()) {
                return Err(DomainError::HoldAlreadyExists);
            }
            if amount.minor() > account.available() {
                return Err(DomainError::InsufficientFunds {
                    available_minor: account.available(),
                    requested_minor: amount.minor(),
                });
            }
            AccountEvent::FundsReserved(FundsReserved {
                account_id: account.account_id.clone(),
                transfer_id: transfer_id.clone(),
                amount: *amount,
                currency: *currency,
                transaction_id: transaction_id.clone(),
            })
        }
        // Settling an open hold is allowed on a frozen account: the money was committed to the
        // transfer before the freeze, and refusing would strand it (a capture that could never run
        // would leave the destination credited and the source's hold open for ever).
        AccountCommand::CaptureHold { transfer_id, transaction_id } => {
            AccountEvent::ReservationCaptured(settle(account, transfer_id, transaction_id, true)?)
        }
        AccountCommand::ReleaseHold { transfer_id, transaction_id } => {
            AccountEvent::ReservationReleased(settle(account, transfer_id, transaction_id, false)?)
        }
    };
    Ok(vec![event])
}

/// The settlement of the open hold of `transfer_id`: captured (the held amount leaves the posted
/// balance) or released (the balance stays).
fn settle(
    account: &Account,
    transfer_id: &TransferId,
    transaction_id: &TransactionId,
    captured: bool,
) -> Result<ReservationSettled, DomainError> {
    let amount = open_hold(account, transfer_id)?;
    Ok(ReservationSettled {
        account_id: account.account_id.clone(),
        transfer_id: transfer_id.clone(),
        amount,
        currency: account.currency,
        transaction_id: transaction_id.clone(),
        balance_after: if captured { account.balance - amount.minor() } else { account.balance },
    })
}

fn open_hold(account: &Account, transfer_id: &TransferId) -> Result<Amount, DomainError> {
    let minor = account.holds.get(transfer_id.as_str()).copied().ok_or(DomainError::HoldNotFound)?;
    Amount::from_minor(minor).map_err(|_| DomainError::HoldNotFound)
}

fn check_movement(account: &Account, currency: Currency) -> Result<(), DomainError> {
    if account.status != AccountStatus::Active {
        return Err(DomainError::AccountNotActive);
    }
    if currency != account.currency {
        return Err(DomainError::CurrencyMismatch { account: account.currency, requested: currency });
    }
    Ok(())
}

/// Folds one event into the state. Holds no rule: every event is a fact that already happened.
pub fn evolve(mut state: AccountState, event: &AccountEvent) -> AccountState {
    state.version += 1;
    match (event, state.account.as_mut()) {
        (AccountEvent::Created(c), _) => {
            state.account = Some(Account {
                account_id: c.account_id.clone(),
                owner_id: c.owner_id.clone(),
                currency: c.currency,
                status: AccountStatus::Active,
                balance: 0,
                held: 0,
                holds: BTreeMap::new(),
            });
        }
        (AccountEvent::Deposited(m), Some(a)) => a.balance = a.balance.saturating_add(m.amount.minor()),
        (AccountEvent::Withdrawn(m), Some(a)) => a.balance = a.balance.saturating_sub(m.amount.minor()),
        (AccountEvent::Frozen(_), Some(a)) => a.status = AccountStatus::Frozen,
        (AccountEvent::Unfrozen(_), Some(a)) => a.status = AccountStatus::Active,
        (AccountEvent::FundsReserved(h), Some(a)) => {
            a.holds.insert(h.transfer_id.as_str().to_owned(), h.amount.minor());
            a.held = a.held.saturating_add(h.amount.minor());
        }
        (AccountEvent::ReservationCaptured(h), Some(a)) => {
            if let Some(amount) = a.holds.remove(h.transfer_id.as_str()) {
                a.held = a.held.saturating_sub(amount);
                a.balance = a.balance.saturating_sub(amount);
            }
        }
        (AccountEvent::ReservationReleased(h), Some(a)) => {
            if let Some(amount) = a.holds.remove(h.transfer_id.as_str()) {
                a.held = a.held.saturating_sub(amount);
            }
        }
        // An event before creation cannot be written by `decide`; folding ignores it rather than panic.
        (_, None) => {}
    }
    state
}

/// Folds a whole sequence of events onto a starting state.
pub fn replay<'a>(state: AccountState, events: impl IntoIterator<Item = &'a AccountEvent>) -> AccountState {
    events.into_iter().fold(state, evolve)
}
