//! The event envelope: what the event store keeps and what travels on the bus.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::stream::{StreamId, StreamIdError};

/// Who and what caused an event. Every field is optional because a system-issued command (a replay, a
/// process manager step) may lack some of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// Correlates every event of one business flow (the request id for a plain HTTP command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message (request or event) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The client's Idempotency-Key of the command that wrote the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The business transaction id of a money movement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// Who caused the event: the authenticated principal's id (for a transfer's legs, the principal
    /// that started the transfer). Events written before principals were recorded hold the actor the
    /// client named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The `actor` a client named in the request body: recorded, never believed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_actor: Option<String>,
    /// The X-Ray trace id of the invocation that wrote the event (given by the Lambda runtime, never
    /// by the caller), so a request's trace can be followed through the events it caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One immutable, stored event. Its JSON form (camelCase) is the message value on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    /// Unique id of this event.
    pub event_id: Uuid,
    /// `account-{id}` or `transfer-{id}`; [`EventEnvelope::stream`] parses it.
    pub stream_id: String,
    /// 1-based, gapless position inside the stream.
    pub version: u64,
    /// The event's type name, e.g. `MoneyDeposited`.
    pub event_type: String,
    /// The shape of `payload`; a new shape gets a new number and an upcaster.
    pub schema_version: u32,
    /// When the command that wrote the event was accepted.
    pub occurred_at: DateTime<Utc>,
    /// The event's data.
    pub payload: serde_json::Value,
    /// Causation, correlation and command data.
    pub metadata: EventMetadata,
}

impl EventEnvelope {
    /// The stream id parsed: which aggregate, and its id.
    pub fn stream(&self) -> Result<StreamId, StreamIdError> {
        StreamId::parse(&self.stream_id)
    }
}
