//! The bases one window of a restore needs, read and decoded together.
//!
//! Each changed position of a store with deltas is a chain: its delta, the
//! chunk that delta was made against, and so on down to a chunk that is not a
//! delta. Followed position by position ([`Chains::base_for`]) every link was a
//! read of its own (an `open` and a `pread`), a decode checked against its id
//! and an LRU insert, though no other position shares those links. Here the
//! links of all the window's deltas are read level by level (a level's bases
//! are known only from the blobs above them), each level grouped by pack and
//! offset into runs ([`group_runs`]; on a local store across gaps of at most
//! [`LOCAL_GAP`], each pack opened once for the restore: links are scattered, and the
//! window's 64 KiB gaps read four times the links' bytes), then decoded
//! bottom-up on every core and dropped with the window (a batch of windows
//! from a remote store). Rebuild does this while the previous window is
//! decoded (`fetch_window`). docs/BENCHMARKS.md, "The window's links read
//! together, and the chain bound", has what each step saved.
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

use super::rebuild::{fetch_parallel, group_runs, Run, MAX_GAP, MAX_RUN};
use crate::backend::HeldOpen;
use crate::codec::{base_of, BaseFault, ChunkError};
use crate::format::index::MAX_DELTA_DEPTH;
use crate::format::pack::{BasePrefix, PackEntry, MAX_CHUNK_LEN};
use crate::index::chunk_index::Location;
use crate::store::bases::Chains;
use crate::types::{ChunkId, Id, IdHasher, IdMap};
use crate::{layout, Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// Largest gap between two links of one pack read together from a local
/// store: a `pread` costs about what copying this many bytes does (a restore
/// at 256 MiB read 237 MiB for 60 MiB of links with the 64 KiB gap of the
/// window's own reads).
const LOCAL_GAP: u64 = 8 << 10;

/// A read's bytes, or none when the object is gone or shorter than the index
/// says (its links are lost: damage); an error that is not damage fails.
fn lost_if_damaged(
    r: std::result::Result<Vec<u8>, crate::backend::BackendError>,
) -> Result<Vec<u8>> {
    match r {
        Ok(b) => Ok(b),
        Err(e) if e.is_damage() => Ok(Vec::new()),
        Err(e) => Err(Error::Backend(e)),
    }
}

/// One link read: its entry, its pack's dictionary, where its blob is in the
/// level reads, and the base it names (its place among the window's links;
/// none for a chunk that is not a delta).
struct Link {
    entry: PackEntry,
    dict: Option<Id>,
    buf: usize,
    off: usize,
    base: Option<u32>,
}

/// The decoded bases of one window's deltas. A base missing here could not be
/// had (missing, damaged, or its chain too deep).
pub(super) struct WindowBases {
    /// Each link's bytes, by its place; kept only for the window's deltas'
    /// own bases.
    decoded: Vec<Option<Vec<u8>>>,
    /// The window's deltas' bases by the prefix their blobs name them with
    /// (each resolved to the one located chunk that has it), as places.
    by_prefix: PrefixMap,
}

/// Base prefixes (the first 8 bytes of uniform ids) to places, the prefix its
/// own hash as [`Id`]'s is.
type PrefixMap = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

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
        match self
            .by_prefix
            .get(&h.base.key())
            .and_then(|&i| self.decoded.get(i as usize)?.as_deref())
        {
            Some(b) => Ok(Some(b)),
            None => Err(ChunkError::Base {
                base: h.base,
                fault: BaseFault::Missing,
            }),
        }
    }
}

/// A chain's links found so far, each given a place (its index here) the
/// first time a blob names it: the level reads, the heights and the decodes
/// then go by place, with one lookup by id per link (when it is found)
/// instead of one at every step.
#[derive(Default)]
struct Places {
    place: IdMap<u32>,
    found: Vec<(ChunkId, Location)>,
}

impl Places {
    /// `id`'s place, and whether it is new (to be read).
    fn add(&mut self, id: ChunkId, loc: Location) -> (u32, bool) {
        let next = self.found.len() as u32;
        let p = *self.place.entry(id).or_insert(next);
        if p == next {
            self.found.push((id, loc));
        }
        (p, p == next)
    }
}

/// Reads and decodes every link the deltas `deltas` (entry and blob) need, at
/// most `reads` reads at once from a store that serves several (S3), through
/// `backend` (each pack opened once). A link that is missing or damaged is
/// left out (the positions above it fail as damaged); one that cannot be read
/// (an I/O error, not damage) fails the whole window with that error, as
/// following it alone did.
pub(super) fn window_bases<'b>(
    chains: &Chains<'_>,
    backend: &HeldOpen<'_>,
    deltas: impl Iterator<Item = (PackEntry, &'b [u8])>,
    reads: usize,
) -> Result<WindowBases> {
    let index = chains.index();
    // A blob names its base by an 8-byte prefix: the one located chunk that
    // has it, found with where it is in one search. None located, or several
    // (a 2^-64 accident or a hostile store): left out here, and the position
    // is followed the checked way (`Chains::base_for` tries each candidate
    // against the delta's id).
    // The searches of a level go together (`ChunkIndex::unique_many`).
    let resolve = |keys: &[u64]| index.unique_many(keys);
    let mut places = Places::default();
    let mut frontier: Vec<u32> = Vec::new();
    let mut by_prefix = PrefixMap::default();
    // A blob whose header does not parse fails on its own decode.
    let keys: Vec<u64> = deltas
        .filter_map(|(e, stored)| Some(base_of(&e, stored).ok()??.base.key()))
        .collect();
    for (key, found) in keys.iter().zip(resolve(&keys)) {
        if let Some((b, loc)) = found {
            let (p, new) = places.add(b, loc);
            by_prefix.insert(*key, p);
            if new {
                frontier.push(p);
            }
        }
    }
    let direct = frontier.len();
    let mut links: Vec<Option<Link>> = Vec::new();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    // A chain has at most MAX_DELTA_DEPTH deltas above its bottom chunk; what
    // is still to read after that many levels is damage and left out.
    for _ in 0..=MAX_DELTA_DEPTH {
        if frontier.is_empty() {
            break;
        }
        let items = frontier
            .iter()
            .map(|&p| {
                let (id, loc) = places.found[p as usize];
                (p as usize, id, loc)
            })
            .collect();
        let got = if reads > 1 {
            // A store that serves reads in parallel (S3): each read is a
            // request, so nearby links are fetched together across gaps.
            let runs = group_runs(items, MAX_RUN, MAX_GAP);
            let read = |run: &Run| -> Result<Vec<u8>> {
                let key = layout::pack(&index.packs().id(run.pack));
                lost_if_damaged(backend.get_range(&key, run.start..run.end))
            };
            let got = fetch_parallel(&runs, reads, read)?;
            runs.into_iter().zip(got).collect::<Vec<_>>()
        } else {
            // A local store: links are scattered (one or two per position
            // per pack), so gaps are read only when small, and a pack's runs
            // of the level are read together.
            let runs = group_runs(items, MAX_RUN, LOCAL_GAP);
            let mut by_pack: Vec<Vec<Run>> = Vec::new();
            for run in runs {
                match by_pack.last_mut() {
                    Some(p) if p[0].pack == run.pack => p.push(run),
                    _ => by_pack.push(vec![run]),
                }
            }
            let read = |runs: Vec<Run>| -> Result<Vec<(Run, Vec<u8>)>> {
                let key = layout::pack(&index.packs().id(runs[0].pack));
                let ranges: Vec<_> = runs.iter().map(|r| r.start..r.end).collect();
                let got = match backend.get_ranges(&key, &ranges) {
                    Ok(b) => b,
                    Err(e) if e.is_damage() => {
                        // One range past the end loses only its own links.
                        let one = |r: &std::ops::Range<u64>| {
                            lost_if_damaged(backend.get_range(&key, r.clone()))
                        };
                        ranges.iter().map(one).collect::<Result<Vec<_>>>()?
                    }
                    Err(e) => return Err(Error::Backend(e)),
                };
                Ok(runs.into_iter().zip(got).collect())
            };
            let got: Vec<Vec<(Run, Vec<u8>)>> =
                by_pack.into_par_iter().map(read).collect::<Result<_>>()?;
            got.into_iter().flatten().collect()
        };
        frontier = Vec::new();
        links.resize_with(places.found.len(), || None);
        // The level's links whose blobs were read, each with the prefix of
        // its base (none for a chunk that is not a delta); their bases are
        // then searched together.
        let mut read: Vec<(usize, Link, Option<u64>)> = Vec::new();
        for (run, bytes) in got {
            for (p, id, loc) in &run.items {
                let entry = loc.pack_entry(*id);
                let off = (loc.entry.offset as u64 - run.start) as usize;
                let Some(stored) = bytes.get(off..off + entry.stored_len as usize) else {
                    continue;
                };
                let Ok(base) = base_of(&entry, stored) else {
                    continue;
                };
                let link = Link {
                    entry,
                    dict: index.packs().dict(run.pack),
                    buf: bufs.len(),
                    off,
                    base: None,
                };
                read.push((*p, link, base.map(|h| h.base.key())));
            }
            bufs.push(bytes);
        }
        let keys: Vec<u64> = read.iter().filter_map(|(_, _, k)| *k).collect();
        let mut found = resolve(&keys).into_iter();
        for (p, mut link, key) in read {
            if key.is_some() {
                // A delta whose base prefix does not resolve is left out (its
                // chain is broken here; the checked way follows it).
                let Some((b, loc)) = found.next().flatten() else {
                    continue;
                };
                let (bp, new) = places.add(b, loc);
                if new {
                    frontier.push(bp);
                }
                link.base = Some(bp);
            }
            links[p] = Some(link);
        }
    }
    links.resize_with(places.found.len(), || None);
    // Each link's height above the bottom of its chain; none for a link whose
    // chain is broken, too deep or loops (damage).
    const UNKNOWN: u8 = u8::MAX;
    const BROKEN: u8 = u8::MAX - 1;
    let mut heights = vec![UNKNOWN; links.len()];
    let mut path: Vec<usize> = Vec::new();
    for first in 0..links.len() {
        path.clear();
        let mut cur = first;
        // The height of `path`'s last link once the walk stops.
        let mut next = loop {
            match heights[cur] {
                BROKEN => break None,
                UNKNOWN => {}
                h => break Some(h + 1),
            }
            let Some(l) = &links[cur] else {
                break None;
            };
            path.push(cur);
            if path.len() > MAX_DELTA_DEPTH as usize + 1 {
                break None;
            }
            match l.base {
                None => break Some(0),
                Some(b) => cur = b as usize,
            }
        };
        for &p in path.iter().rev() {
            let h = next.filter(|&h| h <= MAX_DELTA_DEPTH);
            heights[p] = h.unwrap_or(BROKEN);
            next = h.map(|h| h + 1);
        }
    }
    let mut levels: Vec<Vec<u32>> = Vec::new();
    for (p, &h) in heights.iter().enumerate() {
        if h <= MAX_DELTA_DEPTH {
            let h = h as usize;
            if levels.len() <= h {
                levels.resize_with(h + 1, Vec::new);
            }
            levels[h].push(p as u32);
        }
    }
    // Bottom-up: a link at height h is made against one at h - 1, decoded the
    // level before. Once a level is built, the one below it is needed only
    // where a window's delta names it (the first `direct` places).
    let mut decoded: Vec<Option<Vec<u8>>> = vec![None; links.len()];
    for (h, level) in levels.iter().enumerate() {
        let done: Vec<(u32, std::result::Result<Vec<u8>, ChunkError>)> = level
            .par_iter()
            .map(|&p| {
                let id = &places.found[p as usize].0;
                let lost = || ChunkError::Base {
                    base: BasePrefix::of(id),
                    fault: BaseFault::Missing,
                };
                let r = (|| {
                    let l = links[p as usize].as_ref().ok_or_else(lost)?;
                    let stored = bufs[l.buf]
                        .get(l.off..l.off + l.entry.stored_len as usize)
                        .ok_or_else(lost)?;
                    let base = match l.base {
                        Some(b) => Some(decoded[b as usize].as_deref().ok_or_else(lost)?),
                        None => None,
                    };
                    if l.entry.raw_len > MAX_CHUNK_LEN {
                        return Err(lost());
                    }
                    chains.with_decoder(id, l.dict.as_ref(), |d| {
                        d.decode_with_base(&l.entry, stored, l.dict.as_ref(), base)
                    })
                })();
                (p, r)
            })
            .collect();
        for (p, r) in done {
            match r {
                Ok(raw) => decoded[p as usize] = Some(raw),
                Err(ChunkError::Unreadable { source, .. }) => return Err(Error::Backend(source)),
                // Damaged: left out.
                Err(_) => {}
            }
        }
        if let Some(below) = h.checked_sub(1).and_then(|b| levels.get(b)) {
            for &p in below {
                if p as usize >= direct {
                    decoded[p as usize] = None;
                }
            }
        }
    }
    Ok(WindowBases { decoded, by_prefix })
}

#[cfg(test)]
mod tests {
    use crate::backend::TestReads;
    use crate::{BackupOptions, Error, InitOptions, Store};
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;

    fn watched(dir: &Path, fail: Option<String>) -> (Store, Arc<TestReads>) {
        watched_with(dir, fail, 1, false)
    }

    /// A store whose reads are counted and fail under `fail`, serving
    /// `parallel` reads at once (over 1: the restore's remote path), holding
    /// packs open with `hold` ([`TestReads`]).
    fn watched_with(
        dir: &Path,
        fail: Option<String>,
        parallel: usize,
        hold: bool,
    ) -> (Store, Arc<TestReads>) {
        let b = Arc::new(TestReads {
            fail,
            parallel,
            ..TestReads::counting(dir, hold)
        });
        (Store::open_backend(b.clone()).unwrap(), b)
    }

    fn packs(store: &Store) -> BTreeSet<String> {
        let list = store.backend().list("packs/").unwrap();
        list.into_iter().map(|o| o.key).collect()
    }

    /// A store with deltas of a database (two restore windows) whose same rows
    /// change at every backup, so the newest snapshot's changed pages are
    /// chains through earlier backups' packs; returns the store's folder and
    /// the pack of the fifth backup, which holds links only: with skip-delta
    /// bases (backup/skip.rs) the sixth backup's versions (5) are deltas
    /// against the fifth's (4), deltas against the first's (0).
    fn chained(dir: &Path) -> (std::path::PathBuf, String) {
        let db = dir.join("app.db");
        let at = dir.join("store");
        let store = Store::init(&at, &InitOptions::with_deltas()).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, n INTEGER, v BLOB);
             INSERT INTO t(n, v) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 30000)
               SELECT 1000, randomblob(100) || zeroblob(100) FROM c;",
        )
        .unwrap();
        let mut fifth = None;
        for step in 0..6 {
            if step > 0 {
                // Same-length values: the same pages change, a few bytes each.
                conn.execute("UPDATE t SET n = n + 1 WHERE k % 13 = 0", [])
                    .unwrap();
            }
            let before = packs(&store);
            let r = store.backup_path(&db, &BackupOptions::default()).unwrap();
            if step > 0 {
                assert!(r.stats.delta_chunks > 0, "step {step} stored no delta");
            }
            if step == 4 {
                let new: Vec<String> = packs(&store).difference(&before).cloned().collect();
                assert_eq!(new.len(), 1, "{new:?}");
                fifth = new.into_iter().next();
            }
        }
        (at, fifth.unwrap())
    }

    fn newest(store: &Store) -> crate::store::Snapshot {
        let mut snaps = store.snapshots().unwrap();
        snaps.sort_by_key(|s| s.time());
        snaps.pop().unwrap()
    }

    /// Restores the newest snapshot (more than one window) to `out` and
    /// checks it byte for byte against its hash.
    fn restore_newest(store: &Store, out: &Path) {
        let snap = newest(store);
        assert!(snap.manifest.image_len > 4 << 20, "more than one window");
        let _ = std::fs::remove_file(out);
        let report = store.restore_to_path(&snap, out, false).unwrap();
        assert_eq!(report.image_hash, snap.manifest.image_hash);
        let restored = std::fs::read(out).unwrap();
        assert_eq!(
            blake3::hash(&restored).as_bytes(),
            &snap.manifest.image_hash
        );
    }

    /// The newest snapshot restores byte for byte (and sound) with the
    /// window's links read grouped by pack (a pack's runs of a level read
    /// together on a local store): in far fewer reads than following
    /// each chain link by link does (the salvage path, which checks every link),
    /// from a local store and through the remote path alike.
    #[test]
    fn a_windows_links_are_read_by_pack_and_restore_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (at, _) = chained(dir.path());
        let (store, b) = watched(&at, None);
        let out = dir.path().join("out.db");
        restore_newest(&store, &out);
        let restored = std::fs::read(&out).unwrap();
        let check: String = rusqlite::Connection::open(&out)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let grouped = b.ranges.swap(0, Relaxed);
        let opens = b.batches.swap(0, Relaxed);
        // Locally, a level's links of one pack are read through one open.
        assert!(
            opens > 0 && opens < grouped,
            "{opens} opens for {grouped} reads"
        );

        let (store, b) = watched(&at, None);
        let salvaged = dir.path().join("salvaged.db");
        let s = store
            .salvage_to_path(&newest(&store), &salvaged, false, false)
            .unwrap();
        assert!(s.lost.is_empty() && s.image_matches);
        assert!(std::fs::read(&salvaged).unwrap() == restored);
        let linked = b.ranges.load(Relaxed);
        // The remote path (a batch's links read on threads of their own)
        // restores the same bytes.
        let (store, _) = watched_with(&at, None, 8, false);
        let remote = dir.path().join("remote.db");
        store
            .restore_to_path(&newest(&store), &remote, false)
            .unwrap();
        assert!(std::fs::read(&remote).unwrap() == restored);
        assert!(
            grouped * 4 < linked,
            "{grouped} reads grouped, {linked} link by link"
        );
    }

    /// A restore opens each pack once, for all its windows and chain levels,
    /// where reading without holding them opened a pack again for every
    /// window's read and every level's `get_ranges` (a restore of 1 GiB with
    /// deltas: 68,650 opens of 145 packs); the image is the same either way.
    #[test]
    fn a_restore_opens_each_pack_once() {
        let dir = tempfile::tempdir().unwrap();
        let (at, _) = chained(dir.path());
        let out = dir.path().join("out.db");
        let restore = |hold: bool| {
            let (store, b) = watched_with(&at, None, 1, hold);
            restore_newest(&store, &out);
            (b, packs(&store).len())
        };
        let (held, pack_count) = restore(true);
        let opened = held.opens.load(Relaxed);
        assert!(
            opened > 0 && opened <= pack_count,
            "{opened} opens of {pack_count} packs"
        );
        assert_eq!(
            held.batches.load(Relaxed),
            0,
            "no read opened a pack of its own"
        );
        let (each, _) = restore(false);
        // (The levels' `get_ranges` alone may be as many as the packs: two
        // windows of two levels, and four packs.)
        let again = each.one_off_opens.load(Relaxed);
        assert!(
            again > opened && each.batches.load(Relaxed) > 0,
            "without holding, packs were opened {again} times, held {opened}"
        );
    }

    /// A damaged pack that holds only links (no position of the newest
    /// snapshot is in it) fails the restore as damage naming a chunk and its
    /// base, and leaves no output.
    #[test]
    fn a_damaged_link_fails_the_restore_naming_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (at, fifth) = chained(dir.path());
        let path = at.join(&fifth);
        let mut bytes = std::fs::read(&path).unwrap();
        let count = u32::from_le_bytes(
            bytes[bytes.len() - 32..bytes.len() - 28]
                .try_into()
                .unwrap(),
        );
        let blobs_end = bytes.len() - 32 - 48 * count as usize;
        for i in (100..blobs_end).step_by(97) {
            bytes[i] ^= 0x55;
        }
        std::fs::write(&path, bytes).unwrap();
        let (store, _) = watched(&at, None);
        let out = dir.path().join("out.db");
        let err = store
            .restore_to_path(&newest(&store), &out, false)
            .expect_err("a link is damaged");
        match &err {
            Error::ChunkDamaged { detail, .. } => {
                assert!(detail.contains("base chunk"), "{err}")
            }
            other => panic!("not damage: {other}"),
        }
        assert!(!out.exists());
    }

    /// A pack of links only that cannot be read (an I/O error) fails the
    /// restore as that read error, never as damage, and leaves no output,
    /// whether its pack is read range by range or held open.
    #[test]
    fn an_unreadable_link_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let (at, fifth) = chained(dir.path());
        for hold in [false, true] {
            let (store, _) = watched_with(&at, Some(fifth.clone()), 1, hold);
            let out = dir.path().join("out.db");
            let err = store
                .restore_to_path(&newest(&store), &out, false)
                .expect_err("a link cannot be read");
            assert!(matches!(err, Error::Backend(_)), "{err}");
            assert!(err.to_string().contains(&fifth), "{err}");
            assert!(!out.exists());
        }
    }
}
