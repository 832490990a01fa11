//! A local Lambda Runtime API: the HTTP interface a custom runtime (`bootstrap`) polls for work.
//!
//! | route | what it does here |
//! | --- | --- |
//! | `GET /2018-06-01/runtime/invocation/next` | waits for the next queued invocation and answers its payload with `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id` |
//! | `POST /2018-06-01/runtime/invocation/{id}/response` | completes invocation `id` with the body |
//! | `POST /2018-06-01/runtime/invocation/{id}/error` | completes invocation `id` with an error (`Lambda-Runtime-Function-Error-Type` header, error body) |
//! | `POST /2018-06-01/runtime/init/error` | records that the function failed before its first poll |
//!
//! One invocation runs at a time, as in a Lambda execution environment. [`RuntimeApi::invoke`] is
//! bounded by a timeout, so a function that hangs fails its caller instead of hanging it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const PREFIX: &str = "/2018-06-01/runtime";

/// How the function ended an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body the function posted to `.../response`.
    Response(Bytes),
    /// What the function posted to `.../error`.
    Error(FunctionError),
}

/// An error the function reported, for one invocation or for its initialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// The `Lambda-Runtime-Function-Error-Type` header, when sent.
    pub error_type: Option<String>,
    /// The error document (`errorType`, `errorMessage`), as sent.
    pub body: String,
}

impl std::fmt::Display for FunctionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type.as_deref().unwrap_or("(no type)"), self.body)
    }
}

/// Why an invocation has no outcome.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The function posted to `/init/error` instead of polling for work.
    #[error("the function failed to initialise: {0}")]
    InitFailed(FunctionError),
    /// Neither a response nor an error arrived in time.
    #[error("no response or error within {0:?}")]
    TimedOut(Duration),
    /// The function's process ended while the invocation was open.
    #[error("the function's process exited ({0}) before answering")]
    Exited(String),
}

struct Invocation {
    request_id: String,
    deadline_ms: u128,
    trace_id: String,
    payload: Bytes,
}

struct Shared {
    function_arn: String,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    open: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: watch::Sender<Option<FunctionError>>,
}

impl Shared {
    fn complete(&self, request_id: &str, outcome: Outcome) -> bool {
        let sender = self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(request_id);
        sender.is_some_and(|sender| sender.send(outcome).is_ok())
    }
}

/// The Runtime API of one function, served on `127.0.0.1` on an ephemeral port until dropped.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Invocation>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves the API for `function_name` (its invoked ARN names a function of that name).
    pub async fn start(function_name: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            queue: tokio::sync::Mutex::new(receiver),
            open: Mutex::new(HashMap::new()),
            init_error: watch::Sender::new(None),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(Self { address, shared, queue, server })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` for the function: `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Queues `payload` as one invocation and waits at most `timeout` for the function to answer it.
    /// The function gets the same span as its deadline (`Lambda-Runtime-Deadline-Ms`).
    pub async fn invoke(&self, payload: impl Into<Bytes>, timeout: Duration) -> Result<Outcome, InvokeError> {
        let init_error = self.shared.init_error.subscribe();
        let request_id = uuid::Uuid::new_v4().to_string();
        let (answer, answered) = oneshot::channel();
        self.shared.open.lock().unwrap_or_else(PoisonError::into_inner).insert(request_id.clone(), answer);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let invocation = Invocation {
            request_id: request_id.clone(),
            deadline_ms: (now + timeout).as_millis(),
            trace_id: trace_id(now, &request_id),
            payload: payload.into(),
        };
        // The receiver lives in `shared` as long as `self`: this send cannot fail.
        let _ = self.queue.send(invocation);
        let outcome = tokio::select! {
            outcome = answered => outcome.map_err(|_| InvokeError::TimedOut(timeout)),
            error = init_failure(init_error) => Err(InvokeError::InitFailed(error)),
            () = tokio::time::sleep(timeout) => Err(InvokeError::TimedOut(timeout)),
        };
        self.shared.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&request_id);
        outcome
    }
}

/// Resolves once the function has posted to `/init/error` (at once if it already has).
async fn init_failure(mut reported: watch::Receiver<Option<FunctionError>>) -> FunctionError {
    loop {
        if let Some(error) = reported.borrow_and_update().clone() {
            return error;
        }
        // The sender lives as long as the API; without it nothing more can be reported.
        if reported.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An X-Ray trace header of the documented shape: `Root=1-<epoch seconds, hex>-<96 bits>`.
fn trace_id(now: Duration, request_id: &str) -> String {
    let unique: String = request_id.chars().filter(char::is_ascii_hexdigit).take(24).collect();
    let parent: String = unique.chars().rev().take(16).collect();
    format!("Root=1-{:08x}-{unique};Parent={parent};Sampled=0", now.as_secs())
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: wait for some to close instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(route(&shared, req).await) }
            });
            // A function that exits mid-request only ends its own connection.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().strip_prefix(PREFIX).unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(shared).await,
        (Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let id = (*id).to_owned();
            let is_error = *kind == "error";
            let (error_type, body) = read(req).await;
            let outcome = if is_error {
                Outcome::Error(FunctionError {
                    error_type,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            } else {
                Outcome::Response(body)
            };
            if shared.complete(&id, outcome) {
                reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
            } else {
                reply(
                    StatusCode::BAD_REQUEST,
                    r#"{"errorType":"InvalidRequestID","errorMessage":"no open invocation has this id"}"#,
                )
            }
        }
        (Method::POST, ["init", "error"]) => {
            let (error_type, body) = read(req).await;
            let error = FunctionError { error_type, body: String::from_utf8_lossy(&body).into_owned() };
            shared.init_error.send_replace(Some(error));
            reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        _ => reply(StatusCode::NOT_FOUND, r#"{"errorType":"NotFound","errorMessage":"no such route"}"#),
    }
}

/// The error-type header and the whole body; a body cut off by a dying process reads as what arrived.
async fn read(req: Request<Incoming>) -> (Option<String>, Bytes) {
    let error_type = req
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req.into_body().collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    (error_type, body)
}

async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    // Long poll, as the real API does: the function waits here between invocations.
    let Some(invocation) = shared.queue.lock().await.recv().await else {
        return reply(StatusCode::GONE, r#"{"errorType":"Shutdown","errorMessage":"no more invocations"}"#);
    };
    let mut response = Response::new(Full::new(invocation.payload));
    let headers = response.headers_mut();
    let values = [
        ("lambda-runtime-aws-request-id", invocation.request_id),
        ("lambda-runtime-deadline-ms", invocation.deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", shared.function_arn.clone()),
        ("lambda-runtime-trace-id", invocation.trace_id),
        ("content-type", "application/json".to_owned()),
    ];
    for (name, value) in values {
        if let Ok(value) = http::HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use hyper::client::conn::http1 as client;

    use super::*;

    const SHORT: Duration = Duration::from_secs(5);

    /// One request to the API, as the function's runtime client sends it.
    async fn call(
        api: &RuntimeApi,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let stream = tokio::net::TcpStream::connect(api.address()).await.unwrap();
        let (mut sender, connection) = client::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut request =
            Request::builder().method(method).uri(format!("{PREFIX}{path}")).header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    #[tokio::test]
    async fn an_invocation_is_served_with_the_runtime_headers_and_completed_by_its_response() {
        let api = RuntimeApi::start("deposit").await.unwrap();
        let invocation = api.invoke(r#"{"x":1}"#, SHORT);
        let function = async {
            let (status, headers, payload) = call(&api, Method::GET, "/invocation/next", &[], "").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(payload, r#"{"x":1}"#);
            let id = header(&headers, "lambda-runtime-aws-request-id").to_owned();
            let deadline: u128 = header(&headers, "lambda-runtime-deadline-ms").parse().unwrap();
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
            assert!(deadline > now && deadline <= now + SHORT.as_millis(), "deadline {deadline}, now {now}");
            assert_eq!(
                header(&headers, "lambda-runtime-invoked-function-arn"),
                "arn:aws:lambda:us-east-1:123456789012:function:deposit"
            );
            assert!(header(&headers, "lambda-runtime-trace-id").starts_with("Root=1-"));
            let (status, _, _) =
                call(&api, Method::POST, &format!("/invocation/{id}/response"), &[], "42").await;
            assert_eq!(status, StatusCode::ACCEPTED);
            let (status, _, _) =
                call(&api, Method::POST, &format!("/invocation/{id}/response"), &[], "43").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "an invocation is answered once");
        };
        let (outcome, ()) = tokio::join!(invocation, function);
        assert_eq!(outcome.unwrap(), Outcome::Response(Bytes::from_static(b"42")));
    }

    #[tokio::test]
    async fn an_error_post_completes_the_invocation_as_an_error() {
        let api = RuntimeApi::start("projector").await.unwrap();
        let invocation = api.invoke("{}", SHORT);
        let function = async {
            let (_, headers, _) = call(&api, Method::GET, "/invocation/next", &[], "").await;
            let id = header(&headers, "lambda-runtime-aws-request-id").to_owned();
            let error_type = [("lambda-runtime-function-error-type", "unhandled")];
            let body = r#"{"errorType":"BatchError","errorMessage":"1 event not applied"}"#;
            let (status, _, _) =
                call(&api, Method::POST, &format!("/invocation/{id}/error"), &error_type, body).await;
            assert_eq!(status, StatusCode::ACCEPTED);
        };
        let (outcome, ()) = tokio::join!(invocation, function);
        let Ok(Outcome::Error(error)) = outcome else { panic!("expected an error outcome: {outcome:?}") };
        assert_eq!(error.error_type.as_deref(), Some("unhandled"));
        assert!(error.body.contains("1 event not applied"), "{error}");
    }

    #[tokio::test]
    async fn an_init_error_fails_the_open_and_every_later_invocation_at_once() {
        let api = RuntimeApi::start("deposit").await.unwrap();
        let invocation = api.invoke("{}", Duration::from_secs(60));
        let function = async {
            let error_type = [("lambda-runtime-function-error-type", "Runtime.InitError")];
            let body = r#"{"errorType":"ConfigError","errorMessage":"STORE_KIND"}"#;
            let (status, _, _) = call(&api, Method::POST, "/init/error", &error_type, body).await;
            assert_eq!(status, StatusCode::ACCEPTED);
        };
        let (outcome, ()) = tokio::join!(invocation, function);
        assert!(
            matches!(outcome, Err(InvokeError::InitFailed(ref e)) if e.body.contains("STORE_KIND")),
            "{outcome:?}"
        );
        let later = api.invoke("{}", Duration::from_secs(60)).await;
        assert!(matches!(later, Err(InvokeError::InitFailed(_))), "{later:?}");
    }

    #[tokio::test]
    async fn an_invocation_nobody_answers_times_out() {
        let api = RuntimeApi::start("outbox-publisher").await.unwrap();
        let outcome = api.invoke("{}", Duration::from_millis(100)).await;
        assert!(matches!(outcome, Err(InvokeError::TimedOut(_))), "{outcome:?}");
    }

    #[tokio::test]
    async fn an_unknown_route_is_not_found() {
        let api = RuntimeApi::start("deposit").await.unwrap();
        let (status, _, _) = call(&api, Method::GET, "/invocation/abc", &[], "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
