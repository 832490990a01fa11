//! `corebank-runner`: every route's handler on one port, API-Gateway-shaped.
//!
//! Environment: `BIND_ADDR` (default 127.0.0.1), `PORT` (3000), `STORE_KIND` (`memory`, `sqlite`,
//! `postgres`, `dynamodb`; default `memory`; `sqlite` keeps its file in `DATA_DIR`), `PIPELINE` (`embedded` or `kafka`; default `embedded`),
//! `ADMIN_TOKEN` (enables the admin routes), `AUTH_MODE` (`open`, the default, or `jwt` with
//! `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`, `AUTH_ISSUER`, `AUTH_AUDIENCE`; see `corebank_runner::auth`),
//! `RECONCILE_INTERVAL_SECS` (default 60, `0` off: a pass of the transfer reconciler, with
//! `RECONCILE_PENDING_AFTER_SECS` and `RECONCILE_BATCH_MAX`), `WAIT_FOR_PROJECTION` (default `true`: a command answers
//! once the read side has it, where the pipeline is in process), plus the settings of
//! `AppConfig::from_env` and of the chosen store and pipeline. `RUST_LOG` sets the log filter.
//! `GET /metrics` (outside `/api`) answers the bank's figures in Prometheus' text format.

use corebank_app::config::env_parse;
use corebank_runner::modes::{self, PipelineKind, StoreKind};
use corebank_runner::{Gate, RunnerError, listen_addr, serve_gated};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<(), RunnerError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    corebank_runner::metrics::install();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return corebank_runner::cli::run(&args).await;
    }
    let config = corebank_app::AppConfig::from_env()?;
    let wait = env_parse("WAIT_FOR_PROJECTION", true)?;
    let store: StoreKind = env_parse("STORE_KIND", modes::DEFAULT_STORE_KIND)?;
    let pipeline: PipelineKind = env_parse("PIPELINE", PipelineKind::Embedded)?;
    let addr = listen_addr()?;
    let gate = Gate::from_env().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let reconcile_every: u64 = env_parse("RECONCILE_INTERVAL_SECS", 60)?;
    let reconcile = corebank_app::reconcile::ReconcileSettings::from_env()?;
    let started = modes::start(store, pipeline, config, wait, stop_rx.clone()).await?;
    let reconciler = corebank_runner::reconcile::task(
        started.deps.app.clone(),
        reconcile,
        std::time::Duration::from_secs(reconcile_every),
        stop_rx,
    );
    let tasks: Vec<_> = started.tasks.into_iter().chain(reconciler).map(tokio::spawn).collect();
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!("core bank listening on http://{local}/api ({})", started.description);
    tracing::info!("{}", gate.describe());
    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    serve_gated(listener, started.deps, gate, shutdown).await?;
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}
