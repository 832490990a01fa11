//! How stored events reach the read side and the transfer saga, in one place.
//!
//! - [`handlers`]: what the AWS triggers call. Each handler takes the exact `aws_lambda_events`
//!   payload its trigger delivers (a DynamoDB Streams batch, an MSK batch, a scheduled tick), so the
//!   Lambda functions and the local runner run the same code: `outbox` (`outbox-publisher`), `relay`
//!   (`outbox-relay`), `projection` (`projector`), `saga` (`transfer-saga`).
//! - [`emulators`]: what stands in for the event source mappings where there is no Lambda (the local
//!   runner, tests, benchmarks): the in-process pipeline that tails the store's feed, the DynamoDB
//!   Streams poller and the Kafka batch consumer. They call the same use cases, or the same handlers,
//!   with the same payloads.
//! - [`fanout`]: the one keyed fan-out both sides share: events grouped by the key whose order
//!   matters (a stream, a transfer), each group in order, groups concurrently and bounded.
//! - `republish` (feature `dynamodb`): the operator's tool that publishes a time range of the
//!   DynamoDB `events` table again, through the outbox publisher's own path, once its stream records
//!   are gone.
//! - [`topics`] and [`groups`]: the Kafka topics and the consumer groups, from the environment.
//!
//! Retries pause by [`corebank_backoff::Backoff`], the one backoff of the workspace.
#![warn(missing_docs)]

pub mod emulators;
pub mod fanout;
pub mod groups;
pub mod handlers;
#[cfg(feature = "dynamodb")]
pub mod republish;
pub mod topics;

#[cfg(test)]
pub(crate) mod test_support {
    use chrono::{TimeZone, Utc};
    use corebank_domain::{EventEnvelope, EventMetadata};

    /// `events` as one MSK batch of partition 0 of `topic`, at offsets 0, 1, ... in the order given.
    pub(crate) fn one_partition_batch<'a>(
        topic: &str,
        events: impl IntoIterator<Item = &'a EventEnvelope>,
    ) -> aws_lambda_events::event::kafka::KafkaEvent {
        use crate::emulators::kafka_consumer::{ConsumedRecord, kafka_event_from_records};
        let topics = corebank_messaging::Topics::single(topic);
        let records: Vec<ConsumedRecord> = (0..)
            .zip(events)
            .map(|(offset, e)| {
                let record = corebank_messaging::encode(&topics, e).unwrap();
                ConsumedRecord::from_outgoing(&record, 0, offset, rdkafka::message::Timestamp::CreateTime(0))
            })
            .collect();
        kafka_event_from_records(&records, None, None)
    }

    /// A `MoneyDeposited` envelope of `stream_id` at `version`, with a fresh event id.
    pub(crate) fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
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
