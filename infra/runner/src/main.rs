//! `corebank-runner`: the bank on one machine, with no services needed.
//!
//! Environment: `BIND_ADDR` (default 127.0.0.1), `PORT` (3000), `ADMIN_TOKEN` (enables the admin
//! routes), `WAIT_FOR_PROJECTION` (default `true`: a command answers once the read side has it),
//! plus the settings of `AppConfig::from_env`. `RUST_LOG` sets the log filter.

use corebank_runner::{RunnerError, embedded, listen_addr, serve};
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
    let config = corebank_app::AppConfig::from_env()?;
    let wait = corebank_app::config::env_parse("WAIT_FOR_PROJECTION", true)?;
    let addr = listen_addr()?;
    let (deps, pipeline) = embedded(config, wait);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let pipeline_task = tokio::spawn(pipeline.run(stopped(stop_rx.clone())));
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!("core bank listening on http://{local}/api (store: memory, pipeline: embedded)");
    let shutdown = async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    serve(listener, deps, shutdown).await?;
    let _ = pipeline_task.await;
    tracing::info!("stopped");
    Ok(())
}
