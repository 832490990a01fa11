//! The versions this process committed last, per stream: lets a load that already holds a stream's
//! state up to its head skip the read.
//!
//! The command engine keeps aggregate states in memory and, before every command, asks for the events
//! after the version it holds. Nearly always there are none, because this process wrote the stream's
//! last events itself. [`StreamHeads`] remembers the version each commit of this process left a stream
//! at, so such a load is answered without a trip to a read connection.
//!
//! It only ever saves a read; it never decides anything. A version is recorded after its commit, so a
//! load running just before that record may still read from the file, and a load that is told "nothing
//! newer" while a commit is landing is no staler than a read that started a moment earlier: the
//! append's version check in SQL refuses a decision taken on an old state. The map is bounded: a full
//! shard is emptied, and a stream it no longer knows is read from the file again.

use std::collections::HashMap;

use super::shards::Shards;

/// Streams one shard remembers before it starts again empty (about 2 million streams in all).
const PER_SHARD_MAX: usize = if cfg!(test) { 64 } else { 32 * 1024 };

/// Each stream's version as last committed by this process.
#[derive(Debug, Default)]
pub(crate) struct StreamHeads {
    shards: Shards<HashMap<String, u64>>,
}

impl StreamHeads {
    fn shard(&self, stream_id: &str) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.shards.lock(stream_id)
    }

    /// A commit left `stream_id` at `version` (or later: versions only grow).
    pub(crate) fn committed(&self, stream_id: &str, version: u64) {
        let mut shard = self.shard(stream_id);
        if let Some(known) = shard.get_mut(stream_id) {
            *known = (*known).max(version);
            return;
        }
        if shard.len() >= PER_SHARD_MAX {
            shard.clear();
        }
        shard.insert(stream_id.to_owned(), version);
    }

    /// The stream stands at `version`, as read under a version check that failed: replaces what was
    /// known, which another writer of the file made stale.
    pub(crate) fn observed(&self, stream_id: &str, version: u64) {
        let mut shard = self.shard(stream_id);
        if let Some(known) = shard.get_mut(stream_id) {
            *known = version;
        }
    }

    /// Whether this process's last commit of `stream_id` left it at `version`.
    pub(crate) fn is_at(&self, stream_id: &str, version: u64) -> bool {
        self.shard(stream_id).get(stream_id) == Some(&version)
    }
}

#[cfg(test)]
mod tests {
    use super::super::shards::SHARDS;
    use super::*;

    #[test]
    fn a_stream_is_at_the_highest_version_committed_and_unknown_streams_are_at_none() {
        let heads = StreamHeads::default();
        assert!(!heads.is_at("account-a", 0));
        heads.committed("account-a", 3);
        heads.committed("account-a", 2);
        assert!(heads.is_at("account-a", 3));
        assert!(!heads.is_at("account-a", 2));
        assert!(!heads.is_at("account-b", 3));
    }

    #[test]
    fn a_failed_version_check_replaces_what_was_known() {
        let heads = StreamHeads::default();
        heads.committed("account-a", 3);
        heads.observed("account-a", 5);
        assert!(heads.is_at("account-a", 5));
        heads.observed("account-a", 4);
        assert!(heads.is_at("account-a", 4));
        // Only streams it knows: an observation is no commit of this process.
        heads.observed("account-b", 1);
        assert!(!heads.is_at("account-b", 1));
    }

    #[test]
    fn a_full_shard_starts_again_empty_so_memory_stays_bounded() {
        let heads = StreamHeads::default();
        let total = SHARDS * PER_SHARD_MAX + 1000;
        for i in 0..total {
            heads.committed(&format!("account-{i}"), 1);
        }
        let kept: usize = heads.shards.each().map(|m| m.len()).sum();
        assert!(kept <= SHARDS * PER_SHARD_MAX, "kept {kept}");
        assert!(kept > 0);
    }
}
