//! The consumer groups of the MSK event source mappings, which the local consumers reuse, so a local
//! consumer and a deployed one are told apart only by the cluster.
//!
//! | variable (local hosts only) | default |
//! | --- | --- |
//! | `PROJECTOR_GROUP_ID` | [`PROJECTOR_GROUP_ID`] |
//! | `SAGA_GROUP_ID` | [`SAGA_GROUP_ID`] |
//!
//! Lambda functions read neither: in AWS the template names each mapping's group.

/// The consumer group of the projection (`projector`' mapping on the account topic).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_default_to_the_names_of_the_templates_mappings_and_the_environment_overrides_each() {
        let defaults = groups_from_lookup(|_| None);
        assert_eq!(defaults.projector, "corebank-projector-accounts");
        assert_eq!(defaults.saga, "corebank-transfer-saga");
        let groups = groups_from_lookup(|name| (name == "SAGA_GROUP_ID").then(|| "s".to_owned()));
        assert_eq!((groups.projector.as_str(), groups.saga.as_str()), ("corebank-projector-accounts", "s"));
    }
}
