//! Logs and metrics of a Lambda function.
//!
//! - Logs: `tracing` lines on standard output, JSON when the function's log format is JSON. Inside an
//!   invocation every line carries the runtime's span, with the request id and, under active
//!   tracing, the X-Ray trace id.
//! - Metrics: the names of `corebank_app::telemetry` are gathered in the process and written after
//!   each invocation as one CloudWatch embedded-metric-format document per label set, on standard
//!   output, which CloudWatch Logs turns into metrics in the namespace `METRICS_NAMESPACE` (default
//!   `CoreBank`). Nothing is sent over the network by the function.

use std::io::Write;
use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

/// Variables [`init`] reads: the metrics' namespace, and the function's name (which Lambda sets) as
/// the cold-start metric's dimension.
pub const ENV_VARS: &[&str] = &["METRICS_NAMESPACE", "AWS_LAMBDA_FUNCTION_NAME"];

/// The namespace when `METRICS_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "CoreBank";

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the metrics recorder and counts this cold start. Call once in `main`, after the log
/// subscriber. A second call, or a recorder already installed, leaves the first in place.
pub fn init() {
    let namespace = std::env::var("METRICS_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if COLLECTOR.get().is_none() {
        match metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(namespace).init() {
            Ok(collector) => {
                let _ = COLLECTOR.set(collector);
                corebank_app::telemetry::describe();
            }
            Err(e) => tracing::warn!(error = %e, "metrics recorder not installed; no metrics from this process"),
        }
    }
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned());
    metrics::counter!(corebank_app::telemetry::COLD_STARTS, "function" => function).increment(1);
}

/// Writes the metrics gathered since the last flush, as EMF documents on standard output, in one
/// write so that no log line lands inside a document. Call after each invocation.
pub fn flush() {
    let Some(collector) = COLLECTOR.get() else { return };
    let mut buffer = Vec::with_capacity(1024);
    if let Err(e) = collector.flush(&mut buffer) {
        tracing::warn!(error = %e, "metrics not written");
        return;
    }
    if buffer.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&buffer).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "metrics not written");
    }
}

/// Runs `invocation` and then [`flush`]es the metrics it recorded, whatever its outcome.
pub async fn flushed<T>(invocation: impl Future<Output = T>) -> T {
    let out = invocation.await;
    flush();
    out
}
