//! Which stored chunks a new chunk may be a delta against (DELTAS.md, "Backup:
//! picking the base"): the parent's chunk at the same position, and the
//! parent's chunk that shares the most resemblance features with it (a
//! content-found base, from the parent's sketch: after a VACUUM, rows move to
//! other page numbers and the same position holds other rows). At most these
//! two are tried, to bound a backup's work; `Encoder::encode_smallest_of` keeps
//! the smallest form.

use super::sketch::features::Features;
use super::sketch::Sketcher;
use crate::format::index::MAX_DELTA_DEPTH;
use crate::index::cache::ChunkLookup;
use crate::store::bases::Bases;
use crate::types::{ChunkId, ChunkRef};
use std::sync::Arc;

/// A candidate base: its id, raw bytes and depth.
pub(crate) type Base = (ChunkId, Arc<Vec<u8>>, u8);

/// The base candidates of new chunk `id` at position `pos` (`features`: its
/// features, when computed): each stored, readable, not `id` itself, below the
/// depth bound, and not tried twice. A backup never fails for want of a base:
/// one that cannot be read is left out.
pub(crate) fn candidates(
    parent: &[ChunkRef],
    bases: &Bases,
    index: &ChunkLookup,
    sketch: Option<&Sketcher>,
    features: Option<&Features>,
    pos: u64,
    id: &ChunkId,
) -> Vec<Base> {
    let read = |base: ChunkId| -> Option<Base> {
        let (raw, depth) = bases.raw(&base, &|c| index.locate(c)).ok()?;
        (depth < MAX_DELTA_DEPTH).then_some((base, raw, depth))
    };
    let stored = |p: u64| match parent.get(p as usize) {
        Some(ChunkRef::Stored(c)) if c != id => Some(*c),
        _ => None,
    };
    let same = stored(pos);
    let mut out: Vec<Base> = same.and_then(read).into_iter().collect();
    let found = sketch
        .zip(features)
        .and_then(|(s, f)| s.found(f, pos))
        .and_then(stored)
        .filter(|c| Some(*c) != same);
    out.extend(found.and_then(read));
    out
}
