//! The rdkafka client context every client of this crate is built with: it answers librdkafka's
//! OAUTHBEARER token refresh with an MSK IAM token when the config asks for IAM, sends librdkafka's own
//! log lines and client errors to `tracing`, and logs every consumer-group rebalance (partitions
//! assigned, revoked, or lost) at info level, so a consumer that stops receiving can be told apart from
//! one that was never given the partition.

use std::error::Error;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaConfig, KafkaSecurity};
use crate::error::KafkaSetupError;

/// Client context of the producer, the consumer and the admin client.
pub struct KafkaContext {
    #[cfg(feature = "msk-iam")]
    signer: Option<crate::msk::MskIamSigner>,
    /// The consumer group, on a consumer's context; it labels the log lines.
    group_id: Option<String>,
}

impl KafkaContext {
    /// The context `config` needs: a token signer for [`KafkaSecurity::MskIam`], nothing otherwise.
    pub fn for_config(config: &KafkaConfig) -> Result<Self, KafkaSetupError> {
        match config.security {
            #[cfg(feature = "msk-iam")]
            KafkaSecurity::MskIam => {
                let identity = config.aws.clone().ok_or(KafkaSetupError::MskIam(
                    "IAM auth needs the AWS identity (AWS_REGION, AWS_ACCESS_KEY_ID, ...)".to_owned(),
                ))?;
                Ok(Self { signer: Some(crate::msk::MskIamSigner::new(identity)), group_id: None })
            }
            #[cfg(not(feature = "msk-iam"))]
            KafkaSecurity::MskIam => Err(KafkaSetupError::MskIam(
                "AWS_MSK_IAM needs corebank-messaging's `msk-iam` feature in this build".to_owned(),
            )),
            KafkaSecurity::Plaintext | KafkaSecurity::Ssl | KafkaSecurity::SaslScram { .. } => Ok(Self {
                #[cfg(feature = "msk-iam")]
                signer: None,
                group_id: None,
            }),
        }
    }

    /// Labels the log lines of a consumer of `group_id`.
    pub fn for_group(mut self, group_id: &str) -> Self {
        self.group_id = Some(group_id.to_owned());
        self
    }

    fn group(&self) -> &str {
        self.group_id.as_deref().unwrap_or("-")
    }
}

/// `topic-partition` of every entry, with its offset when it has one (`@12`), comma-separated.
pub fn describe_partitions(list: &TopicPartitionList) -> String {
    let mut out = String::new();
    for elem in list.elements() {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(elem.topic());
        out.push('-');
        out.push_str(&elem.partition().to_string());
        if let Offset::Offset(offset) = elem.offset() {
            out.push('@');
            out.push_str(&offset.to_string());
        }
    }
    out
}

impl ClientContext for KafkaContext {
    // Only consulted when `sasl.mechanism=OAUTHBEARER`, which only `KafkaSecurity::MskIam` sets.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _oauthbearer_config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        #[cfg(feature = "msk-iam")]
        if let Some(signer) = &self.signer {
            return signer.token(std::time::SystemTime::now()).map_err(Into::into);
        }
        Err("OAUTHBEARER requested but no MSK IAM signer is configured".into())
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let group_id = self.group();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", group_id, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", group_id, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", group_id, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", group_id, facility = fac, "{log_message}");
            }
        }
    }

    /// Client-level errors (a broker down, all brokers down, a fatal error). librdkafka recovers from
    /// all but the fatal ones by itself; each is logged so an outage shows in the log.
    fn error(&self, error: KafkaError, reason: &str) {
        let group_id = self.group();
        if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
            tracing::error!(group_id, %error, reason, "Kafka client error");
        } else {
            tracing::warn!(group_id, %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for KafkaContext {
    /// Logs each rebalance before librdkafka applies it: what is assigned, what is revoked, and whether
    /// the revocation is a *lost* assignment (the group moved on without this member, e.g. after a
    /// missed session timeout), in which case the batch in hand will not commit and is redelivered.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let group_id = self.group();
        match rebalance {
            Rebalance::Assign(partitions) => tracing::info!(
                group_id,
                count = partitions.count(),
                partitions = %describe_partitions(partitions),
                "consumer group rebalance: partitions assigned"
            ),
            Rebalance::Revoke(partitions) => tracing::info!(
                group_id,
                count = partitions.count(),
                partitions = %describe_partitions(partitions),
                lost = consumer.assignment_lost(),
                "consumer group rebalance: partitions revoked"
            ),
            Rebalance::Error(error) => {
                tracing::warn!(group_id, %error, "consumer group rebalance failed");
            }
        }
    }
}
