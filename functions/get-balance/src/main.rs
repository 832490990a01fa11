//! Lambda function for `GET /accounts/{id}/balance`: wiring only; the handler lives in `corebank_api::handlers`.

use std::convert::Infallible;

use corebank_api::handlers;
use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let deps = corebank_wiring::http_deps().await?;
    let deps = &deps;
    run(service_fn(
        move |req: Request| async move { Ok::<_, Infallible>(handlers::get_balance(deps, req).await) },
    ))
    .await
}
