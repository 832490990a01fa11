//! What the write side and health ask of whatever delivers events to the read side. The deliverers
//! themselves (the in-process pipeline, the Kafka consumers, the outbox relay) live in
//! `corebank-delivery`; the API only sees these two traits.

use async_trait::async_trait;

/// What health reports about a delivery pipeline.
pub trait PipelineHealth: Send + Sync {
    /// Events committed but not yet projected.
    fn lag(&self) -> u64;
    /// The last failure, if the pipeline is currently failing.
    fn last_error(&self) -> Option<String>;
}

/// Lets a command's response wait until the read side has seen it, where a host can offer that.
#[async_trait]
pub trait ProjectionBarrier: Send + Sync {
    /// Waits (bounded) until everything committed so far is projected.
    async fn settle(&self);
}
