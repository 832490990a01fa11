//! A value split into locked shards by key, for the state the SQLite store keeps in the process
//! ([`super::heads`], [`super::claims`]): callers working on different keys rarely meet on one lock.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// `SHARDS` values of `T`, each behind its own lock; a key always picks the same one.
#[derive(Debug)]
pub(crate) struct Shards<T> {
    picker: RandomState,
    shards: Box<[Mutex<T>]>,
}

/// How many shards each [`Shards`] has.
pub(crate) const SHARDS: usize = 64;

impl<T: Default> Default for Shards<T> {
    fn default() -> Self {
        Self { picker: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl<T> Shards<T> {
    /// Locks the shard of `key`. A shard left by a panicking holder is used as it is: every change
    /// the store makes to one is a single insert, update or remove.
    pub(crate) fn lock<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, T> {
        let index = (self.picker.hash_one(key) as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every shard, one after another (for tests).
    #[cfg(test)]
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
