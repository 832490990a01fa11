//! Rebuilds of the read tables (accounts and transfer status) from the event store.
//!
//! A rebuild folds a stream from version 1 and replaces the stream's rows and checkpoint in one
//! write, so readers never see the account missing mid-rebuild, and running it twice gives the same
//! rows. Rebuild-all walks the account streams in id order, then the transfer streams, and records its
//! progress after every page, so a job can be resumed from its last stream.
//!
//! Rebuild-all works in bulk: a page of [`PAGE`] streams is split into [`WORKERS`] chunks that run
//! side by side, and each chunk reads its streams' events in one call
//! ([`EventStore::load_streams`]) and writes their rows in one call
//! ([`ReadModelStore::replace_all`]), which the Postgres store turns into one query and one
//! transaction of a few statements.
//!
//! [`EventStore::load_streams`]: corebank_store::EventStore::load_streams
//! [`ReadModelStore::replace_all`]: corebank_store::ReadModelStore::replace_all

use std::sync::Arc;

use corebank_domain::{AccountId, DomainError, StreamKind, TransferId};
use corebank_store::{ProjectionReplacement, RebuildJob, RebuildStatus, Stores};
use uuid::Uuid;

use crate::projection::project_all;
use crate::projector::Projector;
use crate::transfer_projection::project_transfer_all;
use crate::{AppError, Clock};

/// Streams per chunk: one read and one write each.
const CHUNK: usize = 125;
/// Chunks of a page rebuilt side by side.
const WORKERS: usize = 4;
/// Streams per page; the job records its progress after each.
const PAGE: usize = CHUNK * WORKERS;

/// Rebuilds read tables.
pub struct Rebuilder {
    stores: Stores,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Rebuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuilder").finish_non_exhaustive()
    }
}

impl Rebuilder {
    /// Builds the rebuilder.
    pub fn new(stores: Stores, clock: Arc<dyn Clock>) -> Self {
        Self { stores, clock }
    }

    /// Rebuilds one account; returns its version (the number of events replayed).
    #[tracing::instrument(name = "rebuild_account", skip(self), fields(account_id = %account_id))]
    pub async fn rebuild_account(&self, account_id: &AccountId) -> Result<u64, AppError> {
        let (_, version) = self.rebuild_accounts(&[account_id.stream_id()]).await?;
        Ok(version)
    }

    /// Rebuilds one transfer's status row; returns its version.
    #[tracing::instrument(name = "rebuild_transfer", skip(self), fields(transfer_id = %transfer_id))]
    pub async fn rebuild_transfer(&self, transfer_id: &TransferId) -> Result<u64, AppError> {
        let (_, version) = self.rebuild_transfers(&[transfer_id.stream_id()]).await?;
        Ok(version)
    }

    fn projector(&self) -> Projector {
        Projector::new(self.stores.events.clone(), self.stores.read_model.clone())
            .with_transfers(self.stores.transfers.clone())
    }

    /// Records a new rebuild-all job and returns it; run it with [`Rebuilder::run_job`].
    pub async fn create_job(&self) -> Result<RebuildJob, AppError> {
        let now = self.clock.now();
        let job = RebuildJob {
            rebuild_id: Uuid::new_v4().to_string(),
            status: RebuildStatus::Running,
            streams_rebuilt: 0,
            events_replayed: 0,
            last_stream_id: None,
            error: None,
            started_at: now,
            updated_at: now,
        };
        self.stores.rebuilds.put(job.clone()).await?;
        Ok(job)
    }

    /// A job's progress.
    pub async fn job(&self, rebuild_id: &str) -> Result<RebuildJob, AppError> {
        self.stores.rebuilds.get(rebuild_id).await?.ok_or(AppError::RebuildNotFound)
    }

    /// Runs (or resumes) a rebuild-all job to the end, recording progress after every page.
    #[tracing::instrument(name = "rebuild_all", skip(self, job), fields(rebuild_id = %job.rebuild_id))]
    pub async fn run_job(&self, mut job: RebuildJob) -> RebuildJob {
        loop {
            match self.run_page(&mut job).await {
                Ok(true) => {}
                Ok(false) => {
                    job.status = RebuildStatus::Completed;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "rebuild-all failed");
                    job.status = RebuildStatus::Failed;
                    job.error = Some(e.to_string());
                    break;
                }
            }
            job.updated_at = self.clock.now();
            if let Err(e) = self.stores.rebuilds.put(job.clone()).await {
                tracing::warn!(error = %e, "could not record rebuild progress");
            }
        }
        job.updated_at = self.clock.now();
        if let Err(e) = self.stores.rebuilds.put(job.clone()).await {
            tracing::warn!(error = %e, "could not record rebuild result");
        }
        job
    }

    /// One page of streams: accounts first, then transfers (every account stream id sorts before
    /// every transfer stream id, so the job's cursor says which phase it is in). `Ok(false)` when
    /// done.
    async fn run_page(&self, job: &mut RebuildJob) -> Result<bool, AppError> {
        let cursor = job.last_stream_id.clone();
        let in_transfers = cursor.as_deref().and_then(StreamKind::of) == Some(StreamKind::Transfer);
        if !in_transfers {
            let accounts = StreamKind::Account.prefix();
            let streams = self.stores.events.list_streams(accounts, cursor.as_deref(), PAGE).await?;
            let chunks = streams.chunks(CHUNK).map(|chunk| self.rebuild_accounts(chunk));
            record_page(job, &streams, futures_util::future::try_join_all(chunks).await?);
            if streams.len() == PAGE {
                return Ok(true);
            }
        }
        let after = if in_transfers { cursor.as_deref() } else { None };
        let streams = self.stores.events.list_streams(StreamKind::Transfer.prefix(), after, PAGE).await?;
        let chunks = streams.chunks(CHUNK).map(|chunk| self.rebuild_transfers(chunk));
        record_page(job, &streams, futures_util::future::try_join_all(chunks).await?);
        Ok(streams.len() == PAGE)
    }

    /// Rebuilds a chunk of account streams with one read and one write; returns the streams rebuilt
    /// and the events replayed.
    async fn rebuild_accounts(&self, stream_ids: &[String]) -> Result<(u64, u64), AppError> {
        let from_start: Vec<(String, u64)> = stream_ids
            .iter()
            .filter(|id| AccountId::from_stream_id(id).is_some())
            .map(|id| (id.clone(), 0))
            .collect();
        let loaded = self.stores.events.load_streams(&from_start).await?;
        let mut replacements = Vec::with_capacity(loaded.len());
        let mut rebuilt = Vec::with_capacity(loaded.len());
        let mut replayed = 0;
        for ((stream_id, _), events) in from_start.into_iter().zip(loaded) {
            let Some(account_id) = AccountId::from_stream_id(&stream_id) else { continue };
            let Some(version) = events.last().map(|e| e.version) else {
                return Err(AppError::Domain(DomainError::AccountNotFound));
            };
            let (summary, statement) = project_all(None, &events)?;
            replacements.push(ProjectionReplacement {
                stream_id: stream_id.clone(),
                account_id: account_id.as_str().to_owned(),
                checkpoint: version,
                summary,
                statement,
            });
            rebuilt.push((stream_id, version));
            replayed += version;
        }
        self.stores.read_model.replace_all(replacements).await?;
        self.catch_up(&rebuilt).await?;
        Ok((count(&rebuilt), replayed))
    }

    /// Rebuilds a chunk of transfer streams with one read; returns the streams rebuilt and the events
    /// replayed.
    async fn rebuild_transfers(&self, stream_ids: &[String]) -> Result<(u64, u64), AppError> {
        let from_start: Vec<(String, u64)> = stream_ids
            .iter()
            .filter(|id| TransferId::from_stream_id(id).is_some())
            .map(|id| (id.clone(), 0))
            .collect();
        let loaded = self.stores.events.load_streams(&from_start).await?;
        let mut rebuilt = Vec::with_capacity(loaded.len());
        let mut replayed = 0;
        for ((stream_id, _), events) in from_start.into_iter().zip(loaded) {
            let Some(status) = project_transfer_all(None, &events)? else {
                return Err(AppError::Domain(DomainError::TransferNotFound));
            };
            let version = status.version;
            self.stores.transfers.replace(status).await?;
            rebuilt.push((stream_id, version));
            replayed += version;
        }
        self.catch_up(&rebuilt).await?;
        Ok((count(&rebuilt), replayed))
    }

    /// The live projector may have applied events appended after a rebuild's read; the replacement
    /// just took the checkpoint back to the version read. Catches up from the store (one read for the
    /// chunk) so the read side never stays behind what it had already shown.
    async fn catch_up(&self, rebuilt: &[(String, u64)]) -> Result<(), AppError> {
        if rebuilt.is_empty() {
            return Ok(());
        }
        let tails = self.stores.events.load_streams(rebuilt).await?;
        let projector = self.projector();
        for last in tails.iter().filter_map(|tail| tail.last()) {
            projector.handle(last).await?;
        }
        Ok(())
    }
}

fn count<T>(items: &[T]) -> u64 {
    u64::try_from(items.len()).unwrap_or(u64::MAX)
}

/// Moves a job past a page of streams, given each chunk's streams rebuilt and events replayed.
fn record_page(job: &mut RebuildJob, streams: &[String], chunks: Vec<(u64, u64)>) {
    for (rebuilt, replayed) in chunks {
        job.streams_rebuilt += rebuilt;
        job.events_replayed += replayed;
    }
    if let Some(last) = streams.last() {
        job.last_stream_id = Some(last.clone());
    }
}

impl Rebuilder {
    /// Handles a rebuild trigger: a direct invoke or an EventBridge event whose `detail` carries the
    /// request. `{"accountId": "acc-1"}` rebuilds one account; `{"transferId": "t-1"}` one transfer;
    /// `{"all": true}` runs a new rebuild-all job to the end; `{"rebuildId": "..."}` resumes a recorded
    /// job from its last stream.
    pub async fn handle_event(&self, event: &serde_json::Value) -> Result<serde_json::Value, AppError> {
        let request = event.get("detail").filter(|d| d.is_object()).unwrap_or(event);
        if let Some(id) = request.get("transferId").and_then(serde_json::Value::as_str) {
            let transfer_id =
                TransferId::parse(id).map_err(|e| AppError::Corrupt(format!("rebuild request: {e}")))?;
            let version = self.rebuild_transfer(&transfer_id).await?;
            return Ok(serde_json::json!({"transferId": id, "version": version}));
        }
        if let Some(id) = request.get("accountId").and_then(serde_json::Value::as_str) {
            let account_id =
                AccountId::parse(id).map_err(|e| AppError::Corrupt(format!("rebuild request: {e}")))?;
            let version = self.rebuild_account(&account_id).await?;
            return Ok(serde_json::json!({"accountId": id, "version": version}));
        }
        let job = match request.get("rebuildId").and_then(serde_json::Value::as_str) {
            Some(id) => {
                let mut job = self.job(id).await?;
                job.status = RebuildStatus::Running;
                job.error = None;
                job
            }
            None if request.get("all").and_then(serde_json::Value::as_bool) == Some(true) => {
                self.create_job().await?
            }
            None => {
                return Err(AppError::Corrupt(
                    "rebuild request needs accountId, transferId, all: true, or rebuildId".to_owned(),
                ));
            }
        };
        let job = self.run_job(job).await;
        serde_json::to_value(&job).map_err(|e| AppError::Corrupt(e.to_string()))
    }
}
