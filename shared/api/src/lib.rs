//! The HTTP contract of the core bank over `lambda_http` types.
//!
//! Every handler takes a `lambda_http::Request` and returns a `lambda_http::Response`, so the same
//! functions serve API Gateway in Lambda and the local runner. Requests are decoded in one place
//! ([`decode`]), errors become HTTP in one place ([`error`]), and [`router`] holds the route table
//! that the runner, the SAM template check and the OpenAPI check share.
#![warn(missing_docs)]

pub mod access;
pub mod decode;
pub mod dto;
pub mod error;
pub mod handlers;
pub mod render;
pub mod response;
pub mod router;

use std::sync::Arc;

use corebank_app::App;
use corebank_app::read_side::{PipelineHealth, ProjectionBarrier};

pub use error::ApiError;
pub use router::{Route, dispatch};

/// What the handlers share, built once per process.
#[derive(Clone)]
pub struct Deps {
    /// The use cases.
    pub app: App,
    /// Reported by health where the process runs a pipeline.
    pub pipeline: Option<Arc<dyn PipelineHealth>>,
    /// Where the host can, a command's 201 waits for the read side to see it.
    pub barrier: Option<Arc<dyn ProjectionBarrier>>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").field("app", &self.app).finish_non_exhaustive()
    }
}

impl Deps {
    /// Handlers over an app, with no pipeline attached.
    pub fn new(app: App) -> Self {
        if app.config.admin_token.is_none() {
            tracing::warn!("ADMIN_TOKEN is not set: the admin routes take only principals with ledger:admin");
        }
        Self { app, pipeline: None, barrier: None }
    }
}

/// The renderer the command service stores responses with.
pub fn renderer() -> Arc<dyn corebank_app::command::ResponseRenderer> {
    Arc::new(render::JsonRenderer)
}
