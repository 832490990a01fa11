//! Why a caller was not authenticated.

/// Why a token was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` token.
    #[error("a bearer token is required")]
    Missing,
    /// Not a compact JWS of three base64url parts with JSON header and claims.
    #[error("the token is malformed")]
    Malformed,
    /// Longer than [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES).
    #[error("the token is too large")]
    TooLarge,
    /// `alg` is not RS256 or ES256, or not the algorithm of the key it names.
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No `kid`, or one the issuer's key set does not hold.
    #[error("the token's signing key is not known")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is not valid")]
    Signature,
    /// `exp` has passed (beyond the leeway), or there is none.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    Issuer,
    /// Neither `aud` nor `client_id` is the configured audience.
    #[error("the token's audience is not accepted")]
    Audience,
    /// `sub` is missing or not 1..=128 characters of `[A-Za-z0-9._:-]`.
    #[error("the token's subject is not a valid principal id")]
    Subject,
    /// A setting is missing or wrong.
    #[error("{0}")]
    Misconfigured(String),
    /// The issuer's key set could not be read: nothing could be verified.
    #[error("the issuer's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// Whether the token itself was refused (401), rather than the keys being unavailable (503).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::KeysUnavailable(_) | Self::Misconfigured(_))
    }
}
