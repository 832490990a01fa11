//! `template.yaml` against the code: one function resource per crate, the routes of the router, the
//! variables of each function's configs, its DynamoDB grants, the table definitions, the pipeline's
//! event source mappings and the alarms. Run: `cargo test -p corebank-template-check`.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};

use corebank_template_check::{
    FunctionCrate, LAMBDA_RESERVED, as_list, branches, config_variables, configs, effective_template,
    function_crates, level_actions, load_yaml, non_test_code, parse_yaml, read, referenced_resource,
    scanned_variables, table_definitions,
};
use serde_json::Value;

/// template.yaml as the stack receives it: each function with `Globals.Function` merged in.
fn template() -> Value {
    effective_template(&load_yaml("template.yaml").unwrap())
}

#[test]
fn globals_merge_into_each_function_as_sam_merges_them() {
    let template = parse_yaml(
        r#"
Globals:
  Function:
    Runtime: provided.al2023
    Layers: [GlobalLayer]
    Environment:
      Variables:
        SHARED: "1"
        OVERRIDDEN: !If [IsPostgres, "2", !Ref AWS::NoValue]
        REMOVED: "3"
Resources:
  Plain:
    Type: AWS::Serverless::Function
  Custom:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: provided.al2
      Layers: [OwnLayer]
      Environment:
        Variables:
          OWN: "4"
          OVERRIDDEN: !If [IsPostgres, "5", !Ref AWS::NoValue]
          REMOVED: !Ref AWS::NoValue
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: t
"#,
    )
    .unwrap();
    let effective = effective_template(&template);
    assert!(effective.get("Globals").is_none(), "the Globals section is spent");
    let plain = &effective["Resources"]["Plain"]["Properties"];
    assert_eq!(plain["Runtime"], "provided.al2023", "a function without the property takes the global");
    assert_eq!(plain["Layers"], serde_json::json!(["GlobalLayer"]));
    assert_eq!(plain["Environment"]["Variables"]["SHARED"], "1");
    let custom = &effective["Resources"]["Custom"]["Properties"];
    assert_eq!(custom["Runtime"], "provided.al2", "a scalar of the function wins");
    assert_eq!(custom["Layers"], serde_json::json!(["GlobalLayer", "OwnLayer"]), "lists are appended");
    let variables = custom["Environment"]["Variables"].as_object().unwrap();
    assert_eq!(variables["SHARED"], "1", "maps merge key by key");
    assert_eq!(variables["OWN"], "4");
    assert_eq!(
        variables["OVERRIDDEN"],
        serde_json::json!({"Fn::If": ["IsPostgres", "5", {"Ref": "AWS::NoValue"}]}),
        "an intrinsic is one value: the function's replaces the global's, it is not merged into it"
    );
    assert!(!variables.contains_key("REMOVED"), "AWS::NoValue removes a global variable");
    assert_eq!(effective["Resources"]["Table"], template["Resources"]["Table"], "other resources untouched");
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().unwrap()
}

/// Function resources by the crate their `CodeUri` names.
fn functions_by_crate(template: &Value) -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for (id, resource) in resources(template) {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let code_uri = resource["Properties"]["CodeUri"].as_str().unwrap_or_else(|| panic!("{id}: CodeUri"));
        let krate = code_uri.strip_prefix("functions/").unwrap_or_else(|| panic!("{id}: CodeUri {code_uri}"));
        let previous = out.insert(krate.to_owned(), (id.clone(), resource.clone()));
        assert!(previous.is_none(), "two function resources build functions/{krate}");
    }
    out
}

fn crates() -> Vec<FunctionCrate> {
    function_crates().unwrap_or_else(|e| panic!("{e}"))
}

fn table_logical_ids(template: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (id, resource) in resources(template) {
        if resource["Type"] == "AWS::DynamoDB::Table" {
            let name =
                resource["Properties"]["TableName"]["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{id}"));
            let table = name.strip_prefix("${AWS::StackName}-").unwrap_or_else(|| panic!("{id}: {name}"));
            out.insert(id.clone(), table.to_owned());
        }
    }
    out
}

#[test]
fn every_function_crate_has_exactly_one_function_resource_and_every_function_resource_a_crate() {
    let template = template();
    let in_template: BTreeSet<String> = functions_by_crate(&template).into_keys().collect();
    let on_disk: BTreeSet<String> = crates().into_iter().map(|c| c.name).collect();
    let missing: Vec<_> = on_disk.difference(&in_template).collect();
    let extra: Vec<_> = in_template.difference(&on_disk).collect();
    assert!(missing.is_empty(), "crates without a function resource in template.yaml: {missing:?}");
    assert!(extra.is_empty(), "function resources without a crate under functions/: {extra:?}");
}

#[test]
fn functions_are_built_by_cargo_lambda_for_the_architecture_their_dependencies_allow() {
    let template = template();
    let by_crate = functions_by_crate(&template);
    for krate in crates() {
        let Some((id, resource)) = by_crate.get(&krate.name) else { continue };
        let props = &resource["Properties"];
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert!(
            resource["Metadata"].get("BuildProperties").is_none_or(|b| b.get("Binary").is_none()),
            "{id}: Binary"
        );
        assert_eq!(props["Handler"], "bootstrap", "{id}");
        assert_eq!(props["Runtime"], "provided.al2023", "{id}");
        assert_eq!(
            props["Architectures"],
            Value::from(vec![krate.architecture()]),
            "{id}: functions/{} {} librdkafka",
            krate.name,
            if krate.links_rdkafka() { "links" } else { "does not link" }
        );
        let memory = props["MemorySize"].as_u64().unwrap_or_else(|| panic!("{id}: MemorySize"));
        let timeout = props["Timeout"].as_u64().unwrap_or_else(|| panic!("{id}: Timeout"));
        assert!(
            (128..=10_240).contains(&memory) && (1..=900).contains(&timeout),
            "{id}: {memory} MB, {timeout} s"
        );
        if !krate.metadata.routes.is_empty() {
            // API Gateway gives up after 29 s; a longer timeout would only hide a hung request.
            assert!(timeout <= 29, "{id}: an HTTP function's timeout is at most 29 s");
        }
    }
}

#[test]
fn every_route_is_one_api_event_on_the_function_that_declares_it() {
    let template = template();
    let by_crate = functions_by_crate(&template);
    let mut routed: BTreeMap<String, String> = BTreeMap::new();
    for krate in crates() {
        let Some((id, resource)) = by_crate.get(&krate.name) else { continue };
        let mut events = BTreeSet::new();
        for (name, event) in resource["Properties"]["Events"].as_object().into_iter().flatten() {
            if event["Type"] != "Api" {
                continue;
            }
            let p = &event["Properties"];
            assert_eq!(p["RestApiId"], serde_json::json!({"Ref": "CoreBankApi"}), "{id}.{name}");
            let route =
                format!("{} {}", p["Method"].as_str().unwrap().to_uppercase(), p["Path"].as_str().unwrap());
            assert!(events.insert(route.clone()), "{id}: {route} twice");
            assert!(routed.insert(route.clone(), krate.name.clone()).is_none(), "{route} on two functions");
        }
        let declared: BTreeSet<String> = krate.metadata.routes.iter().cloned().collect();
        assert_eq!(events, declared, "{id}: Api events vs functions/{}'s routes", krate.name);
    }
    let table: BTreeSet<String> =
        corebank_api::router::ROUTES.iter().map(|(method, path, _)| format!("{method} {path}")).collect();
    let served: BTreeSet<String> = routed.keys().cloned().collect();
    assert_eq!(served, table, "the API's routes in template.yaml vs corebank_api::router::ROUTES");
}

#[test]
fn every_route_but_health_sits_behind_the_authorizer_and_commands_need_a_body_and_a_key() {
    let template = template();
    let api = &resources(&template)["CoreBankApi"]["Properties"];
    // The default: the OIDC authorizer function, or IAM when AuthMode=iam (resolved by
    // AWS::LanguageExtensions before the SAM transform).
    let transforms: Vec<&Value> = as_list(&template["Transform"]);
    assert_eq!(
        transforms.first().copied(),
        Some(&Value::from("AWS::LanguageExtensions")),
        "LanguageExtensions first"
    );
    let auth = &api["Auth"];
    assert_eq!(
        auth["DefaultAuthorizer"],
        serde_json::json!({"Fn::If": ["UseIam", "AWS_IAM", "OidcAuthorizer"]}),
        "the API's default authorizer"
    );
    assert_eq!(auth["InvokeRole"], "NONE", "functions are invoked with their resource policies");
    let oidc = &auth["Authorizers"]["OidcAuthorizer"];
    assert_eq!(oidc["FunctionArn"], serde_json::json!({"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}));
    assert_eq!(oidc["FunctionPayloadType"], "TOKEN");
    assert_eq!(oidc["Identity"]["Header"], "Authorization");
    assert_eq!(
        oidc["Identity"]["ReauthorizeEvery"],
        serde_json::json!({"Ref": "AuthorizerResultTtlSeconds"})
    );
    let authorizer_env =
        &resources(&template)["AuthorizerFunction"]["Properties"]["Environment"]["Variables"];
    for (var, param) in
        [("AUTH_ISSUER", "OidcIssuer"), ("AUTH_AUDIENCE", "OidcAudience"), ("AUTH_JWKS_URL", "OidcJwksUrl")]
    {
        assert_eq!(authorizer_env[var], serde_json::json!({"Ref": param}), "AuthorizerFunction {var}");
    }
    for (id, resource) in resources(&template) {
        for (name, event) in resource["Properties"]["Events"].as_object().into_iter().flatten() {
            if event["Type"] != "Api" {
                continue;
            }
            let p = &event["Properties"];
            let path = p["Path"].as_str().unwrap();
            let method = p["Method"].as_str().unwrap().to_uppercase();
            let admin = path.starts_with("/admin/");
            let health = method == "GET" && path == "/health";
            // No route overrides the default except health, the one public route.
            let override_ = &p["Auth"]["Authorizer"];
            if health {
                assert_eq!(override_, "NONE", "{id}.{name}: health is public");
            } else {
                assert!(
                    override_.is_null(),
                    "{id}.{name}: {method} {path} must use the API's default authorizer"
                );
            }
            let command = method == "POST" && !admin;
            let key_required = as_list(&p["RequestParameters"])
                .iter()
                .any(|param| param["method.request.header.Idempotency-Key"]["Required"] == Value::Bool(true));
            assert_eq!(key_required, command, "{id}.{name}: Idempotency-Key required exactly on commands");
            if command {
                let model = &p["RequestModel"];
                assert_eq!(model["Model"], "JsonObject", "{id}.{name}");
                for flag in ["Required", "ValidateBody", "ValidateParameters"] {
                    assert_eq!(model[flag], Value::Bool(true), "{id}.{name}: RequestModel.{flag}");
                }
            }
        }
    }
    let api = &resources(&template)["CoreBankApi"]["Properties"];
    let settings = as_list(&api["MethodSettings"]);
    assert!(
        settings.iter().any(|s| s["ResourcePath"] == "/*"
            && s["HttpMethod"] == "*"
            && s.get("ThrottlingRateLimit").is_some()
            && s.get("ThrottlingBurstLimit").is_some()),
        "stage-wide throttling"
    );
    // API Gateway's own refusals speak the functions' JSON error shape, with the status they are sent with.
    let responses = api["GatewayResponses"].as_object().unwrap();
    for kind in [
        "MISSING_AUTHENTICATION_TOKEN",
        "RESOURCE_NOT_FOUND",
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "AUTHORIZER_FAILURE",
        "THROTTLED",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    ] {
        assert!(responses.contains_key(kind), "gateway response {kind}");
    }
    for (kind, response) in responses {
        let body = response["ResponseTemplates"]["application/json"].as_str().unwrap();
        for field in ["\"statusCode\"", "\"error\"", "\"code\"", "\"message\""] {
            assert!(body.contains(field), "{kind}: JSON error envelope lacks {field}");
        }
        let status = response["StatusCode"].as_u64().unwrap();
        assert!(
            body.starts_with(&format!("{{\"statusCode\":{status},")),
            "{kind}: statusCode {status} in the body"
        );
    }
    assert_eq!(responses["UNAUTHORIZED"]["StatusCode"], 401);
    assert!(
        responses["UNAUTHORIZED"]["ResponseTemplates"]["application/json"]
            .as_str()
            .unwrap()
            .contains("\"UNAUTHORIZED\"")
    );
    assert_eq!(
        responses["UNAUTHORIZED"]["ResponseParameters"]["Headers"]["WWW-Authenticate"], "'Bearer'",
        "a 401 says how to authenticate"
    );
    assert_eq!(responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"], 404, "unknown routes are 404");
}

/// The variables each of a function's configs reads, given its condition (a function that only exists
/// for one store kind reads only that kind's variables).
fn expected_variables(krate: &FunctionCrate, condition: Option<&str>) -> BTreeSet<String> {
    let known = configs();
    let mut vars = BTreeSet::new();
    let mut ids: Vec<&str> = Vec::new();
    for id in &krate.metadata.configs {
        if id == "store" {
            // STORE_KIND, then the variables of the kinds this function can be deployed with.
            vars.extend(corebank_wiring::ENV_VARS.iter().map(|v| (*v).to_owned()));
            match condition {
                Some("IsDynamo") => ids.push("dynamodb"),
                Some("IsPostgres") => ids.push("postgres"),
                _ => ids.extend(["dynamodb", "postgres"]),
            }
        } else {
            ids.push(id);
        }
    }
    for id in ids {
        let config = known.iter().find(|c| c.id == id).unwrap_or_else(|| {
            panic!(
                "functions/{}: unknown config {id:?}; known: {:?}",
                krate.name,
                known.iter().map(|c| c.id).collect::<Vec<_>>()
            )
        });
        vars.extend(config_variables(config).unwrap());
    }
    vars
}

#[test]
fn every_function_gets_exactly_the_variables_its_configs_read() {
    let template = template();
    let by_crate = functions_by_crate(&template);
    for krate in crates() {
        let Some((id, resource)) = by_crate.get(&krate.name) else { continue };
        let condition = resource["Condition"].as_str();
        let read = expected_variables(&krate, condition);
        for withheld in &krate.metadata.withheld {
            assert!(
                read.contains(withheld),
                "functions/{}: withheld {withheld} is read by none of its configs",
                krate.name
            );
        }
        let expected: BTreeSet<String> = read
            .into_iter()
            .filter(|v| !krate.metadata.withheld.contains(v) && !LAMBDA_RESERVED.contains(&v.as_str()))
            .collect();
        let set: BTreeSet<String> = resource["Properties"]["Environment"]["Variables"]
            .as_object()
            .map(|vars| vars.keys().cloned().collect())
            .unwrap_or_default();
        let missing: Vec<_> = expected.difference(&set).collect();
        let extra: Vec<_> = set.difference(&expected).collect();
        assert!(
            missing.is_empty(),
            "{id}: its configs read {missing:?}, which template.yaml does not set (or list them under `withheld`)"
        );
        assert!(
            extra.is_empty(),
            "{id}: template.yaml sets {extra:?}, which none of its configs {:?} reads",
            krate.metadata.configs
        );
        let reserved: Vec<_> = set.iter().filter(|v| LAMBDA_RESERVED.contains(&v.as_str())).collect();
        assert!(reserved.is_empty(), "{id}: sets variables the Lambda runtime reserves: {reserved:?}");
    }
}

#[test]
fn declared_config_variables_are_exactly_those_their_sources_read() {
    for config in configs() {
        let scanned = scanned_variables(&config).unwrap();
        if let Some(declared) = &config.declared {
            let declared: BTreeSet<String> = declared.iter().map(|v| (*v).to_owned()).collect();
            assert_eq!(
                declared, scanned,
                "config {:?}: the ENV_VARS list vs the names {:?} read",
                config.id, config.sources
            );
        }
        assert!(!scanned.is_empty(), "config {:?} reads nothing?", config.id);
    }
}

#[test]
fn every_source_that_reads_the_environment_belongs_to_a_config() {
    let registered: BTreeSet<&str> = configs().iter().flat_map(|c| c.sources.iter().copied()).collect();
    let mut unregistered = Vec::new();
    let root = corebank_template_check::workspace_root();
    let mut stack = vec![root.join("shared")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests" && n != "benches") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let code = non_test_code(&read(&relative).unwrap());
            let reads =
                code.contains("env::var(") || code.contains("env::var_os(") || code.contains("env_parse(\"");
            if reads && !registered.contains(relative.as_str()) {
                unregistered.push(relative);
            }
        }
    }
    assert!(
        unregistered.is_empty(),
        "these sources read the environment but are no config of infra/template-check (add them to \
         `configs()` so the functions that read them get their variables): {unregistered:?}"
    );
}

/// DynamoDB actions granted to a function, by table name.
fn granted(
    function: &Value,
    tables: &BTreeMap<String, String>,
    id: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for policy in as_list(&function["Properties"]["Policies"]) {
        for doc in branches(policy) {
            let Some(statements) = doc.get("Statement") else {
                panic!(
                    "{id}: a policy that is not an inline document ({doc}); SAM policy templates grant more than needed"
                )
            };
            for statement in as_list(statements) {
                assert_eq!(statement["Effect"], "Allow", "{id}");
                let actions: Vec<&str> =
                    as_list(&statement["Action"]).iter().filter_map(|a| a.as_str()).collect();
                let dynamo: Vec<&str> =
                    actions.iter().copied().filter(|a| a.starts_with("dynamodb:")).collect();
                if dynamo.is_empty() {
                    continue;
                }
                assert_eq!(
                    dynamo.len(),
                    actions.len(),
                    "{id}: mixes DynamoDB and other actions in one statement"
                );
                assert!(dynamo.iter().all(|a| !a.contains('*')), "{id}: wildcard DynamoDB action");
                for resource in as_list(&statement["Resource"]) {
                    let (logical, attribute, rest) = referenced_resource(resource).unwrap_or_else(|| {
                        panic!("{id}: DynamoDB grant on {resource}, not on a table of the template")
                    });
                    let table = tables
                        .get(&logical)
                        .unwrap_or_else(|| panic!("{id}: grant on {logical}, not a table"));
                    let scope = match (attribute.as_str(), rest.as_str()) {
                        ("Arn", "") | ("Arn", "/index/*") => "table",
                        ("StreamArn", "") | ("Arn", "/stream/*") => "stream",
                        other => panic!("{id}: grant on {logical} {other:?}"),
                    };
                    let set = out.entry(table.clone()).or_default();
                    for action in &dynamo {
                        set.insert(format!("{scope}:{action}"));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn each_function_is_granted_exactly_the_tables_and_access_its_metadata_declares() {
    let template = template();
    let tables = table_logical_ids(&template);
    let by_crate = functions_by_crate(&template);
    let known_tables: BTreeSet<&String> = tables.values().collect();
    for krate in crates() {
        let Some((id, resource)) = by_crate.get(&krate.name) else { continue };
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (table, level) in &krate.metadata.tables {
            assert!(known_tables.contains(table), "functions/{}: unknown table {table}", krate.name);
            let actions = level_actions(level)
                .unwrap_or_else(|| panic!("functions/{}: unknown access level {level}", krate.name));
            let scope = if level == "stream" { "stream" } else { "table" };
            expected.entry(table.clone()).or_default().extend(actions.iter().map(|a| format!("{scope}:{a}")));
        }
        assert_eq!(
            granted(resource, &tables, id),
            expected,
            "{id}: DynamoDB grants vs functions/{}'s tables",
            krate.name
        );
    }
}

#[test]
fn table_resources_equal_the_json_definitions() {
    let template = template();
    let defs = table_definitions().unwrap();
    let ids = table_logical_ids(&template);
    let in_template: BTreeSet<&String> = ids.values().collect();
    assert_eq!(
        in_template,
        defs.keys().collect::<BTreeSet<_>>(),
        "tables in template.yaml vs infra/dynamodb/tables/*.json"
    );
    let sorted = |v: &Value| {
        let mut items: Vec<String> = as_list(v).iter().map(|x| x.to_string()).collect();
        items.sort();
        items
    };
    for (id, table) in &ids {
        let def = &defs[table];
        let resource = &resources(&template)[id];
        let p = &resource["Properties"];
        assert_eq!(resource["Condition"], "IsDynamo", "{id}");
        assert_eq!(p["BillingMode"], def["BillingMode"], "{id}: BillingMode");
        assert_eq!(def["BillingMode"], "PAY_PER_REQUEST", "{table}: on-demand");
        assert_eq!(
            sorted(&p["AttributeDefinitions"]),
            sorted(&def["AttributeDefinitions"]),
            "{id}: attributes"
        );
        assert_eq!(p["KeySchema"], def["KeySchema"], "{id}: key schema");
        assert_eq!(
            p.get("GlobalSecondaryIndexes").unwrap_or(&Value::Null),
            def.get("GlobalSecondaryIndexes").unwrap_or(&Value::Null),
            "{id}: indexes"
        );
        let stream = def.get("StreamSpecification").filter(|s| s["StreamEnabled"] == Value::Bool(true));
        assert_eq!(
            p["StreamSpecification"]["StreamViewType"],
            stream.map_or(Value::Null, |s| s["StreamViewType"].clone()),
            "{id}: stream"
        );
        assert_eq!(
            p.get("TimeToLiveSpecification").unwrap_or(&Value::Null),
            def.get("TimeToLiveSpecification").unwrap_or(&Value::Null),
            "{id}: TTL"
        );
    }
    let events = ids.iter().find(|(_, t)| t.as_str() == "events").map(|(id, _)| id).unwrap();
    let events = &resources(&template)[events];
    assert_eq!(
        events["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true,
        "events PITR"
    );
    assert_eq!(events["DeletionPolicy"], "Retain", "the ledger outlives the stack");
}

fn function_ref(value: &Value) -> Option<String> {
    value.get("Ref").and_then(Value::as_str).map(str::to_owned)
}

#[test]
fn every_function_has_an_errors_alarm_and_the_pipeline_mappings_are_bounded_and_watched() {
    let template = template();
    let res = resources(&template);
    let alarms: Vec<&Value> = res.values().filter(|r| r["Type"] == "AWS::CloudWatch::Alarm").collect();
    let alarm_on = |metric: &str, function: &str| {
        alarms.iter().any(|a| {
            a["Properties"]["MetricName"] == metric
                && as_list(&a["Properties"]["Dimensions"]).iter().any(|d| {
                    d["Name"] == "FunctionName" && function_ref(&d["Value"]).as_deref() == Some(function)
                })
        })
    };
    for (id, resource) in res {
        if resource["Type"] == "AWS::Serverless::Function" {
            assert!(alarm_on("Errors", id), "{id}: no Errors alarm");
        }
    }
    let mut streams = 0;
    for (id, resource) in res {
        if resource["Type"] != "AWS::Lambda::EventSourceMapping" {
            continue;
        }
        let p = &resource["Properties"];
        let function = function_ref(&p["FunctionName"]).unwrap_or_else(|| panic!("{id}: FunctionName"));
        assert_eq!(p["StartingPosition"], "TRIM_HORIZON", "{id}");
        if p.get("Topics").is_some() {
            let group = &p["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"];
            assert!(group.as_str().is_some_and(|g| !g.is_empty()), "{id}: ConsumerGroupId");
            assert!(alarm_on("OffsetLag", &function), "{id}: no OffsetLag alarm on {function}");
            // The handler parks permanent failures itself; what reaches Lambda's retries is transient,
            // retried a bounded number of times and then kept in the failure topic, whole batch at a
            // time (bisecting a batch that failed on an outage only multiplies the invocations).
            assert!(
                p["ProvisionedPollerConfig"].is_object(),
                "{id}: Kafka retry controls need provisioned mode"
            );
            let retries = p["MaximumRetryAttempts"].as_i64().unwrap_or(-1);
            assert!((0..=10_000).contains(&retries), "{id}: MaximumRetryAttempts must be bounded");
            assert_eq!(p["BisectBatchOnFunctionError"], false, "{id}");
            let destination = p["DestinationConfig"]["OnFailure"]["Destination"].as_str().unwrap_or_default();
            let topic = destination
                .strip_prefix("kafka://")
                .unwrap_or_else(|| panic!("{id}: a Kafka on-failure topic"));
            let written =
                msk_grants(&function, &res[&function]).remove("kafka-cluster:WriteData").unwrap_or_default();
            assert!(written.contains(topic), "{id}: {function} may not write the failure topic {topic}");
        } else {
            streams += 1;
            assert_eq!(
                p["EventSourceArn"],
                serde_json::json!({"Fn::GetAtt": ["EventsTable", "StreamArn"]}),
                "{id}"
            );
            assert_eq!(p["FunctionResponseTypes"], serde_json::json!(["ReportBatchItemFailures"]), "{id}");
            assert_eq!(p["BisectBatchOnFunctionError"], true, "{id}");
            let retries = p["MaximumRetryAttempts"].as_i64().unwrap_or(-1);
            assert!((0..=10_000).contains(&retries), "{id}: MaximumRetryAttempts must be bounded");
            let dlq = referenced_resource(&p["DestinationConfig"]["OnFailure"]["Destination"]).map(|r| r.0);
            let dlq = dlq.unwrap_or_else(|| panic!("{id}: on-failure destination"));
            assert_eq!(res[&dlq]["Type"], "AWS::SQS::Queue", "{id}");
            assert!(alarm_on("IteratorAge", &function), "{id}: no IteratorAge alarm on {function}");
            let depth = alarms.iter().any(|a| {
                a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
                    && as_list(&a["Properties"]["Dimensions"]).iter().any(|d| {
                        referenced_resource(&d["Value"])
                            .is_some_and(|(r, attribute, _)| r == dlq && attribute == "QueueName")
                    })
            });
            assert!(depth, "{id}: no depth alarm on {dlq}");
        }
    }
    let publishes_stream =
        crates().iter().any(|c| c.metadata.tables.get("events").is_some_and(|l| l == "stream"));
    assert_eq!(
        streams,
        usize::from(publishes_stream),
        "one events-stream mapping, to the function that reads the stream"
    );
}

/// The names a function's `kafka-cluster:<action>` statements grant, by action: topic and group names
/// are the last literal of the `Fn::Join` that builds their ARN from the cluster's (`.../<name>`).
fn msk_grants(id: &str, function: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for policy in as_list(&function["Properties"]["Policies"]) {
        for doc in branches(policy) {
            for statement in as_list(&doc["Statement"]) {
                let actions: Vec<&str> = as_list(&statement["Action"])
                    .iter()
                    .filter_map(|a| a.as_str())
                    .filter(|a| {
                        matches!(
                            *a,
                            "kafka-cluster:ReadData" | "kafka-cluster:WriteData" | "kafka-cluster:AlterGroup"
                        )
                    })
                    .collect();
                for resource in as_list(&statement["Resource"]) {
                    let Some(suffix) = resource["Fn::Join"][1].as_array().and_then(|parts| parts.last())
                    else {
                        continue;
                    };
                    let name = suffix.as_str().and_then(|s| s.strip_prefix('/'));
                    let name = name.unwrap_or_else(|| panic!("{id}: MSK grant on {resource}"));
                    for action in &actions {
                        out.entry((*action).to_owned()).or_default().insert(name.to_owned());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_event_topic_reaches_the_projector_and_each_consumer_reads_exactly_its_mappings() {
    let template = template();
    let res = resources(&template);
    // Function -> (topics, consumer groups) of its MSK event source mappings.
    let mut mapped: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut groups = BTreeSet::new();
    for (id, resource) in res {
        let p = &resource["Properties"];
        if resource["Type"] != "AWS::Lambda::EventSourceMapping" || p.get("Topics").is_none() {
            continue;
        }
        let function = function_ref(&p["FunctionName"]).unwrap_or_else(|| panic!("{id}: FunctionName"));
        let topics = as_list(&p["Topics"]);
        assert_eq!(topics.len(), 1, "{id}: an MSK event source mapping reads exactly one topic");
        let group = p["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"].as_str().unwrap().to_owned();
        assert!(groups.insert(group.clone()), "{id}: consumer group {group} on two mappings");
        let entry = mapped.entry(function).or_default();
        entry.0.insert(topics[0].as_str().unwrap().to_owned());
        entry.1.insert(group);
    }
    for (function, (topics, groups)) in &mapped {
        let grants = msk_grants(function, &res[function]);
        assert_eq!(
            grants.get("kafka-cluster:ReadData"),
            Some(topics),
            "{function}: ReadData vs its mappings' topics"
        );
        assert_eq!(
            grants.get("kafka-cluster:AlterGroup"),
            Some(groups),
            "{function}: AlterGroup vs its mappings' groups"
        );
    }
    let published: BTreeSet<String> = res
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .flat_map(|f| {
            let vars = &f["Properties"]["Environment"]["Variables"];
            ["KAFKA_ACCOUNT_EVENTS_TOPIC", "KAFKA_TRANSFER_EVENTS_TOPIC"].into_iter().flat_map(|name| {
                branches(&vars[name]).into_iter().filter_map(Value::as_str).map(str::to_owned)
            })
        })
        .collect();
    assert_eq!(published.len(), 2, "the producers' topics: {published:?}");
    let by_crate = functions_by_crate(&template);
    let projector = &by_crate["projector"].0;
    assert_eq!(
        mapped.get(projector).map(|m| &m.0),
        Some(&published),
        "every event topic reaches the read tables"
    );
}

/// A function's value of `name` when deployed with Postgres (the `IsPostgres` branch of an `!If`), or
/// the wiring's default when it is not set.
fn postgres_setting(variables: &Value, name: &str, default: u64) -> u64 {
    let Some(value) = variables.get(name) else { return default };
    let value = match value.get("Fn::If").and_then(Value::as_array) {
        Some(branches) => &branches[1],
        None => value,
    };
    let text = value.as_str().unwrap_or_else(|| panic!("{name} is not a literal: {value}"));
    text.parse().unwrap_or_else(|e| panic!("{name}={text}: {e}"))
}

#[test]
fn every_postgres_functions_waits_end_before_its_timeout() {
    let template = template();
    let mut checked = 0;
    for (id, resource) in resources(&template) {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let variables = &resource["Properties"]["Environment"]["Variables"];
        if variables.get("PGHOST").is_none() {
            continue;
        }
        let timeout_ms = resource["Properties"]["Timeout"].as_u64().unwrap_or(3) * 1000;
        // The wiring's defaults (shared/wiring/src/postgres.rs) where the template sets nothing.
        let connect_ms = postgres_setting(variables, "PG_CONNECT_TIMEOUT_SECS", 5) * 1000;
        let wait_ms = postgres_setting(variables, "PG_POOL_WAIT_TIMEOUT_MS", 5_000);
        let statement_ms = postgres_setting(variables, "PG_STATEMENT_TIMEOUT_MS", 5_000);
        let lock_ms = postgres_setting(variables, "PG_LOCK_TIMEOUT_MS", 2_000);
        let idle_ms = postgres_setting(variables, "PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", 10_000);
        assert!(
            wait_ms + connect_ms + statement_ms < timeout_ms,
            "{id}: pool wait {wait_ms} ms + connect {connect_ms} ms + statement {statement_ms} ms must stay \
             below the function timeout {timeout_ms} ms, so a stuck database answers 503 instead of a timeout"
        );
        assert!(
            lock_ms <= statement_ms,
            "{id}: lock timeout {lock_ms} ms > statement timeout {statement_ms} ms"
        );
        assert!(idle_ms > 0, "{id}: idle-in-transaction timeout");
        checked += 1;
    }
    assert!(checked > 0, "no function connects to Postgres?");
}

#[test]
fn no_function_environment_holds_a_database_password() {
    let template = template();
    for (id, resource) in resources(&template) {
        let variables = &resource["Properties"]["Environment"]["Variables"];
        let Some(variables) = variables.as_object() else { continue };
        for name in ["PGPASSWORD", "DATABASE_URL"] {
            assert!(!variables.contains_key(name), "{id}: {name} puts a password in the environment");
        }
        for (name, value) in variables {
            let text = value.to_string();
            assert!(
                !(text.contains("resolve:secretsmanager") && text.contains("password")),
                "{id}: {name} resolves the secret's password into the environment"
            );
        }
        if variables.contains_key("PGHOST") {
            assert!(
                variables.contains_key("DATABASE_SECRET_ARN"),
                "{id}: the password comes from the secret"
            );
            assert!(
                variables["PGSSLMODE"].to_string().contains("verify-full"),
                "{id}: RDS is verified (sslmode=verify-full)"
            );
        }
    }
}

/// `sam build` and `sam deploy` run without a prompt: the beta-features opt-in cargo lambda builds need,
/// and the capabilities the template's transforms and roles need, are in samconfig.toml.
#[test]
fn samconfig_lets_build_and_deploy_run_without_a_prompt() {
    let config: toml::Table = corebank_template_check::read("samconfig.toml").unwrap().parse().unwrap();
    let build = &config["default"]["build"]["parameters"];
    assert_eq!(
        build.get("beta_features").and_then(toml::Value::as_bool),
        Some(true),
        "rust-cargolambda is a beta feature"
    );
    let capabilities = config["default"]["deploy"]["parameters"]["capabilities"].as_str().unwrap();
    let template = template();
    let transforms: Vec<&Value> = as_list(&template["Transform"]);
    if transforms.iter().any(|t| *t == "AWS::LanguageExtensions") {
        assert!(
            capabilities.contains("CAPABILITY_AUTO_EXPAND"),
            "the LanguageExtensions transform: {capabilities}"
        );
    }
    assert!(capabilities.contains("CAPABILITY_IAM"), "{capabilities}");
}

/// Where data or its only trace lives, the stack's deletion or a replacement keeps it.
#[test]
fn data_outlives_the_stack() {
    let template = template();
    for id in ["EventsTable", "TransactionsTable", "IdempotencyTable", "OutboxDlq", "ApiAccessLogs"] {
        let resource = &resources(&template)[id];
        assert_eq!(resource["DeletionPolicy"], "Retain", "{id}");
        assert_eq!(resource["UpdateReplacePolicy"], "Retain", "{id}");
    }
}

/// Every function logs to a log group of its own that keeps its events for `LogRetentionDays` (not
/// for ever, as a group Lambda creates by itself would), and that outlives the stack.
#[test]
fn every_function_logs_to_a_group_with_a_retention() {
    let template = template();
    let all = resources(&template);
    let mut functions = 0;
    for (id, resource) in all {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        functions += 1;
        let group = resource["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: LoggingConfig.LogGroup is not a Ref"));
        let group = &all[group];
        assert_eq!(group["Type"], "AWS::Logs::LogGroup", "{id}");
        assert_eq!(
            group["Properties"]["RetentionInDays"],
            serde_json::json!({"Ref": "LogRetentionDays"}),
            "{id}"
        );
        assert_eq!(group["DeletionPolicy"], "Retain", "{id}");
    }
    assert_eq!(functions, crates().len(), "one function per crate");
}

/// Access logging needs the account's API Gateway CloudWatch role: the stack creates it only when asked
/// (it is account-wide), and then before the API.
#[test]
fn the_account_logging_role_is_optional_and_set_before_the_api() {
    let template = template();
    let res = resources(&template);
    let parameter = &template["Parameters"]["CreateApiGatewayAccountRole"];
    assert_eq!(parameter["Default"], "false", "the account-wide setting is opt-in");
    for id in ["ApiGatewayCloudWatchRole", "ApiGatewayAccount"] {
        assert_eq!(res[id]["Condition"], "CreateApiGatewayAccountRole", "{id}");
    }
    let role = &res["ApiGatewayCloudWatchRole"];
    assert!(
        as_list(&role["Properties"]["ManagedPolicyArns"])
            .iter()
            .any(|arn| arn.to_string().contains("service-role/AmazonAPIGatewayPushToCloudWatchLogs")),
        "the role carries the managed push-to-logs policy"
    );
    assert_eq!(
        res["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"],
        serde_json::json!({"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]})
    );
    let api = &res["CoreBankApi"];
    assert!(api["Properties"].get("AccessLogSetting").is_some(), "the API logs its requests");
    let ready = api["DependsOn"].as_str().unwrap_or_else(|| panic!("CoreBankApi: DependsOn"));
    assert_eq!(
        res[ready]["Metadata"]["AccountSetting"],
        serde_json::json!({"Fn::If": ["CreateApiGatewayAccountRole", {"Ref": "ApiGatewayAccount"}, ""]}),
        "the API waits for the account setting when the stack creates it"
    );
}

/// Every alarm notifies the stack's alarm topic when it fires and when it clears; the topic always
/// exists, and `AlarmEmail` only adds a subscriber. The API has its error-rate and p99 alarms, and
/// every function the API invokes a Throttles alarm (a throttled request is a 5XX to its caller).
#[test]
fn every_alarm_notifies_the_alarm_topic_and_the_api_and_its_functions_are_watched() {
    let template = template();
    let res = resources(&template);
    let topic = &res["AlarmTopic"];
    assert_eq!(topic["Type"], "AWS::SNS::Topic");
    assert!(topic.get("Condition").is_none(), "the alarm topic exists in every deployment");
    let subscription = &res["AlarmEmailSubscription"];
    assert_eq!(subscription["Condition"], "HasAlarmEmail");
    assert_eq!(subscription["Properties"]["TopicArn"], serde_json::json!({"Ref": "AlarmTopic"}));
    assert_eq!(subscription["Properties"]["Endpoint"], serde_json::json!({"Ref": "AlarmEmail"}));
    assert_eq!(template["Parameters"]["AlarmEmail"]["Default"], "", "no subscriber unless asked");

    let alarms: Vec<(&String, &Value)> =
        res.iter().filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm").collect();
    assert!(!alarms.is_empty());
    let to_topic = serde_json::json!([{"Ref": "AlarmTopic"}]);
    for (id, alarm) in &alarms {
        let p = &alarm["Properties"];
        assert_eq!(p["AlarmActions"], to_topic, "{id}: AlarmActions");
        assert_eq!(p["OKActions"], to_topic, "{id}: OKActions");
        if let Some(parameter) = p["Threshold"].get("Ref").and_then(Value::as_str) {
            assert!(template["Parameters"].get(parameter).is_some(), "{id}: threshold {parameter}");
        }
    }

    let api_dimensions = |p: &Value| {
        let dims = as_list(&p["Dimensions"]);
        dims.iter().any(|d| {
            d["Name"] == "ApiName" && d["Value"] == serde_json::json!({"Fn::Sub": "${AWS::StackName}-api"})
        }) && dims
            .iter()
            .any(|d| d["Name"] == "Stage" && d["Value"] == serde_json::json!({"Ref": "StageName"}))
    };
    assert_eq!(
        res["CoreBankApi"]["Properties"]["Name"],
        serde_json::json!({"Fn::Sub": "${AWS::StackName}-api"}),
        "the API alarms name the API by its Name"
    );
    let api_alarm = |metric: &str, statistic: (&str, &str)| {
        alarms.iter().any(|(_, a)| {
            let p = &a["Properties"];
            p["Namespace"] == "AWS/ApiGateway"
                && p["MetricName"] == metric
                && p[statistic.0] == statistic.1
                && api_dimensions(p)
        })
    };
    assert!(api_alarm("5XXError", ("Statistic", "Average")), "the API's 5XX rate alarm");
    assert!(api_alarm("Latency", ("ExtendedStatistic", "p99")), "the API's p99 latency alarm");

    let mut invoked_by_api: BTreeSet<String> = BTreeSet::new();
    for (id, resource) in res {
        let events = resource["Properties"]["Events"].as_object();
        if events.into_iter().flatten().any(|(_, e)| e["Type"] == "Api") {
            invoked_by_api.insert(id.clone());
        }
    }
    let authorizers = res["CoreBankApi"]["Properties"]["Auth"]["Authorizers"].as_object().unwrap();
    for authorizer in authorizers.values() {
        invoked_by_api.extend(referenced_resource(&authorizer["FunctionArn"]).map(|r| r.0));
    }
    for function in &invoked_by_api {
        let watched = alarms.iter().any(|(_, a)| {
            a["Properties"]["MetricName"] == "Throttles"
                && as_list(&a["Properties"]["Dimensions"]).iter().any(|d| {
                    d["Name"] == "FunctionName" && function_ref(&d["Value"]).as_deref() == Some(function)
                })
        });
        assert!(watched, "{function}: no Throttles alarm");
    }
}

/// A literal setting of a function's environment, or `default` when the template leaves it unset.
fn literal_setting(id: &str, variables: &Value, name: &str, default: u64) -> u64 {
    let Some(value) = variables.get(name) else { return default };
    let text = value.as_str().unwrap_or_else(|| panic!("{id}: {name} is not a literal: {value}"));
    text.parse().unwrap_or_else(|e| panic!("{id}: {name}={text}: {e}"))
}

/// A relay's claim must outlast the producer's own delivery bound, so a live relay settles its batch
/// before another relay may take the rows over (docs/configuration.md, `RELAY_LEASE_SECS`).
#[test]
fn the_relays_lease_outlasts_its_producers_delivery_timeout() {
    let template = template();
    let mut relays = 0;
    for (id, resource) in resources(&template) {
        let variables = &resource["Properties"]["Environment"]["Variables"];
        if resource["Type"] != "AWS::Serverless::Function" || variables.get("RELAY_BATCH_SIZE").is_none() {
            continue;
        }
        relays += 1;
        // RelayConfig's default lease (shared/delivery/src/handlers/relay.rs) where the template sets none.
        let lease_ms = literal_setting(id, variables, "RELAY_LEASE_SECS", 60) * 1000;
        let delivery_ms = literal_setting(
            id,
            variables,
            "KAFKA_MESSAGE_TIMEOUT_MS",
            corebank_messaging::KafkaConfig::DEFAULT_MESSAGE_TIMEOUT_MS,
        );
        assert!(
            lease_ms > delivery_ms,
            "{id}: RELAY_LEASE_SECS ({lease_ms} ms) must be longer than KAFKA_MESSAGE_TIMEOUT_MS ({delivery_ms} ms)"
        );
    }
    assert_eq!(relays, 1, "one outbox relay");
}

/// `sam deploy --guided` asks for every parameter, offering its default: each one has a default, so a
/// first deploy can accept it, a description, and a row in docs/deploy.md's parameter table.
#[test]
fn every_parameter_has_a_default_a_description_and_a_row_in_the_deploy_guide() {
    let template = template();
    let guide = read("docs/deploy.md").unwrap();
    for (name, parameter) in template["Parameters"].as_object().unwrap() {
        assert!(parameter.get("Default").is_some(), "{name}: no Default");
        assert!(
            parameter["Description"].as_str().is_some_and(|d| !d.trim().is_empty()),
            "{name}: no Description"
        );
        let documented =
            guide.lines().any(|line| line.starts_with('|') && line.contains(&format!("`{name}`")));
        assert!(documented, "{name}: not in docs/deploy.md's parameter table");
    }
}
