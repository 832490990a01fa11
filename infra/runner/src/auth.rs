//! Who may call the runner (`AUTH_MODE`): the local stand-in for API Gateway's authorizer.
//!
//! - `open` (the default): every request acts as `local-operator` with the customer and operator
//!   scopes; the admin routes still need the `ADMIN_TOKEN` bearer.
//! - `jwt`: `Authorization: Bearer <access token>` is verified by the same code as the authorizer
//!   function (`corebank_auth::Verifier`), against `AUTH_JWKS_FILE` or `AUTH_JWKS_URL`, for
//!   `AUTH_ISSUER` and `AUTH_AUDIENCE`. A missing or refused token is 401 with `WWW-Authenticate:
//!   Bearer`; the admin routes also take the `ADMIN_TOKEN` bearer instead of a token.
//!
//! `GET /api/health` needs no one.

use std::path::PathBuf;
use std::sync::Arc;

use corebank_api::ApiError;
use corebank_api::access::with_principal;
use corebank_api::error::error_response;
use corebank_api::router::{Match, match_route};
use corebank_auth::jwt::{FileKeys, KeySource};
use corebank_auth::{Principal, Verifier, VerifierConfig, bearer};

use crate::RunnerError;

/// How the runner authenticates callers.
#[derive(Debug, Clone)]
pub enum Gate {
    /// Everyone is `local-operator`.
    Open,
    /// Bearer access tokens, verified.
    Jwt(Arc<Verifier>),
}

fn config_error(name: &str, reason: impl Into<String>) -> RunnerError {
    RunnerError::Config(corebank_app::ConfigError { name: name.to_owned(), reason: reason.into() })
}

impl Gate {
    /// Reads `AUTH_MODE` and, for `jwt`, its settings, and reads the key set once so a bad setting
    /// stops the start rather than the first request.
    pub async fn from_env() -> Result<Self, RunnerError> {
        Self::from_lookup(|name| std::env::var(name).ok()).await
    }

    /// [`Gate::from_env`] over any variable lookup.
    pub async fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RunnerError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        match get("AUTH_MODE").as_deref() {
            None | Some("open") => Ok(Self::Open),
            Some("jwt") => {
                let required =
                    |name: &str| get(name).ok_or_else(|| config_error(name, "required with AUTH_MODE=jwt"));
                let config =
                    VerifierConfig { issuer: required("AUTH_ISSUER")?, audience: required("AUTH_AUDIENCE")? };
                let source: Arc<dyn KeySource> = match (get("AUTH_JWKS_FILE"), get("AUTH_JWKS_URL")) {
                    (Some(file), None) => Arc::new(FileKeys(PathBuf::from(file))),
                    (None, Some(url)) => Arc::new(
                        corebank_auth::fetch::UrlKeys::new(&url)
                            .map_err(|e| config_error("AUTH_JWKS_URL", e.to_string()))?,
                    ),
                    (Some(_), Some(_)) => {
                        return Err(config_error(
                            "AUTH_JWKS_FILE",
                            "set AUTH_JWKS_FILE or AUTH_JWKS_URL, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(config_error(
                            "AUTH_JWKS_FILE",
                            "AUTH_JWKS_FILE or AUTH_JWKS_URL is required with AUTH_MODE=jwt",
                        ));
                    }
                };
                let verifier = Verifier::new(config, source);
                let keys =
                    verifier.load().await.map_err(|e| config_error("AUTH_JWKS_FILE", e.to_string()))?;
                tracing::info!(keys, issuer = %verifier.config().issuer, "AUTH_MODE=jwt: bearer access tokens are verified");
                Ok(Self::Jwt(Arc::new(verifier)))
            }
            Some(other) => Err(config_error("AUTH_MODE", format!("unknown mode {other:?} (open or jwt)"))),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Open => {
                "AUTH_MODE=open: every caller acts as local-operator (customer and operator scopes); admin routes need the ADMIN_TOKEN bearer"
            }
            Self::Jwt(_) => "AUTH_MODE=jwt: every route but health needs a verified bearer token",
        }
    }

    /// The request with its principal in the request context, or the answer that refuses it.
    /// `path` is relative to `/api`.
    pub async fn admit(
        &self,
        req: lambda_http::Request,
        path: &str,
        request_id: &str,
    ) -> Result<lambda_http::Request, Box<lambda_http::Response<lambda_http::Body>>> {
        // As at API Gateway: the public route and unknown routes (404, 405) need no principal.
        let admin = match match_route(req.method(), path) {
            Match::Found(route, _) if route.is_public() => return Ok(req),
            Match::Found(route, _) => route.is_admin(),
            Match::MethodNotAllowed | Match::NotFound => return Ok(req),
        };
        let verifier = match self {
            Self::Open => return Ok(with_principal(req, &Principal::local_operator(), request_id)),
            Self::Jwt(verifier) => verifier,
        };
        let token =
            req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        let refused = |error: ApiError| Err(Box::new(error_response(&error, request_id)));
        match token {
            // The admin routes take the ADMIN_TOKEN bearer instead of a token: their handler checks it.
            None if admin => Ok(req),
            None => refused(ApiError::Unauthorized("a bearer token is required")),
            Some(token) => match verifier.verify(token).await {
                Ok(principal) => Ok(with_principal(req, &principal, request_id)),
                Err(_) if admin => Ok(req),
                Err(e) if e.is_refusal() => {
                    tracing::debug!(error = %e, "token refused");
                    refused(ApiError::Unauthorized("the bearer token is not valid"))
                }
                Err(e) => {
                    tracing::error!(error = %e, "tokens cannot be verified");
                    refused(ApiError::Unavailable("tokens cannot be verified right now"))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn gate(vars: &[(&str, &str)]) -> Result<Gate, RunnerError> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Gate::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).await
    }

    fn refused_for(result: Result<Gate, RunnerError>, variable: &str) {
        match result {
            Err(RunnerError::Config(e)) => assert_eq!(e.name, variable, "{e}"),
            other => panic!("expected a configuration error naming {variable}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn open_is_the_default_and_jwt_needs_its_settings() {
        assert!(matches!(gate(&[]).await, Ok(Gate::Open)));
        assert!(matches!(gate(&[("AUTH_MODE", "open")]).await, Ok(Gate::Open)));
        refused_for(gate(&[("AUTH_MODE", "none")]).await, "AUTH_MODE");
        refused_for(gate(&[("AUTH_MODE", "jwt")]).await, "AUTH_ISSUER");
        refused_for(gate(&[("AUTH_MODE", "jwt"), ("AUTH_ISSUER", "https://i")]).await, "AUTH_AUDIENCE");
        let both = [
            ("AUTH_MODE", "jwt"),
            ("AUTH_ISSUER", "https://i"),
            ("AUTH_AUDIENCE", "a"),
            ("AUTH_JWKS_FILE", "/nonexistent/jwks.json"),
            ("AUTH_JWKS_URL", "https://i/jwks.json"),
        ];
        refused_for(gate(&both).await, "AUTH_JWKS_FILE");
        refused_for(gate(&both[..4]).await, "AUTH_JWKS_FILE");
        let plain_url = [both[0], both[1], both[2], ("AUTH_JWKS_URL", "http://issuer.example/jwks.json")];
        refused_for(gate(&plain_url).await, "AUTH_JWKS_URL");
    }
}
