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
    /// Nothing is parked under the stream key a retry named.
    #[error("no parked records for that consumer and stream")]
    ParkedStreamNotFound,
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

    /// Whether the same call may succeed later without anything being fixed: a store that is down or
    /// slow (timeouts, throttling), a race with another writer, a claim or lease still held. What a
    /// consumer meets this way it retries (the batch comes again); anything else is permanent for the
    /// same input, and the consumer parks it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => {
                e.is_transient()
                    || matches!(
                        e,
                        StoreError::VersionConflict { .. }
                            | StoreError::CheckpointMoved { .. }
                            | StoreError::IdempotencyClaimLost { .. }
                    )
            }
            Self::ConcurrencyConflict | Self::IdempotencyInProgress | Self::VersionNotReached { .. } => true,
            Self::Domain(_)
            | Self::TransactionIdConflict
            | Self::IdempotencyKeyReused
            | Self::RebuildNotFound
            | Self::ParkedStreamNotFound
            | Self::Corrupt(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_races_and_held_claims_are_transient_and_everything_else_is_permanent() {
        let transient = [
            AppError::Store(StoreError::Unavailable("timeout".to_owned())),
            AppError::Store(StoreError::VersionConflict {
                stream_id: "s".to_owned(),
                expected: 1,
                actual: 2,
            }),
            AppError::Store(StoreError::CheckpointMoved {
                stream_id: "s".to_owned(),
                expected: 1,
                actual: 2,
            }),
            AppError::Store(StoreError::IdempotencyClaimLost { key: "k".to_owned() }),
            AppError::ConcurrencyConflict,
            AppError::IdempotencyInProgress,
            AppError::VersionNotReached { requested: 3, current: 2 },
        ];
        let permanent = [
            AppError::Domain(DomainError::AccountNotFound),
            AppError::TransactionIdConflict,
            AppError::IdempotencyKeyReused,
            AppError::RebuildNotFound,
            AppError::ParkedStreamNotFound,
            AppError::Corrupt("bad json".to_owned()),
            AppError::Store(StoreError::Corrupt("bad item".to_owned())),
            AppError::Store(StoreError::Invalid("bad request".to_owned())),
            AppError::Store(StoreError::LimitExceeded { what: "items", limit: 1, actual: 2 }),
            AppError::Store(StoreError::TransactionExists { transaction_id: "t".to_owned() }),
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e:?}");
        }
        for e in &permanent {
            assert!(!e.is_transient(), "{e:?}");
        }
    }
}
