//! A hash map split into many small maps.
//!
//! A single `HashMap` grows by doubling, moving every entry at once: with millions of idempotency
//! records that is a pause of seconds, taken while the store's lock is held, so every request in the
//! process waits for it. Split into [`SHARDS`] maps, each growth moves one shard's entries, a few
//! hundredth of the whole, and the pauses shrink with it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};

/// How many maps a [`ShardedMap`] is split into.
pub(crate) const SHARDS: usize = 256;

/// A map of `K` to `V` over [`SHARDS`] hash maps; a key's shard comes from a hasher of its own, keyed
/// apart from the shards' hashers, so the keys of one shard still spread over its buckets.
#[derive(Debug)]
pub(crate) struct ShardedMap<K, V> {
    picker: RandomState,
    shards: Box<[HashMap<K, V>; SHARDS]>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self { picker: RandomState::new(), shards: Box::new(std::array::from_fn(|_| HashMap::new())) }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    fn index<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The low bits of a 64-bit SipHash are as good as any; SHARDS is a power of two.
        (self.picker.hash_one(key) as usize) & (SHARDS - 1)
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &HashMap<K, V> {
        &self.shards[self.index(key)]
    }

    fn shard_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V> {
        let index = self.index(key);
        &mut self.shards[index]
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard(key).get(key)
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        // A borrowed form hashes like its owner (the `Borrow` contract), so `get` finds this shard.
        self.shard_mut(&key).insert(key, value)
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_mut(key).remove(key)
    }

    pub(crate) fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.shard_mut(&key).entry(key)
    }

    /// Every value, shard by shard (in no particular order).
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    /// How many entries all shards hold.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{SHARDS, ShardedMap};

    #[test]
    fn behaves_as_one_map() {
        let mut map: ShardedMap<String, u64> = ShardedMap::default();
        for i in 0..10_000_u64 {
            assert_eq!(map.insert(format!("key-{i}"), i), None);
        }
        assert_eq!(map.insert("key-7".to_owned(), 70), Some(7));
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get("key-7"), Some(&70));
        assert!(map.contains_key("key-9999"));
        assert!(!map.contains_key("key-10000"));
        assert_eq!(map.remove("key-1"), Some(1));
        assert_eq!(map.get("key-1"), None);
        *map.entry("key-2".to_owned()).or_default() += 1;
        *map.entry("fresh".to_owned()).or_default() += 5;
        assert_eq!((map.get("key-2"), map.get("fresh")), (Some(&3), Some(&5)));
        assert_eq!(map.len(), 10_000);
    }

    #[test]
    fn spreads_keys_over_the_shards() {
        let mut map: ShardedMap<String, ()> = ShardedMap::default();
        for i in 0..(SHARDS * 64) {
            map.insert(format!("idem-{i}"), ());
        }
        let largest = map.shards.iter().map(std::collections::HashMap::len).max().unwrap_or(0);
        // 64 per shard on average; a skewed picker would put far more in one.
        assert!(largest < 160, "largest shard holds {largest}");
    }
}
