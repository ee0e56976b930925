//! Copying snapshots from one store to another (`pagesnap copy`), storing only
//! the chunks the destination lacks.
//!
//! Chunk ids do not depend on the store, but page maps name chunks through index
//! objects, and index objects through packs: a copied snapshot gets its own page
//! map, index object and manifest in the destination (so its id there differs).
//! Its metadata (time, name, host, source, tags, sizes, image hash, versions,
//! chunk size) is the source's; `map` and `parent` are the destination's.
//!
//! * **Already copied** means the destination holds a snapshot with the same
//!   name, time and image hash. Such snapshots are skipped, which also makes a
//!   copy resumable: after an interruption, the snapshots published before it are
//!   skipped and the interrupted one is copied again. (Packs it uploaded without
//!   an index object are garbage that `prune` removes.)
//! * Snapshots are copied oldest first, each page map a skip-delta against the
//!   newest earlier snapshot of its database in the destination, as a backup's is.
//! * Chunks are moved as stored (same codec, same dictionary; dictionaries are
//!   copied first), read in runs of neighbouring blobs, one ranged read per run.
//!   A delta goes as it is only where its base is already in the destination
//!   ([`Copier::carry`]), with its base-table row (its header naming the base
//!   as the destination does); otherwise whole.
//!   Every chunk copied is decoded and checked against its id on the way, so a copy
//!   never spreads damage: a damaged source chunk fails that snapshot (nothing is
//!   published for it) and the copy goes on with the others.
//! * Write order as in a backup: dictionaries, packs, index object, page map, and
//!   the manifest last.

use crate::codec;
use crate::format::dict::DictBody;
use crate::format::index::MAX_DELTA_DEPTH;
use crate::format::manifest::Manifest;
use crate::format::pack::{split_delta, BasePrefix, Codec, DeltaHeader, PackEntry};
use crate::index::chunk_index::{ChunkIndex, Location};
use crate::store::bases::{Bases, DEFAULT_CACHE_BYTES};
use crate::store::pack_sink::PackSink;
use crate::store::select;
use crate::store::Snapshot;
use crate::store::{DeltaFacts, NewChunks};
use crate::types::{ChunkId, ChunkIds, ChunkRef, Id, IdMap, SnapshotId};
use crate::{layout, Error, Result, Store};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Largest single read from a source pack.
const MAX_RUN: u64 = 8 << 20;
/// Blobs closer than this in a source pack are read together (the gap is read and
/// dropped): on object storage a request costs more than a few KiB of transfer.
const MAX_GAP: u64 = 64 << 10;

/// Which snapshots to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Only snapshots of this database.
    pub name: Option<String>,
    /// Ids, unique prefixes or `latest`; empty: every snapshot (of `name`).
    pub snapshots: Vec<String>,
    /// How long to wait for a `prune` holding either store.
    pub lock_wait: Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            name: None,
            snapshots: Vec::new(),
            lock_wait: Duration::from_secs(600),
        }
    }
}

/// What became of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyOutcome {
    /// Copied: its id in the destination.
    Copied(SnapshotId),
    /// The destination already holds it (same name, time and image hash), with this id.
    Skipped(SnapshotId),
    /// Not copied (damage in the source): why. Nothing was published for it.
    Failed(String),
}

/// One snapshot of a copy.
#[derive(Clone, Debug)]
pub struct CopiedSnapshot {
    /// Its id in the source store.
    pub source: SnapshotId,
    pub name: String,
    pub time: DateTime<Utc>,
    pub image_len: u64,
    pub outcome: CopyOutcome,
    /// Chunks stored in the destination for it (those it lacked).
    pub chunks_uploaded: u64,
    /// Bytes written to the destination for it: packs, dictionaries, index object,
    /// page map and manifest.
    pub bytes_uploaded: u64,
    /// Damage in the destination the copy worked around (it still succeeded).
    pub warnings: Vec<String>,
}

/// What a copy did.
#[derive(Clone, Debug)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    /// The selected snapshots, oldest first.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Source manifests that could not be read (only when copying all snapshots):
    /// snapshots that may exist but were not copied.
    pub unreadable: Vec<String>,
    pub duration: Duration,
}

impl CopyReport {
    fn count(&self, f: impl Fn(&CopyOutcome) -> bool) -> usize {
        self.snapshots.iter().filter(|s| f(&s.outcome)).count()
    }
    pub fn copied(&self) -> usize {
        self.count(|o| matches!(o, CopyOutcome::Copied(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, CopyOutcome::Skipped(_)))
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, CopyOutcome::Failed(_)))
    }
    pub fn chunks_uploaded(&self) -> u64 {
        self.snapshots.iter().map(|s| s.chunks_uploaded).sum()
    }
    pub fn bytes_uploaded(&self) -> u64 {
        self.snapshots.iter().map(|s| s.bytes_uploaded).sum()
    }
    /// Every selected snapshot is in the destination and every source manifest was read.
    pub fn complete(&self) -> bool {
        self.failed() == 0 && self.unreadable.is_empty()
    }
}

/// Why one snapshot's copy stopped: a problem of the source fails that snapshot
/// only; one of the destination (a write failed) stops the whole copy.
enum Failure {
    Source(Error),
    Destination(Error),
}

/// A chunk's stored bytes as they go to the destination: the source's blob as
/// it is, or (a delta the destination cannot take as one) the chunk
/// compressed again whole.
struct Outgoing<'b> {
    stored: Cow<'b, [u8]>,
    codec: Codec,
    /// Its id in the destination when the two stores name chunks differently.
    renamed: Option<ChunkId>,
    /// A delta copied as it is: its base, depth in the destination and whole
    /// length (its base-table row there).
    row: Option<DeltaRow>,
}

/// A delta's base-table row in the destination: base, depth, whole length.
type DeltaRow = (ChunkId, u8, u32);

/// A delta copied as a delta: its blob as the destination stores it, and its row.
type Carried<'b> = (Cow<'b, [u8]>, DeltaRow);

/// What [`Copier::carry`] reads a delta's base with, and how the
/// destination names chunks when it names them differently.
struct Carry<'a> {
    bases: &'a Bases,
    src_index: &'a ChunkIndex,
    /// The destination's naming, when it differs from the source's.
    dest_ids: Option<&'a ChunkIds>,
    /// The delta's own id there.
    renamed: Option<ChunkId>,
}

/// What stays loaded from one snapshot to the next.
struct Copier<'a> {
    from: &'a Store,
    to: &'a Store,
    src_index: Option<ChunkIndex>,
    /// What the source's base tables say of its deltas (their whole lengths).
    src_rows: IdMap<DeltaFacts>,
    /// A source with deltas: each delta is decoded through its chain (checked),
    /// then copied as it is or as a whole chunk ([`Copier::carry`]).
    bases: Option<Bases>,
    /// Deltas are copied as deltas (both stores have them): the destination's
    /// depth of each of its deltas, kept up to date as snapshots are copied.
    /// `None`: every delta is copied whole.
    dest_depths: Option<IdMap<u8>>,
    /// Dictionaries known to be in the destination, with their bytes (for
    /// decoding the chunks that use them).
    dicts: IdMap<Vec<u8>>,
    dest_index: ChunkIndex,
    dest_snaps: Vec<Snapshot>,
    /// Per database, the chunk list of the snapshot of it this copy copied last:
    /// every chunk of it is in the destination now, so the next snapshot of that
    /// database looks up only the positions that changed (a lookup per chunk was
    /// a quarter of a copy's time).
    last: HashMap<String, Vec<ChunkRef>>,
    /// Stores that name chunks differently (either is encrypted: chunk ids are
    /// keyed per store): each source chunk's destination id, learnt from its
    /// bytes as it is read. `None` when both name chunks alike.
    rename: Option<IdMap<ChunkId>>,
}

/// Copies the snapshots `opts` selects from `from` to `to`.
pub fn copy(from: &Store, to: &Store, opts: &CopyOptions) -> Result<CopyReport> {
    let started = Instant::now();
    let (src_pages, dst_pages) = (from.config().chunk_pages, to.config().chunk_pages);
    if src_pages != dst_pages {
        return Err(Error::ChunkSizeMismatch {
            from: from.location(),
            from_pages: src_pages,
            to: to.location(),
            to_pages: dst_pages,
        });
    }
    if from.config().store_id == to.config().store_id {
        return Err(Error::Invalid {
            what: "copy",
            detail: format!(
                "the source {} and the destination {} are the same store",
                from.location(),
                to.location()
            ),
        });
    }
    let in_source = |e: Error| Error::InStore {
        store: from.location(),
        source: Box::new(e),
    };
    // Shared locks: prune may not delete what is being read or referenced.
    let _src_lock = from.read_lock("copy")?;
    let (snaps, damaged) = from.snapshots_with_damage()?;
    let mut selected =
        select::select_many(&snaps, opts.name.as_deref(), &opts.snapshots, |_| false)
            .map_err(in_source)?;
    if selected.is_empty() && opts.name.is_some() {
        return Err(in_source(Error::NoSnapshots {
            name: opts.name.clone(),
        }));
    }
    selected.sort_by_key(|s| (s.time(), s.id));
    let unreadable = if opts.snapshots.is_empty() {
        damaged.iter().map(|d| d.error.to_string()).collect()
    } else {
        Vec::new()
    };
    let _dst_lock = to.lock(false, "copy", opts.lock_wait)?;
    // Plain stores share one naming; an encrypted store has its own key.
    let rename = (from.config().encrypted || to.config().encrypted).then(IdMap::default);
    let carries = from.config().deltas && to.config().deltas;
    let (dest_index, dest_depths) = match carries {
        true => {
            let (index, rows) = to.load_index_with_rows()?;
            let depths = rows.into_iter().map(|(id, f)| (id, f.depth)).collect();
            (index, Some(depths))
        }
        false => (to.load_index()?, None),
    };
    let mut c = Copier {
        from,
        to,
        src_index: None,
        src_rows: IdMap::default(),
        bases: match from.config().deltas {
            true => Some(Bases::new(
                from.backend().clone(),
                DEFAULT_CACHE_BYTES,
                from.chunk_ids(),
            )?),
            false => None,
        },
        dest_depths,
        dicts: IdMap::default(),
        dest_index,
        dest_snaps: to.snapshots()?,
        last: HashMap::new(),
        rename,
    };
    let mut report = CopyReport {
        from: from.location(),
        to: to.location(),
        snapshots: Vec::with_capacity(selected.len()),
        unreadable,
        duration: Duration::ZERO,
    };
    for snap in &selected {
        let mut done = CopiedSnapshot {
            source: snap.id,
            name: snap.manifest.name.clone(),
            time: snap.time(),
            image_len: snap.manifest.image_len,
            outcome: CopyOutcome::Failed(String::new()),
            chunks_uploaded: 0,
            bytes_uploaded: 0,
            warnings: Vec::new(),
        };
        done.outcome = match c.existing(&snap.manifest) {
            Some(id) => CopyOutcome::Skipped(id),
            None => match c.copy_one(snap, &mut done) {
                Ok(id) => CopyOutcome::Copied(id),
                Err(Failure::Source(e)) => CopyOutcome::Failed(e.to_string()),
                Err(Failure::Destination(e)) => return Err(e),
            },
        };
        report.snapshots.push(done);
    }
    // Other machines' records of the destination's listing lack what was
    // copied: a new marker makes their next backups list it (store/listing.rs).
    let uploaded = |s: &CopiedSnapshot| s.chunks_uploaded > 0;
    if report.snapshots.iter().any(uploaded) {
        if let Some(w) = to.note_added() {
            if let Some(last) = report.snapshots.iter_mut().rev().find(|s| uploaded(s)) {
                last.warnings.push(w);
            }
        }
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// Whether two manifests record the same snapshot (what `copy` skips).
pub fn same_snapshot(a: &Manifest, b: &Manifest) -> bool {
    a.name == b.name
        && a.time_unix == b.time_unix
        && a.time_nanos == b.time_nanos
        && a.image_hash == b.image_hash
}

impl Copier<'_> {
    /// The destination's copy of a snapshot, if it has one.
    fn existing(&self, m: &Manifest) -> Option<SnapshotId> {
        self.dest_snaps
            .iter()
            .find(|s| same_snapshot(&s.manifest, m))
            .map(|s| s.id)
    }

    /// Copies one snapshot, loading the source index on first use.
    fn copy_one(
        &mut self,
        snap: &Snapshot,
        done: &mut CopiedSnapshot,
    ) -> Result<SnapshotId, Failure> {
        if self.src_index.is_none() {
            let (index, rows) = self.from.load_index_with_rows().map_err(Failure::Source)?;
            self.src_index = Some(index);
            self.src_rows = rows;
        }
        let src_index = match self.src_index.take() {
            Some(i) => i,
            None => return Err(Failure::Source(Error::Internal("index not loaded".into()))),
        };
        let r = self.copy_with(&src_index, snap, done);
        self.src_index = Some(src_index);
        r
    }

    fn copy_with(
        &mut self,
        src_index: &ChunkIndex,
        snap: &Snapshot,
        done: &mut CopiedSnapshot,
    ) -> Result<SnapshotId, Failure> {
        let (from, to) = (self.from, self.to);
        let list = from
            .chunk_list_with(src_index, snap)
            .map_err(Failure::Source)?;
        // The page map is a skip-delta against the newest earlier snapshot of the
        // database in the destination, as a backup's would be.
        let t = snap.time();
        let parent = self
            .dest_snaps
            .iter()
            .filter(|s| {
                s.manifest.name == snap.manifest.name
                    && s.manifest.chunk_pages == to.config().chunk_pages
                    && s.time() <= t
            })
            .max_by_key(|s| (s.time(), s.id))
            .cloned();
        let base = match &parent {
            Some(p) => match to.map_base(&self.dest_index, p) {
                Ok(b) => Some(b),
                Err(e) => {
                    done.warnings.push(format!(
                        "{}: the snapshot {} cannot be read ({e}); the copy records a full page map",
                        to.location(),
                        p.id.short()
                    ));
                    None
                }
            },
            None => None,
        };
        let copied = self.last.get(&snap.manifest.name).map(Vec::as_slice);
        let known = |id: &ChunkId| match &self.rename {
            // Read once already: its destination id is known, and the chunk
            // is in the destination (or in this copy's packs).
            Some(r) => r.contains_key(id),
            None => self.dest_index.contains(id),
        };
        let groups =
            missing_chunks(src_index, known, snap, &list, copied).map_err(Failure::Source)?;
        // Dictionaries first: nothing may name one the destination lacks.
        let needed: BTreeSet<Id> = groups
            .iter()
            .filter_map(|(pack, _)| src_index.pack_dict(*pack))
            .collect();
        for d in &needed {
            self.ensure_dict(d, done)?;
        }
        // The dictionary the next backup of this database continues with: copied
        // too when readable; otherwise that backup trains a new one.
        let mut dict = snap.manifest.dict;
        if let Some(d) = dict.filter(|d| !needed.contains(d)) {
            match self.ensure_dict(&d, done) {
                Ok(()) => {}
                Err(Failure::Source(e)) => {
                    done.warnings.push(format!(
                        "the snapshot's dictionary cannot be copied ({e}); the next backup of {} trains a new one",
                        snap.manifest.name
                    ));
                    dict = None;
                }
                Err(f) => return Err(f),
            }
        }
        let total: u64 = groups
            .iter()
            .flat_map(|(_, items)| items.iter().map(|(_, l)| l.entry.stored_len as u64))
            .sum();
        let mut moved = 0u64;
        let mut sink = PackSink::new(to.backend().clone(), to.config().pack_target_size as usize);
        let mut pushed: HashSet<ChunkId> = HashSet::new();
        // The base-table rows of the deltas copied as they are.
        let mut rows: IdMap<DeltaRow> = IdMap::default();
        let runs = plan_runs(src_index, groups, &from.location());
        // Reads in batches: from a remote store several are in flight at once
        // (each waits a round trip); the batch's chunks are then checked on every
        // core and stored in order.
        let reads = from.backend().parallel_reads();
        for batch in runs.chunks(if reads > 1 { 4 * reads } else { 1 }) {
            let read = |run: &Run| -> Result<Vec<u8>> {
                let range = run.start..run.end;
                from.backend()
                    .get_range(&run.key, range)
                    .map_err(|e| run.read_error(snap.id, e))
            };
            let fetched = if reads > 1 {
                crate::restore::fetch_parallel(batch, reads, read)
            } else {
                batch.iter().map(read).collect()
            };
            let fetched = fetched.map_err(Failure::Source)?;
            for (run, bytes) in batch.iter().zip(&fetched) {
                let blobs = self.decode_run(src_index, snap.id, run, bytes)?;
                for ((id, loc), out) in run.items.iter().zip(blobs) {
                    let entry = loc.pack_entry(*id);
                    moved += entry.stored_len as u64;
                    let dest_id = match (&mut self.rename, out.renamed) {
                        (Some(r), Some(new)) => {
                            r.insert(*id, new);
                            // Another source chunk had these bytes (a store
                            // never holds two ids for one content, but two
                            // namings may), or the destination has them.
                            if self.dest_index.contains(&new) || !pushed.insert(new) {
                                continue;
                            }
                            new
                        }
                        _ => *id,
                    };
                    sink.push(run.dict, dest_id, &out.stored, entry.raw_len, out.codec)
                        .map_err(Failure::Destination)?;
                    if let Some(row) = out.row {
                        rows.insert(dest_id, row);
                    }
                }
                crate::progress::report(to.progress(), moved, total);
            }
        }
        let out = sink.finish().map_err(Failure::Destination)?;
        done.chunks_uploaded = out.entries.len() as u64;
        done.bytes_uploaded += out.bytes_written;
        let new = NewChunks {
            packs: out.packs,
            entries: out.entries,
            dict: None,
            bases: rows,
        };
        let mut metadata = 0u64;
        // The snapshot's chunks as the destination names them.
        let dest_list: Cow<'_, [ChunkRef]> = match &self.rename {
            None => Cow::Borrowed(&list),
            Some(r) => Cow::Owned(
                list.iter()
                    .map(|c| match c {
                        ChunkRef::Stored(id) => {
                            r.get(id).copied().map(ChunkRef::Stored).ok_or_else(|| {
                                Failure::Source(Error::Internal(format!(
                                    "chunk {} was not read",
                                    id.short()
                                )))
                            })
                        }
                        other => Ok(*other),
                    })
                    .collect::<Result<Vec<_>, Failure>>()?,
            ),
        };
        let written = to
            .put_map(
                |id| self.dest_index.name_of(id),
                base,
                new,
                &dest_list,
                &mut metadata,
            )
            .map_err(Failure::Destination)?;
        let manifest = Manifest {
            map: written.map,
            parent: parent.as_ref().map(|p| p.id),
            dict,
            ..snap.manifest.clone()
        };
        let newest = !self
            .dest_snaps
            .iter()
            .any(|s| s.manifest.name == manifest.name && s.time() > t);
        let (id, len) = to
            .publish(&manifest, newest)
            .map_err(Failure::Destination)?;
        done.bytes_uploaded += metadata + len;
        // The next snapshot dedups against this one's chunks and names them,
        // and its deltas may be made against them.
        if let Some((list_id, body)) = written.index {
            self.dest_index.add(list_id, &body, |_, _| true);
            self.dest_index.seal();
            if let Some(depths) = &mut self.dest_depths {
                for row in &body.deltas {
                    if let Some(e) = body.entries.get(row.ordinal as usize) {
                        let d = depths.entry(e.entry.id).or_default();
                        *d = (*d).max(row.depth);
                    }
                }
            }
        }
        self.dest_snaps.push(Snapshot { id, manifest });
        self.last.insert(snap.manifest.name.clone(), list);
        Ok(id)
    }

    /// The stored blobs of `run`'s chunks, sliced out of the run's `bytes`, each
    /// decoded and checked against its id first (on every core): a copy must never
    /// spread damage.
    ///
    /// A delta (a source with deltas) is decoded through its chain, then comes
    /// back as it is when the destination can take it ([`Copier::carry`]),
    /// otherwise compressed again on its own, with the codec to store it as.
    fn decode_run<'b>(
        &self,
        src_index: &ChunkIndex,
        snap: SnapshotId,
        run: &Run,
        bytes: &'b [u8],
    ) -> Result<Vec<Outgoing<'b>>, Failure> {
        let damaged = |id: ChunkId, detail: String| {
            Failure::Source(Error::ChunkDamaged {
                snapshot: Some(snap),
                chunk: id,
                object: run.object.clone(),
                detail: format!("{detail}; the snapshot is not copied"),
            })
        };
        let mut blobs = Vec::with_capacity(run.items.len());
        for (id, loc) in &run.items {
            let off = (loc.entry.offset as u64 - run.start) as usize;
            let stored = bytes
                .get(off..off + loc.entry.stored_len as usize)
                .ok_or_else(|| damaged(*id, "the pack ends before the chunk".into()))?;
            blobs.push(stored);
        }
        let ids = self.from.chunk_ids();
        let dict = match &run.dict {
            Some(d) => {
                let bytes = self.dicts.get(d).ok_or_else(|| {
                    Failure::Source(Error::Internal(format!(
                        "dictionary {} not loaded",
                        d.short()
                    )))
                })?;
                Some((d, bytes.as_slice()))
            }
            None => None,
        };
        // Decoded and checked on every core, each with its own contexts; named
        // as the destination names chunks when the two differ.
        let level = self.to.config().zstd_level;
        let dest_ids = self.rename.as_ref().map(|_| self.to.chunk_ids());
        let rename = |raw: &[u8]| dest_ids.as_ref().map(|d| d.of(raw));
        let checked: Vec<Result<Outgoing<'b>, codec::ChunkError>> = run
            .items
            .par_iter()
            .zip(&blobs)
            .map(|((id, loc), stored)| {
                let entry = loc.pack_entry(*id);
                match (&self.bases, entry.codec) {
                    (Some(bases), Codec::ZstdDelta) => {
                        let (raw, _) = bases.raw(id, src_index)?;
                        let renamed = rename(&raw);
                        let to = Carry {
                            bases,
                            src_index,
                            dest_ids: dest_ids.as_ref(),
                            renamed,
                        };
                        if let Some((stored, row)) = self.carry(&entry, stored, &to)? {
                            return Ok(Outgoing {
                                stored,
                                codec: Codec::ZstdDelta,
                                renamed,
                                row: Some(row),
                            });
                        }
                        let (stored, codec) = match zstd::bulk::compress(&raw, level) {
                            Ok(z) if z.len() < raw.len() => (Cow::Owned(z), Codec::Zstd),
                            _ => (Cow::Owned(raw.to_vec()), Codec::Raw),
                        };
                        Ok(Outgoing {
                            stored,
                            codec,
                            renamed,
                            row: None,
                        })
                    }
                    _ => codec::decode_checked_on_thread(&entry, stored, dict, &ids).map(|raw| {
                        Outgoing {
                            stored: Cow::Borrowed(*stored),
                            codec: entry.codec,
                            renamed: rename(&raw),
                            row: None,
                        }
                    }),
                }
            })
            .collect();
        let mut out = Vec::with_capacity(checked.len());
        for (k, r) in checked.into_iter().enumerate() {
            match r {
                Ok(o) => out.push(o),
                // A base that could not be read is the read error it was.
                Err(codec::ChunkError::Unreadable { source, .. }) => {
                    return Err(Failure::Source(Error::Backend(source)))
                }
                Err(why) => return Err(damaged(run.items[k].0, why.to_string())),
            }
        }
        Ok(out)
    }

    /// Delta `e` (whose blob is `stored`, already decoded checked through its
    /// chain) as the destination takes it, with its base-table row there, if
    /// it can be copied as a delta: deltas are carried, its base is in the
    /// destination (the blob names it by prefix; a prefix several source
    /// chunks share is not followed here), and the chain there stays within
    /// [`MAX_DELTA_DEPTH`]. Between stores that name chunks differently the
    /// blob's header is written again naming the base as the destination does
    /// (the frame depends only on the base's bytes). `None`: it is copied whole.
    fn carry<'b>(
        &self,
        e: &PackEntry,
        stored: &'b [u8],
        to: &Carry<'_>,
    ) -> Result<Option<Carried<'b>>, codec::ChunkError> {
        let Some(depths) = &self.dest_depths else {
            return Ok(None);
        };
        let Some(h) = codec::base_of(e, stored)? else {
            return Ok(None);
        };
        // One source chunk of that prefix: the base the checked decode used.
        let [base] = to.src_index.sharing(h.base.key())[..] else {
            return Ok(None);
        };
        let (base, blob) = match (to.dest_ids, to.renamed) {
            (None, _) => (base, Cow::Borrowed(stored)),
            (Some(ids), Some(renamed)) => {
                // Decoded already, on the way to `e`: the cache has it.
                let (raw, _) = to.bases.raw(&base, to.src_index)?;
                let named = ids.of(&raw);
                let prefix = BasePrefix::of(&named);
                // A delta may not name its own prefix (a 2^-64 accident).
                if prefix.matches(&renamed) {
                    return Ok(None);
                }
                let (_, frame) = split_delta(e, stored).map_err(codec::ChunkError::Decode)?;
                let mut blob = DeltaHeader {
                    base: prefix,
                    base_len: h.base_len,
                }
                .encode();
                blob.extend_from_slice(frame);
                (named, Cow::Owned(blob))
            }
            (Some(_), None) => return Ok(None),
        };
        if !self.dest_index.contains(&base) {
            return Ok(None);
        }
        let depth = depths.get(&base).copied().unwrap_or(0) + 1;
        if depth > MAX_DELTA_DEPTH {
            return Ok(None);
        }
        let whole_len = self.src_rows.get(&e.id).map_or(0, |f| f.whole_len);
        Ok(Some((blob, (base, depth, whole_len.min(e.raw_len)))))
    }

    /// Makes dictionary `d` present in the destination (copied from the source,
    /// checked against its name) and loaded for decoding.
    fn ensure_dict(&mut self, d: &Id, done: &mut CopiedSnapshot) -> Result<(), Failure> {
        if self.dicts.contains_key(d) {
            return Ok(());
        }
        let key = layout::dict(d);
        let present = self
            .to
            .backend()
            .size(&key)
            .map_err(|e| Failure::Destination(e.into()))?
            .is_some();
        let bytes = self.from.get_verified(&key, d).map_err(Failure::Source)?;
        let body =
            DictBody::decode(&bytes).map_err(|e| Failure::Source(self.from.format_err(&key)(e)))?;
        if !present {
            self.to
                .backend()
                .put(&key, &bytes, crate::backend::PutMode::Overwrite)
                .map_err(|e| Failure::Destination(e.into()))?;
            done.bytes_uploaded += bytes.len() as u64;
        }
        self.dicts.insert(*d, body.dict);
        Ok(())
    }
}

/// Chunks to copy out of one source pack (by its position in the source index).
type PackGroup = (u32, Vec<(ChunkId, Location)>);

/// One ranged read of a source pack: neighbouring blobs, read together.
struct Run {
    /// The pack's object key, and its name with the store's for messages.
    key: String,
    object: String,
    dict: Option<Id>,
    start: u64,
    end: u64,
    items: Vec<(ChunkId, Location)>,
}

impl Run {
    /// The error of a failed read of this run: the pack is missing, or it could
    /// not be read (named by its first chunk).
    fn read_error(&self, snap: SnapshotId, e: crate::backend::BackendError) -> Error {
        let chunk = self.items.first().map_or(Id([0; 32]), |(id, _)| *id);
        match e {
            crate::backend::BackendError::NotFound { .. } => Error::PackMissing {
                snapshot: snap,
                chunk,
                pack: self.object.clone(),
            },
            other if other.is_damage() => Error::ChunkDamaged {
                snapshot: Some(snap),
                chunk,
                object: self.object.clone(),
                detail: other.to_string(),
            },
            // Not damage: the bytes could not be read, so nothing is known of them.
            other => Error::Backend(other),
        }
    }
}

/// The reads that fetch `groups`' chunks: per pack in offset order, blobs at
/// most [`MAX_GAP`] apart in one read of at most [`MAX_RUN`] bytes.
fn plan_runs(src: &ChunkIndex, groups: Vec<PackGroup>, location: &str) -> Vec<Run> {
    let mut runs = Vec::new();
    for (pack, mut items) in groups {
        items.sort_by_key(|(_, l)| l.entry.offset);
        let key = layout::pack(&src.pack_id(pack));
        let object = format!("{location}/{key}");
        let dict = src.pack_dict(pack);
        let mut items = items.into_iter().peekable();
        while let Some(first) = items.next() {
            let start = first.1.entry.offset as u64;
            let mut end = start + first.1.entry.stored_len as u64;
            let mut run = vec![first];
            while let Some((_, l)) = items.peek() {
                let (o, e) = (
                    l.entry.offset as u64,
                    l.entry.offset as u64 + l.entry.stored_len as u64,
                );
                if o > end + MAX_GAP || e - start > MAX_RUN {
                    break;
                }
                end = end.max(e);
                run.extend(items.next());
            }
            runs.push(Run {
                object: object.clone(),
                key: key.clone(),
                dict,
                start,
                end,
                items: run,
            });
        }
    }
    runs
}

/// The stored chunks of `list` that `dest` lacks, each once, with their source
/// locations, grouped by source pack in the order the list first uses each pack.
fn missing_chunks(
    src: &ChunkIndex,
    known: impl Fn(&ChunkId) -> bool,
    snap: &Snapshot,
    list: &[ChunkRef],
    copied: Option<&[ChunkRef]>,
) -> Result<Vec<PackGroup>> {
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut groups: Vec<PackGroup> = Vec::new();
    let mut group_of: IdMap<usize> = IdMap::default();
    let copied = copied.unwrap_or(&[]);
    for (i, c) in list.iter().enumerate() {
        let ChunkRef::Stored(id) = c else { continue };
        // The chunk the last copied snapshot had here is in the destination.
        if copied.get(i) == Some(c) {
            continue;
        }
        if known(id) || !seen.insert(*id) {
            continue;
        }
        let loc = *src.get(id).ok_or_else(|| src.unlocated(snap.id, id))?;
        let pack = src.pack_id(loc.pack);
        let g = *group_of.entry(pack).or_insert_with(|| {
            groups.push((loc.pack, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((*id, loc));
    }
    Ok(groups)
}
