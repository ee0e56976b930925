//! One snapshot reader: "give me pages a..b of snapshot S".
//!
//! [`resolve`] is the one way a snapshot's positions are resolved to (chunk id,
//! location): the short way through the index objects its page maps name
//! ([`super::plan`]), else the whole index. Restore and salvage take their
//! positions from it and rebuild the image sequentially, window by window (their
//! fast path, checked against the image check); [`SnapshotReader`] takes them from
//! it too, to read any pages at random. A random read cannot lean on the whole
//! image's check, so it checks every chunk it decodes against its id (through
//! the codec's [`Decoder::decode_checked`]). Its cost for a single page is one
//! ranged read of a pack (and, once, the pack's dictionary), no plan.
//!
//! The caller holds the store's read lock ([`Store::read_lock`]) while it reads.
//!
//! The snapshot VFS (query/) reads through [`SnapshotReader`].

use super::plan::RestorePlan;
use super::position_cache::{self, PositionFile};
use super::rebuild::{
    fetch_error, fetch_parallel, group_runs, Listed, Position, Positions, Run, MAX_GAP, MAX_RUN,
};
use crate::codec::Decoder;
use crate::index::chunk_index::{ChunkIndex, Location, PackTable};
use crate::store::bases::{Bases, Chains, DEFAULT_CACHE_BYTES};
use crate::store::{Snapshot, Store};
use crate::types::ChunkRef;
use crate::{layout, Error, Result};
use std::sync::{Mutex, PoisonError, RwLock};

/// A snapshot's positions resolved: each one's chunk and where it is.
pub(crate) enum Resolved {
    /// The short way: every stored chunk located through the index objects the
    /// maps name.
    Plan(RestorePlan),
    /// The long way, when the short one cannot answer: the whole index.
    Whole(Whole),
    /// The short way's answer kept on this machine (the snapshot reader only).
    Cached(PositionFile),
}

/// Positions resolved through the whole index: the chunk list and each stored
/// chunk's location (`None`: nothing locates it).
pub(crate) struct Whole {
    pub index: ChunkIndex,
    pub chunks: Vec<ChunkRef>,
    pub locs: Vec<Option<Location>>,
}

impl Whole {
    /// A reader of delta bases through this index, in a store with deltas.
    pub(crate) fn chains(&self, store: &Store) -> Result<Option<Chains<'_>>> {
        match store.config().deltas {
            true => Ok(Some(Chains::new(
                store.backend().clone(),
                &self.index,
                store.chunk_ids(),
            )?)),
            false => Ok(None),
        }
    }

    /// The error of the first stored chunk nothing locates, if any.
    pub(crate) fn check_located(&self, snap: &Snapshot) -> Result<()> {
        for (c, loc) in self.chunks.iter().zip(&self.locs) {
            if let (ChunkRef::Stored(id), None) = (c, loc) {
                return Err(self.index.unlocated(snap.id, id));
            }
        }
        Ok(())
    }

    fn listed(&self) -> Listed<'_> {
        Listed {
            chunks: &self.chunks,
            locs: &self.locs,
        }
    }
}

impl Positions for Whole {
    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn at(&self, i: usize) -> Option<Position> {
        self.listed().at(i)
    }
}

impl Resolved {
    /// The packs the positions' locations number.
    pub(crate) fn packs(&self) -> &PackTable {
        match self {
            Resolved::Plan(p) => &p.packs,
            Resolved::Whole(w) => w.index.packs(),
            Resolved::Cached(f) => f.packs(),
        }
    }

    pub(crate) fn positions(&self) -> &dyn Positions {
        match self {
            Resolved::Plan(p) => p,
            Resolved::Whole(w) => w,
            Resolved::Cached(f) => f,
        }
    }

    /// A reader of delta bases, in a store with deltas: through the plan's
    /// table of every located chunk, or the whole index. `None` for a store
    /// without deltas, and from a position file (kept only for those).
    pub(crate) fn chains(&self, store: &Store) -> Result<Option<Chains<'_>>> {
        match self {
            Resolved::Whole(w) => w.chains(store),
            Resolved::Plan(p) => p.chains(store),
            Resolved::Cached(_) => Ok(None),
        }
    }
}

/// Resolves the positions of `snap`: the short way if it can answer, else the
/// whole index (see `plan.rs`). Errors are a page map that is missing or damaged,
/// or an index that cannot be read.
///
/// In a store with deltas the short way reads every index object, not only
/// those the maps name: a delta's base may be any stored chunk. Its plan then
/// locates bases in a table of their ids' prefixes ([`RestorePlan::chains`]),
/// without building the whole index.
pub(crate) fn resolve(store: &Store, snap: &Snapshot) -> Result<Resolved> {
    resolve_with(store, snap, true)
}

/// [`resolve`]; without `check_packs` the short way does not list the packs
/// (see [`Store::restore_plan_with`]). A store with deltas always lists them:
/// a base is read wherever the table of bases says, and a read of a pack
/// gone since would be damage, not a reason to resolve again.
fn resolve_with(store: &Store, snap: &Snapshot, check_packs: bool) -> Result<Resolved> {
    let check_packs = check_packs || store.config().deltas;
    match store.restore_plan_with(snap, check_packs)? {
        Some(plan) => Ok(Resolved::Plan(plan)),
        None => resolve_whole(store, snap),
    }
}

/// The long way: the whole index.
fn resolve_whole(store: &Store, snap: &Snapshot) -> Result<Resolved> {
    let index = store.load_index()?;
    let chunks = store.chunk_list_with(&index, snap)?;
    let locs = index.locate_all(&chunks);
    Ok(Resolved::Whole(Whole {
        index,
        chunks,
        locs,
    }))
}

/// Reads of packs one read of positions sends at once.
const PARALLEL_READS: usize = 8;

/// Reads any pages of one snapshot, each chunk checked against its id.
///
/// It resolves the short way without listing the packs (a query's requests on
/// S3 are few), so a pack that a prune has rewritten since is found missing
/// only when read: the reader then takes the long way, which locates the
/// chunks where they are now, and reads again. In a store with deltas it lists
/// them (as the long way does), and reads bases through the plan's table.
pub(crate) struct SnapshotReader {
    store: Store,
    snap: Snapshot,
    resolved: RwLock<Resolved>,
    /// Decompression contexts, with the dictionaries loaded so far.
    decoder: Mutex<Decoder>,
    /// Bases of delta chunks (a store with deltas).
    bases: Option<Bases>,
}

impl SnapshotReader {
    /// Resolves `snap`'s positions: from this machine's position file when it
    /// has a sound one, else the short way (without listing the packs but in a
    /// store with deltas), which is then kept in such a file, else the long
    /// way (see [`resolve`]).
    pub(crate) fn open(store: &Store, snap: &Snapshot) -> Result<Self> {
        // No file keeps a store with deltas' plan (its table of bases).
        let dir = (store.uses_local_cache() && !store.config().deltas)
            .then(|| position_cache::folder(&store.config().store_id))
            .flatten();
        let known = match &dir {
            Some(d) => position_cache::lookup(d, &snap.id, snap.manifest.chunk_count),
            None => position_cache::Lookup::Unknown,
        };
        let resolved = match known {
            position_cache::Lookup::File(f) => Resolved::Cached(*f),
            known => {
                let r = resolve_with(store, snap, false)?;
                if let (Resolved::Plan(plan), Some(d)) = (&r, &dir) {
                    // A snapshot opened again is likely to be opened more: its
                    // file is written the second time, not for one-off queries.
                    store.mark_cache();
                    match known {
                        position_cache::Lookup::Seen => {
                            position_cache::write(d, &snap.id, plan, &plan.packs)
                        }
                        _ => position_cache::mark_seen(d, &snap.id, plan.len()),
                    };
                }
                r
            }
        };
        Ok(SnapshotReader {
            store: store.clone(),
            snap: snap.clone(),
            resolved: RwLock::new(resolved),
            decoder: Mutex::new(Decoder::new(store.chunk_ids())?),
            bases: match store.config().deltas {
                // Smaller than a restore's: a reader serves a few pages at a time.
                true => Some(Bases::new(
                    store.backend().clone(),
                    DEFAULT_CACHE_BYTES / 8,
                    store.chunk_ids(),
                )?),
                false => None,
            },
        })
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// Pages of the snapshot's image.
    pub(crate) fn page_count(&self) -> u64 {
        let m = &self.snap.manifest;
        m.image_len / m.page_size as u64
    }

    /// Chunk position `i`: zeros, or a stored chunk (and where it is).
    pub(crate) fn position(&self, i: usize) -> Result<Option<Position>> {
        let (got, cached) = {
            let resolved = self.resolved();
            (
                resolved.positions().at(i),
                matches!(*resolved, Resolved::Cached(_)),
            )
        };
        match (got, cached) {
            (None, true) => {
                self.fall_back()?;
                Ok(self.resolved().positions().at(i))
            }
            (got, _) => Ok(got),
        }
    }

    /// Resolves again, one way further: from this machine's position file (one
    /// that failed a check, or named a pack that is gone: it is deleted) to the
    /// short way; from the short way (a pack a prune has rewritten since) to
    /// the long way. `false` when the long way was already taken.
    fn fall_back(&self) -> Result<bool> {
        let next = match &*self.resolved() {
            Resolved::Cached(f) => {
                f.discard();
                resolve_with(&self.store, &self.snap, false)?
            }
            Resolved::Plan(_) => resolve_whole(&self.store, &self.snap)?,
            Resolved::Whole(_) => return Ok(false),
        };
        *self
            .resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next;
        Ok(true)
    }

    /// Chunk positions of the image.
    pub(crate) fn chunk_count(&self) -> usize {
        self.resolved().positions().len()
    }

    fn resolved(&self) -> std::sync::RwLockReadGuard<'_, Resolved> {
        // Only ever replaced whole (by the long way): a poisoned lock holds a
        // complete value.
        self.resolved.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pages `first_page..first_page + count` of the image.
    #[cfg_attr(not(test), allow(dead_code))] // the tests read through them
    pub(crate) fn read_pages(&self, first_page: u64, count: u64) -> Result<Vec<u8>> {
        let m = &self.snap.manifest;
        let end_page = first_page
            .checked_add(count)
            .filter(|&e| e <= self.page_count());
        let Some(end_page) = end_page else {
            return Err(Error::Invalid {
                what: "page range",
                detail: format!(
                    "pages {first_page}..{first_page}+{count} lie past the snapshot's {} pages",
                    self.page_count()
                ),
            });
        };
        let ps = m.page_size as u64;
        let (start, end) = (first_page * ps, end_page * ps);
        if start == end {
            return Ok(Vec::new());
        }
        let chunk_len = m.chunk_len();
        let first = (start / chunk_len) as usize;
        let last = end.div_ceil(chunk_len) as usize;
        let bytes = self.read_positions(first..last)?;
        let from = (start - first as u64 * chunk_len) as usize;
        Ok(bytes[from..from + (end - start) as usize].to_vec())
    }

    /// The bytes of chunk position `pos` (zeros for a zero chunk; the last may be short).
    #[cfg_attr(not(test), allow(dead_code))] // the tests read through them
    pub(crate) fn read_chunk(&self, pos: usize) -> Result<Vec<u8>> {
        self.read_positions(pos..pos + 1)
    }

    /// The image bytes of positions `range` (within the image).
    pub(crate) fn read_positions(&self, range: std::ops::Range<usize>) -> Result<Vec<u8>> {
        loop {
            // The guard is dropped at the end of the statement, before a write.
            let (read, cached) = {
                let resolved = self.resolved();
                let cached = matches!(*resolved, Resolved::Cached(_));
                (self.read_resolved(&resolved, range.clone()), cached)
            };
            match read {
                // This machine's file may be what is wrong: the store decides.
                // A pack the short way took to be there may be gone (rewritten
                // by a prune since the maps were written): the long way finds
                // where its chunks are now.
                Err(e) if cached || matches!(e, Error::PackMissing { .. }) => {
                    if !self.fall_back()? {
                        return Err(e);
                    }
                }
                r => return r,
            }
        }
    }

    fn read_resolved(&self, resolved: &Resolved, range: std::ops::Range<usize>) -> Result<Vec<u8>> {
        let m = &self.snap.manifest;
        let positions = resolved.positions();
        let packs = resolved.packs();
        if range.end > positions.len() {
            return Err(Error::Internal(format!(
                "chunk position {} of {}",
                range.end - 1,
                positions.len()
            )));
        }
        let chunk_len = m.chunk_len();
        let start = range.start as u64 * chunk_len;
        let end = (range.end as u64 * chunk_len).min(m.image_len);
        let mut out = vec![0u8; (end - start) as usize];
        // The stored chunks, by pack and offset, neighbours read together.
        let mut items = Vec::new();
        for i in range.clone() {
            match positions.at(i) {
                Some(Position::Zero) => {}
                Some(Position::Stored(id, loc)) => items.push((i, id, loc)),
                Some(Position::Unlocated(id)) => {
                    return Err(match resolved {
                        Resolved::Whole(w) => w.index.unlocated(self.snap.id, &id),
                        Resolved::Plan(_) | Resolved::Cached(_) => Error::ChunkMissing {
                            snapshot: self.snap.id,
                            chunk: id,
                        },
                    })
                }
                None => return Err(Error::Internal(format!("read position {i} has no chunk"))),
            }
        }
        // By pack and offset, neighbours read together, as a restore reads them.
        let runs = group_runs(items, MAX_RUN, MAX_GAP);
        let backend = self.store.backend().as_ref();
        let fetch = |run: &Run| {
            let key = layout::pack(&packs.id(run.pack));
            backend
                .get_range(&key, run.start..run.end)
                .map_err(|e| fetch_error(&self.snap, run.items[0].1, key, e))
        };
        // A read-ahead window spans several packs: their reads go out at once
        // (on S3 each waits on the network), then are decoded in order.
        let fetched: Vec<Vec<u8>> = match runs.as_slice() {
            [] => Vec::new(),
            [run] => vec![fetch(run)?],
            many => fetch_parallel(many, many.len().min(PARALLEL_READS), fetch)?,
        };
        let mut decoder = self
            .decoder
            .lock()
            .map_err(|_| Error::Internal("snapshot reader poisoned".into()))?;
        for (run, bytes) in runs.iter().zip(fetched) {
            let key = layout::pack(&packs.id(run.pack));
            let first = run.items[0].1;
            let dict = packs.dict(run.pack);
            if let Some(d) = &dict {
                decoder
                    .ensure_dict(backend, d)
                    .map_err(|e| match e.is_damage() {
                        true => Error::ChunkDamaged {
                            snapshot: Some(self.snap.id),
                            chunk: first,
                            object: layout::dict(d),
                            detail: format!("its pack's dictionary cannot be read: {e}"),
                        },
                        false => e,
                    })?;
            }
            for (pos, id, loc) in &run.items {
                let damaged = |detail: String| Error::ChunkDamaged {
                    snapshot: Some(self.snap.id),
                    chunk: *id,
                    object: key.clone(),
                    detail,
                };
                let off = (loc.entry.offset as u64 - run.start) as usize;
                let stored = off
                    .checked_add(loc.entry.stored_len as usize)
                    .and_then(|e| bytes.get(off..e))
                    .ok_or_else(|| damaged("the pack ends before the chunk".into()))?;
                let at = (*pos as u64 * chunk_len - start) as usize;
                let slot_len = (chunk_len as usize).min(out.len() - at);
                if loc.entry.raw_len as usize != slot_len {
                    return Err(damaged(format!(
                        "{} bytes where position {pos} needs {slot_len}",
                        loc.entry.raw_len
                    )));
                }
                let entry = loc.pack_entry(*id);
                let base = match (&self.bases, resolved) {
                    (Some(b), Resolved::Whole(w)) => b
                        .base_for(&entry, stored, &w.index)
                        .map_err(|e| e.or_damaged(damaged))?,
                    (Some(b), Resolved::Plan(p)) => b
                        .base_for(&entry, stored, p)
                        .map_err(|e| e.or_damaged(damaged))?,
                    _ => None,
                };
                decoder
                    .decode_into_checked_with_base(
                        &entry,
                        stored,
                        dict.as_ref(),
                        base.as_deref().map(|b| b.as_slice()),
                        &mut out[at..at + slot_len],
                    )
                    .map_err(|e| e.or_damaged(damaged))?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotReader;
    use crate::backend::{Backend, LocalBackend, ObjectInfo, PutMode};
    use crate::restore::rebuild::Position;
    use crate::{layout, BackupOptions, Error, InitOptions, Store};
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;

    /// A local store that counts the objects read (whole or ranged).
    struct Counting(LocalBackend, Arc<AtomicUsize>);

    impl Backend for Counting {
        fn location(&self) -> String {
            self.0.location()
        }
        fn put(&self, key: &str, data: &[u8], mode: PutMode) -> crate::backend::Result<()> {
            self.0.put(key, data, mode)
        }
        fn get(&self, key: &str) -> crate::backend::Result<Vec<u8>> {
            self.1.fetch_add(1, Relaxed);
            self.0.get(key)
        }
        fn get_range(&self, key: &str, range: Range<u64>) -> crate::backend::Result<Vec<u8>> {
            self.1.fetch_add(1, Relaxed);
            self.0.get_range(key, range)
        }
        fn size(&self, key: &str) -> crate::backend::Result<Option<u64>> {
            self.0.size(key)
        }
        fn list(&self, prefix: &str) -> crate::backend::Result<Vec<ObjectInfo>> {
            self.0.list(prefix)
        }
        fn delete(&self, key: &str) -> crate::backend::Result<()> {
            self.0.delete(key)
        }
    }

    /// A small deterministic generator (the tests must not depend on a seed file).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A store (`chunk_pages`, dictionaries or not) with snapshots of a database
    /// changed at random between backups: new rows, rewritten rows, zeroed rows,
    /// deletions and a vacuum (maps that are deltas of deltas, zero chunks, chunks
    /// from several packs).
    fn random_store(
        seed: u64,
        chunk_pages: u32,
        dictionary: bool,
    ) -> anyhow::Result<(tempfile::TempDir, Arc<AtomicUsize>, Store)> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let options = InitOptions {
            chunk_pages,
            dictionary,
            ..InitOptions::default()
        };
        Store::init(dir.path().join("store"), &options)?;
        let gets = Arc::new(AtomicUsize::new(0));
        let backend = Counting(LocalBackend::new(dir.path().join("store")), gets.clone());
        let store = Store::open_backend(Arc::new(backend))?;
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);",
        )?;
        let mut rng = Rng(seed | 1);
        for step in 0..5 {
            let n = 50 + rng.below(300);
            let sql = match (step, rng.below(4)) {
                (0, _) | (_, 0) => format!(
                    "INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) SELECT randomblob({}) || zeroblob({}) FROM n",
                    500 + rng.below(3000),
                    rng.below(2000)
                ),
                (_, 1) => format!("UPDATE t SET v = randomblob({}) WHERE k % {} = 0", 100 + rng.below(3000), 2 + rng.below(9)),
                (_, 2) => format!("UPDATE t SET v = zeroblob({}) WHERE k % {} = 1", 3000 + rng.below(2000), 2 + rng.below(5)),
                _ => format!("DELETE FROM t WHERE k % {} = 0; VACUUM", 3 + rng.below(5)),
            };
            conn.execute_batch(&sql)?;
            store.backup_path(&db, &BackupOptions::default())?;
        }
        Ok((dir, gets, store))
    }

    /// For snapshots of random histories, every page read through the reader (one
    /// by one, in random ranges, chunk by chunk) is the restored image's, byte for
    /// byte; a single page costs at most one read of a pack and, once, its
    /// dictionary; a range past the end is refused.
    #[test]
    fn pages_read_are_the_restored_images() -> anyhow::Result<()> {
        for (seed, chunk_pages, dictionary) in [(7, 1, false), (11, 4, true), (23, 2, false)] {
            let (_dir, gets, store) = random_store(seed, chunk_pages, dictionary)?;
            let mut rng = Rng(seed * 31 + 1);
            for snap in store.snapshots()? {
                let mut image = Vec::new();
                store.restore_to_writer(&snap, &mut image)?;
                let reader = SnapshotReader::open(&store, &snap)?;
                let ps = snap.manifest.page_size as usize;
                assert_eq!(reader.page_count() as usize * ps, image.len());
                assert!(matches!(*reader.resolved(), super::Resolved::Plan(_)));
                assert_eq!(
                    reader.resolved().packs().any_dict(),
                    dictionary,
                    "seed {seed}"
                );
                let mut dict_loads = 0;
                for p in 0..reader.page_count() {
                    let before = gets.load(Relaxed);
                    let page = reader.read_pages(p, 1)?;
                    let read = gets.load(Relaxed) - before;
                    assert!(read <= 2, "page {p}: {read} objects read");
                    dict_loads += read.saturating_sub(1);
                    let at = p as usize * ps;
                    assert!(page == image[at..at + ps], "seed {seed}, page {p}");
                }
                assert!(dict_loads <= 1, "a dictionary is loaded once");
                for _ in 0..20 {
                    let first = rng.below(reader.page_count());
                    let count = rng.below(reader.page_count() - first + 1);
                    let got = reader.read_pages(first, count)?;
                    let at = first as usize * ps;
                    assert!(
                        got == image[at..at + count as usize * ps],
                        "pages {first}+{count}"
                    );
                }
                let chunk_len = snap.manifest.chunk_len() as usize;
                for pos in 0..reader.chunk_count() {
                    let at = pos * chunk_len;
                    let end = (at + chunk_len).min(image.len());
                    assert!(reader.read_chunk(pos)? == image[at..end], "position {pos}");
                }
                let past = reader.read_pages(reader.page_count(), 1).unwrap_err();
                assert!(matches!(past, Error::Invalid { .. }), "{past}");
            }
        }
        Ok(())
    }

    /// A damaged chunk fails the read of its page with an error naming the chunk
    /// and the snapshot (the reader checks every chunk's id; a random read cannot
    /// lean on the image check), while other pages still read.
    #[test]
    fn a_damaged_chunk_is_named() -> anyhow::Result<()> {
        let (_dir, _gets, store) = random_store(5, 1, false)?;
        let snap = store.snapshots()?.pop().expect("snapshots");
        let mut image = Vec::new();
        store.restore_to_writer(&snap, &mut image)?;
        let reader = SnapshotReader::open(&store, &snap)?;
        assert_eq!(reader.snapshot().id, snap.id);
        let n = reader.chunk_count();
        // A bit flipped in a stored chunk's blob: it no longer decodes, or (kept
        // raw) no longer matches its id.
        let (pos, id, loc) = (0..n)
            .find_map(|i| match reader.position(i).ok().flatten() {
                Some(Position::Stored(id, loc)) => Some((i, id, loc)),
                _ => None,
            })
            .expect("a stored chunk");
        let key = layout::pack(&reader.resolved().packs().id(loc.pack));
        let backend = store.backend();
        let mut pack = backend.get(&key)?;
        pack[loc.entry.offset as usize + loc.entry.stored_len as usize / 2] ^= 0x10;
        backend.put(&key, &pack, PutMode::Overwrite)?;
        let err = reader.read_chunk(pos).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::ChunkDamaged { .. }), "{text}");
        assert!(text.contains(&id.to_hex()), "{text}");
        assert!(text.contains(&snap.id.short()), "{text}");
        assert!(text.contains(&key), "{text}");
        // A page of another chunk (a zero one, or of another pack) still reads.
        let chunk_len = snap.manifest.chunk_len() as usize;
        let other = (0..n).find(|&i| match reader.position(i).ok().flatten() {
            Some(Position::Zero) => true,
            Some(Position::Stored(_, l)) => l.pack != loc.pack,
            _ => false,
        });
        if let Some(i) = other {
            let at = i * chunk_len;
            let end = (at + chunk_len).min(image.len());
            assert!(reader.read_chunk(i)? == image[at..end]);
        }
        Ok(())
    }

    /// A prune that rewrites packs leaves the kept snapshots' page maps naming
    /// their chunks through index objects whose packs are gone. The reader
    /// (which does not list packs) finds that on its first read of such a
    /// chunk, takes the long way, and reads every page right.
    #[test]
    fn a_pack_rewritten_by_prune_is_found_the_long_way() -> anyhow::Result<()> {
        use crate::PruneOptions;
        let (_dir, _gets, store) = random_store(41, 1, false)?;
        let snaps = store.snapshots()?;
        let keep = snaps.last().expect("snapshots").clone();
        let forget: Vec<_> = snaps[..snaps.len() - 1].iter().map(|s| s.id).collect();
        store.forget_snapshots(&forget, false)?;
        let opts = PruneOptions {
            max_unused: 0.0,
            ..PruneOptions::default()
        };
        let report = store.prune(&opts)?;
        assert!(report.packs_rewritten > 0, "{report:?}");
        let mut image = Vec::new();
        store.restore_to_writer(&keep, &mut image)?;
        let reader = SnapshotReader::open(&store, &keep)?;
        assert!(matches!(*reader.resolved(), super::Resolved::Plan(_)));
        let ps = keep.manifest.page_size as usize;
        for p in 0..reader.page_count() {
            let at = p as usize * ps;
            assert!(reader.read_pages(p, 1)? == image[at..at + ps], "page {p}");
        }
        assert!(matches!(*reader.resolved(), super::Resolved::Whole(_)));
        Ok(())
    }

    /// A snapshot opened a second time reads its positions from this machine's
    /// position file; every page is still the restored image's. A file whose
    /// bytes are damaged, or that names a pack a prune has since rewritten,
    /// sends the reader back through the store (and is deleted), and every
    /// page still reads right.
    #[test]
    fn a_snapshot_opened_again_reads_its_position_file() -> anyhow::Result<()> {
        use crate::PruneOptions;
        let (_dir, _gets, store) = random_store(53, 1, false)?;
        let snaps = store.snapshots()?;
        let keep = snaps.last().expect("snapshots").clone();
        let mut image = Vec::new();
        store.restore_to_writer(&keep, &mut image)?;
        let ps = keep.manifest.page_size as usize;
        let all_pages = |reader: &SnapshotReader| -> anyhow::Result<()> {
            for p in 0..reader.page_count() {
                let at = p as usize * ps;
                anyhow::ensure!(reader.read_pages(p, 1)? == image[at..at + ps], "page {p}");
            }
            Ok(())
        };
        // Opened once: marked (an empty file); twice: written; then read.
        let path = super::position_cache::folder(&store.config().store_id)
            .expect("a cache folder")
            .join(keep.id.to_hex());
        for _ in 0..2 {
            let r = SnapshotReader::open(&store, &keep)?;
            assert!(matches!(*r.resolved(), super::Resolved::Plan(_)));
        }
        assert!(std::fs::metadata(&path)?.len() > 0);
        let again = SnapshotReader::open(&store, &keep)?;
        assert!(matches!(*again.resolved(), super::Resolved::Cached(_)));
        all_pages(&again)?;
        // A flipped byte in the records: read through the store, file deleted.
        let mut bytes = std::fs::read(&path)?;
        // (The records follow the 68-byte header.)
        bytes[200] ^= 0x40;
        std::fs::write(&path, &bytes)?;
        let damaged = SnapshotReader::open(&store, &keep)?;
        assert!(matches!(*damaged.resolved(), super::Resolved::Cached(_)));
        all_pages(&damaged)?;
        assert!(!matches!(*damaged.resolved(), super::Resolved::Cached(_)));
        assert!(!path.exists(), "the damaged file is deleted");
        // Written again, then a prune rewrites the packs it names.
        drop(SnapshotReader::open(&store, &keep)?);
        drop(SnapshotReader::open(&store, &keep)?);
        assert!(std::fs::metadata(&path)?.len() > 0);
        let forget: Vec<_> = snaps[..snaps.len() - 1].iter().map(|s| s.id).collect();
        store.forget_snapshots(&forget, false)?;
        let report = store.prune(&PruneOptions {
            max_unused: 0.0,
            ..PruneOptions::default()
        })?;
        assert!(report.packs_rewritten > 0, "{report:?}");
        let stale = SnapshotReader::open(&store, &keep)?;
        assert!(matches!(*stale.resolved(), super::Resolved::Cached(_)));
        all_pages(&stale)?;
        assert!(matches!(*stale.resolved(), super::Resolved::Whole(_)));
        // Without the local cache, no file is read or written.
        let plain = store.clone().without_index_cache();
        let r = SnapshotReader::open(&plain, &keep)?;
        assert!(!matches!(*r.resolved(), super::Resolved::Cached(_)));
        Ok(())
    }

    /// In a store with deltas, every page read through the reader is the
    /// restored image's (deltas decoded through their chains), and the store
    /// does hold deltas.
    #[test]
    fn pages_of_a_store_with_deltas_are_the_restored_images() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let store = Store::init(dir.path().join("store"), &InitOptions::with_deltas())?;
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
               SELECT printf('row %d of many rows that change little', i) FROM n;",
        )?;
        let mut deltas = 0;
        for step in 0..10 {
            conn.execute_batch(&format!(
                "UPDATE t SET v = v || '{step}' WHERE k % 97 = {step}"
            ))?;
            deltas += store
                .backup_path(&db, &BackupOptions::default())?
                .stats
                .delta_chunks;
        }
        assert!(deltas > 0);
        for snap in store.snapshots()? {
            let mut image = Vec::new();
            store.restore_to_writer(&snap, &mut image)?;
            let reader = SnapshotReader::open(&store, &snap)?;
            // The short way, its bases found in the plan's table.
            assert!(matches!(*reader.resolved(), super::Resolved::Plan(_)));
            let ps = snap.manifest.page_size as usize;
            for p in 0..reader.page_count() {
                let at = p as usize * ps;
                assert!(reader.read_pages(p, 1)? == image[at..at + ps], "page {p}");
            }
        }
        Ok(())
    }
}
