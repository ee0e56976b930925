//! Forget and prune: removing snapshots, then the data no remaining snapshot needs.
//!
//! Prune reads manifests, page maps and index objects (never chunk data, except the
//! chunks of packs it rewrites) and decides, under an exclusive lock:
//!
//! * **live chunks**: every chunk a remaining snapshot's chunk list contains, and
//!   the bases of live deltas, transitively (from the index objects' base tables);
//! * **packs**: deleted when they hold no live chunk (or no index names them: the
//!   leftovers of a killed backup), rewritten when more than `max_unused` of their
//!   blob bytes are dead (live chunks are copied, checked, into new packs; a delta
//!   as it is, checked with its base, its base-table row carried over), kept
//!   otherwise;
//! * **index objects**: kept when a live page map names their entries (they are the
//!   naming lists of `At`/`New` references) or when they give the location of a live
//!   chunk in a kept pack; the moved chunks get one new index object;
//! * **page maps**: kept when reachable from a remaining manifest through
//!   `reference`; **dictionaries**: kept when a kept pack or a manifest uses them.
//!
//! It writes before it deletes — new packs, then their index, then deletions of
//! packs, index objects, maps and dictionaries — so a kill at any point leaves every
//! remaining snapshot restorable, and the next prune finishes the job.

use super::retention::Policy;
use crate::backend::{BackendError, PutMode};
use crate::codec::{ChunkError, Decoder};
use crate::format::envelope::{self, Kind};
use crate::format::index::{DeltaBase, IndexBody, IndexEntry, PackRef, MAX_DELTA_DEPTH};
use crate::format::pack::{Codec, FOOTER_LEN, HEADER_LEN};
use crate::format::pagemap::PageMap;
use crate::index::cache::Placed;
use crate::index::chunk_index::copy_rank;
use crate::store::bases::Bases;
use crate::store::lock::LockGuard;
use crate::store::pack_sink::PackSink;
use crate::store::{Snapshot, Store};
use crate::types::{ChunkId, ChunkRef, Id, SnapshotId};
use crate::{layout, Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Object key of the saved retention policy.
pub const POLICY: &str = "policy";

/// How prune decides.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Rewrite packs whose dead share of blob bytes exceeds this (0.0..=1.0).
    pub max_unused: f64,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
    /// Plan as if these snapshots were already forgotten (for a dry run of
    /// forget + prune); only allowed with `dry_run`.
    pub assume_forgotten: Vec<SnapshotId>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.10,
            dry_run: false,
            assume_forgotten: Vec::new(),
        }
    }
}

/// What prune did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub live_chunks: u64,
    /// Live chunks no pack holds: damage prune cannot repair (see `verify`).
    pub missing_chunks: u64,
    pub packs_before: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub packs_written: u64,
    pub index_deleted: u64,
    pub maps_deleted: u64,
    pub dicts_deleted: u64,
    /// Bytes of live chunks copied into new packs.
    pub bytes_repacked: u64,
    pub bytes_before: u64,
    /// Bytes deleted minus bytes written.
    pub bytes_freed: u64,
    /// Temporary files of interrupted writes removed.
    pub temp_files_removed: u64,
    pub duration: Duration,
}

/// Everything prune decided, before it acts.
struct Plan {
    report: PruneReport,
    /// Deltas: where every chunk is (bases of moved deltas are read from there).
    placed: HashMap<ChunkId, Placed>,
    /// Deltas: the base-table row of each live delta chosen (its ordinal is
    /// the old object's).
    rows: HashMap<ChunkId, DeltaBase>,
    /// Packs to read live chunks from: pack → (dict, chosen entries in it).
    rewrite: BTreeMap<Id, (Option<Id>, Vec<IndexEntry>)>,
    delete_packs: Vec<Id>,
    delete_index: Vec<Id>,
    delete_maps: Vec<Id>,
    delete_dicts: Vec<Id>,
}

/// The chunk lists of snapshots, resolving shared page-map chains once.
pub(crate) struct Resolver<'a> {
    maps: &'a HashMap<Id, PageMap>,
    lists: &'a HashMap<Id, Vec<ChunkId>>,
    cache: HashMap<Id, Vec<ChunkRef>>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(
        maps: &'a HashMap<Id, PageMap>,
        lists: &'a HashMap<Id, Vec<ChunkId>>,
    ) -> Self {
        Resolver {
            maps,
            lists,
            cache: HashMap::new(),
        }
    }

    pub(crate) fn resolve(&mut self, id: &Id) -> Result<Vec<ChunkRef>> {
        if let Some(l) = self.cache.get(id) {
            return Ok(l.clone());
        }
        let mut chain = Vec::new();
        let mut next = Some(*id);
        while let Some(mid) = next {
            if self.cache.contains_key(&mid) {
                break;
            }
            let m = self.maps.get(&mid).ok_or_else(|| {
                Error::Internal(format!("page map {} was not loaded", mid.short()))
            })?;
            chain.push(mid);
            next = m.reference;
        }
        let mut list = match next {
            Some(cached) => self.cache[&cached].clone(),
            None => Vec::new(),
        };
        if self.cache.len() > 32 {
            self.cache.clear();
        }
        for mid in chain.iter().rev() {
            let m = &self.maps[mid];
            list = m
                .apply(&list, |l, o| self.lists.get(l)?.get(o as usize).copied())
                .map_err(|source| Error::Format {
                    object: layout::map(mid),
                    source,
                })?;
            self.cache.insert(*mid, list.clone());
        }
        Ok(list)
    }
}

/// The store's metadata, read once.
pub(crate) struct Catalog {
    pub snapshots: Vec<Snapshot>,
    pub index: Vec<(Id, IndexBody)>,
    pub lists: HashMap<Id, Vec<ChunkId>>,
    pub maps: HashMap<Id, PageMap>,
    /// Object sizes by key.
    pub sizes: HashMap<String, u64>,
}

impl Store {
    /// Reads every manifest, every index object and every page map the manifests
    /// reach. Refuses when a manifest, map or index object cannot be read: without
    /// it, what is live is unknown, and deleting could lose a snapshot.
    pub(crate) fn catalog(&self) -> Result<Catalog> {
        let (snapshots, damaged) = self.snapshots_with_damage()?;
        if let Some(d) = damaged.into_iter().next() {
            return Err(Error::Invalid {
                what: "store for pruning",
                detail: format!(
                    "{}; prune cannot tell what it references, so it deletes nothing (forget or repair it first)",
                    d.error
                ),
            });
        }
        let mut sizes = HashMap::new();
        for o in self.backend().list("")? {
            sizes.insert(o.key, o.size);
        }
        let mut index = Vec::new();
        let mut lists = HashMap::new();
        let mut keys: Vec<&String> = sizes
            .keys()
            .filter(|k| k.starts_with(layout::INDEX))
            .collect();
        keys.sort();
        for key in keys {
            let Some(id) = layout::id_of(key) else {
                continue;
            };
            let bytes = self.get_verified(key, &id)?;
            let body = IndexBody::decode(&bytes).map_err(self.format_err(key))?;
            lists.insert(
                id,
                body.entries.iter().map(|e| e.entry.id).collect::<Vec<_>>(),
            );
            index.push((id, body));
        }
        let mut maps = HashMap::new();
        for s in &snapshots {
            let mut next = Some(s.manifest.map);
            while let Some(mid) = next {
                if maps.contains_key(&mid) {
                    break;
                }
                let m = self.load_map(&mid)?;
                next = m.reference;
                maps.insert(mid, m);
            }
        }
        Ok(Catalog {
            snapshots,
            index,
            lists,
            maps,
            sizes,
        })
    }

    /// Removes the manifests of `ids` (a snapshot exists exactly while its manifest
    /// does); everything they alone used is left for `prune`. Refuses to remove the
    /// last snapshot of a database unless `allow_empty`.
    pub fn forget_snapshots(&self, ids: &[SnapshotId], allow_empty: bool) -> Result<()> {
        self.check_may_delete("forget snapshots")?;
        let lock = self.lock(false, "forget", Duration::from_secs(600))?;
        self.forget_snapshots_locked(ids, allow_empty, &lock)
    }

    /// [`Store::forget_snapshots`] under a lock the caller already holds (`gc`
    /// holds its exclusive lock across forget and prune, so that a gc that cannot
    /// prune forgets nothing either).
    pub fn forget_snapshots_locked(
        &self,
        ids: &[SnapshotId],
        allow_empty: bool,
        _lock: &LockGuard,
    ) -> Result<()> {
        if !allow_empty {
            let all = self.snapshots()?;
            let gone: HashSet<&SnapshotId> = ids.iter().collect();
            let mut names: Vec<&str> = all.iter().map(|s| s.manifest.name.as_str()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let of_name = all.iter().filter(|s| s.manifest.name == name);
                if of_name.clone().count() > 0 && of_name.clone().all(|s| gone.contains(&s.id)) {
                    return Err(Error::WouldForgetAll {
                        name: name.to_string(),
                    });
                }
            }
        }
        for id in ids {
            self.backend().delete(&layout::snapshot(id))?;
        }
        Ok(())
    }

    /// The retention policy saved in the store (`pagesnap policy set`), if any.
    pub fn saved_policy(&self) -> Result<Option<Policy>> {
        match self.backend().get(POLICY) {
            Ok(bytes) => Ok(Some(
                envelope::decode(Kind::Policy, &bytes).map_err(self.format_err(POLICY))?,
            )),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves (replaces) the store's retention policy; an empty policy removes it.
    pub fn save_policy(&self, policy: &Policy) -> Result<()> {
        self.check_may_delete("change the retention policy")?;
        policy.validate()?;
        if policy.is_empty() {
            self.backend().delete(POLICY)?;
        } else {
            self.backend().put(
                POLICY,
                &envelope::encode(Kind::Policy, policy),
                PutMode::Overwrite,
            )?;
        }
        Ok(())
    }

    /// Bytes of stored chunks that only this snapshot needs: about what
    /// forgetting it (and pruning) would free. In a store with deltas a
    /// snapshot needs the bases of its deltas too (down their chains), so a
    /// base another snapshot's delta is made against is not counted as free.
    pub fn exclusive_bytes(&self) -> Result<HashMap<SnapshotId, u64>> {
        let cat = self.catalog()?;
        let mut base_of: HashMap<ChunkId, ChunkId> = HashMap::new();
        for (_, body) in &cat.index {
            for d in &body.deltas {
                if let Some(e) = body.entries.get(d.ordinal as usize) {
                    base_of.entry(e.entry.id).or_insert(d.base);
                }
            }
        }
        let mut resolver = Resolver::new(&cat.maps, &cat.lists);
        let mut users: HashMap<ChunkId, (u32, SnapshotId)> = HashMap::new();
        for s in &cat.snapshots {
            let mut seen = HashSet::new();
            for c in resolver.resolve(&s.manifest.map)? {
                let ChunkRef::Stored(mut id) = c else {
                    continue;
                };
                // The chunk, then its chain's bases (bounded: a damaged base
                // table cannot make this loop forever).
                for _ in 0..=MAX_DELTA_DEPTH {
                    if !seen.insert(id) {
                        break;
                    }
                    users.entry(id).or_insert((0, s.id)).0 += 1;
                    match base_of.get(&id) {
                        Some(b) => id = *b,
                        None => break,
                    }
                }
            }
        }
        let mut size: HashMap<ChunkId, u64> = HashMap::new();
        for (_, body) in &cat.index {
            for e in &body.entries {
                size.entry(e.entry.id).or_insert(e.entry.stored_len as u64);
            }
        }
        let mut out: HashMap<SnapshotId, u64> = cat.snapshots.iter().map(|s| (s.id, 0)).collect();
        for (chunk, (n, owner)) in users {
            if n == 1 {
                *out.entry(owner).or_default() += size.get(&chunk).copied().unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// Deletes what no remaining snapshot needs (see the module documentation).
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        if !(0.0..=1.0).contains(&opts.max_unused) {
            return Err(Error::Invalid {
                what: "unused-space limit",
                detail: format!("{}% is not between 0 and 100", opts.max_unused * 100.0),
            });
        }
        if !opts.dry_run && !opts.assume_forgotten.is_empty() {
            return Err(Error::Internal("assume_forgotten is for dry runs".into()));
        }
        let lock = self.lock(!opts.dry_run, "prune", Duration::ZERO)?;
        self.prune_locked(opts, &lock)
    }

    /// [`Store::prune`] under a lock the caller already holds (exclusive unless
    /// `opts.dry_run`).
    pub fn prune_locked(&self, opts: &PruneOptions, lock: &LockGuard) -> Result<PruneReport> {
        self.check_may_delete("prune")?;
        let started = Instant::now();
        if !(0.0..=1.0).contains(&opts.max_unused) {
            return Err(Error::Internal("max_unused is not between 0 and 1".into()));
        }
        if !opts.dry_run && !lock.info.exclusive {
            return Err(Error::Internal("prune needs an exclusive lock".into()));
        }
        if !opts.dry_run && !opts.assume_forgotten.is_empty() {
            return Err(Error::Internal("assume_forgotten is for dry runs".into()));
        }
        let plan = self.plan_prune(opts)?;
        let mut report = if opts.dry_run {
            plan.report.clone()
        } else {
            self.execute(plan)?
        };
        report.duration = started.elapsed();
        Ok(report)
    }

    fn plan_prune(&self, opts: &PruneOptions) -> Result<Plan> {
        let mut cat = self.catalog()?;
        if !opts.assume_forgotten.is_empty() {
            cat.snapshots
                .retain(|s| !opts.assume_forgotten.contains(&s.id));
            // Maps only the forgotten snapshots reached are dead too.
            let mut live = HashSet::new();
            for s in &cat.snapshots {
                let mut next = Some(s.manifest.map);
                while let Some(m) = next.filter(|m| live.insert(*m)) {
                    next = cat.maps.get(&m).and_then(|pm| pm.reference);
                }
            }
            cat.maps.retain(|id, _| live.contains(id));
        }
        let mut r = PruneReport {
            dry_run: opts.dry_run,
            snapshots: cat.snapshots.len() as u64,
            ..PruneReport::default()
        };
        // Live chunks, and the index objects live maps name.
        let mut live: HashSet<ChunkId> = HashSet::new();
        let mut resolver = Resolver::new(&cat.maps, &cat.lists);
        for s in &cat.snapshots {
            for c in resolver.resolve(&s.manifest.map)? {
                if let ChunkRef::Stored(id) = c {
                    live.insert(id);
                }
            }
        }
        // A live delta keeps its base alive, and that base its own (from the
        // index objects' base tables; any stored copy's base counts, which can
        // only keep more). Chains are at most MAX_DELTA_DEPTH long.
        let mut base_of: HashMap<ChunkId, ChunkId> = HashMap::new();
        for (_, body) in &cat.index {
            for d in &body.deltas {
                if let Some(e) = body.entries.get(d.ordinal as usize) {
                    base_of.entry(e.entry.id).or_insert(d.base);
                }
            }
        }
        let mut todo: Vec<ChunkId> = live.iter().copied().collect();
        while let Some(c) = todo.pop() {
            if let Some(b) = base_of.get(&c) {
                if live.insert(*b) {
                    todo.push(*b);
                }
            }
        }
        let mut named: HashSet<Id> = HashSet::new();
        for m in cat.maps.values() {
            named.extend(m.new_list);
            named.extend(m.lists.iter().copied());
        }
        r.live_chunks = live.len() as u64;

        // Packs present, and one location for every live chunk (the one the
        // index loader picks).
        let packs: HashMap<Id, u64> = cat
            .sizes
            .iter()
            .filter(|(k, _)| k.starts_with(layout::PACKS))
            .filter_map(|(k, s)| Some((layout::id_of(k)?, *s)))
            .collect();
        r.packs_before = packs.len() as u64;
        r.bytes_before = cat.sizes.values().sum();
        let mut chosen: HashMap<ChunkId, (Id, PackRef, IndexEntry)> = HashMap::new();
        // Deltas: every chunk's location (bases are decoded to check a moved
        // delta) and the base-table row of each chosen delta (its new index
        // object's row).
        let mut placed: HashMap<ChunkId, Placed> = HashMap::new();
        let mut rows: HashMap<ChunkId, DeltaBase> = HashMap::new();
        // Per pack: blob bytes (distinct entries) and live bytes.
        let mut blob: HashMap<Id, (u64, HashSet<u32>)> = HashMap::new();
        let mut pack_dict: HashMap<Id, Option<Id>> = HashMap::new();
        for (iid, body) in &cat.index {
            let body_rows: HashMap<u64, DeltaBase> =
                body.deltas.iter().map(|d| (d.ordinal, *d)).collect();
            for (i, e) in body.entries.iter().enumerate() {
                let p = body.packs[e.pack as usize];
                if packs.get(&p.id) != Some(&p.len) {
                    continue;
                }
                // Of a chunk stored twice, the copy the index loader keeps
                // (chunk_index::copy_rank: a whole one before a delta, then
                // the first in key order).
                let rank = copy_rank(e.entry.codec);
                if self.config().deltas {
                    let better = placed
                        .get(&e.entry.id)
                        .is_none_or(|(_, _, kept)| copy_rank(kept.codec) > rank);
                    if better {
                        placed.insert(e.entry.id, (p.id, p.dict, e.entry));
                    }
                }
                pack_dict.insert(p.id, p.dict);
                let b = blob.entry(p.id).or_default();
                if b.1.insert(e.entry.offset) {
                    b.0 += e.entry.stored_len as u64;
                }
                let better = chosen
                    .get(&e.entry.id)
                    .is_none_or(|(_, _, kept)| copy_rank(kept.entry.codec) > rank);
                if live.contains(&e.entry.id) && better {
                    chosen.insert(e.entry.id, (*iid, p, *e));
                    match body_rows.get(&(i as u64)) {
                        Some(row) => rows.insert(e.entry.id, *row),
                        None => rows.remove(&e.entry.id),
                    };
                }
            }
        }
        r.missing_chunks = live.iter().filter(|c| !chosen.contains_key(c)).count() as u64;
        let mut live_bytes: HashMap<Id, u64> = HashMap::new();
        let mut live_entries: HashMap<Id, Vec<IndexEntry>> = HashMap::new();
        for (_, p, e) in chosen.values() {
            *live_bytes.entry(p.id).or_default() += e.entry.stored_len as u64;
            live_entries.entry(p.id).or_default().push(*e);
        }

        let mut rewrite = BTreeMap::new();
        let mut delete_packs = Vec::new();
        let mut kept_packs = HashSet::new();
        let mut freed = 0u64;
        let mut written = 0u64;
        for (id, size) in &packs {
            let live_b = live_bytes.get(id).copied().unwrap_or(0);
            let total = blob.get(id).map(|b| b.0).unwrap_or(0);
            if live_b == 0 {
                delete_packs.push(*id);
                freed += size;
            } else if (total - live_b) as f64 > opts.max_unused * total as f64 {
                let mut entries = live_entries.remove(id).unwrap_or_default();
                entries.sort_by_key(|e| e.entry.offset);
                r.bytes_repacked += live_b;
                written += live_b + entries.len() as u64 * 48;
                rewrite.insert(*id, (pack_dict.get(id).copied().flatten(), entries));
                freed += size;
            } else {
                kept_packs.insert(*id);
            }
        }
        r.packs_deleted = delete_packs.len() as u64;
        r.packs_rewritten = rewrite.len() as u64;
        // New packs: about one per target size of moved bytes, per dictionary.
        let mut per_dict: HashMap<Option<Id>, u64> = HashMap::new();
        for (d, entries) in rewrite.values() {
            *per_dict.entry(*d).or_default() += entries
                .iter()
                .map(|e| e.entry.stored_len as u64)
                .sum::<u64>();
        }
        r.packs_written = per_dict
            .values()
            .map(|b| b.div_ceil(self.config().pack_target_size as u64).max(1))
            .sum();
        written += r.packs_written * (HEADER_LEN + FOOTER_LEN) as u64;

        // Index objects that give a live chunk its location in a kept pack.
        let locating: HashSet<Id> = chosen
            .values()
            .filter(|(_, p, _)| kept_packs.contains(&p.id))
            .map(|(iid, _, _)| *iid)
            .collect();
        let delete_index: Vec<Id> = cat
            .index
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !named.contains(id) && !locating.contains(id))
            .collect();
        let listed = |prefix: &str| -> Vec<Id> {
            cat.sizes
                .keys()
                .filter(|k| k.starts_with(prefix))
                .filter_map(|k| layout::id_of(k))
                .collect()
        };
        let delete_maps: Vec<Id> = listed(layout::MAPS)
            .into_iter()
            .filter(|id| !cat.maps.contains_key(id))
            .collect();
        let mut used_dicts: HashSet<Id> = cat
            .snapshots
            .iter()
            .filter_map(|s| s.manifest.dict)
            .collect();
        for p in &kept_packs {
            used_dicts.extend(pack_dict.get(p).copied().flatten());
        }
        used_dicts.extend(per_dict.keys().flatten().copied());
        let delete_dicts: Vec<Id> = listed(layout::DICTS)
            .into_iter()
            .filter(|id| !used_dicts.contains(id))
            .collect();
        let size_of = |key: String| cat.sizes.get(&key).copied().unwrap_or(0);
        freed += delete_index
            .iter()
            .map(|i| size_of(layout::index(i)))
            .sum::<u64>();
        freed += delete_maps
            .iter()
            .map(|i| size_of(layout::map(i)))
            .sum::<u64>();
        freed += delete_dicts
            .iter()
            .map(|i| size_of(layout::dict(i)))
            .sum::<u64>();
        if !rewrite.is_empty() {
            written += 64 + 40 * rewrite.values().map(|(_, e)| e.len() as u64).sum::<u64>();
        }
        r.index_deleted = delete_index.len() as u64;
        r.maps_deleted = delete_maps.len() as u64;
        r.dicts_deleted = delete_dicts.len() as u64;
        r.bytes_freed = freed.saturating_sub(written);
        Ok(Plan {
            report: r,
            placed,
            rows,
            rewrite,
            delete_packs,
            delete_index,
            delete_maps,
            delete_dicts,
        })
    }

    fn execute(&self, plan: Plan) -> Result<PruneReport> {
        let mut r = plan.report;
        // Under the exclusive lock nobody else writes: temporary files are leftovers
        // of killed processes.
        r.temp_files_removed = self.backend().clean_temporary()?;
        let backend = self.backend().as_ref();
        let mut written = 0u64;
        // 1. Copy live chunks of rewritten packs into new packs (one dictionary per pack),
        //    checking each against its id on the way.
        let mut decoders = Decoder::new(self.chunk_ids())?;
        let bases = Bases::new(
            self.backend().clone(),
            crate::store::bases::DEFAULT_CACHE_BYTES,
            self.chunk_ids(),
        )?;
        let locate = crate::store::bases::InMap::new(&plan.placed);
        let mut by_dict: BTreeMap<Option<Id>, Vec<(Id, IndexEntry)>> = BTreeMap::new();
        for (pack, (dict, entries)) in &plan.rewrite {
            by_dict
                .entry(*dict)
                .or_default()
                .extend(entries.iter().map(|e| (*pack, *e)));
        }
        let target = self.config().pack_target_size as usize;
        let to_copy: u64 = by_dict
            .values()
            .flatten()
            .map(|(_, e)| e.entry.stored_len as u64)
            .sum();
        let mut copied = 0u64;
        let mut sink = PackSink::new(self.backend().clone(), target);
        for (dict, items) in by_dict {
            if let Some(d) = &dict {
                decoders.ensure_dict(backend, d)?;
            }
            let mut current_src: Option<(Id, Vec<u8>)> = None;
            for (src, e) in items {
                if current_src.as_ref().map(|c| c.0) != Some(src) {
                    let key = layout::pack(&src);
                    current_src = Some((src, backend.get(&key)?));
                }
                copied += e.entry.stored_len as u64;
                if copied % (1 << 20) < e.entry.stored_len as u64 {
                    crate::progress::report(self.progress(), copied, to_copy);
                }
                let bytes = &current_src.as_ref().expect("set above").1;
                let (start, end) = (
                    e.entry.offset as usize,
                    (e.entry.offset + e.entry.stored_len) as usize,
                );
                let stored = bytes.get(start..end).ok_or_else(|| Error::ChunkDamaged {
                    snapshot: None,
                    chunk: e.entry.id,
                    object: layout::pack(&src),
                    detail: "the pack is shorter than its index says".into(),
                })?;
                // A delta is checked with its base, decoded through its chain.
                let checked = match e.entry.codec {
                    Codec::ZstdDelta => bases.base_for(&e.entry, stored, &locate).and_then(|b| {
                        decoders.decode_checked_with_base(
                            &e.entry,
                            stored,
                            dict.as_ref(),
                            b.as_deref().map(|b| b.as_slice()),
                        )
                    }),
                    _ => decoders.decode_checked(&e.entry, stored, dict.as_ref()),
                };
                if let Err(err) = checked {
                    let detail = match err {
                        ChunkError::Decode(err) => err.to_string(),
                        ChunkError::Mismatch { .. } => {
                            "content does not match its id; prune stops before deleting anything"
                                .into()
                        }
                        base @ ChunkError::Base { .. } => {
                            format!("{base}; prune stops before deleting anything")
                        }
                        // Not damage: the read error, and nothing deleted.
                        ChunkError::Unreadable { source, .. } => {
                            return Err(Error::Backend(source))
                        }
                    };
                    return Err(Error::ChunkDamaged {
                        snapshot: None,
                        chunk: e.entry.id,
                        object: layout::pack(&src),
                        detail,
                    });
                }
                sink.push(dict, e.entry.id, stored, e.entry.raw_len, e.entry.codec)?;
            }
            // One dictionary at a time: its last pack is written before the next begins.
            sink.flush()?;
        }
        let out = sink.finish()?;
        r.packs_written = out.packs.len() as u64;
        written += out.bytes_written;
        let (new_packs, new_entries) = (out.packs, out.entries);
        // 2. Their index, before anything is deleted.
        let mut new_index = None;
        let new_pack_ids: Vec<Id> = new_packs.iter().map(|p| p.id).collect();
        if !new_entries.is_empty() {
            // The moved deltas' rows, as their old index objects had them (a
            // delta without its row makes `put_index` refuse the body).
            let deltas = new_entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.entry.codec == Codec::ZstdDelta)
                .filter_map(|(i, e)| {
                    let row = plan.rows.get(&e.entry.id)?;
                    Some(DeltaBase {
                        ordinal: i as u64,
                        ..*row
                    })
                })
                .collect();
            let body = IndexBody {
                packs: new_packs,
                entries: new_entries,
                deltas,
            };
            let (id, len) = crate::store::put_index(backend, &body)?;
            new_index = Some(layout::index(&id));
            written += len;
        }
        // 3. Deletions, packs first. Never of an object just written: a pack or
        //    index object that an interrupted prune left behind unreferenced is
        //    planned for deletion, and writing the same chunks again produces the
        //    same object (same content, same id).
        let written_now: HashSet<String> = new_pack_ids
            .iter()
            .map(layout::pack)
            .chain(new_index)
            .collect();
        // Every machine's record of the listing is stale before a pack or an
        // index object goes (store/listing.rs).
        if !(plan.delete_packs.is_empty()
            && plan.rewrite.is_empty()
            && plan.delete_index.is_empty())
        {
            self.drop_marker()?;
        }
        let mut deleted = 0u64;
        let sizes: HashMap<String, u64> = backend
            .list("")?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let mut delete = |key: String| -> Result<()> {
            if written_now.contains(&key) {
                return Ok(());
            }
            deleted += sizes.get(&key).copied().unwrap_or(0);
            backend.delete(&key)?;
            Ok(())
        };
        for p in plan.delete_packs.iter().chain(plan.rewrite.keys()) {
            delete(layout::pack(p))?;
        }
        for i in &plan.delete_index {
            delete(layout::index(i))?;
        }
        for m in &plan.delete_maps {
            delete(layout::map(m))?;
        }
        for d in &plan.delete_dicts {
            delete(layout::dict(d))?;
        }
        r.bytes_freed = deleted.saturating_sub(written);
        Ok(r)
    }
}
