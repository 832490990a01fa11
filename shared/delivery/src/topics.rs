//! Which Kafka topics carry the event families and which consumer groups read them, from the
//! environment.
//!
//! | variable | default |
//! | --- | --- |
//! | `KAFKA_ACCOUNT_EVENTS_TOPIC` | `corebank.account-events.v1` |
//! | `KAFKA_TRANSFER_EVENTS_TOPIC` | `corebank.transfer-events.v1` |
//! | `PROJECTOR_GROUP_ID` | [`PROJECTOR_GROUP_ID`] |
//! | `SAGA_GROUP_ID` | [`SAGA_GROUP_ID`] |
//!
//! Blank values count as unset. Publishers and consumers of one deployment must read the same values.
//! The group names are the ones the template gives the MSK event source mappings of
//! `projector-accounts` and `transfer-saga`, so a local consumer and a deployed one are told apart
//! only by the cluster.

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

/// The consumer group of the projection (`projector-accounts`' mapping on the account topic).
pub const PROJECTOR_GROUP_ID: &str = "corebank-projector-accounts";

/// The consumer group of the transfer saga (`transfer-saga`'s mapping on the transfer topic).
pub const SAGA_GROUP_ID: &str = "corebank-transfer-saga";

/// The consumer groups of the local consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroups {
    /// The projection's group (`PROJECTOR_GROUP_ID`).
    pub projector: String,
    /// The saga's group (`SAGA_GROUP_ID`).
    pub saga: String,
}

/// The consumer groups named through `lookup`, defaults for the rest.
pub fn groups_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ConsumerGroups {
    let get = |name: &str, default: &str| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    ConsumerGroups {
        projector: get("PROJECTOR_GROUP_ID", PROJECTOR_GROUP_ID),
        saga: get("SAGA_GROUP_ID", SAGA_GROUP_ID),
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

    #[test]
    fn groups_default_to_the_names_of_the_templates_mappings_and_the_environment_overrides_each() {
        let defaults = groups_from_lookup(|_| None);
        assert_eq!(defaults.projector, "corebank-projector-accounts");
        assert_eq!(defaults.saga, "corebank-transfer-saga");
        let groups = groups_from_lookup(|name| (name == "SAGA_GROUP_ID").then(|| "s".to_owned()));
        assert_eq!((groups.projector.as_str(), groups.saga.as_str()), ("corebank-projector-accounts", "s"));
    }
}
