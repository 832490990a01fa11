//! The local runner: serves every route's handler behind an API-Gateway-shaped router.
//!
//! Requests under `/api` are turned into the same `lambda_http::Request` that API Gateway's REST
//! proxy integration produces (body as text, path parameters filled by the router, a request id),
//! handed to the very handler functions the Lambda binaries run, and the `lambda_http::Response` is
//! written back. With the embedded default, stores are in memory and appended events flow through
//! the in-process pipeline into the projector.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use corebank_api::Deps;
use corebank_api::decode::MAX_BODY_BYTES;
use corebank_api::error::error_response;
use corebank_app::{App, AppConfig, SystemClock};
use corebank_delivery::emulators::embedded::EmbeddedPipeline;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use tokio::net::TcpListener;

pub mod auth;
pub mod cli;
pub mod metrics;
pub mod modes;
pub mod reconcile;

pub use auth::Gate;

/// The base path every route lives under locally.
pub const BASE_PATH: &str = "/api";

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] corebank_app::ConfigError),
    /// Could not bind or serve.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The store or pipeline asked for could not be started.
    #[error("{0}")]
    Mode(String),
}

/// The embedded default: memory stores, the in-process pipeline (projector and transfer saga), and
/// handlers over them. Returns the handlers' dependencies and the pipeline to run.
pub fn embedded(config: AppConfig, wait_for_projection: bool) -> (Deps, Arc<EmbeddedPipeline>) {
    let (stores, feed) = corebank_store::memory::stores();
    let app = App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock));
    let pipeline = EmbeddedPipeline::with_saga(feed, app.projector.clone(), app.saga.clone());
    pipeline.park_with(
        app.parking(corebank_delivery::handlers::projection::CONSUMER),
        app.parking(corebank_delivery::handlers::saga::CONSUMER),
    );
    let mut deps = Deps::new(app);
    deps.pipeline = Some(pipeline.clone());
    if wait_for_projection {
        deps.barrier = Some(pipeline.clone());
    }
    (deps, pipeline)
}

fn not_found() -> lambda_http::Response<Body> {
    error_response(&corebank_api::ApiError::NotFound, &uuid::Uuid::new_v4().to_string())
}

/// Serves one HTTP request: strips `/api`, builds the Lambda-shaped request, authenticates it
/// (`gate`), dispatches.
pub async fn handle(deps: &Deps, gate: &Gate, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    if req.uri().path() == metrics::PATH
        && req.method() == http::Method::GET
        && let Some(text) = metrics::render()
    {
        return metrics_response(text);
    }
    let response = match to_lambda(req).await {
        Ok(req) => {
            let path = req.uri().path().to_owned();
            let request_id = corebank_api::handlers::request_id(&req);
            match gate.admit(req, &path, &request_id).await {
                Ok(req) => corebank_api::dispatch(deps, req).await,
                Err(refused) => *refused,
            }
        }
        Err(resp) => resp,
    };
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

fn metrics_response(text: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    if let Ok(id) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-request-id", id);
    }
    response
}

async fn to_lambda(
    req: hyper::Request<Incoming>,
) -> Result<lambda_http::Request, lambda_http::Response<Body>> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path();
    let Some(rest) = path.strip_prefix(BASE_PATH).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return Err(not_found());
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    parts.uri = http::Uri::try_from(path_and_query).map_err(|_| not_found())?;
    // The handlers fall back to a fresh id on every call when the client's is absent or unusable,
    // so settle it once here: a response's id and its events' correlation id must be one id.
    let usable = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(corebank_api::handlers::is_usable_request_id);
    if !usable && let Ok(v) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        parts.headers.insert("x-request-id", v);
    }
    let request_id =
        parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(error_response(&corebank_api::ApiError::PayloadTooLarge, &request_id));
        }
        Err(_) => {
            return Err(error_response(
                &corebank_api::ApiError::Validation("the request body could not be read".to_owned()),
                &request_id,
            ));
        }
    };
    // API Gateway hands text bodies over as text and others base64-decoded as binary.
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) if text.is_empty() => Body::Empty,
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    Ok(lambda_http::Request::from_parts(parts, body))
}

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish; every caller
/// acts as `local-operator` (`AUTH_MODE=open`).
pub async fn serve(
    listener: TcpListener,
    deps: Deps,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunnerError> {
    serve_gated(listener, deps, Gate::Open, shutdown).await
}

/// [`serve`] with callers authenticated by `gate`.
pub async fn serve_gated(
    listener: TcpListener,
    deps: Deps,
    gate: Gate,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunnerError> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let deps = Arc::new(deps);
    let gate = Arc::new(gate);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small request/response exchanges: send them without Nagle's delay.
        let _ = stream.set_nodelay(true);
        let (deps, gate) = (deps.clone(), gate.clone());
        let service = hyper::service::service_fn(move |req| {
            let (deps, gate) = (deps.clone(), gate.clone());
            async move { Ok::<_, Infallible>(handle(&deps, &gate, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing");
        }
    }
    Ok(())
}

/// Where the runner listens.
pub fn listen_addr() -> Result<SocketAddr, corebank_app::ConfigError> {
    let host: std::net::IpAddr =
        corebank_app::config::env_parse("BIND_ADDR", std::net::IpAddr::from([127, 0, 0, 1]))?;
    let port: u16 = corebank_app::config::env_parse("PORT", 3000)?;
    Ok(SocketAddr::new(host, port))
}
