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
    /// MSK IAM auth cannot be set up (feature missing, no identity, or the signature failed).
    #[error("MSK IAM: {0}")]
    MskIam(String),
    /// The bootstrap brokers could not be looked up from the MSK cluster ARN.
    #[error("could not look up the bootstrap brokers of {cluster_arn}: {reason}")]
    BootstrapBrokers {
        /// `MSK_CLUSTER_ARN`.
        cluster_arn: String,
        /// Why.
        reason: String,
    },
    /// The Kafka settings in the environment are unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The broker refused to create a topic.
    #[error("could not create topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
}
