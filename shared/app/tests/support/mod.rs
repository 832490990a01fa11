//! What the `corebank-app` integration tests share: a command context and the currency they use.

use corebank_app::command::{CommandContext, KeyScope, Operation};
use corebank_domain::Currency;

/// The context of a command sent by the local operator under Idempotency-Key `key`.
pub(crate) fn ctx(key: &str, operation: Operation) -> CommandContext {
    CommandContext {
        idempotency_key: key.to_owned(),
        request_hash: format!("hash-{key}"),
        operation,
        request_id: format!("req-{key}"),
        principal: "local-operator".to_owned(),
        requested_actor: None,
        key_scope: KeyScope::Principal,
        trace_id: None,
    }
}

/// US dollars.
pub(crate) fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}
