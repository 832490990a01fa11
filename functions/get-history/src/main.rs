//! Lambda function for `GET /accounts/{id}/history`: wiring only; the handler lives in `corebank_api::handlers`.

corebank_wiring::http_function!(corebank_api::handlers::get_history);
