//! The runner's reconciler task: a pass of `corebank_app::reconcile::Reconciler` every
//! `RECONCILE_INTERVAL_SECS` (default 60; `0` turns it off), as the `reconciler` function runs on a
//! schedule in AWS, recording the same figures (`App::reconcile`).

use std::time::Duration;

use corebank_app::App;
use corebank_app::reconcile::ReconcileSettings;
use tokio::sync::watch;

use crate::modes::{Task, stopped};

/// The task, or `None` when `every` is zero.
pub fn task(
    app: App,
    settings: ReconcileSettings,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> Option<Task> {
    if every.is_zero() {
        return None;
    }
    Some(Box::pin(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: a restarted runner finishes what its last run left at once.
        let stop = stopped(shutdown);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => match app.reconcile(&settings).await {
                    Ok(report) if report.found_work() => tracing::info!(?report, "reconciler pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconciler pass failed; the next one retries"),
                },
            }
        }
    }))
}
