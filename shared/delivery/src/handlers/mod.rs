//! The handlers that AWS triggers call, each with its trigger's exact payload type.
//!
//! | module | function | trigger |
//! | --- | --- | --- |
//! | `outbox` (feature `dynamodb`) | `outbox-publisher` | DynamoDB Streams on the `events` table |
//! | `relay` (feature `postgres`) | `outbox-relay` | EventBridge schedule |
//! | [`projection`] | `projector` | MSK, the account and transfer topics |
//! | [`saga`] | `transfer-saga` | MSK, the transfer topic |
//!
//! The two MSK handlers share [`batch`]: the decoding of a batch and the one error a batch fails with.

pub mod batch;
#[cfg(feature = "dynamodb")]
pub mod outbox;
pub mod projection;
#[cfg(feature = "postgres")]
pub mod relay;
pub mod saga;
