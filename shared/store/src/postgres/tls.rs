//! TLS for tokio-postgres over rustls with the aws-lc-rs provider: the stack the Lambda functions
//! already carry for their AWS API calls, so the Postgres path adds no second one.
//!
//! Three server certificate verifiers, one per [`Verification`]:
//!
//! - `ChainAndHostName`: rustls' own `WebPkiServerVerifier` (chain, validity, name).
//! - `Chain`: the same chain and validity checks through rustls' public
//!   `verify_server_cert_signed_by_trust_anchor`, without `verify_server_name`; the handshake
//!   signature checks are delegated to a `WebPkiServerVerifier` over the same roots.
//! - `None`: any certificate; the handshake signatures are still checked against the certificate's
//!   key (rustls' `verify_tls12_signature` / `verify_tls13_signature`), as OpenSSL does with
//!   `SSL_VERIFY_NONE`.
//!
//! Channel binding (`tls-server-end-point`, RFC 5929) is offered to SCRAM as libpq does: the server
//! certificate hashed with the hash of its signature algorithm, SHA-256 for MD5 and SHA-1.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use super::connect::Verification;

/// rustls' aws-lc-rs provider, named explicitly so that no process-wide default is needed or used.
#[cfg(not(feature = "postgres-openssl-crypto"))]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// With `postgres-openssl-crypto`: the same protocol and checks, OpenSSL's cryptography
/// (rustls-openssl's provider: AES-GCM and ChaCha20-Poly1305 suites, ECDHE over X25519 and the NIST
/// curves).
#[cfg(feature = "postgres-openssl-crypto")]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls_openssl::default_provider())
}

/// The client configuration for `verification`: TLS 1.2 or 1.3, no client certificate. `roots` is
/// unused (and may be empty) without verification; with it, it must hold at least one root.
pub(super) fn client_config(
    verification: Verification,
    roots: RootCertStore,
) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verification {
        Verification::None => {
            Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms })
        }
        Verification::Chain => Arc::new(ChainOnly::new(Arc::new(roots), &provider)?),
        Verification::ChainAndHostName => web_pki(Arc::new(roots), &provider)?,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn web_pki(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

/// `sslmode=verify-ca`: the chain must lead to one of `roots` and every certificate in it must be
/// valid now, but the end-entity certificate need not name the host.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Checks the handshake signatures exactly as the full verifier does.
    signatures: Arc<WebPkiServerVerifier>,
}

impl ChainOnly {
    fn new(roots: Arc<RootCertStore>, provider: &Arc<CryptoProvider>) -> Result<Self, rustls::Error> {
        let signatures = web_pki(Arc::clone(&roots), provider)?;
        Ok(Self { roots, algorithms: provider.signature_verification_algorithms, signatures })
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

/// `sslmode=prefer` / `require` without root certificates: encrypted, the server not authenticated.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// tokio-postgres's TLS hook over one rustls client configuration. Cheap to clone.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    connector: tokio_rustls::TlsConnector,
}

impl fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustlsConnect").finish_non_exhaustive()
    }
}

impl MakeRustlsConnect {
    /// Connects with `config`.
    pub fn new(config: ClientConfig) -> Self {
        Self { connector: tokio_rustls::TlsConnector::from(Arc::new(config)) }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// `domain` is the host the URL names (a DNS name or an IP address): SNI for a DNS name, and the
    /// name `verify-full` checks.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let server_name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect { connector: self.connector.clone(), server_name })
    }
}

/// One connection's handshake, to the server [`MakeRustlsConnect`] was given the name of.
pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    /// A handshake that fails (a certificate that does not verify, among others) is an `io::Error`
    /// wrapping the `rustls::Error`.
    fn connect(self, stream: S) -> Self::Future {
        let handshake = self.connector.connect(self.server_name, stream);
        Box::pin(async move { handshake.await.map(RustlsStream) })
    }
}

/// An established TLS session.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> fmt::Debug for RustlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsStream").finish_non_exhaustive()
    }
}

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|certificate| tls_server_end_point(certificate))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

impl<S> AsyncRead for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// RFC 5929's `tls-server-end-point`: the DER certificate hashed with its signature algorithm's hash
/// (SHA-256 for MD5 and SHA-1). None for algorithms with no single hash (Ed25519, RSA-PSS): then
/// SCRAM runs without channel binding, as with libpq.
fn tls_server_end_point(certificate: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let der = certificate.as_ref();
    Some(match signature_hash(signature_algorithm(der)?)? {
        Hash::Sha256 => Sha256::digest(der).to_vec(),
        Hash::Sha384 => Sha384::digest(der).to_vec(),
        Hash::Sha512 => Sha512::digest(der).to_vec(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of a certificate signature algorithm, by the DER contents of its object identifier.
fn signature_hash(oid: &[u8]) -> Option<Hash> {
    /// 1.2.840.113549.1.1 (PKCS #1).
    const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    /// 1.2.840.10045.4 (ANSI X9.62 signatures).
    const X962_SIGNATURES: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    if let Some(rest) = oid.strip_prefix(PKCS1) {
        return match rest {
            // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
            [0x04] | [0x05] | [0x0b] => Some(Hash::Sha256),
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            _ => None,
        };
    }
    match oid.strip_prefix(X962_SIGNATURES)? {
        // ecdsa-with-SHA1, ecdsa-with-SHA256
        [0x01] | [0x03, 0x02] => Some(Hash::Sha256),
        [0x03, 0x03] => Some(Hash::Sha384),
        [0x03, 0x04] => Some(Hash::Sha512),
        _ => None,
    }
}

/// The object identifier (its DER contents) of a certificate's outer `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { algorithm OID, .. }, .. }`.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OBJECT_IDENTIFIER: u8 = 0x06;
    let (certificate, _) = der_element(der, SEQUENCE)?;
    let (_tbs, rest) = der_element(certificate, SEQUENCE)?;
    let (algorithm, _) = der_element(rest, SEQUENCE)?;
    let (oid, _) = der_element(algorithm, OBJECT_IDENTIFIER)?;
    Some(oid)
}

/// The contents of the DER element at the start of `input` if its tag is `tag`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let (length, rest) = rest.split_at(octets);
        (length.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)), rest)
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// Whether `e` is rustls' refusal of a handshake (as tokio-rustls reports it: an `io::Error` wrapping
/// a `rustls::Error`), or the host not being a usable server name.
pub(super) fn is_rustls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() || e.is::<rustls::pki_types::InvalidDnsNameError>() {
        return true;
    }
    e.downcast_ref::<io::Error>().and_then(io::Error::get_ref).is_some_and(|inner| {
        inner.is::<rustls::Error>() || inner.is::<rustls::pki_types::InvalidDnsNameError>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_algorithms_map_to_rfc_5929_hashes() {
        let pkcs1 = |last: u8| vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last];
        let x962 = |tail: &[u8]| [&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04][..], tail].concat();
        assert_eq!(signature_hash(&pkcs1(0x05)), Some(Hash::Sha256), "SHA-1 is upgraded");
        assert_eq!(signature_hash(&pkcs1(0x0b)), Some(Hash::Sha256));
        assert_eq!(signature_hash(&pkcs1(0x0c)), Some(Hash::Sha384));
        assert_eq!(signature_hash(&pkcs1(0x0d)), Some(Hash::Sha512));
        assert_eq!(signature_hash(&pkcs1(0x0a)), None, "RSA-PSS names its hash in parameters");
        assert_eq!(signature_hash(&x962(&[0x03, 0x02])), Some(Hash::Sha256));
        assert_eq!(signature_hash(&x962(&[0x03, 0x03])), Some(Hash::Sha384));
        assert_eq!(signature_hash(&x962(&[0x03, 0x04])), Some(Hash::Sha512));
        assert_eq!(signature_hash(&[0x2b, 0x65, 0x70]), None, "Ed25519");
    }

    #[test]
    fn the_outer_signature_algorithm_is_read_from_short_and_long_lengths() {
        let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let tbs = [vec![0x30, 0x81, 0x80], vec![0u8; 0x80]].concat();
        let algorithm = [vec![0x30, 0x0a, 0x06, 0x08], oid.to_vec()].concat();
        let signature = vec![0x03, 0x02, 0x00, 0x00];
        let body = [tbs, algorithm, signature].concat();
        let length = u16::try_from(body.len()).unwrap().to_be_bytes();
        let certificate = [vec![0x30, 0x82, length[0], length[1]], body].concat();
        assert_eq!(signature_algorithm(&certificate), Some(&oid[..]));
        assert_eq!(signature_algorithm(&certificate[..certificate.len() - 10]), None, "truncated");
        assert_eq!(signature_algorithm(&[0x31, 0x00]), None, "not a SEQUENCE");
    }

    #[test]
    fn a_refused_handshake_is_recognised_through_the_io_error_that_carries_it() {
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_rustls_error(&refused));
        assert!(!is_rustls_error(&io::Error::new(io::ErrorKind::ConnectionReset, "reset")));
    }
}
