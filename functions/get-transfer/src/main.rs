//! Lambda function for `GET /transfers/{id}`: wiring only; the handler lives in `corebank_api::handlers`.

corebank_wiring::http_function!(corebank_api::handlers::get_transfer);
