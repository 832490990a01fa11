//! Typed Kafka settings, read from the environment once per process.

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};

/// How clients authenticate to the brokers.
#[derive(Debug, Clone)]
pub enum KafkaSecurity {
    /// No TLS, no authentication: local brokers only.
    Plaintext,
    /// TLS without client authentication (MSK's TLS listener, port 9094).
    Ssl,
    /// SASL/SCRAM over TLS (MSK's SCRAM listener, port 9096).
    SaslScram {
        /// The SCRAM hash.
        mechanism: ScramMechanism,
        /// The SCRAM user.
        username: String,
        /// The SCRAM password.
        password: SecretString,
    },
    /// MSK IAM access control: SASL/OAUTHBEARER over TLS (MSK's IAM listener, port 9098) with a SigV4
    /// presigned `kafka-cluster:Connect` token, refreshed by librdkafka before it expires. Signing needs
    /// the `msk-iam` feature and TLS the `tls` feature; the credentials are [`KafkaConfig::aws`].
    MskIam,
}

/// The AWS identity that signs MSK IAM tokens and calls the MSK API, read from the variables the Lambda
/// runtime sets for the execution role (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`). They stay valid for the life of the execution environment.
#[derive(Debug, Clone)]
pub struct AwsIdentity {
    /// The region of the cluster and of the signature.
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token of temporary credentials.
    pub session_token: Option<SecretString>,
}

/// A SASL/SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    /// `SCRAM-SHA-256`.
    Sha256,
    /// `SCRAM-SHA-512`, the only one MSK offers.
    Sha512,
}

impl ScramMechanism {
    /// The librdkafka `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }
}

/// Producer compression codec. `None` by default: event values are small JSON documents and the
/// brokers are close, so compression would cost CPU for little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
}

impl Compression {
    /// The librdkafka `compression.codec` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
        }
    }
}

/// The `KAFKA_SASL_MECHANISM` value that selects [`KafkaSecurity::MskIam`].
pub const MSK_IAM_MECHANISM: &str = "AWS_MSK_IAM";

/// Settings shared by the publisher, the batch consumer and topic administration.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` bootstrap brokers.
    pub brokers: String,
    /// Authentication and transport security.
    pub security: KafkaSecurity,
    /// The `client.id` the brokers log.
    pub client_id: String,
    /// How long a produced message may wait for acknowledgement (librdkafka retries inside this bound)
    /// before its outcome is a retryable timeout.
    pub message_timeout_ms: u64,
    /// How long the producer waits to fill a batch. Small: publishing sits on the event path.
    pub linger_ms: u64,
    /// Producer compression.
    pub compression: Compression,
    /// Largest message (key, value and headers) the publisher hands to the producer; bigger ones are
    /// refused before the call. Matches the brokers' default `message.max.bytes`.
    pub max_message_bytes: usize,
    /// Consumer group session timeout; the heartbeat interval is a third of it.
    pub session_timeout_ms: u64,
    /// The MSK cluster whose bootstrap brokers [`KafkaConfig::resolve_bootstrap`] looks up when
    /// [`KafkaConfig::brokers`] is empty.
    pub msk_cluster_arn: Option<String>,
    /// The AWS identity, read when IAM auth or an MSK cluster ARN asks for it.
    pub aws: Option<AwsIdentity>,
}

/// Defaults of the optional settings.
impl KafkaConfig {
    /// Default `client.id`.
    pub const DEFAULT_CLIENT_ID: &'static str = "corebank";
    /// Default [`KafkaConfig::message_timeout_ms`].
    pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;
    /// Default [`KafkaConfig::linger_ms`].
    pub const DEFAULT_LINGER_MS: u64 = 2;
    /// Default [`KafkaConfig::max_message_bytes`].
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
    /// Default [`KafkaConfig::session_timeout_ms`].
    pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 6_000;
}

/// A Kafka variable that is missing or unusable. Messages never contain a secret's value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("environment variable {name} is required but not set")]
    Missing {
        /// The variable.
        name: &'static str,
    },
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl KafkaConfig {
    /// Every variable [`KafkaConfig::from_lookup`] may read. Deployment checks (`infra/template-check`)
    /// hold the functions that build a Kafka client to it. The `AWS_*` ones are set by the Lambda runtime.
    pub const ENV_VARS: &'static [&'static str] = &[
        "KAFKA_BOOTSTRAP",
        "MSK_CLUSTER_ARN",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_CLIENT_ID",
        "KAFKA_MESSAGE_TIMEOUT_MS",
        "KAFKA_LINGER_MS",
        "KAFKA_COMPRESSION",
        "KAFKA_SESSION_TIMEOUT_MS",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];

    /// Plaintext settings for `brokers` with every default.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            security: KafkaSecurity::Plaintext,
            client_id: Self::DEFAULT_CLIENT_ID.to_owned(),
            message_timeout_ms: Self::DEFAULT_MESSAGE_TIMEOUT_MS,
            linger_ms: Self::DEFAULT_LINGER_MS,
            compression: Compression::None,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            session_timeout_ms: Self::DEFAULT_SESSION_TIMEOUT_MS,
            msk_cluster_arn: None,
            aws: None,
        }
    }

    /// Reads the process environment; see [`KafkaConfig::from_lookup`] for the variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (a variable name to its value):
    ///
    /// | variable | meaning | default |
    /// | --- | --- | --- |
    /// | `KAFKA_BOOTSTRAP` | bootstrap brokers | required unless `MSK_CLUSTER_ARN` is set |
    /// | `MSK_CLUSTER_ARN` | MSK cluster whose brokers [`KafkaConfig::resolve_bootstrap`] looks up | unset |
    /// | `KAFKA_SECURITY_PROTOCOL` | `plaintext`, `ssl` or `sasl_ssl` | `plaintext` |
    /// | `KAFKA_SASL_MECHANISM` | `SCRAM-SHA-256`, `SCRAM-SHA-512` or `AWS_MSK_IAM` (with `sasl_ssl`) | `SCRAM-SHA-512` |
    /// | `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | the AWS identity (see [`AwsIdentity`]) | required with `AWS_MSK_IAM` or `MSK_CLUSTER_ARN` |
    /// | `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` | SCRAM credentials | required with `sasl_ssl` |
    /// | `KAFKA_CLIENT_ID` | `client.id` | `corebank` |
    /// | `KAFKA_MESSAGE_TIMEOUT_MS` | delivery bound | 30000 |
    /// | `KAFKA_LINGER_MS` | producer batching wait | 2 |
    /// | `KAFKA_COMPRESSION` | `none`, `gzip`, `snappy`, `lz4` | `none` |
    /// | `KAFKA_SESSION_TIMEOUT_MS` | consumer group session | 6000 |
    ///
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing { name });

        let msk_cluster_arn = get("MSK_CLUSTER_ARN");
        let brokers = match (get("KAFKA_BOOTSTRAP"), &msk_cluster_arn) {
            (Some(brokers), _) => brokers,
            // Looked up by `resolve_bootstrap` at cold start.
            (None, Some(_)) => String::new(),
            (None, None) => return Err(ConfigError::Missing { name: "KAFKA_BOOTSTRAP" }),
        };
        let mut config = Self::new(brokers);
        config.msk_cluster_arn = msk_cluster_arn;

        let protocol = get("KAFKA_SECURITY_PROTOCOL").unwrap_or_else(|| "plaintext".to_owned());
        config.security = match protocol.to_ascii_lowercase().as_str() {
            "plaintext" | "ssl" => {
                if get("KAFKA_SASL_USERNAME").is_some() {
                    return Err(ConfigError::Invalid {
                        name: "KAFKA_SECURITY_PROTOCOL",
                        reason: format!("is {protocol} but KAFKA_SASL_USERNAME is set; use sasl_ssl"),
                    });
                }
                if protocol.eq_ignore_ascii_case("ssl") {
                    KafkaSecurity::Ssl
                } else {
                    KafkaSecurity::Plaintext
                }
            }
            "sasl_ssl"
                if get("KAFKA_SASL_MECHANISM").is_some_and(|m| m.eq_ignore_ascii_case(MSK_IAM_MECHANISM)) =>
            {
                if get("KAFKA_SASL_USERNAME").is_some() {
                    return Err(ConfigError::Invalid {
                        name: "KAFKA_SASL_MECHANISM",
                        reason: "is AWS_MSK_IAM but KAFKA_SASL_USERNAME is set; IAM needs no password"
                            .to_owned(),
                    });
                }
                KafkaSecurity::MskIam
            }
            "sasl_ssl" => {
                let mechanism = match get("KAFKA_SASL_MECHANISM") {
                    None => ScramMechanism::Sha512,
                    Some(m) if m.eq_ignore_ascii_case("SCRAM-SHA-512") => ScramMechanism::Sha512,
                    Some(m) if m.eq_ignore_ascii_case("SCRAM-SHA-256") => ScramMechanism::Sha256,
                    Some(m) => {
                        return Err(ConfigError::Invalid {
                            name: "KAFKA_SASL_MECHANISM",
                            reason: format!("{m:?} is not SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM"),
                        });
                    }
                };
                KafkaSecurity::SaslScram {
                    mechanism,
                    username: required("KAFKA_SASL_USERNAME")?,
                    password: SecretString::from(required("KAFKA_SASL_PASSWORD")?),
                }
            }
            other => {
                return Err(ConfigError::Invalid {
                    name: "KAFKA_SECURITY_PROTOCOL",
                    reason: format!("{other:?} is not plaintext, ssl or sasl_ssl"),
                });
            }
        };

        if let Some(id) = get("KAFKA_CLIENT_ID") {
            config.client_id = id;
        }
        if let Some(ms) = parse_positive(&get, "KAFKA_MESSAGE_TIMEOUT_MS")? {
            config.message_timeout_ms = ms;
        }
        if let Some(v) = get("KAFKA_LINGER_MS") {
            config.linger_ms = v.parse().map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
                name: "KAFKA_LINGER_MS",
                reason: e.to_string(),
            })?;
        }
        if let Some(v) = get("KAFKA_COMPRESSION") {
            config.compression = match v.to_ascii_lowercase().as_str() {
                "none" => Compression::None,
                "gzip" => Compression::Gzip,
                "snappy" => Compression::Snappy,
                "lz4" => Compression::Lz4,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "KAFKA_COMPRESSION",
                        reason: format!("{v:?} is not none, gzip, snappy or lz4"),
                    });
                }
            };
        }
        if let Some(ms) = parse_positive(&get, "KAFKA_SESSION_TIMEOUT_MS")? {
            config.session_timeout_ms = ms;
        }
        if matches!(config.security, KafkaSecurity::MskIam) || config.msk_cluster_arn.is_some() {
            config.aws = Some(AwsIdentity {
                region: required("AWS_REGION")?,
                access_key_id: required("AWS_ACCESS_KEY_ID")?,
                secret_access_key: SecretString::from(required("AWS_SECRET_ACCESS_KEY")?),
                session_token: get("AWS_SESSION_TOKEN").map(SecretString::from),
            });
        }
        Ok(config)
    }

    /// The heartbeat interval the consumer uses: a third of the session timeout, at least 1 ms.
    pub fn heartbeat_interval_ms(&self) -> u64 {
        (self.session_timeout_ms / 3).max(1)
    }

    /// The librdkafka settings every client shares: brokers, client id and security.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers).set("client.id", &self.client_id);
        match &self.security {
            KafkaSecurity::Plaintext => {
                config.set("security.protocol", "plaintext");
            }
            KafkaSecurity::Ssl => {
                config.set("security.protocol", "ssl");
            }
            KafkaSecurity::SaslScram { mechanism, username, password } => {
                config
                    .set("security.protocol", "sasl_ssl")
                    .set("sasl.mechanism", mechanism.as_str())
                    .set("sasl.username", username)
                    .set("sasl.password", password.expose_secret());
            }
            KafkaSecurity::MskIam => {
                // The token comes from the client context's refresh callback (`crate::context`).
                config.set("security.protocol", "sasl_ssl").set("sasl.mechanism", "OAUTHBEARER");
            }
        }
        config
    }
}

fn parse_positive(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<u64>, ConfigError> {
    let Some(raw) = get(name) else { return Ok(None) };
    match raw.parse::<u64>() {
        Ok(0) => Err(ConfigError::Invalid { name, reason: "must be at least 1".to_owned() }),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(ConfigError::Invalid { name, reason: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn only_the_bootstrap_brokers_are_required_and_the_rest_has_defaults() {
        let config = KafkaConfig::from_lookup(lookup(&[("KAFKA_BOOTSTRAP", "127.0.0.1:9092")])).unwrap();
        assert_eq!(config.brokers, "127.0.0.1:9092");
        assert!(matches!(config.security, KafkaSecurity::Plaintext));
        assert_eq!(config.client_id, "corebank");
        assert_eq!(config.message_timeout_ms, 30_000);
        assert_eq!(config.linger_ms, 2);
        assert_eq!(config.compression, Compression::None);
        assert_eq!(config.session_timeout_ms, 6_000);
        assert_eq!(config.heartbeat_interval_ms(), 2_000);
    }

    #[test]
    fn a_missing_bootstrap_is_an_error_naming_the_variable() {
        let err = KafkaConfig::from_lookup(lookup(&[("KAFKA_BOOTSTRAP", "  ")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "KAFKA_BOOTSTRAP" });
        assert!(err.to_string().contains("KAFKA_BOOTSTRAP"));
    }

    #[test]
    fn sasl_ssl_reads_scram_credentials_and_keeps_the_password_out_of_debug_output() {
        let config = KafkaConfig::from_lookup(lookup(&[
            ("KAFKA_BOOTSTRAP", "b-1:9096"),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_USERNAME", "bank"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_CLIENT_ID", "outbox"),
            ("KAFKA_MESSAGE_TIMEOUT_MS", "5000"),
            ("KAFKA_SESSION_TIMEOUT_MS", "1000"),
        ]))
        .unwrap();
        match &config.security {
            KafkaSecurity::SaslScram { mechanism, username, password } => {
                assert_eq!(*mechanism, ScramMechanism::Sha512);
                assert_eq!(username, "bank");
                assert_eq!(password.expose_secret(), "hunter2");
            }
            other => panic!("expected SCRAM, got {other:?}"),
        }
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.client_id, "outbox");
        assert_eq!(config.message_timeout_ms, 5_000);
        assert_eq!(config.heartbeat_interval_ms(), 333);
        let client = config.client_config();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.username"), Some("bank"));
    }

    #[test]
    fn sasl_ssl_without_a_password_names_the_missing_variable() {
        let err = KafkaConfig::from_lookup(lookup(&[
            ("KAFKA_BOOTSTRAP", "b-1:9096"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_USERNAME", "bank"),
        ]))
        .unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "KAFKA_SASL_PASSWORD" });
    }

    #[test]
    fn unusable_values_are_errors_naming_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")], "KAFKA_SECURITY_PROTOCOL"),
            (&[("KAFKA_SASL_USERNAME", "bank")], "KAFKA_SECURITY_PROTOCOL"),
            (
                &[("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("KAFKA_SASL_MECHANISM", "PLAIN")],
                "KAFKA_SASL_MECHANISM",
            ),
            (&[("KAFKA_MESSAGE_TIMEOUT_MS", "0")], "KAFKA_MESSAGE_TIMEOUT_MS"),
            (&[("KAFKA_MESSAGE_TIMEOUT_MS", "soon")], "KAFKA_MESSAGE_TIMEOUT_MS"),
            (&[("KAFKA_SESSION_TIMEOUT_MS", "-5")], "KAFKA_SESSION_TIMEOUT_MS"),
            (&[("KAFKA_LINGER_MS", "x")], "KAFKA_LINGER_MS"),
            (&[("KAFKA_COMPRESSION", "zstd")], "KAFKA_COMPRESSION"),
        ];
        for (vars, expected) in cases {
            let mut all = vec![("KAFKA_BOOTSTRAP", "127.0.0.1:9092")];
            all.extend_from_slice(vars);
            match KafkaConfig::from_lookup(lookup(&all)) {
                Err(ConfigError::Invalid { name, .. }) => assert_eq!(name, *expected, "{vars:?}"),
                other => panic!("{vars:?}: expected Invalid({expected}), got {other:?}"),
            }
        }
    }

    #[test]
    fn msk_iam_reads_the_cluster_arn_and_the_lambda_identity_instead_of_brokers() {
        let config = KafkaConfig::from_lookup(lookup(&[
            ("MSK_CLUSTER_ARN", "arn:aws:kafka:eu-west-1:123456789012:cluster/events/uuid-1"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "aws_msk_iam"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret-key"),
            ("AWS_SESSION_TOKEN", "session-token"),
        ]))
        .unwrap();
        assert!(matches!(config.security, KafkaSecurity::MskIam));
        assert_eq!(config.brokers, "");
        assert_eq!(
            config.msk_cluster_arn.as_deref(),
            Some("arn:aws:kafka:eu-west-1:123456789012:cluster/events/uuid-1")
        );
        let aws = config.aws.as_ref().unwrap();
        assert_eq!((aws.region.as_str(), aws.access_key_id.as_str()), ("eu-west-1", "AKIDEXAMPLE"));
        assert!(!format!("{config:?}").contains("secret-key"));
        assert!(!format!("{config:?}").contains("session-token"));
        let client = config.client_config();
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("OAUTHBEARER"));
    }

    #[test]
    fn msk_iam_without_credentials_names_the_missing_variable() {
        let err = KafkaConfig::from_lookup(lookup(&[
            ("KAFKA_BOOTSTRAP", "b-1:9098"),
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM"),
            ("AWS_REGION", "eu-west-1"),
        ]))
        .unwrap_err();
        assert_eq!(err, ConfigError::Missing { name: "AWS_ACCESS_KEY_ID" });
    }

    #[test]
    fn plaintext_settings_map_to_librdkafka_properties() {
        let config = KafkaConfig::new("127.0.0.1:9092");
        let client = config.client_config();
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(client.get("security.protocol"), Some("plaintext"));
        assert_eq!(client.get("client.id"), Some("corebank"));
        assert_eq!(client.get("sasl.password"), None);
    }
}
