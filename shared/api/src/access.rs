//! Who is calling, and whether they may: the principal from the request context, and the access
//! policy applied before any command runs.
//!
//! The principal comes from API Gateway's request context only: the authorizer's `principalId` and
//! scopes, or the IAM caller's ARN (the local runner fills the same context after its own check). A
//! header or body field naming a caller is never believed. Ownership is read from the account's
//! event-sourced state (its `AccountCreated` owner), never from the read model; an account or
//! transfer the principal may not see is answered exactly as an unknown one.

use corebank_app::AppError;
use corebank_auth::policy::{self, Check, Operation};
use corebank_auth::{Principal, context};
use corebank_domain::{AccountId, DomainError, TransferId};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::{ApiError, Deps};

/// The authorizer context key the local runner sets to `open` in its open mode, so the admin routes
/// answer an unauthenticated caller with 401 rather than 403.
pub const VIA_KEY: &str = "via";

/// The principal of a request, from its request context; 401 without one.
pub fn principal(req: &Request) -> Result<Principal, ApiError> {
    let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref() else {
        return Err(ApiError::Unauthorized("authentication is required"));
    };
    if let Some(mut principal) = context::from_authorizer(&ctx.authorizer.fields) {
        if ctx.authorizer.fields.get(VIA_KEY).and_then(serde_json::Value::as_str) == Some("open") {
            principal.via = corebank_auth::Authentication::Open;
        }
        return Ok(principal);
    }
    if let Some(principal) = ctx.identity.user_arn.as_deref().and_then(context::from_iam) {
        return Ok(principal);
    }
    Err(ApiError::Unauthorized("authentication is required"))
}

fn account_not_found() -> ApiError {
    ApiError::App(AppError::Domain(DomainError::AccountNotFound))
}

/// Allows `operation` on `account_id` or says why not: 403 when the scopes do not allow it, 404
/// `ACCOUNT_NOT_FOUND` when it takes owning the account and the principal does not (or the account
/// does not exist).
pub async fn account(
    deps: &Deps,
    principal: &Principal,
    operation: Operation,
    account_id: &AccountId,
) -> Result<(), ApiError> {
    match policy::check(principal.scopes, operation) {
        Check::Allowed => Ok(()),
        Check::Forbidden => Err(ApiError::Forbidden),
        Check::IfOwner => {
            let owner = deps.app.commands.owner(account_id).await?;
            let owns = owner.is_some_and(|o| o.as_str() == principal.id.as_str());
            if owns { Ok(()) } else { Err(account_not_found()) }
        }
    }
}

/// Allows creating an account for `owner_id`, or 403.
pub fn create_account(principal: &Principal, owner_id: &str) -> Result<(), ApiError> {
    let operation = Operation::CreateAccount { for_self: owner_id == principal.id.as_str() };
    match policy::check(principal.scopes, operation) {
        Check::Allowed => Ok(()),
        Check::Forbidden | Check::IfOwner => Err(ApiError::Forbidden),
    }
}

/// Allows reading `transfer_id`, or 403, or 404 `TRANSFER_NOT_FOUND` when the principal did not
/// start it (or it does not exist).
pub async fn transfer(deps: &Deps, principal: &Principal, transfer_id: &TransferId) -> Result<(), ApiError> {
    match policy::check(principal.scopes, Operation::ReadTransfer) {
        Check::Allowed => Ok(()),
        Check::Forbidden => Err(ApiError::Forbidden),
        Check::IfOwner => {
            let terms = deps.app.transfers.terms(transfer_id).await?;
            let started = terms.is_some_and(|t| t.initiated_by.as_deref() == Some(principal.id.as_str()));
            if started { Ok(()) } else { Err(ApiError::App(AppError::Domain(DomainError::TransferNotFound))) }
        }
    }
}

/// The request with `principal` in its request context, as API Gateway hands an authorized request
/// to a function: what a host that authenticates on its own (the local runner) puts on a request.
pub fn with_principal(req: Request, principal: &Principal, request_id: &str) -> Request {
    use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext;
    let mut ctx = ApiGatewayProxyRequestContext::default();
    ctx.request_id = Some(request_id.to_owned());
    let mut fields = context::authorizer_context(principal);
    fields.insert(context::PRINCIPAL_ID_KEY.to_owned(), serde_json::Value::String(principal.id.to_string()));
    if principal.via == corebank_auth::Authentication::Open {
        fields.insert(VIA_KEY.to_owned(), serde_json::Value::String("open".to_owned()));
    }
    ctx.authorizer.fields = fields;
    req.with_request_context(RequestContext::ApiGatewayV1(ctx))
}
