//! How an [`EventEnvelope`] travels on Kafka: which topic, which key, which bytes, which headers.
//!
//! The message value is the envelope's camelCase JSON exactly as the event store keeps it, so a consumer
//! needs nothing but [`decode_value`]. The key is the stream id: Kafka keeps one key on one partition, so
//! one account's events stay in version order. The headers repeat the event type, schema version and
//! event id so that a consumer (or an operator with a console consumer) can route or filter without
//! parsing the value.

use corebank_domain::{EventEnvelope, StreamKind};

/// Topic of `account-*` streams unless [`Topics`] says otherwise.
pub const DEFAULT_ACCOUNT_EVENTS_TOPIC: &str = "corebank.account-events.v1";
/// Topic of `transfer-*` streams unless [`Topics`] says otherwise.
pub const DEFAULT_TRANSFER_EVENTS_TOPIC: &str = "corebank.transfer-events.v1";

/// Header carrying [`EventEnvelope::event_type`].
pub const HEADER_EVENT_TYPE: &str = "event-type";
/// Header carrying [`EventEnvelope::schema_version`] as decimal text.
pub const HEADER_SCHEMA_VERSION: &str = "schema-version";
/// Header carrying [`EventEnvelope::event_id`] in hyphenated form.
pub const HEADER_EVENT_ID: &str = "event-id";

/// Why an envelope could not be turned into a message, or a message into an envelope.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stream id is neither `account-…` nor `transfer-…`, so no topic takes it.
    #[error(
        "stream {stream_id} belongs to no topic (expected an {} or {} stream)",
        StreamKind::Account.prefix(),
        StreamKind::Transfer.prefix()
    )]
    UnroutableStream {
        /// The offending stream id.
        stream_id: String,
    },
    /// The envelope could not be written as JSON.
    #[error("event could not be encoded as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// The bytes are not the JSON of an envelope.
    #[error("message value is not an event envelope: {0}")]
    Decode(#[source] serde_json::Error),
    /// A record of a `KafkaEvent` has a value that is not base64.
    #[error("record {topic}-{partition}@{offset} has a value that is not base64: {source}")]
    Base64 {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i64,
        /// Offset of the record.
        offset: i64,
        /// The decoder's complaint.
        #[source]
        source: base64::DecodeError,
    },
    /// A record of a `KafkaEvent` has no value (a tombstone), which the event topics never carry.
    #[error("record {topic}-{partition}@{offset} has no value")]
    MissingValue {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i64,
        /// Offset of the record.
        offset: i64,
    },
}

/// The topic names of the two event families. The defaults are the production names; tests and
/// tenants override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Topic of `account-*` streams.
    pub account_events: String,
    /// Topic of `transfer-*` streams.
    pub transfer_events: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            account_events: DEFAULT_ACCOUNT_EVENTS_TOPIC.to_owned(),
            transfer_events: DEFAULT_TRANSFER_EVENTS_TOPIC.to_owned(),
        }
    }
}

impl Topics {
    /// Both topics under one name, e.g. a test's unique topic.
    pub fn single(topic: impl Into<String>) -> Self {
        let topic = topic.into();
        Self { account_events: topic.clone(), transfer_events: topic }
    }

    /// The topic that carries the events of streams of `kind`.
    pub fn topic_of(&self, kind: StreamKind) -> &str {
        match kind {
            StreamKind::Account => &self.account_events,
            StreamKind::Transfer => &self.transfer_events,
        }
    }

    /// The topic that carries `stream_id`'s events, chosen by the stream id's prefix alone.
    pub fn topic_for(&self, stream_id: &str) -> Result<&str, CodecError> {
        Ok(self.topic_of(stream_kind(stream_id)?))
    }

    /// Every distinct topic name, account events first.
    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![self.account_events.as_str()];
        if self.transfer_events != self.account_events {
            all.push(self.transfer_events.as_str());
        }
        all
    }
}

/// The default topic of the streams of `kind` (see [`Topics::topic_of`] for overridden names).
pub const fn default_topic(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Account => DEFAULT_ACCOUNT_EVENTS_TOPIC,
        StreamKind::Transfer => DEFAULT_TRANSFER_EVENTS_TOPIC,
    }
}

/// The default topic of `stream_id` (see [`Topics::topic_for`] for overridden names).
pub fn topic_for(stream_id: &str) -> Result<&'static str, CodecError> {
    Ok(default_topic(stream_kind(stream_id)?))
}

/// The stream's family by its prefix; the id after it is not checked, since routing needs only the
/// family.
fn stream_kind(stream_id: &str) -> Result<StreamKind, CodecError> {
    StreamKind::of(stream_id).ok_or_else(|| CodecError::UnroutableStream { stream_id: stream_id.to_owned() })
}

/// One Kafka message ready to produce, independent of any client library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Destination topic.
    pub topic: String,
    /// The stream id's UTF-8 bytes; it picks the partition.
    pub key: Vec<u8>,
    /// The envelope's JSON.
    pub value: Vec<u8>,
    /// `event-type`, `schema-version` and `event-id`, in that order.
    pub headers: Vec<(&'static str, String)>,
}

/// Builds the message of `event` for the topics `topics`.
///
/// Fails only for a stream id no topic takes, or (in theory) JSON that cannot be written.
pub fn encode(topics: &Topics, event: &EventEnvelope) -> Result<OutgoingRecord, CodecError> {
    let topic = topics.topic_for(&event.stream_id)?.to_owned();
    let value = serde_json::to_vec(event).map_err(CodecError::Encode)?;
    Ok(OutgoingRecord {
        topic,
        key: event.stream_id.as_bytes().to_vec(),
        value,
        headers: vec![
            (HEADER_EVENT_TYPE, event.event_type.clone()),
            (HEADER_SCHEMA_VERSION, event.schema_version.to_string()),
            (HEADER_EVENT_ID, event.event_id.hyphenated().to_string()),
        ],
    })
}

/// Reads a message value back into its envelope.
pub fn decode_value(value: &[u8]) -> Result<EventEnvelope, CodecError> {
    serde_json::from_slice(value).map_err(CodecError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::envelope;

    #[test]
    fn an_encoded_envelope_decodes_back_to_an_equal_envelope() {
        let event = envelope("account-acc-1", 7);
        let record = encode(&Topics::default(), &event).unwrap();
        assert_eq!(decode_value(&record.value).unwrap(), event);
    }

    #[test]
    fn an_encoded_record_is_keyed_by_stream_id_and_carries_type_schema_and_id_headers() {
        let event = envelope("account-acc-1", 3);
        let record = encode(&Topics::default(), &event).unwrap();
        assert_eq!(record.topic, "corebank.account-events.v1");
        assert_eq!(record.key, b"account-acc-1");
        assert_eq!(
            record.headers,
            vec![
                ("event-type", "MoneyDeposited".to_owned()),
                ("schema-version", "1".to_owned()),
                ("event-id", event.event_id.to_string()),
            ]
        );
        let json: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(json["streamId"], "account-acc-1");
        assert_eq!(json["eventType"], "MoneyDeposited");
    }

    #[test]
    fn account_streams_go_to_account_events_and_transfer_streams_to_transfer_events() {
        assert_eq!(topic_for("account-acc-1").unwrap(), "corebank.account-events.v1");
        assert_eq!(topic_for("transfer-t-9").unwrap(), "corebank.transfer-events.v1");
        let topics = Topics { account_events: "a".to_owned(), transfer_events: "t".to_owned() };
        assert_eq!(topics.topic_for("account-x").unwrap(), "a");
        assert_eq!(topics.topic_for("transfer-x").unwrap(), "t");
        assert_eq!(topics.topic_of(StreamKind::Transfer), "t");
        assert_eq!(default_topic(StreamKind::Account), DEFAULT_ACCOUNT_EVENTS_TOPIC);
    }

    #[test]
    fn a_stream_of_no_known_family_is_unroutable() {
        let err = topic_for("ledger-1").unwrap_err();
        assert!(matches!(err, CodecError::UnroutableStream { ref stream_id } if stream_id == "ledger-1"));
        assert_eq!(
            err.to_string(),
            "stream ledger-1 belongs to no topic (expected an account- or transfer- stream)"
        );
        let event = envelope("accounts", 1);
        assert!(matches!(encode(&Topics::default(), &event), Err(CodecError::UnroutableStream { .. })));
    }

    #[test]
    fn a_value_that_is_not_an_envelope_is_a_decode_error() {
        assert!(matches!(decode_value(b"{\"eventId\":1}"), Err(CodecError::Decode(_))));
        assert!(matches!(decode_value(b"not json"), Err(CodecError::Decode(_))));
    }

    #[test]
    fn topics_lists_a_shared_name_once() {
        assert_eq!(Topics::single("t").all(), vec!["t"]);
        assert_eq!(
            Topics::default().all(),
            vec!["corebank.account-events.v1", "corebank.transfer-events.v1"]
        );
    }
}
