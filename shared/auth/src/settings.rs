//! The authorizer function's settings, read from its environment at cold start.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `AUTH_ISSUER` | the exact `iss` of accepted tokens (e.g. a Cognito user pool's `https://cognito-idp.<region>.amazonaws.com/<pool id>`) |
//! | `AUTH_AUDIENCE` | what `aud` must contain, or `client_id` must be for tokens without `aud` (Cognito access tokens) |
//! | `AUTH_JWKS_URL` | the issuer's key set (`https`) |

use crate::AuthError;
use crate::jwt::VerifierConfig;

/// Every variable [`Settings::from_lookup`] reads.
pub const ENV_VARS: &[&str] = &["AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_JWKS_URL"];

/// Where tokens come from and what they must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Issuer and audience.
    pub verifier: VerifierConfig,
    /// The key set's URL.
    pub jwks_url: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, AuthError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`; blank counts as unset, and every variable is required.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| AuthError::Misconfigured(format!("{name} is not set")))
        };
        Ok(Self {
            verifier: VerifierConfig { issuer: get("AUTH_ISSUER")?, audience: get("AUTH_AUDIENCE")? },
            jwks_url: get("AUTH_JWKS_URL")?,
        })
    }
}
