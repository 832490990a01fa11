//! Dev-only checks that the deployment documents agree with the code: `template.yaml` (AWS SAM) with
//! the function crates, the route table, the configs and `infra/dynamodb/tables/*.json`, and
//! `docs/api/openapi.yaml` with the router and the error mapping. The checks are the tests of this crate;
//! this library holds what they share: reading the documents and the facts the code declares.
//!
//! # Function metadata
//! Each crate under `functions/` declares in its `Cargo.toml`:
//!
//! ```toml
//! [package.metadata.corebank]
//! routes = ["POST /accounts/{id}/deposits"]  # "METHOD /resource" of corebank_api::router::ROUTES
//! configs = ["app", "store"]                 # ids of CONFIGS: every variable they read is set on it
//! withheld = ["ADMIN_TOKEN"]                 # variables those configs read that it is deliberately not given
//! tables = { events = "append" }             # DynamoDB tables and access levels (ACCESS_LEVELS)
//! ```
//!
//! A new crate without this section, a config id or access level this crate does not know, or a template
//! that disagrees with it fails the checks with a message that says what to change.
#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reads a file of the workspace.
pub fn read(relative: &str) -> Result<String, String> {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a CloudFormation or OpenAPI YAML document into JSON values, turning CloudFormation's short
/// tags into their long forms (`!Ref X` into `{"Ref": "X"}`, `!GetAtt A.B` into
/// `{"Fn::GetAtt": ["A", "B"]}`, `!Sub s` into `{"Fn::Sub": s}`, ...), as CloudFormation itself does.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    to_json(yaml)
}

/// Reads and parses a YAML document of the workspace (see [`parse_yaml`]).
pub fn load_yaml(relative: &str) -> Result<Value, String> {
    parse_yaml(&read(relative)?).map_err(|e| format!("{relative}: {e}"))
}

fn to_json(yaml: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or_default())
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let value = to_json(tagged.value)?;
            let (key, value) = match tag {
                "Ref" => ("Ref".to_owned(), value),
                "Condition" => ("Condition".to_owned(), value),
                "GetAtt" => {
                    let value = match value {
                        Value::String(s) => match s.split_once('.') {
                            Some((resource, attribute)) => Value::from(vec![resource, attribute]),
                            None => return Err(format!("!GetAtt {s} has no attribute")),
                        },
                        other => other,
                    };
                    ("Fn::GetAtt".to_owned(), value)
                }
                other => (format!("Fn::{other}"), value),
            };
            let mut out = Map::new();
            out.insert(key, value);
            Value::Object(out)
        }
    })
}

/// What a function crate declares about its deployment (see the crate docs).
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// `"METHOD /resource/path"` of every route the function serves.
    pub routes: Vec<String>,
    /// Ids of the configs it reads at start-up ([`CONFIGS`]).
    pub configs: Vec<String>,
    /// Variables those configs read that the function is deliberately not given.
    pub withheld: Vec<String>,
    /// DynamoDB table name (as in `infra/dynamodb/tables/`) to access level ([`ACCESS_LEVELS`]).
    pub tables: BTreeMap<String, String>,
}

/// One crate under `functions/`.
#[derive(Debug, Clone)]
pub struct FunctionCrate {
    /// The crate (and folder) name.
    pub name: String,
    /// Its direct dependencies.
    pub dependencies: BTreeSet<String>,
    /// Its `[package.metadata.corebank]`.
    pub metadata: Metadata,
}

impl FunctionCrate {
    /// Whether the crate links librdkafka (through the messaging or pipeline crates, or directly),
    /// which does not build for arm64 under cargo lambda: such functions run on x86_64.
    pub fn links_rdkafka(&self) -> bool {
        ["corebank-messaging", "corebank-delivery", "rdkafka"].iter().any(|d| self.dependencies.contains(*d))
    }

    /// The architecture its template resource must name.
    pub fn architecture(&self) -> &'static str {
        if self.links_rdkafka() { "x86_64" } else { "arm64" }
    }
}

fn strings(table: &toml::Table, key: &str, crate_name: &str) -> Result<Vec<String>, String> {
    match table.get(key) {
        None => Err(format!("functions/{crate_name}: [package.metadata.corebank] has no `{key}`")),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("functions/{crate_name}: `{key}` holds a non-string"))
            })
            .collect(),
        Some(_) => Err(format!("functions/{crate_name}: `{key}` is not an array")),
    }
}

/// Every crate under `functions/`, sorted by name, with its metadata.
pub fn function_crates() -> Result<Vec<FunctionCrate>, String> {
    let dir = workspace_root().join("functions");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let manifest: toml::Table = read(&format!("functions/{name}/Cargo.toml"))?
                .parse()
                .map_err(|e| format!("functions/{name}/Cargo.toml: {e}"))?;
            let dependencies = manifest
                .get("dependencies")
                .and_then(toml::Value::as_table)
                .map(|deps| deps.keys().cloned().collect())
                .unwrap_or_default();
            let meta = manifest
                .get("package")
                .and_then(|p| p.get("metadata"))
                .and_then(|m| m.get("corebank"))
                .and_then(toml::Value::as_table)
                .ok_or_else(|| {
                    format!(
                        "functions/{name}/Cargo.toml has no [package.metadata.corebank] (routes, configs, \
                         withheld, tables): see docs/deploy.md, \"Function metadata\""
                    )
                })?;
            let tables = match meta.get("tables") {
                Some(toml::Value::Table(t)) => t
                    .iter()
                    .map(|(k, v)| {
                        v.as_str()
                            .map(|level| (k.clone(), level.to_owned()))
                            .ok_or_else(|| format!("functions/{name}: tables.{k} is not a string"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(format!(
                        "functions/{name}: [package.metadata.corebank] has no `tables` table"
                    ));
                }
            };
            let metadata = Metadata {
                routes: strings(meta, "routes", &name)?,
                configs: strings(meta, "configs", &name)?,
                withheld: strings(meta, "withheld", &name)?,
                tables,
            };
            Ok(FunctionCrate { name, dependencies, metadata })
        })
        .collect()
}

/// A config: the source files that read its variables and, where the code declares them, the list.
#[derive(Debug, Clone)]
pub struct Config {
    /// The id functions name in `configs`.
    pub id: &'static str,
    /// Source files (from the workspace root) whose non-test code reads the variables.
    pub sources: &'static [&'static str],
    /// The `ENV_VARS`-style list the code declares, if it declares one.
    pub declared: Option<Vec<&'static str>>,
    /// Upper-case string literals in those sources that are not variable names.
    pub not_variables: &'static [&'static str],
}

/// Every config a function may name. `store` is the wiring's `stores_from_env` (STORE_KIND and, per
/// kind, the DynamoDB or Postgres variables); `dynamodb` and `postgres` are those parts alone, for a
/// function bound to one kind; `telemetry` is `corebank_wiring::telemetry::init`, which every function
/// calls.
pub fn configs() -> Vec<Config> {
    let store: Vec<&'static str> = corebank_wiring::ENV_VARS
        .iter()
        .chain(corebank_wiring::DYNAMODB_ENV_VARS)
        .chain(corebank_wiring::POSTGRES_ENV_VARS)
        .copied()
        .collect();
    vec![
        Config {
            id: "app",
            sources: &["shared/app/src/config.rs"],
            declared: Some(corebank_app::AppConfig::ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "store",
            sources: &[
                "shared/wiring/src/lib.rs",
                "shared/wiring/src/dynamodb.rs",
                "shared/wiring/src/postgres.rs",
            ],
            declared: Some(store),
            not_variables: &[],
        },
        Config {
            id: "dynamodb",
            sources: &["shared/wiring/src/dynamodb.rs"],
            declared: Some(corebank_wiring::DYNAMODB_ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "postgres",
            sources: &["shared/wiring/src/postgres.rs"],
            declared: Some(corebank_wiring::POSTGRES_ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "sqlite",
            sources: &["shared/wiring/src/sqlite.rs"],
            declared: Some(corebank_wiring::SQLITE_ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "reconcile",
            sources: &["shared/app/src/reconcile.rs"],
            declared: Some(corebank_app::reconcile::ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "auth",
            sources: &["shared/auth/src/settings.rs"],
            declared: Some(corebank_auth::settings::ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "kafka",
            sources: &["shared/messaging/src/config.rs"],
            declared: Some(corebank_messaging::KafkaConfig::ENV_VARS.to_vec()),
            not_variables: &["AWS_MSK_IAM", "OAUTHBEARER"],
        },
        Config {
            // `AWS_LAMBDA_FUNCTION_NAME` is set by Lambda itself: like `AWS_REGION` of `postgres`, a
            // function with this config is not expected to have it in the template (LAMBDA_RESERVED).
            id: "telemetry",
            sources: &["shared/emf/src/lib.rs"],
            declared: Some(corebank_wiring::telemetry::ENV_VARS.to_vec()),
            not_variables: &[],
        },
        Config {
            id: "topics",
            sources: &["shared/delivery/src/topics.rs"],
            declared: None,
            not_variables: &[],
        },
        Config {
            id: "relay",
            sources: &["shared/delivery/src/handlers/relay.rs"],
            declared: None,
            not_variables: &[],
        },
    ]
}

/// Variables the Lambda runtime sets itself; a template may not set them.
/// <https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>
pub const LAMBDA_RESERVED: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// The text of a source file without its test module and without `ENV_VARS`-style list constants
/// (which repeat the names rather than read them).
pub fn non_test_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = String::with_capacity(code.len());
    let mut in_list = false;
    for line in code.lines() {
        let trimmed = line.trim_start();
        if !in_list && trimmed.starts_with("pub const ") && trimmed.contains("ENV_VARS") {
            in_list = !trimmed.ends_with("];");
            continue;
        }
        if in_list {
            in_list = !trimmed.ends_with("];");
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The upper-case string literals (`"NAME_2"`, at least four characters) of `code`: the names of the
/// variables a config source reads, since each is read by its literal name.
pub fn env_literals(code: &str) -> BTreeSet<String> {
    // Every other piece between double quotes is a string literal's text (the sources scanned hold no
    // escaped quotes around variable names).
    code.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() >= 4
                && s.starts_with(|c: char| c.is_ascii_uppercase())
                && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// The variables a config's sources read, found in their code.
pub fn scanned_variables(config: &Config) -> Result<BTreeSet<String>, String> {
    let mut vars = BTreeSet::new();
    for source in config.sources {
        vars.extend(env_literals(&non_test_code(&read(source)?)));
    }
    for not_variable in config.not_variables {
        vars.remove(*not_variable);
    }
    Ok(vars)
}

/// The variables of a config, as its code declares them or else as its sources read them.
pub fn config_variables(config: &Config) -> Result<BTreeSet<String>, String> {
    match &config.declared {
        Some(list) => Ok(list.iter().map(|v| (*v).to_owned()).collect()),
        None => scanned_variables(config),
    }
}

/// Access levels a function may declare on a table, and the DynamoDB actions each grants. The levels
/// are cumulative in what they allow, so a grant is easy to read: `read` for queries, `append` for
/// stores whose items are only ever added (events, transactions, snapshots, rebuild jobs), `write` for
/// items that are also deleted (idempotency claims, read tables), `stream` for the table stream,
/// `scan`, `scan-append` and `scan-write` for tables a function walks whole (and, for the latter two,
/// also writes in: `rebuild_jobs`, which holds the records the MSK consumers park, and
/// `transfer_status`, whose rows the reconciler repairs).
pub const ACCESS_LEVELS: &[(&str, &[&str])] = &[
    ("read", &["dynamodb:GetItem", "dynamodb:Query"]),
    ("append", &["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"]),
    (
        "write",
        &[
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:BatchWriteItem",
        ],
    ),
    (
        "scan",
        // A read level for tables a function walks whole (health's count of parked records).
        &["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"],
    ),
    (
        "scan-append",
        // `append` on a table a function also walks whole: the reconciler lists pending rows of
        // transfer_status and projects the rows it repairs (conditional puts).
        &[
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:PutItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:Scan",
        ],
    ),
    (
        "scan-write",
        &[
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:Scan",
        ],
    ),
    (
        "stream",
        &[
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        ],
    ),
];

/// The actions of an access level.
pub fn level_actions(level: &str) -> Option<&'static [&'static str]> {
    ACCESS_LEVELS.iter().find(|(l, _)| *l == level).map(|(_, actions)| *actions)
}

/// The table definitions of `infra/dynamodb/tables/*.json`, by table name.
pub fn table_definitions() -> Result<BTreeMap<String, Value>, String> {
    let dir = workspace_root().join("infra/dynamodb/tables");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let def: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let name =
            def["TableName"].as_str().ok_or_else(|| format!("{}: no TableName", path.display()))?.to_owned();
        out.insert(name, def);
    }
    Ok(out)
}

/// `!If [cond, a, b]` gives both branches (less `AWS::NoValue`); any other value is itself.
pub fn branches(value: &Value) -> Vec<&Value> {
    match value.get("Fn::If").and_then(Value::as_array) {
        Some(parts) if parts.len() == 3 => parts[1..]
            .iter()
            .flat_map(branches)
            .filter(|v| v.get("Ref") != Some(&Value::from("AWS::NoValue")))
            .collect(),
        _ => vec![value],
    }
}

/// `value` as a list: a single value becomes a one-element list.
pub fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The logical id of the resource a `Ref`, `Fn::GetAtt` or `Fn::Sub` of `${X.Arn}...` names, with the
/// attribute and the rest of the string.
pub fn referenced_resource(value: &Value) -> Option<(String, String, String)> {
    if let Some(name) = value.get("Ref").and_then(Value::as_str) {
        return Some((name.to_owned(), String::new(), String::new()));
    }
    if let Some(parts) = value.get("Fn::GetAtt").and_then(Value::as_array) {
        let resource = parts.first()?.as_str()?;
        let attribute = parts.get(1)?.as_str()?;
        return Some((resource.to_owned(), attribute.to_owned(), String::new()));
    }
    let text = value.get("Fn::Sub").and_then(Value::as_str)?;
    let inner = text.strip_prefix("${")?;
    let (reference, rest) = inner.split_once('}')?;
    let (resource, attribute) = reference.split_once('.').unwrap_or((reference, ""));
    Some((resource.to_owned(), attribute.to_owned(), rest.to_owned()))
}

/// Whether `value` is an intrinsic function (`{"Ref": ..}`, `{"Condition": ..}` or `{"Fn::X": ..}`,
/// alone in its map), which SAM's Globals merge treats as one opaque value.
pub fn is_intrinsic(value: &Value) -> bool {
    value.as_object().is_some_and(|map| {
        map.len() == 1 && map.keys().all(|k| k == "Ref" || k == "Condition" || k.starts_with("Fn::"))
    })
}

/// A value of `Globals` merged into a resource's value of the same property, by SAM's rules
/// (<https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-specification-template-anatomy-globals.html>):
/// maps merge key by key, recursively, and the resource's key wins; lists are the global entries
/// followed by the resource's (so a list property cannot be overridden, only extended); anything else,
/// an intrinsic function included, or two values of different kinds, is the resource's value.
pub fn sam_merge(global: &Value, local: &Value) -> Value {
    match (global, local) {
        (Value::Object(g), Value::Object(l)) if !is_intrinsic(global) && !is_intrinsic(local) => {
            let mut out = g.clone();
            for (key, value) in l {
                let merged = match g.get(key) {
                    Some(global_value) => sam_merge(global_value, value),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(g), Value::Array(l)) => Value::Array(g.iter().chain(l).cloned().collect()),
        _ => local.clone(),
    }
}

/// `value` without the map entries whose value is `Ref: AWS::NoValue`, at any depth: CloudFormation
/// drops such a property, so a function can remove a variable that `Globals` gives every function.
pub fn without_no_value(value: &Value) -> Value {
    let no_value =
        |v: &Value| v.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue") && is_intrinsic(v);
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !no_value(v)).map(|(k, v)| (k.clone(), without_no_value(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_no_value).collect()),
        other => other.clone(),
    }
}

/// The template as CloudFormation receives it from SAM, as far as the checks look: every
/// `AWS::Serverless::Function`'s properties are `Globals.Function` merged into its own ([`sam_merge`]),
/// less the properties it removes with `AWS::NoValue` ([`without_no_value`]); the `Globals` section
/// itself is dropped. Every check reads this view, so a value moved into `Globals` is still checked on
/// each function it reaches.
pub fn effective_template(template: &Value) -> Value {
    let mut out = template.clone();
    let global = template.get("Globals").and_then(|g| g.get("Function")).cloned().unwrap_or(Value::Null);
    if let Some(map) = out.as_object_mut() {
        map.remove("Globals");
    }
    let Some(resources) = out.get_mut("Resources").and_then(Value::as_object_mut) else { return out };
    for resource in resources.values_mut() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let local = resource.get("Properties").cloned().unwrap_or_else(|| Value::Object(Map::new()));
        let merged = if global.is_null() { local } else { sam_merge(&global, &local) };
        resource["Properties"] = without_no_value(&merged);
    }
    out
}
