//! MSK specifics without AWS: the IAM token is checked against an independent SigV4 computation, and the
//! bootstrap broker lookup runs against a local stand-in of the MSK API.

#![cfg(test)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use corebank_messaging::msk::{MskIamSigner, TOKEN_EXPIRY_SECS, lookup_brokers};
use corebank_messaging::{AwsIdentity, KafkaConfig, KafkaSecurity};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn identity() -> AwsIdentity {
    AwsIdentity {
        region: "eu-west-1".to_owned(),
        access_key_id: "AKIDEXAMPLE".to_owned(),
        secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned()),
        session_token: Some(SecretString::from("session/token+value=".to_owned())),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK { Sha256::digest(key).to_vec() } else { key.to_vec() };
    k.resize(BLOCK, 0);
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(data.iter().copied()).collect();
    let inner_hash = Sha256::digest(&inner);
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner_hash.iter().copied()).collect();
    Sha256::digest(&outer).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// SigV4's URI encoding: unreserved characters stay, everything else is `%XX`.
fn aws_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_iam_token_is_a_base64url_presigned_connect_url_whose_signature_verifies() {
    // 2025-01-02T03:04:05.678Z
    let now = UNIX_EPOCH + Duration::from_millis(1_735_787_045_678);
    let token = MskIamSigner::new(identity()).token(now).unwrap();

    assert!(!token.token.contains('=') && !token.token.contains('+') && !token.token.contains('/'));
    assert_eq!(token.lifetime_ms, 1_735_787_045_000 + i64::try_from(TOKEN_EXPIRY_SECS).unwrap() * 1000);
    assert_eq!(token.principal_name, "AKIDEXAMPLE");

    let url =
        String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token.token).unwrap())
            .unwrap();
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, "https://kafka.eu-west-1.amazonaws.com/");
    let params: BTreeMap<String, String> = query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    assert_eq!(params["Action"], "kafka-cluster:Connect");
    assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    assert_eq!(params["X-Amz-Credential"], "AKIDEXAMPLE/20250102/eu-west-1/kafka-cluster/aws4_request");
    assert_eq!(params["X-Amz-Date"], "20250102T030405Z");
    assert_eq!(params["X-Amz-Expires"], "900");
    assert_eq!(params["X-Amz-SignedHeaders"], "host");
    assert_eq!(params["X-Amz-Security-Token"], "session/token+value=");
    assert!(params["User-Agent"].starts_with("corebank-msk-iam/"));

    // The signature, computed here from the SigV4 specification, independently of aws-sigv4.
    let canonical_query = params
        .iter()
        .filter(|(k, _)| k.as_str() != "X-Amz-Signature" && k.as_str() != "User-Agent")
        .map(|(k, v)| format!("{}={}", aws_encode(k), aws_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "GET\n/\n{canonical_query}\nhost:kafka.eu-west-1.amazonaws.com\n\nhost\n{}",
        hex(&Sha256::digest(b""))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n20250102T030405Z\n20250102/eu-west-1/kafka-cluster/aws4_request\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20250102");
    let k_region = hmac(&k_date, b"eu-west-1");
    let k_service = hmac(&k_region, b"kafka-cluster");
    let k_signing = hmac(&k_service, b"aws4_request");
    assert_eq!(params["X-Amz-Signature"], hex(&hmac(&k_signing, string_to_sign.as_bytes())));
}

#[test]
fn tokens_signed_at_different_times_differ() {
    let signer = MskIamSigner::new(identity());
    let a = signer.token(SystemTime::now()).unwrap();
    let b = signer.token(SystemTime::now() + Duration::from_secs(60)).unwrap();
    assert_ne!(a.token, b.token);
    assert!(b.lifetime_ms > a.lifetime_ms);
}

/// Serves one `GetBootstrapBrokers` answer on 127.0.0.1 and hands back the request head it saw.
async fn msk_api_stub(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before the request head ended");
            head.extend_from_slice(&buf[..n]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (endpoint, served)
}

#[tokio::test]
async fn bootstrap_brokers_come_from_the_msk_api_for_the_listener_in_use() {
    let (endpoint, served) = msk_api_stub(
        r#"{"bootstrapBrokerString":"b-1.plain:9092","bootstrapBrokerStringSaslIam":"b-1.iam:9098,b-2.iam:9098"}"#,
    )
    .await;
    let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/events/1111-2222";
    let mut config = KafkaConfig::new("");
    config.security = KafkaSecurity::MskIam;
    config.msk_cluster_arn = Some(arn.to_owned());
    config.aws = Some(identity());

    let brokers = lookup_brokers(&config, arn, Some(&endpoint)).await.unwrap();
    assert_eq!(brokers, "b-1.iam:9098,b-2.iam:9098");

    let head = served.await.unwrap();
    let request_line = head.lines().next().unwrap();
    assert!(request_line.starts_with("GET /v1/clusters/arn%3Aaws%3Akafka%3Aeu-west-1%3A123456789012%3Acluster%2Fevents%2F1111-2222/bootstrap-brokers"), "{request_line}");
    let auth = head.lines().find(|l| l.to_ascii_lowercase().starts_with("authorization:")).unwrap();
    assert!(
        auth.contains("Credential=AKIDEXAMPLE/") && auth.contains("/eu-west-1/kafka/aws4_request"),
        "{auth}"
    );
}

#[tokio::test]
async fn a_cluster_without_the_listener_in_use_is_an_error_naming_it() {
    let (endpoint, served) = msk_api_stub(r#"{"bootstrapBrokerString":"b-1.plain:9092"}"#).await;
    let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/events/1111-2222";
    let mut config = KafkaConfig::new("");
    config.security = KafkaSecurity::MskIam;
    config.aws = Some(identity());
    let err = lookup_brokers(&config, arn, Some(&endpoint)).await.unwrap_err();
    assert!(err.to_string().contains("no IAM listener"), "{err}");
    served.await.unwrap();
}

#[tokio::test]
async fn configured_brokers_are_used_as_they_are_and_no_lookup_happens() {
    let mut config = KafkaConfig::new("127.0.0.1:9092");
    config.msk_cluster_arn = Some("arn:aws:kafka:eu-west-1:1:cluster/x/y".to_owned());
    config.resolve_bootstrap().await.unwrap();
    assert_eq!(config.brokers, "127.0.0.1:9092");
}

/// A CA and a server certificate for 127.0.0.1 it signed: (CA certificate PEM, server certificate,
/// server key).
fn test_pki() -> (Vec<u8>, openssl::x509::X509, openssl::pkey::PKey<openssl::pkey::Private>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};

    let key = || {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    };
    let name = |cn: &str| {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        name.build()
    };
    let builder = |serial: u32, subject: &str, issuer: &str, key: &PKey<openssl::pkey::Private>| {
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&name(subject)).unwrap();
        b.set_issuer_name(&name(issuer)).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        b
    };

    let ca_key = key();
    let mut ca = builder(1, "corebank test CA", "corebank test CA", &ca_key);
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    ca.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();

    let server_key = key();
    let mut server = builder(2, "127.0.0.1", "corebank test CA", &server_key);
    let san =
        SubjectAlternativeName::new().ip("127.0.0.1").build(&server.x509v3_context(Some(&ca), None)).unwrap();
    server.append_extension(san).unwrap();
    server.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap()).unwrap();
    server.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (ca.to_pem().unwrap(), server.build(), server_key)
}

/// Serves `GetBootstrapBrokers` answers over TLS on 127.0.0.1 (every connection, until the test process
/// ends) and sends the request head of each completed exchange, or the handshake error, down the channel.
fn msk_api_tls_stub(
    body: &'static str,
) -> (String, Vec<u8>, std::sync::mpsc::Receiver<Result<String, String>>) {
    use std::io::{Read, Write};

    use openssl::ssl::{SslAcceptor, SslMethod};

    let (ca_pem, certificate, key) = test_pki();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_certificate(&certificate).unwrap();
    let acceptor = acceptor.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (seen, exchanges) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let outcome = acceptor.accept(socket.unwrap()).map_err(|e| e.to_string()).map(|mut tls| {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).unwrap();
                    assert!(n > 0, "connection closed before the request head ended");
                    head.extend_from_slice(&buf[..n]);
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(response.as_bytes()).unwrap();
                let _ = tls.shutdown();
                String::from_utf8(head).unwrap()
            });
            if seen.send(outcome).is_err() {
                return;
            }
        }
    });
    (endpoint, ca_pem, exchanges)
}

#[tokio::test]
async fn the_msk_api_is_reached_over_openssl_tls_and_the_answer_read() {
    use corebank_messaging::aws_http::{TrustRoots, openssl_http_client};
    use corebank_messaging::msk::lookup_brokers_with;

    let (endpoint, ca_pem, exchanges) = msk_api_tls_stub(
        r#"{"bootstrapBrokerStringTls":"b-1.tls:9094","bootstrapBrokerStringSaslIam":"b-1.iam:9098"}"#,
    );
    let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/events/1111-2222";
    let mut config = KafkaConfig::new("");
    config.security = KafkaSecurity::MskIam;
    config.aws = Some(identity());

    let http = openssl_http_client(TrustRoots::Pem(ca_pem));
    let brokers = lookup_brokers_with(&config, arn, Some(&endpoint), http).await.unwrap();
    assert_eq!(brokers, "b-1.iam:9098");
    let head = exchanges.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert!(head.starts_with("GET /v1/clusters/arn%3Aaws%3Akafka%3A"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nauthorization: aws4-hmac-sha256 credential=akidexample/"),
        "{head}"
    );
}

#[tokio::test]
async fn an_msk_api_whose_certificate_does_not_verify_is_refused_before_any_request() {
    // The system's CA bundle does not hold the stand-in's private CA.
    let (endpoint, _ca_pem, exchanges) =
        msk_api_tls_stub(r#"{"bootstrapBrokerStringSaslIam":"b-1.iam:9098"}"#);
    let arn = "arn:aws:kafka:eu-west-1:123456789012:cluster/events/1111-2222";
    let mut config = KafkaConfig::new("");
    config.security = KafkaSecurity::MskIam;
    config.aws = Some(identity());

    let err = lookup_brokers(&config, arn, Some(&endpoint)).await.unwrap_err();
    assert!(err.to_string().contains("certificate verify failed"), "{err}");
    // Every attempt (the SDK retries) ended in the handshake: no request head was ever read.
    let outcomes: Vec<_> = exchanges.try_iter().collect();
    assert!(!outcomes.is_empty());
    assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
}
