//! Database credentials read from AWS Secrets Manager: the JSON secret RDS manages (or that rotation
//! functions write), `{"username": .., "password": .., "host": .., "port": .., "dbname": ..}`.
//!
//! Only `username` and `password` are taken: where to connect is the function's own configuration
//! (`PGHOST` names the instance or the RDS Proxy endpoint, which the secret does not know about). The
//! secret's value is held in a `SecretString` from the moment it is parsed and is never logged; errors
//! name the secret's id and what was wrong with it, never its content.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use corebank_store::postgres::{CredentialError, CredentialSource, Credentials};
use secrecy::SecretString;

/// The keys of an RDS secret this reads; any others are ignored.
#[derive(serde::Deserialize)]
struct RdsSecret {
    username: String,
    password: SecretString,
}

/// Reads a secret's current value on every [`CredentialSource::fetch`]; the connector caches it.
#[derive(Debug, Clone)]
pub struct SecretsManagerCredentials {
    client: Client,
    secret_id: String,
    timeout: Duration,
}

impl SecretsManagerCredentials {
    /// Reads `secret_id` (an ARN or name) with `client`, each read bounded by `timeout`.
    pub fn new(client: Client, secret_id: impl Into<String>, timeout: Duration) -> Self {
        Self { client, secret_id: secret_id.into(), timeout }
    }
}

/// The credentials in an RDS secret's JSON text.
pub fn parse_secret(secret_id: &str, text: &str) -> Result<Credentials, CredentialError> {
    // serde_json's own message can quote the offending value (the password, say), so only the kind
    // of mistake and its place are reported.
    let secret: RdsSecret = serde_json::from_str(text).map_err(|e| {
        CredentialError(format!(
            "secret {secret_id} is not an RDS credentials JSON object with string username and password \
             ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if secret.username.is_empty() {
        return Err(CredentialError(format!("secret {secret_id} has an empty username")));
    }
    Ok(Credentials { user: secret.username, password: secret.password })
}

#[async_trait]
impl CredentialSource for SecretsManagerCredentials {
    async fn fetch(&self) -> Result<Credentials, CredentialError> {
        let request = self.client.get_secret_value().secret_id(&self.secret_id).send();
        let output = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| {
                CredentialError(format!(
                    "reading secret {} took longer than {} ms",
                    self.secret_id,
                    self.timeout.as_millis()
                ))
            })?
            .map_err(|e| {
                let e = aws_sdk_secretsmanager::error::DisplayErrorContext(e);
                CredentialError(format!("cannot read secret {}: {e}", self.secret_id))
            })?;
        let text = output.secret_string().ok_or_else(|| {
            CredentialError(format!("secret {} has no string value (a binary secret?)", self.secret_id))
        })?;
        parse_secret(&self.secret_id, text)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn an_rds_secret_gives_its_username_and_password() {
        let credentials = parse_secret(
            "arn:aws:secretsmanager:eu-west-1:1:secret:db",
            r#"{"engine":"postgres","host":"db.internal","port":5432,"dbname":"corebank","username":"bank","password":"p@ss\"word"}"#,
        )
        .unwrap();
        assert_eq!(credentials.user, "bank");
        assert_eq!(credentials.password.expose_secret(), "p@ss\"word");
    }

    #[test]
    fn a_malformed_secret_is_refused_without_repeating_its_value() {
        for text in [
            r#"{"username":"bank"}"#,
            r#"{"password":"hunter2"}"#,
            r#"{"username":"","password":"hunter2"}"#,
            "hunter2",
            r#"{"username":"bank","password":hunter2}"#,
            r#""hunter2""#,
            r#"{"username":"bank","password":["hunter2"]}"#,
        ] {
            let err = parse_secret("db-secret", text).unwrap_err();
            assert!(err.to_string().contains("db-secret"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
