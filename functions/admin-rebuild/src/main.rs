//! Lambda function for the admin routes (`/admin/projections`, `/admin/parked`): wiring only. API Gateway names
//! the matched resource; `dispatch_resource` calls that route's handler.

corebank_wiring::http_function!(corebank_api::router::dispatch_resource);
