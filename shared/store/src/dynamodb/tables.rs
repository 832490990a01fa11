//! The table definitions, kept once as JSON in `infra/dynamodb/tables/*.json`, and `create_tables`.
//!
//! Each file is a `CreateTable` input whose `TableName` is the suffix after a deployment's prefix. The one
//! member `CreateTable` does not take, `TimeToLiveSpecification`, is the `UpdateTimeToLive` input applied
//! right after the table exists. Scripts and the SAM template read the same files.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification,
};
use serde::Deserialize;

use super::{DynamoTables, sdk_error};
use crate::StoreError;

/// `(suffix, definition)` of every table, in the order they are created.
pub(crate) const DEFINITIONS: [(&str, &str); 9] = [
    ("events", include_str!("../../../../infra/dynamodb/tables/events.json")),
    ("idempotency", include_str!("../../../../infra/dynamodb/tables/idempotency.json")),
    ("transactions", include_str!("../../../../infra/dynamodb/tables/transactions.json")),
    ("snapshots", include_str!("../../../../infra/dynamodb/tables/snapshots.json")),
    ("account_summary", include_str!("../../../../infra/dynamodb/tables/account_summary.json")),
    ("account_statement", include_str!("../../../../infra/dynamodb/tables/account_statement.json")),
    ("projection_checkpoints", include_str!("../../../../infra/dynamodb/tables/projection_checkpoints.json")),
    ("rebuild_jobs", include_str!("../../../../infra/dynamodb/tables/rebuild_jobs.json")),
    ("transfer_status", include_str!("../../../../infra/dynamodb/tables/transfer_status.json")),
];

/// How long `create_tables` waits for one table to become `ACTIVE`, polling once a second.
const ACTIVE_WAIT_SECS_MAX: u32 = 120;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct TableDefinition {
    pub(crate) table_name: String,
    attribute_definitions: Vec<AttributeDef>,
    key_schema: Vec<KeyElement>,
    #[serde(default)]
    global_secondary_indexes: Vec<IndexDef>,
    billing_mode: String,
    #[serde(default)]
    stream_specification: Option<StreamDef>,
    #[serde(default)]
    pub(crate) time_to_live_specification: Option<TtlDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AttributeDef {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct KeyElement {
    attribute_name: String,
    key_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct IndexDef {
    index_name: String,
    key_schema: Vec<KeyElement>,
    projection: ProjectionDef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ProjectionDef {
    projection_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct StreamDef {
    stream_enabled: bool,
    stream_view_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct TtlDef {
    pub(crate) attribute_name: String,
    enabled: bool,
}

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("table definition: {what}"))
}

pub(crate) fn parse(json: &str) -> Result<TableDefinition, StoreError> {
    serde_json::from_str(json).map_err(bad)
}

fn enum_value<T>(
    value: &str,
    parse: fn(&str) -> Result<T, aws_sdk_dynamodb::error::UnknownVariantError>,
) -> Result<T, StoreError> {
    parse(value).map_err(|_| bad(format!("unknown value {value:?}")))
}

fn key_schema(elements: &[KeyElement]) -> Result<Vec<KeySchemaElement>, StoreError> {
    elements
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(enum_value(&k.key_type, KeyType::try_parse)?)
                .build()
                .map_err(bad)
        })
        .collect()
}

async fn create_one(client: &Client, name: &str, def: &TableDefinition) -> Result<(), StoreError> {
    let mut request = client
        .create_table()
        .table_name(name)
        .set_key_schema(Some(key_schema(&def.key_schema)?))
        .billing_mode(enum_value(&def.billing_mode, BillingMode::try_parse)?);
    for a in &def.attribute_definitions {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(enum_value(&a.attribute_type, ScalarAttributeType::try_parse)?)
                .build()
                .map_err(bad)?,
        );
    }
    for index in &def.global_secondary_indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(
                    Projection::builder()
                        .projection_type(enum_value(
                            &index.projection.projection_type,
                            ProjectionType::try_parse,
                        )?)
                        .build(),
                )
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(stream) = &def.stream_specification {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(stream.stream_enabled)
                .stream_view_type(enum_value(&stream.stream_view_type, StreamViewType::try_parse)?)
                .build()
                .map_err(bad)?,
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        // An existing table is what was asked for: creating is idempotent.
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
        Err(e) => Err(sdk_error("CreateTable", e)),
    }
}

async fn wait_active(client: &Client, name: &str) -> Result<(), StoreError> {
    for _ in 0..ACTIVE_WAIT_SECS_MAX {
        let described = client.describe_table().table_name(name).send().await;
        let status = described.map_err(|e| sdk_error("DescribeTable", e))?.table.and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(StoreError::Unavailable(format!("table {name} not ACTIVE after {ACTIVE_WAIT_SECS_MAX} s")))
}

async fn enable_ttl(client: &Client, name: &str, ttl: &TtlDef) -> Result<(), StoreError> {
    let spec = TimeToLiveSpecification::builder()
        .attribute_name(&ttl.attribute_name)
        .enabled(ttl.enabled)
        .build()
        .map_err(bad)?;
    match client.update_time_to_live().table_name(name).time_to_live_specification(spec).send().await {
        Ok(_) => Ok(()),
        // DynamoDB refuses to set the TTL it already has.
        Err(e)
            if e.code() == Some("ValidationException")
                && e.message().is_some_and(|m| m.contains("already")) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error("UpdateTimeToLive", e)),
    }
}

/// Creates every table of the store under `prefix` (`<prefix>events`, `<prefix>idempotency`, ...) from
/// the JSON definitions, waits until each is `ACTIVE`, enables TTL where a definition asks for it, and
/// returns their names. Tables that exist already are left as they are, so a second call is harmless.
pub async fn create_tables(client: &Client, prefix: &str) -> Result<DynamoTables, StoreError> {
    let mut defs = Vec::with_capacity(DEFINITIONS.len());
    for (suffix, json) in DEFINITIONS {
        let def = parse(json)?;
        if def.table_name != suffix {
            return Err(bad(format!("{suffix}.json names the table {:?}", def.table_name)));
        }
        defs.push(def);
    }
    for def in &defs {
        create_one(client, &format!("{prefix}{}", def.table_name), def).await?;
    }
    for def in &defs {
        let name = format!("{prefix}{}", def.table_name);
        wait_active(client, &name).await?;
        if let Some(ttl) = &def.time_to_live_specification {
            enable_ttl(client, &name, ttl).await?;
        }
    }
    Ok(DynamoTables::with_prefix(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_parses_and_names_its_table_by_its_file() {
        let tables = DynamoTables::with_prefix("p_");
        let names = [
            &tables.events,
            &tables.idempotency,
            &tables.transactions,
            &tables.snapshots,
            &tables.account_summary,
            &tables.account_statement,
            &tables.projection_checkpoints,
            &tables.rebuild_jobs,
            &tables.transfer_status,
        ];
        for ((suffix, json), name) in DEFINITIONS.iter().zip(names) {
            let def = parse(json).unwrap();
            assert_eq!(&def.table_name, suffix);
            assert_eq!(name, &format!("p_{suffix}"));
            assert_eq!(def.billing_mode, "PAY_PER_REQUEST");
            key_schema(&def.key_schema).unwrap();
        }
    }

    #[test]
    fn only_events_stream_and_only_idempotency_expires() {
        for (suffix, json) in DEFINITIONS {
            let def = parse(json).unwrap();
            let stream =
                def.stream_specification.as_ref().map(|s| (s.stream_enabled, s.stream_view_type.as_str()));
            let ttl = def.time_to_live_specification.as_ref().map(|t| (t.attribute_name.as_str(), t.enabled));
            match suffix {
                "events" => {
                    assert_eq!(stream, Some((true, "NEW_IMAGE")));
                    assert_eq!(def.global_secondary_indexes[0].index_name, super::super::STREAMS_INDEX);
                }
                "idempotency" => assert_eq!(ttl, Some(("expires_at_epoch", true))),
                _ => {
                    assert_eq!(stream, None, "{suffix}");
                    assert_eq!(ttl, None, "{suffix}");
                }
            }
        }
    }
}
