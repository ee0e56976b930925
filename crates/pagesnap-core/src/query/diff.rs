//! `pagesnap diff`: what changed between two snapshots, per table and index,
//! and what B's new chunks cost the store: the per-table churn no backup tool
//! shows.
//!
//! Which pages changed comes from the snapshots' page maps: a position whose
//! chunk is the same in both did not change, and no page is read to know it
//! (a chunk of several pages that changed is read, to tell its pages apart).
//! Which b-tree owns a page comes from the b-trees' interior pages
//! (`btree.rs`): about one page in a hundred of a table of small rows. Overflow
//! pages are traced from the changed leaves only, when a changed page is not
//! reached otherwise.

use super::btree::{self, PageOwners};
use super::pages::CachedImage;
use super::{explain, QueryOptions, Result};
use crate::restore::Position;
use crate::store::{Snapshot, Store};
use crate::types::{ChunkId, SnapshotId};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// How one table, index or other part of the file changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectDiff {
    pub name: String,
    /// `table`, `index`, `schema`, `free` (the free list), `pointer-map`,
    /// `lock-byte`, or `unknown` (overflow pages whose row's first page did not
    /// change, which `diff` does not trace).
    pub kind: String,
    /// The table an index belongs to (a table's own name for a table).
    pub table: String,
    /// Pages it holds in both snapshots whose bytes changed.
    pub changed: u64,
    /// Pages it holds in B and did not in A (new pages, or taken from the free
    /// list or another object).
    pub added: u64,
    /// Pages it held in A and does not in B.
    pub freed: u64,
    /// Stored bytes of B's chunks that A does not have, on this object's pages
    /// (a chunk of several pages is shared out among them).
    pub stored_bytes: u64,
}

/// What changed from snapshot A to snapshot B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotDiff {
    pub a: SnapshotId,
    pub b: SnapshotId,
    pub page_size_a: u32,
    pub page_size_b: u32,
    pub pages_a: u64,
    pub pages_b: u64,
    /// Objects with any change, most changed pages first.
    pub objects: Vec<ObjectDiff>,
    /// Stored bytes of B's chunks that A does not have: what keeping B costs
    /// on top of A.
    pub stored_bytes: u64,
    /// Pages read to find the owners and the changed pages of multi-page chunks
    /// (the page maps answer the rest).
    pub pages_read: u64,
}

impl Store {
    /// What changed from `a` to `b`, per table and index.
    pub fn diff_snapshots(&self, a: &Snapshot, b: &Snapshot) -> Result<SnapshotDiff> {
        let opts = QueryOptions::default();
        let (ca, ia) = self.open_image(a, &opts)?;
        let (cb, ib) = self.open_image(b, &opts)?;
        let (ra, rb) = (roots(&ca)?, roots(&cb)?);
        let side_a = Side::new(&ia);
        let side_b = Side::new(&ib);
        let changed = changed_pages(&side_a, &side_b)?;
        // The owners of both sides, at once (each reads its interior pages).
        let (oa, ob) = rayon::join(
            || side_a.owners(&ra, &changed),
            || side_b.owners(&rb, &changed),
        );
        let (oa, ob) = (oa?, ob?);
        let mut tally = Tally::default();
        let pages = side_a.pages.max(side_b.pages);
        let same_geometry = side_a.page_size == side_b.page_size;
        for p in 1..=pages {
            let owner_a = (p <= side_a.pages).then(|| ra.of(&oa, p));
            let owner_b = (p <= side_b.pages).then(|| rb.of(&ob, p));
            // `changed` holds every page only one side has.
            let differs = !same_geometry || changed.contains(&p);
            match (owner_a, owner_b) {
                (Some(x), Some(y)) if x == y => {
                    if differs {
                        tally.get(y).changed += 1;
                    }
                }
                // One side not traced (an overflow page whose row's leaf did
                // not change there): same bytes tell nothing; other bytes are
                // the traced side's object changing (overflow pages are
                // rewritten in place).
                (Some(x), Some(y)) if x.kind == "unknown" || y.kind == "unknown" => {
                    if differs {
                        let known = if x.kind == "unknown" { y } else { x };
                        tally.get(known).changed += 1;
                    }
                }
                (x, y) => {
                    if let Some(x) = x {
                        tally.get(x).freed += 1;
                    }
                    if let Some(y) = y {
                        tally.get(y).added += 1;
                    }
                }
            }
        }
        let stored_bytes = stored_cost(&side_a, &side_b, &ob, &rb, &mut tally)?;
        let mut objects: Vec<ObjectDiff> = tally
            .0
            .into_values()
            .filter(|o| o.changed + o.added + o.freed + o.stored_bytes > 0)
            .collect();
        objects.sort_by(|x, y| {
            (y.changed + y.added + y.freed)
                .cmp(&(x.changed + x.added + x.freed))
                .then(x.name.cmp(&y.name))
        });
        Ok(SnapshotDiff {
            a: a.id,
            b: b.id,
            page_size_a: side_a.page_size,
            page_size_b: side_b.page_size,
            pages_a: side_a.pages,
            pages_b: side_b.pages,
            objects,
            stored_bytes,
            pages_read: oa.pages_read + ob.pages_read + side_a.pages_read() + side_b.pages_read(),
        })
    }
}

/// One snapshot of the two: its image and its geometry.
struct Side<'a> {
    image: &'a CachedImage,
    page_size: u32,
    pages: u64,
    chunk_pages: u64,
    /// Pages read besides the owners' walk (multi-page chunks compared).
    read: std::sync::atomic::AtomicU64,
}

impl<'a> Side<'a> {
    fn new(image: &'a CachedImage) -> Self {
        let m = &image.reader().snapshot().manifest;
        Side {
            image,
            page_size: m.page_size,
            pages: image.reader().page_count(),
            chunk_pages: m.chunk_len() / m.page_size as u64,
            read: Default::default(),
        }
    }

    fn pages_read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chunk position `i`'s chunk: `None` for zeros.
    fn chunk(&self, i: usize) -> Result<Option<(ChunkId, u32)>> {
        match self.image.reader().position(i)? {
            Some(Position::Zero) => Ok(None),
            Some(Position::Stored(id, loc)) => Ok(Some((id, loc.entry.stored_len))),
            Some(Position::Unlocated(id)) => Err(crate::Error::ChunkMissing {
                snapshot: self.image.reader().snapshot().id,
                chunk: id,
            }
            .into()),
            None => Err(crate::Error::Internal(format!("chunk position {i} has no chunk")).into()),
        }
    }

    /// The owners of every page, and of the overflow pages of changed rows
    /// where a changed page is otherwise not reached.
    fn owners(&self, roots: &Roots, changed: &HashSet<u64>) -> Result<PageOwners> {
        let ps = self.page_size;
        let mut read = |n: u64| self.image.page(n);
        let mut owners = btree::page_owners(&mut read, ps, self.pages, &roots.pages)?;
        let untraced = changed
            .iter()
            .any(|&p| p <= self.pages && owners.of(p) == btree::UNKNOWN);
        if untraced {
            let mut leaves: Vec<u64> = changed
                .iter()
                .copied()
                .filter(|&p| p <= self.pages && (owners.of(p) as usize) < roots.pages.len())
                .collect();
            leaves.sort_unstable();
            btree::trace_overflow(&mut owners, &leaves, &mut read)?;
        }
        Ok(owners)
    }
}

/// The pages (numbered from 1) whose bytes differ between the sides: from the
/// chunk lists, reading only multi-page chunks that changed, and every page
/// only one side has. Empty when the page sizes differ (every page counts then).
fn changed_pages(a: &Side<'_>, b: &Side<'_>) -> Result<HashSet<u64>> {
    let mut out = HashSet::new();
    if a.page_size != b.page_size {
        return Ok(out);
    }
    let common = a.pages.min(b.pages);
    let per = a.chunk_pages.max(1);
    let positions = common.div_ceil(per) as usize;
    for i in 0..positions {
        if a.chunk(i)?.map(|c| c.0) == b.chunk(i)?.map(|c| c.0) {
            continue;
        }
        let first = i as u64 * per + 1;
        let last = (first + per - 1).min(common);
        if per == 1 {
            out.insert(first);
            continue;
        }
        for p in first..=last {
            let (x, y) = (a.image.page(p)?, b.image.page(p)?);
            a.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            b.read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if x != y {
                out.insert(p);
            }
        }
    }
    out.extend(common + 1..=a.pages.max(b.pages));
    Ok(out)
}

/// The stored bytes of B's chunks that A lacks, each counted once and shared
/// out among the pages of its first position in B.
fn stored_cost(
    a: &Side<'_>,
    b: &Side<'_>,
    owners: &PageOwners,
    roots: &Roots,
    tally: &mut Tally,
) -> Result<u64> {
    let count = |s: &Side<'_>| s.image.reader().chunk_count();
    let mut in_a: HashSet<ChunkId> = HashSet::with_capacity(count(a));
    for i in 0..count(a) {
        if let Some((id, _)) = a.chunk(i)? {
            in_a.insert(id);
        }
    }
    let mut total = 0;
    for i in 0..count(b) {
        let Some((id, stored)) = b.chunk(i)? else {
            continue;
        };
        if !in_a.insert(id) {
            continue;
        }
        total += stored as u64;
        let first = i as u64 * b.chunk_pages + 1;
        let last = (first + b.chunk_pages - 1).min(b.pages);
        let n = last + 1 - first;
        for (k, p) in (first..=last).enumerate() {
            // The remainder goes to the first pages, so the parts add up.
            let share = stored as u64 / n + u64::from((k as u64) < stored as u64 % n);
            tally.get(roots.of(owners, p)).stored_bytes += share;
        }
    }
    Ok(total)
}

/// What owns a page, as a key of the tally.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Owner {
    name: String,
    kind: &'static str,
    table: String,
}

impl Owner {
    fn fixed(name: &str, kind: &'static str) -> Owner {
        Owner {
            name: name.into(),
            kind,
            table: String::new(),
        }
    }
}

/// The owners a snapshot's pages can have: its b-trees (`sqlite_schema`, page
/// 1, and what it lists), numbered as `btree` numbers them, then the pages no
/// b-tree owns. Made once per snapshot, so that naming a page copies nothing.
struct Roots {
    /// Each b-tree's root page, in the order of `owners`.
    pages: Vec<u64>,
    /// The b-trees, then free, pointer-map, lock-byte and not traced.
    owners: Vec<Owner>,
}

impl Roots {
    fn new(trees: Vec<(Owner, u64)>) -> Roots {
        let (mut owners, pages): (Vec<Owner>, Vec<u64>) = trees.into_iter().unzip();
        owners.extend([
            Owner::fixed("(free pages)", "free"),
            Owner::fixed("(pointer maps)", "pointer-map"),
            Owner::fixed("(lock-byte page)", "lock-byte"),
            Owner::fixed("(not traced)", "unknown"),
        ]);
        Roots { pages, owners }
    }

    /// The owner of `page`.
    fn of(&self, owners: &PageOwners, page: u64) -> &Owner {
        let n = self.pages.len();
        let at = match owners.of(page) {
            btree::FREE => n,
            btree::POINTER_MAP => n + 1,
            btree::LOCK_BYTE => n + 2,
            tree if (tree as usize) < n => tree as usize,
            _ => n + 3,
        };
        &self.owners[at]
    }
}

#[derive(Default)]
struct Tally(BTreeMap<Owner, ObjectDiff>);

impl Tally {
    fn get(&mut self, o: &Owner) -> &mut ObjectDiff {
        // The key is copied only the first time an owner is met.
        if !self.0.contains_key(o) {
            let first = ObjectDiff {
                name: o.name.clone(),
                kind: o.kind.to_string(),
                table: o.table.clone(),
                ..ObjectDiff::default()
            };
            self.0.insert(o.clone(), first);
        }
        self.0.get_mut(o).expect("inserted above if it was missing")
    }
}

/// The b-trees of a snapshot: `sqlite_schema` (page 1) and what it lists.
fn roots(conn: &Connection) -> Result<Roots> {
    let run = || -> rusqlite::Result<Vec<(Owner, u64)>> {
        let schema = Owner {
            name: "sqlite_schema".into(),
            kind: "schema",
            table: "sqlite_schema".into(),
        };
        let mut out = vec![(schema, 1)];
        let mut stmt = conn.prepare(
            "SELECT name, type, tbl_name, rootpage FROM sqlite_schema WHERE rootpage > 0 ORDER BY rootpage",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            let owner = Owner {
                name: r.get(0)?,
                kind: if kind == "index" { "index" } else { "table" },
                table: r.get(2)?,
            };
            Ok((owner, r.get::<_, i64>(3)?.max(0) as u64))
        })?;
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    };
    run().map(Roots::new).map_err(|e| explain(conn, e))
}
