//! `AUTH_MODE=jwt` end to end: tokens signed by freshly generated RSA and P-256 keys, verified by the
//! runner with the authorizer's code; customers, operators and admins doing what they may and being
//! refused what they may not; every bad token refused with 401 and nothing stored.

use std::sync::Arc;

use base64::Engine as _;
use corebank_auth::jwt::StaticKeys;
use corebank_auth::mint::{SigningKey, access_claims, key_set};
use corebank_auth::{Verifier, VerifierConfig};
use corebank_runner::Gate;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, key, money_body, spawn_gated_app, txid};

const ISSUER: &str = "https://issuer.corebank.test";
const AUDIENCE: &str = "corebank-api";

struct Bank {
    app: TestApp,
    rsa: SigningKey,
    ec: SigningKey,
}

async fn bank() -> Bank {
    let rsa = SigningKey::generate_rsa("rsa-1").expect("RSA key");
    let ec = SigningKey::generate_ec("ec-1").expect("P-256 key");
    let set = key_set(&[&rsa, &ec]).expect("JWKS");
    let verifier = Verifier::new(
        VerifierConfig { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned() },
        Arc::new(StaticKeys(set)),
    );
    verifier.load().await.expect("keys");
    let app = spawn_gated_app(Gate::Jwt(Arc::new(verifier))).await;
    Bank { app, rsa, ec }
}

impl Bank {
    /// A token for `sub` with `scope`, signed RS256 or ES256 in turn by the subject's name length.
    fn token(&self, sub: &str, scope: &str) -> String {
        let key = if sub.len().is_multiple_of(2) { &self.rsa } else { &self.ec };
        key.sign(&access_claims(ISSUER, AUDIENCE, sub, scope, 600)).expect("sign")
    }

    async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        self.app.send(method, path, &headers, body.as_bytes().to_vec()).await
    }

    async fn post(&self, token: &str, path: &str, body: &str) -> Resp {
        self.send(Some(token), Method::POST, path, Some(&key()), body).await
    }

    async fn get(&self, token: &str, path: &str) -> Resp {
        self.send(Some(token), Method::GET, path, None, "").await
    }

    async fn create(&self, token: &str, account_id: &str, owner_id: &str) -> Resp {
        let body = json!({"accountId": account_id, "ownerId": owner_id, "currency": "EUR"}).to_string();
        self.post(token, "/api/accounts", &body).await
    }

    async fn deposit(&self, token: &str, account_id: &str, amount: &str) -> Resp {
        self.post(token, &format!("/api/accounts/{account_id}/deposits"), &money_body(amount, "EUR", &txid()))
            .await
    }

    async fn withdraw(&self, token: &str, account_id: &str, amount: &str) -> Resp {
        self.post(
            token,
            &format!("/api/accounts/{account_id}/withdrawals"),
            &money_body(amount, "EUR", &txid()),
        )
        .await
    }

    async fn transfer(&self, token: &str, from: &str, to: &str, amount: &str) -> Resp {
        let body = json!({"sourceAccountId": from, "destinationAccountId": to, "amount": amount.parse::<f64>().ok(), "currency": "EUR"});
        self.post(token, "/api/transfers", &body.to_string()).await
    }
}

#[track_caller]
fn unauthorized(resp: &Resp) {
    resp.error(401, "UNAUTHORIZED");
    assert_eq!(
        resp.headers.get(http::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
        Some("Bearer"),
        "{}",
        resp.text
    );
}

#[tokio::test]
async fn health_needs_no_token_and_every_other_route_does() {
    let bank = bank().await;
    assert_eq!(bank.app.get("/api/health").await.code(), 200);
    for (method, path) in [
        (Method::GET, "/api/accounts/acc-1"),
        (Method::GET, "/api/accounts/acc-1/balance"),
        (Method::GET, "/api/accounts/acc-1/history"),
        (Method::GET, "/api/transfers/t-1"),
        (Method::POST, "/api/accounts"),
        (Method::POST, "/api/accounts/acc-1/deposits"),
        (Method::POST, "/api/accounts/acc-1/withdrawals"),
        (Method::POST, "/api/accounts/acc-1/freeze"),
        (Method::POST, "/api/accounts/acc-1/unfreeze"),
        (Method::POST, "/api/transfers"),
    ] {
        unauthorized(&bank.send(None, method, path, Some(&key()), "{}").await);
    }
}

#[tokio::test]
async fn a_customer_uses_its_own_accounts_and_is_refused_the_rest() {
    let bank = bank().await;
    let (alice, bob, ops) = (
        bank.token("alice", "ledger:customer"),
        bank.token("bob-1", "ledger:customer"),
        bank.token("ops", "ledger:operator"),
    );

    // A customer opens accounts for itself only.
    bank.create(&alice, "acc-alice", "alice").await.accepted("acc-alice");
    bank.create(&alice, "acc-for-bob", "bob-1").await.error(403, "FORBIDDEN");
    bank.create(&bob, "acc-bob", "bob-1").await.accepted("acc-bob");
    assert!(bank.app.stored_events("acc-for-bob").await.is_empty());

    // Deposits, freezes and unfreezes are the operator's.
    bank.deposit(&alice, "acc-alice", "50").await.error(403, "FORBIDDEN");
    bank.post(&alice, "/api/accounts/acc-alice/freeze", r#"{"reason":"mine"}"#).await.error(403, "FORBIDDEN");
    bank.post(&alice, "/api/accounts/acc-alice/unfreeze", r#"{"reason":"mine"}"#)
        .await
        .error(403, "FORBIDDEN");
    bank.deposit(&ops, "acc-alice", "100").await.accepted("acc-alice");

    // Its own account it reads and withdraws from.
    assert_eq!(bank.get(&alice, "/api/accounts/acc-alice").await.code(), 200);
    assert_eq!(bank.get(&alice, "/api/accounts/acc-alice/balance").await.code(), 200);
    assert_eq!(bank.get(&alice, "/api/accounts/acc-alice/history").await.code(), 200);
    bank.withdraw(&alice, "acc-alice", "10").await.accepted("acc-alice");

    // Another customer's account is answered exactly as an account that does not exist.
    for path in
        ["/api/accounts/acc-alice", "/api/accounts/acc-alice/balance", "/api/accounts/acc-alice/history"]
    {
        let hidden = bank.get(&bob, path).await;
        let unknown = bank.get(&bob, &path.replace("acc-alice", "acc-nobody")).await;
        hidden.error(404, "ACCOUNT_NOT_FOUND");
        assert_eq!(hidden.body, unknown.body, "{path}");
    }
    let hidden = bank.withdraw(&bob, "acc-alice", "1").await;
    hidden.error(404, "ACCOUNT_NOT_FOUND");
    assert_eq!(hidden.body, bank.withdraw(&bob, "acc-nobody", "1").await.body);
    assert_eq!(bank.app.stored_version("acc-alice").await, 3, "nothing was written for bob");

    // The operator does everything, on every account.
    bank.post(&ops, "/api/accounts/acc-alice/freeze", r#"{"reason":"review"}"#).await.accepted("acc-alice");
    bank.post(&ops, "/api/accounts/acc-alice/unfreeze", r#"{"reason":"cleared"}"#)
        .await
        .accepted("acc-alice");
    bank.withdraw(&ops, "acc-alice", "5").await.accepted("acc-alice");
    bank.create(&ops, "acc-for-carol", "carol").await.accepted("acc-for-carol");
    assert_eq!(bank.get(&ops, "/api/accounts/acc-bob").await.code(), 200);

    // A token with no ledger scope may do nothing.
    let nobody = bank.token("dave", "openid email");
    bank.create(&nobody, "acc-dave", "dave").await.error(403, "FORBIDDEN");
    bank.get(&nobody, "/api/accounts/acc-alice").await.error(403, "FORBIDDEN");
}

#[tokio::test]
async fn events_record_the_principal_as_actor_and_the_body_actor_only_as_requested() {
    let bank = bank().await;
    let ops = bank.token("ops-2", "ledger:operator");
    bank.create(&ops, "acc-actor", "erin").await.accepted("acc-actor");
    let body = r#"{"amount": 5, "currency": "EUR", "transactionId": "tx-actor-1", "actor": "transfer-saga"}"#;
    bank.post(&ops, "/api/accounts/acc-actor/deposits", body).await.accepted("acc-actor");
    let events = bank.app.stored_events("acc-actor").await;
    assert_eq!(events[0].metadata.actor.as_deref(), Some("ops-2"));
    assert_eq!(events[1].metadata.actor.as_deref(), Some("ops-2"), "a body cannot claim to be the saga");
    assert_eq!(events[1].metadata.requested_actor.as_deref(), Some("transfer-saga"));
}

#[tokio::test]
async fn a_customer_transfers_out_of_its_own_accounts_only_and_reads_only_its_transfers() {
    let bank = bank().await;
    let (alice, bob, ops) = (
        bank.token("alice", "ledger:customer"),
        bank.token("bob-1", "ledger:customer"),
        bank.token("ops", "ledger:operator"),
    );
    bank.create(&alice, "acc-a", "alice").await.accepted("acc-a");
    bank.create(&bob, "acc-b", "bob-1").await.accepted("acc-b");
    bank.deposit(&ops, "acc-a", "100").await.accepted("acc-a");

    // Out of its own account, to anyone's: accepted, and the saga's legs act for alice.
    let started = bank.transfer(&alice, "acc-a", "acc-b", "30").await;
    assert_eq!(started.code(), 202, "{}", started.text);
    let id = started.body["transferId"].as_str().expect("transferId").to_owned();
    let mut status = Value::Null;
    for _ in 0..200 {
        let read = bank.get(&alice, &format!("/api/transfers/{id}")).await;
        assert_eq!(read.code(), 200, "{}", read.text);
        status = read.body["status"].clone();
        if status != "PENDING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "COMPLETED");
    let held = bank.app.stored_events("acc-a").await;
    let hold = held.iter().find(|e| e.event_type == "FundsReserved").expect("a hold");
    assert_eq!(hold.metadata.actor.as_deref(), Some("alice"), "the legs carry the principal that started it");

    // Out of someone else's account: refused at the request as an unknown account, nothing reserved.
    let before = bank.app.stored_version("acc-a").await;
    let refused = bank.transfer(&bob, "acc-a", "acc-b", "10").await;
    refused.error(404, "ACCOUNT_NOT_FOUND");
    assert_eq!(refused.body, bank.transfer(&bob, "acc-nobody", "acc-b", "10").await.body);
    assert_eq!(bank.app.stored_version("acc-a").await, before);
    let transfers = bank.app.deps.app.stores.events.list_streams("transfer-", None, 100).await.expect("list");
    assert_eq!(transfers.len(), 1, "only alice's transfer exists: {transfers:?}");

    // Someone else's transfer reads exactly as an unknown one; the operator reads any.
    let hidden = bank.get(&bob, &format!("/api/transfers/{id}")).await;
    hidden.error(404, "TRANSFER_NOT_FOUND");
    assert_eq!(hidden.body, bank.get(&bob, "/api/transfers/t-nobody").await.body);
    assert_eq!(bank.get(&ops, &format!("/api/transfers/{id}")).await.code(), 200);
}

#[tokio::test]
async fn idempotency_keys_are_per_principal() {
    let bank = bank().await;
    let (alice, bob) = (bank.token("alice", "ledger:customer"), bank.token("bob-1", "ledger:customer"));
    let shared = key();
    let body = |account: &str, owner: &str| {
        json!({"accountId": account, "ownerId": owner, "currency": "EUR"}).to_string()
    };
    let alice_body = body("acc-k-alice", "alice");
    bank.send(Some(&alice), Method::POST, "/api/accounts", Some(&shared), &alice_body)
        .await
        .accepted("acc-k-alice");
    // The same key from another principal is another request: a fresh answer, not alice's.
    let bob_body = body("acc-k-bob", "bob-1");
    bank.send(Some(&bob), Method::POST, "/api/accounts", Some(&shared), &bob_body)
        .await
        .accepted("acc-k-bob");
    // And each principal's key still replays its own first answer.
    let again = bank
        .send(Some(&alice), Method::POST, "/api/accounts", Some(&shared), &alice_body)
        .await
        .accepted("acc-k-alice");
    assert_eq!(again.version(), 1);
    assert_eq!(bank.app.stored_version("acc-k-alice").await, 1);
    assert_eq!(bank.app.stored_version("acc-k-bob").await, 1);
}

#[tokio::test]
async fn admin_routes_take_the_admin_scope_or_the_admin_token() {
    let bank = bank().await;
    let ops = bank.token("ops", "ledger:operator");
    bank.create(&ops, "acc-adm", "frank").await.accepted("acc-adm");
    let path = "/api/admin/projections/accounts/acc-adm/rebuild";
    let admin = bank.token("root-1", "ledger:admin");
    assert_eq!(bank.send(Some(&admin), Method::POST, path, None, "").await.code(), 200);
    // A verified principal without the scope: 403.
    bank.send(Some(&ops), Method::POST, path, None, "").await.error(403, "FORBIDDEN");
    // The ADMIN_TOKEN bearer instead of a token.
    assert_eq!(bank.send(Some(ADMIN_TOKEN), Method::POST, path, None, "").await.code(), 200);
    unauthorized(&bank.send(Some("not-the-admin-token"), Method::POST, path, None, "").await);
    unauthorized(&bank.send(None, Method::POST, path, None, "").await);
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn every_bad_token_is_401_and_consumes_no_key() {
    let bank = bank().await;
    let ops = bank.token("ops", "ledger:operator");
    bank.create(&ops, "acc-bad", "gina").await.accepted("acc-bad");
    let now = jsonwebtoken::get_current_timestamp();
    let claims = access_claims(ISSUER, AUDIENCE, "ops", "ledger:operator", 600);
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let other_key = SigningKey::generate_ec("ec-1").expect("key");
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".to_owned());
        let public = bank.rsa.jwk().expect("jwk").to_string();
        let secret = EncodingKey::from_secret(public.as_bytes()).expect("secret");
        jsonwebtoken::encode(&header, &claims, &secret).expect("sign")
    };
    let bad: Vec<(&str, String)> = vec![
        ("wrong segment count", "only.two".to_owned()),
        ("bad base64", "!!!.???.***".to_owned()),
        ("non-JSON", format!("{}.{}.c2ln", b64(&json!("x")), "bm90IGpzb24")),
        (
            "oversized",
            format!("{}.{}.c2ln", b64(&json!({"alg": "ES256", "kid": "ec-1"})), "A".repeat(20 * 1024)),
        ),
        ("expired", bank.ec.sign(&with("exp", json!(now - 3600))).expect("sign")),
        ("not yet valid", bank.ec.sign(&with("nbf", json!(now + 3600))).expect("sign")),
        ("wrong issuer", bank.rsa.sign(&with("iss", json!("https://other.test"))).expect("sign")),
        ("wrong audience", bank.rsa.sign(&with("aud", json!("other-api"))).expect("sign")),
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "kid": "ec-1"})), b64(&claims))),
        ("HS256 with the public key", hs256),
        ("unknown kid", SigningKey::generate_ec("nobody").expect("key").sign(&claims).expect("sign")),
        ("another key's signature", other_key.sign(&claims).expect("sign")),
    ];
    let shared_key = key();
    for (name, token) in bad {
        let resp = bank
            .send(
                Some(&token),
                Method::POST,
                "/api/accounts/acc-bad/deposits",
                Some(&shared_key),
                &money_body("5", "EUR", "tx-bad-1"),
            )
            .await;
        assert_eq!(resp.code(), 401, "{name}: {}", resp.text);
        unauthorized(&resp);
    }
    // Oversized headers, malformed schemes.
    let resp = bank
        .app
        .send(Method::GET, "/api/accounts/acc-bad", &[("authorization", "Basic b3BzOnB3")], Vec::new())
        .await;
    unauthorized(&resp);
    assert_eq!(bank.app.stored_version("acc-bad").await, 1, "nothing was stored");
    // The key was never consumed: the same key with a good token is a fresh deposit.
    let ok = bank
        .send(
            Some(&ops),
            Method::POST,
            "/api/accounts/acc-bad/deposits",
            Some(&shared_key),
            &money_body("5", "EUR", "tx-bad-1"),
        )
        .await;
    assert_eq!(ok.accepted("acc-bad").version(), 2);
}
