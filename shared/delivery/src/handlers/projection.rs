//! The `projector` handler: MSK batches of account and transfer events into the read tables.
//!
//! The MSK event source mapping commits a batch's offsets only when the function succeeds and
//! otherwise delivers the whole batch again. [`handle_kafka_event`] fits that contract: it applies each
//! stream's records in offset order through [`Projector::handle`], stops a stream at its first transient
//! failure and returns an error so the batch comes back; a record that fails permanently is parked with
//! the rest of its stream instead, so the partition moves on (see [`crate::handlers::batch`]). Redelivery is harmless because the projector skips
//! every event at or below its stream's checkpoint (so a batch applied halfway, or twice, ends in the
//! same state as one applied once) and repairs a gap from the event store when an event arrives before
//! the ones it follows.
//!
//! The projector keeps one checkpoint per stream, so streams need no order between them: different
//! streams, of one partition or of several, are applied concurrently (at most
//! [`STREAMS_IN_FLIGHT_MAX`](crate::fanout::STREAMS_IN_FLIGHT_MAX) at once), each stream's records in
//! offset order (see [`crate::handlers::batch`]). A partition applied one record at a time would cap the read
//! side at one store round trip per event. And a stream's records of one batch are applied together
//! ([`Projector::handle_run`]: one write for a hot account's many events), falling back to one at a time
//! only to find a record that fails for good. Before that, the batch's account streams are applied
//! together ([`Projector::handle_runs`]: one read of their checkpoints, one of their summaries and one
//! write for all of them); only what that leaves (transfer streams, a gap to repair, a record that
//! does not project, a checkpoint that moved meanwhile) goes stream by stream.

use std::sync::atomic::{AtomicI64, Ordering};

use aws_lambda_events::event::kafka::KafkaEvent;
use corebank_app::parked::Parking;
use corebank_app::projector::{Applied, Projector};
use corebank_domain::EventEnvelope;
use corebank_store::ParkedConsumer;

use crate::fanout::STREAMS_IN_FLIGHT_MAX;
use crate::handlers::batch::{BatchError, BatchReport, for_each_stream_in_runs};

/// The name the projection parks records under (for both of its mappings: the account and the
/// transfer topic, whose stream keys never meet).
pub const CONSUMER: ParkedConsumer = ParkedConsumer::Projector;

/// Applies one MSK batch to the account read tables (and `transfer_status`, when the projector keeps
/// it), parking by `parking` (the projector's), and returns how many events were applied (`handled`:
/// including events repaired from the event store, excluding duplicates and events of streams it keeps
/// no table for) and how many records were parked.
///
/// On `Err`, the caller must fail the invocation so that the whole batch is delivered again.
#[tracing::instrument(name = "project_batch", skip_all, fields(partitions = event.records.len()))]
pub async fn handle_kafka_event(
    event: &KafkaEvent,
    projector: &Projector,
    parking: &Parking,
) -> Result<BatchReport, BatchError> {
    // The oldest event applied, in milliseconds since the epoch: the batch's projection lag.
    let oldest = &AtomicI64::new(i64::MAX);
    let one = |envelope: EventEnvelope| async move {
        match projector.handle(&envelope).await? {
            Applied::Applied { events } => {
                oldest.fetch_min(envelope.occurred_at.timestamp_millis(), Ordering::Relaxed);
                Ok(events)
            }
            Applied::Duplicate | Applied::Ignored => Ok(0),
        }
    };
    // A stream's records of the batch go in one write (a hot account's hundred events are one
    // transaction, not a hundred).
    let run = |run: Vec<EventEnvelope>| async move {
        match projector.handle_run(&run).await? {
            Applied::Applied { events } => {
                if let Some(first) = run.first() {
                    oldest.fetch_min(first.occurred_at.timestamp_millis(), Ordering::Relaxed);
                }
                Ok(events)
            }
            Applied::Duplicate | Applied::Ignored => Ok(0),
        }
    };
    // The batch's account streams go in one write together; what that leaves (transfer streams, gaps
    // to repair, records that fail) goes stream by stream.
    let all = |runs: Vec<Vec<EventEnvelope>>| async move {
        let outcomes = projector.handle_runs(&runs).await?;
        Ok(runs
            .iter()
            .zip(outcomes)
            .map(|(run, outcome)| match outcome? {
                Applied::Applied { events } => {
                    if let Some(first) = run.first() {
                        oldest.fetch_min(first.occurred_at.timestamp_millis(), Ordering::Relaxed);
                    }
                    Some(events)
                }
                Applied::Duplicate | Applied::Ignored => Some(0),
            })
            .collect())
    };
    let report =
        for_each_stream_in_runs(event, STREAMS_IN_FLIGHT_MAX, parking, one, Some(run), Some(all)).await?;
    if let Some(at) = chrono::DateTime::from_timestamp_millis(oldest.load(Ordering::Relaxed))
        && report.handled > 0
    {
        corebank_app::telemetry::record_projection_lag(at, chrono::Utc::now());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::Utc;
    use corebank_domain::account::{AccountCreated, AccountEvent, MoneyMoved};
    use corebank_domain::{
        AccountId, Amount, Currency, EventEnvelope, EventMetadata, OwnerId, TransactionId,
    };

    use crate::test_support::one_partition_batch;
    use corebank_store::{
        AccountSummary, AppendRequest, ProjectionChange, ProjectionReplacement, ReadModelStore,
        StatementEntry, StoreError, Stores,
    };

    use super::*;

    fn envelope(stream_id: &str, version: u64, event: &AccountEvent) -> EventEnvelope {
        EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            stream_id: stream_id.to_owned(),
            version,
            event_type: event.event_type().to_owned(),
            schema_version: 1,
            occurred_at: Utc::now(),
            payload: event.payload(),
            metadata: EventMetadata {
                transaction_id: event.transaction_id().map(|t| t.as_str().to_owned()),
                ..EventMetadata::default()
            },
        }
    }

    /// The account's opening, then a deposit of each of `deposits` (minor units).
    fn history(id: &str, deposits: &[i64]) -> Vec<EventEnvelope> {
        let account = AccountId::parse(id).unwrap();
        let currency = Currency::parse("USD").unwrap();
        let stream = format!("account-{id}");
        let opened = AccountEvent::Created(AccountCreated {
            account_id: account.clone(),
            owner_id: OwnerId::parse("owner-1").unwrap(),
            currency,
        });
        let mut events = vec![envelope(&stream, 1, &opened)];
        let mut balance = 0;
        for (version, amount) in (2..).zip(deposits) {
            balance += amount;
            let deposited = AccountEvent::Deposited(MoneyMoved {
                account_id: account.clone(),
                amount: Amount::from_minor(*amount).unwrap(),
                currency,
                transaction_id: TransactionId::parse(&format!("tx-{id}-{version}")).unwrap(),
                balance_after: balance,
            });
            events.push(envelope(&stream, version, &deposited));
        }
        events
    }

    /// Every event of `histories` interleaved (each stream's first, then each stream's second, ...) on
    /// one partition, as the outbox relay would publish concurrent accounts of one partition.
    fn one_partition(histories: &[Vec<EventEnvelope>]) -> KafkaEvent {
        let longest = histories.iter().map(Vec::len).max().unwrap_or(0);
        let interleaved = (0..longest).flat_map(|i| histories.iter().filter_map(move |h| h.get(i)));
        one_partition_batch("test.account-events", interleaved)
    }

    async fn append_all(stores: &Stores, histories: &[Vec<EventEnvelope>]) {
        for event in histories.iter().flatten() {
            stores
                .events
                .append(AppendRequest {
                    stream_id: event.stream_id.clone(),
                    expected_version: event.version - 1,
                    events: vec![event.clone()],
                    idempotency: None,
                    transaction: None,
                })
                .await
                .unwrap();
        }
    }

    /// The read tables of `inner`, each apply taking a little while; counts the applies in flight at
    /// once and refuses the first apply of each `(stream, checkpoint)` in `refuse`. Counts the writes
    /// of many streams together, and refuses them all when `bulk_refused` (so the batch goes stream by
    /// stream).
    struct Slow {
        inner: Arc<dyn ReadModelStore>,
        running: AtomicUsize,
        most: AtomicUsize,
        applies: AtomicUsize,
        bulk_writes: AtomicUsize,
        bulk_refused: bool,
        refuse: Mutex<HashSet<(String, u64)>>,
    }

    impl Slow {
        fn new(inner: Arc<dyn ReadModelStore>, refuse: &[(&str, u64)], bulk_refused: bool) -> Arc<Self> {
            Arc::new(Self {
                inner,
                running: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                applies: AtomicUsize::new(0),
                bulk_writes: AtomicUsize::new(0),
                bulk_refused,
                refuse: Mutex::new(refuse.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect()),
            })
        }
    }

    #[async_trait]
    impl ReadModelStore for Slow {
        async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
            self.inner.checkpoint(stream_id).await
        }

        async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
            self.applies.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            let refused =
                self.refuse.lock().unwrap().remove(&(change.stream_id.clone(), change.expected_checkpoint));
            if refused {
                return Err(StoreError::Unavailable("refused once".to_owned()));
            }
            self.inner.apply(change).await
        }

        async fn apply_all(&self, changes: Vec<ProjectionChange>) -> Result<Vec<bool>, StoreError> {
            if self.bulk_refused {
                return Err(StoreError::Unavailable("writes of many streams refused".to_owned()));
            }
            self.bulk_writes.fetch_add(1, Ordering::SeqCst);
            self.inner.apply_all(changes).await
        }

        async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
            self.inner.replace(replacement).await
        }

        async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
            self.inner.summary(account_id).await
        }

        async fn statement(
            &self,
            account_id: &str,
            offset: usize,
            limit: usize,
        ) -> Result<Vec<StatementEntry>, StoreError> {
            self.inner.statement(account_id, offset, limit).await
        }
    }

    fn parking(stores: &Stores) -> Parking {
        Parking::new(stores.parked.clone(), CONSUMER, Arc::new(corebank_app::SystemClock))
    }

    async fn versions_and_balance(stores: &Stores, id: &str) -> (Vec<u64>, i64, u64) {
        let statement = stores.read_model.statement(id, 0, 100).await.unwrap();
        let summary = stores.read_model.summary(id).await.unwrap().unwrap();
        (statement.iter().map(|e| e.stream_version).collect(), summary.balance_minor, summary.version)
    }

    #[tokio::test]
    async fn the_account_streams_of_a_batch_are_applied_in_one_write_each_in_version_order() {
        let (stores, _) = corebank_store::memory::stores();
        let histories =
            vec![history("acc-a", &[1, 2, 3]), history("acc-b", &[10, 20, 30]), history("acc-c", &[5])];
        append_all(&stores, &histories).await;
        // `c` is already projected up to its opening: only its deposit is new.
        let opened = &histories[2][..1];
        Projector::new(stores.events.clone(), stores.read_model.clone()).handle_run(opened).await.unwrap();
        let slow = Slow::new(stores.read_model.clone(), &[], false);
        let projector = Projector::new(stores.events.clone(), slow.clone());
        let batch = one_partition(&histories);

        let applied = handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap().handled;

        assert_eq!(applied, 9);
        assert_eq!(slow.bulk_writes.load(Ordering::SeqCst), 1, "one write for the three streams");
        assert_eq!(slow.applies.load(Ordering::SeqCst), 0, "no stream was left to go alone");
        assert_eq!(versions_and_balance(&stores, "acc-a").await, (vec![1, 2, 3, 4], 6, 4));
        assert_eq!(versions_and_balance(&stores, "acc-b").await, (vec![1, 2, 3, 4], 60, 4));
        assert_eq!(versions_and_balance(&stores, "acc-c").await, (vec![1, 2], 5, 2));
        // Delivered again: every stream is already there, nothing is written.
        assert_eq!(handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap().handled, 0);
        assert_eq!(slow.bulk_writes.load(Ordering::SeqCst), 1);
        assert_eq!(versions_and_balance(&stores, "acc-b").await, (vec![1, 2, 3, 4], 60, 4));
    }

    #[tokio::test]
    async fn a_stream_with_a_gap_before_its_records_is_left_out_of_the_shared_write_and_repaired() {
        let (stores, _) = corebank_store::memory::stores();
        let histories = vec![history("acc-a", &[1, 2]), history("acc-b", &[10, 20, 30])];
        append_all(&stores, &histories).await;
        let slow = Slow::new(stores.read_model.clone(), &[], false);
        let projector = Projector::new(stores.events.clone(), slow.clone());
        // `b`'s first two records never arrive: its run starts at version 3.
        let delivered = vec![histories[0].clone(), histories[1][2..].to_vec()];

        let applied = handle_kafka_event(&one_partition(&delivered), &projector, &parking(&stores))
            .await
            .unwrap()
            .handled;

        assert_eq!(applied, 7, "a's three events, then b's four with the two repaired");
        assert_eq!(slow.bulk_writes.load(Ordering::SeqCst), 1);
        assert_eq!(slow.applies.load(Ordering::SeqCst), 1, "b alone, from the event store");
        assert_eq!(versions_and_balance(&stores, "acc-a").await, (vec![1, 2, 3], 3, 3));
        assert_eq!(versions_and_balance(&stores, "acc-b").await, (vec![1, 2, 3, 4], 60, 4));
    }

    #[tokio::test]
    async fn when_the_shared_write_fails_the_streams_are_applied_concurrently_each_in_version_order() {
        let (stores, _) = corebank_store::memory::stores();
        let histories =
            vec![history("acc-a", &[1, 2, 3]), history("acc-b", &[10, 20, 30]), history("acc-c", &[5])];
        append_all(&stores, &histories).await;
        let slow = Slow::new(stores.read_model.clone(), &[], true);
        let projector = Projector::new(stores.events.clone(), slow.clone());

        let applied = handle_kafka_event(&one_partition(&histories), &projector, &parking(&stores))
            .await
            .unwrap()
            .handled;

        assert_eq!(applied, 10);
        assert_eq!(slow.most.load(Ordering::SeqCst), 3, "the partition's three streams were applied at once");
        assert_eq!(slow.applies.load(Ordering::SeqCst), 3, "each stream's records in one write");
        assert_eq!(versions_and_balance(&stores, "acc-a").await, (vec![1, 2, 3, 4], 6, 4));
        assert_eq!(versions_and_balance(&stores, "acc-b").await, (vec![1, 2, 3, 4], 60, 4));
        assert_eq!(versions_and_balance(&stores, "acc-c").await, (vec![1, 2], 5, 2));
    }

    #[tokio::test]
    async fn a_stream_that_fails_mid_batch_holds_back_only_itself_and_the_redelivery_completes_it_once() {
        let (stores, _) = corebank_store::memory::stores();
        let histories = vec![history("acc-a", &[1, 2, 3]), history("acc-b", &[10, 20, 30])];
        append_all(&stores, &histories).await;
        // Stream by stream (the shared write refused), and `b`'s write (from checkpoint 0) is refused on
        // the first delivery.
        let slow = Slow::new(stores.read_model.clone(), &[("account-acc-b", 0)], true);
        let projector = Projector::new(stores.events.clone(), slow.clone());
        let batch = one_partition(&histories);

        let err = handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap_err();
        assert!(
            matches!(&err, BatchError::Handle { stream_id, version: 1, offset: 1, .. } if stream_id == "account-acc-b"),
            "{err}"
        );
        assert_eq!(versions_and_balance(&stores, "acc-a").await, (vec![1, 2, 3, 4], 6, 4));
        assert_eq!(stores.read_model.checkpoint("account-acc-b").await.unwrap(), 0, "nothing of `b`");

        // The whole batch comes again: `b` is applied, everything else is a duplicate.
        assert_eq!(handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap().handled, 4);
        assert_eq!(versions_and_balance(&stores, "acc-b").await, (vec![1, 2, 3, 4], 60, 4));
        assert_eq!(
            handle_kafka_event(&batch, &projector, &parking(&stores)).await.unwrap().handled,
            0,
            "a third delivery applies nothing"
        );
        assert_eq!(versions_and_balance(&stores, "acc-a").await, (vec![1, 2, 3, 4], 6, 4));
    }

    #[tokio::test]
    async fn a_run_that_fails_for_good_is_applied_up_to_the_bad_record_which_parks_with_the_rest() {
        let (stores, _) = corebank_store::memory::stores();
        let mut bad = history("acc-a", &[1, 2, 3, 4]);
        // Version 3 cannot be projected: a deposit without its fields.
        bad[2].payload = serde_json::json!({});
        append_all(&stores, &[bad.clone()]).await;
        let projector = Projector::new(stores.events.clone(), stores.read_model.clone());
        let report = handle_kafka_event(&one_partition(&[bad]), &projector, &parking(&stores)).await.unwrap();

        assert_eq!((report.handled, report.parked), (2, 3), "{report:?}");
        assert_eq!(versions_and_balance(&stores, "acc-a").await, (vec![1, 2], 1, 2));
        let parked = stores.parked.stream(CONSUMER, "account-acc-a", 10).await.unwrap();
        assert_eq!(parked.iter().map(|p| p.position).collect::<Vec<_>>(), [3, 4, 5]);
    }
}
