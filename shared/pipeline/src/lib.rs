//! Event-source handlers: what sits between the event store and the read side.
//!
//! Each handler takes the exact `aws_lambda_events` payload its AWS trigger delivers, so the Lambda
//! functions and the local runner (which emulates the event source mappings) run the same code.
#![warn(missing_docs)]

#[cfg(feature = "postgres")]
pub mod relay;

pub mod fanout;
#[cfg(feature = "dynamodb")]
pub mod outbox;
pub mod projection;
pub mod saga;
#[cfg(feature = "dynamodb")]
pub mod stream_poller;
pub mod topics;
