//! Which Kafka topics carry the event families, from the environment.
//!
//! | variable | default |
//! | --- | --- |
//! | `KAFKA_ACCOUNT_EVENTS_TOPIC` | `corebank.account-events.v1` |
//! | `KAFKA_TRANSFER_EVENTS_TOPIC` | `corebank.transfer-events.v1` |
//!
//! Blank values count as unset. Publishers and consumers of one deployment must read the same values.

use corebank_messaging::Topics;

/// The topics named through `lookup` (a variable name to its value), defaults for the rest.
pub fn topics_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Topics {
    let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let defaults = Topics::default();
    Topics {
        account_events: get("KAFKA_ACCOUNT_EVENTS_TOPIC").unwrap_or(defaults.account_events),
        transfer_events: get("KAFKA_TRANSFER_EVENTS_TOPIC").unwrap_or(defaults.transfer_events),
    }
}

/// The topics named by the process environment (see [`topics_from_lookup`]).
pub fn topics_from_env() -> Topics {
    topics_from_lookup(|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_default_to_the_production_names_and_the_environment_overrides_each() {
        assert_eq!(topics_from_lookup(|_| None), Topics::default());
        let topics = topics_from_lookup(|name| match name {
            "KAFKA_ACCOUNT_EVENTS_TOPIC" => Some("test.accounts".to_owned()),
            "KAFKA_TRANSFER_EVENTS_TOPIC" => Some(" ".to_owned()),
            _ => None,
        });
        assert_eq!(topics.account_events, "test.accounts");
        assert_eq!(topics.transfer_events, "corebank.transfer-events.v1");
    }
}
