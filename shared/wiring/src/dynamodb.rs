//! DynamoDB wiring: an SDK client from the environment and the DynamoDB adapters over it.

use corebank_store::Stores;

use crate::WiringError;

/// The DynamoDB stores named by the environment.
pub async fn stores_from_env() -> Result<Stores, WiringError> {
    Err(WiringError::Setup("dynamodb wiring is not written yet".to_owned()))
}
