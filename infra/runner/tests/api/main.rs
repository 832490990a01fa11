//! End-to-end tests of the HTTP contract (docs/http-api.md): a real runner on an ephemeral port,
//! spoken to over HTTP/1.1 by a real client. One binary, one module per concern.

// Test code: helpers outside `#[test]` functions may panic (clippy.toml allows it in tests).
#![cfg(test)]

mod admin;
mod auth;
mod concurrency;
mod errors;
mod helpers;
mod idempotency;
mod lifecycle;
mod malformed;
mod metrics;
mod money;
mod reads;
mod transactions;
mod transfers;
