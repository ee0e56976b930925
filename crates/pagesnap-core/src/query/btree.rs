//! Which b-tree (table, index, the schema) owns each page of an SQLite database
//! image, reading as few pages as possible.
//!
//! `diff` attributes changed pages to tables and indexes. SQLite's `dbstat`
//! does that by reading every page, about as slow as a restore; this reads the
//! interior pages only. SQLite's b-trees are balanced (every leaf at the same
//! depth), so the children of an interior page are either all leaves or all
//! interior pages: reading its first child says which, and when they are
//! leaves the rest are owned without being read. Pages read ≈ interior pages
//! plus one leaf per interior page of the level above the leaves
//! (<https://www.sqlite.org/fileformat2.html>).
//!
//! Pages found by number or from the header: the free list, the pointer-map
//! pages of an auto-vacuum database and the lock-byte page (the helpers are
//! shared with `restore/salvage.rs`). Overflow pages hang off cells of leaves
//! (and of index interior pages): [`trace_overflow`] follows the chains of the
//! leaves it is given, those whose owner a caller needs for their overflow.
//!
//! Nothing here trusts the bytes: a page that is not what its parent says, a
//! pointer out of the file, a page reached twice (a cycle, two parents) leaves
//! the pages concerned [`UNKNOWN`]; every page is read at most once by
//! [`page_owners`], and every loop is bounded by the page count.

use crate::restore::salvage::{free_list, is_pointer_map, lock_byte_page};
use std::collections::HashSet;

/// Pages of the free list (trunks and leaves).
pub(crate) const FREE: u32 = u32::MAX;
/// Pointer-map pages of an auto-vacuum database.
pub(crate) const POINTER_MAP: u32 = u32::MAX - 1;
/// The page holding byte offset 1 GiB, which SQLite never uses (exists only in
/// files that large).
pub(crate) const LOCK_BYTE: u32 = u32::MAX - 2;
/// Not reached: overflow pages until [`trace_overflow`] gives them an owner,
/// pages no b-tree reaches, pages under a page that was not understood.
pub(crate) const UNKNOWN: u32 = u32::MAX - 3;

/// A reader of the image: page `n` (numbered from 1), page-size bytes; page 1
/// begins with the 100-byte database header.
pub(crate) type ReadPage<'a> = dyn FnMut(u64) -> crate::Result<Vec<u8>> + 'a;

/// Who owns each page of an image.
#[derive(Clone, Debug)]
pub(crate) struct PageOwners {
    /// Per page (index = page number − 1): an index into the roots given to
    /// [`page_owners`], or one of [`FREE`], [`POINTER_MAP`], [`LOCK_BYTE`], [`UNKNOWN`].
    pub owner: Vec<u32>,
    /// How many pages were read to find out (by [`page_owners`] and [`trace_overflow`]).
    pub pages_read: u64,
    /// Bytes of each page that SQLite uses (the page size less the reserved
    /// bytes of the header), which overflow tracing needs; 0 when the header
    /// made no sense (then every page but the lock-byte page is unknown).
    pub usable: u32,
}

impl PageOwners {
    /// The owner of page `page` (from 1); [`UNKNOWN`] outside the image.
    pub(crate) fn of(&self, page: u64) -> u32 {
        page.checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.owner.get(i).copied())
            .unwrap_or(UNKNOWN)
    }
}

const INDEX_INTERIOR: u8 = 0x02;
const TABLE_INTERIOR: u8 = 0x05;
const INDEX_LEAF: u8 = 0x0a;
const TABLE_LEAF: u8 = 0x0d;

/// The leaf type of the b-trees whose interior pages are of type `interior`.
fn leaf_of(interior: u8) -> u8 {
    interior + 8
}

/// Where a page's b-tree header starts: after the database header on page 1.
fn header_at(page: u64) -> usize {
    if page == 1 {
        100
    } else {
        0
    }
}

fn page_type(bytes: &[u8], page: u64) -> Option<u8> {
    bytes.get(header_at(page)).copied()
}

/// The owner of every page of an image of `page_count` pages of `page_size`
/// bytes, read through `read`. `roots` are the root pages of the b-trees as
/// `sqlite_schema` gives them (`rootpage` of its rows, 0 for those without a
/// b-tree); the caller includes the schema itself, root 1, at the index it
/// wants (`diff` puts it first). A page owned by a b-tree gets the index of its
/// root in `roots`; overflow pages are [`UNKNOWN`] (see [`trace_overflow`]).
/// Fails only when `read` does.
pub(crate) fn page_owners(
    read: &mut ReadPage<'_>,
    page_size: u32,
    page_count: u64,
    roots: &[u64],
) -> crate::Result<PageOwners> {
    let len = usize::try_from(page_count).unwrap_or(usize::MAX);
    let mut walk = Walk {
        read,
        page_count,
        owners: PageOwners {
            owner: vec![UNKNOWN; len],
            pages_read: 0,
            usable: 0,
        },
        rejected: HashSet::new(),
        page1: None,
    };
    let lock_byte = lock_byte_page(page_size);
    if lock_byte <= page_count {
        walk.set(lock_byte, LOCK_BYTE);
    }
    if page_count == 0 {
        return Ok(walk.owners);
    }
    let header = walk.read(1)?;
    // SQLite refuses a usable size under 480 bytes; so does this (a header that
    // makes no sense leaves everything unknown).
    let usable =
        (page_size as usize).saturating_sub(header.get(20).copied().unwrap_or(255) as usize);
    if header.len() != page_size as usize || usable < 480 {
        return Ok(walk.owners);
    }
    walk.owners.usable = usable as u32;
    if be32(&header, 52).is_some_and(|largest_root| largest_root != 0) {
        for p in 2..=page_count {
            if p != lock_byte && is_pointer_map(p, usable as u64, lock_byte) {
                walk.set(p, POINTER_MAP);
            }
        }
    }
    for p in free_list(&mut |p| walk.read(p), page_count, &header)? {
        if walk.owners.of(p) == UNKNOWN {
            walk.set(p, FREE);
        }
    }
    for (i, &root) in roots.iter().enumerate().take(UNKNOWN as usize) {
        walk.tree(root, i as u32, usable)?;
    }
    Ok(walk.owners)
}

/// The state of a [`page_owners`] walk.
struct Walk<'r, 'a> {
    read: &'r mut ReadPage<'a>,
    page_count: u64,
    owners: PageOwners,
    /// Pages read and found not to be what their parent said: never read again.
    rejected: HashSet<u64>,
    /// Page 1, read for the header, again the root of the schema.
    page1: Option<Vec<u8>>,
}

impl Walk<'_, '_> {
    fn read(&mut self, page: u64) -> crate::Result<Vec<u8>> {
        if page == 1 {
            if let Some(p) = &self.page1 {
                return Ok(p.clone());
            }
        }
        self.owners.pages_read += 1;
        let bytes = (self.read)(page)?;
        if page == 1 {
            self.page1 = Some(bytes.clone());
        }
        Ok(bytes)
    }

    fn set(&mut self, page: u64, owner: u32) {
        if let Some(o) = page
            .checked_sub(1)
            .and_then(|i| self.owners.owner.get_mut(i as usize))
        {
            *o = owner;
        }
    }

    /// Whether `page` may still be given an owner: in the file, not owned, not rejected.
    fn open(&self, page: u64) -> bool {
        (1..=self.page_count).contains(&page)
            && self.owners.of(page) == UNKNOWN
            && !self.rejected.contains(&page)
    }

    /// Gives every page of the b-tree rooted at `root` the owner `owner`.
    fn tree(&mut self, root: u64, owner: u32, usable: usize) -> crate::Result<()> {
        if !self.open(root) {
            return Ok(());
        }
        let bytes = self.read(root)?;
        let (kind, children) = match page_type(&bytes, root) {
            Some(TABLE_LEAF | INDEX_LEAF) => {
                self.set(root, owner);
                return Ok(());
            }
            Some(kind @ (TABLE_INTERIOR | INDEX_INTERIOR)) => (kind, &bytes),
            _ => {
                self.rejected.insert(root);
                return Ok(());
            }
        };
        // Interior pages owned and read, whose children are still to be owned.
        let mut stack = Vec::new();
        self.interior(root, children, owner, usable, &mut stack);
        while let Some(children) = stack.pop() {
            let children: Vec<u64> = children.into_iter().filter(|&c| self.open(c)).collect();
            let Some(&first) = children.first() else {
                continue;
            };
            let bytes = self.read(first)?;
            if page_type(&bytes, first) == Some(leaf_of(kind)) {
                // Its siblings are leaves too: owned unread.
                for c in children {
                    if self.open(c) {
                        self.set(c, owner);
                    }
                }
                continue;
            }
            // Interior children (or a first child not understood): each is read.
            self.child(first, &bytes, kind, owner, usable, &mut stack);
            for c in children.into_iter().skip(1) {
                if self.open(c) {
                    let bytes = self.read(c)?;
                    self.child(c, &bytes, kind, owner, usable, &mut stack);
                }
            }
        }
        Ok(())
    }

    /// A child read of a b-tree of interior pages of type `kind`: a leaf is
    /// owned, an interior page owned and its children stacked, anything else
    /// rejected.
    fn child(
        &mut self,
        page: u64,
        bytes: &[u8],
        kind: u8,
        owner: u32,
        usable: usize,
        stack: &mut Vec<Vec<u64>>,
    ) {
        match page_type(bytes, page) {
            Some(t) if t == leaf_of(kind) => self.set(page, owner),
            Some(t) if t == kind => self.interior(page, bytes, owner, usable, stack),
            _ => {
                self.rejected.insert(page);
            }
        }
    }

    fn interior(
        &mut self,
        page: u64,
        bytes: &[u8],
        owner: u32,
        usable: usize,
        stack: &mut Vec<Vec<u64>>,
    ) {
        match interior_children(bytes, page, usable) {
            Some(children) => {
                self.set(page, owner);
                stack.push(children);
            }
            None => {
                self.rejected.insert(page);
            }
        }
    }
}

/// The children of an interior page (left children of its cells, then the
/// right-most pointer), or None when its cell count or a cell pointer does not
/// fit in the page.
fn interior_children(bytes: &[u8], page: u64, usable: usize) -> Option<Vec<u64>> {
    let usable = usable.min(bytes.len());
    let h = header_at(page);
    let cells = be16(bytes, h + 3)? as usize;
    let pointers = h + 12;
    let content = pointers + 2 * cells;
    if content > usable {
        return None;
    }
    let mut out = Vec::with_capacity(cells + 1);
    for i in 0..cells {
        let at = be16(bytes, pointers + 2 * i)? as usize;
        if at < content || at + 4 > usable {
            return None;
        }
        out.push(be32(bytes, at)? as u64);
    }
    out.push(be32(bytes, h + 8)? as u64);
    Some(out)
}

/// Reads each of `pages` that a b-tree owns and that holds payload (table and
/// index leaves, index interior pages; others are skipped once read), follows
/// the overflow chain of each of its cells and gives those pages the page's
/// owner. A chain stops at a page out of the file or already owned (a cycle, a
/// page two chains claim), and after as many pages as its payload needs: the
/// last page of a chain is owned without being read. Fails only when `read` does.
pub(crate) fn trace_overflow(
    owners: &mut PageOwners,
    pages: &[u64],
    read: &mut ReadPage<'_>,
) -> crate::Result<()> {
    let usable = owners.usable as u64;
    if usable < 480 {
        return Ok(());
    }
    let page_count = owners.owner.len() as u64;
    for &page in pages {
        let owner = owners.of(page);
        if owner >= UNKNOWN {
            continue;
        }
        owners.pages_read += 1;
        let bytes = read(page)?;
        let h = header_at(page);
        let (kind, pointers) = match page_type(&bytes, page) {
            Some(k @ (TABLE_LEAF | INDEX_LEAF)) => (k, h + 8),
            Some(INDEX_INTERIOR) => (INDEX_INTERIOR, h + 12),
            _ => continue,
        };
        let cells = be16(&bytes, h + 3).unwrap_or(0) as usize;
        for i in 0..cells {
            let Some(at) = be16(&bytes, pointers + 2 * i) else {
                break;
            };
            let Some((mut next, mut left)) = overflow(&bytes, at as usize, kind, usable) else {
                continue;
            };
            while left > 0 && (2..=page_count).contains(&next) && owners.of(next) == UNKNOWN {
                owners.owner[next as usize - 1] = owner;
                left -= 1;
                if left == 0 {
                    break;
                }
                owners.pages_read += 1;
                let page = read(next)?;
                next = be32(&page, 0).unwrap_or(0) as u64;
            }
        }
    }
    Ok(())
}

/// The first overflow page of the cell at `at` of a page of type `kind`, and
/// how many pages its chain has; None when the payload fits in the page (or
/// the cell makes no sense).
fn overflow(bytes: &[u8], at: usize, kind: u8, usable: u64) -> Option<(u64, u64)> {
    let usable_bytes = (usable as usize).min(bytes.len());
    let mut at = at;
    if kind == INDEX_INTERIOR {
        at += 4; // the left child
    }
    let (payload, n) = varint(bytes.get(at..usable_bytes)?)?;
    at += n;
    if kind == TABLE_LEAF {
        let (_rowid, n) = varint(bytes.get(at..usable_bytes)?)?;
        at += n;
    }
    // The format's X (most payload kept in the page), M (least) and K.
    let most = if kind == TABLE_LEAF {
        usable - 35
    } else {
        (usable - 12) * 64 / 255 - 23
    };
    if payload <= most {
        return None;
    }
    let least = (usable - 12) * 32 / 255 - 23;
    let k = least + (payload - least) % (usable - 4);
    let local = if k <= most { k } else { least };
    let pointer = at.checked_add(local as usize)?;
    if pointer + 4 > usable_bytes {
        return None;
    }
    let first = be32(bytes, pointer)? as u64;
    Some((first, (payload - local).div_ceil(usable - 4)))
}

/// An SQLite varint (1 to 9 bytes, big-endian, 7 bits a byte but 8 in the
/// ninth) and its length.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *bytes.get(i)?;
        if i == 8 {
            return Some(((v << 8) | b as u64, 9));
        }
        v = (v << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use std::collections::HashMap;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    /// Reads pages straight from the file at `path`.
    fn file_reader(path: &Path, page_size: u32) -> impl FnMut(u64) -> crate::Result<Vec<u8>> {
        let path = path.to_path_buf();
        move |page| {
            let io = |source| crate::Error::Io {
                path: path.clone(),
                source,
            };
            let f = std::fs::File::open(&path).map_err(io)?;
            let mut buf = vec![0u8; page_size as usize];
            f.read_exact_at(&mut buf, (page - 1) * page_size as u64)
                .map_err(io)?;
            Ok(buf)
        }
    }

    /// Reads pages from an image in memory (a page past its end reads as an error).
    fn memory_reader(pages: &[Vec<u8>]) -> impl FnMut(u64) -> crate::Result<Vec<u8>> + '_ {
        move |page| {
            let i = usize::try_from(page).ok().and_then(|p| p.checked_sub(1));
            i.and_then(|i| pages.get(i))
                .cloned()
                .ok_or(crate::Error::Invalid {
                    what: "page",
                    detail: format!("{page} is not in the image"),
                })
        }
    }

    /// A database built by `sql` (run after the `pragmas`).
    fn build(dir: &Path, name: &str, pragmas: &str, sql: &str) -> anyhow::Result<PathBuf> {
        let db = dir.join(name);
        let c = Connection::open(&db)?;
        c.execute_batch(pragmas)?;
        c.execute_batch(sql)?;
        Ok(db)
    }

    /// The b-trees as `diff` gives them: the schema first, then `sqlite_schema`'s rows.
    fn roots(c: &Connection) -> anyhow::Result<(Vec<String>, Vec<u64>)> {
        let mut names = vec!["sqlite_schema".to_string()];
        let mut roots = vec![1];
        let mut stmt = c.prepare("SELECT name, rootpage FROM sqlite_schema WHERE rootpage > 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, root) = row?;
            names.push(name);
            roots.push(root as u64);
        }
        Ok((names, roots))
    }

    /// dbstat's view of a file: owner name and whether overflow, per page.
    struct Oracle {
        page_size: u32,
        page_count: u64,
        freelist: u64,
        names: Vec<String>,
        roots: Vec<u64>,
        /// Page → (index into names, is an overflow page).
        pages: HashMap<u64, (u32, bool)>,
        auto_vacuum: bool,
    }

    fn oracle(db: &Path) -> anyhow::Result<Oracle> {
        let c = Connection::open(db)?;
        let page_size: u32 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_count = c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? as u64;
        let freelist = c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))? as u64;
        let auto_vacuum: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        assert_eq!(std::fs::metadata(db)?.len(), page_count * page_size as u64);
        let (names, roots) = roots(&c)?;
        let mut pages = HashMap::new();
        let mut stmt = c.prepare("SELECT name, pageno, pagetype FROM dbstat")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (name, page, kind) = row?;
            let name = if name == "sqlite_master" {
                "sqlite_schema".to_string()
            } else {
                name
            };
            let owner = names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| anyhow::anyhow!("dbstat names {name}, not in the schema"))?;
            let old = pages.insert(page as u64, (owner as u32, kind == "overflow"));
            assert!(old.is_none(), "dbstat lists page {page} twice");
        }
        Ok(Oracle {
            page_size,
            page_count,
            freelist,
            names,
            roots,
            pages,
            auto_vacuum: auto_vacuum != 0,
        })
    }

    /// What `check` found.
    struct Checked {
        page_count: u64,
        /// Pages read by page_owners alone.
        pages_read: u64,
        overflow: usize,
        free: usize,
        pointer_maps: usize,
    }

    /// Runs page_owners and then trace_overflow on `db` and checks every page
    /// against dbstat: b-tree pages have dbstat's owner, overflow pages are
    /// unknown until traced and then have it, the free list has
    /// `freelist_count` pages, every other page is a pointer-map page (only in
    /// an auto-vacuum database), nothing is left unknown.
    fn check(db: &Path) -> anyhow::Result<Checked> {
        let o = oracle(db)?;
        let mut read = file_reader(db, o.page_size);
        let mut got = page_owners(&mut read, o.page_size, o.page_count, &o.roots)?;
        assert_eq!(got.owner.len() as u64, o.page_count);
        let pages_read = got.pages_read;
        assert!(
            pages_read <= o.page_count,
            "{pages_read} reads of {} pages",
            o.page_count
        );
        let mut free = 0;
        let mut pointer_maps = 0;
        let mut overflow = 0;
        for p in 1..=o.page_count {
            let owner = got.of(p);
            match o.pages.get(&p) {
                Some(&(_, true)) => {
                    overflow += 1;
                    assert_eq!(owner, UNKNOWN, "overflow page {p} before tracing");
                }
                Some(&(want, false)) => assert_eq!(
                    owner, want,
                    "page {p}: {} instead of {}",
                    owner, o.names[want as usize]
                ),
                None if owner == FREE => free += 1,
                None if owner == POINTER_MAP => {
                    assert!(o.auto_vacuum, "pointer-map page {p} without auto-vacuum");
                    pointer_maps += 1;
                }
                None => panic!("page {p} is in no b-tree and is {owner}"),
            }
        }
        assert_eq!(free as u64, o.freelist);
        // Every b-tree page (interior table pages too: skipped) is given.
        let btree: Vec<u64> = (1..=o.page_count)
            .filter(|p| matches!(o.pages.get(p), Some((_, false))))
            .collect();
        trace_overflow(&mut got, &btree, &mut read)?;
        for p in 1..=o.page_count {
            if let Some(&(want, true)) = o.pages.get(&p) {
                assert_eq!(
                    got.of(p),
                    want,
                    "overflow page {p} of {}",
                    o.names[want as usize]
                );
            }
        }
        // Tracing again finds every chain owned: nothing changes.
        let before = got.owner.clone();
        trace_overflow(&mut got, &btree, &mut read)?;
        assert_eq!(got.owner, before);
        Ok(Checked {
            page_count: o.page_count,
            pages_read,
            overflow,
            free,
            pointer_maps,
        })
    }

    /// Tables with rowids, a WITHOUT ROWID table, indexes (one with keys long
    /// enough to overflow from interior pages), 10 KB blobs, deleted rows.
    const MIXED: &str = "
        CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT UNIQUE, b BLOB, c INTEGER);
        CREATE INDEX t_c ON t(c);
        CREATE INDEX t_long ON t(c, substr(a, 1, 10) || hex(zeroblob(200)));
        CREATE TABLE w(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
        CREATE TABLE empty(x);
        INSERT INTO t(a, b, c)
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
          SELECT printf('%06d-%s', i * 7919 % 3001, hex(randomblob(8))),
                 CASE WHEN i % 10 = 0 THEN randomblob(10000) ELSE randomblob(i % 50) END,
                 i % 97 FROM n;
        INSERT INTO w
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
          SELECT printf('%05d', i) || hex(randomblob(i % 3 * 200)),
                 CASE WHEN i % 7 = 0 THEN randomblob(10000) ELSE randomblob(20) END FROM n;
        DELETE FROM t WHERE id % 3 = 0;
        DELETE FROM w WHERE k LIKE '%1';
    ";

    #[test]
    fn every_page_has_dbstats_owner() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for page_size in [1024, 4096] {
            let db = build(
                dir.path(),
                &format!("mixed-{page_size}.db"),
                &format!("PRAGMA page_size={page_size}"),
                MIXED,
            )?;
            let c = check(&db)?;
            assert!(c.overflow > 100, "{} overflow pages", c.overflow);
            // With 1 KiB pages the free list needs several trunks (254 leaves each).
            assert!(
                c.free > if page_size == 1024 { 600 } else { 50 },
                "{}",
                c.free
            );
            assert_eq!(c.pointer_maps, 0);
            assert!(
                c.pages_read * 3 < c.page_count,
                "{} of {}",
                c.pages_read,
                c.page_count
            );
        }
        // Keys of 400 bytes and more overflow from index interior pages too
        // (1 KiB pages keep at most 230 bytes of an index cell).
        let db = dir.path().join("mixed-1024.db");
        let o = oracle(&db)?;
        let mut read = file_reader(&db, 1024);
        let mut got = page_owners(&mut read, 1024, o.page_count, &o.roots)?;
        let interiors: Vec<u64> = (1..=o.page_count)
            .filter(|&p| read(p).is_ok_and(|b| b[0] == INDEX_INTERIOR) && o.pages.contains_key(&p))
            .collect();
        assert!(!interiors.is_empty());
        trace_overflow(&mut got, &interiors, &mut read)?;
        let traced: Vec<u64> = (1..=o.page_count)
            .filter(|p| matches!(o.pages.get(p), Some((_, true))) && got.of(*p) != UNKNOWN)
            .collect();
        assert!(
            traced.len() > 10,
            "{} overflow pages of index interior pages",
            traced.len()
        );
        for p in traced {
            assert_eq!(got.of(p), o.pages[&p].0);
        }
        Ok(())
    }

    #[test]
    fn auto_vacuum_pointer_maps() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for mode in ["FULL", "INCREMENTAL"] {
            let db = build(
                dir.path(),
                &format!("{mode}.db"),
                &format!("PRAGMA page_size=1024; PRAGMA auto_vacuum={mode}"),
                MIXED,
            )?;
            let c = check(&db)?;
            // One pointer-map page every 205 pages (1024 / 5 + 1).
            assert_eq!(c.pointer_maps as u64, (c.page_count - 2) / 205 + 1);
            if mode == "FULL" {
                assert_eq!(c.free, 0);
            } else {
                assert!(c.free > 600, "{}", c.free);
            }
        }
        Ok(())
    }

    /// Reserved bytes at the end of each page (as an encryption extension keeps):
    /// the usable size shrinks, and with it where cells overflow. SQLite has no
    /// pragma for it; a fresh one-page database is given them in its header.
    #[test]
    fn reserved_bytes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = build(
            dir.path(),
            "reserved.db",
            "PRAGMA page_size=1024",
            "PRAGMA user_version=1",
        )?;
        let mut bytes = std::fs::read(&db)?;
        assert_eq!(bytes.len(), 1024);
        bytes[20] = 40;
        // The schema's (empty) content area starts at the end of the usable bytes.
        bytes[105..107].copy_from_slice(&984u16.to_be_bytes());
        std::fs::write(&db, &bytes)?;
        let c = Connection::open(&db)?;
        c.execute_batch(MIXED)?;
        let check_sql: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(check_sql, "ok");
        drop(c);
        assert_eq!(std::fs::read(&db)?[20], 40);
        let c = check(&db)?;
        assert!(c.overflow > 100);
        Ok(())
    }

    /// Payloads of every size from just under to well over where cells
    /// overflow (X), across both choices of the local size (K or M), in table
    /// leaves and in index pages, for three page sizes.
    #[test]
    fn payloads_around_the_overflow_thresholds() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for page_size in [512i64, 1024, 4096] {
            let u = page_size;
            let table_x = u - 35;
            let index_x = (u - 12) * 64 / 255 - 23;
            // A record of one blob of n bytes is n + 2 or n + 3 bytes (its header).
            let db = build(
                dir.path(),
                &format!("sizes-{page_size}.db"),
                &format!("PRAGMA page_size={page_size}"),
                &format!(
                    "CREATE TABLE t(b BLOB);
                     CREATE TABLE i(b BLOB);
                     CREATE INDEX i_b ON i(b);
                     INSERT INTO t WITH RECURSIVE n(i) AS
                       (SELECT {} UNION ALL SELECT i + 1 FROM n WHERE i < {})
                       SELECT randomblob(i) FROM n;
                     INSERT INTO i WITH RECURSIVE n(i) AS
                       (SELECT {} UNION ALL SELECT i + 1 FROM n WHERE i < {})
                       SELECT randomblob(i) FROM n;",
                    table_x - 8,
                    table_x + u + 8,
                    index_x - 10,
                    index_x + u + 8
                ),
            )?;
            let c = check(&db)?;
            assert!(c.overflow as i64 > u, "{} overflow pages", c.overflow);
        }
        Ok(())
    }

    /// 20 MB of small rows: pages read are a small fraction of the pages.
    #[test]
    fn reads_few_pages_of_a_large_table() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = build(
            dir.path(),
            "large.db",
            "PRAGMA page_size=4096",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             CREATE INDEX t_v ON t(v);
             INSERT INTO t(v)
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
               SELECT printf('%08d', i * 7919 % 300007) || '-some-text' FROM n;",
        )?;
        let c = check(&db)?;
        eprintln!("large: {} pages read of {}", c.pages_read, c.page_count);
        assert!(c.page_count * 4096 > 20_000_000, "{} pages", c.page_count);
        assert!(
            c.pages_read * 10 <= c.page_count,
            "{} of {}",
            c.pages_read,
            c.page_count
        );
        Ok(())
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random inserts, updates and deletes of small and overflowing rows, in
    /// tables with and without rowids and their indexes, checked after each round.
    #[test]
    fn random_changes_keep_every_owner() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for seed in 1..=4u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let page_size = [512, 1024, 4096, 8192][seed as usize % 4];
            let auto_vacuum = ["NONE", "FULL", "INCREMENTAL"][rng.below(3) as usize];
            let db = build(
                dir.path(),
                &format!("random-{seed}.db"),
                &format!("PRAGMA page_size={page_size}; PRAGMA auto_vacuum={auto_vacuum}"),
                "CREATE TABLE a(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
                 CREATE INDEX a_k ON a(k);
                 CREATE TABLE b(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
                 CREATE INDEX b_v ON b(length(v), k);",
            )?;
            let c = Connection::open(&db)?;
            for _round in 0..4 {
                c.execute_batch("BEGIN")?;
                for _ in 0..400 {
                    let size = match rng.below(10) {
                        0 => 5000 + rng.below(20000),
                        1..=2 => 300 + rng.below(2000),
                        _ => rng.below(100),
                    } as i64;
                    let key = format!("{:x}", rng.below(5000)).repeat(1 + rng.below(40) as usize);
                    let id = rng.below(2000) as i64;
                    match rng.below(6) {
                        0..=1 => c.execute(
                            "INSERT OR REPLACE INTO a(id, k, v) VALUES (?1, ?2, randomblob(?3))",
                            rusqlite::params![id, key, size],
                        )?,
                        2 => c.execute(
                            "INSERT OR REPLACE INTO b(k, v) VALUES (?1, randomblob(?2))",
                            rusqlite::params![key, size],
                        )?,
                        3 => c.execute(
                            "UPDATE a SET v = randomblob(?2) WHERE id = ?1",
                            rusqlite::params![id, size],
                        )?,
                        4 => c.execute("DELETE FROM a WHERE id BETWEEN ?1 AND ?1 + 20", [id])?,
                        _ => {
                            c.execute(
                                "DELETE FROM b WHERE k < ?1 AND k > ?1 || '0'",
                                [key.clone()],
                            )? + c
                                .execute("DELETE FROM b WHERE k IN (SELECT k FROM b LIMIT 3)", [])?
                        }
                    };
                }
                c.execute_batch("COMMIT")?;
                if auto_vacuum == "INCREMENTAL" && rng.below(2) == 0 {
                    c.execute_batch("PRAGMA incremental_vacuum(20)")?;
                }
                check(&db)?;
            }
        }
        Ok(())
    }

    #[test]
    fn lock_byte_page_numbers() {
        assert_eq!(lock_byte_page(512), 2_097_153);
        assert_eq!(lock_byte_page(1024), 1_048_577);
        assert_eq!(lock_byte_page(4096), 262_145);
        assert_eq!(lock_byte_page(65536), 16_385);
    }

    /// A page 1 of `page_size` bytes: a database header and an empty schema leaf.
    fn page1(page_size: u32, auto_vacuum: bool) -> Vec<u8> {
        let mut p = vec![0u8; page_size as usize];
        p[..16].copy_from_slice(b"SQLite format 3\0");
        let size = if page_size == 65536 {
            1
        } else {
            page_size as u16
        };
        p[16..18].copy_from_slice(&size.to_be_bytes());
        if auto_vacuum {
            p[52..56].copy_from_slice(&1u32.to_be_bytes());
        }
        p[100] = TABLE_LEAF;
        p[105..107].copy_from_slice(&(page_size as u16).to_be_bytes());
        p
    }

    /// A 1 GiB file of 1 KiB pages: the lock-byte page is 1048577, where the
    /// pointer map of pages 1048577.. would fall (1048575 = 5115 × 205), so
    /// SQLite puts it on the next page. Only page 1 is read.
    #[test]
    fn lock_byte_and_the_pointer_map_it_displaces() -> anyhow::Result<()> {
        let first = page1(1024, true);
        let mut read = |p: u64| Ok(if p == 1 { first.clone() } else { vec![0; 1024] });
        let got = page_owners(&mut read, 1024, 1_048_900, &[1])?;
        assert_eq!(got.pages_read, 1);
        assert_eq!(got.of(1), 0);
        assert_eq!(got.of(1_048_577), LOCK_BYTE);
        assert_eq!(got.of(1_048_578), POINTER_MAP);
        assert_eq!(got.of(1_048_577 - 205), POINTER_MAP);
        // The next is where it would have been: only the displaced one moves.
        assert_eq!(got.of(1_048_577 + 205), POINTER_MAP);
        assert_eq!(got.of(1_048_578 + 205), UNKNOWN);
        assert_eq!(got.of(2), POINTER_MAP);
        assert_eq!(got.of(207), POINTER_MAP);
        assert_eq!(got.of(206), UNKNOWN);
        let maps = got.owner.iter().filter(|&&o| o == POINTER_MAP).count();
        assert_eq!(maps, (1_048_900 - 2) / 205 + 1);
        // A file shorter than 1 GiB has no lock-byte page.
        let got = page_owners(&mut read, 1024, 1_048_576, &[1])?;
        assert!(!got.owner.contains(&LOCK_BYTE));
        Ok(())
    }

    /// The pages of a database file, and its oracle.
    fn image(db: &Path) -> anyhow::Result<(Vec<Vec<u8>>, Oracle)> {
        let o = oracle(db)?;
        let bytes = std::fs::read(db)?;
        Ok((
            bytes
                .chunks(o.page_size as usize)
                .map(|c| c.to_vec())
                .collect(),
            o,
        ))
    }

    /// A page of garbage in place of each b-tree page in turn (interior pages,
    /// leaves, roots; random bytes, some with a b-tree page type): nothing
    /// panics, each page is read at most once, the garbage page is unknown or
    /// (a leaf-typed one under a parent) owned as its parent's, and no page gets
    /// an owner dbstat does not give it, but for what garbage points to.
    #[test]
    fn garbage_pages_are_unknown() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = build(dir.path(), "g.db", "PRAGMA page_size=1024", MIXED)?;
        let (pages, o) = image(&db)?;
        let mut rng = Rng(7);
        let mut damaged_somewhere = 0;
        for p in 2..=o.page_count {
            let Some((_, false)) = o.pages.get(&p) else {
                continue;
            };
            if p % 3 != 0 && pages[p as usize - 1][0] & 0x08 != 0 {
                continue; // a third of the leaves is enough
            }
            let mut bad = pages.clone();
            let g = &mut bad[p as usize - 1];
            for b in g.iter_mut() {
                *b = rng.next() as u8;
            }
            let typed = [
                None,
                Some(TABLE_INTERIOR),
                Some(INDEX_INTERIOR),
                Some(TABLE_LEAF),
            ][rng.below(4) as usize];
            match typed {
                Some(t) => g[0] = t,
                None => {
                    if matches!(g[0], 0x02 | 0x05 | 0x0a | 0x0d) {
                        g[0] = 0xff;
                    }
                }
            }
            let mut read = memory_reader(&bad);
            let mut got = page_owners(&mut read, o.page_size, o.page_count, &o.roots)?;
            assert!(got.pages_read <= o.page_count);
            let interior = pages[p as usize - 1][0] & 0x08 == 0;
            if typed.is_none() && interior {
                assert_eq!(got.of(p), UNKNOWN, "garbage page {p}");
            }
            // A leaf other than the first of its parent is not read: it keeps
            // the owner its parent gives it. Nothing gets a wrong owner (the
            // garbage's pointers, random 32-bit numbers, miss this small file).
            for q in 1..=o.page_count {
                let want = match o.pages.get(&q) {
                    Some(&(w, false)) => w,
                    Some((_, true)) => UNKNOWN,
                    None => FREE,
                };
                assert!(
                    got.of(q) == want || got.of(q) == UNKNOWN,
                    "page {q} (garbage {p})"
                );
            }
            let all: Vec<u64> = (1..=o.page_count).collect();
            trace_overflow(&mut got, &all, &mut read)?;
            if (1..=o.page_count).any(|q| got.of(q) == UNKNOWN) {
                damaged_somewhere += 1;
            }
        }
        assert!(damaged_somewhere > 10);
        Ok(())
    }

    /// Every page but page 1 random, many times over: no panic, no endless
    /// loop, every page read at most once by page_owners.
    #[test]
    fn random_images_never_panic() -> anyhow::Result<()> {
        let mut rng = Rng(42);
        for round in 0..300 {
            let page_size = 512u32;
            let count = 2 + rng.below(40);
            let mut pages = vec![page1(page_size, round % 2 == 0)];
            // Page 1 an interior page half the time, its cells random.
            if round % 3 == 0 {
                let p = &mut pages[0];
                p[100] = [TABLE_INTERIOR, INDEX_INTERIOR][rng.below(2) as usize];
                for b in p[103..].iter_mut() {
                    *b = rng.next() as u8;
                }
                p[103..105].copy_from_slice(&(rng.below(8) as u16).to_be_bytes());
            }
            p32(&mut pages[0], 32, rng.below(count + 2) as u32);
            p32(&mut pages[0], 36, rng.below(50) as u32);
            for _ in 1..count {
                let mut g: Vec<u8> = (0..page_size).map(|_| rng.next() as u8).collect();
                g[0] = [0x02, 0x05, 0x0a, 0x0d, 0x00][rng.below(5) as usize];
                // Small numbers where pointers are, so they land in the file.
                for at in [0, 4, 8] {
                    p32(&mut g, at, rng.below(count + 2) as u32);
                }
                g[3..5].copy_from_slice(&(rng.below(20) as u16).to_be_bytes());
                for i in 0..20 {
                    let cell = 100 + rng.below(400) as u16;
                    let at = [8, 12][rng.below(2) as usize] + 2 * i;
                    g[at..at + 2].copy_from_slice(&cell.to_be_bytes());
                    p32(&mut g, cell as usize, rng.below(count + 2) as u32);
                }
                pages.push(g);
            }
            let roots: Vec<u64> = (0..5).map(|_| rng.below(count + 2)).collect();
            let mut read = memory_reader(&pages);
            let mut got = page_owners(&mut read, page_size, count, &roots)?;
            assert!(got.pages_read <= count, "round {round}");
            let all: Vec<u64> = (0..count + 3).collect();
            trace_overflow(&mut got, &all, &mut read)?;
            assert_eq!(got.owner.len() as u64, count);
        }
        Ok(())
    }

    fn p32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Interior pages pointing at each other and themselves, and overflow
    /// chains that loop: the walk ends, each page owned at most once.
    #[test]
    fn cycles_end() -> anyhow::Result<()> {
        let ps = 512usize;
        let interior = |children: &[u32], right: u32| {
            let mut p = vec![0u8; ps];
            p[0] = TABLE_INTERIOR;
            p[3..5].copy_from_slice(&(children.len() as u16).to_be_bytes());
            p32(&mut p, 8, right);
            for (i, &c) in children.iter().enumerate() {
                let cell = 300 + 8 * i;
                p[12 + 2 * i..14 + 2 * i].copy_from_slice(&(cell as u16).to_be_bytes());
                p32(&mut p, cell, c);
                p[cell + 4] = i as u8; // the key, a one-byte varint
            }
            p
        };
        // Page 1: the schema, an interior page over 2 and 3; 2 over itself and
        // 3; 3 over 2 and 1; 4 over 4.
        let mut p1 = page1(512, false);
        p1[100] = TABLE_INTERIOR;
        p1[103..105].copy_from_slice(&1u16.to_be_bytes());
        p32(&mut p1, 108, 3);
        p1[112..114].copy_from_slice(&400u16.to_be_bytes());
        p32(&mut p1, 400, 2);
        let pages = vec![
            p1,
            interior(&[2], 3),
            interior(&[2], 1),
            interior(&[4, 4], 4),
        ];
        let mut read = memory_reader(&pages);
        let got = page_owners(&mut read, 512, 4, &[1, 4, 2])?;
        assert!(got.pages_read <= 4);
        assert_eq!(got.of(1), 0);
        // 2 and 3 are interior pages whose children are owned already: owned by
        // the schema, as their parent says (nothing below them to find).
        assert_eq!((got.of(2), got.of(3)), (0, 0));
        assert_eq!(got.of(4), 1);

        // A table leaf (page 2) with one cell of 5000 bytes of payload: its
        // chain needs 9 pages (428 bytes local, 508 a page) but loops 3 → 4 → 3.
        let mut leaf = vec![0u8; ps];
        leaf[0] = TABLE_LEAF;
        leaf[3..5].copy_from_slice(&1u16.to_be_bytes());
        leaf[8..10].copy_from_slice(&10u16.to_be_bytes());
        leaf[10..12].copy_from_slice(&[0xa7, 0x08]); // varint 5000
        leaf[12] = 1; // rowid
        let (first, n) = overflow(&leaf, 10, TABLE_LEAF, 512).expect("an overflowing cell");
        assert_eq!(first, 0);
        // M = (500·32/255) − 23 = 39; K = 39 + (4961 mod 508) = 428 ≤ X = 477.
        assert_eq!(n, (5000u64 - 428).div_ceil(508));
        p32(&mut leaf, 13 + 428, 3);
        let mut p1 = page1(512, false);
        p1[100] = TABLE_INTERIOR;
        p1[103..105].copy_from_slice(&0u16.to_be_bytes());
        p32(&mut p1, 108, 2);
        let mut o3 = vec![0u8; ps];
        p32(&mut o3, 0, 4);
        let mut o4 = vec![0u8; ps];
        p32(&mut o4, 0, 3);
        let pages = vec![p1, leaf, o3, o4, vec![0u8; ps]];
        let mut read = memory_reader(&pages);
        let mut got = page_owners(&mut read, 512, 5, &[1])?;
        assert_eq!(got.owner, vec![0, 0, UNKNOWN, UNKNOWN, UNKNOWN]);
        trace_overflow(&mut got, &[1, 2, 2, 3, 9], &mut read)?;
        assert_eq!(got.owner, vec![0, 0, 0, 0, UNKNOWN]);
        Ok(())
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xa7, 0x08]), Some((5000, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
        assert_eq!(varint(&[]), None);
    }
}
