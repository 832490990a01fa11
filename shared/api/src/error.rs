//! The one place where errors become HTTP: status, stable `code`, and the JSON envelope
//! `{statusCode, error, code, message}`.
//!
//! 4xx carry the user-facing message. 5xx are opaque (`internal error` plus the request id) and
//! their cause chain is logged here, once.

use corebank_app::AppError;
use corebank_domain::DomainError;
use corebank_store::StoreError;
use http::StatusCode;
use lambda_http::{Body, Response};

use crate::response::json_response;

/// Why a request failed before, around or inside a use case.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body, path, query or header invalid; the message names the field.
    #[error("{0}")]
    Validation(String),
    /// No or an empty Idempotency-Key on a command.
    #[error("missing Idempotency-Key")]
    IdempotencyKeyMissing,
    /// Body above 64 KiB.
    #[error("payload too large")]
    PayloadTooLarge,
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No authenticated principal: a missing or refused token, a missing or wrong admin token, or
    /// admin routes disabled.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// An authenticated principal whose scopes do not allow the operation.
    #[error("the caller's scopes do not allow this operation")]
    Forbidden,
    /// The caller could not be authenticated for a reason of ours (the issuer's keys are unreadable).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A use case failed.
    #[error(transparent)]
    App(AppError),
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self::App(e)
    }
}

/// Status, code and message of an error.
pub fn classify(error: &ApiError) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    match error {
        ApiError::Validation(m) => (S::BAD_REQUEST, "VALIDATION_FAILED", m.clone()),
        ApiError::IdempotencyKeyMissing => {
            (S::BAD_REQUEST, "IDEMPOTENCY_KEY_MISSING", "the Idempotency-Key header is required".to_owned())
        }
        ApiError::PayloadTooLarge => {
            (S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the request body exceeds 65536 bytes".to_owned())
        }
        ApiError::NotFound => (S::NOT_FOUND, "NOT_FOUND", "no such route".to_owned()),
        ApiError::MethodNotAllowed => {
            (S::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method not allowed on this route".to_owned())
        }
        ApiError::Unauthorized(m) => (S::UNAUTHORIZED, "UNAUTHORIZED", (*m).to_owned()),
        ApiError::Forbidden => (S::FORBIDDEN, "FORBIDDEN", error.to_string()),
        ApiError::Unavailable(m) => (S::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", (*m).to_owned()),
        ApiError::App(e) => classify_app(e),
    }
}

fn classify_app(error: &AppError) -> (StatusCode, &'static str, String) {
    use StatusCode as S;
    let (status, code) = match error {
        AppError::Domain(d) => match d {
            DomainError::AccountNotFound => (S::NOT_FOUND, "ACCOUNT_NOT_FOUND"),
            DomainError::AccountAlreadyExists => (S::CONFLICT, "ACCOUNT_ALREADY_EXISTS"),
            DomainError::AccountNotActive => (S::BAD_REQUEST, "ACCOUNT_NOT_ACTIVE"),
            DomainError::AccountAlreadyFrozen => (S::BAD_REQUEST, "ACCOUNT_ALREADY_FROZEN"),
            DomainError::AccountNotFrozen => (S::BAD_REQUEST, "ACCOUNT_NOT_FROZEN"),
            DomainError::CurrencyMismatch { .. } => (S::BAD_REQUEST, "CURRENCY_MISMATCH"),
            DomainError::InsufficientFunds { .. } => (S::BAD_REQUEST, "INSUFFICIENT_FUNDS"),
            DomainError::BalanceLimitExceeded { .. } => (S::BAD_REQUEST, "BALANCE_LIMIT_EXCEEDED"),
            DomainError::HoldAlreadyExists => (S::CONFLICT, "HOLD_ALREADY_EXISTS"),
            DomainError::HoldNotFound => (S::CONFLICT, "HOLD_NOT_FOUND"),
            DomainError::TransferNotFound => (S::NOT_FOUND, "TRANSFER_NOT_FOUND"),
            DomainError::TransferIdConflict => (S::CONFLICT, "TRANSFER_ID_CONFLICT"),
            DomainError::TransferToSameAccount => (S::BAD_REQUEST, "VALIDATION_FAILED"),
            DomainError::TransferStepNotAllowed { .. } => (S::CONFLICT, "TRANSFER_STEP_NOT_ALLOWED"),
        },
        AppError::TransactionIdConflict => (S::CONFLICT, "TRANSACTION_ID_CONFLICT"),
        AppError::IdempotencyKeyReused => (S::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
        AppError::IdempotencyInProgress => (S::CONFLICT, "IDEMPOTENCY_REQUEST_IN_PROGRESS"),
        AppError::ConcurrencyConflict | AppError::Store(StoreError::VersionConflict { .. }) => {
            (S::CONFLICT, "CONCURRENCY_CONFLICT")
        }
        AppError::VersionNotReached { .. } => (S::CONFLICT, "VERSION_NOT_REACHED"),
        AppError::RebuildNotFound | AppError::ParkedStreamNotFound => (S::NOT_FOUND, "NOT_FOUND"),
        AppError::Store(StoreError::Unavailable(_)) => (S::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
        AppError::Store(_) | AppError::Corrupt(_) => (S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    };
    let message = if status.is_server_error() { "internal error".to_owned() } else { error.to_string() };
    (status, code, message)
}

/// The JSON error body.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> String {
    serde_json::json!({
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "code": code,
        "message": message,
    })
    .to_string()
}

/// Renders an error as the response to send, logging server errors with their cause chain once. A
/// 401 says how to authenticate (`WWW-Authenticate: Bearer`).
pub fn error_response(error: &ApiError, request_id: &str) -> Response<Body> {
    let (status, code, mut message) = classify(error);
    if status.is_server_error() {
        tracing::error!(request_id, error = %chain(error), code, "request failed");
        message = format!("{message} (request id {request_id})");
    }
    let mut response = json_response(status, error_body(status, code, &message), request_id);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    }
    response
}

fn chain(error: &ApiError) -> String {
    let ApiError::App(app) = error else { return format!("{error:?}") };
    let mut text = app.to_string();
    let mut source = std::error::Error::source(app);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
