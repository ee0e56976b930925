//! The fuzz entry point of the b-tree page-owner walker (`btree.rs`), called
//! through [`crate::format::fuzz::Target::Btree`] like the store's decoders,
//! and its seeds and hostile inputs (SQLite databases made with rusqlite).
//!
//! `diff` runs the walker on pages read from a snapshot: SQLite's bytes, not
//! pagesnap's, with no checksum of ours over them. It must answer any bytes
//! without panic, unbounded allocation or endless loop, read each page at most
//! once in [`page_owners`], and stop every loop within the page count.
//!
//! An input is `[page size][root count][roots: u32 BE each][image]`: the page
//! size is `512 << (byte % 8)` (the page size comes from the manifest in
//! `diff`, not from the image's header, so it is fuzzed on its own), then
//! `byte % 16` roots besides the schema's (root 1, always first), as
//! `sqlite_schema` would give them, then the image cut into pages of that size
//! (the last one padded with zeros, at most [`MAX_PAGES`]).

use super::btree::{
    page_owners, trace_overflow, PageOwners, FREE, LOCK_BYTE, POINTER_MAP, UNKNOWN,
};
use crate::format::{FormatError, Result};

/// Pages of an input at most (the rest is ignored), so that a run stays fast.
const MAX_PAGES: usize = 256;

/// An input split into its parts.
struct Input {
    page_size: u32,
    roots: Vec<u64>,
    /// The image, `pages × page_size` bytes (padded).
    image: Vec<u8>,
    pages: u64,
}

fn parse(data: &[u8]) -> Result<Input> {
    let (&size, rest) = data
        .split_first()
        .ok_or(FormatError::Truncated { needed: 2, have: 0 })?;
    let (&count, rest) = rest
        .split_first()
        .ok_or(FormatError::Truncated { needed: 2, have: 1 })?;
    let page_size = 512u32 << (size % 8);
    let count = (count % 16) as usize;
    let (roots, image) = rest
        .split_at_checked(4 * count)
        .ok_or(FormatError::Truncated {
            needed: 2 + 4 * count as u64,
            have: data.len() as u64,
        })?;
    let mut all = vec![1u64];
    all.extend(
        roots
            .chunks_exact(4)
            .map(|r| u32::from_be_bytes([r[0], r[1], r[2], r[3]]) as u64),
    );
    let ps = page_size as usize;
    let pages = image.len().div_ceil(ps).min(MAX_PAGES);
    let mut padded = image[..image.len().min(pages * ps)].to_vec();
    padded.resize(pages * ps, 0);
    Ok(Input {
        page_size,
        roots: all,
        image: padded,
        pages: pages as u64,
    })
}

/// What a walk over an input found (the first two fields for the tests).
#[cfg_attr(not(test), allow(dead_code))]
struct Walked {
    /// Owners after [`page_owners`] alone, and the pages it read.
    before: Vec<u32>,
    read_by_owners: u64,
    /// Owners after [`trace_overflow`] over every page too.
    after: PageOwners,
}

/// [`page_owners`] on the input, then [`trace_overflow`] on every page number
/// (and two outside the image), checking (a panic is the fuzzer's crash):
/// every read is of a page of the image; `page_owners` reads each page at most
/// once and counts its reads right; there is one owner per page, each a root's
/// index or a kind of page (no lock-byte page in an image this small, no
/// pointer map unless the header says auto-vacuum); `trace_overflow` reads a
/// page at most twice (listed, and as a link of a chain) and only gives owners
/// to pages that had none, also when run again on a list in another order
/// with every page twice.
fn walk(input: &Input) -> crate::Result<Walked> {
    let ps = input.page_size as usize;
    let count = input.pages as usize;
    let page = |reads: &mut Vec<u32>, p: u64| -> crate::Result<Vec<u8>> {
        let i = p.checked_sub(1).map(|i| i as usize).filter(|&i| i < count);
        let i = i.unwrap_or_else(|| panic!("read of page {p}, outside the {count} pages"));
        reads[i] += 1;
        Ok(input.image[i * ps..(i + 1) * ps].to_vec())
    };
    let mut reads = vec![0u32; count];
    let mut owners = page_owners(
        &mut |p| page(&mut reads, p),
        input.page_size,
        input.pages,
        &input.roots,
    )?;
    if let Some(p) = reads.iter().position(|&n| n > 1) {
        panic!("page_owners read page {} {} times", p + 1, reads[p]);
    }
    let total: u64 = reads.iter().map(|&n| n as u64).sum();
    assert_eq!(owners.pages_read, total, "pages read by page_owners");
    assert_eq!(owners.owner.len(), count, "owners");
    let auto_vacuum = input.image.get(52..56).is_some_and(|b| b != [0; 4]);
    for (i, &o) in owners.owner.iter().enumerate() {
        let known = (o as usize) < input.roots.len() || matches!(o, FREE | UNKNOWN);
        let map = o == POINTER_MAP && auto_vacuum && owners.usable > 0;
        assert!(known || map, "page {} owned by {o:#x}", i + 1);
        assert_ne!(o, LOCK_BYTE, "a lock-byte page in {count} pages");
    }
    let before = owners.owner.clone();

    let mut all: Vec<u64> = (0..=input.pages + 1).collect();
    let mut reads = vec![0u32; count];
    trace_overflow(&mut owners, &all, &mut |p| page(&mut reads, p))?;
    if let Some(p) = reads.iter().position(|&n| n > 2) {
        panic!("trace_overflow read page {} {} times", p + 1, reads[p]);
    }
    let traced: u64 = reads.iter().map(|&n| n as u64).sum();
    assert_eq!(owners.pages_read, total + traced, "pages read by both");
    for (i, (&was, &now)) in before.iter().zip(&owners.owner).enumerate() {
        let gained = was == UNKNOWN && (now as usize) < input.roots.len();
        assert!(
            was == now || gained,
            "page {}: {was:#x} became {now:#x}",
            i + 1
        );
    }
    // Again, listed in another order, twice: a page listed twice is read
    // twice, a chain's link at most once.
    all.reverse();
    all.extend_from_slice(&all.clone());
    let mut again = owners.clone();
    let mut reads = vec![0u32; count];
    trace_overflow(&mut again, &all, &mut |p| page(&mut reads, p))?;
    if let Some(p) = reads.iter().position(|&n| n > 3) {
        panic!(
            "a second trace_overflow read page {} {} times",
            p + 1,
            reads[p]
        );
    }
    for (i, (&was, &now)) in owners.owner.iter().zip(&again.owner).enumerate() {
        let gained = was == UNKNOWN && (now as usize) < input.roots.len();
        assert!(
            was == now || gained,
            "page {}: {was:#x} became {now:#x}",
            i + 1
        );
    }
    Ok(Walked {
        before,
        read_by_owners: total,
        after: owners,
    })
}

/// The fuzz target: [`walk`] (which panics on a broken promise of the walker).
/// `Ok` when every page of the image has an owner, as in any sound database
/// image; an error otherwise (a page no b-tree, free list or pointer map
/// reaches, or a header that makes no sense), which is how a hostile input is
/// told from a seed.
pub(crate) fn btree(data: &[u8]) -> Result<()> {
    let input = parse(data)?;
    if input.pages == 0 {
        return Err(FormatError::Invalid("an empty image".into()));
    }
    let walked = walk(&input).map_err(|e| FormatError::Invalid(e.to_string()))?;
    let owners = walked.after;
    if owners.usable == 0 {
        return Err(FormatError::Invalid(
            "a database header that makes no sense".into(),
        ));
    }
    let unknown: Vec<u64> = (1..=input.pages)
        .filter(|&p| owners.of(p) == UNKNOWN)
        .collect();
    match unknown.first() {
        None => Ok(()),
        Some(first) => Err(FormatError::Invalid(format!(
            "{} of {} pages owned by nothing (the first: {first})",
            unknown.len(),
            input.pages
        ))),
    }
}

fn invalid(e: impl std::fmt::Display) -> FormatError {
    FormatError::Invalid(e.to_string())
}

/// A database made by `sql` (after `pragmas`), as a fuzz input: its page size,
/// its b-trees' roots from `sqlite_schema`, its bytes.
struct Made {
    input: Vec<u8>,
    /// Where the image starts in `input`.
    at: usize,
    page_size: usize,
    /// `sqlite_schema`'s roots by name.
    roots: Vec<(String, u64)>,
    /// Overflow pages (dbstat's), in page order.
    overflow: Vec<u64>,
}

fn make(pragmas: &str, sql: &str) -> Result<Made> {
    let dir = tempfile::tempdir().map_err(invalid)?;
    let path = dir.path().join("seed.db");
    let (page_size, roots, overflow) = {
        let c = rusqlite::Connection::open(&path).map_err(invalid)?;
        c.execute_batch(pragmas).map_err(invalid)?;
        c.execute_batch(sql).map_err(invalid)?;
        let page_size: u32 = c
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(invalid)?;
        let sql = "SELECT name, rootpage FROM sqlite_schema WHERE rootpage > 0 ORDER BY rowid";
        let mut stmt = c.prepare(sql).map_err(invalid)?;
        let roots = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(invalid)?;
        let sql = "SELECT pageno FROM dbstat WHERE pagetype = 'overflow' ORDER BY pageno";
        let mut stmt = c.prepare(sql).map_err(invalid)?;
        let overflow = stmt
            .query_map([], |r| r.get::<_, i64>(0).map(|p| p as u64))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(invalid)?;
        (page_size, roots, overflow)
    };
    let image = std::fs::read(&path).map_err(invalid)?;
    let shift = (page_size / 512).trailing_zeros() as u8;
    if 512 << shift != page_size || roots.len() > 15 {
        return Err(invalid(format!(
            "seed of page size {page_size}, {} roots",
            roots.len()
        )));
    }
    let mut input = vec![shift, roots.len() as u8];
    for (_, r) in &roots {
        input.extend_from_slice(&(*r as u32).to_be_bytes());
    }
    let at = input.len();
    input.extend_from_slice(&image);
    Ok(Made {
        input,
        at,
        page_size: page_size as usize,
        roots,
        overflow,
    })
}

impl Made {
    fn root(&self, name: &str) -> Result<u64> {
        let r = self.roots.iter().find(|(n, _)| n == name);
        r.map(|&(_, r)| r)
            .ok_or_else(|| invalid(format!("no b-tree {name}")))
    }

    /// The bytes of page `p` of the image, mutable.
    fn page(&mut self, p: u64) -> &mut [u8] {
        let start = self.at + (p as usize - 1) * self.page_size;
        &mut self.input[start..start + self.page_size]
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// 150 short rows (a table and an index with interior pages), one long row
/// (overflow pages from a table leaf and from an index cell), then deletes and a
/// dropped table (a free list of a trunk and leaves); 1 KiB pages.
fn small() -> Result<Made> {
    make(
        "PRAGMA page_size = 1024; PRAGMA auto_vacuum = NONE;",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
         CREATE INDEX t_k ON t(k);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150)
         INSERT INTO t SELECT i, printf('key-%04d', i * 7 % 150), zeroblob(20) FROM n;
         INSERT INTO t VALUES (1000, 'long ' || hex(zeroblob(300)), zeroblob(3000));
         CREATE TABLE junk(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8)
         INSERT INTO junk SELECT zeroblob(900) FROM n;
         DROP TABLE junk;
         DELETE FROM t WHERE id BETWEEN 40 AND 90;",
    )
}

/// A WITHOUT ROWID table of long keys on 512-byte pages: a b-tree of index
/// pages three levels deep (interior pages whose children are interior pages).
fn deep() -> Result<Made> {
    make(
        "PRAGMA page_size = 512; PRAGMA auto_vacuum = NONE;",
        "CREATE TABLE w(k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 90)
         INSERT INTO w SELECT printf('%04d', i * 37 % 90) || hex(zeroblob(40)), i FROM n;",
    )
}

/// An auto-vacuum database (`mode`: FULL or INCREMENTAL) with a table, an
/// index and overflow rows, after deletes: pointer-map pages (and with
/// INCREMENTAL a free list beside them); 1 KiB pages.
fn vacuumed(mode: &str) -> Result<Made> {
    make(
        &format!("PRAGMA page_size = 1024; PRAGMA auto_vacuum = {mode};"),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
         CREATE INDEX t_k ON t(k);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t SELECT i, printf('k%03d', i), zeroblob(i % 7 * 5) FROM n;
         INSERT INTO t VALUES (500, 'big', zeroblob(2500));
         CREATE TABLE gone(x);
         INSERT INTO gone VALUES (zeroblob(4000));
         DROP TABLE gone;
         DELETE FROM t WHERE id % 3 = 0;",
    )
}

/// Real SQLite images the walker accounts for wholly, as (target name, file
/// name, input).
pub(crate) fn seeds() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    Ok(vec![
        (
            "btree",
            "sqlite-table-index-overflow-freelist",
            small()?.input,
        ),
        ("btree", "sqlite-deep-index-512", deep()?.input),
        ("btree", "sqlite-auto-vacuum-full", vacuumed("FULL")?.input),
        (
            "btree",
            "sqlite-auto-vacuum-incremental",
            vacuumed("INCREMENTAL")?.input,
        ),
    ])
}

/// The small seed broken so that pages are left without an owner, as (target
/// name, file name, input): an interior page whose right-most child is itself,
/// an overflow chain looping on a page, a header claiming 2³² − 1 free pages
/// whose trunk lists a table's root, and an interior page's child out of the file.
pub(crate) fn hostile() -> Result<Vec<(&'static str, &'static str, Vec<u8>)>> {
    let mut cycle = small()?;
    let root = cycle.root("t")?;
    let page = cycle.page(root);
    if page[0] != 0x05 {
        return Err(invalid("the table's root is not an interior page"));
    }
    put32(page, 8, root as u32);

    let mut looping = small()?;
    let chains = looping.overflow.clone();
    let linked = chains.into_iter().find(|&p| get32(looping.page(p), 0) != 0);
    let linked = linked.ok_or_else(|| invalid("no overflow chain of two pages"))?;
    put32(looping.page(linked), 0, linked as u32);

    let mut free = small()?;
    let table = free.root("t")?;
    let header = free.page(1);
    let trunk = get32(header, 32) as u64;
    put32(header, 36, u32::MAX);
    if trunk < 2 {
        return Err(invalid("the small seed has no free list"));
    }
    let page = free.page(trunk);
    let leaves = get32(page, 4) as usize;
    if 8 + 4 * (leaves + 1) > page.len() {
        return Err(invalid("the free-list trunk is full"));
    }
    put32(page, 0, trunk as u32);
    put32(page, 4, u32::MAX);
    put32(page, 8 + 4 * leaves, table as u32);

    let mut outside = small()?;
    let index = outside.root("t_k")?;
    let page = outside.page(index);
    if page[0] != 0x02 {
        return Err(invalid("the index's root is not an interior page"));
    }
    let cell = u16::from_be_bytes([page[12], page[13]]) as usize;
    put32(page, cell, u32::MAX);

    Ok(vec![
        ("btree", "hostile-interior-cycle", cycle.input),
        ("btree", "hostile-overflow-loop", looping.input),
        ("btree", "hostile-huge-free-list", free.input),
        ("btree", "hostile-child-out-of-file", outside.input),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::fuzz::Target;

    fn walked(data: &[u8]) -> Walked {
        walk(&parse(data).unwrap()).unwrap()
    }

    /// Every seed is accounted for wholly, and together they reach what the
    /// walker does: interior pages over interior pages, leaves owned unread,
    /// overflow chains from table leaves and index cells, free-list trunks and
    /// leaves, pointer maps.
    #[test]
    fn seeds_are_owned_wholly_and_reach_every_path() {
        let seeds = seeds().unwrap();
        for (name, file, data) in &seeds {
            assert_eq!(*name, Target::Btree.name());
            assert_eq!(
                Target::Btree.run(data).map_err(|e| e.to_string()),
                Ok(()),
                "{file}"
            );
            assert!(data.len() <= 64 << 10, "{file}: {} bytes", data.len());
        }
        let data: Vec<Vec<u8>> = seeds.into_iter().map(|(_, _, d)| d).collect();
        let [small, deep, full, incremental]: [Vec<u8>; 4] = data.try_into().unwrap();
        let w = walked(&small);
        let count = w.before.len() as u64;
        assert!(w.read_by_owners < count, "leaves owned unread");
        assert!(w.before.contains(&FREE));
        let traced = w.before.iter().filter(|&&o| o == UNKNOWN).count();
        assert!(traced >= 4, "overflow pages traced: {traced}");
        // The index's long key overflows too: its pages go to the index (2).
        assert!((0..w.before.len()).any(|i| w.before[i] == UNKNOWN && w.after.owner[i] == 2));
        // Three levels: more interior pages than the root alone.
        let input = parse(&deep).unwrap();
        let interior = input.image.chunks(512).filter(|p| p[0] == 0x02).count();
        assert!(interior > 2, "{interior} interior pages");
        assert!(walked(&full).before.contains(&POINTER_MAP));
        assert!(!walked(&full).before.contains(&FREE));
        let w = walked(&incremental);
        assert!(w.before.contains(&POINTER_MAP) && w.before.contains(&FREE));
    }

    /// Each hostile input leaves pages without an owner, for what it breaks,
    /// and its walk keeps every promise.
    #[test]
    fn hostile_inputs_leave_pages_unowned() {
        let small = small().unwrap();
        for (_, file, data) in hostile().unwrap() {
            let err = Target::Btree.run(&data).unwrap_err().to_string();
            assert!(err.contains("owned by nothing"), "{file}: {err}");
            let w = walked(&data);
            let unknown = |p: u64| w.after.of(p) == UNKNOWN;
            match file {
                "hostile-interior-cycle" => {
                    let root = small.root("t").unwrap();
                    let right = get32(&small.input[small.at + (root as usize - 1) * 1024..], 8);
                    assert!(unknown(right as u64));
                    assert_eq!(w.after.of(root), 1);
                }
                "hostile-huge-free-list" => {
                    assert_eq!(w.after.of(small.root("t").unwrap()), FREE);
                }
                "hostile-overflow-loop" | "hostile-child-out-of-file" => {}
                other => panic!("unexpected {other}"),
            }
        }
    }

    /// Made twice, the seeds and hostile inputs are the same bytes (the
    /// `fuzz_seeds` example rewrites them).
    #[test]
    fn seeds_are_repeatable() {
        assert_eq!(seeds().unwrap(), seeds().unwrap());
        assert_eq!(hostile().unwrap(), hostile().unwrap());
    }

    /// Mutated seeds (bytes flipped, runs overwritten, pointers aimed at small
    /// page numbers): the walk keeps its promises (`walk` panics otherwise).
    #[test]
    fn mutated_seeds_keep_the_promises() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut unowned = 0;
        for (_, _, seed) in seeds().unwrap().into_iter().chain(hostile().unwrap()) {
            for _ in 0..60 {
                let mut data = seed.clone();
                for _ in 0..1 + next() % 8 {
                    let at = (next() % data.len() as u64) as usize;
                    match next() % 3 {
                        0 => data[at] ^= 1 << (next() % 8),
                        1 => {
                            let end = (at + 4).min(data.len());
                            let small = (next() % 64) as u32;
                            data[at..end].copy_from_slice(&small.to_be_bytes()[..end - at]);
                        }
                        _ => data[at] = next() as u8,
                    }
                }
                if Target::Btree.run(&data).is_err() {
                    unowned += 1;
                }
            }
        }
        assert!(unowned > 0);
    }
}
