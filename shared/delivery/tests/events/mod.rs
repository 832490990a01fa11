//! Event helpers of the Kafka tests.
#![cfg(test)]
#![allow(dead_code, unreachable_pub)]

use chrono::{TimeZone, Utc};
use corebank_domain::{EventEnvelope, EventMetadata};
use uuid::Uuid;

/// A `MoneyDeposited` envelope of `stream_id` at `version`, with a fresh event id.
pub fn envelope(stream_id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        stream_id: stream_id.to_owned(),
        version,
        event_type: "MoneyDeposited".to_owned(),
        schema_version: 1,
        occurred_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
        payload: serde_json::json!({"amountMinorUnits": version * 100, "currency": "USD"}),
        metadata: EventMetadata { transaction_id: Some(format!("tx-{version}")), ..EventMetadata::default() },
    }
}

/// `per_stream` versions of each of `streams`, interleaved (v1 of every stream, then v2, ...), as an
/// outbox batch would mix them.
pub fn interleaved(streams: &[String], per_stream: u64) -> Vec<EventEnvelope> {
    (1..=per_stream).flat_map(|version| streams.iter().map(move |s| envelope(s, version))).collect()
}
