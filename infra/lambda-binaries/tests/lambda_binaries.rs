//! The binaries that deploy, run as Lambda runs them, with the payloads their triggers deliver:
//!
//! 1. `create-account` and `deposit` get API Gateway REST proxy events (the API's own fixtures, with
//!    the authorizer's principal in the request context) and write to DynamoDB (moto);
//! 2. `outbox-publisher` gets the DynamoDB Streams batch read from moto's stream of the events table
//!    and publishes to Kafka (tansu);
//! 3. `projector` gets the MSK batch built from what the broker holds and writes the balance row.
//!
//! Each binary is a child process polling its own local Runtime API (`corebank_lambda_binaries`).
//! The binaries are built (debug) into this test's target directory first, so the test never runs
//! stale ones.
//!
//! Run: `SERVICES="dynamodb kafka" infra/scripts/with-services.sh cargo test -p
//! corebank-lambda-binaries --test lambda_binaries`. Without `AWS_ENDPOINT_URL` or `KAFKA_BOOTSTRAP`
//! the test fails; it never skips. Tables and topics are fresh per run.

#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corebank_delivery::emulators::stream_poller::lambda_record_json;
use corebank_lambda_binaries::{Function, Outcome};
use corebank_messaging::{KafkaConfig, ensure_topics};
use corebank_store::dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use corebank_store::dynamodb::{Client as DynamoClient, create_tables};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

/// Upper bound of one invocation, cold start included, and of every wait: a hung binary or a missing
/// record fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The functions this test runs, by package (and binary) name.
const FUNCTIONS: [&str; 4] = ["create-account", "deposit", "outbox-publisher", "projector"];

const CREATE_ACCOUNT: &str = include_str!("../../../shared/api/tests/fixtures/create_account.json");
const DEPOSIT: &str = include_str!("../../../shared/api/tests/fixtures/deposit.json");
/// The account and stream the fixtures name.
const ACCOUNT_ID: &str = "acc-lambda-1";
const STREAM_ID: &str = "account-acc-lambda-1";

fn required(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        panic!(
            "{name} is not set: this test needs moto and a Kafka broker. Run it through \
             `SERVICES=\"dynamodb kafka\" infra/scripts/with-services.sh cargo test -p corebank-lambda-binaries --test lambda_binaries`"
        )
    })
}

/// `target/<profile>`, where this test binary (in its `deps` folder) was built.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the function binaries into this test's target directory and returns it. Cargo answers at
/// once when they are up to date; a failed build fails the test with cargo's output.
fn built_binaries() -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("<target>/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.arg("build").current_dir(env!("CARGO_MANIFEST_DIR")).env("CARGO_TARGET_DIR", target);
    for package in FUNCTIONS {
        build.args(["-p", package]);
    }
    if profile.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let output = build.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building the function binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in FUNCTIONS {
        assert!(profile.join(name).is_file(), "{name} was not built into {}", profile.display());
    }
    profile
}

/// Invokes `function` and returns what it posted to `.../response`; anything else fails the test with
/// the function's log.
async fn answer(function: &mut Function, payload: impl Into<bytes::Bytes>) -> Value {
    match function.invoke(payload, PATIENCE).await {
        Ok(Outcome::Response(body)) => serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{} answered non-JSON ({e}): {}", function.name(), String::from_utf8_lossy(&body))
        }),
        Ok(Outcome::Error(error)) => {
            panic!("{} reported an error: {error}\n{}", function.name(), function.log())
        }
        Err(error) => panic!("{}: {error}\n{}", function.name(), function.log()),
    }
}

/// Starts the binary `name` of `bin` as the function of that name with `env`.
async fn start(bin: &Path, name: &str, env: &[(&str, &str)]) -> Function {
    Function::spawn(&bin.join(name), name, env.iter().copied())
        .await
        .unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

/// The API Gateway answer's status and its body as JSON.
fn http_answer(answer: &Value) -> (u64, Value) {
    let status = answer["statusCode"].as_u64().unwrap_or_else(|| panic!("no statusCode in {answer}"));
    let body = answer["body"].as_str().unwrap_or_else(|| panic!("no body in {answer}"));
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body}")))
}

/// Every record on the events table's stream, from the start of each shard.
async fn stream_records(
    dynamo: &DynamoClient,
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
) -> (String, Vec<aws_sdk_dynamodbstreams::types::Record>) {
    let description = dynamo.describe_table().table_name(table).send().await.expect("DescribeTable");
    let arn = description
        .table()
        .and_then(|t| t.latest_stream_arn())
        .unwrap_or_else(|| panic!("{table} has no stream"))
        .to_owned();
    let stream = streams.describe_stream().stream_arn(&arn).send().await.expect("DescribeStream");
    let shards = stream.stream_description().map(|d| d.shards().to_vec()).unwrap_or_default();
    let mut records = Vec::new();
    for shard in shards {
        let Some(shard_id) = shard.shard_id() else { continue };
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("GetShardIterator");
        let Some(iterator) = iterator.shard_iterator() else { continue };
        let page = streams.get_records().shard_iterator(iterator).send().await.expect("GetRecords");
        records.extend(page.records().iter().cloned());
    }
    (arn, records)
}

/// The MSK event Lambda delivers for `messages` of one topic partition: key and value in base64,
/// headers as byte arrays, grouped under `"<topic>-<partition>"`.
fn msk_event(messages: &[rdkafka::message::OwnedMessage], bootstrap: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let headers: Vec<Value> = m
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| json!({ h.key: h.value.unwrap_or_default().iter().map(|b| i8::from_ne_bytes([*b])).collect::<Vec<_>>() }))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "topic": m.topic(),
                "partition": m.partition(),
                "offset": m.offset(),
                "timestamp": m.timestamp().to_millis().unwrap_or_default(),
                "timestampType": "CREATE_TIME",
                "key": m.key().map(|k| BASE64.encode(k)),
                "value": m.payload().map(|v| BASE64.encode(v)),
                "headers": headers,
            })
        })
        .collect();
    let key = messages.first().map(|m| format!("{}-{}", m.topic(), m.partition())).unwrap_or_default();
    json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/corebank/00000000-0000-0000-0000-000000000000-1",
        "bootstrapServers": bootstrap,
        "records": { key: records },
    })
}

/// Reads partition 0 of `topic` from the beginning until `count` records have arrived.
async fn consume(kafka: &KafkaConfig, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("lambda-binaries-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(topic, 0, Offset::Beginning).expect("partition offset");
    consumer.assign(&partitions).expect("assign");
    let mut messages = Vec::new();
    while messages.len() < count {
        match tokio::time::timeout(PATIENCE, consumer.recv()).await {
            Ok(Ok(message)) => messages.push(message.detach()),
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) => panic!("{topic} held {} of {count} records after {PATIENCE:?}", messages.len()),
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_travels_through_the_deployed_binaries_from_api_gateway_to_the_balance_row() {
    let endpoint = required("AWS_ENDPOINT_URL");
    let bootstrap = required("KAFKA_BOOTSTRAP");
    let bin = tokio::task::spawn_blocking(built_binaries).await.expect("build task");
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());

    let run = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("lambda_{run}_");
    let account_topic = format!("test.account-events.{run}");
    let transfer_topic = format!("test.transfer-events.{run}");

    // What `CREATE_TABLES=true` does in the runner's DynamoDB mode, and the topics the stack's
    // cluster carries.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let dynamo = DynamoClient::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let tables = create_tables(&dynamo, &prefix).await.expect("tables");
    let kafka = KafkaConfig::from_lookup(|name| match name {
        "KAFKA_BOOTSTRAP" => Some(bootstrap.clone()),
        _ => None,
    })
    .expect("Kafka config");
    ensure_topics(&kafka, &[&account_topic, &transfer_topic], 1).await.expect("topics");

    // The environment template.yaml gives the functions, pointed at the local servers.
    let aws = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", region.as_str()),
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("RUST_LOG", "info"),
        ("METRICS_NAMESPACE", "CoreBank/lambda-binaries-test"),
    ];
    // Globals.Function: the store kind, the stack's prefix and every table by name.
    let store = [
        ("STORE_KIND", "dynamodb"),
        ("TABLE_PREFIX", prefix.as_str()),
        ("EVENTS_TABLE", tables.events.as_str()),
        ("IDEMPOTENCY_TABLE", tables.idempotency.as_str()),
        ("TRANSACTIONS_TABLE", tables.transactions.as_str()),
        ("SNAPSHOTS_TABLE", tables.snapshots.as_str()),
        ("ACCOUNT_SUMMARY_TABLE", tables.account_summary.as_str()),
        ("ACCOUNT_STATEMENT_TABLE", tables.account_statement.as_str()),
        ("PROJECTION_CHECKPOINTS_TABLE", tables.projection_checkpoints.as_str()),
        ("REBUILD_JOBS_TABLE", tables.rebuild_jobs.as_str()),
        ("TRANSFER_STATUS_TABLE", tables.transfer_status.as_str()),
    ];
    let messaging = [
        ("KAFKA_BOOTSTRAP", bootstrap.as_str()),
        ("KAFKA_ACCOUNT_EVENTS_TOPIC", account_topic.as_str()),
        ("KAFKA_TRANSFER_EVENTS_TOPIC", transfer_topic.as_str()),
        ("KAFKA_MESSAGE_TIMEOUT_MS", "10000"),
    ];

    // 1. API Gateway -> create-account, deposit -> events table.
    let mut create_account = start(&bin, "create-account", &[&aws[..], &store[..]].concat()).await;
    let (status, body) = http_answer(&answer(&mut create_account, CREATE_ACCOUNT).await);
    assert_eq!(status, 201, "create-account answered {body}");
    let mut deposit = start(&bin, "deposit", &[&aws[..], &store[..]].concat()).await;
    let (status, body) = http_answer(&answer(&mut deposit, DEPOSIT).await);
    assert_eq!(status, 201, "deposit answered {body}");
    assert_eq!(body["accountId"], ACCOUNT_ID);
    assert_eq!(body["version"], 2);
    let stored = dynamo
        .get_item()
        .table_name(&tables.events)
        .key("stream_id", AttributeValue::S(STREAM_ID.to_owned()))
        .key("version", AttributeValue::N("2".to_owned()))
        .send()
        .await
        .expect("GetItem events");
    let stored = stored.item().unwrap_or_else(|| panic!("no event 2 of {STREAM_ID} in {}", tables.events));
    assert_eq!(stored.get("event_type"), Some(&AttributeValue::S("MoneyDeposited".to_owned())));
    // The caller is the authorizer's principal from the request context, never the body's actor.
    let Some(AttributeValue::S(metadata)) = stored.get("metadata") else {
        panic!("no metadata in {stored:?}")
    };
    let metadata: Value = serde_json::from_str(metadata).expect("metadata is JSON");
    assert_eq!(metadata["actor"], "operator-7", "{metadata}");
    assert_eq!(metadata["requestedActor"], "teller-3", "{metadata}");
    assert_eq!(metadata["commandId"], "idem-deposit-0001", "{metadata}");
    // The trace the runtime gave the invocation (its Root), never a header of the caller's.
    let trace_id = metadata["traceId"].as_str().unwrap_or_else(|| panic!("no traceId in {metadata}"));
    assert!(trace_id.starts_with("1-") && trace_id.len() == 35, "{metadata}");
    // The function's figures, as CloudWatch reads them from its output.
    let emf = emf_metrics(&deposit.log());
    assert_eq!(emf.get("cold_starts").map(|(_, v)| *v), Some(1.0), "{emf:?}");
    let (dimensions, accepted) = emf.get("commands_accepted").unwrap_or_else(|| panic!("{emf:?}"));
    assert_eq!((dimensions.as_str(), *accepted), ("operation=deposit", 1.0), "{emf:?}");

    // 2. The events table's stream -> outbox-publisher -> Kafka.
    let (stream_arn, records) = stream_records(&dynamo, &streams, &tables.events).await;
    assert_eq!(records.len(), 2, "one INSERT per event: {records:?}");
    let batch =
        json!({ "Records": records.iter().map(|r| lambda_record_json(r, &stream_arn)).collect::<Vec<_>>() });
    let mut publisher = start(&bin, "outbox-publisher", &[&aws[..], &messaging[..]].concat()).await;
    let response = answer(&mut publisher, batch.to_string()).await;
    assert_eq!(response["batchItemFailures"], json!([]), "outbox-publisher answered {response}");
    let messages = consume(&kafka, &account_topic, 2).await;
    let keys: Vec<_> =
        messages.iter().map(|m| String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()).collect();
    assert_eq!(keys, [STREAM_ID, STREAM_ID], "the account's events are keyed by its stream");

    // 3. MSK -> projector -> account_summary. A payload that is no MSK event is the runtime's error,
    // reported through `.../error`; the process then takes the next invocation.
    let mut projector = start(&bin, "projector", &[&aws[..], &store[..]].concat()).await;
    match projector.invoke("[1, 2, 3]", PATIENCE).await {
        Ok(Outcome::Error(error)) => assert!(!error.body.is_empty(), "an empty error document"),
        other => panic!("projector took a non-event: {other:?}\n{}", projector.log()),
    }
    let batch = msk_event(&messages, &bootstrap).to_string();
    let response = answer(&mut projector, batch.clone()).await;
    assert_eq!(response, Value::Null, "projector answered {response}");
    assert_eq!(balance_minor(&dynamo, &tables.account_summary).await, "15075");
    let emf = emf_metrics(&projector.log());
    let lag = emf.get("projection_lag_ms").map(|(_, v)| *v).unwrap_or_else(|| panic!("{emf:?}"));
    assert!((0.0..600_000.0).contains(&lag), "projection lag {lag} ms");
    // MSK delivers at least once: the same batch again changes nothing.
    let response = answer(&mut projector, batch).await;
    assert_eq!(response, Value::Null, "projector answered {response}");
    assert_eq!(balance_minor(&dynamo, &tables.account_summary).await, "15075");
}

/// The metrics of every embedded-metric-format document in a function's output, in the namespace
/// the test gives: name to (its dimensions as `name=value` joined by `,`, its last value; a list
/// of values counts by its first).
fn emf_metrics(log: &str) -> std::collections::BTreeMap<String, (String, f64)> {
    let mut found = std::collections::BTreeMap::new();
    for line in log.lines() {
        let Ok(doc) = serde_json::from_str::<Value>(line) else { continue };
        let Some(directives) = doc["_aws"]["CloudWatchMetrics"].as_array() else { continue };
        for directive in directives {
            assert_eq!(directive["Namespace"], "CoreBank/lambda-binaries-test", "{line}");
            let names: Vec<&str> = directive["Dimensions"][0]
                .as_array()
                .map(|d| d.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let dimensions =
                names.iter().map(|n| format!("{n}={}", doc[n].as_str().unwrap_or("?"))).collect::<Vec<_>>();
            for metric in directive["Metrics"].as_array().into_iter().flatten() {
                let name = metric["Name"].as_str().unwrap_or_default();
                let value = match &doc[name] {
                    Value::Array(values) => values.first().and_then(Value::as_f64),
                    other => other.as_f64(),
                };
                let value = value.unwrap_or_else(|| panic!("{name} has no number in {line}"));
                found.insert(name.to_owned(), (dimensions.join(","), value));
            }
        }
    }
    found
}

/// The account's `balance_minor` in the summary table.
async fn balance_minor(dynamo: &DynamoClient, table: &str) -> String {
    let summary = dynamo
        .get_item()
        .table_name(table)
        .key("account_id", AttributeValue::S(ACCOUNT_ID.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem account_summary");
    let summary = summary.item().unwrap_or_else(|| panic!("no summary row for {ACCOUNT_ID}"));
    match summary.get("balance_minor") {
        Some(AttributeValue::N(minor)) => minor.clone(),
        other => panic!("balance_minor is {other:?} in {summary:?}"),
    }
}
