//! `GET /metrics`: the figures the Lambda functions write to CloudWatch, in Prometheus' text format.
//!
//! The recorder is one per process and the tests of this binary run side by side, so each figure is
//! read before and after this test's own requests and must have grown by at least what they did.

use http::Method;

use crate::helpers::{TestApp, key, money_body, spawn_app, txid};

/// The value of the sample `name{labels}` (labels exactly as rendered, `""` for none), 0 if absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let wanted = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == wanted).then(|| value.parse::<f64>().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let resp = app.send(Method::GET, "/metrics", &[], Vec::new()).await;
    assert_eq!(resp.code(), 200, "{}", resp.text);
    let content_type = resp.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    assert!(content_type.is_some_and(|t| t.starts_with("text/plain")), "{content_type:?}");
    resp.text
}

#[tokio::test]
async fn commands_replays_and_rejections_are_counted_by_operation_and_code() {
    assert!(corebank_runner::metrics::install(), "the test binary's recorder is ours");
    let app = spawn_app().await;
    app.new_account("acc-metrics", "EUR").await;
    let before = scrape(&app).await;

    let k = key();
    let body = money_body("10.00", "EUR", &txid());
    app.post_json("/api/accounts/acc-metrics/deposits", Some(&k), &body).await.accepted("acc-metrics");
    app.post_json("/api/accounts/acc-metrics/deposits", Some(&k), &body).await.accepted("acc-metrics");
    app.post_json(
        "/api/accounts/acc-metrics/withdrawals",
        Some(&key()),
        &money_body("99.00", "EUR", &txid()),
    )
    .await
    .error(400, "INSUFFICIENT_FUNDS");
    app.post_json("/api/accounts/acc-metrics/deposits", None, &money_body("1.00", "EUR", &txid()))
        .await
        .error(400, "IDEMPOTENCY_KEY_MISSING");

    let after = scrape(&app).await;
    let grew = |name: &str, labels: &str| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(grew("commands_accepted", r#"operation="deposit""#) >= 2.0, "{after}");
    assert!(grew("idempotent_replays", "") >= 1.0, "{after}");
    assert!(grew("commands_rejected", r#"operation="withdraw",code="INSUFFICIENT_FUNDS""#) >= 1.0, "{after}");
    assert!(
        grew("commands_rejected", r#"operation="deposit",code="IDEMPOTENCY_KEY_MISSING""#) >= 1.0,
        "{after}"
    );
    // Described with their help text, as a scraper shows them.
    assert!(after.contains("# HELP commands_accepted "), "{after}");
}

#[tokio::test]
async fn the_metrics_route_takes_only_get() {
    assert!(corebank_runner::metrics::install());
    let app = spawn_app().await;
    // Anything but GET falls through to the API's router, which knows no such route.
    let resp = app.send(Method::POST, "/metrics", &[], Vec::new()).await;
    resp.error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_reconciler_pass_records_stalled_transfers_and_parked_records() {
    assert!(corebank_runner::metrics::install());
    let app = spawn_app().await;
    let bank = &app.deps.app;
    let envelope = corebank_domain::EventEnvelope {
        event_id: uuid::Uuid::new_v4(),
        stream_id: "account-acc-metrics-parked".to_owned(),
        version: 1,
        event_type: "AccountCreated".to_owned(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: serde_json::json!({}),
        metadata: corebank_domain::EventMetadata::default(),
    };
    bank.parking(corebank_store::ParkedConsumer::Projector)
        .park_envelope(&envelope, "injected by the test")
        .await
        .expect("park");
    let before = scrape(&app).await;
    let report = bank.reconcile(&corebank_app::reconcile::ReconcileSettings::default()).await.expect("pass");
    let after = scrape(&app).await;
    assert_eq!(report.examined, 0);
    // Gauges: the pass's own figures (this app's store holds exactly one parked record).
    assert_eq!(sample(&after, "parked_records", ""), 1.0, "{after}");
    assert_eq!(sample(&after, "stalled_transfers", ""), 0.0, "{after}");
    assert!(after.contains("oldest_pending_transfer_age_seconds 0"), "{after}");
    assert!(after.contains("parked_oldest_age_seconds "), "{after}");
    let parked = |text: &str| sample(text, "records_parked", r#"consumer="projector""#);
    assert!(parked(&before) >= 1.0, "the park was counted: {before}");
}
