//! This machine's derived copy of a store's chunk index, so that a backup's cost
//! follows what changed, not how many chunks the store holds.
//!
//! Without it every backup read, checked and decoded every index object and kept
//! ~100 bytes per chunk in memory: 4 s and 2 GB at 20 million chunks
//! (docs/PERFORMANCE.md). With it a backup reads:
//!
//! * the **sorted chunk file** (`base.rs`), built once from the whole index and
//!   searched on disk: one positioned read of a checked 64-entry block per lookup;
//! * the index objects written since the file was built (the *delta*), loaded into
//!   memory as before; merged into a new file when they grow (`merge_due` in
//!   backup/index.rs);
//! * the **resolved page maps** (`resolved.rs`) of its parent's chain, so the
//!   parent's chunk list needs no index object at all, and the parent's
//!   **placement** (where its chunks were).
//!
//! Chunks of the parent's image are known without a lookup; only the others (the
//! changed pages, 1% of a database in the benchmark) are searched.
//!
//! Everything here is derived, never the truth, and the backup checks it against
//! the store before trusting it. Entries of the file naming an index object no
//! longer listed with the size it had, or a pack not present with its recorded
//! length (a prune deleted or rewrote them, or a pack is lost), are skipped; a
//! parent's chunk is taken as stored only while the pack it was in is present;
//! and a few covered index objects, picked at random, are read again and checked
//! on each backup, so damage in the store is noticed in time. The backup takes the
//! long way, the whole index in memory, exactly as without the cache, when there
//! is no file yet, a cache file fails its checksum, an index object is damaged,
//! or the parent's chain has no resolved maps here; it then rebuilds what was
//! missing or stale.
//!
//! Files live in the cache directory (see [`crate::cache_root`]) under the store's
//! id: `<store id>/index/chunks`, `<store id>/index/maps/<map id>` and
//! `<store id>/index/placed/<map id>` (docs/FORMAT.md, "Local index cache").

pub(crate) mod base;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
pub(crate) mod resolved;

use crate::format::index::{IndexBody, IndexEntry};
use crate::format::pack::PackEntry;
use crate::index::chunk_index::{ChunkIndex, Slot};
use crate::index::id_table::IdTable;
use crate::types::{ChunkId, ChunkRef, Id, IdMap};
use base::{Base, CacheError, Entry, Meta, PackInfo};
use rayon::prelude::*;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// Where this machine keeps a store's derived index.
#[derive(Clone)]
pub(crate) struct IndexCache {
    dir: PathBuf,
}

impl IndexCache {
    /// The cache of store `store`; `None` without a cache directory.
    pub(crate) fn for_store(store: &Id) -> Option<IndexCache> {
        Some(IndexCache {
            dir: crate::cache_root()?.join(store.to_hex()).join("index"),
        })
    }

    pub(crate) fn base_path(&self) -> PathBuf {
        self.dir.join("chunks")
    }

    fn map_path(&self, map: &Id) -> PathBuf {
        self.dir.join("maps").join(map.to_hex())
    }

    /// The sorted chunk file, if there is one (an unreadable one is an error).
    pub(crate) fn open_base(&self) -> Result<Option<Base>, CacheError> {
        match Base::open(&self.base_path()) {
            Ok(b) => Ok(Some(b)),
            Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the sorted chunk file (best effort): the next backup rebuilds it.
    pub(crate) fn drop_base(&self) {
        let _ = std::fs::remove_file(self.base_path());
    }

    /// The resolved page map `map`, if this machine has a whole one. A damaged
    /// one is removed, so the long way writes it again.
    pub(crate) fn resolved(&self, map: &Id) -> Option<Vec<ChunkId>> {
        match resolved::read(&self.map_path(map), map) {
            Ok(ids) => {
                touch(&self.map_path(map));
                Some(ids)
            }
            Err(CacheError::Damaged { .. }) => {
                self.drop_resolved(map);
                None
            }
            Err(_) => None,
        }
    }

    pub(crate) fn has_resolved(&self, map: &Id) -> bool {
        self.map_path(map).exists()
    }

    /// Records the resolved page map `map`: its `count` named ids (best effort:
    /// failing costs a later backup the long way). Streamed: a full map of a
    /// large image names half a million chunks.
    pub(crate) fn put_resolved(&self, map: &Id, ids: impl Iterator<Item = ChunkId>, count: usize) {
        write_whole(&self.map_path(map), |out| {
            resolved::write(out, map, ids, count)
        });
    }

    /// Forgets the resolved page map `map` (no later backup's chain holds it).
    pub(crate) fn drop_resolved(&self, map: &Id) {
        let _ = std::fs::remove_file(self.map_path(map));
    }

    fn placed_path(&self, map: &Id) -> PathBuf {
        self.dir.join("placed").join(map.to_hex())
    }

    /// Where the chunks of the list of map `map` were (see [`resolved::Placement`]).
    pub(crate) fn placed(&self, map: &Id) -> Option<resolved::Placement> {
        let path = self.placed_path(map);
        let bytes = base::read_bounded(&path, 1 << 34).ok()?;
        let p = resolved::decode_placement(map, &bytes);
        match p {
            Some(_) => touch(&path),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        p
    }

    /// Deletes the resolved maps and placements not used for `unused` (those of
    /// databases no longer backed up here, or of chains another machine took
    /// over); returns how many. A database backed up again later takes the long
    /// way once. Best effort.
    pub(crate) fn sweep(&self, unused: std::time::Duration) -> usize {
        let Some(before) = std::time::SystemTime::now().checked_sub(unused) else {
            return 0;
        };
        let mut swept = 0;
        for folder in ["maps", "placed"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(folder)) else {
                continue;
            };
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < before);
                if old && std::fs::remove_file(e.path()).is_ok() {
                    swept += 1;
                }
            }
        }
        swept
    }

    pub(crate) fn put_placed(&self, map: &Id, p: &resolved::Placement) {
        write_whole(&self.placed_path(map), |out| {
            out.write_all(&resolved::encode_placement(map, p))
        });
    }

    pub(crate) fn drop_placed(&self, map: &Id) {
        let _ = std::fs::remove_file(self.placed_path(map));
    }

    /// Writes the sorted chunk file from a whole, sealed index (every copy of
    /// every located chunk) and, if given, the index object a backup just wrote
    /// (id, size, body: its packs are present); `sizes` gives each index
    /// object's size in the store. Returns the number of entries written.
    pub(crate) fn write_base(
        &self,
        index: &ChunkIndex,
        own: Option<(Id, u64, &IndexBody)>,
        sizes: &IdMap<u64>,
    ) -> Result<u64, CacheError> {
        self.write_with(None, &[], &[], index, own, sizes)
    }

    /// Writes a new sorted chunk file from `old` and `delta` (a whole, sealed
    /// index of the objects `old` does not cover), streaming `old` (memory stays
    /// that of the delta). Entries of `old` whose index object is no longer
    /// listed with its size, or whose pack is not present with its length (a
    /// prune deleted or rewrote them), are left out: every entry written names a
    /// chunk by an index object that exists, in a pack that exists.
    pub(crate) fn write_merged(
        &self,
        old: &Base,
        delta: &ChunkIndex,
        sizes: &IdMap<u64>,
        present: &IdMap<u64>,
    ) -> Result<u64, CacheError> {
        let lists: Vec<bool> = old
            .meta
            .lists
            .iter()
            .map(|(l, n)| sizes.get(l) == Some(n))
            .collect();
        let packs: Vec<bool> = old
            .meta
            .packs
            .iter()
            .map(|p| present.get(&p.id) == Some(&p.len))
            .collect();
        let result = self.write_with(Some(old), &lists, &packs, delta, None, sizes);
        if result.is_err() {
            // A damaged block of the old file: a new one would lack its chunks.
            self.drop_base();
        }
        result
    }

    /// Writes the file: the entries of `old` whose index object and pack are
    /// kept, renumbered, merged in id order with every location of `index` and
    /// every entry of `own`.
    fn write_with(
        &self,
        old_file: Option<&Base>,
        keep_lists: &[bool],
        keep_packs: &[bool],
        index: &ChunkIndex,
        own: Option<(Id, u64, &IndexBody)>,
        sizes: &IdMap<u64>,
    ) -> Result<u64, CacheError> {
        let renumber = |keep: &[bool]| -> Vec<Option<u32>> {
            let mut n = 0u32;
            keep.iter()
                .map(|&k| {
                    k.then(|| {
                        n += 1;
                        n - 1
                    })
                })
                .collect()
        };
        let (list_no, pack_no) = (renumber(keep_lists), renumber(keep_packs));
        let empty = Meta::default();
        let old = old_file.map_or(&empty, |b| &b.meta);
        let mut meta = Meta {
            lists: old
                .lists
                .iter()
                .zip(keep_lists)
                .filter(|(_, k)| **k)
                .map(|(l, _)| *l)
                .collect(),
            packs: old
                .packs
                .iter()
                .zip(keep_packs)
                .filter(|(_, k)| **k)
                .map(|(p, _)| p.clone())
                .collect(),
            damaged: old
                .damaged
                .iter()
                .filter(|(l, n)| sizes.get(l) == Some(n))
                .copied()
                .collect(),
            blocks: Vec::new(),
        };
        let (lists0, packs0) = (meta.lists.len() as u32, meta.packs.len() as u32);
        meta.lists.extend(
            index
                .lists()
                .iter()
                .map(|l| (*l, sizes.get(l).copied().unwrap_or(u64::MAX))),
        );
        meta.packs
            .extend((0..index.packs().count() as u32).map(|p| pack_info(index, p)));
        meta.damaged.extend(
            index
                .damaged_lists()
                .map(|l| (*l, sizes.get(l).copied().unwrap_or(u64::MAX))),
        );
        let failed: Mutex<Option<CacheError>> = Mutex::new(None);
        let olds = old_file
            .into_iter()
            .flat_map(|b| b.iter())
            .filter_map(|r| match r {
                Ok(e) => Some(Entry {
                    list: list_no[e.list as usize]?,
                    pack: pack_no[e.pack as usize]?,
                    ..e
                }),
                Err(e) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
            });
        let mut dups: Vec<Entry> = index
            .duplicates()
            .iter()
            .map(|(id, l)| entry_of(id, l))
            .collect();
        dups.sort_by_key(|e| e.id);
        let located = MergeAll::new(
            index.iter().map(|(id, l)| entry_of(id, l)),
            dups.into_iter(),
        )
        .map(|e| Entry {
            list: lists0 + e.list,
            pack: packs0 + e.pack,
            ..e
        });
        // The backup's own index object, in id order through a permutation (its
        // body is held already; a first backup's lists half a million chunks).
        let (own_list, own_packs) = (meta.lists.len() as u32, meta.packs.len() as u32);
        let own_entries: &[IndexEntry] = match own {
            Some((id, len, body)) => {
                meta.lists.push((id, len));
                meta.packs.extend(body.packs.iter().map(|p| PackInfo {
                    id: p.id,
                    len: p.len,
                    dict: p.dict,
                }));
                &body.entries
            }
            None => &[],
        };
        let mut order: Vec<u32> = (0..own_entries.len() as u32).collect();
        order.par_sort_unstable_by_key(|&i| own_entries[i as usize].entry.id);
        let owned = order.into_iter().map(|i| {
            let e = &own_entries[i as usize];
            Entry {
                id: e.entry.id,
                list: own_list,
                ordinal: i,
                pack: own_packs + e.pack,
                slot: Slot::from(&e.entry),
            }
        });
        let n = base::write(
            &self.base_path(),
            meta,
            MergeAll::new(olds, MergeAll::new(located, owned)),
        );
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => n,
        }
    }
}

fn entry_of(id: &ChunkId, l: &crate::index::chunk_index::Location) -> Entry {
    Entry {
        id: *id,
        list: l.list,
        ordinal: l.ordinal,
        pack: l.pack,
        slot: l.entry,
    }
}

/// Two id-ordered streams of entries as one, keeping both of equal ids (the
/// first stream's first).
struct MergeAll<A: Iterator<Item = Entry>, B: Iterator<Item = Entry>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A: Iterator<Item = Entry>, B: Iterator<Item = Entry>> MergeAll<A, B> {
    fn new(a: A, b: B) -> Self {
        MergeAll {
            a: a.peekable(),
            b: b.peekable(),
        }
    }
}

impl<A: Iterator<Item = Entry>, B: Iterator<Item = Entry>> Iterator for MergeAll<A, B> {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.id < x.id => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Marks a cache file as used now (its modification time), for [`IndexCache::sweep`].
fn touch(path: &std::path::Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Writes a cache file whole, through `write`: to a temporary name, renamed
/// once complete. Best effort (a cache file that is missing costs time only).
fn write_whole(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) {
    let Some(dir) = path.parent() else { return };
    if crate::create_private_dirs(dir).is_err() {
        return;
    }
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        if write(&mut out).is_ok() && out.into_inner().is_ok() {
            let _ = tmp.persist(path);
        }
    }
}

fn pack_info(index: &ChunkIndex, pos: u32) -> PackInfo {
    let p = index.packs().pack_ref(pos);
    PackInfo {
        id: p.id,
        len: p.len,
        dict: p.dict,
    }
}

/// What a backup asks of the index: is a chunk stored, where, and by what name
/// (index object, ordinal) a page map can refer to it.
pub(crate) enum ChunkLookup {
    /// The whole index in memory (the long way, and every command but backup).
    Whole(Box<ChunkIndex>),
    /// The parent's chunks, the delta in memory, the sorted chunk file on disk.
    Layered(Box<Layered>),
}

/// Where a chunk is: its pack, that pack's dictionary, its entry in the pack.
pub(crate) type Placed = (Id, Option<Id>, PackEntry);

impl ChunkLookup {
    pub(crate) fn contains(&self, id: &ChunkId) -> bool {
        match self {
            ChunkLookup::Whole(index) => index.contains(id),
            ChunkLookup::Layered(l) => l.contains(id),
        }
    }

    /// The parent's chunk at position `pos`, if it is a zero chunk or a stored
    /// one whose pack is present (the short way only: the long way does not
    /// keep the parent's list).
    pub(crate) fn parent_at(&self, pos: u64) -> Option<ChunkRef> {
        match self {
            ChunkLookup::Whole(_) => None,
            ChunkLookup::Layered(l) => l.positions.at(pos as usize, &l.parent),
        }
    }

    pub(crate) fn locate(&self, id: &ChunkId) -> Option<Placed> {
        match self {
            ChunkLookup::Whole(index) => index.get(id).map(|loc| {
                (
                    index.pack_id(loc.pack),
                    index.pack_dict(loc.pack),
                    loc.pack_entry(*id),
                )
            }),
            ChunkLookup::Layered(l) => l.locate(id),
        }
    }

    /// The located chunks whose ids begin with `key` (8 bytes, big-endian):
    /// how a delta blob's base prefix is resolved (store/bases.rs).
    pub(crate) fn sharing(&self, key: u64) -> Vec<ChunkId> {
        match self {
            ChunkLookup::Whole(index) => index.sharing(key),
            ChunkLookup::Layered(l) => l.sharing(key),
        }
    }

    pub(crate) fn name_of(&self, id: &ChunkId) -> Option<(Id, u64)> {
        match self {
            ChunkLookup::Whole(index) => index.name_of(id),
            ChunkLookup::Layered(l) => l.name_of(id),
        }
    }

    /// The pack chunk `id` is in, and its length (for placements), asked
    /// first of the parent's chunk at position `pos` (most of a list is the
    /// parent's, in place: a look at one bit map, not a search).
    pub(crate) fn pack_at(&self, pos: u64, id: &ChunkId) -> Option<(Id, u64)> {
        match self {
            ChunkLookup::Whole(index) => {
                let p = index.packs().pack_ref(index.get(id)?.pack);
                Some((p.id, p.len))
            }
            ChunkLookup::Layered(l) => l.pack_at(pos, id).or_else(|| l.pack_of(id)),
        }
    }

    /// Chunks the lookup covers (the delta's and the file's; a chunk in both
    /// counts twice).
    pub(crate) fn entries(&self) -> u64 {
        match self {
            ChunkLookup::Whole(index) => index.entries() as u64,
            ChunkLookup::Layered(l) => l.delta.entries() as u64 + l.base.entries(),
        }
    }

    /// The error a lookup in the sorted chunk file met, if any (the file is then
    /// removed, and the chunk was taken as not stored).
    pub(crate) fn cache_error(&self) -> Option<String> {
        match self {
            ChunkLookup::Whole(_) => None,
            ChunkLookup::Layered(l) => l
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|e| e.to_string()),
        }
    }
}

/// The short way's lookup. Built only when the checks of the module comment
/// passed: every chunk of the parent is then in a present pack, and named by an
/// index object the delta or the file covers.
pub(crate) struct Layered {
    /// The parent's stored chunks whose pack is still present, and that pack
    /// (a number in `parent_packs`).
    parent: Vec<ChunkId>,
    parent_at: Vec<u32>,
    parent_packs: Vec<(Id, u64)>,
    parent_table: IdTable,
    /// Which of `parent` each of the parent's positions holds.
    positions: Positions,
    pub(crate) delta: ChunkIndex,
    pub(crate) base: Base,
    /// Chunks found in the file, kept so that later questions about them (their
    /// name, their place) get the same answer without another read.
    found: Mutex<IdMap<Entry>>,
    failed: Mutex<Option<CacheError>>,
    cache: IndexCache,
}

/// The parent's positions as the capture asks about them (backup/prints/: an
/// unchanged block takes the parent's chunks there): one bit per position for
/// a zero chunk, one for a stored chunk whose pack is present, and a running
/// count of the latter per 64 positions, which says where in `Layered::parent`
/// its id is: 80 KiB for 262,144 positions (1 GiB of 4 KiB pages), not a
/// second copy of the list (8.6 MB).
struct Positions {
    zero: Vec<u64>,
    kept: Vec<u64>,
    /// Kept positions before each word of `kept`.
    rank: Vec<u32>,
}

impl Positions {
    /// From the parent's list, and for each of its stored chunks in order
    /// whether its pack is present.
    fn new(list: &[ChunkRef], mut present: impl Iterator<Item = bool>) -> Positions {
        let words = list.len().div_ceil(64);
        let (mut zero, mut kept) = (vec![0u64; words], vec![0u64; words]);
        for (pos, c) in list.iter().enumerate() {
            let bit = 1u64 << (pos % 64);
            match c {
                ChunkRef::Zero => zero[pos / 64] |= bit,
                ChunkRef::Stored(_) => {
                    if present.next().unwrap_or(false) {
                        kept[pos / 64] |= bit;
                    }
                }
            }
        }
        let mut rank = Vec::with_capacity(words);
        let mut n = 0u32;
        for w in &kept {
            rank.push(n);
            n += w.count_ones();
        }
        Positions { zero, kept, rank }
    }

    /// The chunk at `pos` (its id from `ids`, the kept chunks in order).
    fn at(&self, pos: usize, ids: &[ChunkId]) -> Option<ChunkRef> {
        let (w, bit) = (pos / 64, 1u64 << (pos % 64));
        if self.zero.get(w)? & bit != 0 {
            return Some(ChunkRef::Zero);
        }
        self.kept_index(pos)
            .and_then(|k| ids.get(k))
            .map(|id| ChunkRef::Stored(*id))
    }

    /// Where in the kept chunks the one at `pos` is, if `pos` holds one.
    fn kept_index(&self, pos: usize) -> Option<usize> {
        let (w, bit) = (pos / 64, 1u64 << (pos % 64));
        if self.kept.get(w)? & bit == 0 {
            return None;
        }
        Some((self.rank[w] + (self.kept[w] & (bit - 1)).count_ones()) as usize)
    }
}

impl Layered {
    /// `parent_list` is the parent's chunk list and `placed` where its stored
    /// chunks were; only those whose pack `present` still holds (by id, with its
    /// length) are taken as stored without a lookup. `None` if `placed` does not
    /// fit the list.
    pub(crate) fn new(
        parent_list: &[ChunkRef],
        placed: resolved::Placement,
        present: &IdMap<u64>,
        delta: ChunkIndex,
        base: Base,
        cache: IndexCache,
    ) -> Option<Layered> {
        let stored = parent_list.iter().filter_map(|c| match c {
            ChunkRef::Stored(id) => Some(*id),
            ChunkRef::Zero => None,
        });
        if stored.clone().count() != placed.at.len() {
            return None;
        }
        let here: Vec<bool> = placed
            .packs
            .iter()
            .map(|(id, len)| present.get(id) == Some(len))
            .collect();
        let positions = Positions::new(parent_list, placed.at.iter().map(|&at| here[at as usize]));
        let (parent, parent_at): (Vec<ChunkId>, Vec<u32>) = stored
            .zip(placed.at)
            .filter(|(_, at)| here[*at as usize])
            .unzip();
        let mut parent_table = IdTable::with_capacity(parent.len());
        for (i, id) in parent.iter().enumerate() {
            parent_table.insert(id, i as u32, |p| parent[p as usize]);
        }
        Some(Layered {
            parent,
            parent_at,
            parent_packs: placed.packs,
            parent_table,
            positions,
            delta,
            base,
            found: Mutex::new(IdMap::default()),
            failed: Mutex::new(None),
            cache,
        })
    }

    fn in_parent(&self, id: &ChunkId) -> bool {
        self.parent_pos(id).is_some()
    }

    fn parent_pos(&self, id: &ChunkId) -> Option<usize> {
        self.parent_table
            .get(id, |p| self.parent[p as usize])
            .map(|p| p as usize)
    }

    /// The pack of the parent's chunk at `pos`, if that chunk is `id`.
    fn pack_at(&self, pos: u64, id: &ChunkId) -> Option<(Id, u64)> {
        let k = self.positions.kept_index(pos as usize)?;
        match self.parent.get(k) {
            Some(p) if p == id => Some(self.parent_packs[self.parent_at[k] as usize]),
            _ => None,
        }
    }

    fn pack_of(&self, id: &ChunkId) -> Option<(Id, u64)> {
        if let Some(i) = self.parent_pos(id) {
            return Some(self.parent_packs[self.parent_at[i] as usize]);
        }
        if let Some(loc) = self.delta.get(id) {
            let p = self.delta.packs().pack_ref(loc.pack);
            return Some((p.id, p.len));
        }
        let e = self.in_base(id)?;
        let p = &self.base.meta.packs[e.pack as usize];
        Some((p.id, p.len))
    }

    /// The file's entry of `id`. A read that fails (a damaged block) is recorded
    /// and the file removed; the chunk is then taken as not stored, which only
    /// stores it again.
    fn in_base(&self, id: &ChunkId) -> Option<Entry> {
        if let Some(e) = self.found.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Some(*e);
        }
        match self.base.find(id) {
            Ok(Some(e)) => {
                self.found
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*id, e);
                Some(e)
            }
            Ok(None) => None,
            Err(e) => {
                self.cache.drop_base();
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                None
            }
        }
    }

    fn contains(&self, id: &ChunkId) -> bool {
        self.in_parent(id) || self.delta.contains(id) || self.in_base(id).is_some()
    }

    /// The chunks of the delta and the file whose ids begin with `key` (8
    /// bytes, big-endian). A failed read of the file is handled as
    /// [`Layered::in_base`] handles one: what the file held is then not known.
    fn sharing(&self, key: u64) -> Vec<ChunkId> {
        let mut ids = self.delta.sharing(key);
        match self.base.find_prefix(key) {
            Ok(entries) => {
                let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
                for e in entries {
                    found.entry(e.id).or_insert(e);
                    ids.push(e.id);
                }
            }
            Err(e) => {
                self.cache.drop_base();
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn locate(&self, id: &ChunkId) -> Option<Placed> {
        if let Some(loc) = self.delta.get(id) {
            return Some((
                self.delta.pack_id(loc.pack),
                self.delta.pack_dict(loc.pack),
                loc.pack_entry(*id),
            ));
        }
        let e = self.in_base(id)?;
        let p = &self.base.meta.packs[e.pack as usize];
        Some((p.id, p.dict, entry(id, &e.slot)))
    }

    fn name_of(&self, id: &ChunkId) -> Option<(Id, u64)> {
        if let Some(name) = self.delta.name_of(id) {
            return Some(name);
        }
        let e = self.in_base(id)?;
        Some((
            self.base.meta.lists[e.list as usize].0,
            u64::from(e.ordinal),
        ))
    }
}

fn entry(id: &ChunkId, s: &Slot) -> PackEntry {
    PackEntry {
        id: *id,
        offset: s.offset,
        stored_len: s.stored_len,
        raw_len: s.raw_len,
        codec: s.codec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{IndexBody, IndexEntry, PackRef};
    use crate::format::pack::Codec;
    use proptest::prelude::*;

    /// The parent's positions answer with its chunk there: zero chunks, stored
    /// ones whose pack is present (by rank among those), and none for a
    /// stored chunk whose pack is gone, at every word boundary.
    #[test]
    fn positions_name_the_parents_chunk_at_each_position() {
        let list: Vec<ChunkRef> = (0..200u32)
            .map(|i| match i % 5 {
                0 => ChunkRef::Zero,
                _ => ChunkRef::Stored(Id([(i % 251) as u8; 32])),
            })
            .collect();
        // Every seventh stored chunk's pack is gone.
        let present: Vec<bool> = (0..160).map(|k| k % 7 != 3).collect();
        let p = Positions::new(&list, present.iter().copied());
        let mut stored = list.iter().filter(|c| matches!(c, ChunkRef::Stored(_)));
        let ids: Vec<ChunkId> = present
            .iter()
            .zip(&mut stored)
            .filter(|(here, _)| **here)
            .map(|(_, c)| match c {
                ChunkRef::Stored(id) => *id,
                ChunkRef::Zero => unreachable!(),
            })
            .collect();
        let mut k = 0;
        for (pos, c) in list.iter().enumerate() {
            let want = match c {
                ChunkRef::Zero => Some(ChunkRef::Zero),
                ChunkRef::Stored(_) => {
                    k += 1;
                    present[k - 1].then_some(*c)
                }
            };
            assert_eq!(p.at(pos, &ids), want, "position {pos}");
        }
        assert_eq!(p.at(200, &ids), None, "past the end");
        assert_eq!(p.at(1 << 20, &ids), None, "far past the end");
    }

    /// An index object of chunks `ids` (seeds), over two packs.
    fn body(ids: &[u32], pack_seed: u8) -> IndexBody {
        IndexBody {
            packs: (0..2)
                .map(|i| PackRef {
                    id: Id([pack_seed + i; 32]),
                    len: 1000 + u64::from(i),
                    dict: None,
                })
                .collect(),
            entries: ids
                .iter()
                .enumerate()
                .map(|(k, &n)| IndexEntry {
                    pack: (n % 2),
                    entry: PackEntry {
                        id: Id::of_object(&n.to_le_bytes()),
                        offset: k as u32 * 10,
                        stored_len: 10,
                        raw_len: 4096,
                        codec: Codec::Zstd,
                    },
                })
                .collect(),
            deltas: Vec::new(),
        }
    }

    fn layered(base: Base, delta: ChunkIndex, dir: &std::path::Path) -> ChunkLookup {
        ChunkLookup::Layered(Box::new(
            Layered::new(
                &[],
                resolved::Placement::default(),
                &IdMap::default(),
                delta,
                base,
                IndexCache {
                    dir: dir.to_path_buf(),
                },
            )
            .unwrap(),
        ))
    }

    proptest! {
        /// A file built from objects A, merged with objects B, answers as the
        /// whole index of A and B does: the same chunks stored, and for each a
        /// location and name one of the objects gives (a chunk in both has both);
        /// the layered lookup before the merge (file of A, delta B) agrees on
        /// which chunks are stored. After a prune deletes A (and its packs), the
        /// rewritten file holds B's chunks only.
        #[test]
        fn merged_file_answers_as_the_whole_index(
            a in proptest::collection::btree_set(0u32..3000, 0..400),
            b in proptest::collection::btree_set(0u32..3000, 0..400),
            absent in proptest::collection::vec(3000u32..4000, 0..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cache = IndexCache { dir: dir.path().to_path_buf() };
            let (a, b): (Vec<u32>, Vec<u32>) = (a.into_iter().collect(), b.into_iter().collect());
            let (la, lb) = (Id([1; 32]), Id([2; 32]));
            let (ba, bb) = (body(&a, 10), body(&b, 20));
            let sizes: IdMap<u64> = [(la, 5), (lb, 6)].into_iter().collect();
            let present: IdMap<u64> = ba.packs.iter().chain(&bb.packs).map(|p| (p.id, p.len)).collect();
            let all = |_: &Id, _: u64| true;
            let index_of = |bodies: &[(Id, &IndexBody)]| {
                let mut i = ChunkIndex::default();
                for (l, body) in bodies {
                    i.add(*l, body, all);
                }
                i.seal();
                i
            };
            cache.write_base(&index_of(&[(la, &ba)]), None, &sizes).unwrap();
            let before = layered(cache.open_base().unwrap().unwrap(), index_of(&[(lb, &bb)]), dir.path());
            let n = cache
                .write_merged(&cache.open_base().unwrap().unwrap(), &index_of(&[(lb, &bb)]), &sizes, &present)
                .unwrap();
            prop_assert_eq!(n, (a.len() + b.len()) as u64);
            let merged = layered(cache.open_base().unwrap().unwrap(), ChunkIndex::default(), dir.path());
            let only_a = ChunkLookup::Whole(Box::new(index_of(&[(la, &ba)])));
            let only_b = ChunkLookup::Whole(Box::new(index_of(&[(lb, &bb)])));
            for n in a.iter().chain(&b).chain(&absent) {
                let id = Id::of_object(&n.to_le_bytes());
                let stored = only_a.contains(&id) || only_b.contains(&id);
                prop_assert_eq!(merged.contains(&id), stored);
                prop_assert_eq!(before.contains(&id), stored);
                let name = merged.name_of(&id);
                prop_assert_eq!(name.is_some(), stored);
                if let Some(name) = name {
                    let from = if name.0 == la { &only_a } else { &only_b };
                    prop_assert_eq!(Some(name), from.name_of(&id));
                    prop_assert_eq!(merged.locate(&id), from.locate(&id));
                }
            }
            prop_assert_eq!(&cache.open_base().unwrap().unwrap().meta.lists, &vec![(la, 5), (lb, 6)]);
            // The same file, built by the long way from A's index and the index
            // object B a backup just wrote.
            let dir2 = tempfile::tempdir().unwrap();
            let cache2 = IndexCache { dir: dir2.path().to_path_buf() };
            let sizes_a: IdMap<u64> = [(la, 5)].into_iter().collect();
            cache2.write_base(&index_of(&[(la, &ba)]), Some((lb, 6, &bb)), &sizes_a).unwrap();
            let built = layered(cache2.open_base().unwrap().unwrap(), ChunkIndex::default(), dir2.path());
            prop_assert_eq!(&built.base_meta().lists, &vec![(la, 5), (lb, 6)]);
            for n in a.iter().chain(&b).chain(&absent) {
                let id = Id::of_object(&n.to_le_bytes());
                prop_assert_eq!(built.contains(&id), merged.contains(&id));
                prop_assert_eq!(built.name_of(&id), merged.name_of(&id));
                prop_assert_eq!(built.locate(&id), merged.locate(&id));
            }
            // A prune deletes A's index object and packs.
            let sizes_b: IdMap<u64> = [(lb, 6)].into_iter().collect();
            let present_b: IdMap<u64> = bb.packs.iter().map(|p| (p.id, p.len)).collect();
            cache
                .write_merged(&cache.open_base().unwrap().unwrap(), &index_of(&[]), &sizes_b, &present_b)
                .unwrap();
            let pruned = layered(cache.open_base().unwrap().unwrap(), ChunkIndex::default(), dir.path());
            prop_assert_eq!(&pruned.base_meta().lists, &vec![(lb, 6)]);
            for n in a.iter().chain(&b) {
                let id = Id::of_object(&n.to_le_bytes());
                prop_assert_eq!(pruned.contains(&id), only_b.contains(&id));
                prop_assert_eq!(pruned.name_of(&id), only_b.name_of(&id));
            }
        }
    }

    #[test]
    fn sweeps_delete_only_files_unused_for_long() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache {
            dir: dir.path().to_path_buf(),
        };
        let (used, unused, fresh) = (Id([1; 32]), Id([2; 32]), Id([3; 32]));
        let month_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
        for m in [used, unused, fresh] {
            cache.put_resolved(&m, [Id([9; 32])].into_iter(), 1);
            cache.put_placed(&m, &resolved::Placement::default());
        }
        for m in [used, unused] {
            for p in [cache.map_path(&m), cache.placed_path(&m)] {
                std::fs::File::options()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_modified(month_ago)
                    .unwrap();
            }
        }
        // Reading them marks them used.
        assert!(cache.resolved(&used).is_some());
        assert!(cache.placed(&used).is_some());
        assert_eq!(cache.sweep(std::time::Duration::from_secs(30 * 86_400)), 2);
        assert!(cache.resolved(&unused).is_none() && cache.placed(&unused).is_none());
        for m in [used, fresh] {
            assert!(cache.resolved(&m).is_some() && cache.placed(&m).is_some());
        }
    }

    impl ChunkLookup {
        fn base_meta(&self) -> &Meta {
            match self {
                ChunkLookup::Layered(l) => &l.base.meta,
                ChunkLookup::Whole(_) => unreachable!(),
            }
        }
    }
}
