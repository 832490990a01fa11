//! DynamoDB wiring: an SDK client from the environment and the DynamoDB adapters over it.
//!
//! The SDK configuration comes from `aws-config`'s default chain, read once per process: region
//! (`AWS_REGION`), credentials (environment, profile, the Lambda execution role) and, for a local
//! DynamoDB-API server, `AWS_ENDPOINT_URL`, which the SDK honours by itself.
//!
//! Table names (see `docs/configuration.md`):
//!
//! | variable | default |
//! | --- | --- |
//! | `TABLE_PREFIX` | `corebank-` |
//! | `EVENTS_TABLE` | `<prefix>events` |
//! | `IDEMPOTENCY_TABLE` | `<prefix>idempotency` |
//! | `TRANSACTIONS_TABLE` | `<prefix>transactions` |
//! | `SNAPSHOTS_TABLE` | `<prefix>snapshots` |
//! | `ACCOUNT_SUMMARY_TABLE` | `<prefix>account_summary` |
//! | `ACCOUNT_STATEMENT_TABLE` | `<prefix>account_statement` |
//! | `PROJECTION_CHECKPOINTS_TABLE` | `<prefix>projection_checkpoints` |
//! | `REBUILD_JOBS_TABLE` | `<prefix>rebuild_jobs` |
//! | `TRANSFER_STATUS_TABLE` | `<prefix>transfer_status` |

pub use aws_config::SdkConfig;
use corebank_store::Stores;
use corebank_store::dynamodb::{Client, DynamoTables};

use crate::WiringError;

/// The prefix of every table name unless `TABLE_PREFIX` says otherwise.
pub const DEFAULT_TABLE_PREFIX: &str = "corebank-";

/// The SDK configuration of this process (region, credentials, endpoint), from the environment, with
/// aws-config's default HTTPS client (this crate's `dynamodb` feature turns it on; the workspace's SDK
/// crates name no HTTP client, so every client built from this configuration uses that one).
pub async fn sdk_config_from_env() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A DynamoDB client over `sdk`.
pub fn client(sdk: &SdkConfig) -> Client {
    Client::new(sdk)
}

/// The table names read through `lookup` (a variable name to its value); blank values count as unset.
/// The per-table variables win over `TABLE_PREFIX`.
pub fn tables_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> DynamoTables {
    let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let prefix = get("TABLE_PREFIX").unwrap_or_else(|| DEFAULT_TABLE_PREFIX.to_owned());
    let mut tables = DynamoTables::with_prefix(&prefix);
    let overrides: [(&str, &mut String); 9] = [
        ("EVENTS_TABLE", &mut tables.events),
        ("IDEMPOTENCY_TABLE", &mut tables.idempotency),
        ("TRANSACTIONS_TABLE", &mut tables.transactions),
        ("SNAPSHOTS_TABLE", &mut tables.snapshots),
        ("ACCOUNT_SUMMARY_TABLE", &mut tables.account_summary),
        ("ACCOUNT_STATEMENT_TABLE", &mut tables.account_statement),
        ("PROJECTION_CHECKPOINTS_TABLE", &mut tables.projection_checkpoints),
        ("REBUILD_JOBS_TABLE", &mut tables.rebuild_jobs),
        ("TRANSFER_STATUS_TABLE", &mut tables.transfer_status),
    ];
    for (name, table) in overrides {
        if let Some(value) = get(name) {
            *table = value;
        }
    }
    tables
}

/// The table names of the process environment (see [`tables_from_lookup`]).
pub fn tables_from_env() -> DynamoTables {
    tables_from_lookup(|name| std::env::var(name).ok())
}

/// The DynamoDB stores named by the environment: one client, built once, shared by every adapter.
pub async fn stores_from_env() -> Result<Stores, WiringError> {
    let sdk = sdk_config_from_env().await;
    if sdk.region().is_none() {
        return Err(WiringError::Setup(
            "no AWS region: set AWS_REGION (Lambda sets it; a local DynamoDB-API server needs it too)"
                .to_owned(),
        ));
    }
    let tables = tables_from_env();
    tracing::info!(events_table = %tables.events, "DynamoDB stores");
    Ok(corebank_store::dynamodb::stores(client(&sdk), tables))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn tables_default_to_the_corebank_prefix() {
        assert_eq!(tables_from_lookup(lookup(&[])), DynamoTables::with_prefix("corebank-"));
    }

    #[test]
    fn a_prefix_names_every_table_and_a_per_table_variable_wins_over_it() {
        let tables = tables_from_lookup(lookup(&[
            ("TABLE_PREFIX", "prod_"),
            ("EVENTS_TABLE", "ledger-events"),
            ("REBUILD_JOBS_TABLE", "  "),
        ]));
        assert_eq!(tables.events, "ledger-events");
        assert_eq!(tables.idempotency, "prod_idempotency");
        assert_eq!(tables.rebuild_jobs, "prod_rebuild_jobs");
        let all = tables_from_lookup(lookup(&[
            ("IDEMPOTENCY_TABLE", "i"),
            ("TRANSACTIONS_TABLE", "t"),
            ("SNAPSHOTS_TABLE", "s"),
            ("ACCOUNT_SUMMARY_TABLE", "as"),
            ("ACCOUNT_STATEMENT_TABLE", "ast"),
            ("PROJECTION_CHECKPOINTS_TABLE", "pc"),
            ("TRANSFER_STATUS_TABLE", "ts"),
        ]));
        assert_eq!(
            [
                &all.idempotency,
                &all.transactions,
                &all.snapshots,
                &all.account_summary,
                &all.account_statement
            ],
            ["i", "t", "s", "as", "ast"]
        );
        assert_eq!((all.projection_checkpoints.as_str(), all.transfer_status.as_str()), ("pc", "ts"));
    }
}
