//! Lambda function: the API's authorizer. Wiring only; the decision is `authorizer::authorize`.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequest;
use corebank_auth::fetch::UrlKeys;
use corebank_auth::settings::Settings;
use corebank_auth::{Verifier, jwt::KeySource};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    corebank_emf::init();
    let settings = Settings::from_env()?;
    let source: Arc<dyn KeySource> = Arc::new(UrlKeys::new(&settings.jwks_url)?);
    let verifier = Arc::new(Verifier::new(settings.verifier, source));
    // The key set is read beside the first invocation rather than before it, so a cold start does
    // not wait for the issuer; the first token waits only for what is left of that read.
    let prefetch = verifier.clone();
    tokio::spawn(async move {
        if let Err(e) = prefetch.load().await {
            tracing::warn!(error = %e, "reading the issuer's key set failed; it is read again on demand");
        }
    });
    let verifier = &verifier;
    run(service_fn(move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequest>| {
        corebank_emf::flushed(async move { authorizer::authorize(verifier, &event.payload).await })
    }))
    .await
}
