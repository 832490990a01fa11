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
    /// A credit that would take the balance above the limit.
    #[error("deposit would take the balance above {limit_minor} minor units")]
    BalanceLimitExceeded {
        /// The balance limit in minor units.
        limit_minor: i64,
    },
}
