//! Who is calling, and what they may do.
//!
//! - [`principal`]: the principal id, its scopes, and how it was established;
//! - [`policy`]: the pure access policy (operation x scopes x ownership);
//! - [`jwt`]: OIDC access-token verification against the issuer's key set, the one implementation
//!   the authorizer function and the local runner share;
//! - [`context`]: how the principal travels in API Gateway's request context;
//! - `fetch` (feature): the key set over HTTPS; `mint` (feature): signing keys and tokens for tests,
//!   the load tool and local use.
#![warn(missing_docs)]

pub mod context;
pub mod error;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod jwt;
#[cfg(feature = "mint")]
pub mod mint;
pub mod policy;
pub mod principal;
pub mod settings;

pub use error::AuthError;
pub use jwt::{MAX_TOKEN_BYTES, Verifier, VerifierConfig, bearer};
pub use principal::{Authentication, Principal, PrincipalId, Scope, Scopes};
