//! The adapter contract suite against the SQLite adapters, on a fresh database file per test.
//!
//! Each file lies in the system's temporary directory under a random name, and is removed with its
//! WAL, shared-memory and lock files when the test drops its stores (a test that crashes the process
//! leaves them there).

mod contract;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use corebank_store::sqlite::{self, SqliteSettings};
use corebank_store::{RebuildJob, RebuildJobStore, StoreError, Stores};

/// Stores over a new file.
async fn fresh() -> Stores {
    let path = std::env::temp_dir().join(format!("corebank-contract-{}.sqlite", uuid::Uuid::new_v4()));
    let mut stores = match sqlite::open(SqliteSettings::new(&path)) {
        Ok(stores) => stores.stores(),
        Err(e) => panic!("a fresh sqlite file at {} does not open: {e}", path.display()),
    };
    // `rebuilds` is the last field of `Stores`, so it is dropped last: the wrapper first lets go of
    // its port (the last handle, which closes the database) and then removes the files.
    stores.rebuilds = Arc::new(RemovesFiles { inner: Some(stores.rebuilds.clone()), path });
    stores
}

/// A rebuild-job port that deletes the database files once it is dropped.
struct RemovesFiles {
    inner: Option<Arc<dyn RebuildJobStore>>,
    path: PathBuf,
}

impl RemovesFiles {
    fn inner(&self) -> Result<&Arc<dyn RebuildJobStore>, StoreError> {
        self.inner.as_ref().ok_or_else(|| StoreError::Unavailable("dropped".to_owned()))
    }
}

#[async_trait]
impl RebuildJobStore for RemovesFiles {
    async fn put(&self, job: RebuildJob) -> Result<(), StoreError> {
        self.inner()?.put(job).await
    }

    async fn get(&self, rebuild_id: &str) -> Result<Option<RebuildJob>, StoreError> {
        self.inner()?.get(rebuild_id).await
    }
}

impl Drop for RemovesFiles {
    fn drop(&mut self) {
        self.inner.take();
        for suffix in ["", "-wal", "-shm", "-lock"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

contract_suite!(fresh());
