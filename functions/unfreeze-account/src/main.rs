//! Lambda function for `POST /accounts/{id}/unfreeze`: wiring only; the handler lives in `corebank_api::handlers`.

corebank_wiring::http_function!(corebank_api::handlers::unfreeze);
