//! A compact map from chunk ids to positions in a vector the caller keeps.
//!
//! A backup that stores every chunk of a 2 GiB database holds half a million new
//! chunks. A `HashMap<ChunkId, _>` of them stores each 32-byte id a second time
//! (the entries already hold it) in a table grown by doubling: ~45 MB, the largest
//! part of a first backup's memory. This table holds only a `u32` position per
//! slot (an open-addressing table, linear probing, at most half full: 8 bytes or
//! less per chunk) and compares ids through the caller's vector.

use crate::types::ChunkId;

/// Positions (`u32`) of items keyed by [`ChunkId`]; the items live elsewhere and
/// every call that needs a key is given `key_of(position)`.
#[derive(Default)]
pub(crate) struct IdTable {
    /// 0 = empty, else position + 1. The length is 0 or a power of two.
    slots: Vec<u32>,
    len: usize,
}

/// Where an id starts probing (ids are uniform: their first 8 bytes are a hash).
fn home(id: &ChunkId, mask: usize) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b) as usize & mask
}

impl IdTable {
    /// A table that holds `n` items without growing.
    pub(crate) fn with_capacity(n: usize) -> IdTable {
        IdTable {
            slots: vec![0; slots_for(n)],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The position recorded for `id`.
    pub(crate) fn get(&self, id: &ChunkId, key_of: impl Fn(u32) -> ChunkId) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = home(id, mask);
        loop {
            match self.slots[i] {
                0 => return None,
                s if key_of(s - 1) == *id => return Some(s - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Records `pos` for `id`, unless `id` is recorded already (then returns the
    /// position it has and changes nothing).
    pub(crate) fn insert(
        &mut self,
        id: &ChunkId,
        pos: u32,
        key_of: impl Fn(u32) -> ChunkId,
    ) -> Option<u32> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(&key_of);
        }
        let mask = self.slots.len() - 1;
        let mut i = home(id, mask);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = pos + 1;
                    self.len += 1;
                    return None;
                }
                s if key_of(s - 1) == *id => return Some(s - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self, key_of: &impl Fn(u32) -> ChunkId) {
        let old = std::mem::replace(&mut self.slots, vec![0; slots_for(self.len + 1)]);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|&s| s != 0) {
            let mut i = home(&key_of(s - 1), mask);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Replaces every recorded position `p` with `f(p)` (after the items moved).
    pub(crate) fn remap(&mut self, f: impl Fn(u32) -> u32) {
        for s in self.slots.iter_mut().filter(|s| **s != 0) {
            *s = f(*s - 1) + 1;
        }
    }
}

/// Slots for `n` items at most half full (a power of two, at least 16).
fn slots_for(n: usize) -> usize {
    (n.max(8) * 2).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Id;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn id(n: u32) -> ChunkId {
        Id::of_chunk(&n.to_le_bytes())
    }

    /// An id whose first 8 bytes are `home`: forces collisions.
    fn colliding(home: u8, n: u8) -> ChunkId {
        let mut b = [0u8; 32];
        b[0] = home;
        b[31] = n;
        Id(b)
    }

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let keys: Vec<ChunkId> = (0..10_000).map(id).collect();
        let mut t = IdTable::default();
        for (p, k) in keys.iter().enumerate() {
            assert_eq!(t.insert(k, p as u32, |q| keys[q as usize]), None);
        }
        assert_eq!(t.len(), keys.len());
        for (p, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k, |q| keys[q as usize]), Some(p as u32));
        }
        assert_eq!(t.get(&id(10_001), |q| keys[q as usize]), None);
        // A second insert of a present id reports its position and changes nothing.
        assert_eq!(t.insert(&keys[7], 99, |q| keys[q as usize]), Some(7));
        assert_eq!(t.len(), keys.len());
    }

    #[test]
    fn collisions_and_wraparound_probe_correctly() {
        // All at the same home slot, the last one: probing wraps to slot 0.
        let keys: Vec<ChunkId> = (0..7).map(|n| colliding(0xff, n)).collect();
        let mut t = IdTable::with_capacity(7);
        for (p, k) in keys.iter().enumerate() {
            t.insert(k, p as u32, |q| keys[q as usize]);
        }
        for (p, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k, |q| keys[q as usize]), Some(p as u32));
        }
        assert_eq!(t.get(&colliding(0xff, 200), |q| keys[q as usize]), None);
    }

    #[test]
    fn remap_follows_moved_items() {
        let mut keys: Vec<ChunkId> = (0..100).map(id).collect();
        let mut t = IdTable::with_capacity(100);
        for (p, k) in keys.iter().enumerate() {
            t.insert(k, p as u32, |q| keys[q as usize]);
        }
        keys.reverse();
        t.remap(|p| 99 - p);
        for (p, k) in keys.iter().enumerate() {
            assert_eq!(t.get(k, |q| keys[q as usize]), Some(p as u32));
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec((0u8..4, 0u8..40), 0..400)) {
            // Few distinct homes (4) and few ids (40 per home): many collisions.
            let mut keys: Vec<ChunkId> = Vec::new();
            let mut t = IdTable::default();
            let mut model: HashMap<ChunkId, u32> = HashMap::new();
            for (h, n) in ops {
                let k = colliding(h.wrapping_mul(64), n);
                let pos = keys.len() as u32;
                let had = model.get(&k).copied();
                if had.is_none() {
                    keys.push(k);
                    model.insert(k, pos);
                }
                prop_assert_eq!(t.insert(&k, pos, |q| keys[q as usize]), had);
            }
            prop_assert_eq!(t.len(), model.len());
            for (k, p) in &model {
                prop_assert_eq!(t.get(k, |q| keys[q as usize]), Some(*p));
            }
        }
    }
}
