//! The verifier against tokens signed by freshly generated RSA and P-256 keys: what it accepts, and
//! every way a token is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use corebank_auth::jwt::{KeySource, KeysFuture, StaticKeys};
use corebank_auth::mint::{SigningKey, access_claims, key_set};
use corebank_auth::{AuthError, Authentication, MAX_TOKEN_BYTES, Scope, Verifier, VerifierConfig, bearer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "corebank";

fn key(kind: &str, kid: &str) -> SigningKey {
    let made = if kind == "rsa" { SigningKey::generate_rsa(kid) } else { SigningKey::generate_ec(kid) };
    made.unwrap_or_else(|e| panic!("{e}"))
}

fn verifier(keys: &[&SigningKey]) -> Verifier {
    let set = key_set(keys).unwrap_or_else(|e| panic!("{e}"));
    Verifier::new(
        VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() },
        Arc::new(StaticKeys(set)),
    )
}

fn token(key: &SigningKey, claims: &serde_json::Value) -> String {
    key.sign(claims).unwrap_or_else(|e| panic!("{e}"))
}

fn claims(sub: &str, scope: &str) -> serde_json::Value {
    access_claims(ISSUER, AUDIENCE, sub, scope, 300)
}

fn b64(value: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_into_their_principal() {
    let (rsa, ec) = (key("rsa", "r1"), key("ec", "e1"));
    let v = verifier(&[&rsa, &ec]);
    for k in [&rsa, &ec] {
        let p = v.verify(&token(k, &claims("user-1", "openid ledger:customer"))).await;
        let p = p.unwrap_or_else(|e| panic!("{:?}: {e}", k.algorithm()));
        assert_eq!(p.id.as_str(), "user-1");
        assert!(p.has(Scope::Customer) && !p.has(Scope::Operator));
        assert_eq!(p.via, Authentication::Token);
    }
    // The same token again is answered from the cache, with the same principal.
    let t = token(&ec, &claims("user-2", "ledger:operator"));
    let first = v.verify(&t).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.verify(&t).await, Ok(first));
}

#[tokio::test]
async fn cognito_access_tokens_name_the_audience_in_client_id() {
    let k = key("ec", "e1");
    let v = verifier(&[&k]);
    let mut c = claims("user-1", "ledger/customer");
    c.as_object_mut().map(|m| m.remove("aud"));
    c["client_id"] = json!(AUDIENCE);
    let p = v.verify(&token(&k, &c)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(p.has(Scope::Customer));
    c["client_id"] = json!("another-client");
    assert_eq!(v.verify(&token(&k, &c)).await, Err(AuthError::Audience));
    let mut listed = claims("user-1", "");
    listed["aud"] = json!(["other", AUDIENCE]);
    assert!(v.verify(&token(&k, &listed)).await.is_ok());
}

#[tokio::test]
async fn every_bad_token_is_refused_for_its_reason() {
    let (rsa, ec, stranger) = (key("rsa", "r1"), key("ec", "e1"), key("ec", "e1"));
    let v = verifier(&[&rsa, &ec]);
    let now = jsonwebtoken::get_current_timestamp();
    let good = claims("user-1", "ledger:customer");
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().map(|m| m.remove(field));
        c
    };
    let header = b64(&json!({"alg": "ES256", "typ": "JWT", "kid": "e1"}));
    let rsa_public_pem = rsa.jwk().map(|j| j.to_string()).unwrap_or_default();
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("r1".to_owned());
        let secret = EncodingKey::from_secret(rsa_public_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        jsonwebtoken::encode(&h, &good, &secret).unwrap_or_else(|e| panic!("{e}"))
    };
    let cases: Vec<(&str, String, AuthError)> = vec![
        ("two segments", "abc.def".to_owned(), AuthError::Malformed),
        ("four segments", "a.b.c.d".to_owned(), AuthError::Malformed),
        ("bad base64", "%%%.%%%.%%%".to_owned(), AuthError::Malformed),
        ("non-JSON header", format!("{}.{}.sig", "bm90IGpzb24", b64(&good)), AuthError::Malformed),
        // The signature is checked before the claims are read.
        ("non-JSON claims", format!("{header}.bm90IGpzb24.{}", "c2ln"), AuthError::Signature),
        ("oversized", format!("{header}.{}.sig", "A".repeat(20 * 1024)), AuthError::TooLarge),
        ("expired", token(&ec, &with("exp", json!(now - 120))), AuthError::Expired),
        ("no exp", token(&ec, &without("exp")), AuthError::Expired),
        ("not yet valid", token(&ec, &with("nbf", json!(now + 600))), AuthError::NotYetValid),
        ("wrong issuer", token(&ec, &with("iss", json!("https://evil.test"))), AuthError::Issuer),
        ("no issuer", token(&ec, &without("iss")), AuthError::Issuer),
        ("wrong audience", token(&ec, &with("aud", json!("someone-else"))), AuthError::Audience),
        ("no audience", token(&ec, &without("aud")), AuthError::Audience),
        ("no subject", token(&ec, &without("sub")), AuthError::Subject),
        ("subject outside the alphabet", token(&ec, &with("sub", json!("a b"))), AuthError::Subject),
        (
            "alg none",
            format!("{}.{}.", b64(&json!({"alg": "none", "kid": "e1"})), b64(&good)),
            AuthError::Malformed,
        ),
        ("HS256 keyed with the public key", hs256, AuthError::Algorithm),
        ("unknown kid", token(&key("ec", "nobody"), &good), AuthError::UnknownKey),
        ("no kid", format!("{}.{}.sig", b64(&json!({"alg": "ES256"})), b64(&good)), AuthError::UnknownKey),
        ("signed by another key under a known kid", token(&stranger, &good), AuthError::Signature),
        (
            "RS256 header naming the P-256 key",
            format!("{}.{}.{}", b64(&json!({"alg": "RS256", "kid": "e1"})), b64(&good), "c2ln"),
            AuthError::Algorithm,
        ),
        (
            "tampered claims",
            {
                let t = token(&ec, &good);
                let parts: Vec<&str> = t.split('.').collect();
                format!("{}.{}.{}", parts[0], b64(&with("scope", json!("ledger:operator"))), parts[2])
            },
            AuthError::Signature,
        ),
    ];
    for (name, t, expected) in cases {
        assert_eq!(v.verify(&t).await, Err(expected.clone()), "{name}");
        assert!(expected.is_refusal(), "{name}");
    }
    // Leeway: expired 30 s ago is still accepted, valid from 30 s ahead too.
    assert!(v.verify(&token(&ec, &with("exp", json!(now - 30)))).await.is_ok());
    assert!(v.verify(&token(&ec, &with("nbf", json!(now + 30)))).await.is_ok());
    const { assert!(MAX_TOKEN_BYTES < 20 * 1024) };
}

#[test]
fn bearer_takes_the_token_of_a_bearer_header_only() {
    assert_eq!(bearer("Bearer abc"), Some("abc"));
    assert_eq!(bearer("bearer  abc "), Some("abc"));
    assert_eq!(bearer("Basic abc"), None);
    assert_eq!(bearer("Bearer "), None);
    assert_eq!(bearer("abc"), None);
}

/// A key source that counts its reads and serves whatever set it holds now.
#[derive(Debug)]
struct Counting {
    reads: AtomicUsize,
    set: std::sync::Mutex<String>,
}

impl KeySource for Counting {
    fn fetch(&self) -> KeysFuture<'_> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let set = self.set.lock().map(|s| s.clone()).unwrap_or_default();
        Box::pin(async move { Ok(set) })
    }
}

#[tokio::test]
async fn unknown_kids_reread_the_key_set_at_most_once_a_minute() {
    let (old, new) = (key("ec", "old"), key("ec", "new"));
    let source = Arc::new(Counting {
        reads: AtomicUsize::new(0),
        set: std::sync::Mutex::new(key_set(&[&old]).unwrap_or_else(|e| panic!("{e}"))),
    });
    let v = Verifier::new(
        VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() },
        source.clone(),
    );
    assert_eq!(v.load().await, Ok(1));
    assert!(v.verify(&token(&old, &claims("u1", ""))).await.is_ok());
    assert_eq!(source.reads.load(Ordering::SeqCst), 1);

    // The issuer rotates to a new key; the first token under it was read too soon after the load.
    if let Ok(mut set) = source.set.lock() {
        *set = key_set(&[&old, &new]).unwrap_or_else(|e| panic!("{e}"));
    }
    for _ in 0..50 {
        assert_eq!(v.verify(&token(&new, &claims("u1", ""))).await, Err(AuthError::UnknownKey));
        assert_eq!(
            v.verify(&token(&key("ec", "made-up"), &claims("u1", ""))).await,
            Err(AuthError::UnknownKey)
        );
    }
    assert_eq!(source.reads.load(Ordering::SeqCst), 1, "a flood of unknown kids must not read the set again");
}

#[tokio::test]
async fn a_verifier_that_has_read_no_key_yet_reads_on_the_first_token() {
    let k = key("rsa", "r1");
    let source = Arc::new(Counting {
        reads: AtomicUsize::new(0),
        set: std::sync::Mutex::new(key_set(&[&k]).unwrap_or_else(|e| panic!("{e}"))),
    });
    let v = Verifier::new(
        VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() },
        source.clone(),
    );
    assert!(v.verify(&token(&k, &claims("u1", ""))).await.is_ok());
    assert_eq!(source.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreadable_key_set_is_unavailable_not_a_refusal() {
    let k = key("ec", "e1");
    let v = Verifier::new(
        VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() },
        Arc::new(StaticKeys(
            "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\", \"kid\": \"e1\"}]}".to_owned(),
        )),
    );
    let err = v.verify(&token(&k, &claims("u1", ""))).await.err();
    assert!(matches!(err, Some(AuthError::KeysUnavailable(_))), "{err:?}");
    assert!(!err.is_some_and(|e| e.is_refusal()));
}
