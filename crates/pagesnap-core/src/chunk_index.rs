//! The in-memory chunk index: chunk id → where its bytes are. Built from all
//! `index/` objects when a store operation needs it.

use crate::format::index::IndexBody;
use crate::format::pack::PackEntry;
use crate::types::{ChunkId, Id};
use std::collections::HashMap;

/// Location of a chunk: which pack (by position in [`ChunkIndex::packs`]) and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub entry: PackEntry,
}

#[derive(Default, Debug)]
pub struct ChunkIndex {
    packs: Vec<Id>,
    pack_pos: HashMap<Id, u32>,
    chunks: HashMap<ChunkId, Location>,
}

impl ChunkIndex {
    /// Adds every pack of a decoded index object. A chunk found in several packs
    /// keeps its first location (any copy is as good as another).
    pub fn add(&mut self, body: &IndexBody) {
        for p in &body.packs {
            let pos = match self.pack_pos.get(&p.pack) {
                Some(&pos) => pos,
                None => {
                    let pos = self.packs.len() as u32;
                    self.packs.push(p.pack);
                    self.pack_pos.insert(p.pack, pos);
                    pos
                }
            };
            for e in &p.entries {
                self.chunks.entry(e.id).or_insert(Location {
                    pack: pos,
                    entry: *e,
                });
            }
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<&Location> {
        self.chunks.get(id)
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.contains_key(id)
    }

    pub fn pack_id(&self, pos: u32) -> Id {
        self.packs[pos as usize]
    }

    /// Number of distinct chunks indexed.
    pub fn entries(&self) -> usize {
        self.chunks.len()
    }
}
