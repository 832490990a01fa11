//! The account read tables on DynamoDB: `account_summary`, `account_statement` and
//! `projection_checkpoints`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, TransactWriteItem, WriteRequest};

use super::codec::{self, Item, n, s};
use super::{
    Condition, DynamoTables, TRANSACTION_ACTIONS_MAX, TRANSACTION_SIZE_BYTES_MAX, batch_write, build_error,
    check_action, check_item_size, delete_action, put_action, sdk_error, transact,
};
use crate::{
    AccountSummary, ProjectionChange, ProjectionReplacement, ReadModelStore, StatementEntry, StoreError,
};

/// Page size of statement queries.
const QUERY_PAGE_ITEMS_MAX: usize = 1_000;

/// Room kept in a transaction's byte budget for the checkpoint `ConditionCheck` of an early chunk.
const CHECK_BYTES_RESERVED: usize = 1_024;

/// The account read tables on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoReadModelStore {
    client: Client,
    tables: Arc<DynamoTables>,
}

/// The checkpoint item is at `expected` (an absent item counts as 0).
fn at_checkpoint(expected: u64) -> Condition {
    let expression = if expected == 0 {
        "attribute_not_exists(stream_id) OR #checkpoint = :expected"
    } else {
        "#checkpoint = :expected"
    };
    Condition::new(expression).name("#checkpoint", "checkpoint").value(":expected", n(expected))
}

fn checkpoint_key(stream_id: &str) -> Item {
    Item::from([("stream_id".to_owned(), s(stream_id))])
}

fn checkpoint_item(stream_id: &str, checkpoint: u64) -> Item {
    Item::from([("stream_id".to_owned(), s(stream_id)), ("checkpoint".to_owned(), n(checkpoint))])
}

/// Statement rows by version, the last of equal versions winning as it does in the memory adapter.
fn rows_by_version(entries: &[StatementEntry]) -> BTreeMap<u64, &StatementEntry> {
    entries.iter().map(|e| (e.stream_version, e)).collect()
}

/// Splits rows of the given sizes into early chunks, each written with a checkpoint check, and the tail
/// written together with the actions of the final transaction (`final_actions`, `final_bytes`). Every
/// chunk keeps within DynamoDB's action and byte limits; the tail is the longest suffix that fits.
fn split_rows(
    sizes: &[usize],
    final_actions: usize,
    final_bytes: usize,
) -> (Vec<Range<usize>>, Range<usize>) {
    let mut tail_start = sizes.len();
    let (mut actions, mut bytes) = (final_actions, final_bytes);
    while tail_start > 0
        && actions < TRANSACTION_ACTIONS_MAX
        && bytes + sizes[tail_start - 1] <= TRANSACTION_SIZE_BYTES_MAX
    {
        tail_start -= 1;
        actions += 1;
        bytes += sizes[tail_start];
    }
    let mut early = Vec::new();
    let mut start = 0;
    while start < tail_start {
        let (mut end, mut bytes) = (start, CHECK_BYTES_RESERVED);
        while end < tail_start
            && end - start < TRANSACTION_ACTIONS_MAX - 1
            && bytes + sizes[end] <= TRANSACTION_SIZE_BYTES_MAX
        {
            bytes += sizes[end];
            end += 1;
        }
        early.push(start..end);
        start = end;
    }
    (early, tail_start..sizes.len())
}

impl DynamoReadModelStore {
    /// An adapter over a ready client and the deployment's tables.
    pub fn new(client: Client, tables: Arc<DynamoTables>) -> Self {
        Self { client, tables }
    }

    /// Runs one transaction of a change; a failed condition means the checkpoint moved.
    async fn run(
        &self,
        actions: Vec<TransactWriteItem>,
        stream_id: &str,
        expected: u64,
    ) -> Result<(), StoreError> {
        match transact(&self.client, actions).await? {
            Ok(()) => Ok(()),
            Err(cancelled) if cancelled.any_failed() => {
                // The error must name the checkpoint found, so a failed read is reported as itself.
                let actual = self.checkpoint(stream_id).await?;
                Err(StoreError::CheckpointMoved { stream_id: stream_id.to_owned(), expected, actual })
            }
            Err(cancelled) => Err(cancelled.into_error()),
        }
    }

    /// The versions of every statement row of an account.
    async fn statement_versions(&self, account_id: &str) -> Result<Vec<u64>, StoreError> {
        let mut versions = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.account_statement)
                .key_condition_expression("account_id = :a")
                .expression_attribute_values(":a", s(account_id))
                .projection_expression("stream_version")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in output.items() {
                versions.push(codec::get_n(item, "stream_version")?);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(versions);
            }
        }
    }
}

#[async_trait]
impl ReadModelStore for DynamoReadModelStore {
    async fn checkpoint(&self, stream_id: &str) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.projection_checkpoints)
            .set_key(Some(checkpoint_key(stream_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.as_ref().map_or(Ok(0), |item| codec::get_n(item, "checkpoint"))
    }

    async fn apply(&self, change: ProjectionChange) -> Result<(), StoreError> {
        let expected = change.expected_checkpoint;
        let at_expected = at_checkpoint(expected);
        let mut rows = Vec::new();
        let mut sizes = Vec::new();
        for entry in rows_by_version(&change.statement).into_values() {
            let item = codec::statement_item(entry);
            sizes.push(check_item_size(&item)?);
            rows.push(put_action(&self.tables.account_statement, item, None)?);
        }
        let mut finals = Vec::with_capacity(2);
        let mut final_bytes = 0;
        if let Some(summary) = &change.summary {
            let item = codec::summary_item(summary);
            final_bytes += check_item_size(&item)?;
            finals.push(put_action(&self.tables.account_summary, item, None)?);
        }
        let item = checkpoint_item(&change.stream_id, change.new_checkpoint);
        final_bytes += check_item_size(&item)?;
        finals.push(put_action(&self.tables.projection_checkpoints, item, Some(&at_expected))?);

        let (early, tail) = split_rows(&sizes, finals.len(), final_bytes);
        for chunk in early {
            let mut actions = rows[chunk].to_vec();
            actions.push(check_action(
                &self.tables.projection_checkpoints,
                checkpoint_key(&change.stream_id),
                &at_expected,
            )?);
            self.run(actions, &change.stream_id, expected).await?;
        }
        let mut actions = rows[tail].to_vec();
        actions.extend(finals);
        self.run(actions, &change.stream_id, expected).await
    }

    async fn replace(&self, replacement: ProjectionReplacement) -> Result<(), StoreError> {
        let foreign = replacement
            .statement
            .iter()
            .map(|e| &e.account_id)
            .chain(replacement.summary.iter().map(|s| &s.account_id))
            .find(|a| **a != replacement.account_id);
        if let Some(other) = foreign {
            return Err(StoreError::Invalid(format!(
                "replacement of account {} holds a row of account {other}",
                replacement.account_id
            )));
        }
        let rows = rows_by_version(&replacement.statement);
        let mut puts = Vec::with_capacity(rows.len());
        for entry in rows.values() {
            let item = codec::statement_item(entry);
            check_item_size(&item)?;
            let put = PutRequest::builder().set_item(Some(item)).build().map_err(build_error)?;
            puts.push(WriteRequest::builder().put_request(put).build());
        }
        let stale: BTreeSet<u64> = self
            .statement_versions(&replacement.account_id)
            .await?
            .into_iter()
            .filter(|v| !rows.contains_key(v))
            .collect();
        let mut deletes = Vec::with_capacity(stale.len());
        for version in stale {
            let key = Item::from([
                ("account_id".to_owned(), s(&replacement.account_id)),
                ("stream_version".to_owned(), n(version)),
            ]);
            let delete = DeleteRequest::builder().set_key(Some(key)).build().map_err(build_error)?;
            deletes.push(WriteRequest::builder().delete_request(delete).build());
        }
        batch_write(&self.client, &self.tables.account_statement, puts).await?;
        batch_write(&self.client, &self.tables.account_statement, deletes).await?;

        let summary = match &replacement.summary {
            Some(summary) => put_action(&self.tables.account_summary, codec::summary_item(summary), None)?,
            None => delete_action(
                &self.tables.account_summary,
                Item::from([("account_id".to_owned(), s(&replacement.account_id))]),
            )?,
        };
        let checkpoint = put_action(
            &self.tables.projection_checkpoints,
            checkpoint_item(&replacement.stream_id, replacement.checkpoint),
            None,
        )?;
        match transact(&self.client, vec![summary, checkpoint]).await? {
            Ok(()) => Ok(()),
            Err(cancelled) => Err(cancelled.into_error()),
        }
    }

    async fn summary(&self, account_id: &str) -> Result<Option<AccountSummary>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.account_summary)
            .key("account_id", s(account_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.as_ref().map(codec::summary_from_item).transpose()
    }

    async fn statement(
        &self,
        account_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<StatementEntry>, StoreError> {
        let mut rows = Vec::new();
        if limit == 0 {
            return Ok(rows);
        }
        // DynamoDB has no offset: the rows before it are read and skipped, one key range in order.
        let wanted = offset.saturating_add(limit);
        let mut seen = 0_usize;
        let mut start = None;
        loop {
            let page = (wanted - seen).min(QUERY_PAGE_ITEMS_MAX);
            let output = self
                .client
                .query()
                .table_name(&self.tables.account_statement)
                .key_condition_expression("account_id = :a")
                .expression_attribute_values(":a", s(account_id))
                .consistent_read(true)
                .limit(i32::try_from(page).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in output.items() {
                if seen >= offset {
                    rows.push(codec::statement_from_item(item)?);
                }
                seen += 1;
                if rows.len() == limit {
                    return Ok(rows);
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(rows);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_change_is_one_transaction() {
        let (early, tail) = split_rows(&[100; 98], 2, 200);
        assert!(early.is_empty());
        assert_eq!(tail, 0..98);
    }

    #[test]
    fn a_change_beyond_the_action_limit_writes_leading_rows_first() {
        let (early, tail) = split_rows(&[100; 250], 2, 200);
        assert_eq!(early, vec![0..99, 99..152]);
        assert_eq!(tail, 152..250);
        for chunk in &early {
            assert!(chunk.len() < TRANSACTION_ACTIONS_MAX, "room for the checkpoint check");
        }
        assert_eq!(tail.len() + 2, TRANSACTION_ACTIONS_MAX);
    }

    #[test]
    fn a_change_beyond_the_byte_limit_is_split_by_bytes() {
        let big = 400 * 1024;
        let (early, tail) = split_rows(&[big; 30], 2, 1_000);
        let fits = |r: &Range<usize>, extra: usize| r.len() * big + extra <= TRANSACTION_SIZE_BYTES_MAX;
        assert!(fits(&tail, 1_000));
        assert!(early.iter().all(|r| fits(r, CHECK_BYTES_RESERVED) && !r.is_empty()));
        let covered: usize = early.iter().map(Range::len).sum::<usize>() + tail.len();
        assert_eq!(covered, 30);
    }

    #[test]
    fn no_rows_is_just_the_final_transaction() {
        let (early, tail) = split_rows(&[], 2, 200);
        assert!(early.is_empty());
        assert!(tail.is_empty());
    }
}
