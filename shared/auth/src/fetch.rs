//! The issuer's key set over HTTPS (`AUTH_JWKS_URL`, the authorizer's `JWKS_URL`).
//!
//! The client is built on first use, not at start, so a cold start does not pay for loading the
//! system's root certificates. Plain `http` is accepted only for a loopback host (tests).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::AuthError;
use crate::jwt::{KeySource, KeysFuture, MAX_JWKS_BYTES};

/// Bound on one read of the key set, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A key set at an `https` URL.
#[derive(Debug)]
pub struct UrlKeys {
    url: http::Uri,
    client: OnceLock<Result<HttpsClient, String>>,
}

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::KeysUnavailable(e.to_string())
}

impl UrlKeys {
    /// A source reading `url`: `https`, or `http` to a loopback host.
    pub fn new(url: &str) -> Result<Self, AuthError> {
        let misconfigured = |reason: String| AuthError::Misconfigured(format!("the key set URL: {reason}"));
        let uri: http::Uri = url.parse().map_err(|e| misconfigured(format!("not a URL: {e}")))?;
        let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(misconfigured("it must be https".to_owned())),
        }
        Ok(Self { url: uri, client: OnceLock::new() })
    }

    fn client(&self) -> Result<&HttpsClient, AuthError> {
        let built = self.client.get_or_init(|| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("no root certificates: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Ok(Client::builder(TokioExecutor::new()).build(connector))
        });
        built.as_ref().map_err(unavailable)
    }

    async fn read(&self) -> Result<String, AuthError> {
        let client = self.client()?;
        let request = http::Request::get(self.url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(unavailable)?;
        let response = client.request(request).await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(unavailable(format!("the key set URL answered {}", response.status())));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES).collect().await.map_err(unavailable)?;
        String::from_utf8(body.to_bytes().to_vec()).map_err(|_| unavailable("the key set is not UTF-8"))
    }
}

impl KeySource for UrlKeys {
    fn fetch(&self) -> KeysFuture<'_> {
        Box::pin(async move {
            match tokio::time::timeout(FETCH_TIMEOUT, self.read()).await {
                Ok(result) => result,
                Err(_) => Err(unavailable("reading the key set timed out")),
            }
        })
    }
}
