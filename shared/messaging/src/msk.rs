//! Amazon MSK specifics: bootstrap brokers from a cluster ARN, and IAM access control tokens.
//!
//! # Bootstrap brokers
//! MSK Serverless has no broker list CloudFormation can hand a function, so a function given
//! `MSK_CLUSTER_ARN` instead of `KAFKA_BOOTSTRAP` looks the brokers up once, at cold start, with
//! `kafka:GetBootstrapBrokers` ([`KafkaConfig::resolve_bootstrap`]), and picks the list of the listener
//! its security settings use (IAM, SCRAM, TLS or plaintext).
//!
//! # IAM tokens
//! MSK's IAM listener takes SASL/OAUTHBEARER with a token that is a SigV4 presigned
//! `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect` (service
//! `kafka-cluster`, expiring after 900 s, `host` the only signed header, the payload hash that of the
//! empty body), with a `User-Agent` query parameter appended after signing, encoded as unpadded
//! base64url: what AWS's own signer libraries produce. [`MskIamSigner`] builds it; librdkafka asks for a
//! fresh one through the client context before the current one expires.

use crate::config::KafkaConfig;
use crate::error::KafkaSetupError;

/// How long an IAM token is valid; MSK's signers use the same.
pub const TOKEN_EXPIRY_SECS: u64 = 900;

/// The `User-Agent` query parameter of the tokens this crate signs.
pub const TOKEN_USER_AGENT: &str = concat!("corebank-msk-iam/", env!("CARGO_PKG_VERSION"));

impl KafkaConfig {
    /// Fills [`KafkaConfig::brokers`] from [`KafkaConfig::msk_cluster_arn`] when it is empty (see the
    /// [module docs](self)); does nothing when brokers are set. Call it once, at cold start.
    pub async fn resolve_bootstrap(&mut self) -> Result<(), KafkaSetupError> {
        if !self.brokers.is_empty() {
            return Ok(());
        }
        let Some(cluster_arn) = self.msk_cluster_arn.clone() else {
            return Err(crate::config::ConfigError::Missing { name: "KAFKA_BOOTSTRAP" }.into());
        };
        self.brokers = lookup_brokers(self, &cluster_arn, None).await?;
        Ok(())
    }

    /// [`KafkaConfig::from_env`], then [`KafkaConfig::resolve_bootstrap`]: what a Lambda function that
    /// produces to MSK calls in `main`.
    pub async fn from_env_resolved() -> Result<Self, KafkaSetupError> {
        let mut config = Self::from_env()?;
        config.resolve_bootstrap().await?;
        Ok(config)
    }
}

/// Looks the bootstrap brokers of `cluster_arn` up through the MSK API at `endpoint_url` (the regional
/// endpoint when `None`), for the listener `config.security` uses. HTTPS over OpenSSL, trusting the
/// system's CA bundle ([`crate::aws_http`]).
#[cfg(feature = "msk-iam")]
pub async fn lookup_brokers(
    config: &KafkaConfig,
    cluster_arn: &str,
    endpoint_url: Option<&str>,
) -> Result<String, KafkaSetupError> {
    let http = crate::aws_http::openssl_http_client(crate::aws_http::TrustRoots::System);
    lookup_brokers_with(config, cluster_arn, endpoint_url, http).await
}

/// [`lookup_brokers`] with the MSK API client sending through `http`.
#[cfg(feature = "msk-iam")]
pub async fn lookup_brokers_with(
    config: &KafkaConfig,
    cluster_arn: &str,
    endpoint_url: Option<&str>,
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
) -> Result<String, KafkaSetupError> {
    use aws_credential_types::Credentials;
    use secrecy::ExposeSecret;

    use crate::config::KafkaSecurity;

    let failed =
        |reason: String| KafkaSetupError::BootstrapBrokers { cluster_arn: cluster_arn.to_owned(), reason };
    let identity = config
        .aws
        .as_ref()
        .ok_or_else(|| failed("no AWS identity (AWS_REGION, AWS_ACCESS_KEY_ID, ...)".to_owned()))?;
    let credentials = Credentials::new(
        identity.access_key_id.clone(),
        identity.secret_access_key.expose_secret().to_owned(),
        identity.session_token.as_ref().map(|t| t.expose_secret().to_owned()),
        None,
        "environment",
    );
    let mut builder = aws_sdk_kafka::Config::builder()
        .behavior_version(aws_sdk_kafka::config::BehaviorVersion::latest())
        .region(aws_sdk_kafka::config::Region::new(identity.region.clone()))
        .credentials_provider(credentials)
        .http_client(http);
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    let client = aws_sdk_kafka::Client::from_conf(builder.build());
    let out = client
        .get_bootstrap_brokers()
        .cluster_arn(cluster_arn)
        .send()
        .await
        .map_err(|e| failed(aws_sdk_kafka::error::DisplayErrorContext(e).to_string()))?;
    let (listener, brokers) = match &config.security {
        KafkaSecurity::MskIam => ("IAM", out.bootstrap_broker_string_sasl_iam),
        KafkaSecurity::SaslScram { .. } => ("SCRAM", out.bootstrap_broker_string_sasl_scram),
        KafkaSecurity::Ssl => ("TLS", out.bootstrap_broker_string_tls),
        KafkaSecurity::Plaintext => ("plaintext", out.bootstrap_broker_string),
    };
    brokers.filter(|b| !b.is_empty()).ok_or_else(|| failed(format!("the cluster has no {listener} listener")))
}

/// Without the `msk-iam` feature there is no MSK API client: a cluster ARN cannot be resolved.
#[cfg(not(feature = "msk-iam"))]
pub async fn lookup_brokers(
    _config: &KafkaConfig,
    cluster_arn: &str,
    _endpoint_url: Option<&str>,
) -> Result<String, KafkaSetupError> {
    Err(KafkaSetupError::BootstrapBrokers {
        cluster_arn: cluster_arn.to_owned(),
        reason: "MSK_CLUSTER_ARN needs corebank-messaging's `msk-iam` feature; set KAFKA_BOOTSTRAP instead"
            .to_owned(),
    })
}

/// Signs MSK IAM tokens with one AWS identity.
#[cfg(feature = "msk-iam")]
#[derive(Debug, Clone)]
pub struct MskIamSigner {
    identity: crate::config::AwsIdentity,
}

#[cfg(feature = "msk-iam")]
impl MskIamSigner {
    /// A signer for `identity`.
    pub fn new(identity: crate::config::AwsIdentity) -> Self {
        Self { identity }
    }

    /// The presigned URL a token encodes, signed at `now`.
    pub fn presigned_url(&self, now: std::time::SystemTime) -> Result<String, KafkaSetupError> {
        use aws_credential_types::Credentials;
        use aws_sigv4::http_request::{
            SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
        };
        use aws_sigv4::sign::v4;
        use secrecy::ExposeSecret;

        let failed = |what: &str, e: &dyn std::fmt::Display| KafkaSetupError::MskIam(format!("{what}: {e}"));
        let region = &self.identity.region;
        let url = format!("https://kafka.{region}.amazonaws.com/?Action=kafka-cluster%3AConnect");
        let identity = Credentials::new(
            self.identity.access_key_id.clone(),
            self.identity.secret_access_key.expose_secret().to_owned(),
            self.identity.session_token.as_ref().map(|t| t.expose_secret().to_owned()),
            None,
            "environment",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(std::time::Duration::from_secs(TOKEN_EXPIRY_SECS));
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("kafka-cluster")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| failed("signing parameters", &e))?
            .into();
        let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
            .map_err(|e| failed("request", &e))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| failed("signature", &e))?.into_parts();
        let mut request =
            http::Request::builder().method("GET").uri(&url).body(()).map_err(|e| failed("request", &e))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(format!("{}&User-Agent={}", request.uri(), TOKEN_USER_AGENT.replace('/', "%2F")))
    }

    /// The OAUTHBEARER token for a connection opened at `now`, with its expiry.
    pub fn token(&self, now: std::time::SystemTime) -> Result<rdkafka::client::OAuthToken, KafkaSetupError> {
        use base64::Engine as _;

        let url = self.presigned_url(now)?;
        let signed_at_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| KafkaSetupError::MskIam(format!("clock before 1970: {e}")))?
            .as_millis();
        // The signature carries whole seconds (X-Amz-Date); the expiry is counted from those.
        let signed_at_ms = i64::try_from(signed_at_ms - signed_at_ms % 1000)
            .map_err(|e| KafkaSetupError::MskIam(format!("clock out of range: {e}")))?;
        let expiry_ms = i64::try_from(TOKEN_EXPIRY_SECS * 1000).unwrap_or(i64::MAX);
        Ok(rdkafka::client::OAuthToken {
            token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url),
            principal_name: self.identity.access_key_id.clone(),
            lifetime_ms: signed_at_ms.saturating_add(expiry_ms),
        })
    }
}
