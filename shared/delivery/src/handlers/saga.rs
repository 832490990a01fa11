//! The `transfer-saga` handler: MSK batches of transfer events into the transfer process manager.
//!
//! Same contract as the projection handler: a transient failure fails the invocation so that the whole
//! batch is delivered again; a permanent one parks the transfer's stream (see [`crate::handlers::batch`]). Redelivery is harmless because every saga pass starts from the transfer's stored
//! state and every account step it issues is idempotent (see `corebank_app::saga`).
//!
//! Order matters only within one transfer, and one transfer's events share a key (the stream id), so
//! the records of one stream are handed over in offset order while different streams, in one partition
//! or in several, run concurrently (at most [`STREAMS_IN_FLIGHT_MAX`] at once; see [`crate::handlers::batch`]).
//! A partition holds many transfers; running them one after another would cap a partition at one
//! transfer's round trips at a time.
//!
//! A transfer's records of one batch take one saga pass, for the last of them: a pass starts from the
//! transfer's stored state, which already holds every record of the run, so a pass per record would
//! only load the transfer again to find nothing left to do. If that pass fails for good, the records
//! are taken one at a time to find the one to park (see [`crate::handlers::batch`]).

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::parked::Parking;
use corebank_app::saga::{SagaOutcome, TransferSaga};
use corebank_store::ParkedConsumer;

use crate::fanout::STREAMS_IN_FLIGHT_MAX;
use crate::handlers::batch::{BatchError, BatchReport, NoBulk, for_each_stream_in_runs};
use corebank_domain::EventEnvelope;

/// The name the saga parks records under.
pub const CONSUMER: ParkedConsumer = ParkedConsumer::Saga;

/// Hands one MSK batch to the saga, parking by `parking` (the saga's); returns how many saga steps the
/// batch took (`handled`) and how many records were parked.
///
/// On `Err`, the caller must fail the invocation so that the whole batch is delivered again.
#[tracing::instrument(name = "saga_batch", skip_all, fields(partitions = event.records.len()))]
pub async fn handle_kafka_event(
    event: &KafkaEvent,
    saga: &TransferSaga,
    parking: &Parking,
) -> Result<BatchReport, BatchError> {
    let one = |envelope: EventEnvelope| async move {
        match saga.handle(&envelope).await? {
            SagaOutcome::Settled { steps, .. } => Ok(steps),
            SagaOutcome::Ignored => Ok(0),
        }
    };
    // A pass starts from the transfer's stored state, which holds every delivered event of the run:
    // one pass for the run's last record does what a pass per record would, without reloading the
    // transfer for each of its own step events.
    let run = |run: Vec<EventEnvelope>| async move {
        match run.last() {
            Some(last) => match saga.handle(last).await? {
                SagaOutcome::Settled { steps, .. } => Ok(steps),
                SagaOutcome::Ignored => Ok(0),
            },
            None => Ok(0),
        }
    };
    for_each_stream_in_runs(event, STREAMS_IN_FLIGHT_MAX, parking, one, Some(run), None::<NoBulk>).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use corebank_app::command::{CommandContext, KeyScope, Operation};
    use corebank_app::{App, AppConfig, SystemClock};
    use corebank_domain::{
        AccountCommand, AccountId, Amount, Currency, OwnerId, TransactionId, TransferId, TransferTerms,
    };
    use corebank_store::{AppendOutcome, AppendRequest, EventStore, StoreError, TransactionRecord};

    use super::*;
    use crate::test_support::one_partition_batch;

    /// The event store of `inner`, counting the loads of transfer streams.
    struct Counting {
        inner: Arc<dyn EventStore>,
        transfer_loads: AtomicUsize,
    }

    #[async_trait]
    impl EventStore for Counting {
        async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
            self.inner.append(request).await
        }

        async fn load_stream(&self, stream_id: &str, after: u64) -> Result<Vec<EventEnvelope>, StoreError> {
            if stream_id.starts_with("transfer-") {
                self.transfer_loads.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.load_stream(stream_id, after).await
        }

        async fn list_streams(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>, StoreError> {
            self.inner.list_streams(prefix, after, limit).await
        }

        async fn transaction(&self, transaction_id: &str) -> Result<Option<TransactionRecord>, StoreError> {
            self.inner.transaction(transaction_id).await
        }
    }

    fn ctx(key: &str, operation: Operation) -> CommandContext {
        CommandContext {
            idempotency_key: key.to_owned(),
            request_hash: format!("hash-{key}"),
            operation,
            request_id: format!("req-{key}"),
            principal: "local-operator".to_owned(),
            requested_actor: None,
            key_scope: KeyScope::Principal,
            trace_id: None,
        }
    }

    async fn open(app: &App, id: &str, minor: i64) -> AccountId {
        let usd = Currency::parse("USD").unwrap();
        let account_id = AccountId::parse(id).unwrap();
        let create = AccountCommand::Create {
            account_id: account_id.clone(),
            owner_id: OwnerId::parse("owner-1").unwrap(),
            currency: usd,
        };
        app.commands
            .execute(&ctx(&format!("open-{id}"), Operation::CreateAccount), &account_id, &create)
            .await
            .unwrap();
        let deposit = AccountCommand::Deposit {
            amount: Amount::from_minor(minor).unwrap(),
            currency: usd,
            transaction_id: TransactionId::parse(&format!("fund-{id}")).unwrap(),
        };
        app.commands
            .execute(&ctx(&format!("fund-{id}"), Operation::Deposit), &account_id, &deposit)
            .await
            .unwrap();
        account_id
    }

    fn batch(events: &[EventEnvelope]) -> KafkaEvent {
        one_partition_batch("test.transfer-events", events)
    }

    #[tokio::test]
    async fn a_transfer_s_records_of_one_batch_take_one_pass_and_a_redelivery_changes_nothing() {
        let (mut stores, _memory) = corebank_store::memory::stores();
        let counting =
            Arc::new(Counting { inner: stores.events.clone(), transfer_loads: AtomicUsize::new(0) });
        stores.events = counting.clone();
        let app =
            App::new(AppConfig::default(), stores.clone(), corebank_api::renderer(), Arc::new(SystemClock));
        let source = open(&app, "acc-saga-src", 10_000).await;
        let destination = open(&app, "acc-saga-dst", 1).await;
        let transfer_id = TransferId::parse("t-saga-run").unwrap();
        let terms = TransferTerms {
            transfer_id: transfer_id.clone(),
            source_account_id: source,
            destination_account_id: destination,
            amount: Amount::from_minor(4_000).unwrap(),
            currency: Currency::parse("USD").unwrap(),
            initiated_by: Some("local-operator".to_owned()),
        };
        app.transfers.start(&ctx("start", Operation::StartTransfer), &terms).await.unwrap();
        let parking = Parking::new(stores.parked.clone(), CONSUMER, Arc::new(SystemClock));

        // The request alone: one pass drives the transfer to its end.
        let requested = stores.events.load_stream(&transfer_id.stream_id(), 0).await.unwrap();
        let report = handle_kafka_event(&batch(&requested), &app.saga, &parking).await.unwrap();
        assert!(report.handled > 0, "{report:?}");
        let state = app.transfers.load(&transfer_id).await.unwrap();
        assert_eq!(corebank_app::transfers::status_of(&state), "COMPLETED");

        // Every event of the transfer arrives together: one pass, which finds nothing to do.
        let all = stores.events.load_stream(&transfer_id.stream_id(), 0).await.unwrap();
        assert!(all.len() > 2, "{all:?}");
        let before = counting.transfer_loads.load(Ordering::SeqCst);
        let report = handle_kafka_event(&batch(&all), &app.saga, &parking).await.unwrap();
        let loads = counting.transfer_loads.load(Ordering::SeqCst) - before;
        assert_eq!(report.handled, 0);
        assert!(loads <= 1, "one load of the transfer for the whole run, not one per record: {loads}");
        let state = app.transfers.load(&transfer_id).await.unwrap();
        assert_eq!(corebank_app::transfers::status_of(&state), "COMPLETED");
    }
}
