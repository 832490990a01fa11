//! Lambda function for `POST /transfers`: wiring only; the handler lives in `corebank_api::handlers`.

corebank_wiring::http_function!(corebank_api::handlers::start_transfer);
