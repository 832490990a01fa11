//! Postgres wiring: a pool from the environment and the Postgres adapters over it.

use corebank_store::Stores;

use crate::WiringError;

/// The Postgres stores named by the environment.
pub async fn stores_from_env() -> Result<Stores, WiringError> {
    Err(WiringError::Setup("postgres wiring is not written yet".to_owned()))
}
