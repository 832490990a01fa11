//! Topic administration: make sure the event topics exist before the first publish.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::context::KafkaContext;
use crate::error::KafkaSetupError;

/// Creates each of `topics` that does not exist yet, with `partitions` partitions and the brokers'
/// default replication factor. A topic that already exists is left as it is (its partition count is not
/// changed). Bounded by the config's `message_timeout_ms`.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[&str],
    partitions: i32,
) -> Result<(), KafkaSetupError> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<KafkaContext> = config
        .client_config()
        .create_with_context(KafkaContext::for_config(config)?)
        .map_err(|source| KafkaSetupError::Create { role: "admin client", source })?;
    let timeout = Duration::from_millis(config.message_timeout_ms);
    let options = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
    // -1 asks the brokers for their default.replication.factor (KIP-464), so one call suits a
    // single local broker and a three-broker MSK cluster alike.
    let new_topics: Vec<NewTopic<'_>> =
        topics.iter().map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(-1))).collect();
    let results = admin.create_topics(&new_topics, &options).await.map_err(KafkaSetupError::Admin)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
