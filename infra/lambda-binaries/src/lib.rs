//! Runs the deployed function binaries as Lambda runs them: a process per function that polls a
//! Runtime API for events. [`runtime_api`] is that API, served locally; [`function`] starts a binary
//! against it and invokes it. The end-to-end test (`tests/lambda_binaries.rs`) drives the command,
//! outbox-publisher and projector binaries through them with the payloads API Gateway, DynamoDB
//! Streams and MSK deliver.
#![warn(missing_docs)]

pub mod function;
pub mod runtime_api;

pub use function::Function;
pub use runtime_api::{FunctionError, InvokeError, Outcome, RuntimeApi};
