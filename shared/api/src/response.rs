//! HTTP responses: a JSON body with its status, content type and request id header. Used by the
//! handlers, by the error mapping and for replaying stored responses.

use corebank_store::StoredResponse;
use http::{HeaderValue, StatusCode};
use lambda_http::{Body, Response};

/// A JSON response with the request id header.
pub fn json_response(status: StatusCode, body: String, request_id: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    response
}

/// The error code of a stored rejection, carried on its response (an extension, never sent) so that
/// the metrics count it without reading the body.
#[derive(Debug, Clone)]
pub struct StoredCode(pub String);

/// Replays or sends a stored response.
pub fn stored_response(stored: &StoredResponse, request_id: &str) -> Response<Body> {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, stored.body.clone(), request_id);
    if let Some(code) = &stored.code {
        response.extensions_mut().insert(StoredCode(code.clone()));
    }
    response
}
