//! Reassembling a snapshot's image from its chunks. Nothing read from the store is
//! trusted: every chunk is checked against its id and the whole image against the
//! manifest's hash.
//!
//! The image is rebuilt in windows of [`WINDOW`] bytes. A producer thread fetches
//! each window's chunks (nearby chunks of one pack are read together),
//! decompresses and checks them on every core straight into the window buffer,
//! and hashes the window's blocks (blake3 chaining values, as capture does); the
//! calling thread writes the windows in order ([`Sink::Stream`]), or each block
//! task writes its block at its offset in the file ([`Sink::At`]). At most
//! [`IN_FLIGHT`] windows wait, so memory stays bounded whatever the image size.
//! From a remote store (S3) the reads of [`REMOTE_WINDOWS`] windows are fetched
//! at once, [`Backend::parallel_reads`] of them in flight on threads of their
//! own, while the previous batch is decoded.
//!
//! Chunk ids are not recomputed on the way: the image check covers every byte, and
//! hashing each chunk again cost as much as the rest of the restore. The check is
//! the manifest's image check (XXH3-128 over chunk digests, [`crate::digest::image_check`]),
//! or for manifests written before it the image's blake3 hash, which cost a third
//! of a restore's CPU. When the check fails, a second pass checks each chunk
//! against its id to name the damaged one (and its pack) in the error. In a
//! store with deltas the first pass decodes the links of a window's chains
//! unchecked too (restore/links.rs); the second pass checks every link.

use super::links::{window_bases, WindowBases};
use super::output::{output_err, write_behind, Sink, Writes, WRITE_PIECE};
use crate::backend::{Backend, BackendError, HeldOpen};
use crate::codec::{self, DecoderPool};
use crate::digest::image_check::{self, Digest};
use crate::digest::tree_hash::{block_cv, root_from_blocks};
use crate::format::pack::{Codec, PackEntry};
use crate::index::chunk_index::{ChunkIndex, Location, PackTable};
use crate::store::bases::Chains;
use crate::store::Snapshot;
use crate::types::{ChunkId, ChunkIds, ChunkRef, IdMap};
use crate::{layout, Error, Result};
use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use std::fs::File;
use std::io::Write;
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

/// Largest single read: nearby chunks of one pack are fetched together up to this size.
pub(super) const MAX_RUN: u64 = 1 << 20;
/// Largest single read from a backend that serves several reads at once (S3):
/// each request costs a round trip, so fewer, larger ones.
const REMOTE_MAX_RUN: u64 = 2 << 20;
/// Windows fetched at once from such a backend: with one window's reads in
/// flight (two to four requests) a restore from S3 waited on round trips; 24 MiB
/// of image at once keeps `Backend::parallel_reads` requests busy. Two such
/// batches are held (one decoded while the next is fetched): at most ~48 MiB of
/// reads (32 MiB batches were 6 % faster from Garage and peaked 15 MB higher).
const REMOTE_WINDOWS: usize = 6;
/// Chunks of one pack at most this far apart are fetched in one read: reading the
/// bytes between them costs less than another request (a syscall, or an S3 GET).
pub(super) const MAX_GAP: u64 = 64 << 10;
/// Image bytes rebuilt at once (rounded to whole blocks).
const WINDOW: u64 = 4 << 20;
/// Windows decoded ahead of the writer.
const IN_FLIGHT: usize = 2;
/// Blocks are at least this long, as in capture: whole blake3 subtrees.
const MIN_BLOCK: u64 = 64 * 1024;
/// One read from a pack: the chunks of a window stored in `start..end`.
pub(super) struct Run {
    pub(super) pack: u32,
    pub(super) start: u64,
    pub(super) end: u64,
    /// (position in the image, chunk id, location)
    pub(super) items: Vec<(usize, ChunkId, Location)>,
}

/// What is at one position of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// A chunk of zeros, stored nowhere.
    Zero,
    /// A stored chunk and where it is (a pack of the restore's `PackTable`).
    Stored(ChunkId, Location),
    /// A stored chunk nothing locates: the restore fails before its first write.
    Unlocated(ChunkId),
}

/// An image's positions, each with its chunk and where that chunk is.
///
/// Why not two slices: the short way ([`super::plan`]) answers a position
/// from the decoded index objects it already holds, instead of copying each
/// position's chunk id and location into lists of its own first (17 MB for a 1 GiB
/// image, built on both cores before the first write, a tenth of it in page faults).
pub(crate) trait Positions: Sync {
    /// How many positions the image has.
    fn len(&self) -> usize;
    /// Position `i` (below [`Positions::len`]); `None` only when the positions
    /// contradict themselves (an internal error).
    fn at(&self, i: usize) -> Option<Position>;
}

/// Positions as lists: the chunk at each position, and where each stored one is.
pub(crate) struct Listed<'a> {
    pub chunks: &'a [ChunkRef],
    pub locs: &'a [Option<Location>],
}

impl Positions for Listed<'_> {
    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn at(&self, i: usize) -> Option<Position> {
        Some(match (self.chunks.get(i)?, self.locs.get(i)?) {
            (ChunkRef::Zero, _) => Position::Zero,
            (ChunkRef::Stored(id), Some(loc)) => Position::Stored(*id, *loc),
            (ChunkRef::Stored(id), None) => Position::Unlocated(*id),
        })
    }
}

/// The error for positions that contradict themselves.
fn no_position(i: usize) -> Error {
    Error::Internal(format!("restore position {i} has no chunk"))
}

/// What a pass computes for each block, and so what the image is checked against.
#[derive(Clone, Copy)]
struct Sums {
    /// The blake3 chaining value (for the image's blake3 hash).
    blake3: bool,
    /// The image-check digest.
    check: bool,
}

/// One block's sums (those the pass computes).
#[derive(Clone, Copy)]
struct BlockSums {
    cv: Option<ChainingValue>,
    check: Option<Digest>,
}

/// What a pass found: the image's blake3 hash and image check, those it computed.
struct Rebuilt {
    blake3: Option<[u8; 32]>,
    check: Option<Digest>,
}

/// A rebuilt window: its bytes and the sums of its blocks.
type Window = (Vec<u8>, Vec<BlockSums>);

/// The image being restored and what it is rebuilt from.
#[derive(Clone, Copy)]
struct Image<'a> {
    /// The store's backend, each pack opened once for the whole pass.
    backend: &'a HeldOpen<'a>,
    packs: &'a PackTable,
    snap: &'a Snapshot,
    /// Each position's chunk and where it is (every stored chunk located, unless
    /// salvaging).
    positions: &'a dyn Positions,
    pool: &'a DecoderPool,
    /// Bases of delta chunks (a store with deltas), located through the plan's
    /// table of every stored chunk, or the whole index.
    chains: Option<&'a Chains<'a>>,
    /// A salvage restore: chunks that cannot be read are written as zeros and
    /// recorded here instead of failing the restore.
    salvage: Option<&'a SalvageLog>,
}

/// A chunk a salvage restore could not rebuild.
#[derive(Clone, Debug)]
pub(crate) struct Lost {
    pub chunk: ChunkId,
    /// The pack it was to be read from, when there was one.
    pub object: Option<String>,
    pub detail: String,
}

/// What a salvage restore could not rebuild, by position. Every task that meets
/// a problem records it; the first word on a position stands (the reason a read
/// failed, rather than the decoding of the nothing it gave).
#[derive(Default)]
pub(crate) struct SalvageLog {
    lost: Mutex<std::collections::BTreeMap<usize, Lost>>,
    /// Dictionaries that could not be read, and why.
    dicts: IdMap<String>,
}

impl SalvageLog {
    pub(crate) fn record(
        &self,
        pos: usize,
        chunk: ChunkId,
        object: Option<String>,
        detail: String,
    ) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.entry(pos).or_insert(Lost {
            chunk,
            object,
            detail,
        });
    }

    fn is_empty(&self) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn take(self) -> std::collections::BTreeMap<usize, Lost> {
        self.lost.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a salvage restore wrote: the positions written as zeros, and whether the
/// image still matches its recorded check.
pub(crate) struct Salvaged {
    pub lost: std::collections::BTreeMap<usize, Lost>,
    pub image_matches: bool,
}

/// What every window of one pass needs.
#[derive(Clone, Copy)]
struct Pass<'a> {
    image: Image<'a>,
    check_ids: bool,
    sums: Sums,
    /// Bytes per hashed block (a whole number of chunks).
    block_len: u64,
    window_bufs: &'a Buffers,
    run_bufs: &'a Buffers,
    /// Set when blocks are written where they belong as soon as they are built.
    write_at: Option<&'a File>,
    /// Reads worth having in flight at once (`Backend::parallel_reads`): more
    /// than one for a remote store, whose reads are batched and run on threads
    /// of their own.
    reads: usize,
}

/// Buffers handed back for reuse. Fresh multi-megabyte buffers cost page faults
/// and kernel zeroing on every window: more system time than the writes.
/// At most `.1` buffers are kept.
struct Buffers(Mutex<Vec<Vec<u8>>>, usize);

impl Buffers {
    fn new(keep: usize) -> Self {
        Buffers(Mutex::new(Vec::new()), keep)
    }
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }
    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < self.1 {
                v.push(buf);
            }
        }
    }
}

/// Writes the image of `snap` (chunk list `chunks`) to `out`, each chunk read from
/// where `index` has it; returns its blake3 hash (the manifest's) after checking
/// the image: against its image check, or with `blake3` (and for manifests without
/// a check) against its blake3 hash too.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_image(
    backend: &dyn Backend,
    index: &ChunkIndex,
    snap: &Snapshot,
    chunks: &[ChunkRef],
    out: Sink<'_>,
    progress: Option<&crate::Progress>,
    blake3: bool,
    chains: Option<&Chains<'_>>,
    ids: &ChunkIds,
) -> Result<[u8; 32]> {
    // Located once, all together: three lookups per chunk were 14 % of a restore.
    let locs = index.locate_all(chunks);
    // A chunk without a location fails the restore before anything is written.
    for (c, loc) in chunks.iter().zip(&locs) {
        if let (ChunkRef::Stored(id), None) = (c, loc) {
            return Err(index.unlocated(snap.id, id));
        }
    }
    let positions = Listed {
        chunks,
        locs: &locs,
    };
    write_located(
        backend,
        index.packs(),
        snap,
        &positions,
        out,
        progress,
        blake3,
        chains,
        ids,
    )
}

/// [`write_image`] with every stored chunk already located (in one of `packs`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_located(
    backend: &dyn Backend,
    packs: &PackTable,
    snap: &Snapshot,
    positions: &dyn Positions,
    out: Sink<'_>,
    progress: Option<&crate::Progress>,
    blake3: bool,
    chains: Option<&Chains<'_>>,
    ids: &ChunkIds,
) -> Result<[u8; 32]> {
    let m = &snap.manifest;
    let pool = DecoderPool::new(
        load_dicts(backend, packs, snap, positions, None)?,
        ids.clone(),
    );
    let held = HeldOpen::new(backend);
    let image = Image {
        backend: &held,
        packs,
        snap,
        positions,
        pool: &pool,
        chains,
        salvage: None,
    };
    let sums = Sums {
        blake3: blake3 || m.image_check.is_none(),
        check: m.image_check.is_some(),
    };
    let got = rebuild(&image, false, sums, out, progress)?;
    if let Some((check, expected, actual)) = mismatch(snap, &got) {
        // Name the culprit: a chunk whose bytes do not match its id, if any.
        rebuild(&image, true, sums, Sink::Stream(&mut std::io::sink()), None)?;
        return Err(Error::ImageMismatch {
            snapshot: snap.id,
            check,
            expected: crate::types::to_hex(expected),
            actual: crate::types::to_hex(actual),
        });
    }
    Ok(m.image_hash)
}

/// Which check a rebuilt image fails, with the recorded and the computed value.
fn mismatch<'a>(
    snap: &'a Snapshot,
    got: &'a Rebuilt,
) -> Option<(&'static str, &'a [u8], &'a [u8])> {
    let m = &snap.manifest;
    match (&got.check, &m.image_check, &got.blake3) {
        (Some(got), Some(want), _) if got != want => Some(("image check", &want[..], &got[..])),
        (_, _, Some(got)) if *got != m.image_hash => {
            Some(("blake3 hash", &m.image_hash[..], &got[..]))
        }
        _ => None,
    }
}

/// A salvage restore into `file`: like [`write_located`], but a chunk that is
/// missing, cannot be read back from its pack, does not decode or does not match
/// its id is written as zeros and recorded instead of failing the restore (a
/// read that fails for any other reason, an I/O error, still fails it: that is
/// not damage). `log` may already hold positions nothing locates.
///
/// The first pass is an ordinary restore that goes on past damage; only when it
/// met some, or the image fails its check, a second pass checks every chunk
/// against its id and writes the file again, zeros where a chunk fails. So a
/// salvage of a sound snapshot costs what a restore does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_salvaged(
    backend: &dyn Backend,
    packs: &PackTable,
    snap: &Snapshot,
    positions: &dyn Positions,
    file: &File,
    durable: bool,
    progress: Option<&crate::Progress>,
    mut log: SalvageLog,
    chains: Option<&Chains<'_>>,
    ids: &ChunkIds,
) -> Result<Salvaged> {
    let m = &snap.manifest;
    let dicts = load_dicts(backend, packs, snap, positions, Some(&mut log.dicts))?;
    let pool = DecoderPool::new(dicts, ids.clone());
    let held = HeldOpen::new(backend);
    let image = Image {
        backend: &held,
        packs,
        snap,
        positions,
        pool: &pool,
        chains,
        salvage: Some(&log),
    };
    let sums = Sums {
        blake3: m.image_check.is_none(),
        check: m.image_check.is_some(),
    };
    let first = rebuild(&image, false, sums, Sink::At { file, durable }, progress)?;
    let image_matches = if mismatch(snap, &first).is_none() && log.is_empty() {
        true
    } else {
        let second = rebuild(&image, true, sums, Sink::At { file, durable }, None)?;
        mismatch(snap, &second).is_none()
    };
    Ok(Salvaged {
        lost: log.take(),
        image_matches,
    })
}

/// One pass over the image: rebuilds it window by window into `out` and returns
/// the `sums` asked for; with `check_ids`, also checks every chunk against its id.
fn rebuild(
    image: &Image<'_>,
    check_ids: bool,
    sums: Sums,
    mut out: Sink<'_>,
    progress: Option<&crate::Progress>,
) -> Result<Rebuilt> {
    let (snap, positions) = (image.snap, image.positions);
    let m = &snap.manifest;
    let chunk_len = m.chunk_len();
    let block_len = chunk_len.max(MIN_BLOCK);
    let window = (WINDOW / block_len).max(1) * block_len;
    let per_window = (window / chunk_len) as usize;
    let windows = positions.len().div_ceil(per_window);
    // Enough for the windows in flight, and a window's worth of runs.
    let (window_bufs, run_bufs) = (Buffers::new(IN_FLIGHT + 2), Buffers::new(16));
    let blocks = m.image_len.div_ceil(block_len) as usize;
    let mut cvs = Vec::with_capacity(if sums.blake3 { blocks } else { 0 });
    let mut checks = Vec::with_capacity(if sums.check { blocks } else { 0 });
    let mut single: Option<blake3::Hash> = None;
    let mut written = 0u64;
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = sync_channel::<Result<Window>>(IN_FLIGHT);
        let pass = Pass {
            image: *image,
            check_ids,
            sums,
            block_len,
            window_bufs: &window_bufs,
            run_bufs: &run_bufs,
            write_at: match &out {
                Sink::At { file, .. } => Some(*file),
                Sink::Stream(_) => None,
            },
            reads: image.backend.backend().parallel_reads(),
        };
        s.spawn(move || {
            let range_of = |w: usize| {
                let first = w * per_window;
                first..(first + per_window).min(positions.len())
            };
            // Windows are fetched in batches of `batch` (one window from a local
            // store, several from a remote one) and built one by one.
            let remote = pass.reads > 1;
            let batch = if remote { REMOTE_WINDOWS } else { 1 };
            let batches = windows.div_ceil(batch);
            let windows_of = |b: usize| b * batch..((b + 1) * batch).min(windows);
            let span = |b: usize| {
                let w = windows_of(b);
                range_of(w.start).start..range_of(w.end - 1).end
            };
            // Builds batch `b` from its reads, sending each window to the writer;
            // false when the writer gave up (its error is reported) or a window failed.
            let build = |b: usize, fetched: Result<Fetched>| -> bool {
                let fetched = match fetched {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return false;
                    }
                };
                for w in windows_of(b) {
                    let r = build_window(pass, range_of(w), &fetched);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return false;
                    }
                }
                for f in fetched.bytes {
                    pass.run_bufs.give(f);
                }
                true
            };
            // The next batch's reads run while this one is decoded: done window by
            // window, the core that finished its reads first waited for the
            // other's, 256 times per GiB. A remote batch is fetched by a thread of
            // its own, whose requests wait on the network, not on the cores.
            let mut next = (batches > 0).then(|| fetch_window(pass, span(0)));
            for b in 0..batches {
                let Some(fetched) = next.take() else {
                    return;
                };
                let fetch_next = || (b + 1 < batches).then(|| fetch_window(pass, span(b + 1)));
                let (go_on, after) = if remote {
                    std::thread::scope(|s| {
                        let h = s.spawn(fetch_next);
                        let go_on = build(b, fetched);
                        let after = h
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        (go_on, after)
                    })
                } else {
                    rayon::join(|| build(b, fetched), fetch_next)
                };
                next = after;
                if !go_on {
                    return;
                }
            }
        });
        for r in rx {
            let (buf, window_sums) = r?;
            if sums.blake3 && m.image_len <= block_len {
                single = Some(blake3::hash(&buf));
            }
            cvs.extend(window_sums.iter().filter_map(|s| s.cv));
            checks.extend(window_sums.iter().filter_map(|s| s.check));
            match &mut out {
                Sink::Stream(w) => {
                    for piece in buf.chunks(WRITE_PIECE) {
                        w.write_all(piece).map_err(output_err)?;
                    }
                }
                Sink::At {
                    file,
                    durable: true,
                } => write_behind(file, written, buf.len() as u64),
                Sink::At { .. } => {}
            }
            written += buf.len() as u64;
            crate::progress::report(progress, written, m.image_len);
            window_bufs.give(buf);
        }
        Ok(())
    })?;
    let short = || Error::Internal("restore produced fewer blocks than the image has".into());
    let blake3 = match single {
        _ if !sums.blake3 => None,
        Some(h) => Some(h),
        None if m.image_len == 0 => Some(blake3::hash(&[])),
        None if cvs.len() != blocks => return Err(short()),
        None => Some(root_from_blocks(&cvs, block_len, m.image_len)),
    };
    let check = match sums.check {
        false => None,
        true if checks.len() != blocks => return Err(short()),
        true => Some(image_check::image_check(m.image_len, chunk_len, &checks)),
    };
    Ok(Rebuilt {
        blake3: blake3.map(|h| *h.as_bytes()),
        check,
    })
}

/// The dictionaries of every pack the image's chunks are in, each checked.
///
/// With `failed` (a salvage restore), a dictionary that is missing or damaged is
/// recorded there instead of failing the restore (its chunks are then lost); one
/// that cannot be read for another reason (an I/O error) still fails it.
fn load_dicts(
    backend: &dyn Backend,
    packs: &PackTable,
    snap: &Snapshot,
    positions: &dyn Positions,
    mut failed: Option<&mut IdMap<String>>,
) -> Result<IdMap<Vec<u8>>> {
    // Most stores have no dictionaries: then no position need be looked at (a
    // quarter of a million of them for 1 GiB took ~8 ms before the first write).
    if !packs.any_dict() {
        return Ok(IdMap::default());
    }
    // Each dictionary with a chunk that needs it (named if it cannot be read).
    let need: IdMap<ChunkId> = (0..positions.len())
        .into_par_iter()
        .try_fold(
            || (IdMap::default(), u32::MAX),
            |(mut need, seen_pack): (IdMap<ChunkId>, u32), i| {
                let at = positions.at(i).ok_or_else(|| no_position(i))?;
                // (An unlocated chunk needs no dictionary: it is not read.)
                let Position::Stored(id, l) = at else {
                    return Ok((need, seen_pack));
                };
                // Chunks of one pack come in long stretches: one look per stretch.
                if l.pack != seen_pack {
                    if let Some(d) = packs.dict(l.pack) {
                        need.entry(d).or_insert(id);
                    }
                }
                Ok((need, l.pack))
            },
        )
        .map(|r: Result<(IdMap<ChunkId>, u32)>| r.map(|(need, _)| need))
        .try_reduce(IdMap::default, |mut a, b| {
            for (d, id) in b {
                a.entry(d).or_insert(id);
            }
            Ok(a)
        })?;
    let mut out = IdMap::default();
    for (d, chunk) in need {
        match codec::load_dict(backend, &d) {
            Ok(body) => {
                out.insert(d, body.dict);
            }
            // A failed read is passed on as it is: it is not damage.
            Err(e) if !e.is_damage() => return Err(e),
            Err(e) => {
                let detail = format!("its pack's dictionary cannot be read: {e}");
                match failed.as_deref_mut() {
                    Some(f) => {
                        f.insert(d, detail);
                    }
                    None => {
                        return Err(Error::ChunkDamaged {
                            snapshot: Some(snap.id),
                            chunk,
                            object: layout::dict(&d),
                            detail,
                        })
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A window's reads, done: each run and its bytes, and on a restore's first
/// pass the decoded bases of its deltas.
struct Fetched {
    runs: Vec<Run>,
    bytes: Vec<Vec<u8>>,
    bases: Option<WindowBases>,
}

/// Plans the reads of positions `range` and does them, on every core.
fn fetch_window(pass: Pass<'_>, range: std::ops::Range<usize>) -> Result<Fetched> {
    let Image {
        backend,
        packs,
        snap,
        ..
    } = pass.image;
    let max_run = if pass.reads > 1 {
        REMOTE_MAX_RUN
    } else {
        MAX_RUN
    };
    let runs = plan_reads(&pass.image, range, max_run)?;
    let read = |run: &Run| {
        let mut buf = pass.run_bufs.take();
        let key = || layout::pack(&packs.id(run.pack));
        match backend.get_range_into(&key(), run.start..run.end, &mut buf) {
            Ok(()) => Ok(buf),
            // Salvaging: a pack gone or shorter than its index says loses the
            // run's chunks (an empty read: each then fails to decode, and keeps
            // this reason). Any other failure to read is not damage.
            Err(e @ (BackendError::NotFound { .. } | BackendError::Range { .. }))
                if pass.image.salvage.is_some() =>
            {
                if let Some(log) = pass.image.salvage {
                    let detail = match e {
                        BackendError::NotFound { .. } => {
                            "its pack is missing from the store".into()
                        }
                        e => format!("its pack cannot hold it: {e}"),
                    };
                    for (pos, id, _) in &run.items {
                        log.record(*pos, *id, Some(key()), detail.clone());
                    }
                }
                buf.clear();
                Ok(buf)
            }
            Err(e) => Err(fetch_error(snap, run.items[0].1, key(), e)),
        }
    };
    let bytes = if pass.reads > 1 {
        fetch_parallel(&runs, pass.reads, read)?
    } else {
        runs.par_iter().map(read).collect::<Result<_>>()?
    };
    // The first pass of a restore reads the bases of all the batch's deltas
    // together and decodes them unchecked (restore/links.rs says why that is
    // safe), here beside the previous batch's decode rather than in it: the
    // cores share the two halves. The second pass, which names a damaged chunk,
    // and a salvage, which names each lost one, follow each chain with every
    // link checked.
    let bases = match pass.image.chains {
        Some(c) if !pass.check_ids && pass.image.salvage.is_none() => {
            let deltas = runs.iter().zip(&bytes).flat_map(|(run, bytes)| {
                run.items.iter().filter_map(move |(_, id, loc)| {
                    if loc.entry.codec != Codec::ZstdDelta {
                        return None;
                    }
                    let off = (loc.entry.offset as u64 - run.start) as usize;
                    let stored = bytes.get(off..off + loc.entry.stored_len as usize)?;
                    Some((loc.pack_entry(*id), stored))
                })
            });
            Some(window_bases(c, backend, deltas, pass.reads)?)
        }
        _ => None,
    };
    Ok(Fetched { runs, bytes, bases })
}

/// `read` of every run, at most `reads` at once, each on a thread of its own (they
/// wait on the network; the cores decode meanwhile). In the runs' order.
pub(crate) fn fetch_parallel<R: Sync>(
    runs: &[R],
    reads: usize,
    read: impl Fn(&R) -> Result<Vec<u8>> + Sync,
) -> Result<Vec<Vec<u8>>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let mut got: Vec<(usize, Result<Vec<u8>>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..reads.min(runs.len()))
            .map(|_| {
                s.spawn(|| {
                    use std::sync::atomic::Ordering::Relaxed;
                    let mut mine = Vec::new();
                    // After a failure the rest is not fetched: the restore stops.
                    while !failed.load(Relaxed) {
                        let i = next.fetch_add(1, Relaxed);
                        let Some(run) = runs.get(i) else { break };
                        let r = read(run);
                        failed.fetch_or(r.is_err(), Relaxed);
                        mine.push((i, r));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    got.sort_unstable_by_key(|(i, _)| *i);
    // The first failure in run order, if any (after one, the rest was not read).
    let bytes: Vec<Vec<u8>> = got.into_iter().map(|(_, r)| r).collect::<Result<_>>()?;
    if bytes.len() != runs.len() {
        return Err(Error::Internal("a read was skipped".into()));
    }
    Ok(bytes)
}

/// Rebuilds the image bytes of chunk positions `range` (which starts on a block
/// boundary) from their fetched reads, and the sums of their blocks.
/// Each block is decoded and hashed by one task, while its bytes are still in the
/// core's cache, and with [`Sink::At`] written at its offset by that task or by the
/// one writing when it was done ([`Writes`]).
fn build_window(
    pass: Pass<'_>,
    range: std::ops::Range<usize>,
    fetched: &Fetched,
) -> Result<Window> {
    let Pass {
        image,
        check_ids,
        sums,
        block_len,
        window_bufs,
        write_at,
        ..
    } = pass;
    let Image {
        packs,
        snap,
        pool,
        salvage,
        chains,
        ..
    } = image;
    let m = &snap.manifest;
    let chunk_len = m.chunk_len() as usize;
    let start = range.start as u64 * chunk_len as u64;
    let len = (m.image_len - start).min(range.len() as u64 * chunk_len as u64) as usize;
    let Fetched {
        runs,
        bytes: fetched,
        bases: fetched_bases,
    } = fetched;
    // Where each stored position's bytes are: (run, item). The reads may cover
    // more windows than this one.
    let mut at: Vec<Option<(usize, usize)>> = vec![None; range.len()];
    for (r, run) in runs.iter().enumerate() {
        for (k, (pos, _, _)) in run.items.iter().enumerate() {
            if range.contains(pos) {
                at[pos - range.start] = Some((r, k));
            }
        }
    }
    let decode = |slot: &mut [u8], place: &Option<(usize, usize)>| -> Result<()> {
        let Some((r, k)) = *place else {
            slot.fill(0);
            return Ok(());
        };
        let run = &runs[r];
        let (pos, id, loc) = &run.items[k];
        let damaged = |detail: String| Error::ChunkDamaged {
            snapshot: Some(snap.id),
            chunk: *id,
            object: layout::pack(&packs.id(run.pack)),
            detail,
        };
        // The backend returns the range asked for; a short read is damage, not a panic.
        let off = (loc.entry.offset as u64 - run.start) as usize;
        let stored = off
            .checked_add(loc.entry.stored_len as usize)
            .and_then(|end| fetched[r].get(off..end))
            .ok_or_else(|| damaged("the pack ends before the chunk".into()))?;
        let entry: PackEntry = loc.pack_entry(*id);
        if entry.raw_len as usize != slot.len() {
            return Err(damaged(format!(
                "{} bytes where position {pos} needs {}",
                entry.raw_len,
                slot.len()
            )));
        }
        let dict = packs.dict(run.pack);
        // A delta's base first, decoded (checked) through its own chain; without
        // a reader of bases, the decoder names the base it lacks.
        let followed;
        let base = match (&fetched_bases, chains, entry.codec) {
            // The window's links; one it left out (lost, or a base prefix it
            // could not resolve alone) is followed the checked way below.
            (Some(w), Some(c), Codec::ZstdDelta) => match w.base_for(&entry, stored) {
                Ok(b) => b,
                Err(crate::codec::ChunkError::Base { .. }) => {
                    followed = c
                        .base_for(&entry, stored)
                        .map_err(|e| e.or_damaged(damaged))?;
                    followed.as_deref().map(|b| b.as_slice())
                }
                Err(e) => return Err(e.or_damaged(damaged)),
            },
            (Some(w), None, Codec::ZstdDelta) => w
                .base_for(&entry, stored)
                .map_err(|e| e.or_damaged(damaged))?,
            (None, Some(c), Codec::ZstdDelta) => {
                followed = c
                    .base_for(&entry, stored)
                    .map_err(|e| e.or_damaged(damaged))?;
                followed.as_deref().map(|b| b.as_slice())
            }
            _ => None,
        };
        // Unchecked on the first pass: the image check covers every byte.
        pool.with(|d| {
            match check_ids {
                true => d.decode_into_checked_with_base(&entry, stored, dict.as_ref(), base, slot),
                false => d.decode_into_with_base(&entry, stored, dict.as_ref(), base, slot),
            }
            .map_err(|e| e.or_damaged(damaged))
        })
    };
    // Salvaging: a chunk found damaged is written as zeros and recorded.
    let decode = |slot: &mut [u8], place: &Option<(usize, usize)>| -> Result<()> {
        match (decode(slot, place), salvage, *place) {
            (Err(Error::ChunkDamaged { object, detail, .. }), Some(log), Some((r, k))) => {
                let (pos, id, _) = &runs[r].items[k];
                // A chunk of a pack whose dictionary is lost: say that, not
                // "needs a dictionary".
                let detail = packs
                    .dict(runs[r].pack)
                    .and_then(|d| log.dicts.get(&d).cloned())
                    .unwrap_or(detail);
                log.record(*pos, *id, Some(object), detail);
                slot.fill(0);
                Ok(())
            }
            (r, _, _) => r,
        }
    };
    let block = block_len as usize;
    let per_block = block / chunk_len;
    // A reused buffer: every byte is written below (zero chunks explicitly).
    let mut buf = window_bufs.take();
    buf.resize(len, 0);
    let block_sums = {
        let writes = Writes::default();
        let block_sums = buf
            .par_chunks_mut(block)
            .zip(at.par_chunks(per_block))
            .enumerate()
            .map(|(b, (bytes, places))| {
                // Each chunk's digest is taken right after it is decoded, while
                // its bytes are in this core's cache.
                let mut digest = sums.check.then(image_check::BlockDigest::default);
                for (slot, place) in bytes.chunks_mut(chunk_len).zip(places) {
                    decode(slot, place)?;
                    if let Some(d) = &mut digest {
                        d.add_chunk(slot);
                    }
                }
                let offset = start + (b * block) as u64;
                let check = digest.map(image_check::BlockDigest::finish);
                let cv = sums.blake3.then(|| block_cv(offset, bytes));
                if let Some(f) = write_at {
                    writes.add(f, offset, bytes)?;
                }
                Ok(BlockSums { cv, check })
            })
            .collect::<Result<Vec<BlockSums>>>();
        if let (Ok(_), Some(f)) = (&block_sums, write_at) {
            writes.finish(f)?;
        }
        block_sums
    };
    block_sums.map(|s| (buf, s))
}

/// The error of a failed read from pack `key` of bytes holding `chunk` (a run's first).
pub(super) fn fetch_error(snap: &Snapshot, chunk: ChunkId, key: String, e: BackendError) -> Error {
    match e {
        BackendError::NotFound { .. } => Error::PackMissing {
            snapshot: snap.id,
            chunk,
            pack: key,
        },
        other if other.is_damage() => Error::ChunkDamaged {
            snapshot: Some(snap.id),
            chunk,
            object: key,
            detail: other.to_string(),
        },
        // Not damage: the bytes could not be read, so nothing is known of them.
        other => Error::Backend(other),
    }
}

/// The reads that fetch every stored chunk of positions `range`: the chunks grouped
/// by pack and sorted by offset, neighbours at most [`MAX_GAP`] apart read together,
/// in reads of at most `max_run` bytes.
/// An image that changed since its first backup has its chunks interleaved from
/// several packs; read run by run, a 1 GiB restore made 25,000 reads (each an open,
/// a seek and a close) where by pack it makes one or a few per window.
fn plan_reads(image: &Image<'_>, range: std::ops::Range<usize>, max_run: u64) -> Result<Vec<Run>> {
    let (snap, positions) = (image.snap, image.positions);
    let mut items = Vec::with_capacity(range.len());
    for i in range {
        match positions.at(i).ok_or_else(|| no_position(i))? {
            Position::Zero => {}
            Position::Stored(id, loc) => items.push((i, id, loc)),
            // Salvaging: written as zeros (the caller recorded why, if it knew).
            Position::Unlocated(id) if image.salvage.is_some() => {
                if let Some(log) = image.salvage {
                    let why = "no index object locates it (missing from the store)";
                    log.record(i, id, None, why.into());
                }
            }
            // The callers locate every stored chunk before the first write.
            Position::Unlocated(id) => {
                return Err(Error::ChunkMissing {
                    snapshot: snap.id,
                    chunk: id,
                })
            }
        }
    }
    Ok(group_runs(items, max_run, MAX_GAP))
}

/// Stored chunks (position, id, location) grouped into reads: by pack, sorted by
/// offset, neighbours at most [`MAX_GAP`] apart and at most `max_run` long read
/// together.
pub(super) fn group_runs(
    mut items: Vec<(usize, ChunkId, Location)>,
    max_run: u64,
    max_gap: u64,
) -> Vec<Run> {
    items.sort_unstable_by_key(|(_, _, loc)| (loc.pack, loc.entry.offset));
    let mut runs: Vec<Run> = Vec::new();
    for (i, id, loc) in items {
        let start = loc.entry.offset as u64;
        let end = start + loc.entry.stored_len as u64;
        match runs.last_mut() {
            // Sorted by offset, so `start` is at or past the run's start.
            Some(run)
                if run.pack == loc.pack
                    && start <= run.end + max_gap
                    && end.max(run.end) - run.start <= max_run =>
            {
                run.end = run.end.max(end);
                run.items.push((i, id, loc));
            }
            _ => runs.push(Run {
                pack: loc.pack,
                start,
                end,
                items: vec![(i, id, loc)],
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::{fetch_parallel, Run};
    use crate::backend::{Backend, LocalBackend, ObjectInfo, PutMode};
    use crate::restore::output::WRITE_PIECE;
    use crate::{BackupOptions, InitOptions};
    use crate::{Error, Store};
    use std::ops::Range;
    use std::sync::Arc;

    /// A restore to a stream (stdout) writes the image in pieces of at most
    /// `WRITE_PIECE` bytes (a 4 MiB window in one write made large page-cache
    /// folios when stdout is a file), and the pieces are the image.
    #[test]
    fn a_restore_to_a_stream_writes_no_piece_over_32_kib() -> anyhow::Result<()> {
        struct Recorder {
            bytes: Vec<u8>,
            largest: usize,
            writes: usize,
        }
        impl std::io::Write for Recorder {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.largest = self.largest.max(buf.len());
                self.writes += 1;
                self.bytes.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let store = Store::init(dir.path().join("store"), &InitOptions::default())?;
        rusqlite::Connection::open(&db)?.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
             INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
               SELECT randomblob(2000) || zeroblob(2000) FROM n;",
        )?;
        store.backup_path(&db, &BackupOptions::default())?;
        let snap = store.snapshots()?.remove(0);
        assert!(snap.manifest.image_len > 8 << 20, "several windows");
        let mut out = Recorder {
            bytes: Vec::new(),
            largest: 0,
            writes: 0,
        };
        let report = store.restore_to_writer(&snap, &mut out)?;
        assert_eq!(out.bytes.len() as u64, snap.manifest.image_len);
        assert_eq!(
            blake3::hash(&out.bytes).as_bytes(),
            &snap.manifest.image_hash
        );
        assert_eq!(report.image_hash, snap.manifest.image_hash);
        assert_eq!(
            out.largest, WRITE_PIECE,
            "no write over {WRITE_PIECE} bytes"
        );
        assert!(out.writes as u64 >= snap.manifest.image_len / WRITE_PIECE as u64);
        Ok(())
    }

    /// Reads come back in the runs' order whichever thread did them; the first
    /// failure (in run order) is the one reported.
    #[test]
    fn parallel_reads_keep_their_order_and_report_failures() {
        let runs: Vec<Run> = (0..37u64)
            .map(|i| Run {
                pack: i as u32,
                start: i * 10,
                end: i * 10 + i,
                items: Vec::new(),
            })
            .collect();
        let read = |r: &Run| -> crate::Result<Vec<u8>> {
            // Later runs answer sooner: completion order differs from run order.
            std::thread::sleep(std::time::Duration::from_micros(40 * (37 - r.start / 10)));
            Ok(vec![r.pack as u8; (r.end - r.start) as usize])
        };
        for reads in [1usize, 2, 8, 64] {
            let got = fetch_parallel(&runs, reads, read).unwrap();
            assert_eq!(got.len(), runs.len());
            for (i, bytes) in got.iter().enumerate() {
                assert_eq!(bytes, &vec![i as u8; i], "run {i} with {reads} reads");
            }
        }
        let failing = |r: &Run| -> crate::Result<Vec<u8>> {
            if r.pack % 10 == 7 {
                return Err(Error::Internal(format!("read {} failed", r.pack)));
            }
            Ok(Vec::new())
        };
        // Reads are taken in run order and each taken read finishes, so run 7's
        // failure is there whichever failed first.
        for reads in [1usize, 4, 64] {
            let err = fetch_parallel(&runs, reads, failing).unwrap_err();
            assert_eq!(
                err.to_string(),
                Error::Internal("read 7 failed".into()).to_string()
            );
        }
        assert!(fetch_parallel(&[], 8, failing).unwrap().is_empty());
    }

    /// A local directory that says it serves reads in parallel, as S3 does: the
    /// restore takes its remote path (batches of windows, reads on threads of
    /// their own).
    struct AsRemote(LocalBackend, Option<String>);

    impl Backend for AsRemote {
        fn location(&self) -> String {
            self.0.location()
        }
        fn put(&self, key: &str, data: &[u8], mode: PutMode) -> crate::backend::Result<()> {
            self.0.put(key, data, mode)
        }
        fn get(&self, key: &str) -> crate::backend::Result<Vec<u8>> {
            self.0.get(key)
        }
        fn get_range(&self, key: &str, range: Range<u64>) -> crate::backend::Result<Vec<u8>> {
            if self.1.as_deref() == Some(key) {
                // A read that fails on the way (a dropped connection).
                return Err(crate::backend::BackendError::Io {
                    location: self.location(),
                    op: "get",
                    key: key.to_string(),
                    source: std::io::Error::other("connection reset"),
                });
            }
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
        fn parallel_reads(&self) -> usize {
            8
        }
    }

    /// Snapshots of a database several remote batches long (24 MiB each), whose
    /// later snapshots take chunks from several packs, restore through the
    /// remote path to the bytes the local path gives, hash-checked and sound; a
    /// lost pack fails the restore and leaves no output.
    #[test]
    fn remote_batches_restore_what_local_reads_do() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let store_dir = dir.path().join("store");
        let local = Store::init(&store_dir, &InitOptions::default())?;
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
             INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 15000)
               SELECT randomblob(2000) || zeroblob(2000) FROM n;",
        )?;
        local.backup_path(&db, &BackupOptions::default())?;
        for m in [7, 3] {
            conn.execute(
                &format!("UPDATE t SET v = randomblob(3000) WHERE k % {m} = 0"),
                [],
            )?;
            local.backup_path(&db, &BackupOptions::default())?;
        }
        let remote = Store::open_backend(Arc::new(AsRemote(LocalBackend::new(&store_dir), None)))?;
        let snaps = remote.snapshots()?;
        assert_eq!(snaps.len(), 3);
        assert!(
            snaps[0].manifest.image_len > 50 << 20,
            "more than two batches"
        );
        for (i, snap) in snaps.iter().enumerate() {
            let (a, b) = (
                dir.path().join(format!("l{i}.db")),
                dir.path().join(format!("r{i}.db")),
            );
            local.restore_to_path(snap, &a, false)?;
            let report = remote.restore_to_path(snap, &b, false)?;
            assert_eq!(report.image_hash, snap.manifest.image_hash);
            let bytes = std::fs::read(&b)?;
            assert_eq!(blake3::hash(&bytes).as_bytes(), &snap.manifest.image_hash);
            assert!(
                std::fs::read(&a)? == bytes,
                "snapshot {i}: remote and local restores differ"
            );
            let check: String =
                rusqlite::Connection::open(&b)?
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            assert_eq!(check, "ok");
        }
        // The first backup's pack (the largest), which every snapshot reads:
        // a read of it failing, or its loss, fails the restore by name and leaves
        // no output.
        let mut packs = remote.backend().list("packs/")?;
        packs.sort_by_key(|o| std::cmp::Reverse(o.size));
        let key = packs[0].key.clone();
        let open = |fail: Option<String>| {
            Store::open_backend(Arc::new(AsRemote(LocalBackend::new(&store_dir), fail)))
        };
        let out = dir.path().join("failed.db");
        let err = open(Some(key.clone()))?
            .restore_to_path(&snaps[2], &out, false)
            .expect_err("a read fails");
        assert!(
            err.to_string().contains(&key) && err.to_string().contains("connection reset"),
            "{err}"
        );
        assert!(!out.exists());
        remote.backend().delete(&key)?;
        let err = open(None)?
            .restore_to_path(&snaps[2], &out, false)
            .expect_err("a pack is gone");
        assert!(err.to_string().contains(&key), "{err}");
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".pagesnap-restore")
            })
            .collect();
        assert!(leftovers.is_empty());
        Ok(())
    }
}
