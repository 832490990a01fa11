//! Lambda function for `POST /accounts`: wiring only; the handler lives in `corebank_api::handlers`.

corebank_wiring::http_function!(corebank_api::handlers::create_account);
