//! The in-memory chunk index, built from every `index/` object: where each chunk
//! is (only chunks in packs that exist), and the names page maps use for chunks
//! (index object, ordinal → chunk id).

use crate::format::index::IndexBody;
use crate::format::pack::{Codec, PackEntry};
use crate::types::{ChunkId, Id, IdMap};

/// Where a chunk's blob is in its pack (the chunk id is the map key: not repeated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

/// Location of a chunk: which pack (by position in the index's pack table) and where
/// in it, and one name of it (index object by position in the list table, ordinal).
/// Kept small: a store of a 1 GiB database holds a quarter of a million of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub entry: Slot,
    pub list: u32,
    pub ordinal: u32,
}

impl Location {
    /// The pack entry of chunk `id` at this location.
    pub fn pack_entry(&self, id: ChunkId) -> PackEntry {
        PackEntry {
            id,
            offset: self.entry.offset,
            stored_len: self.entry.stored_len,
            raw_len: self.entry.raw_len,
            codec: self.entry.codec,
        }
    }
}

#[derive(Default, Debug)]
pub struct ChunkIndex {
    packs: Vec<Id>,
    pack_dicts: Vec<Option<Id>>,
    pack_pos: IdMap<u32>,
    chunks: IdMap<Location>,
    lists: Vec<Id>,
    list_ids: IdMap<Vec<ChunkId>>,
    /// Chunks whose packs are missing: the pack an index object put them in.
    lost: IdMap<Id>,
    /// Index objects that could not be read, and why: their names are unknown.
    damaged: IdMap<String>,
}

impl ChunkIndex {
    /// Adds the index object `list`. Its names are always kept; its locations only
    /// for packs `present` accepts (a lost pack's chunks are then unknown, so a
    /// backup stores them again). A chunk found in several packs keeps its first
    /// location: any copy is as good as another.
    pub fn add(&mut self, list: Id, body: &IndexBody, present: impl Fn(&Id, u64) -> bool) {
        let list_pos = self.lists.len() as u32;
        self.chunks.reserve(body.entries.len());
        self.lists.push(list);
        let mut pack_pos = Vec::with_capacity(body.packs.len());
        for p in &body.packs {
            let pos = if present(&p.id, p.len) {
                Some(*self.pack_pos.entry(p.id).or_insert_with(|| {
                    self.packs.push(p.id);
                    self.pack_dicts.push(p.dict);
                    self.packs.len() as u32 - 1
                }))
            } else {
                None
            };
            pack_pos.push(pos);
        }
        let mut ids = Vec::with_capacity(body.entries.len());
        for (ordinal, e) in body.entries.iter().enumerate() {
            ids.push(e.entry.id);
            match pack_pos[e.pack as usize] {
                Some(pack) => {
                    self.chunks.entry(e.entry.id).or_insert(Location {
                        pack,
                        entry: Slot {
                            offset: e.entry.offset,
                            stored_len: e.entry.stored_len,
                            raw_len: e.entry.raw_len,
                            codec: e.entry.codec,
                        },
                        list: list_pos,
                        // Index bodies are bounded well below 2³² entries (1 GiB / 38 bytes).
                        ordinal: ordinal as u32,
                    });
                }
                None => {
                    self.lost.insert(e.entry.id, body.packs[e.pack as usize].id);
                }
            }
        }
        self.list_ids.insert(list, ids);
    }

    /// Records an index object that could not be read. Its chunks are unknown (a
    /// backup stores them again); page maps naming it cannot be resolved.
    pub fn mark_damaged(&mut self, list: Id, why: String) {
        self.damaged.insert(list, why);
    }

    /// Why index object `list` could not be read, if it could not.
    pub fn damaged(&self, list: &Id) -> Option<&str> {
        self.damaged.get(list).map(String::as_str)
    }

    /// Whether index object `list` was read.
    pub fn has_list(&self, list: &Id) -> bool {
        self.list_ids.contains_key(list)
    }

    /// Every located chunk.
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.chunks.iter()
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

    /// The dictionary of the pack at `pos`, if its chunks use one.
    pub fn pack_dict(&self, pos: u32) -> Option<Id> {
        self.pack_dicts[pos as usize]
    }

    /// The chunk that entry `ordinal` of index object `list` names.
    pub fn lookup(&self, list: &Id, ordinal: u64) -> Option<ChunkId> {
        self.list_ids.get(list)?.get(ordinal as usize).copied()
    }

    /// A name (index object, ordinal) of a stored chunk.
    pub fn name_of(&self, id: &ChunkId) -> Option<(Id, u64)> {
        self.chunks
            .get(id)
            .map(|l| (self.lists[l.list as usize], l.ordinal as u64))
    }

    /// Number of distinct chunks with a location.
    pub fn entries(&self) -> usize {
        self.chunks.len()
    }

    /// For a chunk with no location: the missing pack an index object put it in.
    pub fn lost_pack(&self, id: &ChunkId) -> Option<Id> {
        if self.chunks.contains_key(id) {
            return None;
        }
        self.lost.get(id).copied()
    }
}
