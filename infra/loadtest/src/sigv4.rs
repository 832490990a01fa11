//! AWS Signature Version 4 for an API Gateway whose methods use IAM authorization (service `execute-api`).
//!
//! Each request is signed just before it is sent, over its method, URI, headers and body, with the
//! credentials the command line read from the environment. The signature goes in headers (`Authorization`,
//! `X-Amz-Date`, and `X-Amz-Security-Token` for temporary credentials), as API Gateway expects.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::args::AwsCredentials;

/// The service name API Gateway's IAM authorization checks signatures for.
pub(crate) const SERVICE: &str = "execute-api";

/// Signs requests for one region with one set of credentials.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    identity: Identity,
    region: String,
}

impl Signer {
    pub(crate) fn new(region: &str, credentials: &AwsCredentials) -> Self {
        let identity = Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            credentials.session_token.clone(),
            None,
            "environment",
        )
        .into();
        Self { identity, region: region.to_owned() }
    }

    /// Adds the signature headers to `request`, whose body is `body`, as of `now`.
    pub(crate) fn sign<B>(
        &self,
        request: &mut http::Request<B>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing parameters: {e}"))?
            .into();
        let uri = request.uri().to_string();
        let headers =
            request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable =
            SignableRequest::new(request.method().as_str(), uri, headers, SignableBody::Bytes(body))
                .map_err(|e| format!("request: {e}"))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| format!("signature: {e}"))?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn credentials(session_token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(str::to_owned),
        }
    }

    fn request() -> http::Request<()> {
        http::Request::builder()
            .method("POST")
            .uri("https://abc123.execute-api.eu-west-1.amazonaws.com/prod/accounts/a-1/deposits")
            .header("content-type", "application/json")
            .header("idempotency-key", "k-1")
            .body(())
            .unwrap()
    }

    fn header<'a>(request: &'a http::Request<()>, name: &str) -> &'a str {
        request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// 2015-08-30T12:36:00Z, the date of AWS's published SigV4 examples.
    fn fixed_clock() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn a_signed_request_carries_a_credential_scope_for_execute_api_and_its_date() {
        let mut req = request();
        Signer::new("eu-west-1", &credentials(None))
            .sign(&mut req, br#"{"amount":1}"#, fixed_clock())
            .unwrap();
        assert_eq!(header(&req, "x-amz-date"), "20150830T123600Z");
        assert!(req.headers().get("x-amz-security-token").is_none());
        let authorization = header(&req, "authorization");
        let rest = authorization
            .strip_prefix(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/execute-api/aws4_request, ",
            )
            .unwrap_or_else(|| panic!("unexpected scope: {authorization}"));
        let (signed_headers, signature) = rest.split_once(", Signature=").unwrap();
        let signed: Vec<&str> = signed_headers.strip_prefix("SignedHeaders=").unwrap().split(';').collect();
        for name in ["content-type", "host", "idempotency-key", "x-amz-date"] {
            assert!(signed.contains(&name), "{name} not signed: {signed:?}");
        }
        assert_eq!(signature.len(), 64);
        assert!(signature.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{signature}");
    }

    #[test]
    fn the_signature_covers_the_body_the_time_and_the_region() {
        let signature = |region: &str, body: &[u8], at: SystemTime| {
            let mut req = request();
            Signer::new(region, &credentials(None)).sign(&mut req, body, at).unwrap();
            header(&req, "authorization").rsplit_once("Signature=").unwrap().1.to_owned()
        };
        let base = signature("eu-west-1", b"{}", fixed_clock());
        assert_eq!(base, signature("eu-west-1", b"{}", fixed_clock()), "deterministic for the same input");
        assert_ne!(base, signature("eu-west-1", b"{ }", fixed_clock()));
        assert_ne!(base, signature("eu-west-1", b"{}", fixed_clock() + Duration::from_secs(1)));
        assert_ne!(base, signature("us-east-1", b"{}", fixed_clock()));
    }

    #[test]
    fn temporary_credentials_send_and_sign_their_session_token() {
        let mut req = request();
        Signer::new("eu-west-1", &credentials(Some("session/token")))
            .sign(&mut req, b"", fixed_clock())
            .unwrap();
        assert_eq!(header(&req, "x-amz-security-token"), "session/token");
        assert!(header(&req, "authorization").contains("x-amz-security-token"), "{:?}", req.headers());
    }
}
