//! The index a backup deduplicates and names chunks against: the short way
//! through this machine's derived copy (index/cache/), or the long way, the whole
//! index in memory, whenever the copy cannot be trusted. See index/cache/mod.rs
//! for what is checked; this file does the checking and the upkeep.

use crate::format::index::{IndexBody, IndexEntry};
use crate::format::pagemap::{reference_seq, PageMap};
use crate::index::cache::base::Base;
use crate::index::cache::{resolved, ChunkLookup, IndexCache, Layered};
use crate::index::chunk_index::ChunkIndex;
use crate::store::listing::Listing;
use crate::store::{MapBase, Snapshot, WrittenMap};
use crate::types::{ChunkRef, Id, IdMap, IdSet};
use crate::{layout, Result, Store};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// How many of the index objects the sorted chunk file covers each backup reads
/// again and checks, picked at random: in a store of 10,000 objects each is
/// checked every 2,500 backups on average (17 days at one backup per 10
/// minutes), at the cost of 4 small reads.
const RECHECK: usize = 4;

/// Resolved maps and placements unused this long are deleted when the sorted
/// file is rewritten (a database not backed up here for a month then takes the
/// long way once).
const SWEEP_UNUSED: Duration = Duration::from_secs(30 * 86_400);

/// What a backup got from [`Store::backup_index`].
pub(crate) struct BackupIndex {
    pub lookup: ChunkLookup,
    /// The parent's map, list and skip-delta reference; `None` without a parent
    /// or when it cannot be read.
    pub base: Option<MapBase>,
    pub warnings: Vec<String>,
    pub load: Duration,
    /// Whether the short way was taken.
    pub short: bool,
    upkeep: Upkeep,
}

impl BackupIndex {
    /// What the backup knew of index objects and packs, and each index
    /// object's size by id (from that listing).
    pub(crate) fn listing(&self) -> (&Listing, &IdMap<u64>) {
        (&self.upkeep.listing, &self.upkeep.sizes)
    }
}

/// What to do once the snapshot is published.
struct Upkeep {
    cache: Option<IndexCache>,
    /// Each index object's size, from the listing.
    sizes: IdMap<u64>,
    /// What the backup knew of index objects and packs (store/listing.rs).
    listing: Listing,
    /// The long way: write the sorted chunk file from its index.
    rebuild: bool,
    /// The parent's chain (map id, sequence number), for forgetting resolved maps.
    parent_chain: Vec<(Id, u64)>,
}

/// What the short way gives: the lookup, the parent's map base, and the
/// parent's chain (map id, sequence number).
type ShortWay = (ChunkLookup, Option<MapBase>, Vec<(Id, u64)>);

/// Why the short way was not taken, and whether the file is to be rebuilt.
struct Declined {
    rebuild: bool,
    warning: Option<String>,
}

impl Declined {
    fn keep() -> Declined {
        Declined {
            rebuild: false,
            warning: None,
        }
    }
    fn rebuild() -> Declined {
        Declined {
            rebuild: true,
            warning: None,
        }
    }
}

impl Store {
    /// The index of a backup whose parent is `parent`. `turn` (any number that
    /// changes from one backup to the next) picks which covered index objects
    /// are checked again (see [`RECHECK`]). `full_listing`: list the store's
    /// index objects and packs whatever this machine's record of them says.
    pub(crate) fn backup_index(
        &self,
        parent: Option<&Snapshot>,
        turn: u64,
        full_listing: bool,
    ) -> Result<BackupIndex> {
        let started = Instant::now();
        let cache = self.index_cache();
        let mut listing = self.backup_listing(full_listing)?;
        let mut warnings = Vec::new();
        let mut rebuild = cache.is_some();
        if let Some(c) = &cache {
            let sizes = sizes_of(&listing);
            match self.short_way(c, parent, turn, &listing.index, &sizes, &listing.packs)? {
                Ok((lookup, base, parent_chain)) => {
                    return Ok(BackupIndex {
                        lookup,
                        base,
                        warnings,
                        load: started.elapsed(),
                        short: true,
                        upkeep: Upkeep {
                            cache,
                            sizes,
                            listing,
                            rebuild: false,
                            parent_chain,
                        },
                    })
                }
                Err(d) => {
                    rebuild = d.rebuild;
                    warnings.extend(d.warning);
                }
            }
        }
        // The long way, always from a full listing: it is what finds out
        // whatever the record could not tell (a parent of another machine's).
        if listing.cached {
            listing = self.full_listing(listing.marker)?;
        }
        let sizes = sizes_of(&listing);
        let mut index = self.index_of(&listing.index, &listing.packs);
        index.seal();
        let mut parent_chain = Vec::new();
        let base = match parent {
            Some(p) => {
                let seeded = |mid: &Id, m: &PageMap, list: &[ChunkRef]| {
                    // The resolved maps the next backup's short way needs.
                    if let Some(c) = &cache {
                        if !c.has_resolved(mid) {
                            if let Some(ids) = resolved::named_ids(m, list) {
                                c.put_resolved(mid, ids.iter().copied(), ids.len());
                            }
                        }
                    }
                };
                match self.map_base_visiting(&index, p, seeded, &mut parent_chain) {
                    Ok(b) => Some(b),
                    // A damaged parent must not stop every later backup: this one then
                    // records a full page map, which depends on nothing damaged.
                    Err(e) => {
                        warnings.push(format!(
                            "the previous snapshot {} cannot be read ({e}); this backup records a full page map",
                            p.id.short()
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        // Names are needed only to resolve page maps, done above.
        index.drop_names();
        Ok(BackupIndex {
            lookup: ChunkLookup::Whole(Box::new(index)),
            base,
            warnings,
            load: started.elapsed(),
            short: false,
            upkeep: Upkeep {
                cache,
                sizes,
                listing,
                rebuild,
                parent_chain,
            },
        })
    }

    /// The short way, if every check passes. The outer error is the store's (a
    /// listing that failed); the inner says why the long way is to be taken.
    fn short_way(
        &self,
        cache: &IndexCache,
        parent: Option<&Snapshot>,
        turn: u64,
        objects: &[crate::backend::ObjectInfo],
        sizes: &IdMap<u64>,
        present: &IdMap<u64>,
    ) -> Result<std::result::Result<ShortWay, Declined>> {
        let mut base = match cache.open_base() {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Err(Declined::rebuild())),
            Err(e) => {
                cache.drop_base();
                return Ok(Err(Declined {
                    rebuild: true,
                    warning: Some(format!(
                        "the local index cache was unusable and is rebuilt: {e}"
                    )),
                }));
            }
        };
        // What a prune deleted or rewrote (or a lost pack) is skipped from now on.
        base.retain(
            |l, n| sizes.get(l) == Some(&n),
            |p| present.get(&p.id) == Some(&p.len),
        );
        // The parent's chain, resolved through this machine's resolved maps, and
        // where its chunks were.
        let resolve = || {
            let mut parent_chain = Vec::new();
            let found = match parent {
                None => Some((None, Vec::new(), Default::default())),
                Some(p) => match (
                    self.resolve_from_cache(cache, p, sizes, &mut parent_chain),
                    cache.placed(&p.manifest.map),
                ) {
                    (Some((b, list)), Some(placed)) => Some((Some(b), list, placed)),
                    _ => None,
                },
            };
            found.map(|(b, list, placed)| (b, list, placed, parent_chain))
        };
        // The index objects the file does not cover.
        let uncovered = || {
            let covered: IdSet = base
                .meta
                .lists
                .iter()
                .chain(&base.meta.damaged)
                .map(|(l, _)| *l)
                .collect();
            let newer: Vec<crate::backend::ObjectInfo> = objects
                .iter()
                .filter(|o| layout::id_of(&o.key).is_some_and(|id| !covered.contains(&id)))
                .cloned()
                .collect();
            self.index_of(&newer, present)
        };
        // The three are independent reads (the check's index objects, the
        // resolved maps, the uncovered index objects): done side by side, as
        // they are most of the wait before the capture starts.
        let (checked, (resolved, mut delta)) = rayon::join(
            || self.check_base(&base, turn, sizes),
            || rayon::join(resolve, uncovered),
        );
        if let Err(d) = checked {
            return Ok(Err(d));
        }
        let Some((map_base, parent_list, placed, parent_chain)) = resolved else {
            return Ok(Err(Declined::keep()));
        };
        if delta.damaged_lists().next().is_some() {
            // Its chunks' names are unknown; the long way handles that.
            return Ok(Err(Declined::keep()));
        }
        delta.seal();
        // Names are resolved through the entries' own (index object, ordinal).
        delta.drop_names();
        let Some(layered) = Layered::new(&parent_list, placed, present, delta, base, cache.clone())
        else {
            return Ok(Err(Declined::keep()));
        };
        Ok(Ok((
            ChunkLookup::Layered(Box::new(layered)),
            map_base,
            parent_chain,
        )))
    }

    /// Checks the sorted chunk file against the store: no index object it knows
    /// as damaged is listed, and `RECHECK` of the index objects it covers, read
    /// again, are whole (damage in the store is noticed in turn). An error: the
    /// long way is to be taken.
    fn check_base(
        &self,
        base: &Base,
        turn: u64,
        sizes: &IdMap<u64>,
    ) -> std::result::Result<(), Declined> {
        let m = &base.meta;
        if m.damaged.iter().any(|(l, n)| sizes.get(l) == Some(n)) {
            // Chunks named only by a damaged object are unknown: the long way
            // handles that (and reports the snapshots it costs).
            return Err(Declined::keep());
        }
        let alive: Vec<Id> = base.kept_lists().copied().collect();
        if alive.is_empty() {
            return Ok(());
        }
        // All of them when there are few; else `RECHECK` picked at random from
        // `turn` (a rotation by a fixed step could miss some for ever).
        let again: Vec<Id> = if alive.len() <= RECHECK {
            alive
        } else {
            (0..RECHECK as u64)
                .map(|i| {
                    let h = Id::of_object(&[turn.to_le_bytes(), i.to_le_bytes()].concat());
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&h.0[..8]);
                    alive[(u64::from_le_bytes(w) % alive.len() as u64) as usize]
                })
                .collect()
        };
        let damaged = again.par_iter().find_any(|l| {
            self.get_verified(&layout::index(l), l)
                .ok()
                .and_then(|b| IndexBody::decode_each(&b, |_, _| {}).ok())
                .is_none()
        });
        match damaged {
            Some(l) => Err(Declined {
                rebuild: true,
                warning: Some(format!(
                    "index object {} failed its check; the local index cache is rebuilt",
                    l.short()
                )),
            }),
            None => Ok(()),
        }
    }

    /// The parent's map base and chunk list from this machine's resolved maps, or
    /// `None` if one is missing or does not fit (then it is forgotten), or if a
    /// map of the chain names an index object the store does not list (`sizes`).
    fn resolve_from_cache(
        &self,
        cache: &IndexCache,
        p: &Snapshot,
        sizes: &IdMap<u64>,
        parent_chain: &mut Vec<(Id, u64)>,
    ) -> Option<(MapBase, Vec<ChunkRef>)> {
        let chain = self.map_chain(&p.manifest.map).ok()?;
        // Every file is there (checked first: a missing one costs no reading), then
        // each is read as it is applied, root first, into one list.
        if chain.iter().any(|(mid, _)| !cache.has_resolved(mid)) {
            return None;
        }
        // A parent whose chain names an index object that is gone (`repair
        // index` quarantined it and rebuilt its entries under another name) is
        // broken: a map made against it would be too. The long way finds out
        // and records a full page map instead.
        let gone = |m: &PageMap| {
            m.lists
                .iter()
                .chain(m.new_list.iter())
                .any(|l| !sizes.contains_key(l))
        };
        if chain.iter().any(|(_, m)| gone(m)) {
            return None;
        }
        let want = reference_seq(chain[0].1.seq + 1);
        let mut list: Vec<ChunkRef> = Vec::new();
        let mut reference = None;
        let mut whole = true;
        for (mid, m) in chain.iter().rev() {
            // A damaged file is removed as it is read; the others are still
            // checked, so that the long way writes every missing one at once.
            if !whole {
                let _ = cache.resolved(mid);
                continue;
            }
            let fits = cache
                .resolved(mid)
                .and_then(|ids| resolved::apply_in_place(m, &mut list, &ids));
            if fits.is_none() {
                cache.drop_resolved(mid);
                whole = false;
                continue;
            }
            if m.seq == want && reference.is_none() {
                reference = Some((*mid, list.clone()));
            }
        }
        if !whole {
            return None;
        }
        if self.check_chunk_count(p, list.len()).is_err() {
            return None;
        }
        parent_chain.extend(chain.iter().map(|(mid, m)| (*mid, m.seq)));
        let mut base = MapBase::new(p.manifest.map, &list, chain[0].1.seq + 1, reference?);
        if self.config().deltas {
            base.parent_chunks = Some(list.clone());
        }
        Some((base, list))
    }

    /// After the snapshot is published: records its resolved map, forgets those
    /// no later backup's chain holds, and rebuilds or merges the sorted chunk
    /// file. Best effort: a failure costs a later backup the long way, and is
    /// returned as a warning.
    pub(crate) fn index_upkeep(
        &self,
        bi: &BackupIndex,
        written: &WrittenMap,
        lookup: &ChunkLookup,
        chunks: &[ChunkRef],
        parent_map: Option<Id>,
    ) -> Option<String> {
        let u = &bi.upkeep;
        let cache = u.cache.as_ref()?;
        match placement(written, lookup, chunks) {
            Some(p) => cache.put_placed(&written.map, &p),
            None => cache.drop_placed(&written.map),
        }
        if let Some(pm) = parent_map.filter(|pm| *pm != written.map) {
            cache.drop_placed(&pm);
        }
        if let Some((seq, ids)) = &written.resolved {
            match ids {
                Some(ids) => cache.put_resolved(&written.map, ids.iter().copied(), ids.len()),
                // A full map names every stored chunk of its list, in order.
                None => {
                    let stored = || {
                        chunks.iter().filter_map(|c| match c {
                            ChunkRef::Stored(id) => Some(*id),
                            ChunkRef::Zero => None,
                        })
                    };
                    cache.put_resolved(&written.map, stored(), stored().count())
                }
            }
            // The next chains hold this map and its reference's chain: maps of the
            // parent's chain above the reference are no one's reference any more.
            let keep_below = if *seq == 0 {
                0
            } else {
                reference_seq(*seq) + 1
            };
            for (mid, s) in &u.parent_chain {
                if *s >= keep_below && *mid != written.map {
                    cache.drop_resolved(mid);
                }
            }
        }
        let mut warning = lookup
            .cache_error()
            .map(|e| format!("the local index cache was damaged and is rebuilt: {e}"));
        let mut rewrote = true;
        let result = match lookup {
            ChunkLookup::Whole(index) if u.rebuild => {
                let own = written
                    .index
                    .as_ref()
                    .map(|(id, body)| (*id, written.index_len, body));
                cache.write_base(index, own, &u.sizes).map(|_| ())
            }
            ChunkLookup::Layered(l) if warning.is_none() && merge_due(&l.delta, &l.base) => cache
                .write_merged(&l.base, &l.delta, &u.sizes, &u.listing.packs)
                .map(|_| ()),
            _ => {
                rewrote = false;
                Ok(())
            }
        };
        match result {
            // With the (rare) rewrite of the file, the resolved maps of databases
            // no longer backed up here go too.
            Ok(()) if rewrote => {
                cache.sweep(SWEEP_UNUSED);
            }
            Ok(()) => {}
            Err(e) => {
                cache.drop_base();
                warning.get_or_insert(format!("the local index cache could not be written: {e}"));
            }
        }
        warning
    }
}

/// Each index object's size by id.
fn sizes_of(listing: &Listing) -> IdMap<u64> {
    listing
        .index
        .iter()
        .filter_map(|o| Some((layout::id_of(&o.key)?, o.size)))
        .collect()
}

/// Where each stored chunk of a new snapshot's list is: in this backup's own
/// packs, else where the lookup found it. `None` if one has no place (then the
/// next backup takes the long way).
fn placement(
    written: &WrittenMap,
    lookup: &ChunkLookup,
    chunks: &[ChunkRef],
) -> Option<resolved::Placement> {
    // This backup's own chunks, found by id through the table the page map was
    // written with (4-byte slots: a first backup of 2 GiB stores half a million).
    let none: &[IndexEntry] = &[];
    let (own, own_packs) = match &written.index {
        Some((_, body)) => (&body.entries[..], &body.packs[..]),
        None => (none, &[][..]),
    };
    // Pack ids are unique, so a pack's number is found by its id; runs of
    // chunks in one pack (most of a list) skip even that.
    let mut number: IdMap<u32> = Default::default();
    let mut last: Option<(Id, u32)> = None;
    let mut out = resolved::Placement::default();
    out.at.reserve(chunks.len());
    for (pos, c) in chunks.iter().enumerate() {
        let ChunkRef::Stored(id) = c else { continue };
        let pack = match written.index_table.get(id, |q| own[q as usize].entry.id) {
            Some(q) => {
                let p = own_packs.get(own[q as usize].pack as usize)?;
                (p.id, p.len)
            }
            None => lookup.pack_at(pos as u64, id)?,
        };
        let n = match last {
            Some((p, n)) if p == pack.0 => n,
            _ => {
                let n = *number.entry(pack.0).or_insert_with(|| {
                    out.packs.push(pack);
                    out.packs.len() as u32 - 1
                });
                last = Some((pack.0, n));
                n
            }
        };
        out.at.push(n);
    }
    Some(out)
}

/// Whether to rewrite the file with the delta merged in: when the delta holds
/// more than 1/16 as many chunks as the file (loading it costs each backup about
/// what the old whole load did for that many); when it is more index objects
/// than `sqrt(file / 300)` (each read costs a backup ~0.15 ms, and k objects cost
/// the backups since the last merge ~k²/2 reads, which this keeps near the cost
/// of one merge, ~250 ns per chunk: 258 objects at 20 million chunks, the floor
/// of 16 below 77,000); or when more than 1/8 of the file is skipped (a prune
/// deleted the objects naming it).
fn merge_due(delta: &ChunkIndex, base: &Base) -> bool {
    let objects = (base.entries() as f64 / 300.0).sqrt().max(16.0);
    delta.entries() as u64 > (base.entries() / 16).max(100_000)
        || delta.lists().len() as f64 > objects
        || base.skipped_share() > 0.125
}
