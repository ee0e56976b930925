//! The sorted chunk file: every located chunk of the index objects it covers,
//! sorted by id in checksummed blocks, searched with one positioned read per
//! lookup. Only the block table (16 bytes per 64 chunks) and the object tables
//! are held in memory: 5 MB for 20 million chunks, where the whole in-memory
//! index took 2 GB.
//!
//! Layout (little-endian; docs/FORMAT.md, "Local index cache"):
//!
//! ```text
//! entries  count × 60 bytes, sorted by id, in blocks of 64
//! meta     postcard: covered index objects, packs, block table
//! footer   64 bytes: magic, version, entries, meta offset and length, checksums
//! ```

use crate::format::pack::Codec;
use crate::format::{checksum64, LeReader};
use crate::index::chunk_index::Slot;
use crate::types::{ChunkId, Id};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 8] = *b"PSNPCIDX";
pub const VERSION: u32 = 1;
pub const ENTRY_LEN: usize = 60;
pub const BLOCK_ENTRIES: usize = 64;
pub const FOOTER_LEN: usize = 64;
/// Bound on the decoded meta section: 1 GiB covers ~4·10⁹ chunks.
const MAX_META: u64 = 1 << 30;

/// Why the file cannot be used. Never fatal to a backup: it takes the long way
/// and writes the file again.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Damaged { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn damaged(path: &Path, why: impl Into<String>) -> CacheError {
    CacheError::Damaged {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// One chunk: which covered index object names it (and at which ordinal), which
/// pack holds it and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: ChunkId,
    pub list: u32,
    pub ordinal: u32,
    pub pack: u32,
    pub slot: Slot,
}

impl Entry {
    fn encode(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.id.0);
        let words = [
            self.list,
            self.ordinal,
            self.pack,
            self.slot.offset,
            self.slot.stored_len,
            self.slot.raw_len,
        ];
        for (i, w) in words.iter().enumerate() {
            out[32 + 4 * i..36 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        out[56] = self.slot.codec as u8;
        out[57..60].fill(0);
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        let mut r = LeReader::new(b);
        let id = Id(r.array().ok()?);
        let mut word = || r.u32().ok();
        let (list, ordinal, pack) = (word()?, word()?, word()?);
        let (offset, stored_len, raw_len) = (word()?, word()?, word()?);
        Some(Entry {
            id,
            list,
            ordinal,
            pack,
            slot: Slot {
                offset,
                stored_len,
                raw_len,
                codec: Codec::from_u8(r.u8().ok()?).ok()?,
            },
        })
    }
}

/// A pack the entries point into, with the length its index object recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    pub id: Id,
    pub len: u64,
    pub dict: Option<Id>,
}

/// What the file covers: the index objects (with their sizes in the store), the
/// packs, and per block its first id's first 8 bytes and a checksum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub lists: Vec<(Id, u64)>,
    pub packs: Vec<PackInfo>,
    /// Index objects that could not be read when the file was built (their chunks
    /// are unknown), with their sizes then.
    pub damaged: Vec<(Id, u64)>,
    pub blocks: Vec<(u64, u64)>,
}

/// The first 8 bytes of an id as a number ordered like the id.
pub fn prefix(id: &ChunkId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(first)
}

/// Writes a file from entries in ascending id order (an id may repeat: other
/// copies of a chunk). `meta.blocks`
/// is filled in here. Written to a temporary name and renamed: a reader sees the
/// old file or the whole new one. Not fsynced: it is derived data, and a file
/// torn by a crash fails its checksums and is built again.
pub fn write(
    path: &Path,
    mut meta: Meta,
    entries: impl Iterator<Item = Entry>,
) -> Result<u64, CacheError> {
    let dir = path
        .parent()
        .ok_or_else(|| damaged(path, "no parent directory"))?;
    crate::create_private_dirs(dir).map_err(io(dir))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let mut block = Vec::with_capacity(BLOCK_ENTRIES * ENTRY_LEN);
    let mut first = 0u64;
    let mut count = 0u64;
    let mut last: Option<ChunkId> = None;
    meta.blocks.clear();
    for e in entries {
        if last.is_some_and(|l| l > e.id) {
            return Err(damaged(path, "entries out of order (a bug)"));
        }
        last = Some(e.id);
        if block.is_empty() {
            first = prefix(&e.id);
        }
        let at = block.len();
        block.resize(at + ENTRY_LEN, 0);
        e.encode(&mut block[at..]);
        count += 1;
        if block.len() == BLOCK_ENTRIES * ENTRY_LEN {
            meta.blocks.push((first, checksum64(&block)));
            out.write_all(&block).map_err(io(path))?;
            block.clear();
        }
    }
    if !block.is_empty() {
        meta.blocks.push((first, checksum64(&block)));
        out.write_all(&block).map_err(io(path))?;
    }
    let meta_bytes =
        postcard::to_allocvec(&meta).map_err(|e| damaged(path, format!("encoding: {e}")))?;
    out.write_all(&meta_bytes).map_err(io(path))?;
    out.write_all(&footer(count, meta_bytes.len() as u64, &meta_bytes))
        .map_err(io(path))?;
    out.flush().map_err(io(path))?;
    drop(out);
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(count)
}

fn footer(count: u64, meta_len: u64, meta: &[u8]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[..8].copy_from_slice(&MAGIC);
    f[8..12].copy_from_slice(&VERSION.to_le_bytes());
    f[12..16].copy_from_slice(&(BLOCK_ENTRIES as u32).to_le_bytes());
    f[16..24].copy_from_slice(&count.to_le_bytes());
    f[24..32].copy_from_slice(&(count * ENTRY_LEN as u64).to_le_bytes());
    f[32..40].copy_from_slice(&meta_len.to_le_bytes());
    f[40..56].copy_from_slice(&blake3::hash(meta).as_bytes()[..16]);
    let sum = checksum64(&f[..56]);
    f[56..64].copy_from_slice(&sum.to_le_bytes());
    f
}

/// An open file: its tables in memory, entries read on demand.
pub struct Base {
    path: PathBuf,
    file: File,
    pub meta: Meta,
    count: u64,
    /// Which index objects and packs of the tables still exist (all, until
    /// [`Base::retain`]); entries naming others are skipped.
    lists_ok: Vec<bool>,
    packs_ok: Vec<bool>,
}

impl Base {
    /// Opens and checks the footer and tables (not the entries: each block is
    /// checked when read).
    pub fn open(path: &Path) -> Result<Base, CacheError> {
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < FOOTER_LEN as u64 {
            return Err(damaged(path, "shorter than its footer"));
        }
        let mut f = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut f, len - FOOTER_LEN as u64)
            .map_err(io(path))?;
        // The footer is FOOTER_LEN bytes: none of these reads can run short.
        let mut r = LeReader::new(&f);
        let field = |e: crate::format::FormatError| damaged(path, e.to_string());
        let magic: [u8; 8] = r.array().map_err(field)?;
        let (version, per_block) = (r.u32().map_err(field)?, r.u32().map_err(field)?);
        let (count, meta_at, meta_len) = (
            r.u64().map_err(field)?,
            r.u64().map_err(field)?,
            r.u64().map_err(field)?,
        );
        let meta_sum: [u8; 16] = r.array().map_err(field)?;
        let footer_sum = r.u64().map_err(field)?;
        if magic != MAGIC {
            return Err(damaged(path, "not a pagesnap index cache (bad magic)"));
        }
        if checksum64(&f[..56]) != footer_sum {
            return Err(damaged(path, "footer checksum mismatch"));
        }
        if version != VERSION || per_block != BLOCK_ENTRIES as u32 {
            return Err(damaged(
                path,
                format!("version {version} (this build reads {VERSION})"),
            ));
        }
        if count.checked_mul(ENTRY_LEN as u64) != Some(meta_at)
            || meta_len > MAX_META
            || meta_at
                .checked_add(meta_len)
                .and_then(|n| n.checked_add(FOOTER_LEN as u64))
                != Some(len)
        {
            return Err(damaged(path, "section lengths disagree with the file's"));
        }
        let mut meta_bytes = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut meta_bytes, meta_at)
            .map_err(io(path))?;
        if blake3::hash(&meta_bytes).as_bytes()[..16] != meta_sum {
            return Err(damaged(path, "table checksum mismatch"));
        }
        let meta: Meta =
            postcard::from_bytes(&meta_bytes).map_err(|e| damaged(path, format!("tables: {e}")))?;
        if meta.blocks.len() as u64 != count.div_ceil(BLOCK_ENTRIES as u64) {
            return Err(damaged(path, "block table disagrees with the entry count"));
        }
        Ok(Base {
            path: path.to_path_buf(),
            file,
            lists_ok: vec![true; meta.lists.len()],
            packs_ok: vec![true; meta.packs.len()],
            meta,
            count,
        })
    }

    pub fn entries(&self) -> u64 {
        self.count
    }

    /// Reads and checks block `b`, appending its entries to `out`.
    fn read_block(
        &self,
        b: usize,
        buf: &mut Vec<u8>,
        out: &mut Vec<Entry>,
    ) -> Result<(), CacheError> {
        self.read_block_where(b, buf, out, |_| true)
    }

    /// [`Base::read_block`], decoding only the entries whose id bytes pass
    /// `want`: a lookup's, which needs one or two of the block's 64 (decoding
    /// them all was most of a lookup's time; the checksum still covers the block).
    fn read_block_where(
        &self,
        b: usize,
        buf: &mut Vec<u8>,
        out: &mut Vec<Entry>,
        want: impl Fn(&[u8]) -> bool,
    ) -> Result<(), CacheError> {
        let start = b as u64 * BLOCK_ENTRIES as u64;
        let n = (self.count - start).min(BLOCK_ENTRIES as u64) as usize;
        buf.resize(n * ENTRY_LEN, 0);
        self.file
            .read_exact_at(buf, start * ENTRY_LEN as u64)
            .map_err(io(&self.path))?;
        if checksum64(buf) != self.meta.blocks[b].1 {
            return Err(damaged(&self.path, format!("block {b} checksum mismatch")));
        }
        for raw in buf.chunks_exact(ENTRY_LEN).filter(|raw| want(&raw[..32])) {
            let e = Entry::decode(raw)
                .filter(|e| {
                    (e.list as usize) < self.meta.lists.len()
                        && (e.pack as usize) < self.meta.packs.len()
                })
                .ok_or_else(|| damaged(&self.path, format!("block {b}: bad entry")))?;
            out.push(e);
        }
        Ok(())
    }

    /// Skips, from now on, the entries whose index object `lists` does not keep
    /// or whose pack `packs` does not keep (a prune deleted or rewrote them, or a
    /// pack is lost): the file is then as if rewritten without them.
    pub fn retain(&mut self, lists: impl Fn(&Id, u64) -> bool, packs: impl Fn(&PackInfo) -> bool) {
        self.lists_ok = self.meta.lists.iter().map(|(l, n)| lists(l, *n)).collect();
        self.packs_ok = self.meta.packs.iter().map(packs).collect();
    }

    /// The index objects [`Base::retain`] kept.
    pub fn kept_lists(&self) -> impl Iterator<Item = &Id> {
        self.meta
            .lists
            .iter()
            .zip(&self.lists_ok)
            .filter(|(_, ok)| **ok)
            .map(|((l, _), _)| l)
    }

    /// The share of the covered index objects' bytes that [`Base::retain`] left
    /// out: about the share of entries skipped.
    pub fn skipped_share(&self) -> f64 {
        let total: u64 = self.meta.lists.iter().map(|(_, n)| *n).sum();
        let gone: u64 = self
            .meta
            .lists
            .iter()
            .zip(&self.lists_ok)
            .filter(|(_, ok)| !**ok)
            .map(|((_, n), _)| *n)
            .sum();
        gone as f64 / total.max(1) as f64
    }

    fn kept(&self, e: &Entry) -> bool {
        self.lists_ok[e.list as usize] && self.packs_ok[e.pack as usize]
    }

    /// An entry of chunk `id` (kept by [`Base::retain`]), if the file has one.
    pub fn find(&self, id: &ChunkId) -> Result<Option<Entry>, CacheError> {
        let key = prefix(id);
        let blocks = &self.meta.blocks;
        // Blocks that can hold `key`: from the last starting below it (the key may
        // continue it) through the last starting at it (ids sharing 8 bytes, very
        // rare, may span a boundary).
        let hi = blocks.partition_point(|b| b.0 <= key);
        if hi == 0 {
            return Ok(None);
        }
        let lo = blocks.partition_point(|b| b.0 < key).saturating_sub(1);
        let mut buf = Vec::new();
        let mut found = Vec::new();
        for b in lo..hi {
            self.read_block_where(b, &mut buf, &mut found, |raw| raw == id.0)?;
        }
        // Every copy of the chunk (they sit together), the first one kept.
        Ok(found.into_iter().find(|e| self.kept(e)))
    }

    /// The kept entries whose id's first 8 bytes, big-endian, are `key` (a
    /// delta blob's base prefix), one per chunk.
    pub fn find_prefix(&self, key: u64) -> Result<Vec<Entry>, CacheError> {
        let blocks = &self.meta.blocks;
        let hi = blocks.partition_point(|b| b.0 <= key);
        if hi == 0 {
            return Ok(Vec::new());
        }
        let lo = blocks.partition_point(|b| b.0 < key).saturating_sub(1);
        let mut buf = Vec::new();
        let mut found = Vec::new();
        let key_bytes = key.to_be_bytes();
        for b in lo..hi {
            self.read_block_where(b, &mut buf, &mut found, |raw| raw[..8] == key_bytes)?;
        }
        let mut out: Vec<Entry> = found.into_iter().filter(|e| self.kept(e)).collect();
        out.dedup_by_key(|e| e.id);
        Ok(out)
    }

    /// Every entry in id order, block by block (each checked).
    pub fn iter(&self) -> impl Iterator<Item = Result<Entry, CacheError>> + '_ {
        let mut buf = Vec::new();
        (0..self.meta.blocks.len()).flat_map(move |b| {
            let mut out = Vec::with_capacity(BLOCK_ENTRIES);
            match self.read_block(b, &mut buf, &mut out) {
                Ok(()) => out.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        })
    }
}

/// Reads a whole small file, bounded (used for the resolved-map files).
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, CacheError> {
    let f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    if len > limit {
        return Err(damaged(
            path,
            format!("{len} bytes, over the {limit}-byte bound"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(limit).read_to_end(&mut bytes).map_err(io(path))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: Id, n: u32) -> Entry {
        Entry {
            id,
            list: n % 3,
            ordinal: n,
            pack: n % 2,
            slot: Slot {
                offset: n.wrapping_mul(7),
                stored_len: n / 2 + 1,
                raw_len: 4096,
                codec: Codec::from_u8((n % 3) as u8).unwrap(),
            },
        }
    }

    fn meta() -> Meta {
        Meta {
            lists: (0..3).map(|i| (Id([i; 32]), 100 + i as u64)).collect(),
            packs: (0..2)
                .map(|i| PackInfo {
                    id: Id([10 + i; 32]),
                    len: 5,
                    dict: (i == 1).then_some(Id([9; 32])),
                })
                .collect(),
            damaged: vec![(Id([4; 32]), 9)],
            blocks: Vec::new(),
        }
    }

    proptest! {
        /// Every written entry is found as written; ids not written are not;
        /// iteration gives them back in order. Ids are made to share their first
        /// 8 bytes in runs, so runs span block boundaries.
        #[test]
        fn entries_round_trip_and_are_found(
            seeds in proptest::collection::btree_set(any::<u32>(), 0..700),
            absent in proptest::collection::vec(any::<u32>(), 0..50),
        ) {
            let id = |n: u32| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&(n / 100).to_be_bytes());
                b[28..].copy_from_slice(&n.to_be_bytes());
                Id(b)
            };
            let entries: Vec<Entry> = seeds.iter().map(|&n| entry(id(n), n)).collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("chunks");
            prop_assert_eq!(write(&path, meta(), entries.iter().copied()).unwrap(), entries.len() as u64);
            let base = Base::open(&path).unwrap();
            prop_assert_eq!(base.entries(), entries.len() as u64);
            prop_assert_eq!(&base.meta.lists, &meta().lists);
            prop_assert_eq!(&base.meta.packs, &meta().packs);
            prop_assert_eq!(&base.meta.damaged, &meta().damaged);
            for e in &entries {
                prop_assert_eq!(base.find(&e.id).unwrap(), Some(*e));
            }
            for n in absent.iter().filter(|n| !seeds.contains(n)) {
                prop_assert_eq!(base.find(&id(*n)).unwrap(), None);
            }
            let back: Vec<Entry> = base.iter().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(back, entries);
        }
    }

    #[test]
    fn damage_anywhere_is_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        let entries: Vec<Entry> = (0..200u32)
            .map(|n| entry(Id::of_object(&n.to_le_bytes()), n))
            .collect();
        let mut sorted = entries.clone();
        sorted.sort_by_key(|e| e.id);
        write(&path, meta(), sorted.iter().copied()).unwrap();
        let good = std::fs::read(&path).unwrap();
        // Each byte flipped in turn at a spread of places: the file either fails
        // to open, or every lookup of a damaged block fails; never a wrong answer.
        for at in (0..good.len()).step_by(37) {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let Ok(base) = Base::open(&path) else {
                continue;
            };
            for e in &sorted {
                match base.find(&e.id) {
                    Ok(found) => assert_eq!(found, Some(*e), "byte {at} flipped"),
                    Err(err) => assert!(err.to_string().contains("checksum"), "{err}"),
                }
            }
        }
        // Truncated and empty files fail to open.
        for len in [0, 10, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(Base::open(&path).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn copies_of_a_chunk_are_all_kept_and_retain_skips_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        // Chunk 7 in lists 0 and 1 (packs 0 and 1), chunk 8 in list 2 (pack 0),
        // with enough others around them to span blocks.
        let mut entries: Vec<Entry> = (0..300u32)
            .map(|n| entry(Id::of_object(&n.to_le_bytes()), n))
            .collect();
        let (c7, c8) = (Id([7; 32]), Id([8; 32]));
        let copy = |id, list, pack| Entry {
            list,
            pack,
            ..entry(id, 5)
        };
        entries.extend([copy(c7, 0, 0), copy(c7, 1, 1), copy(c8, 2, 0)]);
        entries.sort_by_key(|e| e.id);
        assert_eq!(write(&path, meta(), entries.iter().copied()).unwrap(), 303);
        let mut base = Base::open(&path).unwrap();
        assert_eq!(base.find(&c7).unwrap().map(|e| e.list), Some(0));
        assert_eq!(base.skipped_share(), 0.0);
        // List 0 deleted (a prune): the other copy.
        base.retain(|l, _| *l != Id([0; 32]), |_| true);
        assert_eq!(
            base.find(&c7).unwrap().map(|e| (e.list, e.pack)),
            Some((1, 1))
        );
        assert_eq!(base.find(&c8).unwrap().map(|e| e.list), Some(2));
        assert!((base.skipped_share() - 100.0 / 303.0).abs() < 1e-9);
        // Pack 1 gone as well: no copy of 7 is left; 8 (pack 0) stays.
        base.retain(|l, _| *l != Id([0; 32]), |p| p.id != Id([11; 32]));
        assert_eq!(base.find(&c7).unwrap(), None);
        assert_eq!(base.find(&c8).unwrap().map(|e| e.list), Some(2));
        // Every entry is still read back in order.
        assert_eq!(base.iter().count(), 303);
    }

    proptest! {
        /// Hostile files whose footer checksum is right (random entries and
        /// tables behind a footer computed for them): opening, looking up and
        /// iterating never panic, and an entry read back names a list and a
        /// pack of the tables.
        #[test]
        fn hostile_files_with_a_right_footer_never_panic(
            entries in proptest::collection::vec(any::<u8>(), 0..600),
            meta_bytes in proptest::collection::vec(any::<u8>(), 0..300),
            real_meta in any::<bool>(),
            ids in proptest::collection::vec(any::<[u8; 32]>(), 0..8),
        ) {
            let count = (entries.len() / ENTRY_LEN) as u64;
            let mut file = entries[..count as usize * ENTRY_LEN].to_vec();
            // Either random table bytes, or real tables (so blocks are reached).
            let meta_bytes = if real_meta {
                let mut m = meta();
                m.blocks = (0..count.div_ceil(BLOCK_ENTRIES as u64))
                    .map(|b| {
                        let at = b as usize * BLOCK_ENTRIES * ENTRY_LEN;
                        let end = (at + BLOCK_ENTRIES * ENTRY_LEN).min(file.len());
                        (0, checksum64(&file[at..end]))
                    })
                    .collect();
                postcard::to_allocvec(&m).unwrap()
            } else {
                meta_bytes
            };
            file.extend_from_slice(&meta_bytes);
            file.extend_from_slice(&footer(count, meta_bytes.len() as u64, &meta_bytes));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("chunks");
            std::fs::write(&path, &file).unwrap();
            if let Ok(base) = Base::open(&path) {
                for id in ids {
                    if let Ok(Some(e)) = base.find(&Id(id)) {
                        prop_assert!((e.list as usize) < base.meta.lists.len());
                        prop_assert!((e.pack as usize) < base.meta.packs.len());
                    }
                }
                for e in base.iter().flatten() {
                    prop_assert!((e.list as usize) < base.meta.lists.len());
                }
            }
        }
    }

    #[test]
    fn out_of_order_entries_are_refused_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks");
        let e = [
            entry(Id([2; 32]), 1),
            entry(Id([2; 32]), 3),
            entry(Id([1; 32]), 2),
        ];
        assert!(write(&path, meta(), e.into_iter()).is_err());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
