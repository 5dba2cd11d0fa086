//! What the server remembers of the files it has hashed, by file version and
//! within byte budgets: each whole file's digest and checkpoint states, and
//! the states of prefixes that cold passes reached before they were cut
//! short. Both live in `quick_cache` caches weighted by bytes.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use ft_protocol::{boundaries, Digest};

pub use crate::backend::Digests;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};

/// Bytes an entry costs beyond its states: key, value header, bookkeeping.
const ENTRY_OVERHEAD: u64 = 64;

/// The checkpoint states a cold pass has reached so far, growing as it goes.
#[derive(Debug)]
struct Prefix {
    states: Mutex<Vec<Digest>>,
    /// Its weight, fixed when it is made: the states the whole file will
    /// have, so that it never grows past what it was charged.
    weight: u64,
}

#[derive(Clone)]
struct ByStates;

impl<V> Weighter<V, Arc<Digests>> for ByStates {
    fn weight(&self, _: &V, digests: &Arc<Digests>) -> u64 {
        (digests.checkpoints.len() as u64 + 1) * 32 + ENTRY_OVERHEAD
    }
}

impl<V> Weighter<V, Arc<Prefix>> for ByStates {
    fn weight(&self, _: &V, prefix: &Arc<Prefix>) -> u64 {
        prefix.weight
    }
}

/// The digest and prefix caches of one server.
pub struct Caches<V> {
    digests: Cache<V, Arc<Digests>, ByStates>,
    prefixes: Cache<V, Arc<Prefix>, ByStates>,
}

/// A cache of `bytes` in one shard: these are touched once per request or
/// per 4 MiB, never hot enough to contend, and a shard of a split budget
/// would refuse the digests of the largest files.
fn cache<V: Eq + Hash, T: Clone>(bytes: u64) -> Cache<V, T, ByStates>
where
    ByStates: Weighter<V, T>,
{
    let options = OptionsBuilder::new()
        .shards(1)
        .estimated_items_capacity(4096)
        .weight_capacity(bytes)
        .build();
    match options {
        Ok(options) => {
            Cache::with_options(options, ByStates, Default::default(), Default::default())
        }
        // Every option the builder needs is set above.
        Err(_) => Cache::with_weighter(4096, bytes, ByStates),
    }
}

impl<V: Copy + Eq + Hash> Caches<V> {
    /// Empty caches of `digest_bytes` and `prefix_bytes`.
    pub fn new(digest_bytes: u64, prefix_bytes: u64) -> Self {
        Self {
            digests: cache(digest_bytes),
            prefixes: cache(prefix_bytes),
        }
    }

    /// The digests of a file version, if they are known.
    pub fn digests(&self, version: &V) -> Option<Arc<Digests>> {
        self.digests.get(version)
    }

    /// Keeps the digests of a file version; its prefix is no longer needed.
    pub fn remember(&self, version: V, digests: Digests) -> Arc<Digests> {
        self.prefixes.remove(&version);
        let digests = Arc::new(digests);
        self.digests.insert(version, Arc::clone(&digests));
        digests
    }

    /// The states of the longest prefix of a file version a cold pass has
    /// reached, boundaries 1, 2, … in order.
    pub fn prefix(&self, version: &V) -> Vec<Digest> {
        let Some(prefix) = self.prefixes.get(version) else {
            return Vec::new();
        };
        let states = prefix.states.lock().map(|states| states.clone());
        states.unwrap_or_default()
    }

    /// Records the state at boundary `index` of a file version of `size`
    /// bytes, if it extends what is known.
    pub fn note_prefix(&self, version: V, size: u64, index: u64, state: Digest) {
        let prefix = match self.prefixes.get(&version) {
            Some(prefix) => prefix,
            None if index == 1 => {
                let prefix = Arc::new(Prefix {
                    states: Mutex::new(Vec::new()),
                    weight: boundaries(size) * 32 + ENTRY_OVERHEAD,
                });
                self.prefixes.insert(version, Arc::clone(&prefix));
                prefix
            }
            None => return,
        };
        let locked = prefix.states.lock();
        if let Ok(mut states) = locked {
            if states.len() as u64 + 1 == index {
                states.push(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_stay_within_the_budget() {
        let budget = 1 << 20;
        let caches = Caches::<u64>::new(budget, budget);
        let states = (budget as usize / 32) / 3;
        for id in 0..10 {
            caches.remember(
                id,
                Digests {
                    sha256: [id as u8; 32],
                    checkpoints: vec![[0; 32]; states],
                },
            );
        }
        let held = (0..10).filter(|id| caches.digests(id).is_some()).count();
        assert!((1..=3).contains(&held), "{held} of 10 held");
        assert!(caches.digests.weight() <= budget);
        assert!(caches.digests(&9).is_some(), "the newest is kept");
        // One too large for the whole budget is not kept at all.
        let huge = Digests {
            sha256: [0; 32],
            checkpoints: vec![[0; 32]; budget as usize / 32],
        };
        caches.remember(99, huge);
        assert!(caches.digests(&99).is_none());
    }

    #[test]
    fn a_prefix_grows_in_order_and_goes_once_the_file_is_known() {
        let caches = Caches::<u64>::new(1 << 20, 1 << 20);
        let size = 10 * ft_protocol::CHUNK_SIZE;
        caches.note_prefix(1, size, 2, [2; 32]);
        assert!(caches.prefix(&1).is_empty(), "boundary 1 first");
        caches.note_prefix(1, size, 1, [1; 32]);
        caches.note_prefix(1, size, 2, [2; 32]);
        caches.note_prefix(1, size, 2, [9; 32]);
        caches.note_prefix(1, size, 4, [4; 32]);
        assert_eq!(caches.prefix(&1), vec![[1; 32], [2; 32]]);
        caches.remember(
            1,
            Digests {
                sha256: [0; 32],
                checkpoints: vec![],
            },
        );
        assert!(caches.prefix(&1).is_empty());
    }

    #[test]
    fn checkpoints_are_numbered_from_one() {
        let digests = Digests {
            sha256: [0; 32],
            checkpoints: vec![[1; 32], [2; 32]],
        };
        assert_eq!(digests.checkpoint(0), None);
        assert_eq!(digests.checkpoint(1), Some([1; 32]));
        assert_eq!(digests.checkpoint(2), Some([2; 32]));
        assert_eq!(digests.checkpoint(3), None);
    }
}
