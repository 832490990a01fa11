//! Application errors: domain rejections, contract conflicts and store failures.

use corebank_domain::DomainError;
use corebank_store::StoreError;

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A business rule refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The transaction id was used before for another intent.
    #[error("transactionId was already used for a different operation, account, amount or currency")]
    TransactionIdConflict,
    /// The Idempotency-Key was used before for another request.
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// The first request under this Idempotency-Key is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInProgress,
    /// Version conflicts outlasted the retry budget.
    #[error("the account is being changed concurrently; retry the request")]
    ConcurrencyConflict,
    /// `minVersion` above the stream's version.
    #[error("version {requested} not reached: the stream is at version {current}")]
    VersionNotReached {
        /// What the client asked for.
        requested: u64,
        /// What the event store holds.
        current: u64,
    },
    /// An unknown rebuild job.
    #[error("rebuild not found")]
    RebuildNotFound,
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppError {
    /// Whether this outcome is a decision of the command itself (stored and replayed under its
    /// Idempotency-Key) rather than a failure that a retry may overcome.
    pub fn is_decision(&self) -> bool {
        matches!(self, Self::Domain(_) | Self::TransactionIdConflict)
    }
}
