//! Lambda function for the admin routes under `/admin/projections`: wiring only. API Gateway names
//! the matched resource; `dispatch_resource` calls that route's handler.

use std::convert::Infallible;

use lambda_http::{Error, Request, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let deps = corebank_wiring::http_deps().await?;
    let deps = &deps;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(corebank_api::router::dispatch_resource(deps, req).await)
    }))
    .await
}
