//! Kafka transport of the core bank: the message codec, the publisher port and its idempotent
//! producer, topic creation, MSK access. How batches are consumed and handed to the functions is
//! delivery's business (`corebank-delivery`); this crate only speaks Kafka.
//!
//! Why a crate of its own: the write side must not know Kafka, and the read side must not know who
//! delivered a batch. So this crate offers
//! - [`codec`]: the one definition of a message (topic by stream family, key = stream id, value = the
//!   envelope's JSON, headers with type, schema version and event id);
//! - [`EventPublisher`]: the port the outbox publishers use, with one classified outcome per event;
//! - [`KafkaPublisher`]: that port over rdkafka's idempotent producer, for MSK in AWS and any
//!   Kafka-protocol broker locally;
//! - [`context::KafkaContext`]: the client context every client is built with (MSK IAM tokens,
//!   librdkafka's logs and rebalances to `tracing`), the batch consumer's included;
//! - [`ensure_topics`]: topic creation for local hosts and tests.
//!
//! # Ordering
//! One stream's events are produced in version order, on one partition (the key), by an idempotent
//! producer with at most five requests in flight, which librdkafka keeps in order across retries. The
//! consumer keeps partition order within and across batches. Delivery is at least once: consumers
//! skip what their checkpoint has seen.
//!
//! # Limits
//! | what | default | where |
//! | --- | --- | --- |
//! | message size (key + value + headers) | 1,000,000 bytes | [`KafkaConfig::max_message_bytes`], checked before producing |
//! | time for one acknowledgement | 30 s | [`KafkaConfig::message_timeout_ms`] |
//!
//! The batch consumer's limits (records per batch, batching window, pause after a failed batch) are
//! documented with it, in `corebank_delivery::emulators::kafka_consumer`.
//!
//! # What a consumer logs
//! Every consumer-group rebalance is logged at info level with the group and the partitions (target
//! `corebank_messaging::context`): `partitions assigned`, and `partitions revoked` with `lost=true` when
//! the group moved on without this member (a missed session timeout). librdkafka's own log lines go to
//! target `librdkafka`, client errors are warnings, and the batch consumer adds its own
//! (`corebank_delivery::emulators::kafka_consumer`). To watch rebalances in the runner:
//! `RUST_LOG=warn,corebank_messaging=info,corebank_delivery=info`.
//!
//! # TLS and MSK
//! [`KafkaSecurity::Ssl`], [`KafkaSecurity::SaslScram`] and [`KafkaSecurity::MskIam`] need librdkafka
//! built with OpenSSL: this crate's `tls` feature (rdkafka's `ssl-vendored`, OpenSSL compiled from
//! source). Without it, creating a client with TLS settings fails at start-up with librdkafka's
//! "OpenSSL not available at build time". [`KafkaSecurity::MskIam`] and broker lookup from
//! `MSK_CLUSTER_ARN` also need the `msk-iam` feature; see [`msk`]. The Lambda functions that talk to MSK
//! enable both; the local runner and tests use plaintext brokers.
#![warn(missing_docs)]

pub mod admin;
#[cfg(feature = "msk-iam")]
pub mod aws_http;
pub mod codec;
pub mod config;
pub mod context;
pub mod error;
pub mod msk;
pub mod producer;
pub mod publisher;

pub use admin::ensure_topics;
pub use codec::{CodecError, OutgoingRecord, Topics, decode_value, default_topic, encode, topic_for};
pub use config::{AwsIdentity, Compression, ConfigError, KafkaConfig, KafkaSecurity, ScramMechanism};
pub use error::KafkaSetupError;
pub use producer::KafkaPublisher;
pub use publisher::{EventPublisher, PublishError};

#[cfg(test)]
pub(crate) mod test_support {
    use chrono::{TimeZone, Utc};
    use corebank_domain::{EventEnvelope, EventMetadata};
    use uuid::Uuid;

    /// A `MoneyDeposited` envelope of `stream_id` at `version`, with a fresh event id.
    pub(crate) fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: stream_id.to_owned(),
            version,
            event_type: "MoneyDeposited".to_owned(),
            schema_version: 1,
            occurred_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
            payload: serde_json::json!({"amountMinorUnits": 1025, "currency": "USD", "transactionId": "t-1"}),
            metadata: EventMetadata { command_id: Some("key-1".to_owned()), ..EventMetadata::default() },
        }
    }
}
