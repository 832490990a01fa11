//! The one keyed fan-out of event delivery: items grouped by the key whose order matters, each group
//! handled in order, different groups at the same time, at most [`STREAMS_IN_FLIGHT_MAX`] at once.
//!
//! Both sides of delivery use it. The MSK handlers group a batch's records by partition and, inside a
//! partition, by event stream ([`crate::handlers::batch`]); the embedded pipeline groups a feed batch
//! by its handler's order key (a stream, or a transfer for the saga;
//! [`crate::emulators::embedded`]). Why per key and not one at a time: the handlers only need one
//! stream's (or one transfer's) events in order (the projector keeps a checkpoint per stream, the saga
//! reloads one transfer's state per pass), and one at a time would cap delivery at one store round trip
//! per event.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use futures_util::stream::{self, StreamExt};

/// The most groups delivery works on at once, on every host: a Kafka batch asks no more of the store's
/// connection pool than an embedded lane.
pub const STREAMS_IN_FLIGHT_MAX: usize = 64;

/// `items` grouped by `key`, each group in input order, the groups in the order of their first item.
pub fn group_by_key<T, K: Eq + Hash>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for item in items {
        match index.get(&key(&item)) {
            Some(&at) => groups[at].push(item),
            None => {
                index.insert(key(&item), groups.len());
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// Runs `work` on every item, at most `limit` at once (at least one), and returns the outputs in the
/// order of `items`. The futures run inside the caller's task; nothing is spawned.
pub async fn bounded<I, T, Fut>(items: Vec<I>, limit: usize, work: impl Fn(I) -> Fut) -> Vec<T>
where
    Fut: Future<Output = T>,
{
    let mut done: Vec<(usize, T)> = stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| {
            let running = work(item);
            async move { (index, running.await) }
        })
        .buffer_unordered(limit.max(1))
        .collect()
        .await;
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, output)| output).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn groups_keep_input_order_inside_and_first_appearance_between() {
        let groups = group_by_key(["a1", "b1", "a2", "c1", "b2"], |s| s.as_bytes()[0]);
        assert_eq!(groups, vec![vec!["a1", "a2"], vec!["b1", "b2"], vec!["c1"]]);
        assert!(group_by_key(Vec::<u8>::new(), |b| *b).is_empty());
    }

    #[tokio::test]
    async fn bounded_returns_outputs_in_input_order() {
        let out = bounded(vec![30_u64, 1, 20, 5], 2, |ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .await;
        assert_eq!(out, vec![30, 1, 20, 5]);
    }

    #[tokio::test]
    async fn bounded_runs_no_more_than_the_limit_at_once() {
        let running = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        bounded((0..20).collect::<Vec<u64>>(), 3, |_| async {
            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
