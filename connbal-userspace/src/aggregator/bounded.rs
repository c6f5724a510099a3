//! A hash map with a hard size cap that evicts its oldest entry when full.
//!
//! Used for the tables a flood fills with junk (pending queries, `-a`
//! flows): evicting the oldest keeps room for the traffic that matters,
//! which is recent by nature. Insertion order lives in a queue with lazy
//! deletion, compacted when stale entries outnumber live ones, so every
//! operation is amortised O(1) and memory stays proportional to the cap.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

type State = foldhash::fast::RandomState;

#[derive(Debug)]
pub struct FifoMap<K, V> {
    map: HashMap<K, (u64, V), State>,
    order: VecDeque<(K, u64)>,
    cap: usize,
    next: u64,
}

impl<K: Hash + Eq + Clone, V> FifoMap<K, V> {
    pub fn with_cap(cap: usize) -> Self {
        assert!(cap > 0);
        Self {
            map: HashMap::default(),
            order: VecDeque::new(),
            cap,
            next: 0,
        }
    }

    /// Inserts or replaces; returns true when an old entry was evicted to
    /// make room.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        self.insert_evicting(key, value).is_some()
    }

    /// Inserts or replaces; returns the entry evicted to make room, for a
    /// table whose entries still count once gone.
    pub fn insert_evicting(&mut self, key: K, value: V) -> Option<(K, V)> {
        let generation = self.next;
        self.next += 1;
        let mut evicted = None;
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            while let Some((old, g)) = self.order.pop_front() {
                if self.map.get(&old).is_some_and(|(live, _)| *live == g) {
                    evicted = self.map.remove(&old).map(|(_, value)| (old, value));
                    break;
                }
            }
        }
        self.map.insert(key.clone(), (generation, value));
        if self.order.len() == self.order.capacity() {
            // Double, but never past the most the queue can hold.
            let most = self.cap + self.cap / 4 + 1;
            let want = (self.order.capacity() * 2).max(16).min(most);
            self.order
                .reserve_exact(want.saturating_sub(self.order.len()));
        }
        self.order.push_back((key, generation));
        // Stale entries up to a quarter of the cap: bounded memory, and a
        // compaction pass only every cap/4 inserts.
        if self.order.len() > self.cap + self.cap / 4 {
            self.compact();
        }
        evicted
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(_, v)| v)
    }

    /// Keeps entries for which `keep` is true; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|k, (_, v)| keep(k, v));
        before - self.map.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(_, value)| value)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(k, g)| map.get(k).is_some_and(|(live, _)| live == g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_live_entry() {
        let mut m = FifoMap::with_cap(3);
        assert!(!m.insert(1, "a"));
        assert!(!m.insert(2, "b"));
        assert!(!m.insert(3, "c"));
        m.remove(&1);
        assert!(!m.insert(4, "d"), "room after a removal");
        assert!(m.insert(5, "e"), "full: the oldest live entry (2) goes");
        assert_eq!(m.get(&2), None);
        assert_eq!(
            (m.get(&3), m.get(&4), m.get(&5)),
            (Some(&"c"), Some(&"d"), Some(&"e"))
        );
        // Replacing an existing key never evicts.
        assert!(!m.insert(3, "c2"));
        assert!(m.insert(6, "f"), "3 was refreshed, so 4 is now oldest");
        assert_eq!(m.get(&4), None);
        assert_eq!(m.get(&3), Some(&"c2"));
    }

    #[test]
    fn the_order_queue_stays_bounded_under_churn() {
        let mut m = FifoMap::with_cap(100);
        for i in 0..100_000u32 {
            m.insert(i % 150, i);
            if i % 3 == 0 {
                m.remove(&(i % 150));
            }
        }
        assert!(m.len() <= 100);
        assert!(m.order.len() <= 100 + 25 + 1, "{}", m.order.len());
    }
}
