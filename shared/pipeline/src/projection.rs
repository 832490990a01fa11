//! The `projector-accounts` handler: MSK batches of account events into the read tables.
//!
//! The MSK event source mapping commits a batch's offsets only when the function succeeds and
//! otherwise delivers the whole batch again. [`handle_kafka_event`] fits that contract: it applies each
//! partition's records in offset order through [`Projector::handle`], stops a partition at its first
//! failure, and returns an error so the batch comes back. Redelivery is harmless because the projector
//! skips every event at or below its checkpoint (so a batch applied halfway, or twice, ends in the same
//! state as one applied once) and repairs a gap from the event store when an event arrives before the
//! ones it follows.
//!
//! Partitions are independent (one stream lives on one partition), so they are applied concurrently;
//! within a partition, strictly in order.

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use corebank_app::AppError;
use corebank_app::projector::{Applied, Projector};
use corebank_messaging::{CodecError, envelopes_from_kafka_event};
use futures_util::future::join_all;

/// Why a batch was not fully applied. The batch must be delivered again (all of it); what was applied
/// before the failure is skipped then.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionBatchError {
    /// A record's value is not an event envelope. Skipping it could hide an event from the read side,
    /// so the partition stalls (visibly) instead.
    #[error("record {topic}-{partition}@{offset} does not decode: {source}")]
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i64,
        /// Offset.
        offset: i64,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// The projector could not apply an event (store unavailable, corrupt data, an event that is
    /// not in the event store).
    #[error("{stream_id} v{version} (record {topic}-{partition}@{offset}) was not applied: {source}")]
    Apply {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i64,
        /// Offset.
        offset: i64,
        /// The event's stream.
        stream_id: String,
        /// The event's version.
        version: u64,
        /// The projector's reason.
        #[source]
        source: AppError,
    },
}

/// Applies one MSK batch to the account read tables and returns how many events were applied
/// (including events repaired from the event store, excluding duplicates and non-account events).
///
/// On `Err`, the caller must fail the invocation so that the whole batch is delivered again.
#[tracing::instrument(name = "project_batch", skip_all, fields(partitions = event.records.len()))]
pub async fn handle_kafka_event(
    event: &KafkaEvent,
    projector: &Projector,
) -> Result<usize, ProjectionBatchError> {
    let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
    partitions.sort_by(|a, b| a.0.cmp(b.0));
    let results =
        join_all(partitions.into_iter().map(|(key, records)| apply_partition(key, records, projector))).await;
    let mut applied = 0;
    for result in results {
        applied += result?;
    }
    Ok(applied)
}

/// One partition's records in offset order, each beside its decoded envelope (or why it would not
/// decode). Shared by every Kafka batch handler of this crate.
pub(crate) fn decode_partition<'a>(
    key: &str,
    records: &'a [KafkaRecord],
) -> Vec<(&'a KafkaRecord, Result<corebank_domain::EventEnvelope, CodecError>)> {
    // The codec decodes a partition in offset order (a stable sort); sorting the records the same way
    // pairs each decoded envelope with the record it came from.
    let mut single = KafkaEvent::default();
    single.records.insert(key.to_owned(), records.to_vec());
    let decoded = envelopes_from_kafka_event(&single);
    let mut ordered: Vec<&KafkaRecord> = records.iter().collect();
    ordered.sort_by_key(|record| record.offset);
    ordered.into_iter().zip(decoded).collect()
}

async fn apply_partition(
    key: &str,
    records: &[KafkaRecord],
    projector: &Projector,
) -> Result<usize, ProjectionBatchError> {
    let mut applied = 0;
    for (record, envelope) in decode_partition(key, records) {
        let topic = || record.topic.clone().unwrap_or_else(|| key.to_owned());
        let envelope = envelope.map_err(|source| ProjectionBatchError::Decode {
            topic: topic(),
            partition: record.partition,
            offset: record.offset,
            source,
        })?;
        match projector.handle(&envelope).await {
            Ok(Applied::Applied { events }) => applied += events,
            Ok(Applied::Duplicate | Applied::Ignored) => {}
            Err(source) => {
                return Err(ProjectionBatchError::Apply {
                    topic: topic(),
                    partition: record.partition,
                    offset: record.offset,
                    stream_id: envelope.stream_id,
                    version: envelope.version,
                    source,
                });
            }
        }
    }
    Ok(applied)
}
