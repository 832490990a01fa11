//! The HTTP client the MSK API client sends `GetBootstrapBrokers` with: hyper over OpenSSL.
//!
//! The AWS SDK's default HTTPS client brings a TLS stack of its own (rustls over aws-lc). A function
//! that looks its brokers up links OpenSSL already, for librdkafka's TLS to the brokers, so the one
//! MSK API call at cold start goes over that OpenSSL instead of a second TLS stack (about 1.5 MB of
//! each producer's zip: docs/performance.md, "Size").
//!
//! Trust roots: [`TrustRoots::System`] finds the system's CA bundle the way OpenSSL-based tools do
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` first, then the usual places, Amazon Linux's
//! `/etc/pki/tls/certs/ca-bundle.crt` among them); OpenSSL built from source has no usable default.
//! Peer verification and host name checks are always on; TLS 1.2 is the oldest version offered.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use openssl::error::ErrorStack;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslFiletype, SslMethod, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509Lookup;

/// Connect timeout when the SDK's settings give none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of a whole exchange (request sent, response read) when the SDK's settings give none.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificates a server's chain must lead to.
#[derive(Debug, Clone, Default)]
pub enum TrustRoots {
    /// The system's CA bundle (see the [module docs](self)).
    #[default]
    System,
    /// Only these PEM certificates (a private CA, a test server).
    Pem(Vec<u8>),
}

/// An [`HttpClient`] for AWS SDK clients that sends requests with hyper (HTTP/1.1) over OpenSSL,
/// `https` and `http` URLs alike (the latter for local stand-ins of an AWS API).
pub fn openssl_http_client(trust: TrustRoots) -> SharedHttpClient {
    SharedHttpClient::new(OpensslHttpClient { trust, connectors: Mutex::new(Vec::new()) })
}

#[derive(Debug)]
struct OpensslHttpClient {
    trust: TrustRoots,
    /// One connector (and connection pool) per distinct timeout settings the SDK asked for.
    connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeouts {
    connect: Duration,
    read: Duration,
}

impl HttpClient for OpensslHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = Timeouts {
            connect: settings.connect_timeout().unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            read: settings.read_timeout().unwrap_or(DEFAULT_READ_TIMEOUT),
        };
        let mut connectors = self.connectors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, connector)) = connectors.iter().find(|(t, _)| *t == timeouts) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(OpensslConnector::new(&self.trust, timeouts));
        connectors.push((timeouts, connector.clone()));
        connector
    }
}

#[derive(Debug)]
struct OpensslConnector {
    /// `Err` when OpenSSL could not be set up (the reason is every call's error).
    client: Result<Client<HttpsConnector<TcpConnector>, Full<Bytes>>, String>,
    read_timeout: Duration,
}

impl OpensslConnector {
    fn new(trust: &TrustRoots, timeouts: Timeouts) -> Self {
        let client = tls_builder(trust)
            .and_then(|tls| {
                let mut tcp = TcpConnector::new();
                tcp.enforce_http(false);
                tcp.set_connect_timeout(Some(timeouts.connect));
                tcp.set_nodelay(true);
                HttpsConnector::with_connector(tcp, tls).map_err(|e| e.to_string())
            })
            .map(|https| {
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(https)
            })
            .map_err(|e| format!("TLS could not be set up: {e}"));
        Self { client, read_timeout: timeouts.read }
    }
}

/// A TLS client configuration trusting `trust`.
fn tls_builder(trust: &TrustRoots) -> Result<SslConnectorBuilder, String> {
    let openssl = |e: ErrorStack| e.to_string();
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(openssl)?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(openssl)?;
    match trust {
        TrustRoots::System => add_system_roots(&mut builder).map_err(openssl)?,
        TrustRoots::Pem(pem) => {
            let certificates = X509::stack_from_pem(pem).map_err(openssl)?;
            if certificates.is_empty() {
                return Err("the trust roots hold no PEM certificate".to_owned());
            }
            for certificate in certificates {
                builder.cert_store_mut().add_cert(certificate).map_err(openssl)?;
            }
        }
    }
    Ok(builder)
}

/// The system's CA bundle and certificate directories, as openssl-probe finds them.
fn add_system_roots(builder: &mut SslConnectorBuilder) -> Result<(), ErrorStack> {
    let found = openssl_probe::probe();
    if found.cert_file.is_none() && found.cert_dir.is_empty() {
        return builder.set_default_verify_paths();
    }
    if let Some(file) = &found.cert_file {
        builder.set_ca_file(file)?;
    }
    if !found.cert_dir.is_empty() {
        let lookup = builder.cert_store_mut().add_lookup(X509Lookup::hash_dir())?;
        for dir in found.cert_dir.iter().filter_map(|dir| dir.to_str()) {
            lookup.add_dir(dir, SslFiletype::PEM)?;
        }
    }
    Ok(())
}

impl HttpConnector for OpensslConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|reason| ConnectorError::other(reason.into(), None))?;
            let request = request.try_into_http1x().map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // The MSK API's requests are small and in memory; a streaming body is not supported.
            let body = body
                .bytes()
                .map(Bytes::copy_from_slice)
                .ok_or_else(|| ConnectorError::user("a streaming request body is not supported".into()))?;
            let request = http::Request::from_parts(parts, Full::new(body));
            let exchange = async {
                let response = client.request(request).await.map_err(|e| ConnectorError::io(e.into()))?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await.map_err(|e| ConnectorError::io(e.into()))?.to_bytes();
                Ok::<_, ConnectorError>(http::Response::from_parts(parts, SdkBody::from(body)))
            };
            let response = tokio::time::timeout(read_timeout, exchange).await.map_err(|_| {
                ConnectorError::timeout(format!("no complete response within {read_timeout:?}").into())
            })??;
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_trust_roots_are_found_and_loaded() {
        let found = openssl_probe::probe();
        let file = found.cert_file.expect("this machine has a CA bundle (ca-certificates)");
        let builder = tls_builder(&TrustRoots::System).unwrap();
        let loaded = builder.build().context().cert_store().all_certificates().len();
        assert!(loaded > 10, "{loaded} roots loaded from {}", file.display());
    }

    #[test]
    fn pem_trust_roots_that_are_not_certificates_are_an_error() {
        assert!(tls_builder(&TrustRoots::Pem(b"not a certificate".to_vec())).is_err());
    }
}
