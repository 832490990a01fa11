//! Business rule violations. One variant per rule; no I/O types.

use crate::Currency;

/// A command that the current state of its aggregate does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command names an account that was never created.
    #[error("account not found")]
    AccountNotFound,
    /// An account with this id already exists.
    #[error("account already exists")]
    AccountAlreadyExists,
    /// The account is frozen and takes no debit, credit or hold.
    #[error("account is not active")]
    AccountNotActive,
    /// Freezing a frozen account.
    #[error("account is already frozen")]
    AccountAlreadyFrozen,
    /// Unfreezing an active account.
    #[error("account is not frozen")]
    AccountNotFrozen,
    /// The command's currency is not the account's.
    #[error("currency {requested} does not match the account currency {account}")]
    CurrencyMismatch {
        /// The account's currency.
        account: Currency,
        /// The command's currency.
        requested: Currency,
    },
    /// A debit larger than the available balance.
    #[error("insufficient funds: available {available_minor} minor units, requested {requested_minor}")]
    InsufficientFunds {
        /// Available balance in minor units.
        available_minor: i64,
        /// Requested amount in minor units.
        requested_minor: i64,
    },
    /// A hold for this transfer is already open on the account.
    #[error("a hold for this transfer already exists")]
    HoldAlreadyExists,
    /// No open hold for this transfer on the account.
    #[error("no open hold for this transfer")]
    HoldNotFound,
    /// The command names a transfer that was never requested.
    #[error("transfer not found")]
    TransferNotFound,
    /// A transfer id reused with other accounts, amount or currency.
    #[error("transferId was already used for a different transfer")]
    TransferIdConflict,
    /// A transfer whose source and destination are the same account.
    #[error("a transfer needs two different accounts")]
    TransferToSameAccount,
    /// A transfer step that its current state does not allow.
    #[error("transfer is {state}; {step} is not allowed")]
    TransferStepNotAllowed {
        /// The transfer's state.
        state: &'static str,
        /// The refused step.
        step: &'static str,
    },
    /// A credit that would take the balance above the limit.
    #[error("deposit would take the balance above {limit_minor} minor units")]
    BalanceLimitExceeded {
        /// The balance limit in minor units.
        limit_minor: i64,
    },
}
