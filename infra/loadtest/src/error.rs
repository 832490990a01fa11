//! The tool's fatal errors. Request failures during the load are data for the report, not errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("invalid URL `{url}`: {source}")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("a task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the JSON report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot draw {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}
