//! Which stored chunks a new chunk may be a delta against (DELTAS.md, "Backup:
//! picking the base"): the parent's chunk at the same position (on a local
//! store the link of its chain that skip-delta bases name, skip.rs), and the
//! parent's chunk that shares the most resemblance features with it (a
//! content-found base, from the parent's sketch: after a VACUUM, rows move to
//! other page numbers and the same position holds other rows). At most these
//! two are tried, to bound a backup's work, and the second only when the first
//! did not already give a small delta (`codec/whole.rs`, `is_small`); the
//! smallest form is kept.

use super::sketch::features::Features;
use super::sketch::Sketcher;
use super::skip;
use crate::format::index::MAX_DELTA_DEPTH;
use crate::index::cache::ChunkLookup;
use crate::store::base_cache::BaseCache;
use crate::store::bases::Bases;
use crate::types::{ChunkId, ChunkRef};
use std::sync::Arc;

/// A candidate base: its id, raw bytes and depth.
pub(crate) type Base = (ChunkId, Arc<Vec<u8>>, u8);

/// Which same-position base is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Same {
    /// The parent's chunk at the position, where no skip-delta plan is at
    /// hand (S3, whose bases come from the base cache; no sketch of the
    /// parent on this machine).
    Chunk,
    /// The link of the parent's chunk's chain at this depth (skip.rs).
    Link(u8),
    /// None: this version is stored whole (the skip-delta cycle's end).
    Not,
}

/// What a new chunk's bases are chosen from.
pub(crate) struct Choice<'a> {
    pub parent: &'a [ChunkRef],
    pub bases: &'a Bases,
    pub index: &'a ChunkLookup,
    /// A store that pays per request: bases from this machine's base cache
    /// only (store/base_cache.rs), never a request.
    pub cache: Option<&'a BaseCache>,
    pub sketch: Option<&'a Sketcher>,
    pub same_base: Same,
    pub pos: u64,
    pub id: &'a ChunkId,
}

impl Choice<'_> {
    /// A base that is stored, readable, not the chunk itself and below the
    /// depth bound. A backup never fails for want of a base: one that cannot be
    /// read is left out.
    fn read(&self, base: ChunkId) -> Option<Base> {
        let (raw, depth) = match self.cache {
            Some(cache) => crate::store::base_cache::checked(cache, &base, self.index)?,
            None => self.bases.raw(&base, self.index).ok()?,
        };
        self.within((base, raw, depth))
    }

    /// `base`, unless it is as deep as the bound or deeper: `MAX_DELTA_DEPTH`,
    /// or `skip::MAX_DEPTH` with skip-delta bases (a plan for the position).
    fn within(&self, base: Base) -> Option<Base> {
        let bound = match self.same_base {
            Same::Chunk => MAX_DELTA_DEPTH,
            Same::Link(_) | Same::Not => skip::MAX_DEPTH,
        };
        (base.2 < bound).then_some(base)
    }

    fn stored(&self, p: u64) -> Option<ChunkId> {
        match self.parent.get(p as usize) {
            Some(ChunkRef::Stored(c)) if c != self.id => Some(*c),
            _ => None,
        }
    }

    /// The parent's chunk at the same position, or the link of its chain
    /// that [`Choice::same_base`] names.
    pub(crate) fn same(&self) -> Option<Base> {
        let chunk = self.stored(self.pos)?;
        match (self.same_base, self.cache) {
            (Same::Not, _) => None,
            (Same::Link(want), None) => {
                let (base, (raw, depth)) = self.bases.raw_toward(&chunk, self.index, want).ok()?;
                (base != *self.id)
                    .then_some((base, raw, depth))
                    .and_then(|b| self.within(b))
            }
            _ => self.read(chunk),
        }
    }

    /// The parent's chunk sharing the most features with the new one (whose
    /// features are `f`), unless it is the same-position one.
    pub(crate) fn found(&self, f: &Features) -> Option<Base> {
        let same = self.stored(self.pos);
        self.sketch
            .and_then(|s| s.found(f, self.pos))
            .and_then(|p| self.stored(p))
            .filter(|c| Some(*c) != same)
            .and_then(|c| self.read(c))
    }
}
