//! `docs/api/openapi.yaml` against the router and the error mapping: every route of `ROUTES` is
//! documented with its method, every documented operation is served by the router as that route, and the
//! documented error codes and their statuses are exactly those `classify` gives (plus the gateway's own,
//! exactly those of template.yaml's gateway responses).

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};

use corebank_api::router::{Match, ROUTES, match_route};
use corebank_template_check::{effective_template, load_yaml, non_test_code, read};
use http::Method;
use serde_json::Value;

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

fn document() -> Value {
    load_yaml("docs/api/openapi.yaml").unwrap()
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(*method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(status, code)` of every arm of `classify`, read from `shared/api/src/error.rs`: each code literal
/// follows the `S::STATUS` of its arm.
fn classified() -> BTreeSet<(u16, String)> {
    let code = non_test_code(&read("shared/api/src/error.rs").unwrap());
    let start = code.find("pub fn classify").expect("classify in error.rs");
    let end = code.find("pub fn error_body").unwrap_or(code.len());
    let body = &code[start..end];
    let mut out = BTreeSet::new();
    for (i, _) in body.match_indices("(S::") {
        let rest = &body[i + 4..];
        let status_name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
        let after = &rest[status_name.len()..];
        let Some(literal) = after.trim_start_matches([',', ' ', '\n']).strip_prefix('"') else { continue };
        let Some((code, _)) = literal.split_once('"') else { continue };
        let status = match status_name.as_str() {
            "BAD_REQUEST" => 400,
            "UNAUTHORIZED" => 401,
            "FORBIDDEN" => 403,
            "NOT_FOUND" => 404,
            "METHOD_NOT_ALLOWED" => 405,
            "CONFLICT" => 409,
            "PAYLOAD_TOO_LARGE" => 413,
            "UNPROCESSABLE_ENTITY" => 422,
            "TOO_MANY_REQUESTS" => 429,
            "INTERNAL_SERVER_ERROR" => 500,
            "SERVICE_UNAVAILABLE" => 503,
            "GATEWAY_TIMEOUT" => 504,
            other => panic!("status S::{other} of {code}: add it to this table"),
        };
        out.insert((status, code.to_owned()));
    }
    assert!(out.len() > 10, "classify's arms were not found: {out:?}");
    out
}

/// `(status, code)` of every gateway response of template.yaml.
fn gateway_responses() -> BTreeSet<(u16, String)> {
    let template = effective_template(&load_yaml("template.yaml").unwrap());
    let responses =
        template["Resources"]["CoreBankApi"]["Properties"]["GatewayResponses"].as_object().unwrap();
    responses
        .iter()
        .map(|(kind, r)| {
            let status =
                u16::try_from(r["StatusCode"].as_u64().unwrap_or_else(|| panic!("{kind}: StatusCode")))
                    .unwrap();
            let body = r["ResponseTemplates"]["application/json"].as_str().unwrap();
            let code = body.split("\"code\":\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
            assert!(
                body.contains(&format!("\"statusCode\":{status}")),
                "{kind}: body statusCode vs StatusCode"
            );
            (status, code.to_owned())
        })
        .collect()
}

fn enum_values(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("components.schemas.{schema}.enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_route_of_the_router_is_documented_with_its_method() {
    let documented = operations(&document());
    for (method, path, route) in ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} ({route:?}) is not in docs/api/openapi.yaml"
        );
    }
}

#[test]
fn every_documented_operation_is_served_by_the_router_as_that_route() {
    for (method, path) in operations(&document()) {
        let concrete = path.replace("{id}", "acc-1");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let Match::Found(route, params) = match_route(&m, &concrete) else {
            panic!("{method} {path} is documented but the router does not serve it");
        };
        let expected = ROUTES.iter().find(|(rm, rp, _)| *rm == method && *rp == path).map(|(_, _, r)| *r);
        assert_eq!(Some(route), expected, "{method} {path}");
        if path.contains("{id}") {
            assert_eq!(params.get("id").map(String::as_str), Some("acc-1"), "{method} {path}");
        }
    }
}

#[test]
fn documented_error_codes_are_exactly_those_classify_gives() {
    let doc = document();
    let codes: BTreeSet<String> = classified().into_iter().map(|(_, c)| c).collect();
    assert_eq!(enum_values(&doc, "ErrorCode"), codes, "ErrorCode enum vs shared/api/src/error.rs classify");
}

#[test]
fn gateway_error_codes_are_exactly_those_of_the_template_that_the_app_does_not_give() {
    let doc = document();
    let app: BTreeSet<String> = classified().into_iter().map(|(_, c)| c).collect();
    let gateway: BTreeSet<String> =
        gateway_responses().into_iter().map(|(_, c)| c).filter(|c| !app.contains(c)).collect();
    assert_eq!(
        enum_values(&doc, "GatewayErrorCode"),
        gateway,
        "GatewayErrorCode enum vs template.yaml GatewayResponses"
    );
}

#[test]
fn every_status_and_code_pair_is_documented_on_the_response_of_that_status() {
    let doc = document();
    let mut documented: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let Some(status) = response.get("x-status") else { continue };
        let status = u16::try_from(status.as_u64().unwrap()).unwrap();
        let codes = response["x-error-codes"].as_array().unwrap_or_else(|| panic!("{name}: x-error-codes"));
        let set = documented.entry(status).or_default();
        for code in codes {
            assert!(set.insert(code.as_str().unwrap().to_owned()), "{name}: {code} twice for {status}");
        }
    }
    let mut expected: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (status, code) in classified().into_iter().chain(gateway_responses()) {
        expected.entry(status).or_default().insert(code);
    }
    assert_eq!(
        documented, expected,
        "components.responses x-status/x-error-codes vs classify + gateway responses"
    );
}

#[test]
fn every_operation_documents_its_errors_by_reference_and_commands_need_a_key() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(*method) else { continue };
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("500"), "{method} {path}: 500");
            let success = responses.keys().filter(|s| s.starts_with('2')).count();
            assert!(success >= 1, "{method} {path}: a success status");
            let admin = path.starts_with("/admin/");
            let health = path == "/health";
            // The document's own security (a token or a signature) holds everywhere but on health,
            // which is public, and the admin routes, which add the admin token.
            assert_eq!(
                op.get("security").is_some(),
                admin || health,
                "{method} {path}: security overridden exactly on health and the admin routes"
            );
            if health {
                assert_eq!(op["security"], serde_json::json!([]), "{method} {path}: public");
            } else {
                assert!(
                    responses.contains_key("401") && responses.contains_key("403"),
                    "{method} {path}: 401, 403"
                );
            }
            let key = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["$ref"] == "#/components/parameters/IdempotencyKey");
            assert_eq!(
                key,
                *method == "post" && !admin,
                "{method} {path}: Idempotency-Key exactly on commands"
            );
        }
    }
}
