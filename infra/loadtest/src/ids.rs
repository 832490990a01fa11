//! `--ids PATH`: the ids of the run's accounts and transfers, written when the load ends, so that a
//! caller can check the server's state after the audit (`infra/scripts/fault-soak.sh` reads every
//! account's held amount and every transfer's status with them).

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::accounts::{Account, TransferRecord};
use crate::error::Error;

/// One transfer the load submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransferIds {
    pub(crate) id: String,
    pub(crate) source: String,
    pub(crate) destination: String,
    /// `true` when the server answered 202; `false` when the reply was lost or a 5xx (the transfer
    /// may or may not exist).
    pub(crate) accepted: bool,
}

/// The document `--ids` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Ids {
    pub(crate) run_id: String,
    pub(crate) accounts: Vec<String>,
    pub(crate) transfers: Vec<TransferIds>,
}

impl Ids {
    pub(crate) fn of(run_id: &str, accounts: &[Arc<Account>], transfers: &[TransferRecord]) -> Self {
        Self {
            run_id: run_id.to_owned(),
            accounts: accounts.iter().map(|a| a.id.clone()).collect(),
            transfers: transfers
                .iter()
                .map(|t| TransferIds {
                    id: t.id.clone(),
                    source: t.source.id.clone(),
                    destination: t.destination.id.clone(),
                    accepted: t.accepted,
                })
                .collect(),
        }
    }

    pub(crate) fn write(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).map_err(|source| Error::Write { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_account_and_transfer_with_its_legs_and_whether_it_was_accepted() {
        let a = Arc::new(Account::new("lt-run-0".to_owned()));
        let b = Arc::new(Account::new("lt-run-1".to_owned()));
        let transfers = vec![
            TransferRecord {
                id: "t-1".to_owned(),
                source: Arc::clone(&a),
                destination: Arc::clone(&b),
                minor: 100,
                accepted: true,
            },
            TransferRecord {
                id: "t-2".to_owned(),
                source: Arc::clone(&b),
                destination: Arc::clone(&a),
                minor: 5,
                accepted: false,
            },
        ];
        let ids = Ids::of("run", &[Arc::clone(&a), Arc::clone(&b)], &transfers);
        assert_eq!(
            serde_json::to_value(&ids).unwrap(),
            serde_json::json!({
                "runId": "run",
                "accounts": ["lt-run-0", "lt-run-1"],
                "transfers": [
                    {"id": "t-1", "source": "lt-run-0", "destination": "lt-run-1", "accepted": true},
                    {"id": "t-2", "source": "lt-run-1", "destination": "lt-run-0", "accepted": false},
                ],
            })
        );
    }

    #[test]
    fn writes_the_document_and_names_the_path_when_it_cannot() {
        let dir = std::env::temp_dir().join(format!("corebank-loadtest-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ids.json");
        let ids = Ids { run_id: "r".to_owned(), accounts: vec!["x".to_owned()], transfers: vec![] };
        ids.write(&path).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, serde_json::json!({"runId": "r", "accounts": ["x"], "transfers": []}));
        let missing = dir.join("no-such-dir").join("ids.json");
        let err = ids.write(&missing).unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
