//! The authorizer on API Gateway's own `TOKEN` authorizer payloads, with its keys fetched over HTTP
//! from a key-set server on 127.0.0.1, as they are fetched from the issuer in AWS.

// Test code: helpers outside `#[test]` functions may panic (clippy.toml allows it in tests).
#![cfg(test)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authorizer::{Refusal, api_wide, authorize};
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequest;
use corebank_auth::fetch::UrlKeys;
use corebank_auth::mint::{SigningKey, access_claims, key_set};
use corebank_auth::{Verifier, VerifierConfig};
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example";
const AUDIENCE: &str = "corebank-client-id";

/// Serves `body` as the key set to every request; counts the requests.
async fn key_server(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/.well-known/jwks.json"), hits)
}

struct Setup {
    verifier: Verifier,
    rsa: SigningKey,
    ec: SigningKey,
    hits: Arc<AtomicUsize>,
}

async fn setup() -> Setup {
    let rsa = SigningKey::generate_rsa("rsa-1").expect("key");
    let ec = SigningKey::generate_ec("ec-1").expect("key");
    let (url, hits) = key_server(key_set(&[&rsa, &ec]).expect("jwks")).await;
    let source = Arc::new(UrlKeys::new(&url).expect("url"));
    let verifier =
        Verifier::new(VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() }, source);
    Setup { verifier, rsa, ec, hits }
}

/// The fixture with the token in place, parsed as the Lambda runtime parses the payload.
fn request(authorization: &str) -> ApiGatewayCustomAuthorizerRequest {
    let path = format!("{}/tests/fixtures/token_request.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture").replace("Bearer {{TOKEN}}", authorization);
    serde_json::from_str(&text).expect("an authorizer payload")
}

/// A Cognito access token: `client_id`, no `aud`.
fn cognito_claims(sub: &str, scope: &str) -> Value {
    let mut claims = access_claims(ISSUER, "ignored", sub, scope, 3600);
    claims.as_object_mut().map(|c| c.remove("aud"));
    claims["client_id"] = json!(AUDIENCE);
    claims["token_use"] = json!("access");
    claims
}

#[tokio::test]
async fn a_valid_token_is_allowed_on_the_whole_stage_with_its_principal_and_scopes() {
    let s = setup().await;
    for key in [&s.rsa, &s.ec] {
        let token = key.sign(&cognito_claims("customer-42", "openid ledger/customer")).expect("sign");
        let response = authorize(&s.verifier, &request(&format!("Bearer {token}"))).await.expect("allowed");
        let wire = serde_json::to_value(&response).expect("serializable");
        assert_eq!(wire["principalId"], "customer-42");
        let statement = &wire["policyDocument"]["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(statement["Action"], json!(["execute-api:Invoke"]));
        assert_eq!(
            statement["Resource"],
            json!(["arn:aws:execute-api:eu-west-1:123456789012:k3x9q2v7bd/prod/*/*"])
        );
        assert_eq!(wire["policyDocument"]["Version"], "2012-10-17");
        assert_eq!(wire["context"], json!({"scope": "ledger:customer"}));
    }
    assert_eq!(s.hits.load(Ordering::SeqCst), 1, "the key set is read once and kept");
}

#[tokio::test]
async fn missing_and_refused_tokens_are_unauthorized_exactly() {
    let s = setup().await;
    let good = cognito_claims("customer-42", "ledger:customer");
    let mut expired = good.clone();
    expired["exp"] = json!(1);
    let mut other_issuer = good.clone();
    other_issuer["iss"] = json!("https://evil.example");
    let stranger = SigningKey::generate_ec("ec-1").expect("key");
    for (name, authorization) in [
        ("no scheme", s.ec.sign(&good).expect("sign")),
        ("basic", "Basic dXNlcjpwYXNz".to_owned()),
        ("empty bearer", "Bearer ".to_owned()),
        ("garbage", "Bearer not.a.jwt".to_owned()),
        ("expired", format!("Bearer {}", s.ec.sign(&expired).expect("sign"))),
        ("other issuer", format!("Bearer {}", s.rsa.sign(&other_issuer).expect("sign"))),
        ("other key", format!("Bearer {}", stranger.sign(&good).expect("sign"))),
    ] {
        let refused = authorize(&s.verifier, &request(&authorization)).await;
        assert!(matches!(refused, Err(Refusal::Unauthorized)), "{name}: {refused:?}");
        // API Gateway answers 401 only for this exact error message.
        let diagnostic = Diagnostic::from(Refusal::Unauthorized);
        assert_eq!(diagnostic.error_message, "Unauthorized");
    }
}

#[tokio::test]
async fn an_unreachable_key_set_is_a_failure_not_a_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    drop(listener);
    let verifier = Verifier::new(
        VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() },
        Arc::new(UrlKeys::new(&url).expect("url")),
    );
    let key = SigningKey::generate_ec("ec-1").expect("key");
    let token = key.sign(&cognito_claims("c", "")).expect("sign");
    let failed = authorize(&verifier, &request(&format!("Bearer {token}"))).await;
    assert!(matches!(failed, Err(Refusal::Unavailable)), "{failed:?}");
    assert_ne!(Diagnostic::from(Refusal::Unavailable).error_message, "Unauthorized");
}

#[test]
fn the_allowed_resource_is_the_whole_stage_of_the_api() {
    assert_eq!(
        api_wide("arn:aws:execute-api:us-east-1:111122223333:abc123/v1/GET/accounts/a-1").as_deref(),
        Some("arn:aws:execute-api:us-east-1:111122223333:abc123/v1/*/*")
    );
    assert_eq!(api_wide("not-an-arn"), None);
    assert_eq!(api_wide("arn:aws:execute-api:us-east-1:1:abc"), None);
}
