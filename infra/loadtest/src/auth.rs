//! How the tool authenticates: a given bearer token, one it signs itself with corebank-auth's minter (the
//! same library the bank verifies with), or a SigV4 signature on every request.

use std::sync::Arc;

use http::HeaderValue;

use crate::args::{Authentication, Config};
use crate::error::Error;
use crate::http::RequestAuth;
use crate::sigv4::Signer;

/// How long past the run's own length a minted token stays valid (seeding and the audit included).
const MINTED_SLACK_SECS: u64 = 15 * 60;

/// What every request carries.
pub(crate) fn request_auth(config: &Config) -> Result<RequestAuth, Error> {
    let token = match &config.authentication {
        Authentication::None => return Ok(RequestAuth::None),
        Authentication::Sigv4 { region, credentials } => {
            return Ok(RequestAuth::Sigv4(Arc::new(Signer::new(region, credentials))));
        }
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
    Ok(RequestAuth::Header(value))
}
