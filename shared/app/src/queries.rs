//! Reads. They are served from the read tables; when those are behind what the client asks for
//! (`minVersion`) or have not seen the account yet, the answer is folded from the event store, so
//! it is immediate and consistent.

use corebank_domain::{AccountId, DomainError, TransferId};
use corebank_store::{AccountSummary, StatementEntry, Stores, TransferStatus};

use crate::AppError;
use crate::projection::project_all;
use crate::transfer_projection::project_transfer_all;

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The account's summary at the page's version (for the currency).
    pub summary: AccountSummary,
    /// The entries, oldest first.
    pub entries: Vec<StatementEntry>,
}

/// Read use cases.
pub struct Queries {
    stores: Stores,
}

impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries").finish_non_exhaustive()
    }
}

impl Queries {
    /// Builds the queries over the stores.
    pub fn new(stores: Stores) -> Self {
        Self { stores }
    }

    /// The summary of an account at `min_version` or later.
    pub async fn summary(
        &self,
        account_id: &AccountId,
        min_version: Option<u64>,
    ) -> Result<AccountSummary, AppError> {
        if let Some(s) = self.stores.read_model.summary(account_id.as_str()).await?
            && min_version.is_none_or(|m| s.version >= m)
        {
            return Ok(s);
        }
        let (summary, _) = self.fold_from_store(account_id, min_version).await?;
        Ok(summary)
    }

    /// History entries of an account, oldest first, at `min_version` or later.
    pub async fn history(
        &self,
        account_id: &AccountId,
        offset: usize,
        limit: usize,
        min_version: Option<u64>,
    ) -> Result<HistoryPage, AppError> {
        if let Some(summary) = self.stores.read_model.summary(account_id.as_str()).await?
            && min_version.is_none_or(|m| summary.version >= m)
        {
            let entries = self.stores.read_model.statement(account_id.as_str(), offset, limit).await?;
            return Ok(HistoryPage { summary, entries });
        }
        let (summary, entries) = self.fold_from_store(account_id, min_version).await?;
        let entries = entries.into_iter().skip(offset).take(limit).collect();
        Ok(HistoryPage { summary, entries })
    }

    /// The status of a transfer at `min_version` or later: from `transfer_status`, else folded from
    /// the event store (a transfer the projection has not seen yet is still found).
    pub async fn transfer(
        &self,
        transfer_id: &TransferId,
        min_version: Option<u64>,
    ) -> Result<TransferStatus, AppError> {
        if let Some(s) = self.stores.transfers.get(transfer_id.as_str()).await?
            && min_version.is_none_or(|m| s.version >= m)
        {
            return Ok(s);
        }
        let events = self.stores.events.load_stream(&transfer_id.stream_id(), 0).await?;
        let current = events.last().map_or(0, |e| e.version);
        if current == 0 {
            return Err(AppError::Domain(DomainError::TransferNotFound));
        }
        if let Some(requested) = min_version
            && requested > current
        {
            return Err(AppError::VersionNotReached { requested, current });
        }
        project_transfer_all(None, &events)?.ok_or(AppError::Domain(DomainError::TransferNotFound))
    }

    async fn fold_from_store(
        &self,
        account_id: &AccountId,
        min_version: Option<u64>,
    ) -> Result<(AccountSummary, Vec<StatementEntry>), AppError> {
        let events = self.stores.events.load_stream(&account_id.stream_id(), 0).await?;
        let current = events.last().map_or(0, |e| e.version);
        if current == 0 {
            return Err(AppError::Domain(DomainError::AccountNotFound));
        }
        if let Some(requested) = min_version
            && requested > current
        {
            return Err(AppError::VersionNotReached { requested, current });
        }
        let (summary, entries) = project_all(None, &events)?;
        let summary = summary.ok_or(AppError::Domain(DomainError::AccountNotFound))?;
        Ok((summary, entries))
    }
}
