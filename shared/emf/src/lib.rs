//! Logs and metrics of a Lambda function (re-exported by `corebank-wiring` as `telemetry`).
//!
//! - Logs: `tracing` lines on standard output, JSON when the function's log format is JSON. Inside an
//!   invocation every line carries the runtime's span, with the request id and, under active
//!   tracing, the X-Ray trace id.
//! - Metrics: the names of `corebank_app::telemetry` are gathered in the process and written after
//!   each invocation as one CloudWatch embedded-metric-format document per label set, on standard
//!   output, which CloudWatch Logs turns into metrics in the namespace `METRICS_NAMESPACE` (default
//!   `CoreBank`). Nothing is sent over the network by the function.

#![warn(missing_docs)]

use std::io::Write;
use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

/// Variables [`init`] reads: the metrics' namespace, and the function's name (which Lambda sets) as
/// the cold-start metric's dimension.
pub const ENV_VARS: &[&str] = &["METRICS_NAMESPACE", "AWS_LAMBDA_FUNCTION_NAME"];

/// The namespace when `METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "CoreBank";

/// The process's collector: `None` when another recorder was installed first.
static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// Installs the metrics recorder and counts this cold start. Call once in `main`, after the log
/// subscriber. A second call, or a recorder already installed, leaves the first in place.
pub fn init() {
    let namespace = std::env::var("METRICS_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned());
    init_with(namespace, function);
}

/// [`init`] with the namespace and the function's name given.
pub fn init_with(namespace: String, function: String) {
    let installed = COLLECTOR.get_or_init(|| {
        match metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(namespace).init() {
            Ok(collector) => {
                corebank_app::telemetry::describe();
                Some(collector)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; no metrics from this process");
                None
            }
        }
    });
    if installed.is_some() {
        metrics::counter!(corebank_app::telemetry::COLD_STARTS, "function" => function).increment(1);
    }
}

/// Writes the metrics gathered since the last flush, as EMF documents on standard output, in one
/// write so that no log line lands inside a document. Call after each invocation.
pub fn flush() {
    let mut buffer = Vec::with_capacity(1024);
    flush_into(&mut buffer);
    if buffer.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&buffer).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "metrics not written");
    }
}

/// Appends the metrics gathered since the last flush to `buffer`, one EMF document per line.
pub fn flush_into(buffer: &mut Vec<u8>) {
    let Some(Some(collector)) = COLLECTOR.get() else { return };
    if let Err(e) = collector.flush(&mut *buffer) {
        tracing::warn!(error = %e, "metrics not written");
    }
}

/// Runs `invocation` and then [`flush`]es the metrics it recorded, whatever its outcome.
pub async fn flushed<T>(invocation: impl Future<Output = T>) -> T {
    let out = invocation.await;
    flush();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(buffer: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(buffer)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[test]
    fn figures_are_written_as_embedded_metric_documents_and_counted_once() {
        init_with("CoreBank/unit".to_owned(), "deposit-fn".to_owned());
        metrics::counter!(corebank_app::telemetry::COMMANDS_ACCEPTED, "operation" => "deposit").increment(2);
        metrics::histogram!(corebank_app::telemetry::PROJECTION_LAG_MS).record(42.0);
        let mut buffer = Vec::new();
        flush_into(&mut buffer);
        let docs = documents(&buffer);
        let find = |metric: &str| {
            docs.iter()
                .find(|d| d[metric] != serde_json::Value::Null)
                .unwrap_or_else(|| panic!("no {metric} in {docs:?}"))
        };
        let accepted = find("commands_accepted");
        assert_eq!(accepted["commands_accepted"], 2, "{accepted}");
        assert_eq!(accepted["operation"], "deposit", "{accepted}");
        let directive = &accepted["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "CoreBank/unit", "{accepted}");
        assert_eq!(directive["Dimensions"], serde_json::json!([["operation"]]), "{accepted}");
        assert_eq!(directive["Metrics"][0]["Unit"], "Count", "{accepted}");
        let cold = find("cold_starts");
        assert_eq!((cold["cold_starts"].as_u64(), cold["function"].as_str()), (Some(1), Some("deposit-fn")));
        let lag = find("projection_lag_ms");
        assert_eq!(lag["projection_lag_ms"], serde_json::json!([42.0]), "{lag}");
        assert_eq!(lag["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"], "Milliseconds", "{lag}");

        // A counter goes out once: the next flush has nothing new.
        let mut again = Vec::new();
        flush_into(&mut again);
        assert!(documents(&again).iter().all(|d| d["commands_accepted"] == serde_json::Value::Null));
    }
}
