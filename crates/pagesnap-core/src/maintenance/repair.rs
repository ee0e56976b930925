//! `repair`: put a damaged store back into a state every command can work with.
//!
//! * `repair index` rebuilds what the index says from the packs themselves (every
//!   pack's trailer lists its chunks): chunks in packs no readable index object
//!   locates are written into a new index object, so restores find them and
//!   backups deduplicate against them. Damaged index objects are moved to
//!   `damaged/index/<id>` (copied, then removed): their bytes are kept for
//!   inspection, and `prune` works again. Page maps name chunks through the index
//!   object that first stored them, so snapshots whose maps name a damaged index
//!   object stay broken; `repair snapshots` lists them.
//! * `repair index --read-data` also reads every pack whole and checks every chunk
//!   it holds against its id. A pack found damaged (a chunk that does not decode
//!   to its id, or bytes that do not match the pack's name) is rewritten: its
//!   sound chunks are copied, checked, into a new pack that the new index object
//!   locates, its bytes are kept whole under `damaged/packs/`, and only then is
//!   it deleted. Its damaged chunks are then located nowhere, which is how the
//!   store already treats the chunks of a lost pack: the next backup of a
//!   database that still holds such a page stores it again, and every older
//!   snapshot that needs it finds it there by id (page maps name chunks through
//!   index objects, which keep the names; locations come from packs present).
//!   That is restic's model of healing; no format changes. A pack that cannot be
//!   read (an I/O error), or whose chunks cannot be checked (its dictionary
//!   cannot be read), is not damage: it is reported and left as it is.
//! * `repair snapshots` lists the snapshots that cannot be restored (and the
//!   manifests that cannot be decoded); with `forget` it removes them, so that
//!   `prune` and retention see a consistent store. Nothing is removed without it.
//!
//! Repair acts only on damage: bytes it read and found wrong. An object it could
//! not read (permission, I/O or network error) says nothing about its bytes: it
//! is reported as "could not check" and never removed, nor is anything that
//! depends on it. Nothing is removed before it is copied whole into `damaged/`.

use super::verify::{DataSubset, VerifyOptions};
use crate::backend::{BackendError, PutMode};
use crate::codec::{ChunkError, Decoder};
use crate::format::index::{DeltaBase, IndexBody, IndexEntry, PackRef};
use crate::format::pack::{self, Codec, PackEntry};
use crate::index::cache::Placed;
use crate::store::bases::{Bases, InMap, DEFAULT_CACHE_BYTES};
use crate::store::pack_sink::PackSink;
use crate::store::packs::read_trailer;
use crate::types::{ChunkId, Id, IdMap, IdSet, SnapshotId};
use crate::{layout, Error, Result, Store};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Duration;

/// Prefix under which repair keeps the objects it takes out of use.
pub const DAMAGED: &str = crate::layout::DAMAGED;

/// How `repair index` runs.
#[derive(Clone, Debug, Default)]
pub struct RepairIndexOptions {
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Also read every pack and check every chunk against its id; rewrite the
    /// packs found damaged without their damaged chunks (see the module
    /// documentation).
    pub read_data: bool,
}

/// What `repair index` did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct RepairIndexReport {
    pub dry_run: bool,
    pub packs: u64,
    /// Packs whose trailer is damaged: their chunks cannot be indexed.
    pub unreadable_packs: Vec<(String, String)>,
    /// Packs (and index objects) that could not be read at all (permission, I/O or
    /// network error): not judged, nothing done about them.
    pub unchecked: Vec<(String, String)>,
    /// Chunks found in packs that no readable index object located.
    pub chunks_reindexed: u64,
    /// The index object written, if any.
    pub new_index: Option<Id>,
    /// Damaged index objects moved to `damaged/index/`.
    pub quarantined: Vec<String>,
    /// Whether packs were read and their chunks checked (`read_data`).
    pub read_data: bool,
    pub packs_read: u64,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    /// Packs found damaged, rewritten without their damaged chunks.
    pub damaged_packs: Vec<DamagedPack>,
    /// Packs that could not be read (an I/O error, a permission): not damage,
    /// nothing was done to them. The command failed to check them.
    pub read_errors: Vec<(String, String)>,
    /// Packs read whose chunks could not be checked (their dictionary cannot be
    /// read): left as they are.
    pub unchecked_packs: Vec<(String, String)>,
    /// New packs holding the sound chunks of damaged packs.
    pub packs_written: u64,
}

impl RepairIndexReport {
    /// Chunks taken out of use that no other pack holds: the snapshots that need
    /// them cannot be restored until a backup stores them again.
    pub fn chunks_lost(&self) -> usize {
        self.damaged_packs
            .iter()
            .flat_map(|p| &p.dropped)
            .filter(|d| !d.copy_kept)
            .count()
    }
}

/// A pack `repair index --read-data` found damaged.
#[derive(Clone, Debug)]
pub struct DamagedPack {
    pub pack: Id,
    /// `packs/ab/ab…`
    pub key: String,
    /// Where its bytes are kept: `damaged/packs/ab/ab…`.
    pub moved_to: String,
    /// Whether its bytes match its name (if so, only chunks are damaged; if not,
    /// possibly its header or trailer too).
    pub name_matches: bool,
    /// Its sound chunks: copied into a new pack (or already in another one).
    pub chunks_kept: u64,
    /// Its chunks whose stored bytes are damaged, taken out of use.
    pub dropped: Vec<DroppedChunk>,
    /// Its sound chunks, copied, made it again byte for byte (it was damaged
    /// outside its chunks only): it is whole again under its name.
    pub whole_again: bool,
}

/// A chunk whose stored bytes in a pack are damaged.
#[derive(Clone, Debug)]
pub struct DroppedChunk {
    pub chunk: ChunkId,
    pub problem: String,
    /// Whether another pack holds a copy of it (then nothing is lost).
    pub copy_kept: bool,
}

/// What reading one pack whole found.
enum PackCheck {
    /// It could not be read (not damage).
    ReadError(String),
    /// It was read, but its chunks could not be checked.
    Unchecked(String),
    Sound,
    /// Nothing says which chunks it holds.
    Unknown,
    Damaged {
        name_matches: bool,
        /// Its sound chunks, one entry each.
        good: Vec<PackEntry>,
        /// Its damaged chunks (none of whose entries decoded to their id), and why.
        bad: Vec<(ChunkId, String)>,
        /// Its dictionary, if its chunks use one.
        dict: Option<Id>,
        /// blake3 of the bytes read, to make sure the bytes copied are those checked.
        digest: [u8; 32],
    },
}

/// A pack's dictionary and entries as the index objects record them.
type Listed = (Option<Id>, Vec<PackEntry>);

/// Adds the chunks `body` locates in packs present with their length, but for
/// those of `except`.
fn add_located(located: &mut HashSet<Id>, body: &IndexBody, sizes: &IdMap<u64>, except: &IdSet) {
    let here: Vec<bool> = body
        .packs
        .iter()
        .map(|p| sizes.get(&p.id) == Some(&p.len) && !except.contains(&p.id))
        .collect();
    for e in &body.entries {
        if here.get(e.pack as usize).copied().unwrap_or(false) {
            located.insert(e.entry.id);
        }
    }
}

/// Adds where `body` places its chunks (in packs present with their length),
/// keeping a location already known.
fn add_placed(placed: &mut IdMap<Placed>, body: &IndexBody, sizes: &IdMap<u64>) {
    for e in &body.entries {
        let Some(p) = body.packs.get(e.pack as usize) else {
            continue;
        };
        if sizes.get(&p.id) == Some(&p.len) {
            placed.entry(e.entry.id).or_insert((p.id, p.dict, e.entry));
        }
    }
}

/// Adds the entries of `body` to the lists of the packs they are in (those
/// present with their length).
fn add_listed(listed: &mut IdMap<Listed>, body: &IndexBody, sizes: &IdMap<u64>) {
    let here: Vec<bool> = body
        .packs
        .iter()
        .map(|p| sizes.get(&p.id) == Some(&p.len))
        .collect();
    for (p, _) in body.packs.iter().zip(&here).filter(|(_, h)| **h) {
        let slot = listed.entry(p.id).or_default();
        slot.0 = slot.0.or(p.dict);
    }
    for e in &body.entries {
        let Some(p) = body.packs.get(e.pack as usize) else {
            continue;
        };
        if here[e.pack as usize] {
            listed.entry(p.id).or_default().1.push(e.entry);
        }
    }
}

/// Base-table rows by delta: (base, depth, whole length).
type Rows = IdMap<(ChunkId, u8, u32)>;

/// A damaged pack to rewrite.
struct Rewrite {
    pack: Id,
    dict: Option<Id>,
    /// Sound chunks to copy (those no other pack locates).
    copy: Vec<PackEntry>,
    digest: [u8; 32],
}

/// A snapshot `repair snapshots` found broken.
#[derive(Clone, Debug)]
pub struct BrokenSnapshot {
    /// The manifest key.
    pub key: String,
    pub id: SnapshotId,
    /// Name and time, when the manifest could be read.
    pub name: Option<String>,
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// The problems that break it.
    pub reasons: Vec<String>,
}

/// What `repair snapshots` found (and, with `forget`, did).
#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsReport {
    /// Snapshots that cannot be restored: damage was read in what they need.
    pub broken: Vec<BrokenSnapshot>,
    /// Objects that could not be read: the snapshots they affect were not judged
    /// and are never forgotten on their account.
    pub unchecked: Vec<crate::Problem>,
    /// Broken snapshots kept although `forget` was asked: their manifest could not
    /// be copied into `damaged/` first (object key, why).
    pub kept: Vec<(String, String)>,
}

impl Store {
    /// Rebuilds the index from the packs; see the module documentation. Holds the
    /// exclusive lock: no backup may write packs or index objects meanwhile.
    pub fn repair_index(&self, dry_run: bool, lock_wait: Duration) -> Result<RepairIndexReport> {
        self.check_may_delete("repair the store")?;
        let opts = RepairIndexOptions {
            dry_run,
            read_data: false,
        };
        self.repair_index_with(&opts, lock_wait)
    }

    /// [`Store::repair_index`], and with `read_data` the rewriting of damaged
    /// packs; see the module documentation.
    pub fn repair_index_with(
        &self,
        opts: &RepairIndexOptions,
        lock_wait: Duration,
    ) -> Result<RepairIndexReport> {
        let dry_run = opts.dry_run;
        // A store with deltas: reading data checks each delta with its base,
        // decoded through its chain; the base tables of re-indexed and copied
        // deltas are rebuilt below.
        let deltas = self.config().deltas;
        let _lock = self.lock(true, "repair index", lock_wait)?;
        let backend = self.backend();
        let mut report = RepairIndexReport {
            dry_run,
            read_data: opts.read_data,
            ..Default::default()
        };
        let sizes = self.pack_sizes()?;
        report.packs = sizes.len() as u64;

        // What the readable index objects locate (in packs present with their
        // length), the damaged ones, and with `read_data` each pack's entries.
        // One that cannot be read stops the repair before it writes anything: what
        // it locates is unknown, and only damage read is ever quarantined.
        let mut located: HashSet<Id> = HashSet::new();
        let mut readable: Vec<(String, Id)> = Vec::new();
        let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
        let mut listed: IdMap<Listed> = IdMap::default();
        // A store with deltas: where every located chunk is (bases are read
        // through it to rebuild the base tables of re-indexed deltas).
        let mut placed: IdMap<Placed> = IdMap::default();
        for obj in backend.list(layout::INDEX)? {
            let Some(id) = layout::id_of(&obj.key) else {
                continue;
            };
            let bytes = match backend.get(&obj.key) {
                Ok(b) => b,
                Err(crate::backend::BackendError::NotFound { .. }) => continue,
                // An encrypted store's object read whole and found not to
                // authenticate: damage. Its sealed bytes, as stored, are what
                // is kept under damaged/ (sealed again there).
                Err(e @ crate::backend::BackendError::Sealed { .. }) if e.is_damage() => {
                    damaged.push((obj.key.clone(), self.stored_backend().get(&obj.key)?));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let body = match Id::of_object(&bytes) == id {
                true => IndexBody::decode(&bytes).map_err(|e| e.to_string()),
                false => Err("content does not match its name".to_string()),
            };
            match body {
                Ok(body) => {
                    add_located(&mut located, &body, &sizes, &IdSet::default());
                    if deltas {
                        add_placed(&mut placed, &body, &sizes);
                    }
                    if opts.read_data {
                        add_listed(&mut listed, &body, &sizes);
                    }
                    readable.push((obj.key, id));
                }
                Err(_) => damaged.push((obj.key, bytes)),
            }
        }

        // Dictionaries by the 16-byte prefix pack headers record.
        let mut dicts: HashMap<[u8; 16], Id> = HashMap::new();
        for o in backend.list(layout::DICTS)? {
            if let Some(id) = layout::id_of(&o.key) {
                let mut p = [0u8; 16];
                p.copy_from_slice(&id.0[..16]);
                dicts.insert(p, id);
            }
        }

        // Deltas are checked with their bases, located where the index objects
        // and, for chunks no index object locates, the packs' own trailers put
        // them (a base in a pack whose index object is lost is not lost).
        let bases = match deltas {
            true => Some(Bases::new(
                backend.clone(),
                DEFAULT_CACHE_BYTES,
                self.chunk_ids(),
            )?),
            false => None,
        };
        if deltas && opts.read_data {
            for (pack_id, &len) in &sizes {
                let Ok((prefix, entries)) = read_trailer(self, &layout::pack(pack_id), len) else {
                    continue; // check_pack reports it
                };
                let dict = prefix.and_then(|p| dicts.get(&p).copied());
                for e in entries {
                    placed.entry(e.id).or_insert((*pack_id, dict, e));
                }
            }
        }
        let in_map = InMap::new(&placed);
        let chains = bases.as_ref().map(|b| (b, &in_map));

        // With `read_data`: every pack read whole, every chunk checked.
        let mut rewrite: Vec<Rewrite> = Vec::new();
        if opts.read_data {
            let checked = self.check_packs(&sizes, &listed, &dicts, chains, &mut report);
            drop(listed);
            for (pack, check) in checked {
                let key = layout::pack(&pack);
                match check {
                    PackCheck::ReadError(e) => report.read_errors.push((key, e)),
                    PackCheck::Unchecked(e) => report.unchecked_packs.push((key, e)),
                    PackCheck::Sound | PackCheck::Unknown => {}
                    PackCheck::Damaged {
                        name_matches,
                        good,
                        bad,
                        dict,
                        digest,
                    } => {
                        report.damaged_packs.push(DamagedPack {
                            pack,
                            whole_again: false,
                            moved_to: format!("{DAMAGED}{key}"),
                            key,
                            name_matches,
                            chunks_kept: good.len() as u64,
                            dropped: bad
                                .into_iter()
                                .map(|(chunk, problem)| DroppedChunk {
                                    chunk,
                                    problem,
                                    copy_kept: false,
                                })
                                .collect(),
                        });
                        rewrite.push(Rewrite {
                            pack,
                            dict,
                            copy: good,
                            digest,
                        });
                    }
                }
            }
        }
        let rewritten: IdSet = rewrite.iter().map(|r| r.pack).collect();
        if !rewritten.is_empty() {
            // Located, but not in a pack about to be rewritten: read again (rare,
            // and little beside reading every pack).
            located.clear();
            for (key, id) in &readable {
                let body = self.index_body(key, id)?;
                add_located(&mut located, &body, &sizes, &rewritten);
            }
        }
        // The sound chunks of damaged packs are copied unless another pack has
        // them (each once).
        for r in &mut rewrite {
            r.copy.retain(|e| located.insert(e.id));
        }

        let mut body = IndexBody::default();
        let mut ids: Vec<(&Id, &u64)> = sizes.iter().collect();
        ids.sort();
        for (pack_id, &len) in ids {
            if rewritten.contains(pack_id) {
                continue; // its sound chunks are copied, and indexed where they go
            }
            let key = layout::pack(pack_id);
            let (dict_prefix, entries) = match read_trailer(self, &key, len) {
                Ok(x) => x,
                Err(e) if e.damage => {
                    report.unreadable_packs.push((key, e.detail));
                    continue;
                }
                // Said once: `--read-data` already reported it as a read error.
                Err(_) if report.read_errors.iter().any(|(k, _)| *k == key) => continue,
                Err(e) => {
                    report.unchecked.push((key, e.detail));
                    continue;
                }
            };
            let dict = match dict_prefix {
                None => None,
                Some(p) => match dicts.get(&p) {
                    Some(d) => Some(*d),
                    None => {
                        report
                            .unreadable_packs
                            .push((key, "its dictionary is missing from the store".to_string()));
                        continue;
                    }
                },
            };
            let new: Vec<PackEntry> = entries
                .into_iter()
                .filter(|e| !located.contains(&e.id))
                .collect();
            if new.is_empty() {
                continue;
            }
            let pos = body.packs.len() as u32;
            body.packs.push(PackRef {
                id: *pack_id,
                len,
                dict,
            });
            for e in new {
                located.insert(e.id);
                body.entries.push(IndexEntry {
                    pack: pos,
                    entry: e,
                });
            }
        }
        // Re-indexed deltas: base from the blob, depth from the chain decoded
        // (checked) through the located chunks and the re-indexed ones, whole
        // length measured again from the decoded bytes (whole_len.rs). A delta
        // whose chain cannot be read is not indexed, and said so: like a chunk
        // of an unreadable pack, the next backup stores its page again.
        let mut rows: Rows = IdMap::default();
        let mut whole = super::whole_len::WholeLen::new(backend.clone(), self.config().zstd_level);
        if let Some(bases) = bases.as_ref().filter(|_| {
            body.entries
                .iter()
                .any(|e| e.entry.codec == Codec::ZstdDelta)
        }) {
            add_placed(&mut placed, &body, &sizes);
            let locate = InMap::new(&placed);
            let mut unreadable = IdSet::default();
            for e in &body.entries {
                if e.entry.codec != Codec::ZstdDelta {
                    continue;
                }
                let p = &body.packs[e.pack as usize];
                let key = layout::pack(&p.id);
                let start = e.entry.offset as u64;
                let found = backend
                    .get_range(&key, start..start + e.entry.stored_len as u64)
                    .map_err(|err| err.to_string())
                    .and_then(|stored| {
                        // The blob names its base by a prefix: the full id is
                        // the located chunk the delta decodes against, checked.
                        let (base, _) = bases
                            .base_chunk(&e.entry, &stored, &locate)
                            .map_err(|err| err.to_string())?
                            .ok_or_else(|| "not a delta".to_string())?;
                        let (raw, depth) = bases
                            .raw(&e.entry.id, &locate)
                            .map_err(|err| err.to_string())?;
                        Ok((base, depth, whole.of(&e.entry, p.dict, &raw)))
                    });
                match found {
                    Ok(row) => {
                        rows.insert(e.entry.id, row);
                    }
                    Err(why) => {
                        unreadable.insert(e.entry.id);
                        report.unchecked.push((
                            format!("{key} chunk {}", e.entry.id.to_hex()),
                            format!("a delta whose chain cannot be read ({why}); not indexed"),
                        ));
                    }
                }
            }
            body.entries.retain(|e| !unreadable.contains(&e.entry.id));
        }
        // A damaged chunk is lost unless another pack holds it (located, copied
        // or re-indexed).
        for p in &mut report.damaged_packs {
            for d in &mut p.dropped {
                d.copy_kept = located.contains(&d.chunk);
            }
        }
        report.chunks_reindexed = body.entries.len() as u64;
        report.quarantined = damaged.iter().map(|(k, _)| k.clone()).collect();
        if dry_run {
            report.packs_written = rewrite.iter().any(|r| !r.copy.is_empty()) as u64;
            return Ok(report);
        }
        // Packs and index objects are about to be deleted, replaced (an index
        // object rebuilt under its own name) or added: every machine's record
        // of the listing is stale first (store/listing.rs).
        if !(damaged.is_empty() && rewrite.is_empty() && body.entries.is_empty()) {
            self.drop_marker()?;
        }
        // Damaged packs: a copy of each, whole, under damaged/, then their sound
        // chunks into new packs; the index object then locates those.
        let in_map = InMap::new(&placed);
        let chains = bases.as_ref().map(|b| (b, &in_map));
        let (copied, copied_rows) = self.copy_sound_chunks(&rewrite, chains)?;
        rows.extend(copied_rows);
        report.packs_written = copied.packs.len() as u64;
        let written: IdSet = copied.packs.iter().map(|p| p.id).collect();
        let mut index = IndexBody {
            packs: copied.packs,
            entries: copied.entries,
            // Filled below from `rows` (`put_index` refuses a delta entry
            // without its row).
            deltas: Vec::new(),
        };
        let first = index.packs.len() as u32;
        index.packs.extend(body.packs);
        index
            .entries
            .extend(body.entries.into_iter().map(|e| IndexEntry {
                pack: e.pack + first,
                ..e
            }));
        // The base table of the re-indexed deltas, in entry order.
        index.deltas = index
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let (base, depth, whole_len) = *rows.get(&e.entry.id)?;
                Some(DeltaBase {
                    ordinal: i as u64,
                    base,
                    depth,
                    whole_len,
                })
            })
            .collect();
        // A whole copy of each damaged index object's bytes first: the rebuilt
        // object may have its name (a backup's one-pack index rebuilt from that
        // pack's trailer is the same object) and writing it replaces them.
        for (key, bytes) in &damaged {
            backend.put(&format!("{DAMAGED}{key}"), bytes, PutMode::Overwrite)?;
        }
        if !index.entries.is_empty() {
            let (id, _) = crate::store::put_index(backend.as_ref(), &index)?;
            report.new_index = Some(id);
        }
        // Only once the chunks they keep are located elsewhere, durably: the
        // damaged packs go (their bytes are under damaged/). Their damaged chunks
        // are then located nowhere, so a backup stores them again. Never a pack
        // just written: one whose chunks were all sound can come back whole,
        // under its own name.
        for r in &rewrite {
            if written.contains(&r.pack) {
                if let Some(p) = report.damaged_packs.iter_mut().find(|p| p.pack == r.pack) {
                    p.whole_again = true;
                }
                continue;
            }
            backend.delete(&layout::pack(&r.pack))?;
        }
        // Only after the replacement is durable (and the bytes found wrong are
        // under damaged/): take the damaged objects out of use. Never the object
        // just written: rebuilt under the damaged one's name, it holds that
        // name's sound content now.
        let new_key = report.new_index.as_ref().map(layout::index);
        for (key, _) in &damaged {
            if new_key.as_ref() != Some(key) {
                backend.delete(key)?;
            }
        }
        Ok(report)
    }

    /// Reads every pack of `sizes` whole, on every core, and checks each chunk it
    /// holds (by the index objects' entries and its own trailer) against its id.
    fn check_packs(
        &self,
        sizes: &IdMap<u64>,
        listed: &IdMap<Listed>,
        dicts: &HashMap<[u8; 16], Id>,
        chains: Option<Chains<'_>>,
        report: &mut RepairIndexReport,
    ) -> Vec<(Id, PackCheck)> {
        let mut packs: Vec<(Id, u64)> = sizes.iter().map(|(id, len)| (*id, *len)).collect();
        packs.sort();
        let none = (None, Vec::new());
        let results: Vec<(Id, PackCheck, u64, u64)> = packs
            .par_iter()
            .map(|(id, len)| {
                let (dict, entries) = listed.get(id).unwrap_or(&none);
                let (check, chunks, bytes) =
                    check_pack(self, id, *len, *dict, entries, dicts, chains);
                (*id, check, chunks, bytes)
            })
            .collect();
        results
            .into_iter()
            .map(|(id, check, chunks, bytes)| {
                report.packs_read += u64::from(!matches!(check, PackCheck::ReadError(_)));
                report.chunks_checked += chunks;
                report.bytes_read += bytes;
                (id, check)
            })
            .collect()
    }

    /// Keeps a whole copy of each damaged pack under `damaged/`, then copies its
    /// sound chunks (checked again on the way) into new packs.
    ///
    /// Every copy is made before any new pack is written: a new pack of the same
    /// chunks in the same order as a damaged pack's original is that original,
    /// byte for byte, under the same name (a pack damaged only in its trailer
    /// comes back whole), and replaces it.
    ///
    /// A delta is checked with its base (through its chain) and its base-table
    /// row (base, depth) returned for the new index object.
    fn copy_sound_chunks(
        &self,
        rewrite: &[Rewrite],
        chains: Option<Chains<'_>>,
    ) -> Result<(crate::store::pack_sink::SinkOutput, Rows)> {
        let backend = self.backend();
        let same = |key: &str, bytes: &[u8], r: &Rewrite| -> Result<()> {
            if *blake3::hash(bytes).as_bytes() != r.digest {
                return Err(Error::Invalid {
                    what: "pack",
                    detail: format!(
                        "{key} changed while `repair index` read it; nothing was deleted: run it again"
                    ),
                });
            }
            Ok(())
        };
        for r in rewrite {
            let key = layout::pack(&r.pack);
            let bytes = self.read_salvaging(&key)?;
            same(&key, &bytes, r)?;
            // Kept whole as stored: an encrypted store's pack sealed as it was
            // (and sealed again under damaged/), not its salvaged plaintext.
            let whole = match self.config().encrypted {
                true => self.stored_backend().get(&key)?,
                false => bytes,
            };
            let kept = format!("{DAMAGED}{key}");
            backend.put(&kept, &whole, PutMode::Overwrite)?;
            if backend.size(&kept)? != Some(whole.len() as u64) {
                return Err(Error::Internal(format!(
                    "the copy of {key} in {kept} is not whole; nothing was deleted"
                )));
            }
        }
        let mut sink = PackSink::new(backend.clone(), self.config().pack_target_size as usize);
        let mut decoders = Decoder::new(self.chunk_ids())?;
        let mut rows = IdMap::default();
        let mut whole = super::whole_len::WholeLen::new(backend.clone(), self.config().zstd_level);
        for r in rewrite {
            let key = layout::pack(&r.pack);
            // From the copy: the name may hold a rewritten pack by now.
            let bytes = self.open_salvaging(&key, &backend.get(&format!("{DAMAGED}{key}"))?)?;
            same(&key, &bytes, r)?;
            if let Some(d) = &r.dict {
                decoders.ensure_dict(backend.as_ref(), d)?;
            }
            for e in &r.copy {
                let changed = || {
                    Error::Internal(format!(
                        "chunk {} of {key} checked sound, then not; nothing was deleted",
                        e.id.to_hex()
                    ))
                };
                let stored = blob(&bytes, e).map_err(|_| changed())?;
                let row = match (chains, e.codec) {
                    (Some(c), Codec::ZstdDelta) => {
                        let (base, raw, depth) = base_of_delta(c, e, stored)
                            .map_err(|err| err.or_damaged(|_| changed()))?;
                        let chunk = decoders
                            .decode_checked_with_base(e, stored, r.dict.as_ref(), Some(&raw))
                            .map_err(|_| changed())?;
                        Some((base, depth + 1, whole.of(e, r.dict, &chunk)))
                    }
                    _ => {
                        decoders
                            .decode_checked(e, stored, r.dict.as_ref())
                            .map_err(|_| changed())?;
                        None
                    }
                };
                if let Some(row) = row {
                    rows.insert(e.id, row);
                }
                sink.push(r.dict, e.id, stored, e.raw_len, e.codec)?;
            }
        }
        Ok((sink.finish()?, rows))
    }

    /// Index object `id` (at `key`), read, checked against its name and decoded.
    fn index_body(&self, key: &str, id: &Id) -> Result<IndexBody> {
        let bytes = self.get_verified(key, id)?;
        IndexBody::decode(&bytes).map_err(self.format_err(key))
    }

    /// The snapshots that cannot be restored, and (with `forget`) removes them,
    /// each manifest first copied whole into `damaged/`. With `read_data`, chunk
    /// data is checked too (see [`Store::verify`]). Snapshots that depend on an
    /// object that could not be read are not judged: see the report's `unchecked`.
    pub fn repair_snapshots(&self, forget: bool, read_data: bool) -> Result<RepairSnapshotsReport> {
        self.check_may_delete("repair the store")?;
        let report = self.verify(&VerifyOptions {
            read_data: read_data.then_some(DataSubset::All),
            ..Default::default()
        })?;
        let snaps: HashMap<SnapshotId, crate::Snapshot> =
            self.snapshots()?.into_iter().map(|s| (s.id, s)).collect();
        let mut out = Vec::new();
        for id in &report.broken {
            let reasons = report
                .problems
                .iter()
                .filter(|p| p.snapshots.contains(id))
                .map(|p| format!("{}: {}", p.object, p.detail))
                .collect();
            let s = snaps.get(id);
            out.push(BrokenSnapshot {
                key: layout::snapshot(id),
                id: *id,
                name: s.map(|s| s.manifest.name.clone()),
                time: s.map(|s| s.time()),
                reasons,
            });
        }
        out.sort_by_key(|b| (b.time, b.id));
        let mut kept = Vec::new();
        if forget && !out.is_empty() {
            let _lock = self.lock(false, "repair snapshots", Duration::from_secs(600))?;
            let backend = self.backend();
            for b in &out {
                // Never removed unless its bytes are safe in `damaged/` first.
                let bytes = match backend.get(&b.key) {
                    Ok(bytes) => bytes,
                    Err(crate::backend::BackendError::NotFound { .. }) => continue,
                    Err(e) => {
                        kept.push((b.key.clone(), e.to_string()));
                        continue;
                    }
                };
                backend.put(&format!("{DAMAGED}{}", b.key), &bytes, PutMode::Overwrite)?;
                backend.delete(&b.key)?;
            }
        }
        Ok(RepairSnapshotsReport {
            broken: out,
            unchecked: report.unreadable().cloned().collect(),
            kept,
        })
    }
}

/// Reads pack `id` (`len` bytes) whole and checks every chunk it holds: those of
/// `listed` (the index objects' entries for it) and those of its own trailer.
/// Returns what it found, the chunks checked and the bytes read.
fn check_pack(
    store: &Store,
    id: &Id,
    len: u64,
    dict: Option<Id>,
    listed: &[PackEntry],
    dicts: &HashMap<[u8; 16], Id>,
    chains: Option<Chains<'_>>,
) -> (PackCheck, u64, u64) {
    let key = layout::pack(id);
    let bytes = match store.read_salvaging(&key) {
        Ok(b) => b,
        Err(e) => return (PackCheck::ReadError(e.to_string()), 0, 0),
    };
    let read = bytes.len() as u64;
    if read != len {
        let e = format!("it is {read} bytes, the listing said {len}: it changed while being read");
        return (PackCheck::ReadError(e), 0, read);
    }
    let name_matches = Id::of_object(&bytes) == *id;
    // Its own trailer, if it can be read, names chunks the index may not.
    let header_dict = bytes
        .get(..pack::HEADER_LEN)
        .and_then(|h| pack::check_header(h).ok())
        .flatten();
    let mut entries: Vec<PackEntry> = listed.to_vec();
    if let Ok(own) = pack::decode_pack(&bytes) {
        entries.extend(own);
    }
    if entries.is_empty() {
        // Nothing names a chunk in it (no index object, no readable trailer):
        // nothing to check or keep; the trailer pass reports it.
        return (PackCheck::Unknown, 0, read);
    }
    // The dictionary: the index's, else the one the header names.
    let dict = dict.or_else(|| header_dict.and_then(|p| dicts.get(&p).copied()));
    let mut decoders = match Decoder::new(store.chunk_ids()) {
        Ok(d) => d,
        Err(e) => return (PackCheck::Unchecked(e.to_string()), 0, read),
    };
    if entries.iter().any(|e| e.codec == Codec::ZstdDict) {
        let loaded = match &dict {
            Some(d) => decoders.ensure_dict(store.backend().as_ref(), d),
            None => Err(Error::Invalid {
                what: "pack",
                detail: "its chunks need a dictionary the store does not have".into(),
            }),
        };
        match loaded {
            Ok(()) => {}
            Err(e @ Error::Backend(BackendError::Io { .. })) => {
                return (
                    PackCheck::ReadError(format!("its dictionary: {e}")),
                    0,
                    read,
                )
            }
            // Its chunks may be sound: nothing is decided without checking them.
            Err(e) => {
                let why =
                    format!("its chunks cannot be checked: its dictionary cannot be read: {e}");
                return (PackCheck::Unchecked(why), 0, read);
            }
        }
    }
    // Each blob is decoded once, whatever entries name it; an entry whose id is
    // not what its blob decodes to is damaged unless another entry of the blob
    // (the index's, say, where the trailer's id is damaged) decodes to its own.
    type Blob = (u32, u32, u32, Codec);
    let mut blobs: HashMap<Blob, Vec<ChunkId>> = HashMap::new();
    for e in &entries {
        let ids = blobs
            .entry((e.offset, e.stored_len, e.raw_len, e.codec))
            .or_default();
        if !ids.contains(&e.id) {
            ids.push(e.id);
        }
    }
    let mut blob_list: Vec<(Blob, Vec<ChunkId>)> = blobs.into_iter().collect();
    blob_list.sort_by_key(|(b, _)| b.0);
    let mut good: HashMap<ChunkId, PackEntry> = HashMap::new();
    let mut bad: Vec<(ChunkId, String)> = Vec::new();
    let mut checked = 0u64;
    for ((offset, stored_len, raw_len, codec), ids) in blob_list {
        checked += ids.len() as u64;
        let probe = PackEntry {
            id: ids[0],
            offset,
            stored_len,
            raw_len,
            codec,
        };
        // Checked against the blob's first id; on a mismatch, the id it decoded
        // to may be another of its entries'.
        // A delta is decoded with its base, through its chain: a delta whose
        // base is damaged or lost is as lost as a damaged chunk (named with its
        // base), and a base that could not be read leaves the pack unchecked.
        let mut unreadable = None;
        let decoded = blob(&bytes, &probe).and_then(|stored| {
            let base = match (chains, codec) {
                (Some(c), Codec::ZstdDelta) => base_of_delta(c, &probe, stored).map(|b| Some(b.1)),
                _ => Ok(None),
            };
            let checked = base.and_then(|base| {
                decoders.decode_checked_with_base(
                    &probe,
                    stored,
                    dict.as_ref(),
                    base.as_deref().map(|b| b.as_slice()),
                )
            });
            match checked {
                Ok(_) => Ok(probe.id),
                Err(ChunkError::Mismatch { actual }) => Ok(actual),
                Err(ChunkError::Decode(e)) => Err(format!("cannot be decoded: {e}")),
                Err(e @ ChunkError::Base { .. }) => Err(format!("cannot be decoded: {e}")),
                Err(e @ ChunkError::Unreadable { .. }) => {
                    unreadable = Some(format!("chunk {}: {e}", probe.id.to_hex()));
                    Err(String::new())
                }
            }
        });
        if let Some(why) = unreadable {
            return (PackCheck::Unchecked(why), checked, read);
        }
        match decoded {
            Ok(actual) => {
                if ids.contains(&actual) {
                    good.entry(actual).or_insert(PackEntry {
                        id: actual,
                        ..probe
                    });
                } else {
                    let why = "its stored bytes do not match its id".to_string();
                    bad.extend(ids.iter().map(|c| (*c, why.clone())));
                }
            }
            Err(why) => bad.extend(ids.iter().map(|c| (*c, why.clone()))),
        }
    }
    // A chunk with a sound copy in this pack is not damaged.
    bad.retain(|(c, _)| !good.contains_key(c));
    bad.sort_by_key(|(c, _)| *c);
    bad.dedup_by_key(|(c, _)| *c);
    if name_matches && bad.is_empty() {
        return (PackCheck::Sound, checked, read);
    }
    let mut good: Vec<PackEntry> = good.into_values().collect();
    good.sort_by_key(|e| e.offset);
    let check = PackCheck::Damaged {
        name_matches,
        good,
        bad,
        dict,
        digest: *blake3::hash(&bytes).as_bytes(),
    };
    (check, checked, read)
}

/// A reader of bases and where every chunk is (the index objects' locations,
/// then the packs' own trailers'): how repair follows a delta's chain.
type Chains<'a> = (
    &'a Bases,
    &'a InMap<'a, BuildHasherDefault<crate::types::IdHasher>>,
);

/// The base delta `e` (stored as `stored`) names, its raw bytes decoded
/// (checked) through its chain, and its depth.
fn base_of_delta(
    (bases, placed): Chains<'_>,
    e: &PackEntry,
    stored: &[u8],
) -> std::result::Result<(ChunkId, std::sync::Arc<Vec<u8>>, u8), ChunkError> {
    let (base, (raw, depth)) = bases.base_chunk(e, stored, placed)?.ok_or_else(|| {
        ChunkError::Decode(crate::format::FormatError::Invalid(
            "a delta entry whose blob is not a delta".into(),
        ))
    })?;
    Ok((base, raw, depth))
}

/// The stored bytes of entry `e` in a pack held whole.
fn blob<'a>(bytes: &'a [u8], e: &PackEntry) -> std::result::Result<&'a [u8], String> {
    let start = e.offset as usize;
    start
        .checked_add(e.stored_len as usize)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| "its location lies outside the pack".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, TestReads};
    use crate::{BackupOptions, InitOptions};
    use std::path::Path;
    use std::sync::Arc;

    const WAIT: Duration = Duration::from_secs(5);

    /// A store with two snapshots of a database (the first trains a dictionary),
    /// and their images.
    fn store(dir: &Path) -> anyhow::Result<(Store, Vec<Vec<u8>>)> {
        let db = dir.join("app.db");
        let store = Store::init(dir.join("store"), &InitOptions::default())?;
        let c = rusqlite::Connection::open(&db)?;
        c.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000)
               SELECT printf('row %d of a table %s', i, hex(randomblob(60))) FROM n;",
        )?;
        let mut images = Vec::new();
        for step in 0..2 {
            if step == 1 {
                c.execute_batch("UPDATE t SET v = v || 'x' WHERE k % 50 = 0")?;
            }
            store.backup_path(&db, &BackupOptions::default())?;
            let snap = store.snapshots()?.pop().expect("a snapshot");
            let mut image = Vec::new();
            store.restore_to_writer(&snap, &mut image)?;
            images.push(image);
        }
        Ok((store, images))
    }

    fn largest_pack(store: &Store) -> anyhow::Result<String> {
        let mut packs = store.backend().list(layout::PACKS)?;
        packs.sort_by_key(|o| std::cmp::Reverse(o.size));
        Ok(packs[0].key.clone())
    }

    fn restores(store: &Store, images: &[Vec<u8>]) -> anyhow::Result<()> {
        for (snap, image) in store.snapshots()?.iter().zip(images) {
            let mut got = Vec::new();
            store.restore_to_writer(snap, &mut got)?;
            assert!(got == *image, "snapshot {} restores", snap.id.short());
        }
        Ok(())
    }

    /// A pack whose trailer is damaged (its chunks are sound) is rewritten
    /// without losing anything: `verify` complained of it before, not after.
    #[test]
    fn a_pack_with_a_damaged_trailer_is_rewritten_whole() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (store, images) = store(dir.path())?;
        let key = largest_pack(&store)?;
        let mut bytes = store.backend().get(&key)?;
        let at = bytes.len() - pack::FOOTER_LEN - 10; // in the last trailer entry
        bytes[at] ^= 1;
        std::fs::write(dir.path().join("store").join(&key), &bytes)?;
        assert!(!store.verify(&Default::default())?.healthy());

        let r = store.repair_index_with(
            &RepairIndexOptions {
                dry_run: false,
                read_data: true,
            },
            WAIT,
        )?;
        assert_eq!(r.damaged_packs.len(), 1);
        let p = &r.damaged_packs[0];
        assert_eq!(p.key, key);
        assert!(!p.name_matches && p.dropped.is_empty() && p.chunks_kept > 0);
        assert_eq!(r.chunks_lost(), 0);
        assert!(r.unreadable_packs.is_empty(), "{:?}", r.unreadable_packs);
        assert_eq!(store.backend().get(&p.moved_to)?, bytes);
        // Its chunks, copied in the same order, made the original pack again.
        assert!(p.whole_again);
        let again = store.backend().get(&key)?;
        assert_eq!(Id::of_object(&again), p.pack);
        restores(&store, &images)?;
        let v = store.verify(&crate::VerifyOptions {
            read_data: Some(DataSubset::All),
            ..Default::default()
        })?;
        assert!(v.healthy(), "{:?}", v.problems);
        Ok(())
    }

    /// A pack that cannot be read (an I/O error) is not damage: reported, kept,
    /// and nothing else is written for it.
    #[test]
    fn a_pack_that_cannot_be_read_is_left_alone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (store, images) = store(dir.path())?;
        let key = largest_pack(&store)?;
        let failing = Store::open_backend(Arc::new(TestReads::failing(
            &dir.path().join("store"),
            &key,
        )) as Arc<dyn Backend>)?;
        let before = store.backend().list("")?;
        let r = failing.repair_index_with(
            &RepairIndexOptions {
                dry_run: false,
                read_data: true,
            },
            WAIT,
        )?;
        assert_eq!(r.read_errors.len(), 1);
        assert_eq!(r.read_errors[0].0, key);
        assert!(r.damaged_packs.is_empty() && r.new_index.is_none());
        assert_eq!(store.backend().list("")?, before, "nothing changed");
        restores(&store, &images)?;
        Ok(())
    }

    /// Chunks whose dictionary is lost cannot be checked: their pack is reported
    /// and kept (the dictionary may come back from another copy of the store).
    #[test]
    fn chunks_whose_dictionary_is_lost_are_not_taken_for_damage() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (store, _) = store(dir.path())?;
        let dicts = store.backend().list(layout::DICTS)?;
        assert!(!dicts.is_empty(), "the first backup trained a dictionary");
        for d in &dicts {
            store.backend().delete(&d.key)?;
        }
        let before = store.backend().list(layout::PACKS)?;
        let r = store.repair_index_with(
            &RepairIndexOptions {
                dry_run: false,
                read_data: true,
            },
            WAIT,
        )?;
        assert!(r.damaged_packs.is_empty());
        assert!(!r.unchecked_packs.is_empty());
        assert!(
            r.unchecked_packs[0].1.contains("dictionary"),
            "{:?}",
            r.unchecked_packs
        );
        assert_eq!(store.backend().list(layout::PACKS)?, before);
        Ok(())
    }

    /// A dry run finds the damaged chunk and changes nothing.
    #[test]
    fn a_dry_run_changes_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (store, _) = store(dir.path())?;
        let key = largest_pack(&store)?;
        let mut bytes = store.backend().get(&key)?;
        let entries = pack::decode_pack(&bytes)?;
        let e = entries[entries.len() / 2];
        bytes[(e.offset + e.stored_len / 2) as usize] ^= 0x10;
        std::fs::write(dir.path().join("store").join(&key), &bytes)?;
        let before = store.backend().list("")?;
        let r = store.repair_index_with(
            &RepairIndexOptions {
                dry_run: true,
                read_data: true,
            },
            WAIT,
        )?;
        assert_eq!(r.damaged_packs.len(), 1);
        assert_eq!(r.damaged_packs[0].dropped.len(), 1);
        assert_eq!(r.damaged_packs[0].dropped[0].chunk, e.id);
        let mut after = store.backend().list("")?;
        after.retain(|o| !o.key.starts_with("locks/"));
        let mut before = before;
        before.retain(|o| !o.key.starts_with("locks/"));
        assert_eq!(after, before);
        Ok(())
    }
}
