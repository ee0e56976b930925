//! Page maps: reading a snapshot's chain of maps and resolving it into its chunk
//! list, and writing the map (and index object) of a new snapshot.

use super::{put_index, Snapshot, Store};
use crate::backend::PutMode;
use crate::format::index::{IndexBody, IndexEntry, PackRef};
use crate::format::pagemap::{
    diff, encode_changes, new_chunk_ordinals, reference_seq, should_write_full, MapHead, OrdinalOf,
    PageMap,
};
use crate::format::FormatError;
use crate::index::chunk_index::ChunkIndex;
use crate::index::id_table::IdTable;
use crate::types::{ChunkId, ChunkRef, Id, IdMap};
use crate::{layout, Error, Result};

/// What a backup (or a copied snapshot) continues from: its parent's map and list,
/// and the skip-delta reference (map id and resolved list) its own map is a delta against.
pub(crate) struct MapBase {
    parent_map: Id,
    /// blake3 of the parent's chunk list (the list itself is not kept: at 33 bytes
    /// a chunk, it is a sizeable part of a backup's memory).
    parent_list: [u8; 32],
    seq: u64,
    reference: (Id, Vec<ChunkRef>),
    /// The parent's chunk list itself, kept only in a store with deltas: a new
    /// chunk's base is the parent's chunk at its position.
    pub(crate) parent_chunks: Option<Vec<ChunkRef>>,
}

impl MapBase {
    /// The base of a backup whose parent has map `parent_map` and chunk list
    /// `parent_list`; its own map will be number `seq`, a delta against `reference`.
    pub(crate) fn new(
        parent_map: Id,
        parent_list: &[ChunkRef],
        seq: u64,
        reference: (Id, Vec<ChunkRef>),
    ) -> MapBase {
        MapBase {
            parent_map,
            parent_list: list_hash(parent_list),
            seq,
            reference,
            parent_chunks: None,
        }
    }
}

/// The page map a backup recorded, and the index object it wrote (if it stored chunks).
pub(crate) struct WrittenMap {
    pub(crate) map: Id,
    pub(crate) changes: u64,
    pub(crate) full: bool,
    pub(crate) index: Option<(Id, IndexBody)>,
    /// The index object's size in the store (0 without one).
    pub(crate) index_len: u64,
    /// Positions of its entries by chunk id (see index/id_table.rs).
    pub(crate) index_table: IdTable,
    /// A new map's sequence number and named chunk ids (see index/cache/resolved.rs;
    /// `None` for a full map: they are then the list's stored chunks, not held
    /// twice); `None` when the parent's map was reused.
    pub(crate) resolved: Option<(u64, Option<Vec<ChunkId>>)>,
}

/// The chunks a backup stored: the packs, and each chunk's pack (by position) and entry.
pub(crate) struct NewChunks {
    pub packs: Vec<PackRef>,
    /// In the order they were stored.
    pub entries: Vec<IndexEntry>,
    /// The dictionary the packs use.
    pub dict: Option<Id>,
    /// The base, depth and whole length (`DeltaBase::whole_len`) of each entry
    /// stored as a delta (format version 2).
    pub bases: IdMap<(ChunkId, u8, u32)>,
}

impl Store {
    pub(crate) fn load_map(&self, id: &Id) -> Result<PageMap> {
        self.finish_map(id, self.load_map_head(id)?)
    }

    /// Map `id`, read, checked against its name and decoded but for its changes.
    fn load_map_head(&self, id: &Id) -> Result<MapHead> {
        let key = layout::map(id);
        let bytes = self.get_verified(&key, id)?;
        PageMap::decode_head(&bytes).map_err(self.format_err(&key))
    }

    /// The maps from `id` down to its full map, each checked to follow the skip-delta rule.
    pub fn map_chain(&self, id: &Id) -> Result<Vec<(Id, PageMap)>> {
        self.walk_chain(id, |s, mid| s.load_map(mid), |m| m)
    }

    /// [`Store::map_chain`] with each map decoded but for its changes
    /// ([`PageMap::decode_head`]); [`Store::finish_map`] decodes them.
    pub(crate) fn map_chain_heads(&self, id: &Id) -> Result<Vec<(Id, MapHead)>> {
        self.walk_chain(id, |s, mid| s.load_map_head(mid), |h| &h.map)
    }

    /// Map `id`'s changes, decoded from its head.
    pub(crate) fn finish_map(&self, id: &Id, head: MapHead) -> Result<PageMap> {
        head.finish().map_err(self.format_err(&layout::map(id)))
    }

    /// The chain from `id` down: each map loaded, checked to follow the
    /// skip-delta rule from the one before it, and followed to its reference.
    fn walk_chain<M>(
        &self,
        id: &Id,
        load: impl Fn(&Self, &Id) -> Result<M>,
        map: impl Fn(&M) -> &PageMap,
    ) -> Result<Vec<(Id, M)>> {
        let mut chain: Vec<(Id, M)> = Vec::new();
        let mut next = Some(*id);
        while let Some(mid) = next {
            let m = load(self, &mid)?;
            if let Some((_, child)) = chain.last() {
                let (seq, want) = (map(&m).seq, reference_seq(map(child).seq));
                if seq != want {
                    return Err(self.format_err(&layout::map(&mid))(FormatError::Invalid(
                        format!("page map has sequence number {seq} where {want} was expected"),
                    )));
                }
            }
            next = map(&m).reference;
            chain.push((mid, m));
        }
        Ok(chain)
    }

    /// Resolves a chain (as [`Store::map_chain`] returns it) from its full map down,
    /// calling `visit` with every map's resolved list; returns the last list.
    pub(crate) fn resolve_chain(
        &self,
        index: &ChunkIndex,
        chain: &[(Id, PageMap)],
        mut visit: impl FnMut(&Id, &PageMap, &[ChunkRef]),
    ) -> Result<Vec<ChunkRef>> {
        let mut list: Vec<ChunkRef> = Vec::new();
        for (mid, m) in chain.iter().rev() {
            check_lists_named(index, mid, m)?;
            list = m
                .apply(&list, |l, o| index.lookup(l, o))
                .map_err(self.format_err(&layout::map(mid)))?;
            visit(mid, m, &list);
        }
        Ok(list)
    }

    /// The full, ordered chunk list of a snapshot, using an index already loaded.
    pub fn chunk_list_with(&self, index: &ChunkIndex, snap: &Snapshot) -> Result<Vec<ChunkRef>> {
        let chain = self.map_chain(&snap.manifest.map)?;
        let list = self.resolve_chain(index, &chain, |_, _, _| {})?;
        self.check_chunk_count(snap, list.len())?;
        Ok(list)
    }

    /// Fails when a snapshot's resolved page map has `n` chunks where its manifest
    /// says otherwise.
    pub(crate) fn check_chunk_count(&self, snap: &Snapshot, n: usize) -> Result<()> {
        if n as u64 != snap.manifest.chunk_count {
            return Err(self.format_err(&layout::snapshot(&snap.id))(
                FormatError::Invalid(format!(
                    "page map has {n} chunks, the manifest says {}",
                    snap.manifest.chunk_count
                )),
            ));
        }
        Ok(())
    }

    /// The full, ordered chunk list of a snapshot.
    pub fn chunk_list(&self, snap: &Snapshot) -> Result<Vec<ChunkRef>> {
        self.chunk_list_with(&self.load_index()?, snap)
    }

    /// The parent's page-map chain gives the skip-delta reference of a backup's map
    /// (and the parent's own list, to notice an unchanged database).
    pub(crate) fn map_base(&self, index: &ChunkIndex, p: &Snapshot) -> Result<MapBase> {
        self.map_base_visiting(index, p, |_, _, _| {}, &mut Vec::new())
    }

    /// [`Store::map_base`], calling `visit` with every map of the parent's chain
    /// and its resolved list, and recording the chain (map id, sequence number).
    pub(crate) fn map_base_visiting(
        &self,
        index: &ChunkIndex,
        p: &Snapshot,
        mut visit: impl FnMut(&Id, &PageMap, &[ChunkRef]),
        chain_seqs: &mut Vec<(Id, u64)>,
    ) -> Result<MapBase> {
        let chain = self.map_chain(&p.manifest.map)?;
        let seq = chain[0].1.seq + 1;
        let want = reference_seq(seq);
        let mut reference: Option<(Id, Vec<ChunkRef>)> = None;
        let parent_list = self.resolve_chain(index, &chain, |mid, m, list| {
            visit(mid, m, list);
            if m.seq == want && reference.is_none() {
                reference = Some((*mid, list.to_vec()));
            }
        })?;
        let reference = reference.ok_or_else(|| {
            Error::Internal("skip-delta reference not in the parent's chain".into())
        })?;
        chain_seqs.extend(chain.iter().map(|(mid, m)| (*mid, m.seq)));
        let mut base = MapBase::new(p.manifest.map, &parent_list, seq, reference);
        if self.config().deltas {
            base.parent_chunks = Some(parent_list);
        }
        Ok(base)
    }

    /// Writes this backup's index object (if it stored chunks) and page map (unless
    /// the chunk list equals the parent's, whose map is then reused).
    pub(crate) fn put_map(
        &self,
        name_of: impl Fn(&ChunkId) -> Option<(Id, u64)>,
        base: Option<MapBase>,
        new: NewChunks,
        chunks: &[ChunkRef],
        metadata_bytes: &mut u64,
    ) -> Result<WrittenMap> {
        if let Some(b) = &base {
            if b.parent_list == list_hash(chunks) && new.entries.is_empty() {
                return Ok(WrittenMap {
                    map: b.parent_map,
                    changes: 0,
                    full: false,
                    index: None,
                    index_len: 0,
                    index_table: IdTable::default(),
                    resolved: None,
                });
            }
        }
        let none: &[ChunkRef] = &[];
        let (seq, reference, reference_list) = match &base {
            Some(b)
                if !should_write_full(
                    diff(&b.reference.1, chunks).count(),
                    chunks.len(),
                    b.seq,
                ) =>
            {
                (b.seq, Some(b.reference.0), &b.reference.1[..])
            }
            _ => (0, None, none),
        };
        // The index object lists new chunks in the order the map's `New` references
        // take them. Found by position through a table of 4-byte slots (index/id_table.rs),
        // and put in that order in place: a first backup has 10⁵–10⁶ of them.
        let mut entries = new.entries;
        let mut table = IdTable::with_capacity(entries.len());
        for (p, e) in entries.iter().enumerate() {
            let id = e.entry.id;
            if table
                .insert(&id, p as u32, |q| entries[q as usize].entry.id)
                .is_some()
            {
                return Err(Error::Internal(format!(
                    "chunk {} is listed twice among a backup's new chunks",
                    id.short()
                )));
            }
        }
        let mut ordinals = new_chunk_ordinals(diff(reference_list, chunks), entries.len(), |id| {
            table.get(id, |q| entries[q as usize].entry.id)
        });
        table.remap(|p| ordinals[p as usize]);
        move_to(&mut entries, &mut ordinals);
        drop(ordinals);
        let mut index_len = 0;
        let index_object = if entries.is_empty() {
            None
        } else {
            // The base table, in the entries' final order (a version-2 object
            // when it has a row; put_index picks the version).
            let deltas = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.entry.codec == crate::format::pack::Codec::ZstdDelta)
                .map(|(i, e)| {
                    let (base, depth, whole_len) =
                        new.bases.get(&e.entry.id).copied().ok_or_else(|| {
                            Error::Internal(format!(
                                "delta {} without its base",
                                e.entry.id.short()
                            ))
                        })?;
                    Ok(crate::format::index::DeltaBase {
                        ordinal: i as u64,
                        base,
                        depth,
                        whole_len,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let body = IndexBody {
                packs: new.packs,
                entries,
                deltas,
            };
            let (id, len) = put_index(self.backend.as_ref(), &body)?;
            *metadata_bytes += len;
            index_len = len;
            Some((id, body))
        };
        let own = index_object.as_ref().map(|(id, _)| *id);
        let ordinal_of = |id: &ChunkId| -> Option<u32> {
            let listed = &index_object.as_ref()?.1.entries;
            table.get(id, |q| listed[q as usize].entry.id)
        };
        let (encoded, lists) = encode_changes(
            diff(reference_list, chunks),
            own.map(|id| (id, &ordinal_of as OrdinalOf<'_>)),
            name_of,
        )
        .map_err(|e| Error::Internal(format!("encoding the page map: {e}")))?;
        let map = PageMap {
            chunk_count: chunks.len() as u64,
            seq,
            reference,
            new_list: own,
            lists,
            changes: encoded,
        };
        let bytes = map.encode();
        let id = Id::of_object(&bytes);
        self.backend
            .put(&layout::map(&id), &bytes, PutMode::Overwrite)?;
        *metadata_bytes += bytes.len() as u64;
        let resolved = if reference.is_none() {
            Some((seq, None))
        } else {
            crate::index::cache::resolved::named_ids(&map, chunks).map(|ids| (seq, Some(ids)))
        };
        Ok(WrittenMap {
            map: id,
            changes: map.changes.len() as u64,
            full: reference.is_none(),
            index: index_object,
            index_len,
            index_table: table,
            resolved,
        })
    }
}

/// Moves each item `p` to position `dest[p]` (a permutation), in place, by
/// following its cycles; `dest` ends as the identity.
fn move_to<T>(items: &mut [T], dest: &mut [u32]) {
    for start in 0..items.len() {
        while dest[start] as usize != start {
            let d = dest[start] as usize;
            items.swap(start, d);
            dest.swap(start, d);
        }
    }
}

/// A digest of a chunk list, to tell whether two lists are equal.
fn list_hash(list: &[ChunkRef]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    // The bytes go to the hasher in batches: fed 33 bytes at a time, blake3
    // hashes one 1 KiB chunk after another instead of several at once.
    let mut batch = Vec::with_capacity(64 * 1024 + 33);
    for c in list {
        match c {
            ChunkRef::Zero => batch.push(0),
            ChunkRef::Stored(id) => {
                batch.push(1);
                batch.extend_from_slice(&id.0);
            }
        }
        if batch.len() >= 64 * 1024 {
            h.update(&batch);
            batch.clear();
        }
    }
    h.update(&batch);
    *h.finalize().as_bytes()
}

/// Fails, naming the index object, when map `mid` names chunks through an index
/// object that is damaged or missing (rather than "no such entry" later).
pub(crate) fn check_lists_named(index: &ChunkIndex, mid: &Id, m: &PageMap) -> Result<()> {
    for list in m.lists.iter().chain(m.new_list.iter()) {
        if index.has_list(list) {
            continue;
        }
        let why = match index.damaged(list) {
            Some(d) => format!("it is damaged ({d})"),
            None => "it is missing from the store".to_string(),
        };
        return Err(Error::IndexUnusable {
            map: layout::map(mid),
            index: layout::index(list),
            why,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{list_hash, move_to};
    use crate::types::{ChunkRef, Id};
    use proptest::prelude::*;

    #[test]
    fn a_list_hash_is_blake3_of_its_tags_and_ids_in_order() {
        let list: Vec<ChunkRef> = (0..5000u32)
            .map(|i| match i % 7 {
                0 => ChunkRef::Zero,
                _ => ChunkRef::Stored(Id([(i % 251) as u8; 32])),
            })
            .collect();
        let mut bytes = Vec::new();
        for c in &list {
            match c {
                ChunkRef::Zero => bytes.push(0),
                ChunkRef::Stored(id) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&id.0);
                }
            }
        }
        assert_eq!(list_hash(&list), *blake3::hash(&bytes).as_bytes());
        assert_eq!(list_hash(&[]), *blake3::hash(&[]).as_bytes());
    }

    proptest! {
        #[test]
        fn move_to_puts_every_item_at_its_destination(dest in Just((0u32..300).collect::<Vec<u32>>()).prop_shuffle()) {
            let items: Vec<u32> = (0..dest.len() as u32).collect();
            let mut moved = items.clone();
            let mut d = dest.clone();
            move_to(&mut moved, &mut d);
            for (p, &to) in dest.iter().enumerate() {
                prop_assert_eq!(moved[to as usize], items[p]);
            }
            prop_assert!(d.iter().enumerate().all(|(i, &x)| x as usize == i));
        }
    }
}
