//! `verify`: proves what the store holds restores, trusting nothing it reads.
//!
//! The structural pass (always) decodes every manifest, index object, dictionary
//! and pack header/footer/trailer, checks that index objects agree with the packs
//! they name (which exist, with the recorded length), resolves every selected
//! snapshot's page-map chain and checks that each chunk it references is located.
//!
//! `--read-data` then reads each pack holding referenced chunks once (all packs, or
//! a subset), checks the pack against its name, decodes every referenced chunk and
//! checks its blake3. Image hashes are checked without reassembling images: the
//! image hash is plain blake3, a tree hash, so each chunk contributes the chaining
//! value of its subtree at its offset ([`crate::digest::tree_hash`]). The value of
//! a (chunk, offset) pair is computed once, while its pack is in memory, and every
//! snapshot's root is merged from those values. A store of many snapshots of one
//! database therefore costs one read of its packs, not one restore per snapshot.
//!
//! Every problem names the object at fault and the snapshots it affects, and says
//! what it is: damage (bytes read and found wrong, or an object that is gone), or
//! an object that could not be read (a permission, I/O or network error, a newer
//! format): nothing is known of its bytes, so the snapshots that need it are "not
//! checked", never "broken", and `repair` never acts on it.

mod data;
mod structure;

use crate::codec;
use crate::format::index::IndexBody;
use crate::format::pack::PackEntry;
use crate::format::pagemap::PageMap;
use crate::index::chunk_index::ChunkIndex;
use crate::store::packs::{read_trailer, TrailerError};
use crate::store::select;
use crate::store::Snapshot;
use crate::types::{ChunkId, ChunkRef, Id, SnapshotId};
use crate::{layout, Error, Result, Store};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which packs `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    All,
    /// About this percentage of the packs, chosen at random each run.
    Percent(f64),
    /// Part `n` (1-based) of `of` fixed parts, chosen by pack id: running
    /// 1/5 … 5/5 on successive days reads every pack once.
    Part {
        n: u32,
        of: u32,
    },
}

impl DataSubset {
    /// Parses `PERCENT%` (0 < p ≤ 100) or `N/M` (1 ≤ N ≤ M).
    pub fn parse(s: &str) -> Result<DataSubset> {
        let bad = |detail: &str| Error::Invalid {
            what: "data subset",
            detail: format!("{s:?}: {detail}; give a percentage such as 10% or a part such as 2/5"),
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("not a number"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(DataSubset::Percent(p));
        }
        if let Some((n, of)) = s.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad("not a number"))?;
            let of: u32 = of.trim().parse().map_err(|_| bad("not a number"))?;
            if n == 0 || of == 0 || n > of {
                return Err(bad("N/M needs 1 ≤ N ≤ M"));
            }
            return Ok(DataSubset::Part { n, of });
        }
        Err(bad("unknown form"))
    }

    fn selects(&self, pack: &Id, seed: &[u8; 32]) -> bool {
        match *self {
            DataSubset::All => true,
            DataSubset::Part { n, of } => {
                let v = u32::from_le_bytes([pack.0[0], pack.0[1], pack.0[2], pack.0[3]]);
                v % of == n - 1
            }
            DataSubset::Percent(p) => {
                let mut h = blake3::Hasher::new();
                h.update(seed);
                h.update(&pack.0);
                let b = h.finalize();
                let v = u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]));
                (v as f64) < p / 100.0 * u64::MAX as f64
            }
        }
    }
}

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Read chunk data (of all packs or a subset) and check chunk and image hashes.
    pub read_data: Option<DataSubset>,
    /// Restore snapshots into `restore_dir` (default: the system's temporary
    /// directory) and run `PRAGMA integrity_check` on them: the ones named, or the
    /// newest of each database.
    pub restore_check: bool,
    pub restore_dir: Option<PathBuf>,
    /// Only snapshots of this database.
    pub name: Option<String>,
    /// Only these snapshots (ids or unique prefixes, or `latest`); empty: all.
    pub snapshots: Vec<String>,
}

/// What kind of problem an object has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Bytes read and found wrong, or an object that is gone.
    Damage,
    /// The object could not be read (permission, I/O or network error, or a
    /// format newer than this build): nothing is known of its bytes.
    Unreadable,
}

/// One thing wrong: the object at fault and the snapshots it breaks (or, when it
/// could not be read, the snapshots it leaves unchecked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The store object (`packs/ab/ab…`, `snapshots/…`), or `chunk <id>` for a
    /// chunk no index object locates.
    pub object: String,
    pub detail: String,
    pub kind: ProblemKind,
    pub snapshots: BTreeSet<SnapshotId>,
}

impl Problem {
    pub fn is_damage(&self) -> bool {
        self.kind == ProblemKind::Damage
    }
}

/// What `verify` checked and found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Readable snapshots in the store, and how many of them were checked.
    pub snapshots: u64,
    pub snapshots_checked: u64,
    pub index_objects: u64,
    pub packs: u64,
    pub dicts: u64,
    pub maps: u64,
    /// Distinct chunks the checked snapshots reference.
    pub chunks_referenced: u64,
    /// With `--read-data`: packs read, chunks decoded and checked, bytes read.
    pub packs_read: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    /// Snapshots whose image hash was checked.
    pub images_checked: u64,
    /// Snapshots restored and checked with `PRAGMA integrity_check`.
    pub restores_checked: u64,
    /// Packs no index object names (left by an interrupted backup; `prune` removes them).
    pub unindexed_packs: u64,
    pub problems: Vec<Problem>,
    /// Snapshots that certainly cannot be restored (a subset of those the problems
    /// affect: a damaged pack trailer, say, puts snapshots at risk without breaking them).
    pub broken: BTreeSet<SnapshotId>,
    pub duration: Duration,
}

impl VerifyReport {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// Damage was found (bytes read and found wrong, or objects gone).
    pub fn damaged(&self) -> bool {
        self.problems.iter().any(Problem::is_damage)
    }

    /// Objects that could not be read: what depends on them was not checked.
    pub fn unreadable(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.is_damage())
    }

    /// Snapshots affected by at least one problem.
    pub fn damaged_snapshots(&self) -> BTreeSet<SnapshotId> {
        self.problems
            .iter()
            .flat_map(|p| p.snapshots.iter().copied())
            .collect()
    }
}

/// Problems, one per object, each collecting the snapshots it affects.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    by_object: HashMap<String, usize>,
}

impl Problems {
    /// Damage of `object` (the first problem of an object is the one kept).
    fn add(&mut self, object: String, detail: String) -> usize {
        self.add_kind(object, ProblemKind::Damage, detail)
    }

    /// A problem of `object` from the error reading it: damage or unreadable.
    fn add_error(&mut self, object: String, e: &Error) -> usize {
        let kind = match e.is_damage() {
            true => ProblemKind::Damage,
            false => ProblemKind::Unreadable,
        };
        self.add_kind(object, kind, detail(e))
    }

    fn add_kind(&mut self, object: String, kind: ProblemKind, detail: String) -> usize {
        if let Some(&i) = self.by_object.get(&object) {
            return i;
        }
        self.list.push(Problem {
            object: object.clone(),
            detail,
            kind,
            snapshots: BTreeSet::new(),
        });
        self.by_object.insert(object, self.list.len() - 1);
        self.list.len() - 1
    }

    fn affects(&mut self, problem: usize, snapshot: SnapshotId) {
        self.list[problem].snapshots.insert(snapshot);
    }

    fn find(&self, object: &str) -> Option<usize> {
        self.by_object.get(object).copied()
    }

    fn is_damage(&self, problem: usize) -> bool {
        self.list[problem].is_damage()
    }
}

/// A pack's decoded header and trailer.
struct PackMeta {
    dict_prefix: Option<[u8; 16]>,
    entries: HashMap<ChunkId, PackEntry>,
}

/// State of one verify run.
struct Verifier<'a> {
    store: &'a Store,
    problems: Problems,
    index: ChunkIndex,
    /// Problem of each pack with one (missing, wrong length, damaged, unreadable).
    bad_packs: HashMap<Id, usize>,
    /// Problem of each dictionary with one (missing, damaged, unreadable).
    bad_dicts: HashMap<Id, usize>,
    /// The first index object that could not be read: a chunk located by no
    /// readable one may be located by it.
    unreadable_index: Option<usize>,
    broken: BTreeSet<SnapshotId>,
    maps: HashMap<Id, std::result::Result<PageMap, usize>>,
    /// Resolved lists of recently used maps (chains share their lower maps).
    lists: HashMap<Id, Vec<ChunkRef>>,
}

impl Store {
    /// Checks the store; see the module documentation. Errors are returned only
    /// when the check itself cannot run (the store cannot be listed, the temporary
    /// directory is full, a snapshot named does not exist); damage is in the report.
    pub fn verify(&self, opts: &VerifyOptions) -> Result<VerifyReport> {
        let started = Instant::now();
        let _lock = self.read_lock("verify")?;
        let mut report = VerifyReport::default();
        let mut v = Verifier {
            store: self,
            problems: Problems::default(),
            index: ChunkIndex::default(),
            bad_packs: HashMap::new(),
            bad_dicts: HashMap::new(),
            unreadable_index: None,
            broken: BTreeSet::new(),
            maps: HashMap::new(),
            lists: HashMap::new(),
        };
        let sizes: HashMap<String, u64> = self
            .backend()
            .list("")?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let keys = |prefix: &str| {
            let mut k: Vec<(String, Id)> = sizes
                .keys()
                .filter(|k| k.starts_with(prefix))
                .filter_map(|k| Some((k.clone(), layout::id_of(k)?)))
                .collect();
            k.sort();
            k
        };

        // Manifests.
        let (snaps, damaged) = self.snapshots_with_damage()?;
        for d in &damaged {
            let i = v.problems.add_error(d.key.clone(), &d.error);
            if let Some(id) = layout::id_of(&d.key) {
                v.breaks(i, id);
            }
        }
        report.snapshots = snaps.len() as u64;
        let selected = select_snapshots(&snaps, &damaged, opts)?;
        report.snapshots_checked = selected.len() as u64;

        // Dictionaries, packs (header, footer, trailer) and index objects.
        let dict_keys = keys(layout::DICTS);
        report.dicts = dict_keys.len() as u64;
        let dict_ids: HashSet<Id> = dict_keys.iter().map(|(_, id)| *id).collect();
        for (key, id) in &dict_keys {
            if let Err(e) = codec::load_dict(self.backend().as_ref(), id) {
                let i = v.problems.add_error(key.clone(), &e);
                v.bad_dicts.insert(*id, i);
            }
        }
        let pack_keys = keys(layout::PACKS);
        report.packs = pack_keys.len() as u64;
        let metas: Vec<(Id, std::result::Result<PackMeta, TrailerError>)> = pack_keys
            .par_iter()
            .map(|(key, id)| (*id, read_pack_meta(self, key, sizes[key])))
            .collect();
        let mut pack_meta = HashMap::new();
        for (id, m) in metas {
            match m {
                Ok(m) => {
                    pack_meta.insert(id, m);
                }
                Err(e) => {
                    let i = v.problems.add_kind(layout::pack(&id), e.kind(), e.detail);
                    v.bad_packs.insert(id, i);
                }
            }
        }
        let index_keys = keys(layout::INDEX);
        report.index_objects = index_keys.len() as u64;
        let mut indexed_packs = HashSet::new();
        for (key, id) in &index_keys {
            let body = self
                .get_verified(key, id)
                .and_then(|b| IndexBody::decode(&b).map_err(self.format_err(key)));
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    let i = v.problems.add_error(key.clone(), &e);
                    if !e.is_damage() {
                        v.unreadable_index.get_or_insert(i);
                    }
                    v.index.mark_damaged(*id, detail(&e));
                    continue;
                }
            };
            v.check_index_against_packs(key, &body, &sizes, &pack_meta);
            v.check_dicts_present(&body, &dict_ids);
            indexed_packs.extend(body.packs.iter().map(|p| p.id));
            // Located as a restore locates them: in packs present with their length
            // (a pack with a damaged header or trailer still serves its chunks).
            v.index.add(*id, &body, |p, len| {
                sizes.get(&layout::pack(p)) == Some(&len)
            });
        }
        v.index.seal();
        report.unindexed_packs = pack_keys
            .iter()
            .filter(|(_, id)| !indexed_packs.contains(id))
            .count() as u64;

        // Every selected snapshot: its maps resolve and its chunks are located.
        let mut referenced: HashSet<ChunkId> = HashSet::new();
        let mut offsets: HashMap<ChunkId, Vec<u64>> = HashMap::new();
        let mut pairs: HashSet<(ChunkId, u64)> = HashSet::new();
        let by_tree = |s: &Snapshot| {
            let len = s.manifest.chunk_len();
            len >= 1024 && len.is_power_of_two() && s.manifest.image_len > len
        };
        for s in &selected {
            let Some(list) = v.resolve(s) else { continue };
            let len = s.manifest.chunk_len();
            for (pos, c) in list.iter().enumerate() {
                let ChunkRef::Stored(id) = c else { continue };
                referenced.insert(*id);
                v.check_located(s.id, id);
                if opts.read_data.is_some() && by_tree(s) {
                    let off = pos as u64 * len;
                    if pairs.insert((*id, off)) {
                        offsets.entry(*id).or_default().push(off);
                    }
                }
            }
        }
        drop(pairs);
        report.maps = v.maps.len() as u64;
        report.chunks_referenced = referenced.len() as u64;

        if let Some(subset) = opts.read_data {
            let read = v.read_data(subset, &referenced, &offsets, &mut report);
            let (cvs, digests) = (read.cvs, read.digests);
            for s in &selected {
                let Some(list) = v.resolve(s) else { continue };
                let mut ok = true;
                for c in &list {
                    if let ChunkRef::Stored(id) = c {
                        if let Some(&i) = read.bad_chunks.get(id) {
                            v.breaks(i, s.id);
                            ok = false;
                        }
                        ok &= v.index.contains(id);
                    }
                }
                if !ok {
                    continue;
                }
                let checked = if by_tree(s) {
                    v.check_image_by_tree(s, &list, &cvs, &digests)
                } else {
                    v.check_image_by_reading(s, &list)
                };
                report.images_checked += checked as u64;
            }
        }

        if opts.restore_check {
            let damaged = v.problems_snapshots();
            let targets = restore_targets(&selected, opts);
            for s in targets {
                if damaged.contains(&s.id) {
                    continue; // known broken: the problems above say why
                }
                v.restore_check(s, opts.restore_dir.as_deref())?;
                report.restores_checked += 1;
            }
        }

        report.problems = v.problems.list;
        report.broken = v.broken;
        report.duration = started.elapsed();
        Ok(report)
    }
}

/// The snapshots to check: all, those of `--name`, or those named (damaged
/// manifests named are already problems; naming an unknown one is an error).
fn select_snapshots(
    snaps: &[Snapshot],
    damaged: &[crate::DamagedSnapshot],
    opts: &VerifyOptions,
) -> Result<Vec<Snapshot>> {
    select::select_many(snaps, opts.name.as_deref(), &opts.snapshots, |p| {
        let p = p.to_ascii_lowercase();
        damaged
            .iter()
            .any(|d| layout::id_of(&d.key).is_some_and(|id| id.to_hex().starts_with(&p)))
    })
}

/// Which snapshots `--restore-check` restores: the ones named, else the newest
/// of each database (restoring every snapshot would take as long as restoring
/// each; `--read-data` already proves every image hash).
fn restore_targets<'s>(selected: &'s [Snapshot], opts: &VerifyOptions) -> Vec<&'s Snapshot> {
    if !opts.snapshots.is_empty() {
        return selected.iter().collect();
    }
    let mut newest: HashMap<&str, &Snapshot> = HashMap::new();
    for s in selected {
        let e = newest.entry(s.manifest.name.as_str()).or_insert(s);
        if (s.time(), s.id) > (e.time(), e.id) {
            *e = s;
        }
    }
    let mut v: Vec<&Snapshot> = newest.into_values().collect();
    v.sort_by_key(|s| (s.time(), s.id));
    v
}

/// An error's message without the object name the problem already carries.
fn detail(e: &Error) -> String {
    match e {
        Error::Format { source, .. } => source.to_string(),
        // Its message without the map's name, which is the problem's object.
        Error::IndexUnusable { map, .. } => {
            let msg = e.to_string();
            match msg
                .strip_prefix(map.as_str())
                .and_then(|m| m.strip_prefix(": "))
            {
                Some(rest) => rest.to_string(),
                None => msg,
            }
        }
        e => e.to_string(),
    }
}

/// Reads and decodes a pack's header, footer and trailer.
fn read_pack_meta(
    store: &Store,
    key: &str,
    len: u64,
) -> std::result::Result<PackMeta, TrailerError> {
    let (dict_prefix, entries) = read_trailer(store, key, len)?;
    Ok(PackMeta {
        dict_prefix,
        entries: entries.into_iter().map(|e| (e.id, e)).collect(),
    })
}

/// How a pack whose trailer could not be had is reported.
impl TrailerError {
    pub(crate) fn kind(&self) -> ProblemKind {
        match self.damage {
            true => ProblemKind::Damage,
            false => ProblemKind::Unreadable,
        }
    }
}
