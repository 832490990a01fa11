//! Malformed requests: always a 4xx with a code, never a 5xx, never a write.

use http::Method;

use crate::helpers::{key, money_body, spawn_app, txid};

struct Case {
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// The code, and a text the message must contain (the field it names).
    code: &'static str,
    names: &'static str,
}

fn case(path: &str, body: impl Into<Vec<u8>>, code: &'static str, names: &'static str) -> Case {
    Case { path: path.to_owned(), content_type: Some("application/json"), body: body.into(), code, names }
}

const DEP: &str = "/api/accounts/acc-mal/deposits";
const WD: &str = "/api/accounts/acc-mal/withdrawals";
const CREATE: &str = "/api/accounts";
const FREEZE: &str = "/api/accounts/acc-mal/freeze";
const UNFREEZE: &str = "/api/accounts/acc-mal/unfreeze";

fn cases() -> Vec<Case> {
    let v = "VALIDATION_FAILED";
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        r#"{{"amount":1,"currency":"USD","transactionId":"t","actor":{}1{}}}"#,
        r#"{"a":"#.repeat(5_000),
        "}".repeat(5_000)
    );
    let long_tx = "t".repeat(129);
    let mut cases = vec![
        // Not JSON, or not a JSON object.
        case(DEP, "{", v, "JSON"),
        case(DEP, r#"{"amount":}"#, v, "JSON"),
        case(DEP, "nope", v, "JSON"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"t"} trailing"#, v, "JSON"),
        case(DEP, "[]", v, "object"),
        case(DEP, r#"[{"amount":1,"currency":"USD","transactionId":"t"}]"#, v, "object"),
        case(DEP, r#""a string""#, v, "object"),
        case(DEP, "null", v, "object"),
        case(DEP, "42", v, "object"),
        case(DEP, "true", v, "object"),
        case(DEP, "", v, "body"),
        case(DEP, "   \n ", v, "body"),
        case(DEP, deep_array.as_bytes(), v, "JSON"),
        case(DEP, deep_object.as_bytes(), v, ""),
        case(DEP, vec![0xff, 0xfe, 0x00, 0x7b], v, "JSON"),
        // Unknown, missing, duplicated fields.
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"t","extra":1}"#, v, "extra"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"t","Amount":1}"#, v, "Amount"),
        case(DEP, r#"{"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":1,"transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":"USD"}"#, v, "transactionId"),
        case(DEP, r#"{"amount":1,"amount":2,"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, "{}", v, "amount"),
        // Wrong types, field by field.
        case(DEP, r#"{"amount":"1","currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":true,"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":null,"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":[1],"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":{"minor":100},"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":1,"currency":840,"transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":null,"transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":["USD"],"transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":"usd","transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":"US","transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":"ABC","transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":"","transactionId":"t"}"#, v, "currency"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":7}"#, v, "transactionId"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":null}"#, v, "transactionId"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":""}"#, v, "transactionId"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"tx 1"}"#, v, "transactionId"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"tx-é"}"#, v, "transactionId"),
        case(
            DEP,
            format!(r#"{{"amount":1,"currency":"USD","transactionId":"{long_tx}"}}"#),
            v,
            "transactionId",
        ),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"t","actor":5}"#, v, "actor"),
        case(DEP, r#"{"amount":1,"currency":"USD","transactionId":"t","actor":" "}"#, v, "actor"),
        case(
            DEP,
            format!(r#"{{"amount":1,"currency":"USD","transactionId":"t","actor":"{}"}}"#, "a".repeat(129)),
            v,
            "actor",
        ),
        // Huge numbers.
        case(DEP, r#"{"amount":1e400,"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(DEP, r#"{"amount":-1e400,"currency":"USD","transactionId":"t"}"#, v, "amount"),
        case(
            DEP,
            format!(r#"{{"amount":{},"currency":"USD","transactionId":"t"}}"#, "9".repeat(400)),
            v,
            "amount",
        ),
        case(
            DEP,
            format!(r#"{{"amount":0.{}1,"currency":"USD","transactionId":"t"}}"#, "0".repeat(400)),
            v,
            "amount",
        ),
        case(WD, r#"{"amount":18446744073709551616,"currency":"USD","transactionId":"t"}"#, v, "amount"),
        // Path ids.
        case(
            "/api/accounts/%E2%82%AC%E2%82%AC%E2%82%AC/deposits",
            money_body("1", "USD", "t"),
            v,
            "accountId",
        ),
        case("/api/accounts/ab/deposits", money_body("1", "USD", "t"), v, "accountId"),
        case(
            &format!("/api/accounts/{}/deposits", "a".repeat(65)),
            money_body("1", "USD", "t"),
            v,
            "accountId",
        ),
        case("/api/accounts/acc%20mal/withdrawals", money_body("1", "USD", "t"), v, "accountId"),
        // Create.
        case(CREATE, r#"{"accountId":"ééé","ownerId":"own","currency":"USD"}"#, v, "accountId"),
        case(CREATE, r#"{"accountId":"ab","ownerId":"own","currency":"USD"}"#, v, "accountId"),
        case(CREATE, r#"{"accountId":7,"ownerId":"own","currency":"USD"}"#, v, "accountId"),
        case(CREATE, r#"{"accountId":"acc-new","ownerId":"o","currency":"USD"}"#, v, "ownerId"),
        case(CREATE, r#"{"accountId":"acc-new","ownerId":{"id":"own"},"currency":"USD"}"#, v, "ownerId"),
        case(CREATE, r#"{"accountId":"acc-new","ownerId":"own","currency":"DOLLARS"}"#, v, "currency"),
        case(CREATE, r#"{"accountId":"acc-new","ownerId":"own"}"#, v, "currency"),
        case(
            CREATE,
            r#"{"accountId":"acc-new","ownerId":"own","currency":"USD","balance":100}"#,
            v,
            "balance",
        ),
        // Freeze and unfreeze.
        case(FREEZE, "{}", v, "reason"),
        case(FREEZE, r#"{"reason":""}"#, v, "reason"),
        case(FREEZE, r#"{"reason":null}"#, v, "reason"),
        case(FREEZE, r#"{"reason":42}"#, v, "reason"),
        case(FREEZE, r#"{"reason":"x","until":"tomorrow"}"#, v, "until"),
        case(UNFREEZE, r#"{"reason":["a"]}"#, v, "reason"),
        // Too large.
        case(DEP, vec![b'x'; 64 * 1024 + 1], "PAYLOAD_TOO_LARGE", ""),
        case(CREATE, vec![b'{'; 200 * 1024], "PAYLOAD_TOO_LARGE", ""),
    ];
    // Not JSON by content type, even with a JSON body.
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"] {
        cases.push(Case {
            path: DEP.to_owned(),
            content_type: Some(ct),
            body: money_body("1", "USD", "t").into(),
            code: v,
            names: "Content-Type",
        });
    }
    cases
}

#[tokio::test]
async fn malformed_bodies_never_cause_a_server_error_nor_a_write() {
    let app = spawn_app().await;
    app.new_account("acc-mal", "USD").await;
    app.deposit_ok("acc-mal", "50", "USD").await;
    let events_before = app.total_events().await;
    // One key for the whole sweep: a validation failure is never stored, so it stays usable.
    let k = key();
    for case in cases() {
        let mut headers = vec![("idempotency-key", k.as_str())];
        if let Some(ct) = case.content_type {
            headers.push(("content-type", ct));
        }
        let resp = app.send(Method::POST, &case.path, &headers, case.body.clone()).await;
        let shown = String::from_utf8_lossy(&case.body).chars().take(120).collect::<String>();
        assert!(resp.code() < 500, "{} {shown:?} -> {}: {}", case.path, resp.code(), resp.text);
        let status = if case.code == "PAYLOAD_TOO_LARGE" { 413 } else { 400 };
        assert_eq!(resp.code(), status, "{} {shown:?}: {}", case.path, resp.text);
        resp.error(status, case.code);
        let message = resp.body["message"].as_str().expect("message");
        assert!(message.contains(case.names), "{shown:?}: message {message:?} should name {:?}", case.names);
    }
    assert_eq!(app.total_events().await, events_before, "nothing was written");
    assert_eq!(app.stored_version("acc-mal").await, 2);
    assert_eq!(app.stored_version("acc-new").await, 0);
    // The key was never stored: it still runs a real command.
    app.post_deposit(&k, "acc-mal", "1", "USD", &txid()).await.accepted("acc-mal");
    assert_eq!(app.balance_minor("acc-mal").await, ("5100".to_owned(), 3));
}

#[tokio::test]
async fn a_missing_content_type_is_read_as_json_and_a_json_suffix_type_is_accepted() {
    let app = spawn_app().await;
    app.new_account("acc-ct", "USD").await;
    let body = money_body("1", "USD", &txid());
    let k = key();
    let resp = app
        .send(Method::POST, "/api/accounts/acc-ct/deposits", &[("idempotency-key", &k)], body.into())
        .await;
    resp.accepted("acc-ct");
    let body = money_body("2", "USD", &txid());
    let k = key();
    let headers =
        [("idempotency-key", k.as_str()), ("content-type", "application/merchant+json; charset=utf-8")];
    app.send(Method::POST, "/api/accounts/acc-ct/deposits", &headers, body.into()).await.accepted("acc-ct");
    assert_eq!(app.balance_minor("acc-ct").await, ("300".to_owned(), 3));
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_accepted_and_one_byte_more_is_too_large() {
    let app = spawn_app().await;
    app.new_account("acc-64k", "USD").await;
    let tx = txid();
    let body = money_body("1", "USD", &tx);
    let padded = format!("{body}{}", " ".repeat(64 * 1024 - body.len()));
    assert_eq!(padded.len(), 64 * 1024);
    let too_big = format!("{padded} ");
    app.post_json("/api/accounts/acc-64k/deposits", Some(&key()), &too_big)
        .await
        .error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(app.stored_version("acc-64k").await, 1);
    app.post_json("/api/accounts/acc-64k/deposits", Some(&key()), &padded).await.accepted("acc-64k");
    assert_eq!(app.stored_version("acc-64k").await, 2);
}
