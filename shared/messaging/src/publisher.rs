//! The publishing port: hand events to the bus and learn, per event, whether the bus has them.

use async_trait::async_trait;
use corebank_domain::EventEnvelope;

use crate::codec::CodecError;

/// Why one event was not published. [`PublishError::is_retryable`] tells the outbox whether to try the
/// same event again (report it as a batch item failure) or to set it aside.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event cannot be turned into a message (no topic for its stream, unwritable JSON).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The message is larger than the configured limit; the broker would refuse it too.
    #[error("message of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of key plus value plus headers.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An earlier event of the same stream in the same call was not handed to the producer, so this one
    /// was held back rather than published out of order.
    #[error("held back: an earlier event of stream {stream_id} in the same call failed")]
    EarlierEventFailed {
        /// The stream.
        stream_id: String,
    },
    /// The bus may accept the event later: a timeout, an unavailable broker, a full queue, a
    /// rebalance, missing authorisation an operator can grant.
    #[error("temporary publish failure: {reason}")]
    Transient {
        /// The client's description.
        reason: String,
    },
    /// The bus refused this message for what it is (an invalid record, a policy); sending it again
    /// gives the same answer.
    #[error("message rejected: {reason}")]
    Rejected {
        /// The client's description.
        reason: String,
    },
}

impl PublishError {
    /// Whether publishing the same event again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::EarlierEventFailed { .. } | Self::Transient { .. } => true,
            Self::Codec(_) | Self::TooLarge { .. } | Self::Rejected { .. } => false,
        }
    }
}

/// Hands events to the event bus.
///
/// Contract of every implementation:
/// - the result has one outcome per input event, in input order;
/// - events of one stream are published in input order (callers pass them in version order);
/// - `Ok(())` means the bus has durably acknowledged the event; the call returns only when every event
///   has an outcome.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `events` and reports the outcome of each.
    async fn publish(&self, events: &[EventEnvelope]) -> Vec<Result<(), PublishError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_held_back_events_are_retryable_and_bad_messages_are_not() {
        assert!(PublishError::Transient { reason: "timed out".to_owned() }.is_retryable());
        assert!(PublishError::EarlierEventFailed { stream_id: "account-a".to_owned() }.is_retryable());
        assert!(!PublishError::Rejected { reason: "invalid record".to_owned() }.is_retryable());
        assert!(!PublishError::TooLarge { bytes: 2, limit: 1 }.is_retryable());
        assert!(
            !PublishError::Codec(CodecError::UnroutableStream { stream_id: "x".to_owned() }).is_retryable()
        );
    }
}
