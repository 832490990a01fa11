//! Lambda function for the admin routes under `/admin/projections`: wiring only. API Gateway names
//! the matched resource; `dispatch_resource` calls that route's handler.

corebank_wiring::http_function!(corebank_api::router::dispatch_resource);
