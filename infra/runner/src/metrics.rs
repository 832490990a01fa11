//! The runner's `GET /metrics`: the figures of `corebank_app::telemetry` (the ones the Lambda
//! functions write to CloudWatch) in Prometheus' text format, for a scraper on the same host or
//! network. It is outside `/api` and answers counts only; bind the runner (`BIND_ADDR`, default
//! `127.0.0.1`) where only the scraper reaches it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Where the figures are read: `None` when another recorder was installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The path of the route.
pub const PATH: &str = "/metrics";

/// Installs the process's metrics recorder, once; `false` when another recorder was installed
/// first (then the route answers 404). Calling it again, from any thread, is harmless.
pub fn install() -> bool {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                corebank_app::telemetry::describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; GET /metrics is off");
                None
            }
        })
        .is_some()
}

/// The figures as Prometheus text, or `None` when no recorder of ours is installed.
pub fn render() -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    // Histograms fold their recent samples into their summaries here (no background task).
    handle.run_upkeep();
    Some(handle.render())
}
