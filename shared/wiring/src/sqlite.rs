//! The embedded durable store from the environment (`STORE_KIND=sqlite`, the local runner's durable mode).
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `DATA_DIR` | `./corebank-data` | the directory of the store's file (`corebank.sqlite3`), created on first start |
//! | `SQLITE_SYNCHRONOUS` | `normal` | `normal`: an acknowledged write survives a crash of the process; `full`: it also survives a power loss (each group commit waits for the disk) |

use std::path::PathBuf;

use corebank_app::ConfigError;
use corebank_store::sqlite::{SqliteSettings, SqliteStores, Synchronous};

use crate::WiringError;

/// The data directory when `DATA_DIR` is not set: beside the working directory.
pub const DEFAULT_DATA_DIR: &str = "corebank-data";

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "corebank.sqlite3";

/// The settings named through `lookup` (a variable name to its value); blank values count as unset.
pub fn settings_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SqliteSettings, ConfigError> {
    let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned()));
    let synchronous = match get("SQLITE_SYNCHRONOUS").as_deref() {
        None | Some("normal") => Synchronous::Normal,
        Some("full") => Synchronous::Full,
        Some(other) => {
            return Err(ConfigError {
                name: "SQLITE_SYNCHRONOUS".to_owned(),
                reason: format!("{other:?} is neither normal nor full"),
            });
        }
    };
    let mut settings = SqliteSettings::new(dir.join(FILE_NAME));
    settings.synchronous = synchronous;
    Ok(settings)
}

/// Opens (creating it when missing) the store named by the process environment.
pub fn open_from_env() -> Result<SqliteStores, WiringError> {
    let settings = settings_from_lookup(|name| std::env::var(name).ok())?;
    open(settings)
}

/// Opens (creating it when missing) the store of `settings`.
pub fn open(settings: SqliteSettings) -> Result<SqliteStores, WiringError> {
    let path = settings.path.clone();
    let stores = corebank_store::sqlite::open(settings)
        .map_err(|e| WiringError::Setup(format!("{}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "sqlite store open");
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_file_lives_in_the_data_directory_beside_the_working_directory_by_default() {
        let settings = settings_from_lookup(lookup(&[])).unwrap();
        assert_eq!(settings.path, PathBuf::from("corebank-data").join("corebank.sqlite3"));
        assert_eq!(settings.synchronous, Synchronous::Normal);
    }

    #[test]
    fn data_dir_and_synchronous_are_read_and_a_bad_level_names_its_variable() {
        let settings =
            settings_from_lookup(lookup(&[("DATA_DIR", "/tmp/bank"), ("SQLITE_SYNCHRONOUS", "full")]))
                .unwrap();
        assert_eq!(settings.path, PathBuf::from("/tmp/bank/corebank.sqlite3"));
        assert_eq!(settings.synchronous, Synchronous::Full);
        let err = settings_from_lookup(lookup(&[("SQLITE_SYNCHRONOUS", "off")])).unwrap_err();
        assert_eq!(err.name, "SQLITE_SYNCHRONOUS");
    }
}
