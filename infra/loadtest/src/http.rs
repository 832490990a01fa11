//! The shared HTTP client: one hyper-util legacy `Client` with a keep-alive pool, cloned into every task.
//!
//! https:// goes through rustls (aws-lc-rs crypto, the stack the SDK clients and the authorizer's key fetch
//! already link), trusting the system's roots, or only the CA certificates of `--ca-file`.
//!
//! The hot path reads a response body only when it must: a 2xx body is drained without being buffered
//! (unless the caller asks for it), a non-2xx body is buffered so its JSON `code` can be counted.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use crate::error::Error;
use crate::sigv4::Signer;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
/// A request that takes longer than this is abandoned and counted as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request that got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The connection could not be opened.
    Connect,
    /// No complete response within the request timeout.
    Timeout,
    /// The connection failed while sending or receiving.
    Io,
    /// The request could not be built (an invalid header value).
    Build,
}

impl Transport {
    /// The code under which the report counts this error.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Transport::Connect => "TRANSPORT_CONNECT",
            Transport::Timeout => "TRANSPORT_TIMEOUT",
            Transport::Io => "TRANSPORT_IO",
            Transport::Build => "REQUEST_BUILD",
        }
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `body` is empty unless it was buffered (non-2xx, or [`BodyMode::Always`]).
    Response {
        status: u16,
        body: Bytes,
    },
    Transport(Transport),
}

impl Reply {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Reply::Response { status, .. } => Some(*status),
            Reply::Transport(_) => None,
        }
    }

    /// The code a failed request is counted under: the JSON `code` of a non-2xx body, or the transport
    /// error kind; `None` for a 1xx/2xx/3xx response.
    pub(crate) fn error_code(&self) -> Option<Cow<'_, str>> {
        match self {
            Reply::Response { status, body } if *status >= 400 => Some(error_code(body)),
            Reply::Response { .. } => None,
            Reply::Transport(kind) => Some(Cow::Borrowed(kind.code())),
        }
    }

    pub(crate) fn body(&self) -> &[u8] {
        match self {
            Reply::Response { body, .. } => body,
            Reply::Transport(_) => &[],
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

/// The `code` of an API error body `{"statusCode","error","code","message"}`.
pub(crate) fn error_code(body: &[u8]) -> Cow<'_, str> {
    match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(ErrorBody { code: Some(code) }) if !code.is_empty() => code,
        Ok(_) => Cow::Borrowed("NO_CODE"),
        Err(_) => Cow::Borrowed("NON_JSON_BODY"),
    }
}

/// Which response bodies to buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyMode {
    /// Buffer only non-2xx bodies; drain the rest.
    ErrorsOnly,
    /// Buffer every body.
    Always,
}

/// How every request is authenticated.
#[derive(Debug, Clone, Default)]
pub(crate) enum RequestAuth {
    #[default]
    None,
    /// An `Authorization` header sent as is (`Bearer <token>`).
    Header(HeaderValue),
    /// A SigV4 signature computed per request.
    Sigv4(Arc<Signer>),
}

/// The TLS settings for https:// base URLs: the CA certificates of `ca_file` when given, else the system's
/// roots (loaded only when `https` is true, so a plain-http run does not need a certificate store).
pub(crate) fn tls_config(ca_file: Option<&Path>, https: bool) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Setup(format!("TLS: {e}")))?;
    let builder = match ca_file {
        Some(path) => {
            let unreadable =
                |e: &dyn std::fmt::Display| Error::Setup(format!("--ca-file {}: {e}", path.display()));
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                roots.add(cert.map_err(|e| unreadable(&e))?).map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"no certificate in the file"));
            }
            builder.with_root_certificates(roots)
        }
        None if https => builder
            .with_native_roots()
            .map_err(|e| Error::Setup(format!("no system root certificates (try --ca-file): {e}")))?,
        None => builder.with_root_certificates(RootCertStore::empty()),
    };
    Ok(builder.with_no_client_auth())
}

/// A cheap-to-clone handle on the shared connection pool.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    auth: RequestAuth,
}

impl Http {
    /// A client that authenticates every request with `auth`, and speaks TLS with `tls` to https:// URLs.
    pub(crate) fn new(auth: RequestAuth, tls: rustls::ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Self { client, auth }
    }

    pub(crate) async fn get(&self, uri: Uri, mode: BodyMode) -> Reply {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        self.send(request, &[], mode).await
    }

    /// A JSON command with its `Idempotency-Key`.
    pub(crate) async fn post(&self, uri: Uri, idempotency_key: &str, body: Bytes, mode: BodyMode) -> Reply {
        let Ok(key) = HeaderValue::from_str(idempotency_key) else {
            return Reply::Transport(Transport::Build);
        };
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(IDEMPOTENCY_KEY, key);
        self.send(request, &body, mode).await
    }

    /// Sends `request`, whose body is `body` (kept apart so a signature can cover it).
    async fn send(&self, mut request: Request<Full<Bytes>>, body: &[u8], mode: BodyMode) -> Reply {
        match &self.auth {
            RequestAuth::None => {}
            RequestAuth::Header(value) => {
                request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
            }
            RequestAuth::Sigv4(signer) => {
                if signer.sign(&mut request, body, SystemTime::now()).is_err() {
                    return Reply::Transport(Transport::Build);
                }
            }
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request, mode)).await {
            Ok(reply) => reply,
            Err(_) => Reply::Transport(Transport::Timeout),
        }
    }

    async fn exchange(&self, request: Request<Full<Bytes>>, mode: BodyMode) -> Reply {
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Reply::Transport(Transport::Connect),
            Err(_) => return Reply::Transport(Transport::Io),
        };
        let status = response.status();
        let keep = mode == BodyMode::Always || !status.is_success();
        let body = response.into_body();
        let body = if keep {
            match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Reply::Transport(Transport::Io),
            }
        } else {
            if drain(body).await.is_err() {
                return Reply::Transport(Transport::Io);
            }
            Bytes::new()
        };
        Reply::Response { status: status.as_u16(), body }
    }
}

/// Reads a body to its end without keeping it, so the connection goes back to the pool.
async fn drain(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_from_bodies() {
        let body = br#"{"statusCode":400,"error":"Bad Request","code":"INSUFFICIENT_FUNDS","message":"no"}"#;
        assert_eq!(error_code(body), "INSUFFICIENT_FUNDS");
        assert_eq!(error_code(br#"{"code":"A\u0042C"}"#), "ABC");
        assert_eq!(error_code(br#"{"message":"x"}"#), "NO_CODE");
        assert_eq!(error_code(b"<html>"), "NON_JSON_BODY");
        assert_eq!(error_code(b""), "NON_JSON_BODY");
    }

    #[test]
    fn reply_error_code_only_for_failures() {
        let ok = Reply::Response { status: 201, body: Bytes::new() };
        assert_eq!(ok.error_code(), None);
        let bad =
            Reply::Response { status: 409, body: Bytes::from_static(br#"{"code":"CONCURRENCY_CONFLICT"}"#) };
        assert_eq!(bad.error_code().as_deref(), Some("CONCURRENCY_CONFLICT"));
        assert_eq!(Reply::Transport(Transport::Timeout).error_code().as_deref(), Some("TRANSPORT_TIMEOUT"));
        assert_eq!(Reply::Transport(Transport::Io).status(), None);
    }
}
