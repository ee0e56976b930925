//! The base cache: raw contents of recently stored chunks on this machine's
//! disk, so that a backup to a store that pays per request (S3) can encode
//! deltas without reading bases from packs (a ranged GET each would break the
//! request budget of ≤ 10 requests per backup besides packs; DELTAS.md).
//!
//! Each backup offers the new chunks it stores (a page that changed is the one
//! likely to change again) and, once published, writes the ones it stored as
//! **segments**, `<cache dir>/<store id>/bases/seg-<nanos>-<pid>-<n>`, each
//! at most an eighth of the bound; the oldest segments are then deleted until
//! the folder fits the bound. The next backup reads every segment's table once
//! and looks its base candidates up there only: a miss stores the chunk plain,
//! never a request. (A file per chunk, the first form, cost a fifth of an S3
//! backup's CPU in creating, renaming, listing and deleting files.)
//!
//! Nothing here is trusted. A segment is (docs/FORMAT.md, "Local base cache"):
//!
//! ```text
//!  0  8  magic "PSNPBSEG"     8  2  version (2)      10  2  reserved (0)
//! 12  4  count (u32)         16  4  checksum32(bytes 0..16, then the table)
//! 20  …  table: count rows of 48 bytes, ids strictly ascending:
//!        id (32) | offset (u32) | frame length (u32) | raw length (u32) | depth (u8) | reserved (3)
//!  …     zstd frames of the chunks' raw bytes (no dictionary), where the rows say
//! ```
//!
//! A segment whose header or table fails a check is removed whole; a chunk is
//! used only when its frame decodes to exactly the raw length and the bytes
//! hash to its id (else its segment is removed). The depth is the one the
//! backup that stored the chunk recorded in its index object's base table (0
//! when stored whole), never a guess. Segments are written to a temporary name
//! and renamed, not fsynced: one torn by a crash fails its checks (as in the
//! metadata cache, backend/cache.rs).

use crate::format::index::MAX_DELTA_DEPTH;
use crate::format::pack::MAX_CHUNK_LEN;
use crate::types::{ChunkId, ChunkIds, Id, IdMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// The default bound of a store's base cache, in disk bytes: 64 MiB holds the
/// last versions of ~40,000 changed pages (a 4 KiB page compresses to 1–2 KiB).
pub const DEFAULT_BASE_CACHE_BYTES: u64 = 64 << 20;

/// The environment variable that bounds the base cache when the backup's options
/// do not (a size: `64MiB`, `512k`, a byte count; `0` turns the cache off).
pub const BASE_CACHE_ENV: &str = "PAGESNAP_BASE_CACHE";

const MAGIC: &[u8; 8] = b"PSNPBSEG";
const VERSION: u16 = 2;
const HEADER: usize = 20;
/// Bytes of a table row.
const ROW: usize = 48;
/// Segment names begin with this; anything else in the folder (a file per
/// chunk of version 1) is removed.
const SEGMENT: &str = "seg-";
/// Temporary files of a commit begin with this; one older than an hour is a
/// killed backup's leftover.
const TEMPORARY: &str = ".tmp-";
/// zstd level of the cached frames: the cache is rewritten by every backup and
/// read only for changed positions, so speed matters more than bytes.
const LEVEL: i32 = 1;
/// A file counts at least this (a filesystem block) against the bound.
const BLOCK: u64 = 4096;

/// The bytes a segment of chunks aims at: an eighth of the bound (the
/// granule eviction deletes), within 4 KiB..8 MiB.
fn segment_target(limit: u64) -> u64 {
    (limit / 8).clamp(BLOCK, 8 << 20)
}

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
    /// Bytes the offered chunks will take in segments (frame and table row).
    bytes: u64,
    /// id → (raw length, zstd frame), as offered.
    chunks: IdMap<(u32, Vec<u8>)>,
    /// The offered chunks the backup stored, with their depth.
    settled: IdMap<(u32, Vec<u8>, u8)>,
}

/// Where a cached chunk is: its segment (by position in [`Segments::files`])
/// and its table row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    offset: u32,
    frame_len: u32,
    raw_len: u32,
    depth: u8,
}

/// The segments of the folder, read once per backup: their open files and the
/// rows of every chunk (of a chunk in several, the newest segment's).
#[derive(Default)]
struct Segments {
    files: Vec<(PathBuf, File)>,
    rows: IdMap<(u32, Row)>,
}

/// See the module comment.
pub(crate) struct BaseCache {
    dir: PathBuf,
    limit: u64,
    /// How the store names chunks: a chunk is used only if its bytes have its id.
    ids: ChunkIds,
    pending: Mutex<Pending>,
    /// Read on the first lookup.
    segments: OnceLock<Segments>,
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
            segments: OnceLock::new(),
        }
    }

    /// The folder's segments; one that fails its checks is removed.
    fn segments(&self) -> &Segments {
        self.segments.get_or_init(|| {
            let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
                .map(|es| {
                    es.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(SEGMENT))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default();
            // Newest first: its row of a chunk in several segments wins.
            names.sort_unstable_by(|a, b| b.cmp(a));
            let mut out = Segments::default();
            for path in names {
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                match read_table(&file) {
                    Ok(rows) => {
                        let seg = out.files.len() as u32;
                        for (id, row) in rows {
                            out.rows.entry(id).or_insert((seg, row));
                        }
                        out.files.push((path, file));
                    }
                    Err(Table::Damaged) => {
                        let _ = std::fs::remove_file(&path);
                    }
                    // Not damage: not used, and kept.
                    Err(Table::Unreadable) => {}
                }
            }
            out
        })
    }

    /// The raw bytes of chunk `id` and the depth it was stored at, if a sound
    /// segment holds them. A segment whose frame fails a check is removed.
    /// The segments are those of the first lookup: a cache serves one backup,
    /// and what it commits is for the next.
    pub(crate) fn get(&self, id: &ChunkId) -> Option<(Arc<Vec<u8>>, u8)> {
        let segments = self.segments();
        let (seg, row) = *segments.rows.get(id)?;
        let (path, file) = segments.files.get(seg as usize)?;
        let mut frame = vec![0u8; row.frame_len as usize];
        // A read error is not damage: a miss, the segment kept.
        file.read_exact_at(&mut frame, u64::from(row.offset)).ok()?;
        match decode(&frame, row.raw_len).filter(|raw| self.ids.of(raw) == *id) {
            Some(raw) => Some((Arc::new(raw), row.depth)),
            None => {
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Offers a chunk the backup is storing (any thread): compressed now and
    /// kept until [`BaseCache::commit`], while the pending chunks fit the bound
    /// (a large first backup offers far more than that: the rest is dropped).
    pub(crate) fn offer(&self, id: &ChunkId, data: &[u8]) {
        if data.is_empty() || data.len() > MAX_CHUNK_LEN as usize {
            return;
        }
        // A sixteenth of the bound is left for the segments' headers and
        // their last blocks.
        let room = self.limit - self.limit / 16;
        // Full already: skip the compression.
        if self
            .pending
            .lock()
            .map_or(true, |p| p.bytes + ROW as u64 > room)
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
        let len = (frame.len() + ROW) as u64;
        if p.bytes + len > room || p.chunks.contains_key(id) {
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

    /// Writes the settled chunks as segments, then deletes the oldest segments
    /// until the folder fits the bound. Called once the backup is published.
    /// Best effort: a cache that cannot be written only costs later backups
    /// their deltas.
    pub(crate) fn commit(&self) {
        let settled = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p).settled,
            Err(_) => return,
        };
        if settled.is_empty() || crate::create_private_dirs(&self.dir).is_err() {
            return;
        }
        let mut chunks: Vec<Cached> = settled
            .into_iter()
            .filter(|(_, (_, _, depth))| *depth <= MAX_DELTA_DEPTH)
            .map(|(id, (raw_len, frame, depth))| (id, raw_len, frame, depth))
            .collect();
        chunks.sort_unstable_by_key(|a| a.0);
        let target = segment_target(self.limit);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut rest = chunks.as_slice();
        let mut n = 0u32;
        while !rest.is_empty() {
            // At least one chunk a segment, then while it fits the target.
            let mut bytes = HEADER as u64;
            let take = rest
                .iter()
                .position(|c| {
                    bytes += (ROW + c.2.len()) as u64;
                    bytes > target
                })
                .unwrap_or(rest.len())
                .max(1);
            let (seg, after) = rest.split_at(take);
            let name = format!("{SEGMENT}{nanos:020}-{}-{n:04}", std::process::id());
            // A full disk stops the rest.
            if self.write_segment(seg, &name).is_none() {
                break;
            }
            rest = after;
            n += 1;
        }
        evict(&self.dir, self.limit);
    }

    fn write_segment(&self, chunks: &[Cached], name: &str) -> Option<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMPORARY)
            .tempfile_in(&self.dir)
            .ok()?;
        tmp.write_all(&encode_segment(chunks)?).ok()?;
        tmp.persist(self.dir.join(name)).ok().map(|_| ())
    }
}

/// A chunk going into a segment: id, raw length, frame, depth.
type Cached = (ChunkId, u32, Vec<u8>, u8);

/// A segment of `chunks` (ids ascending), as the module comment lays it out;
/// `None` if it would not fit 32-bit offsets.
fn encode_segment(chunks: &[Cached]) -> Option<Vec<u8>> {
    let table_end = HEADER + ROW * chunks.len();
    let frames: usize = chunks.iter().map(|c| c.2.len()).sum();
    let mut out = Vec::with_capacity(table_end + frames);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&u32::try_from(chunks.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut offset = u32::try_from(table_end).ok()?;
    for (id, raw_len, frame, depth) in chunks {
        let len = u32::try_from(frame.len()).ok()?;
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&raw_len.to_le_bytes());
        out.extend_from_slice(&[*depth, 0, 0, 0]);
        offset = offset.checked_add(len)?;
    }
    for c in chunks {
        out.extend_from_slice(&c.2);
    }
    let sum = table_sum(&out[..table_end]);
    out[16..20].copy_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// The checksum of a segment's header (its bytes 0..16) and table.
fn table_sum(head_and_table: &[u8]) -> u32 {
    let mut both = head_and_table[..16].to_vec();
    both.extend_from_slice(&head_and_table[HEADER..]);
    crate::format::checksum32(&both)
}

/// Why a segment's table is not used.
enum Table {
    /// Read and found wrong (or shorter than it says): the segment is removed.
    Damaged,
    /// Could not be read (permission, I/O): the segment is kept.
    Unreadable,
}

/// A segment's rows, if its header and table pass every check.
fn read_table(file: &File) -> Result<Vec<(ChunkId, Row)>, Table> {
    let read = |buf: &mut [u8]| {
        file.read_exact_at(buf, 0).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Table::Damaged,
            _ => Table::Unreadable,
        })
    };
    let len = file.metadata().map_err(|_| Table::Unreadable)?.len();
    let mut head = [0u8; HEADER];
    read(&mut head)?;
    let count = check_header(&head, len).map_err(|_| Table::Damaged)?;
    let mut table = vec![0u8; HEADER + ROW * count];
    read(&mut table)?;
    parse_table(&table, len).map_err(|_| Table::Damaged)
}

/// The number of rows a segment of `len` bytes with header `head` has, if the
/// header passes its checks (not the checksum, which covers the table too).
fn check_header(head: &[u8], len: u64) -> Result<usize, &'static str> {
    let head = head.get(..HEADER).ok_or("shorter than a header")?;
    if &head[..8] != MAGIC || u16::from_le_bytes([head[8], head[9]]) != VERSION {
        return Err("not a base cache segment of this version");
    }
    if head[10..12] != [0, 0] {
        return Err("reserved bytes set");
    }
    let count = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as u64;
    if count == 0 || HEADER as u64 + ROW as u64 * count > len {
        return Err("row count out of bounds");
    }
    Ok(count as usize)
}

/// The rows of a segment of `len` bytes whose header and table are `table`,
/// if every check passes: the checksum, ids strictly ascending, each frame
/// after the table and within the segment, each raw length and depth within
/// their bounds, reserved bytes 0.
fn parse_table(table: &[u8], len: u64) -> Result<Vec<(ChunkId, Row)>, &'static str> {
    let count = check_header(table, len)?;
    let table_end = HEADER + ROW * count;
    let table = table.get(..table_end).ok_or("table cut short")?;
    let sum = u32::from_le_bytes([table[16], table[17], table[18], table[19]]);
    if sum != table_sum(table) {
        return Err("table checksum");
    }
    let mut rows = Vec::with_capacity(count);
    for r in table[HEADER..].chunks_exact(ROW) {
        let word = |i: usize| u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&r[..32]);
        let row = Row {
            offset: word(32),
            frame_len: word(36),
            raw_len: word(40),
            depth: r[44],
        };
        if r[45..48] != [0, 0, 0] {
            return Err("reserved bytes set");
        }
        if rows
            .last()
            .is_some_and(|(last, _): &(ChunkId, Row)| last.0 >= id)
        {
            return Err("ids not strictly ascending");
        }
        let end = u64::from(row.offset) + u64::from(row.frame_len);
        if (row.offset as usize) < table_end || row.frame_len == 0 || end > len {
            return Err("frame out of bounds");
        }
        if row.raw_len == 0 || row.raw_len > MAX_CHUNK_LEN {
            return Err("raw length out of bounds");
        }
        if row.depth > MAX_DELTA_DEPTH {
            return Err("depth beyond the chain bound");
        }
        rows.push((Id(id), row));
    }
    Ok(rows)
}

/// A frame's raw bytes, if it decodes to exactly `raw_len` bytes (at most
/// `raw_len` are ever allocated, whatever the frame says).
fn decode(frame: &[u8], raw_len: u32) -> Option<Vec<u8>> {
    zstd::bulk::decompress(frame, raw_len as usize)
        .ok()
        .filter(|raw| raw.len() == raw_len as usize)
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

/// Fuzz entry point (`format::fuzz::Target::BaseCache`): a segment's table
/// checked, then every frame decoded (the ids cannot be fuzzed along: a
/// mutated frame would never hash to one); a segment that passes is written
/// again as the cache writes it and must read back to the same rows' ids,
/// bytes and depths.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz(data: &[u8]) -> crate::format::Result<()> {
    use crate::format::FormatError;
    let invalid = |e: &str| FormatError::Invalid(format!("base cache segment: {e}"));
    let rows = parse_table(data, data.len() as u64).map_err(invalid)?;
    let read = |data: &[u8],
                rows: &[(ChunkId, Row)]|
     -> Result<Vec<(ChunkId, Vec<u8>, u8)>, FormatError> {
        rows.iter()
            .map(|(id, r)| {
                let at = r.offset as usize..(r.offset + r.frame_len) as usize;
                let raw = data
                    .get(at)
                    .and_then(|f| decode(f, r.raw_len))
                    .ok_or_else(|| invalid("frame does not decode to its raw length"))?;
                Ok((*id, raw, r.depth))
            })
            .collect()
    };
    let chunks = read(data, &rows)?;
    let again: Vec<Cached> = chunks
        .iter()
        .map(|(id, raw, depth)| {
            let frame = zstd::bulk::compress(raw, LEVEL).unwrap_or_default();
            (*id, raw.len() as u32, frame, *depth)
        })
        .collect();
    let bytes = encode_segment(&again).ok_or_else(|| invalid("too large"))?;
    let rows = parse_table(&bytes, bytes.len() as u64).map_err(invalid)?;
    assert_eq!(read(&bytes, &rows)?, chunks, "base cache round trip");
    Ok(())
}

/// `data` with its table checksum made right (inputs whose header does not
/// pass are left alone).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if let Ok(count) = check_header(data, data.len() as u64) {
        let sum = table_sum(&out[..HEADER + ROW * count]);
        out[16..20].copy_from_slice(&sum.to_le_bytes());
    }
    out
}

/// A file of the fuzz target's seeds or hostile inputs: (name, bytes).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) type NamedFile = (&'static str, Vec<u8>);

/// Valid segments (two pages, one stored whole and one at depth 3) and
/// hostile ones with right checksums, each refused for one reason, as (name,
/// bytes).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_files() -> (Vec<NamedFile>, Vec<NamedFile>) {
    let page = |k: u32| -> Vec<u8> { (0..4096u32).map(|i| ((i * 7 + k) % 251) as u8).collect() };
    let (a, b) = (page(1), page(2));
    let mut chunks: Vec<Cached> = [(&a, 0u8), (&b, 3u8)]
        .iter()
        .map(|(p, depth)| {
            let frame = zstd::bulk::compress(p, LEVEL).unwrap_or_default();
            (Id::of_chunk(p), p.len() as u32, frame, *depth)
        })
        .collect();
    chunks.sort_unstable_by_key(|x| x.0);
    let good = encode_segment(&chunks).unwrap_or_default();
    // `good` with row 0's field at `at` (from the row's start) set to `v`, sealed.
    let with = |at: usize, v: &[u8]| {
        let mut s = good.clone();
        s[HEADER + at..HEADER + at + v.len()].copy_from_slice(v);
        seal(&s)
    };
    let row1 = |at: usize| HEADER + ROW + at;
    let swapped = {
        // The two rows in the wrong order.
        let mut s = good.clone();
        let (r0, r1) = (HEADER..HEADER + ROW, row1(0)..row1(ROW));
        let first = s[r0.clone()].to_vec();
        s.copy_within(r1.clone(), r0.start);
        s[r1].copy_from_slice(&first);
        seal(&s)
    };
    let seeds = vec![("synthetic-segment", good.clone())];
    let hostile = vec![
        ("hostile-depth-9", with(44, &[MAX_DELTA_DEPTH + 1])),
        ("hostile-raw-length-short", with(40, &4000u32.to_le_bytes())),
        ("hostile-raw-length-long", with(40, &5000u32.to_le_bytes())),
        (
            "hostile-raw-length-huge",
            with(40, &(MAX_CHUNK_LEN + 1).to_le_bytes()),
        ),
        (
            "hostile-frame-in-table",
            with(32, &(HEADER as u32).to_le_bytes()),
        ),
        ("hostile-frame-past-end", with(36, &u32::MAX.to_le_bytes())),
        ("hostile-ids-unsorted", swapped),
        ("hostile-count-huge", {
            let mut s = good.clone();
            s[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            s
        }),
    ];
    (seeds, hostile)
}

/// Deletes the oldest segments of `dir` (by name: their time of writing) until
/// the rest take at most `limit` bytes of disk ([`disk_bytes`]), then any file
/// that is not a segment (a file per chunk of the first form) but a commit's
/// temporary file younger than an hour.
fn evict(dir: &Path, limit: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut segments: Vec<(String, u64, PathBuf)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        if name.starts_with(SEGMENT) {
            segments.push((name, disk_bytes(m.len(), m.blocks()), e.path()));
        } else {
            let fresh = m
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(3600));
            if !(name.starts_with(TEMPORARY) && fresh) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut total: u64 = segments.iter().map(|s| s.1).sum();
    segments.sort();
    for (_, len, path) in segments {
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

    /// The cache a later backup opens on the same folder.
    fn reopened(c: &BaseCache) -> BaseCache {
        BaseCache::at(c.dir.clone(), c.limit)
    }

    /// Offers and stores `chunks` (at `depth`) in one commit.
    fn commit_all(c: &BaseCache, chunks: &[Vec<u8>], depth: u8) -> Vec<ChunkId> {
        let ids: Vec<ChunkId> = chunks.iter().map(|d| Id::of_chunk(d)).collect();
        for (id, d) in ids.iter().zip(chunks) {
            c.offer(id, d);
        }
        c.settle(ids.iter().map(|id| (*id, depth)));
        c.commit();
        ids
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(SEGMENT)
            })
            .collect();
        v.sort();
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
        let c = reopened(&c);
        let (raw, depth) = c.get(&ia).expect("cached");
        assert_eq!((raw.as_slice(), depth), (&a[..], 3));
        assert!(c.get(&ib).is_none());
        // One commit is one segment file, not a file per chunk.
        assert_eq!(segment_files(&dir.path().join("bases")).len(), 1);
    }

    /// A segment that fails a check is removed and none of its chunks is
    /// used; the other segments still serve theirs.
    #[test]
    fn a_damaged_segment_is_removed_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let c = BaseCache::at(dir.path().to_path_buf(), 1 << 20);
        let good_ids = commit_all(&c, &[chunk(9)], 0);
        let ids = commit_all(&c, &[chunk(1), chunk(2)], 2);
        let path = segment_files(dir.path()).pop().unwrap();
        let good = std::fs::read(&path).unwrap();
        let frame_at = HEADER + 2 * ROW;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty (torn)", Vec::new()),
            ("torn frame", good[..good.len() - 5].to_vec()),
            ("depth changed", {
                let mut b = good.clone();
                b[HEADER + 44] = 1;
                b
            }),
            ("a frame's byte changed", {
                let mut b = good.clone();
                b[frame_at + 3] ^= 0x40;
                b
            }),
            ("another chunk's id, sealed", {
                let mut b = good.clone();
                b[HEADER] ^= 1;
                seal(&b)
            }),
            ("depth over the bound, sealed", {
                let mut b = good.clone();
                b[HEADER + 44] = MAX_DELTA_DEPTH + 1;
                seal(&b)
            }),
        ];
        // The id row 0 names once its first byte is flipped.
        let mut misnamed = ids.iter().min().copied().unwrap();
        misnamed.0[0] ^= 1;
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let c = reopened(&c);
            assert!(c.get(&misnamed).is_none(), "{what}");
            for id in &ids {
                if let Some((raw, depth)) = c.get(id) {
                    // Only a frame untouched by the damage may still be read.
                    assert_eq!(Id::of_chunk(&raw), *id, "{what}");
                    assert_eq!(depth, 2, "{what}");
                }
            }
            let used = ids.iter().filter(|id| c.get(id).is_some()).count();
            assert!(used < ids.len(), "{what}: every chunk still used");
            assert!(!path.exists(), "{what}: not removed");
            assert!(c.get(&good_ids[0]).is_some(), "{what}: the sound segment");
        }
    }

    /// The fuzz target's seeds parse; each hostile segment (right checksum)
    /// is refused for the one thing it breaks.
    #[test]
    fn hostile_segments_are_refused_for_what_they_break() {
        let (seeds, hostile) = fuzz_files();
        for (name, bytes) in seeds {
            assert!(fuzz(&bytes).is_ok(), "{name}");
        }
        for (name, bytes) in hostile {
            let err = fuzz(&bytes).unwrap_err().to_string();
            let why = match name {
                "hostile-depth-9" => "depth beyond the chain bound",
                "hostile-raw-length-short" | "hostile-raw-length-long" => {
                    "does not decode to its raw length"
                }
                "hostile-raw-length-huge" => "raw length out of bounds",
                "hostile-frame-in-table" | "hostile-frame-past-end" => "frame out of bounds",
                "hostile-ids-unsorted" => "ids not strictly ascending",
                _ => "row count out of bounds",
            };
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    /// Every single-byte flip and every truncation of a sound segment: never
    /// other bytes or another depth than those written.
    #[test]
    fn no_flip_or_truncation_yields_other_bytes_or_depth() {
        let dir = tempfile::tempdir().unwrap();
        let c = BaseCache::at(dir.path().to_path_buf(), 1 << 20);
        let a = chunk(3);
        let ids = commit_all(&c, std::slice::from_ref(&a), 2);
        let path = segment_files(dir.path()).pop().unwrap();
        let good = std::fs::read(&path).unwrap();
        let got = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            reopened(&c).get(&ids[0])
        };
        assert_eq!(
            got(&good).map(|(r, d)| (r.to_vec(), d)),
            Some((a.clone(), 2))
        );
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 1 << (i % 8);
            if let Some((raw, depth)) = got(&b) {
                assert_eq!((&raw[..], depth), (&a[..], 2), "flip at {i}");
            }
        }
        for n in 0..good.len() {
            assert_eq!(got(&good[..n]), None, "cut at {n}");
        }
    }

    #[test]
    fn the_bound_is_kept_oldest_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 20 << 10;
        let c = BaseCache::at(dir.path().to_path_buf(), limit);
        let mut ids = Vec::new();
        for round in 0..6u32 {
            let chunks: Vec<Vec<u8>> = (0..4).map(|k| chunk(round * 10 + k)).collect();
            ids.extend(commit_all(&c, &chunks, 0));
            assert!(folder_bytes(dir.path()) <= limit, "round {round}");
        }
        // The newest round is whole; the first is gone.
        let c = reopened(&c);
        assert!(ids[20..].iter().all(|id| c.get(id).is_some()));
        assert!(ids[..4].iter().all(|id| c.get(id).is_none()));
        // One backup offering more than the bound keeps within it too.
        let many: Vec<Vec<u8>> = (0..100).map(|k| chunk(1000 + k)).collect();
        commit_all(&c, &many, 0);
        assert!(folder_bytes(dir.path()) <= limit);
        assert!(segment_files(dir.path()).len() > 1, "segments of an eighth");
    }

    /// Files of the first form (one per chunk, named by its id) and stale
    /// temporary files are removed by the next commit; a fresh temporary
    /// file (another backup's, writing) is left alone.
    #[test]
    fn files_of_the_first_form_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(Id::of_chunk(b"x").to_hex());
        std::fs::write(&old, b"PSNPBASE...").unwrap();
        let busy = dir.path().join(".tmp-writing");
        std::fs::write(&busy, b"").unwrap();
        let c = BaseCache::at(dir.path().to_path_buf(), 1 << 20);
        commit_all(&c, &[chunk(1)], 0);
        assert!(!old.exists());
        assert!(busy.exists());
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
