//! The `Authorization` header the tool sends: a given bearer token, or one it signs itself with
//! corebank-auth's minter (the same library the bank verifies with).

use http::HeaderValue;

use crate::args::{Authentication, Config};
use crate::error::Error;

/// How long past the run's own length a minted token stays valid (seeding and the audit included).
const MINTED_SLACK_SECS: u64 = 15 * 60;

/// The header value to send, if any.
pub(crate) fn authorization(config: &Config) -> Result<Option<HeaderValue>, Error> {
    let token = match &config.authentication {
        Authentication::None => return Ok(None),
        Authentication::Bearer { token } => token.clone(),
        Authentication::Minted(mint) => {
            let pem = std::fs::read_to_string(&mint.key)
                .map_err(|e| Error::Setup(format!("cannot read {}: {e}", mint.key.display())))?;
            let key = corebank_auth::mint::SigningKey::from_pem(&pem, &mint.kid)
                .map_err(|e| Error::Setup(format!("{}: {e}", mint.key.display())))?;
            let lifetime = config.duration_secs + config.audit_timeout_secs + MINTED_SLACK_SECS;
            let claims = corebank_auth::mint::access_claims(
                &mint.issuer,
                &mint.audience,
                &mint.subject,
                &mint.scope,
                lifetime,
            );
            key.sign(&claims).map_err(|e| Error::Setup(e.to_string()))?
        }
    };
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Error::Setup("the bearer token is not a valid header value".to_owned()))?;
    value.set_sensitive(true);
    Ok(Some(value))
}
