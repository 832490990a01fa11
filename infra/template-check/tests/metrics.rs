//! The bank's own metrics (`corebank_app::telemetry::CATALOGUE`) against `template.yaml` and
//! `docs/operations/metrics.md`: the alarms on them name catalogued metrics with exactly their labels,
//! the page describes every metric and every alarm, and tracing is on for the API and each function.
//! Run: `cargo test -p corebank-template-check`.

#![cfg(test)]

use std::collections::BTreeSet;

use corebank_app::telemetry::CATALOGUE;
use corebank_template_check::{as_list, effective_template, load_yaml, read};
use serde_json::{Value, json};

/// template.yaml as the stack receives it: each function with `Globals.Function` merged in.
fn template() -> Value {
    effective_template(&load_yaml("template.yaml").unwrap())
}

fn resources(template: &Value) -> &serde_json::Map<String, Value> {
    template["Resources"].as_object().expect("Resources")
}

/// The namespace the functions write their metrics to, and the alarms on them read.
fn namespace() -> Value {
    json!({"Fn::Sub": "CoreBank/${AWS::StackName}"})
}

fn alarms(template: &Value) -> Vec<(&String, &Value)> {
    resources(template).iter().filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm").collect()
}

/// Every function writes to the stack's namespace, and every alarm that reads a namespace other
/// than AWS's own reads that one.
#[test]
fn every_function_writes_and_every_application_alarm_reads_the_stacks_namespace() {
    let template = template();
    for (id, resource) in resources(&template) {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        assert_eq!(
            resource["Properties"]["Environment"]["Variables"]["METRICS_NAMESPACE"],
            namespace(),
            "{id}: METRICS_NAMESPACE"
        );
    }
    for (id, alarm) in alarms(&template) {
        let ns = &alarm["Properties"]["Namespace"];
        let aws = ns.as_str().is_some_and(|n| n.starts_with("AWS/"));
        assert!(aws || *ns == namespace(), "{id}: namespace {ns} is neither AWS's nor the stack's");
    }
}

/// An alarm on the bank's metrics names a metric of the catalogue, with Dimensions whose names are
/// exactly the metric's labels: CloudWatch matches a metric by its whole dimension set, so an alarm
/// with one dimension more or less than the metric was written with never sees a data point.
#[test]
fn every_alarm_on_the_banks_metrics_names_a_catalogued_metric_with_exactly_its_labels() {
    let template = template();
    let mut seen = 0;
    for (id, alarm) in alarms(&template) {
        let p = &alarm["Properties"];
        if p["Namespace"] != namespace() {
            continue;
        }
        seen += 1;
        let name = p["MetricName"].as_str().unwrap_or_else(|| panic!("{id}: MetricName"));
        let metric = CATALOGUE
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{id}: {name} is not in corebank_app::telemetry::CATALOGUE"));
        let dimensions: Vec<&str> = as_list(&p["Dimensions"])
            .iter()
            .map(|d| d["Name"].as_str().unwrap_or_else(|| panic!("{id}: a dimension without a Name")))
            .collect();
        let names: BTreeSet<&str> = dimensions.iter().copied().collect();
        assert_eq!(names.len(), dimensions.len(), "{id}: a dimension named twice");
        let labels: BTreeSet<&str> = metric.labels.iter().copied().collect();
        assert_eq!(names, labels, "{id}: the Dimensions of {name} must be its labels");
        for d in as_list(&p["Dimensions"]) {
            assert!(d["Value"].as_str().is_some_and(|v| !v.is_empty()), "{id}: dimension {d} needs a value");
        }
        assert!(p["TreatMissingData"].is_string(), "{id}: say how a period without data counts");
    }
    assert!(seen > 0, "no alarm reads the bank's own metrics");
}

/// `docs/operations/metrics.md` names every metric of the catalogue and every alarm of the template
/// (the per-function Errors and Throttles alarms by their pattern, `<Function>ErrorsAlarm`).
#[test]
fn the_metrics_page_names_every_metric_and_every_alarm() {
    let page = read("docs/operations/metrics.md").unwrap();
    for metric in CATALOGUE {
        assert!(
            page.contains(&format!("`{}`", metric.name)),
            "docs/operations/metrics.md: no `{}`",
            metric.name
        );
    }
    let template = template();
    let res = resources(&template);
    for (id, alarm) in alarms(&template) {
        if page.contains(&format!("`{id}`")) {
            continue;
        }
        // `<Function>ErrorsAlarm` and `<Function>ThrottlesAlarm` stand for one alarm per function.
        let per_function = ["Errors", "Throttles"].into_iter().find_map(|metric| {
            let function = format!("{}Function", id.strip_suffix(&format!("{metric}Alarm"))?);
            let p = &alarm["Properties"];
            let watches = res.get(&function).is_some_and(|f| f["Type"] == "AWS::Serverless::Function")
                && p["MetricName"] == metric
                && as_list(&p["Dimensions"]).iter().any(|d| d["Value"] == json!({"Ref": function}));
            watches.then(|| format!("`<Function>{metric}Alarm`"))
        });
        let named = per_function.is_some_and(|pattern| page.contains(&pattern));
        assert!(named, "docs/operations/metrics.md: no `{id}`");
    }
}

/// X-Ray traces every request from the API stage through each function. No function has a role of
/// its own: SAM adds the X-Ray write policy only to the roles it generates.
#[test]
fn the_api_and_every_function_are_traced() {
    let template = template();
    let res = resources(&template);
    assert_eq!(res["CoreBankApi"]["Properties"]["TracingEnabled"], true, "CoreBankApi: TracingEnabled");
    for (id, resource) in res {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        assert_eq!(resource["Properties"]["Tracing"], "Active", "{id}: Tracing");
        assert!(
            resource["Properties"].get("Role").is_none(),
            "{id}: a Role of its own needs xray:PutTraceSegments and xray:PutTelemetryRecords"
        );
    }
}
