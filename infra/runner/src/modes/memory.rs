//! The embedded default: memory stores and the in-process pipeline.

use corebank_app::AppConfig;
use tokio::sync::watch;

use super::{Started, stopped};

/// Memory stores; the pipeline tails the memory feed.
pub fn start(config: AppConfig, wait_for_projection: bool, shutdown: watch::Receiver<bool>) -> Started {
    let (deps, pipeline) = crate::embedded(config, wait_for_projection);
    Started {
        deps,
        tasks: vec![Box::pin(pipeline.run(stopped(shutdown)))],
        description: "store: memory, pipeline: embedded".to_owned(),
    }
}
