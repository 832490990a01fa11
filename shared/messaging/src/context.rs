//! The rdkafka client context every client of this crate is built with: it answers librdkafka's
//! OAUTHBEARER token refresh with an MSK IAM token when the config asks for IAM, and is inert otherwise.

use std::error::Error;

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::ConsumerContext;

use crate::config::{KafkaConfig, KafkaSecurity};
use crate::error::KafkaSetupError;

/// Client context of the producer, the consumer and the admin client.
pub(crate) struct KafkaContext {
    #[cfg(feature = "msk-iam")]
    signer: Option<crate::msk::MskIamSigner>,
}

impl KafkaContext {
    /// The context `config` needs: a token signer for [`KafkaSecurity::MskIam`], nothing otherwise.
    pub(crate) fn for_config(config: &KafkaConfig) -> Result<Self, KafkaSetupError> {
        match config.security {
            #[cfg(feature = "msk-iam")]
            KafkaSecurity::MskIam => {
                let identity = config.aws.clone().ok_or(KafkaSetupError::MskIam(
                    "IAM auth needs the AWS identity (AWS_REGION, AWS_ACCESS_KEY_ID, ...)".to_owned(),
                ))?;
                Ok(Self { signer: Some(crate::msk::MskIamSigner::new(identity)) })
            }
            #[cfg(not(feature = "msk-iam"))]
            KafkaSecurity::MskIam => Err(KafkaSetupError::MskIam(
                "AWS_MSK_IAM needs corebank-messaging's `msk-iam` feature in this build".to_owned(),
            )),
            KafkaSecurity::Plaintext | KafkaSecurity::Ssl | KafkaSecurity::SaslScram { .. } => Ok(Self {
                #[cfg(feature = "msk-iam")]
                signer: None,
            }),
        }
    }
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
}

impl ConsumerContext for KafkaContext {}
