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
