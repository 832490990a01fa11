//! What a store can answer besides success.

/// A store failure. Conflicts are expected outcomes the caller acts on; `Unavailable` is transient;
/// `Corrupt` and `LimitExceeded` are permanent for the same input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the expected version: another writer got there first.
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    VersionConflict {
        /// The stream.
        stream_id: String,
        /// The version the writer read.
        expected: u64,
        /// The version found (best effort; some adapters only know it moved).
        actual: u64,
    },
    /// The idempotency claim this writer held was taken over or completed by someone else.
    #[error("idempotency claim for key {key} is no longer held")]
    IdempotencyClaimLost {
        /// The key.
        key: String,
    },
    /// A transaction record with this id already exists.
    #[error("transaction {transaction_id} already recorded")]
    TransactionExists {
        /// The transaction id.
        transaction_id: String,
    },
    /// A projection checkpoint moved under the writer.
    #[error("checkpoint of {stream_id} is {actual}, expected {expected}")]
    CheckpointMoved {
        /// The stream.
        stream_id: String,
        /// The checkpoint the writer read.
        expected: u64,
        /// The checkpoint found.
        actual: u64,
    },
    /// A request larger than the store accepts (events per append, item size, ...), refused before
    /// any call.
    #[error("{what}: {actual} exceeds the limit of {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// The size asked for.
        actual: usize,
    },
    /// The request itself is malformed (for example non-consecutive versions).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The backing service failed or timed out; retrying may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
