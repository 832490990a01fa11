//! The admin routes as API Gateway hands them over in AWS: SigV4-signed (AWS_IAM auth), so the
//! `Authorization` header holds the signature and the app's token travels in `X-Admin-Token`.

#![cfg(test)]

use std::sync::Arc;

use corebank_api::{Deps, handlers};
use corebank_app::{App, AppConfig, SystemClock};
use lambda_http::{Body, Request};
use secrecy::SecretString;
use serde_json::Value;

fn deps(token: &str) -> Deps {
    let (stores, _feed) = corebank_store::memory::stores();
    let config =
        AppConfig { admin_token: Some(SecretString::from(token.to_owned())), ..AppConfig::default() };
    Deps::new(App::new(config, stores, corebank_api::renderer(), Arc::new(SystemClock)))
}

fn signed_request(edit: impl FnOnce(&mut Value)) -> Request {
    let path = format!("{}/tests/fixtures/admin_rebuild_account_sigv4.json", env!("CARGO_MANIFEST_DIR"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut event);
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

async fn status_and_code(deps: &Deps, req: Request) -> (u16, String) {
    let response = handlers::admin_rebuild_account(deps, req).await;
    let status = response.status().as_u16();
    let Body::Text(text) = response.into_body() else { panic!("not a text body") };
    let body: Value = serde_json::from_str(&text).unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_signed_admin_request_is_authorised_by_the_x_admin_token_header() {
    let deps = deps("fixture-admin-token");
    // Authorised: the rebuild runs and finds no such account.
    let (status, code) = status_and_code(&deps, signed_request(|_| {})).await;
    assert_eq!((status, code.as_str()), (404, "ACCOUNT_NOT_FOUND"));
}

/// The caller is authenticated (IAM names it) but holds no `ledger:admin`: without a token it is
/// refused for what it is (403), with a wrong token the token is refused (401).
#[tokio::test]
async fn a_signed_admin_request_without_the_token_is_forbidden_and_with_a_wrong_one_unauthorised() {
    let deps = deps("fixture-admin-token");
    let without = signed_request(|e| {
        e["headers"].as_object_mut().unwrap().remove("X-Admin-Token");
        e["multiValueHeaders"].as_object_mut().unwrap().remove("X-Admin-Token");
    });
    assert_eq!(status_and_code(&deps, without).await, (403, "FORBIDDEN".to_owned()));
    let wrong = signed_request(|e| {
        e["headers"]["X-Admin-Token"] = Value::from("not-the-token");
        e["multiValueHeaders"]["X-Admin-Token"] = Value::from(vec!["not-the-token"]);
    });
    assert_eq!(status_and_code(&deps, wrong).await, (401, "UNAUTHORIZED".to_owned()));
}
