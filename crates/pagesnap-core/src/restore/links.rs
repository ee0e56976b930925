//! The bases one window of a restore needs, read and decoded together.
//!
//! Each changed position of a store with deltas is a chain: its delta, the
//! chunk that delta was made against, and so on down to a chunk that is not a
//! delta. Followed position by position ([`Chains::base_for`]) every link was a
//! read of its own (an `open` and a `pread`), a decode checked against its id
//! and an LRU insert, though no other position shares those links. Here the
//! links of all the window's deltas are read level by level (a level's bases
//! are known only from the blobs above them), each level grouped by pack and
//! offset into runs as the window's own chunks are ([`group_runs`]), then
//! decoded bottom-up on every core and dropped with the window.
//!
//! Links are decoded unchecked. Only a restore's first pass uses this, and it
//! checks the whole image against the manifest's image check (or its blake3
//! hash), which covers every byte of every position: a wrong link either fails
//! to decode (the position is then damaged, as before), or gives a wrong
//! chunk at the top of the chain, a wrong byte of the image that the check
//! catches, or gives the right bytes (a delta that copies nothing from the
//! damaged part), which are then right. When the check fails, the second pass
//! follows every chain through [`Chains::base_for`], each link checked against
//! its id, and names the damaged chunk.

use super::rebuild::{fetch_parallel, group_runs, Run, MAX_RUN};
use crate::codec::{base_of, BaseFault, ChunkError};
use crate::format::index::MAX_DELTA_DEPTH;
use crate::format::pack::{PackEntry, MAX_CHUNK_LEN};
use crate::store::bases::Chains;
use crate::types::{ChunkId, Id, IdMap, IdSet};
use crate::{layout, Error, Result};
use rayon::prelude::*;

/// One link read: its entry, its pack's dictionary, where its blob is in the
/// level reads, and the base it names (none for a chunk that is not a delta).
struct Link {
    entry: PackEntry,
    dict: Option<Id>,
    buf: usize,
    off: usize,
    base: Option<ChunkId>,
}

/// The decoded bases of one window's deltas. A base missing here could not be
/// had (missing, damaged, or its chain too deep).
pub(super) struct WindowBases {
    decoded: IdMap<Vec<u8>>,
}

impl WindowBases {
    /// The base bytes delta `e` (whose blob is `stored`) needs, or the
    /// [`ChunkError::Base`] naming that base, as [`Chains::base_for`] says it.
    pub(super) fn base_for(
        &self,
        e: &PackEntry,
        stored: &[u8],
    ) -> std::result::Result<Option<&[u8]>, ChunkError> {
        let Some(h) = base_of(e, stored)? else {
            return Ok(None);
        };
        match self.decoded.get(&h.base) {
            Some(b) => Ok(Some(b)),
            None => Err(ChunkError::Base {
                base: h.base,
                fault: BaseFault::Missing,
            }),
        }
    }
}

/// Reads and decodes every link the deltas `deltas` (entry and blob) need, at
/// most `reads` reads at once from a store that serves several (S3). A link
/// that is missing or damaged is left out (the positions above it fail as
/// damaged); one that cannot be read (an I/O error, not damage) fails the
/// whole window with that error, as following it alone did.
pub(super) fn window_bases<'b>(
    chains: &Chains<'_>,
    deltas: impl Iterator<Item = (PackEntry, &'b [u8])>,
    reads: usize,
) -> Result<WindowBases> {
    let index = chains.index();
    let backend = chains.backend();
    let mut seen = IdSet::default();
    let mut frontier: Vec<ChunkId> = Vec::new();
    for (e, stored) in deltas {
        // A blob whose header does not parse fails on its own decode.
        if let Ok(Some(h)) = base_of(&e, stored) {
            if seen.insert(h.base) {
                frontier.push(h.base);
            }
        }
    }
    let direct: IdSet = frontier.iter().copied().collect();
    let mut links: IdMap<Link> = IdMap::default();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    // A chain has at most MAX_DELTA_DEPTH deltas above its bottom chunk; what
    // is still to read after that many levels is damage and left out.
    for _ in 0..=MAX_DELTA_DEPTH {
        if frontier.is_empty() {
            break;
        }
        // A link nothing locates is left out (missing).
        let items = frontier
            .iter()
            .enumerate()
            .filter_map(|(i, id)| index.get(id).map(|l| (i, *id, *l)))
            .collect();
        let runs = group_runs(items, MAX_RUN);
        let read = |run: &Run| -> Result<Vec<u8>> {
            let key = layout::pack(&index.pack_id(run.pack));
            match backend.get_range(&key, run.start..run.end) {
                Ok(b) => Ok(b),
                // Gone or shorter than the index says: its links are lost.
                Err(e) if e.is_damage() => Ok(Vec::new()),
                Err(e) => Err(Error::Backend(e)),
            }
        };
        let got = if reads > 1 {
            fetch_parallel(&runs, reads, read)?
        } else {
            runs.par_iter().map(read).collect::<Result<Vec<_>>>()?
        };
        frontier = Vec::new();
        for (run, bytes) in runs.iter().zip(got) {
            for (_, id, loc) in &run.items {
                let entry = loc.pack_entry(*id);
                let off = (loc.entry.offset as u64 - run.start) as usize;
                let Some(stored) = bytes.get(off..off + entry.stored_len as usize) else {
                    continue;
                };
                let Ok(base) = base_of(&entry, stored) else {
                    continue;
                };
                let base = base.map(|h| h.base);
                if let Some(b) = base {
                    if seen.insert(b) {
                        frontier.push(b);
                    }
                }
                let dict = index.pack_dict(run.pack);
                let buf = bufs.len();
                links.insert(
                    *id,
                    Link {
                        entry,
                        dict,
                        buf,
                        off,
                        base,
                    },
                );
            }
            bufs.push(bytes);
        }
    }
    // Each link's height above the bottom of its chain; none for a link whose
    // chain is broken, too deep or loops (damage).
    let mut heights: IdMap<Option<u8>> = IdMap::default();
    for id in links.keys() {
        let (mut path, mut cur) = (Vec::new(), *id);
        // The height of `path`'s last link once the walk stops.
        let mut next = loop {
            if let Some(&h) = heights.get(&cur) {
                break h.map(|h| h + 1);
            }
            let Some(l) = links.get(&cur) else {
                break None;
            };
            path.push(cur);
            if path.len() > MAX_DELTA_DEPTH as usize + 1 {
                break None;
            }
            match l.base {
                None => break Some(0),
                Some(b) => cur = b,
            }
        };
        for p in path.iter().rev() {
            let h = next.filter(|&h| h <= MAX_DELTA_DEPTH);
            heights.insert(*p, h);
            next = h.map(|h| h + 1);
        }
    }
    let mut levels: Vec<Vec<ChunkId>> = Vec::new();
    for (id, h) in &heights {
        if let Some(h) = *h {
            let h = h as usize;
            if levels.len() <= h {
                levels.resize_with(h + 1, Vec::new);
            }
            levels[h].push(*id);
        }
    }
    // Bottom-up: a link at height h is made against one at h - 1, decoded the
    // level before. Once a level is built, the one below it is needed only
    // where a window's delta names it.
    let mut decoded: IdMap<Vec<u8>> = IdMap::default();
    for (h, level) in levels.iter().enumerate() {
        let done: Vec<(ChunkId, std::result::Result<Vec<u8>, ChunkError>)> = level
            .par_iter()
            .map(|id| {
                let lost = || ChunkError::Base {
                    base: *id,
                    fault: BaseFault::Missing,
                };
                let r = (|| {
                    let l = links.get(id).ok_or_else(lost)?;
                    let stored = bufs[l.buf]
                        .get(l.off..l.off + l.entry.stored_len as usize)
                        .ok_or_else(lost)?;
                    let base = match l.base {
                        Some(b) => Some(decoded.get(&b).ok_or_else(lost)?.as_slice()),
                        None => None,
                    };
                    if l.entry.raw_len > MAX_CHUNK_LEN {
                        return Err(lost());
                    }
                    let mut raw = vec![0u8; l.entry.raw_len as usize];
                    chains.with_decoder(id, l.dict.as_ref(), |d| {
                        d.decode_into_with_base(&l.entry, stored, l.dict.as_ref(), base, &mut raw)
                    })?;
                    Ok(raw)
                })();
                (*id, r)
            })
            .collect();
        for (id, r) in done {
            match r {
                Ok(raw) => {
                    decoded.insert(id, raw);
                }
                Err(ChunkError::Unreadable { source, .. }) => return Err(Error::Backend(source)),
                // Damaged: left out.
                Err(_) => {}
            }
        }
        if let Some(below) = h.checked_sub(1).and_then(|b| levels.get(b)) {
            for id in below {
                if !direct.contains(id) {
                    decoded.remove(id);
                }
            }
        }
    }
    Ok(WindowBases { decoded })
}
