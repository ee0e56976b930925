//! What a store holds and what each snapshot cost: logical vs stored bytes,
//! dedup and compression ratios, bytes added per snapshot and per day.
//!
//! Reads manifests, page maps and the index; never chunk data.

use crate::codec::whole::WholeTally;
use crate::format::pack::Codec;
use crate::store::{Snapshot, Store};
use crate::types::{ChunkId, ChunkRef, Id, SnapshotId};
use crate::{layout, Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Bytes of the store's objects, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredBytes {
    pub packs: u64,
    pub index: u64,
    pub manifests: u64,
    pub maps: u64,
    /// `config` and anything unrecognised.
    pub other: u64,
}

impl StoredBytes {
    pub fn total(&self) -> u64 {
        self.packs + self.index + self.manifests + self.maps + self.other
    }
}

/// What one snapshot added to the store, in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotCost {
    pub id: SnapshotId,
    pub name: String,
    pub time: DateTime<Utc>,
    pub image_len: u64,
    /// Chunks no earlier snapshot (of the selection) referenced.
    pub new_chunks: u64,
    /// Their compressed size in packs.
    pub new_chunk_bytes: u64,
    /// Manifest, page map first used here, and this snapshot's share of the index.
    pub metadata_bytes: u64,
    pub added_bytes: u64,
    pub cumulative_stored: u64,
    pub cumulative_logical: u64,
}

/// Bytes added on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayCost {
    pub day: NaiveDate,
    pub snapshots: u64,
    pub added_bytes: u64,
}

/// Mean, median and maximum of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub max: u64,
}

impl Summary {
    pub fn of(values: &[u64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2] as f64
        } else {
            (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
        };
        Summary {
            mean: v.iter().sum::<u64>() as f64 / n as f64,
            median,
            max: v[n - 1],
        }
    }
}

/// Of the distinct chunks the selected snapshots reference, those stored as
/// deltas (format version 2), and what that saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    pub chunks: u64,
    /// Their bytes in packs (also in [`StoreStats::unique_stored_bytes`]).
    pub stored_bytes: u64,
    /// What they would take stored alone: as measured when each delta was
    /// made (the base table's whole length), and for the small deltas whose
    /// length was not measured (all but a sample: codec/whole.rs) estimated
    /// from the measured small ones. Without any measured small delta (rows
    /// rebuilt by `repair index` without their dictionary) an unmeasured
    /// delta counts its stored bytes here: it is taken to have saved nothing.
    pub whole_bytes: u64,
    /// `whole_bytes - stored_bytes`.
    pub saved_bytes: u64,
    /// Deltas whose whole length was not measured.
    pub unmeasured_chunks: u64,
    /// Whether those were estimated (else counted as saving nothing).
    pub estimated: bool,
}

impl DeltaStats {
    /// What a tally of deltas adds up to.
    pub(crate) fn of(t: &WholeTally) -> DeltaStats {
        DeltaStats {
            chunks: t.chunks,
            stored_bytes: t.stored_bytes,
            whole_bytes: t.whole_bytes(),
            saved_bytes: t.saved_bytes(),
            unmeasured_chunks: t.unmeasured_chunks,
            estimated: t.estimated(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoreStats {
    pub snapshots: u64,
    pub databases: Vec<String>,
    /// Sum of the image sizes of the selected snapshots.
    pub logical_bytes: u64,
    /// Distinct stored chunks the selected snapshots reference.
    pub unique_chunks: u64,
    pub unique_raw_bytes: u64,
    pub unique_stored_bytes: u64,
    /// References to all-zero chunks (never stored).
    pub zero_chunk_refs: u64,
    /// Of the unique chunks, those stored as deltas (none in a store without).
    pub deltas: DeltaStats,
    /// The whole store, whatever the selection.
    pub stored: StoredBytes,
    /// logical ÷ unique raw: how much deduplication saves.
    pub dedup_ratio: f64,
    /// unique raw ÷ unique compressed: how much zstd saves.
    pub compression_ratio: f64,
    pub per_snapshot: Vec<SnapshotCost>,
    pub added_per_snapshot: Summary,
    pub per_day: Vec<DayCost>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Store {
    /// Statistics of the snapshots of `name` (all snapshots when `None`).
    pub fn stats(&self, name: Option<&str>) -> Result<StoreStats> {
        let mut stored = StoredBytes::default();
        let mut object_size: HashMap<String, u64> = HashMap::new();
        for o in self.backend().list("")? {
            let slot = if o.key.starts_with(layout::PACKS) {
                &mut stored.packs
            } else if o.key.starts_with(layout::INDEX) {
                &mut stored.index
            } else if o.key.starts_with(layout::SNAPSHOTS) {
                &mut stored.manifests
            } else if o.key.starts_with(layout::MAPS) {
                &mut stored.maps
            } else {
                &mut stored.other
            };
            *slot += o.size;
            object_size.insert(o.key, o.size);
        }

        // With each delta's whole length from the base tables, read in the
        // same pass.
        let (index, rows) = self.load_index_with_rows()?;
        // Index bytes are shared out per chunk entry they describe.
        let index_per_chunk = ratio(stored.index, index.entries() as u64);

        let snaps: Vec<Snapshot> = self
            .snapshots()?
            .into_iter()
            .filter(|s| name.is_none_or(|n| s.manifest.name == n))
            .collect();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let mut seen_maps: HashSet<Id> = HashSet::new();
        // Consecutive snapshots share most of their map chains: keep recent lists.
        let mut resolved: HashMap<Id, Vec<ChunkRef>> = HashMap::new();
        let mut per_snapshot = Vec::with_capacity(snaps.len());
        let (mut unique_raw, mut unique_stored, mut zero_refs, mut logical) =
            (0u64, 0u64, 0u64, 0u64);
        let mut cumulative_stored = 0u64;
        let mut deltas = WholeTally::default();
        for s in &snaps {
            let m = &s.manifest;
            let chunks = self.resolve_cached(&index, &m.map, &mut resolved)?;
            let (mut new_chunks, mut new_bytes) = (0u64, 0u64);
            for c in chunks.iter().copied() {
                match c {
                    ChunkRef::Zero => zero_refs += 1,
                    ChunkRef::Stored(id) => {
                        if seen.insert(id) {
                            let loc = index.get(&id).ok_or(Error::ChunkMissing {
                                snapshot: s.id,
                                chunk: id,
                            })?;
                            new_chunks += 1;
                            new_bytes += loc.entry.stored_len as u64;
                            unique_raw += loc.entry.raw_len as u64;
                            unique_stored += loc.entry.stored_len as u64;
                            if loc.entry.codec == Codec::ZstdDelta {
                                let whole = rows.get(&id).map_or(0, |f| f.whole_len);
                                let e = &loc.entry;
                                deltas.add(e.stored_len as u64, e.raw_len as u64, whole as u64);
                            }
                        }
                    }
                }
            }
            let mut metadata = object_size
                .get(&layout::snapshot(&s.id))
                .copied()
                .unwrap_or(0);
            if seen_maps.insert(m.map) {
                metadata += object_size.get(&layout::map(&m.map)).copied().unwrap_or(0);
            }
            metadata += (new_chunks as f64 * index_per_chunk).round() as u64;
            let added = new_bytes + metadata;
            cumulative_stored += added;
            logical += m.image_len;
            per_snapshot.push(SnapshotCost {
                id: s.id,
                name: m.name.clone(),
                time: s.time(),
                image_len: m.image_len,
                new_chunks,
                new_chunk_bytes: new_bytes,
                metadata_bytes: metadata,
                added_bytes: added,
                cumulative_stored,
                cumulative_logical: logical,
            });
        }

        let mut days: BTreeMap<NaiveDate, DayCost> = BTreeMap::new();
        for c in &per_snapshot {
            let d = days.entry(c.time.date_naive()).or_insert(DayCost {
                day: c.time.date_naive(),
                snapshots: 0,
                added_bytes: 0,
            });
            d.snapshots += 1;
            d.added_bytes += c.added_bytes;
        }
        let added: Vec<u64> = per_snapshot.iter().map(|c| c.added_bytes).collect();
        let mut databases: Vec<String> = snaps.iter().map(|s| s.manifest.name.clone()).collect();
        databases.sort();
        databases.dedup();
        Ok(StoreStats {
            snapshots: snaps.len() as u64,
            databases,
            logical_bytes: logical,
            unique_chunks: seen.len() as u64,
            unique_raw_bytes: unique_raw,
            unique_stored_bytes: unique_stored,
            zero_chunk_refs: zero_refs,
            deltas: DeltaStats::of(&deltas),
            stored,
            dedup_ratio: ratio(logical, unique_raw),
            compression_ratio: ratio(unique_raw, unique_stored),
            added_per_snapshot: Summary::of(&added),
            per_day: days.into_values().collect(),
            per_snapshot,
        })
    }
}

impl Store {
    /// The chunk list of map `id`, resolving only the maps of its chain that are not
    /// in `cache` (which keeps at most a few dozen lists).
    fn resolve_cached(
        &self,
        index: &crate::index::chunk_index::ChunkIndex,
        id: &Id,
        cache: &mut HashMap<Id, Vec<ChunkRef>>,
    ) -> Result<Vec<ChunkRef>> {
        if let Some(list) = cache.get(id) {
            return Ok(list.clone());
        }
        let chain = self.map_chain(id)?;
        // Start from the nearest cached ancestor.
        let cut = chain.iter().position(|(mid, _)| cache.contains_key(mid));
        let (todo, mut list) = match cut {
            Some(i) => (&chain[..i], cache[&chain[i].0].clone()),
            None => (&chain[..], Vec::new()),
        };
        if cache.len() > 32 {
            cache.clear();
        }
        for (mid, m) in todo.iter().rev() {
            list = m
                .apply(&list, |l, o| index.lookup(l, o))
                .map_err(|source| Error::Format {
                    object: layout::map(mid),
                    source,
                })?;
            cache.insert(*mid, list.clone());
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn summaries() {
        let s = Summary::of(&[4, 1, 3, 2]);
        assert_eq!((s.mean, s.median, s.max), (2.5, 2.5, 4));
        let s = Summary::of(&[5, 1, 9]);
        assert_eq!((s.median, s.max), (5.0, 9));
        assert_eq!(Summary::of(&[]), Summary::default());
    }
}
