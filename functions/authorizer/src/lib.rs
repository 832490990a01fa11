//! The API Gateway (REST) Lambda authorizer, `TOKEN` type: verifies the bearer access token with
//! `corebank_auth::Verifier` (the code the local runner's `AUTH_MODE=jwt` uses) and answers:
//!
//! - a verified token: `Allow` on every method of the API's stage (API Gateway caches the answer
//!   per token for `AuthorizerResultTtlInSeconds`, and the cached policy must fit every route),
//!   with `principalId` = the token's `sub` and the scopes in the context (`scope`), which the
//!   functions read from `requestContext.authorizer`;
//! - a missing or refused token: the error `Unauthorized`, which API Gateway turns into a 401 (the
//!   `UNAUTHORIZED` gateway response, in the API's JSON error shape, with `WWW-Authenticate: Bearer`);
//! - keys that cannot be read: another error, which API Gateway answers with a 500
//!   (`AUTHORIZER_FAILURE`, mapped to 503 `SERVICE_UNAVAILABLE`).

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequest, ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use corebank_auth::{AuthError, Verifier, bearer, context};
use lambda_runtime::Diagnostic;

/// Why a call was not allowed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token is missing or refused: API Gateway answers 401 (the message must be exactly this).
    #[error("Unauthorized")]
    Unauthorized,
    /// Nothing can be verified right now.
    #[error("the issuer's signing keys are unavailable")]
    Unavailable,
}

impl From<Refusal> for Diagnostic {
    fn from(refusal: Refusal) -> Self {
        Diagnostic { error_type: "Refusal".to_owned(), error_message: refusal.to_string() }
    }
}

/// `arn:aws:execute-api:<region>:<account>:<api id>/<stage>/*/*` for a method ARN of the API:
/// the resource an allow must name so that its cached answer fits every route.
pub fn api_wide(method_arn: &str) -> Option<String> {
    let mut parts = method_arn.splitn(3, '/');
    let (api, stage) = (parts.next()?, parts.next()?);
    (api.starts_with("arn:") && !stage.is_empty()).then(|| format!("{api}/{stage}/*/*"))
}

/// Decides one authorizer call.
pub async fn authorize(
    verifier: &Verifier,
    request: &ApiGatewayCustomAuthorizerRequest,
) -> Result<ApiGatewayCustomAuthorizerResponse, Refusal> {
    let token = request.authorization_token.as_deref().and_then(bearer).ok_or(Refusal::Unauthorized)?;
    let principal = match verifier.verify(token).await {
        Ok(principal) => principal,
        Err(AuthError::KeysUnavailable(reason)) => {
            tracing::error!(%reason, "tokens cannot be verified");
            return Err(Refusal::Unavailable);
        }
        Err(e) => {
            tracing::info!(reason = %e, "token refused");
            return Err(Refusal::Unauthorized);
        }
    };
    let resource = request.method_arn.as_deref().and_then(api_wide).ok_or_else(|| {
        tracing::error!(method_arn = ?request.method_arn, "not an execute-api method ARN");
        Refusal::Unauthorized
    })?;
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".to_owned()];
    statement.effect = IamPolicyEffect::Allow;
    statement.resource = vec![resource];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".to_owned());
    policy.statement = vec![statement];
    let context = context::authorizer_context(&principal);
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal.id.to_string());
    response.policy_document = policy;
    response.context = serde_json::to_value(context).unwrap_or_default();
    Ok(response)
}
