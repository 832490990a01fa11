//! `STORE_KIND=sqlite`: every port in one local SQLite file (`DATA_DIR`), the embedded pipeline
//! tailing its events in commit order. The bank keeps its books across restarts: each lane of the
//! pipeline resumes from the cursor it saved in the same file, so a restart replays nothing.

use std::sync::Arc;
use std::time::Duration;

use corebank_api::Deps;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_delivery::emulators::embedded::EmbeddedPipeline;
use corebank_store::sqlite::{SqliteSettings, SqliteStores};
use tokio::sync::watch;

use super::{Started, stopped};
use crate::RunnerError;

/// The store of the environment (`DATA_DIR`, `SQLITE_SYNCHRONOUS`).
pub fn start_from_env(
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    let settings = corebank_wiring::sqlite::settings_from_lookup(|name| std::env::var(name).ok())?;
    start(settings, config, wait_for_projection, shutdown)
}

/// The store of `settings`, created when missing.
pub fn start(
    settings: SqliteSettings,
    config: AppConfig,
    wait_for_projection: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, RunnerError> {
    let path = settings.path.clone();
    let store = corebank_wiring::sqlite::open(settings).map_err(|e| RunnerError::Mode(e.to_string()))?;
    let app = App::new(config, store.stores(), corebank_api::renderer(), Arc::new(SystemClock));
    // Streams projected concurrently: their writes share the single writer's group commits.
    let pipeline = EmbeddedPipeline::with_saga_concurrent_projection(
        store.feed(),
        app.projector.clone(),
        app.saga.clone(),
    );
    pipeline.park_with(
        app.parking(corebank_delivery::handlers::projection::CONSUMER),
        app.parking(corebank_delivery::handlers::saga::CONSUMER),
    );
    let mut deps = Deps::new(app);
    deps.pipeline = Some(pipeline.clone());
    if wait_for_projection {
        deps.barrier = Some(pipeline.clone());
    }
    let purge = purge_expired_keys(store, shutdown.clone());
    Ok(Started {
        deps,
        tasks: vec![Box::pin(pipeline.run(stopped(shutdown))), Box::pin(purge)],
        description: format!("store: sqlite ({}), pipeline: embedded", path.display()),
    })
}

/// How often expired idempotency records are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Deletes idempotency records an hour or more past their TTL, every [`PURGE_INTERVAL`] until
/// shutdown, so the file does not grow with every request ever answered.
async fn purge_expired_keys(store: SqliteStores, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
        }
        match store.purge_expired(chrono::Utc::now(), chrono::Duration::hours(1)).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired idempotency records deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "deleting expired idempotency records failed; trying again later")
            }
        }
    }
}
