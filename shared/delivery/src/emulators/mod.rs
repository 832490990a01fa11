//! Local stand-ins for the AWS event source mappings, for hosts that are not Lambda (the local runner,
//! tests, benchmarks). Each keeps its mapping's contract (order, at-least-once, what a failure does),
//! so a handler cannot tell which host called it.
//!
//! | module | stands in for |
//! | --- | --- |
//! | [`embedded`] | the whole asynchronous path, in process: the store's feed to the projector and the saga |
//! | `stream_poller` (feature `dynamodb`) | the DynamoDB Streams mapping of `outbox-publisher` |
//! | [`kafka_consumer`] | the MSK mappings of `projector` and `transfer-saga` |

pub mod embedded;
pub mod kafka_consumer;
#[cfg(feature = "dynamodb")]
pub mod stream_poller;
