//! The adapter contract suite against the DynamoDB adapters, on the server `AWS_ENDPOINT_URL` names
//! (moto's server mode under `infra/scripts/with-services.sh`).
//!
//! Every test gets its own uniquely prefixed set of tables: moto's query and transaction times grow with
//! the size of the tables they touch. A missing endpoint fails the run; it never skips.

mod contract;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use corebank_store::Stores;
use corebank_store::dynamodb::{Client, create_tables, stores};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

fn client() -> Client {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!(
            "AWS_ENDPOINT_URL is not set: the DynamoDB contract suite needs a DynamoDB endpoint. Run it as \
             `SERVICES=dynamodb infra/scripts/with-services.sh cargo test -p corebank-store --features dynamodb \
             --test contract_dynamodb`, which starts moto and exports it."
        )
    });
    let region = env_or("AWS_REGION", &env_or("AWS_DEFAULT_REGION", "us-east-1"));
    let credentials = Credentials::new(
        env_or("AWS_ACCESS_KEY_ID", "test"),
        env_or("AWS_SECRET_ACCESS_KEY", "test"),
        std::env::var("AWS_SESSION_TOKEN").ok(),
        None,
        "contract-suite",
    );
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region))
        .credentials_provider(credentials)
        .build();
    Client::from_conf(config)
}

async fn fresh_stores() -> Stores {
    let client = client();
    let prefix = format!("contract_{}_", uuid::Uuid::new_v4().simple());
    let tables = create_tables(&client, &prefix)
        .await
        .unwrap_or_else(|e| panic!("creating the contract tables under {prefix}: {e}"));
    stores(client, tables)
}

contract_suite!(fresh_stores());

// ---------------------------------------------------------------------------------------------------------
// Paths only the DynamoDB adapter has: the suite's requests fit in one transaction, these do not.
// ---------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod beyond_one_transaction {
    use chrono::{DateTime, Duration, Utc};
    use corebank_domain::{AccountStatus, Currency, EventEnvelope, EventMetadata};
    use corebank_store::{
        AccountSummary, AppendRequest, ClaimOutcome, IdempotencyClaim, IdempotencyCompletion, IdempotencyKey,
        MAX_EVENTS_PER_APPEND, ProjectionChange, StatementEntry, StoreError, StoredResponse,
        TransactionIntent, TransactionRecord,
    };
    use serde_json::json;
    use uuid::Uuid;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
    }

    fn events(stream_id: &str, first: u64, count: usize) -> Vec<EventEnvelope> {
        (first..)
            .take(count)
            .map(|version| EventEnvelope {
                event_id: Uuid::new_v4(),
                stream_id: stream_id.to_owned(),
                version,
                event_type: "MoneyDeposited".to_owned(),
                schema_version: 1,
                occurred_at: now(),
                payload: json!({"amountMinor": "100", "currency": "EUR"}),
                metadata: EventMetadata::default(),
            })
            .collect()
    }

    /// An append of the event limit with both guards, at `expected_version`, under a fresh claim.
    async fn full_append(
        s: &corebank_store::Stores,
        stream_id: &str,
        expected_version: u64,
    ) -> (AppendRequest, IdempotencyKey) {
        let t = now();
        let key = IdempotencyKey { scope: "accounts".to_owned(), key: Uuid::new_v4().to_string() };
        let token = Uuid::new_v4();
        let claim = IdempotencyClaim {
            key: key.clone(),
            operation: "deposit".to_owned(),
            request_hash: "sha256:a".to_owned(),
            claim_token: token,
            lease_expires_at: t + Duration::seconds(30),
            expires_at: t + Duration::hours(24),
            now: t,
        };
        assert_eq!(s.idempotency.claim(claim).await.unwrap(), ClaimOutcome::Claimed);
        let response = StoredResponse { status: 200, body: "{}".to_owned(), code: None };
        let request = AppendRequest {
            stream_id: stream_id.to_owned(),
            expected_version,
            events: events(stream_id, expected_version + 1, MAX_EVENTS_PER_APPEND),
            idempotency: Some(IdempotencyCompletion {
                key: key.clone(),
                operation: "deposit".to_owned(),
                request_hash: "sha256:a".to_owned(),
                claim_token: token,
                response: response.clone(),
                expires_at: t + Duration::hours(24),
            }),
            transaction: Some(TransactionRecord {
                transaction_id: format!("tx-{}", Uuid::new_v4()),
                intent: TransactionIntent {
                    account_id: stream_id.to_owned(),
                    operation: "deposit".to_owned(),
                    amount_minor: 100,
                    currency: "EUR".to_owned(),
                },
                response,
                recorded_at: t,
            }),
        };
        (request, key)
    }

    #[tokio::test]
    async fn a_full_append_to_an_existing_stream_checks_its_version_outside_the_transaction() {
        let s = super::fresh_stores().await;
        let stream = format!("account-{}", Uuid::new_v4());
        let first = events(&stream, 1, 1);
        s.events
            .append(AppendRequest {
                stream_id: stream.clone(),
                expected_version: 0,
                events: first.clone(),
                idempotency: None,
                transaction: None,
            })
            .await
            .unwrap();

        // Ahead of the stream: refused, nothing written.
        let (ahead, _) = full_append(&s, &stream, 5).await;
        let tx = ahead.transaction.clone().unwrap().transaction_id;
        let err = s.events.append(ahead).await.unwrap_err();
        assert!(
            matches!(err, StoreError::VersionConflict { expected: 5, actual: 1, .. }),
            "expected a version conflict, got {err:?}"
        );
        assert_eq!(s.events.load_stream(&stream, 0).await.unwrap(), first);
        assert_eq!(s.events.transaction(&tx).await.unwrap(), None);

        // At the stream's version: 98 events, both guards and no room for the check, accepted.
        let (right, _) = full_append(&s, &stream, 1).await;
        let written = right.events.clone();
        let outcome = s.events.append(right).await.unwrap();
        let max = u64::try_from(MAX_EVENTS_PER_APPEND).unwrap();
        assert_eq!(outcome.stream_version, 1 + max);
        let stored = s.events.load_stream(&stream, 1).await.unwrap();
        assert_eq!(stored, written);
    }

    fn row(account_id: &str, version: u64, amount_minor: i64) -> StatementEntry {
        StatementEntry {
            event_id: Uuid::new_v4(),
            account_id: account_id.to_owned(),
            stream_version: version,
            event_type: "MoneyDeposited".to_owned(),
            occurred_at: now(),
            amount_minor: Some(amount_minor),
            currency: Some(Currency::parse("EUR").unwrap()),
            transaction_id: Some(format!("tx-{version}")),
            balance_after_minor: Some(amount_minor),
            reason: None,
        }
    }

    fn summary(account_id: &str, version: u64) -> AccountSummary {
        AccountSummary {
            account_id: account_id.to_owned(),
            owner_id: "owner".to_owned(),
            currency: Currency::parse("EUR").unwrap(),
            status: AccountStatus::Active,
            balance_minor: 100,
            held_minor: 0,
            version,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[tokio::test]
    async fn a_change_with_more_rows_than_one_transaction_holds_applies_whole_and_only_from_its_checkpoint() {
        const ROWS: u64 = 250;
        let s = super::fresh_stores().await;
        let account = Uuid::new_v4().to_string();
        let stream = format!("account-{account}");
        let rows: Vec<StatementEntry> = (1..=ROWS).map(|v| row(&account, v, 100)).collect();
        let big = ProjectionChange {
            stream_id: stream.clone(),
            expected_checkpoint: 0,
            new_checkpoint: ROWS,
            summary: Some(summary(&account, ROWS)),
            statement: rows.clone(),
        };

        s.read_model.apply(big.clone()).await.unwrap();

        assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), ROWS);
        assert_eq!(s.read_model.statement(&account, 0, 1_000).await.unwrap(), rows);
        assert_eq!(s.read_model.statement(&account, 240, 5).await.unwrap(), rows[240..245]);

        // Redelivered with other content: refused at its first chunk, so no row changes.
        let mut again = big;
        again.statement = (1..=ROWS).map(|v| row(&account, v, 999)).collect();
        let err = s.read_model.apply(again).await.unwrap_err();
        assert!(
            matches!(err, StoreError::CheckpointMoved { expected: 0, actual: ROWS, .. }),
            "expected CheckpointMoved, got {err:?}"
        );
        assert_eq!(s.read_model.statement(&account, 0, 1_000).await.unwrap(), rows);
        assert_eq!(s.read_model.checkpoint(&stream).await.unwrap(), ROWS);
    }
}
