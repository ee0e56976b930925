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
//! value of its subtree at its offset ([`crate::capture::tree_hash`]). The value of
//! a (chunk, offset) pair is computed once, while its pack is in memory, and every
//! snapshot's root is merged from those values. A store of many snapshots of one
//! database therefore costs one read of its packs, not one restore per snapshot.
//!
//! Every problem names the object at fault and the snapshots it affects.

use crate::backend::BackendError;
use crate::capture::tree_hash::{block_cv, root_from_blocks};
use crate::chunk_index::{ChunkIndex, Location};
use crate::codec::{self, Decoders};
use crate::format::index::IndexBody;
use crate::format::pack::PackEntry;
use crate::format::pagemap::{reference_seq, PageMap};
use crate::select::{self, SnapshotSelector};
use crate::store::{check_lists_named, Snapshot};
use crate::types::{ChunkId, ChunkRef, Id, SnapshotId};
use crate::{layout, restore, Error, Result, Store};
use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
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

/// One thing wrong: the object at fault and the snapshots it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The store object (`packs/ab/ab…`, `snapshots/…`), or `chunk <id>` for a
    /// chunk no index object locates.
    pub object: String,
    pub detail: String,
    pub snapshots: BTreeSet<SnapshotId>,
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
    fn add(&mut self, object: String, detail: String) -> usize {
        if let Some(&i) = self.by_object.get(&object) {
            return i;
        }
        self.list.push(Problem {
            object: object.clone(),
            detail,
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
}

/// A pack's decoded header and trailer.
struct PackMeta {
    dict_prefix: Option<[u8; 16]>,
    entries: HashMap<ChunkId, PackEntry>,
}

/// What reading one pack found.
#[derive(Default)]
struct PackResult {
    pack_problem: Option<String>,
    bad_chunks: Vec<(ChunkId, String)>,
    cvs: Vec<((ChunkId, u64), ChainingValue)>,
    chunks_read: u64,
    bytes_read: u64,
}

/// State of one verify run.
struct Verifier<'a> {
    store: &'a Store,
    problems: Problems,
    index: ChunkIndex,
    /// Problem of each pack with one (missing, wrong length, damaged).
    bad_packs: HashMap<Id, usize>,
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
            let i = v.problems.add(d.key.clone(), detail(&d.error));
            if let Some(id) = layout::id_of(&d.key) {
                v.problems.affects(i, id);
                v.broken.insert(id);
            }
        }
        report.snapshots = snaps.len() as u64;
        let selected = select_snapshots(&snaps, &damaged, opts)?;
        report.snapshots_checked = selected.len() as u64;

        // Dictionaries, packs (header, footer, trailer) and index objects.
        let dict_keys = keys(layout::DICTS);
        report.dicts = dict_keys.len() as u64;
        for (key, id) in &dict_keys {
            if let Err(e) = codec::load_dict(self.backend().as_ref(), id) {
                v.problems.add(key.clone(), detail(&e));
            }
        }
        let pack_keys = keys(layout::PACKS);
        report.packs = pack_keys.len() as u64;
        let metas: Vec<(Id, std::result::Result<PackMeta, String>)> = pack_keys
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
                    let i = v.problems.add(layout::pack(&id), e);
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
                    v.problems.add(key.clone(), detail(&e));
                    v.index.mark_damaged(*id, detail(&e));
                    continue;
                }
            };
            v.check_index_against_packs(key, &body, &sizes, &pack_meta);
            indexed_packs.extend(body.packs.iter().map(|p| p.id));
            // Located as a restore locates them: in packs present with their length
            // (a pack with a damaged header or trailer still serves its chunks).
            v.index.add(*id, &body, |p, len| {
                sizes.get(&layout::pack(p)) == Some(&len)
            });
        }
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
            let cvs = read.cvs;
            for s in &selected {
                let Some(list) = v.resolve(s) else { continue };
                let mut ok = true;
                for c in &list {
                    if let ChunkRef::Stored(id) = c {
                        if let Some(&i) = read.bad_chunks.get(id) {
                            v.problems.affects(i, s.id);
                            v.broken.insert(s.id);
                            ok = false;
                        }
                        ok &= v.index.contains(id);
                    }
                }
                if !ok {
                    continue;
                }
                let checked = if by_tree(s) {
                    v.check_image_by_tree(s, &list, &cvs)
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
    let of_name: Vec<Snapshot> = snaps
        .iter()
        .filter(|s| opts.name.as_ref().is_none_or(|n| &s.manifest.name == n))
        .cloned()
        .collect();
    if opts.snapshots.is_empty() {
        return Ok(of_name);
    }
    let mut out: Vec<Snapshot> = Vec::new();
    for sel in &opts.snapshots {
        let sel = if sel == "latest" {
            SnapshotSelector::Latest {
                name: opts.name.clone(),
                at: None,
            }
        } else {
            SnapshotSelector::Id(sel.clone())
        };
        match select::select(&of_name, &sel) {
            Ok(s) => {
                if !out.iter().any(|o| o.id == s.id) {
                    out.push(s.clone());
                }
            }
            Err(e) => {
                let SnapshotSelector::Id(p) = &sel else {
                    return Err(e);
                };
                let p = p.to_ascii_lowercase();
                let is_damaged = damaged
                    .iter()
                    .any(|d| layout::id_of(&d.key).is_some_and(|id| id.to_hex().starts_with(&p)));
                if !is_damaged {
                    return Err(e);
                }
            }
        }
    }
    Ok(out)
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
        e => e.to_string(),
    }
}

/// Reads and decodes a pack's header, footer and trailer.
fn read_pack_meta(store: &Store, key: &str, len: u64) -> std::result::Result<PackMeta, String> {
    let (dict_prefix, entries) = crate::repair::read_trailer(store, key, len)?;
    Ok(PackMeta {
        dict_prefix,
        entries: entries.into_iter().map(|e| (e.id, e)).collect(),
    })
}

/// What `--read-data` found: damaged chunks (with their problem) and the chaining
/// value of every (chunk, offset) pair the selected snapshots use.
struct DataRead {
    bad_chunks: HashMap<ChunkId, usize>,
    cvs: HashMap<(ChunkId, u64), ChainingValue>,
}

impl Verifier<'_> {
    /// An index object must agree with the packs it names: each exists, has the
    /// recorded length and dictionary, and holds each chunk where the index says.
    fn check_index_against_packs(
        &mut self,
        key: &str,
        body: &IndexBody,
        sizes: &HashMap<String, u64>,
        metas: &HashMap<Id, PackMeta>,
    ) {
        for p in &body.packs {
            let pkey = layout::pack(&p.id);
            match sizes.get(&pkey) {
                None => {
                    let i = self
                        .problems
                        .add(pkey, format!("missing from the store ({key} names it)"));
                    self.bad_packs.insert(p.id, i);
                }
                Some(&len) if len != p.len => {
                    let i = self.problems.add(
                        pkey,
                        format!(
                            "is {len} bytes, {key} says {} (truncated or damaged)",
                            p.len
                        ),
                    );
                    self.bad_packs.insert(p.id, i);
                }
                Some(_) => {
                    let Some(meta) = metas.get(&p.id) else {
                        continue;
                    };
                    let want = p.dict.map(|d| {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&d.0[..16]);
                        a
                    });
                    if meta.dict_prefix != want {
                        self.problems.add(
                            key.to_string(),
                            format!(
                                "names a different dictionary for {pkey} than the pack's header"
                            ),
                        );
                    }
                }
            }
        }
        for e in &body.entries {
            let Some(p) = body.packs.get(e.pack as usize) else {
                continue; // decode bounds pack positions
            };
            let Some(meta) = metas.get(&p.id) else {
                continue;
            };
            if meta.entries.get(&e.entry.id) != Some(&e.entry) {
                self.problems.add(
                    key.to_string(),
                    format!(
                        "places chunk {} in {} where the pack's trailer does not",
                        e.entry.id.to_hex(),
                        layout::pack(&p.id)
                    ),
                );
                return;
            }
        }
    }

    /// A map, read once per run; a map that cannot be read becomes a problem.
    fn map(&mut self, id: &Id) -> std::result::Result<&PageMap, usize> {
        if !self.maps.contains_key(id) {
            let m = self.store.load_map(id).map_err(|e| {
                let key = layout::map(id);
                let detail = match e {
                    Error::Backend(BackendError::NotFound { .. }) => {
                        "missing from the store".to_string()
                    }
                    e => detail(&e),
                };
                self.problems.add(key, detail)
            });
            self.maps.insert(*id, m);
        }
        match &self.maps[id] {
            Ok(m) => Ok(m),
            Err(i) => Err(*i),
        }
    }

    /// The chunk list of a snapshot; on failure records the problem and returns None.
    fn resolve(&mut self, s: &Snapshot) -> Option<Vec<ChunkRef>> {
        match self.try_resolve(s) {
            Ok(l) => Some(l),
            Err(i) => {
                self.problems.affects(i, s.id);
                self.broken.insert(s.id);
                None
            }
        }
    }

    fn try_resolve(&mut self, s: &Snapshot) -> std::result::Result<Vec<ChunkRef>, usize> {
        // The chain down to a full map or a list already resolved.
        let mut chain: Vec<Id> = Vec::new();
        let mut next = Some(s.manifest.map);
        let mut child_seq: Option<u64> = None;
        while let Some(mid) = next {
            if self.lists.contains_key(&mid) {
                break;
            }
            let m = self.map(&mid)?;
            if let Some(cs) = child_seq {
                if m.seq != reference_seq(cs) {
                    let detail = format!(
                        "page map has sequence number {} where {} was expected",
                        m.seq,
                        reference_seq(cs)
                    );
                    return Err(self.problems.add(layout::map(&mid), detail));
                }
            }
            if chain.len() > 64 {
                let detail = "page-map chain is longer than any valid one (a loop?)".into();
                return Err(self.problems.add(layout::map(&mid), detail));
            }
            child_seq = Some(m.seq);
            next = m.reference;
            chain.push(mid);
        }
        let mut list = match next {
            Some(cached) => self.lists[&cached].clone(),
            None => Vec::new(),
        };
        if self.lists.len() > 32 {
            self.lists.clear();
        }
        for mid in chain.iter().rev() {
            // Loaded (and found readable) by the walk above.
            let Some(Ok(m)) = self.maps.get(mid) else {
                let detail = "page map was not loaded".to_string();
                return Err(self.problems.add(layout::map(mid), detail));
            };
            if let Err(e) = check_lists_named(&self.index, mid, m) {
                let named = m.lists.iter().chain(m.new_list.iter()).copied();
                // Charge the index object when it is the one at fault.
                let culprit = named
                    .into_iter()
                    .find(|l| !self.index.has_list(l))
                    .map(|l| layout::index(&l));
                let i = match culprit.and_then(|k| self.problems.find(&k).map(|i| (k, i))) {
                    Some((_, i)) => i,
                    None => self.problems.add(layout::map(mid), detail(&e)),
                };
                return Err(i);
            }
            let applied = m.apply(&list, |l, o| self.index.lookup(l, o));
            list = match applied {
                Ok(l) => l,
                Err(e) => return Err(self.problems.add(layout::map(mid), e.to_string())),
            };
            self.lists.insert(*mid, list.clone());
        }
        if list.len() as u64 != s.manifest.chunk_count {
            let detail = format!(
                "its page map has {} chunks, the manifest says {}",
                list.len(),
                s.manifest.chunk_count
            );
            return Err(self.problems.add(layout::snapshot(&s.id), detail));
        }
        Ok(list)
    }

    /// A referenced chunk must be located in a pack that is present and sound.
    fn check_located(&mut self, snap: SnapshotId, id: &ChunkId) {
        match self.index.get(id) {
            Some(loc) => {
                let pack = self.index.pack_id(loc.pack);
                if let Some(&i) = self.bad_packs.get(&pack) {
                    self.problems.affects(i, snap);
                }
            }
            None => {
                let i = match self.index.lost_pack(id) {
                    Some(pack) => match self.bad_packs.get(&pack) {
                        Some(&i) => i,
                        None => self
                            .problems
                            .add(layout::pack(&pack), "missing from the store".into()),
                    },
                    None => self.problems.add(
                        format!("chunk {}", id.to_hex()),
                        "no index object locates it (missing from the store)".into(),
                    ),
                };
                self.problems.affects(i, snap);
                self.broken.insert(snap);
            }
        }
    }

    /// Reads the packs holding referenced chunks (those `subset` selects), in
    /// parallel, one whole pack at a time.
    fn read_data(
        &mut self,
        subset: DataSubset,
        referenced: &HashSet<ChunkId>,
        offsets: &HashMap<ChunkId, Vec<u64>>,
        report: &mut VerifyReport,
    ) -> DataRead {
        let mut by_pack: HashMap<u32, Vec<(ChunkId, Location)>> = HashMap::new();
        for (id, loc) in self.index.iter() {
            if referenced.contains(id) {
                by_pack.entry(loc.pack).or_default().push((*id, *loc));
            }
        }
        let seed = *blake3::hash(format!("{:?}", Instant::now()).as_bytes()).as_bytes();
        let mut packs: Vec<(Id, Vec<(ChunkId, Location)>)> = by_pack
            .into_iter()
            .map(|(pos, items)| (self.index.pack_id(pos), items))
            .filter(|(id, _)| subset.selects(id, &seed))
            .collect();
        packs.sort_by_key(|(id, _)| *id);
        let index = &self.index;
        let store = self.store;
        let results: Vec<(Id, PackResult)> = packs
            .par_iter()
            .map(|(pack, items)| {
                let dict = items.first().and_then(|(_, l)| index.pack_dict(l.pack));
                (*pack, read_pack(store, pack, dict, items, offsets))
            })
            .collect();
        let mut out = DataRead {
            bad_chunks: HashMap::new(),
            cvs: HashMap::new(),
        };
        for (pack, r) in results {
            report.packs_read += 1;
            report.chunks_read += r.chunks_read;
            report.bytes_read += r.bytes_read;
            let key = layout::pack(&pack);
            if let Some(p) = r.pack_problem {
                let i = self.problems.add(key.clone(), p);
                self.bad_packs.insert(pack, i);
            }
            for (chunk, why) in r.bad_chunks {
                let i = self
                    .problems
                    .add(format!("{key} chunk {}", chunk.to_hex()), why);
                out.bad_chunks.insert(chunk, i);
            }
            out.cvs.extend(r.cvs);
        }
        out
    }

    /// Merges a snapshot's root hash from chunk chaining values; returns whether
    /// the check could be made (every chunk's value is known).
    fn check_image_by_tree(
        &mut self,
        s: &Snapshot,
        list: &[ChunkRef],
        cvs: &HashMap<(ChunkId, u64), ChainingValue>,
    ) -> bool {
        let m = &s.manifest;
        let len = m.chunk_len();
        let mut blocks = Vec::with_capacity(list.len());
        for (pos, c) in list.iter().enumerate() {
            let off = pos as u64 * len;
            match c {
                ChunkRef::Zero => {
                    let n = (m.image_len - off).min(len) as usize;
                    blocks.push(block_cv(off, &vec![0u8; n]));
                }
                ChunkRef::Stored(id) => match cvs.get(&(*id, off)) {
                    Some(cv) => blocks.push(*cv),
                    None => return false, // its pack is outside the subset read
                },
            }
        }
        let root = root_from_blocks(&blocks, len, m.image_len);
        if *root.as_bytes() != m.image_hash {
            self.image_mismatch(s, root.as_bytes());
        }
        true
    }

    /// For images the tree cannot be split at chunk boundaries (chunks under 1 KiB,
    /// one-chunk images): reassemble the image into a hasher, as a restore would.
    fn check_image_by_reading(&mut self, s: &Snapshot, list: &[ChunkRef]) -> bool {
        let mut sink = std::io::sink();
        match restore::write_image(
            self.store.backend().as_ref(),
            &self.index,
            s,
            list,
            &mut sink,
        ) {
            Ok(_) => {}
            Err(Error::ImageMismatch { actual, .. }) => {
                let detail = format!(
                    "reassembled image hash {actual} does not match the recorded {}",
                    crate::types::to_hex(&s.manifest.image_hash)
                );
                let i = self.problems.add(layout::snapshot(&s.id), detail);
                self.problems.affects(i, s.id);
                self.broken.insert(s.id);
            }
            Err(e) => {
                let i = self.problems.add(layout::snapshot(&s.id), detail(&e));
                self.problems.affects(i, s.id);
                self.broken.insert(s.id);
            }
        }
        true
    }

    fn image_mismatch(&mut self, s: &Snapshot, actual: &[u8; 32]) {
        let detail = format!(
            "its chunks hash to {}, not the recorded image hash {} (a page map or index object names the wrong chunks)",
            crate::types::to_hex(actual),
            crate::types::to_hex(&s.manifest.image_hash)
        );
        let i = self.problems.add(layout::snapshot(&s.id), detail);
        self.problems.affects(i, s.id);
        self.broken.insert(s.id);
    }

    fn problems_snapshots(&self) -> BTreeSet<SnapshotId> {
        self.problems
            .list
            .iter()
            .flat_map(|p| p.snapshots.iter().copied())
            .collect()
    }

    /// Restores `s` into a temporary directory and runs `PRAGMA integrity_check`.
    /// Damage becomes a problem; failing to write the temporary file is an error.
    fn restore_check(&mut self, s: &Snapshot, dir: Option<&Path>) -> Result<()> {
        let tmp = match dir {
            Some(d) => tempfile::Builder::new()
                .prefix("pagesnap-verify-")
                .tempdir_in(d),
            None => tempfile::Builder::new()
                .prefix("pagesnap-verify-")
                .tempdir(),
        }
        .map_err(|e| Error::Io {
            path: dir
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir),
            source: e,
        })?;
        let out = tmp.path().join("restore.db");
        let key = layout::snapshot(&s.id);
        match self.store.restore_to_path(s, &out, false) {
            Ok(_) => {}
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => {
                let i = self.problems.add(key, format!("restore failed: {e}"));
                self.problems.affects(i, s.id);
                self.broken.insert(s.id);
                return Ok(());
            }
        }
        if let Err(detail) = integrity_check(&out) {
            let i = self
                .problems
                .add(key, format!("restored image fails PRAGMA integrity_check: {detail} (the image matches its recorded hash: the database was already damaged when it was captured)"));
            // Not broken: it is a faithful copy, possibly the best one there is.
            self.problems.affects(i, s.id);
        }
        Ok(())
    }
}

/// Reads one whole pack and checks it against its name and every listed chunk
/// against its id; computes the chaining values at the offsets each chunk is used.
fn read_pack(
    store: &Store,
    pack: &Id,
    dict: Option<Id>,
    items: &[(ChunkId, Location)],
    offsets: &HashMap<ChunkId, Vec<u64>>,
) -> PackResult {
    let mut r = PackResult::default();
    let key = layout::pack(pack);
    let bytes = match store.backend().get(&key) {
        Ok(b) => b,
        Err(e) => {
            r.pack_problem = Some(format!("cannot be read: {e}"));
            return r;
        }
    };
    r.bytes_read = bytes.len() as u64;
    if Id::of_object(&bytes) != *pack {
        r.pack_problem = Some("content does not match its name (the pack is damaged)".into());
    }
    let mut decoders = match Decoders::new() {
        Ok(d) => d,
        Err(e) => {
            r.pack_problem = Some(e.to_string());
            return r;
        }
    };
    let dict_error = dict.and_then(|d| {
        decoders
            .ensure_dict(store.backend().as_ref(), &d)
            .err()
            .map(|e| format!("its pack's dictionary cannot be read: {e}"))
    });
    for (id, loc) in items {
        r.chunks_read += 1;
        let start = loc.entry.offset as usize;
        let Some(stored) = start
            .checked_add(loc.entry.stored_len as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            r.bad_chunks
                .push((*id, "its location lies outside the pack".into()));
            continue;
        };
        let raw = match (
            &dict_error,
            decoders.decode(&loc.pack_entry(*id), stored, dict.as_ref()),
        ) {
            (_, Ok(raw)) => raw,
            (Some(d), Err(_)) => {
                r.bad_chunks.push((*id, d.clone()));
                continue;
            }
            (None, Err(e)) => {
                r.bad_chunks.push((*id, format!("cannot be decoded: {e}")));
                continue;
            }
        };
        if Id::of_chunk(&raw) != *id {
            r.bad_chunks
                .push((*id, "content does not match its id (damaged)".into()));
            continue;
        }
        for &off in offsets.get(id).map(Vec::as_slice).unwrap_or(&[]) {
            r.cvs.push(((*id, off), block_cv(off, &raw)));
        }
    }
    r
}

/// `PRAGMA integrity_check` of a database file, opened immutable (no journal,
/// WAL or lock files are created beside it).
pub(crate) fn integrity_check(path: &Path) -> std::result::Result<(), String> {
    use rusqlite::{Connection, OpenFlags};
    let escaped = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let uri = format!("file:{escaped}?immutable=1");
    let conn = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(rows.join("; "))
    }
}
