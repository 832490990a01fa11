//! Request decoding, owned in one place: headers, size cap, JSON, unknown fields, path and query.

use corebank_domain::transfer::LEG_IDEMPOTENCY_KEY_PREFIX;
use lambda_http::{Body, Request, RequestExt};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The largest accepted body: 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest accepted Idempotency-Key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The request body as bytes.
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Decodes a JSON object body into `T` (which denies unknown fields) and also returns the body as
/// a JSON value for hashing. Every failure is a 4xx naming what is wrong.
pub fn decode_json<T: DeserializeOwned>(req: &Request) -> Result<(T, serde_json::Value), ApiError> {
    if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::Validation("Content-Type must be application/json".to_owned()));
        }
    }
    let bytes = body_bytes(req);
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Validation("a JSON object body is required".to_owned()));
    }
    // Path-tracked, so a value serde_json cannot hold (a number beyond f64, such as `1e400`) names
    // its field instead of failing the whole body anonymously.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: serde_json::Value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::Validation(format!("body is not valid JSON: {inner}"))
        } else {
            ApiError::Validation(format!("body is not valid JSON at {path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| ApiError::Validation(format!("body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::Validation("body must be a JSON object".to_owned()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let typed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
        if path == "." || path.is_empty() {
            ApiError::Validation(inner)
        } else {
            ApiError::Validation(format!("{path}: {inner}"))
        }
    })?;
    Ok((typed, value))
}

/// The Idempotency-Key header: required, non-blank, at most 255 characters, not in the transfer legs'
/// namespace ([`LEG_IDEMPOTENCY_KEY_PREFIX`]).
pub fn idempotency_key(req: &Request) -> Result<String, ApiError> {
    let Some(raw) = req.headers().get("idempotency-key") else {
        return Err(ApiError::IdempotencyKeyMissing);
    };
    let key = raw
        .to_str()
        .map_err(|_| ApiError::Validation("Idempotency-Key must be visible ASCII".to_owned()))?
        .trim();
    if key.is_empty() {
        return Err(ApiError::IdempotencyKeyMissing);
    }
    if key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::Validation("Idempotency-Key must be at most 255 characters".to_owned()));
    }
    if key.starts_with(LEG_IDEMPOTENCY_KEY_PREFIX) {
        return Err(ApiError::Validation(format!(
            "Idempotency-Key must not start with {LEG_IDEMPOTENCY_KEY_PREFIX:?}: that prefix is reserved for transfer legs"
        )));
    }
    Ok(key.to_owned())
}

/// A path parameter set by API Gateway (or the local router).
pub fn path_param(req: &Request, name: &str) -> Option<String> {
    req.path_parameters_ref().and_then(|p| p.first(name)).map(str::to_owned)
}

/// A query parameter from the request URI (API Gateway and the runner both keep the query there).
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_owned())
    })
}

/// An optional non-negative integer query parameter within `min..=max`.
pub fn query_u64(req: &Request, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    let Some(raw) = query_param(req, name) else { return Ok(None) };
    let invalid = || ApiError::Validation(format!("{name} must be an integer from {min} to {max}"));
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let v: u64 = raw.parse().map_err(|_| invalid())?;
    if v < min || v > max {
        return Err(invalid());
    }
    Ok(Some(v))
}
