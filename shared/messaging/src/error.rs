//! Errors of setting up Kafka clients and topics.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A Kafka client could not be built, or topic administration failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the configuration (for example TLS without OpenSSL compiled in).
    #[error("could not create the Kafka {role}: {source}")]
    Create {
        /// `producer`, `consumer` or `admin client`.
        role: &'static str,
        /// librdkafka's reason.
        #[source]
        source: KafkaError,
    },
    /// The consumer could not subscribe to its topics.
    #[error("could not subscribe to {topics:?}: {source}")]
    Subscribe {
        /// The topics.
        topics: Vec<String>,
        /// librdkafka's reason.
        #[source]
        source: KafkaError,
    },
    /// The CreateTopics request itself failed.
    #[error("topic administration failed: {0}")]
    Admin(#[source] KafkaError),
    /// The broker refused to create a topic.
    #[error("could not create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}
