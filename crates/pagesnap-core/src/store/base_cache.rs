//! The base cache: raw contents of recently stored chunks on this machine's
//! disk, so that a backup to a store that pays per request (S3) can encode
//! deltas without reading bases from packs (a ranged GET each would break the
//! request budget of ≤ 10 requests per backup besides packs; DELTAS.md).
//!
//! Each backup offers the new chunks it stores (a page that changed is the one
//! likely to change again) and, once published, writes the ones it stored to
//! `<cache dir>/<store id>/bases/<chunk id>`, oldest files evicted first down to
//! a byte bound. The next backup looks its base candidates up here only: a miss
//! stores the chunk plain, never a request.
//!
//! Nothing here is trusted. A file is (docs/FORMAT.md, "Local base cache"):
//!
//! ```text
//!  0  8  magic "PSNPBASE"     8  2  version (1)      10  1  depth   11  1  reserved (0)
//! 12  4  raw length (u32)    16  4  checksum32(bytes 0..16)
//! 20  …  zstd frame of the chunk's raw bytes (no dictionary)
//! ```
//!
//! and is used only when its header checks, its frame decodes to exactly the
//! raw length, and the bytes hash to the file's name; anything else is removed
//! and counts as a miss. The depth is the one the backup that stored the chunk
//! recorded in its index object's base table (0 when stored whole), never a
//! guess. Files are written to a temporary name and renamed, not fsynced: a file
//! torn by a crash fails its checks (as in the metadata cache, backend/cache.rs).

use crate::format::index::MAX_DELTA_DEPTH;
use crate::format::pack::MAX_CHUNK_LEN;
use crate::types::{ChunkId, ChunkIds, Id, IdMap};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The default bound of a store's base cache, in disk bytes: 64 MiB holds the
/// last versions of ~16,000 changed pages (a file each, counted as at least one
/// 4 KiB block).
pub const DEFAULT_BASE_CACHE_BYTES: u64 = 64 << 20;

/// The environment variable that bounds the base cache when the backup's options
/// do not (a size: `64MiB`, `512k`, a byte count; `0` turns the cache off).
pub const BASE_CACHE_ENV: &str = "PAGESNAP_BASE_CACHE";

const MAGIC: &[u8; 8] = b"PSNPBASE";
const VERSION: u16 = 1;
const HEADER: usize = 20;
/// zstd level of the cached frames: the cache is rewritten by every backup and
/// read only for changed positions, so speed matters more than bytes.
const LEVEL: i32 = 1;
/// A file counts at least this (a filesystem block) against the bound: the
/// files are small (a 4 KiB page compresses to 1–2 KiB), and the bound is on
/// the disk they take, not on their lengths.
const BLOCK: u64 = 4096;

/// What a file of `len` bytes (`blocks`: 512-byte blocks allocated, if known)
/// counts against the bound.
fn disk_bytes(len: u64, blocks: u64) -> u64 {
    len.div_ceil(BLOCK)
        .max(1)
        .saturating_mul(BLOCK)
        .max(blocks.saturating_mul(512))
}

/// Parses a size: a byte count or a number with a binary (`KiB`, `MiB`, `GiB`,
/// or `k`, `m`, `g`) suffix, case-insensitive.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// The bound to use: `explicit` if given, else [`BASE_CACHE_ENV`] if set and
/// valid, else [`DEFAULT_BASE_CACHE_BYTES`].
pub(crate) fn configured_limit(explicit: Option<u64>) -> u64 {
    explicit
        .or_else(|| {
            std::env::var(BASE_CACHE_ENV)
                .ok()
                .and_then(|v| parse_size(&v))
        })
        .unwrap_or(DEFAULT_BASE_CACHE_BYTES)
}

#[derive(Default)]
struct Pending {
    /// Disk bytes the offered chunks' files will take ([`disk_bytes`]).
    bytes: u64,
    /// id → (raw length, zstd frame), as offered.
    chunks: IdMap<(u32, Vec<u8>)>,
    /// The offered chunks the backup stored, with their depth.
    settled: IdMap<(u32, Vec<u8>, u8)>,
}

/// See the module comment.
pub(crate) struct BaseCache {
    dir: PathBuf,
    limit: u64,
    /// How the store names chunks: a file is used only if its bytes have its name.
    ids: ChunkIds,
    pending: Mutex<Pending>,
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

impl BaseCache {
    /// The base cache of store `store`, bounded to `limit` bytes; `None` when
    /// `limit` is 0 or there is no cache directory.
    pub(crate) fn for_store(store: &Id, limit: u64, ids: ChunkIds) -> Option<BaseCache> {
        let dir = crate::cache_root()?.join(store.to_hex()).join("bases");
        (limit > 0).then(|| BaseCache {
            ids,
            ..BaseCache::at(dir, limit)
        })
    }

    pub(crate) fn at(dir: PathBuf, limit: u64) -> BaseCache {
        BaseCache {
            dir,
            limit,
            ids: ChunkIds::default(),
            pending: Mutex::new(Pending::default()),
        }
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    /// The raw bytes of chunk `id` and the depth it was stored at, if a sound
    /// file holds them. A file that fails a check is removed.
    pub(crate) fn get(&self, id: &ChunkId) -> Option<(Arc<Vec<u8>>, u8)> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).ok()?;
        match decode(&bytes, id, &self.ids) {
            Some((raw, depth)) => Some((Arc::new(raw), depth)),
            None => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Offers a chunk the backup is storing (any thread): compressed now and
    /// kept until [`BaseCache::commit`], while the pending files fit the bound
    /// (a large first backup offers far more than that: the rest is dropped).
    pub(crate) fn offer(&self, id: &ChunkId, data: &[u8]) {
        if data.len() > MAX_CHUNK_LEN as usize {
            return;
        }
        // Full already: skip the compression.
        if self
            .pending
            .lock()
            .map_or(true, |p| p.bytes + BLOCK > self.limit)
        {
            return;
        }
        let Some(frame) = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(LEVEL).ok();
            }
            c.as_mut()?.compress(data).ok()
        }) else {
            return;
        };
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let len = disk_bytes((HEADER + frame.len()) as u64, 0);
        if p.bytes + len > self.limit || p.chunks.contains_key(id) {
            return;
        }
        p.bytes += len;
        p.chunks.insert(*id, (data.len() as u32, frame));
    }

    /// Keeps, of the offered chunks, those the backup stored (`stored`: every
    /// chunk it stored, with the depth its index object records, 0 when whole),
    /// with their depth; the others are dropped (found in the store meanwhile,
    /// or a duplicate within the backup). Called before the index is written.
    pub(crate) fn settle(&self, stored: impl Iterator<Item = (ChunkId, u8)>) {
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let mut settled = IdMap::default();
        for (id, depth) in stored {
            if let Some((raw_len, frame)) = p.chunks.remove(&id) {
                settled.insert(id, (raw_len, frame, depth));
            }
        }
        p.settled = settled;
        p.chunks = IdMap::default();
    }

    /// Writes the settled chunks, then evicts the oldest files until the
    /// folder fits the bound. Called once the backup is published. Best effort:
    /// a cache that cannot be written only costs later backups their deltas.
    pub(crate) fn commit(&self) {
        let settled = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p).settled,
            Err(_) => return,
        };
        if settled.is_empty() || crate::create_private_dirs(&self.dir).is_err() {
            return;
        }
        // Files are independent: written on every core (a first backup offers
        // thousands).
        let write = |(id, (raw_len, frame, depth)): (&ChunkId, &(u32, Vec<u8>, u8))| {
            if *depth > MAX_DELTA_DEPTH {
                return Some(());
            }
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&self.dir)
                .ok()?;
            tmp.write_all(&header(*depth, *raw_len)).ok()?;
            tmp.write_all(frame).ok()?;
            tmp.persist(self.path(id)).ok().map(|_| ())
        };
        let items: Vec<_> = settled.iter().collect();
        // The first failure (a full disk) stops the rest.
        let _ = items
            .into_par_iter()
            .try_for_each(|item| write(item).ok_or(()));
        evict(&self.dir, self.limit);
    }
}

/// A backup's base `id` from `cache`, if the store holds it (`index`: a delta
/// against a chunk the store lacks would be unreadable) in the form the cache
/// recorded: a delta exactly when the cached depth is above 0. A copy stored in
/// another form (another backup stored the same chunk differently) could have
/// another depth, so its cached depth is not trusted: a miss.
pub(crate) fn checked(
    cache: &BaseCache,
    id: &ChunkId,
    index: &crate::index::cache::ChunkLookup,
) -> Option<(Arc<Vec<u8>>, u8)> {
    let (_, _, entry) = index.locate(id)?;
    let (raw, depth) = cache.get(id)?;
    let is_delta = entry.codec == crate::format::pack::Codec::ZstdDelta;
    (is_delta == (depth > 0) && raw.len() == entry.raw_len as usize).then_some((raw, depth))
}

fn header(depth: u8, raw_len: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10] = depth;
    h[12..16].copy_from_slice(&raw_len.to_le_bytes());
    let sum = crate::format::checksum32(&h[..16]);
    h[16..20].copy_from_slice(&sum.to_le_bytes());
    h
}

/// A file's raw bytes and depth, if every check passes (module comment).
fn decode(bytes: &[u8], id: &ChunkId, ids: &ChunkIds) -> Option<(Vec<u8>, u8)> {
    let (raw, depth) = parse(bytes).ok()?;
    (ids.of(&raw) == *id).then_some((raw, depth))
}

/// A file's raw bytes and depth, every check but the one against its name
/// passed; else what is wrong.
fn parse(bytes: &[u8]) -> Result<(Vec<u8>, u8), &'static str> {
    let h = bytes.get(..HEADER).ok_or("shorter than a header")?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if &h[..8] != MAGIC || u16::from_le_bytes([h[8], h[9]]) != VERSION || h[11] != 0 {
        return Err("not a base cache file of this version");
    }
    if u32_at(16) != crate::format::checksum32(&h[..16]) {
        return Err("header checksum");
    }
    let (depth, raw_len) = (h[10], u32_at(12));
    if depth > MAX_DELTA_DEPTH {
        return Err("depth beyond the chain bound");
    }
    if raw_len == 0 || raw_len > MAX_CHUNK_LEN {
        return Err("raw length out of bounds");
    }
    // At most `raw_len` bytes are ever allocated, whatever the frame says.
    let raw = zstd::bulk::decompress(&bytes[HEADER..], raw_len as usize)
        .map_err(|_| "frame does not decode within the raw length")?;
    if raw.len() != raw_len as usize {
        return Err("frame shorter than the raw length");
    }
    Ok((raw, depth))
}

/// Fuzz entry point (`format::fuzz::Target::BaseCache`): [`parse`] of `data`
/// (its name, a chunk id, cannot be fuzzed along: a mutated frame would never
/// hash to it); a file that parses is written again as the cache writes it
/// and must parse to the same bytes and depth.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz(data: &[u8]) -> crate::format::Result<()> {
    use crate::format::FormatError;
    let (raw, depth) =
        parse(data).map_err(|e| FormatError::Invalid(format!("base cache file: {e}")))?;
    let mut again = header(depth, raw.len() as u32).to_vec();
    let frame =
        zstd::bulk::compress(&raw, LEVEL).map_err(|e| FormatError::Invalid(e.to_string()))?;
    again.extend_from_slice(&frame);
    assert_eq!(parse(&again), Ok((raw, depth)), "base cache round trip");
    Ok(())
}

/// `data` with its header checksum made right (inputs shorter than a header
/// are left alone).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() >= HEADER {
        let sum = crate::format::checksum32(&out[..16]);
        out[16..20].copy_from_slice(&sum.to_le_bytes());
    }
    out
}

/// A file of the fuzz target's seeds or hostile inputs: (name, bytes).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) type NamedFile = (&'static str, Vec<u8>);

/// Valid files (a page stored whole, one at depth 3) and hostile ones with
/// right checksums, each refused for one reason, as (name, bytes).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_files() -> (Vec<NamedFile>, Vec<NamedFile>) {
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = |depth: u8, raw_len: u32, raw: &[u8]| {
        let mut f = header(depth, raw_len).to_vec();
        f.extend_from_slice(&zstd::bulk::compress(raw, LEVEL).unwrap_or_default());
        f
    };
    let seeds = vec![
        ("synthetic-whole", file(0, 4096, &page)),
        ("synthetic-depth-3", file(3, 4096, &page)),
    ];
    let hostile = vec![
        ("hostile-depth-9", file(MAX_DELTA_DEPTH + 1, 4096, &page)),
        ("hostile-raw-length-short", file(0, 4000, &page)),
        ("hostile-raw-length-long", file(0, 5000, &page)),
        ("hostile-raw-length-huge", file(0, MAX_CHUNK_LEN + 1, &page)),
    ];
    (seeds, hostile)
}

/// Removes the oldest files of `dir` (by modification time) until the rest
/// take at most `limit` bytes of disk ([`disk_bytes`]).
fn evict(dir: &Path, limit: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some((
                m.modified().ok()?,
                disk_bytes(m.len(), m.blocks()),
                e.path(),
            ))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// Disk bytes of the files in a base cache folder, as the bound counts them.
#[cfg(test)]
fn folder_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| disk_bytes(m.len(), m.blocks()))
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u32) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        // Half random, half repeated: compresses to about half.
        h.finalize_xof().fill(&mut v[..2048]);
        v
    }

    #[test]
    fn round_trips_with_its_depth() {
        let dir = tempfile::tempdir().unwrap();
        let c = BaseCache::at(dir.path().join("bases"), 1 << 20);
        let (a, b) = (chunk(1), chunk(2));
        let (ia, ib) = (Id::of_chunk(&a), Id::of_chunk(&b));
        c.offer(&ia, &a);
        c.offer(&ib, &b);
        assert!(c.get(&ia).is_none(), "nothing is written before commit");
        // b was not stored after all: not written.
        c.settle([(ia, 3)].into_iter());
        c.commit();
        let (raw, depth) = c.get(&ia).expect("cached");
        assert_eq!((raw.as_slice(), depth), (&a[..], 3));
        assert!(c.get(&ib).is_none());
    }

    #[test]
    fn a_damaged_or_misnamed_file_is_removed_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let c = BaseCache::at(dir.path().to_path_buf(), 1 << 20);
        let a = chunk(1);
        let ia = Id::of_chunk(&a);
        c.offer(&ia, &a);
        c.settle(std::iter::once((ia, 0)));
        c.commit();
        let path = c.path(&ia);
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty (torn)", Vec::new()),
            ("torn frame", good[..good.len() - 5].to_vec()),
            ("depth changed", {
                let mut b = good.clone();
                b[10] = 1;
                b
            }),
            ("another chunk's file", {
                let other = BaseCache::at(dir.path().join("o"), 1 << 20);
                let b = chunk(2);
                other.offer(&Id::of_chunk(&b), &b);
                other.settle(std::iter::once((Id::of_chunk(&b), 0)));
                other.commit();
                std::fs::read(other.path(&Id::of_chunk(&b))).unwrap()
            }),
            ("depth over the bound", {
                let mut b = header(MAX_DELTA_DEPTH + 1, 4096).to_vec();
                b.extend_from_slice(&good[HEADER..]);
                b
            }),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            assert!(c.get(&ia).is_none(), "{what}: used");
            assert!(!path.exists(), "{what}: not removed");
        }
    }

    /// Every single-byte flip and every truncation of a sound file: never
    /// other bytes or another depth than those written.
    /// The fuzz target's seeds parse; each hostile file (right checksum) is
    /// refused for the one thing it breaks.
    #[test]
    fn hostile_files_are_refused_for_what_they_break() {
        let (seeds, hostile) = fuzz_files();
        for (name, bytes) in seeds {
            assert!(fuzz(&bytes).is_ok(), "{name}");
        }
        for (name, bytes) in hostile {
            let err = fuzz(&bytes).unwrap_err().to_string();
            let why = match name {
                "hostile-depth-9" => "depth beyond the chain bound",
                "hostile-raw-length-short" => "does not decode within the raw length",
                "hostile-raw-length-long" => "shorter than the raw length",
                _ => "raw length out of bounds",
            };
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn no_flip_or_truncation_yields_other_bytes_or_depth() {
        let a = chunk(3);
        let ia = Id::of_chunk(&a);
        let c = BaseCache::at(PathBuf::new(), 1 << 20);
        c.offer(&ia, &a);
        let (raw_len, frame) = c.pending.lock().unwrap().chunks[&ia].clone();
        let mut good = header(2, raw_len).to_vec();
        good.extend_from_slice(&frame);
        assert_eq!(
            decode(&good, &ia, &ChunkIds::default()),
            Some((a.clone(), 2))
        );
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 1 << (i % 8);
            if let Some((raw, depth)) = decode(&b, &ia, &ChunkIds::default()) {
                assert_eq!((&raw[..], depth), (&a[..], 2), "flip at {i}");
            }
        }
        for n in 0..good.len() {
            assert_eq!(
                decode(&good[..n], &ia, &ChunkIds::default()),
                None,
                "cut at {n}"
            );
        }
    }

    #[test]
    fn the_bound_is_kept_oldest_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 20 << 10;
        let c = BaseCache::at(dir.path().to_path_buf(), limit);
        let mut ids = Vec::new();
        for round in 0..6u32 {
            for k in 0..4 {
                let d = chunk(round * 10 + k);
                let id = Id::of_chunk(&d);
                c.offer(&id, &d);
                ids.push(id);
            }
            c.settle(ids[ids.len() - 4..].iter().map(|id| (*id, 0)));
            c.commit();
            assert!(folder_bytes(dir.path()) <= limit, "round {round}");
            // Distinct modification times between rounds.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The newest round is whole; the first is gone.
        assert!(ids[20..].iter().all(|id| c.get(id).is_some()));
        assert!(ids[..4].iter().all(|id| c.get(id).is_none()));
        // One backup offering more than the bound keeps within it too.
        let many: Vec<ChunkId> = (0..100)
            .map(|k| {
                let d = chunk(1000 + k);
                c.offer(&Id::of_chunk(&d), &d);
                Id::of_chunk(&d)
            })
            .collect();
        c.settle(many.iter().map(|id| (*id, 0)));
        c.commit();
        assert!(folder_bytes(dir.path()) <= limit);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1TiB"), None);
    }
}
