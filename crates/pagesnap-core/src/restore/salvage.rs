//! `restore --salvage`: a snapshot restored despite damaged chunks, and which
//! tables and indexes the lost pages belonged to.
//!
//! One damaged chunk in one pack breaks every snapshot that uses it, and an
//! ordinary restore refuses to write an image that fails its check. A salvage
//! restore writes it anyway, with zeros in place of each chunk that is missing,
//! cannot be read back from its pack, does not decode or does not match its id
//! ([`Store::salvage_to_path`]), and says which pages those were. Then the pages
//! are mapped to their owners in the restored file itself:
//!
//! * b-tree pages (tables, indexes, the schema) through SQLite's `dbstat`
//!   virtual table, which walks every b-tree from the root pages `sqlite_schema`
//!   records and reports a page it cannot decode (a zeroed one) as "corrupted"
//!   under the name of the b-tree whose parent page points to it;
//! * free pages by following the free list from the database header;
//! * pointer-map pages (auto-vacuum databases) and the lock-byte page by their
//!   numbers.
//!
//! What none of these reaches is said to be unknown, with the reason: a page
//! under a lost interior page (its parent's list of children is gone), every
//! page when page 1 (the header and the schema's root) is lost, or when the
//! schema cannot be read.

use super::RestoreReport;
use crate::types::ChunkId;
use crate::{Result, Snapshot, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

/// A chunk a salvage restore could not read: it was written as zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostChunk {
    /// Its position in the image (in chunks).
    pub position: u64,
    /// The database pages it covers (numbered from 1, as SQLite does).
    pub first_page: u64,
    pub last_page: u64,
    pub chunk: ChunkId,
    /// The pack it was to be read from, when one locates it.
    pub object: Option<String>,
    pub problem: String,
}

/// What a page of a database file belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageOwner {
    Table(String),
    Index {
        name: String,
        table: String,
    },
    /// `sqlite_schema`; page 1 also holds the database header.
    Schema,
    /// A page of the free list: it held no data.
    FreeList,
    /// A pointer-map page of an auto-vacuum database.
    PointerMap,
    /// The page at the 1 GiB offset, which SQLite never uses.
    LockByte,
    /// Not known, and why.
    Unknown(String),
}

impl std::fmt::Display for PageOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageOwner::Table(t) => write!(f, "table {t}"),
            PageOwner::Index { name, table } => write!(f, "index {name} of table {table}"),
            PageOwner::Schema => f.write_str("the schema (sqlite_schema)"),
            PageOwner::FreeList => f.write_str("the free list (unused: nothing lost)"),
            PageOwner::PointerMap => f.write_str("a pointer-map page (rebuilt by VACUUM)"),
            PageOwner::LockByte => f.write_str("the lock-byte page (never used)"),
            PageOwner::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// A page written as zeros, and what it belonged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostPage {
    pub page: u64,
    /// The chunk it was in (an entry of [`SalvageReport::lost`]).
    pub chunk: ChunkId,
    pub owner: PageOwner,
}

/// What a salvage restore wrote.
#[derive(Clone, Debug)]
pub struct SalvageReport {
    /// As an ordinary restore reports; `image_hash` is the one recorded at backup
    /// (the file has it only when nothing was lost).
    pub restore: RestoreReport,
    /// The chunks written as zeros, by position.
    pub lost: Vec<LostChunk>,
    /// Every page of those chunks, ascending, with its owner.
    pub pages: Vec<LostPage>,
    /// Whether the written image matches its recorded check (only when nothing
    /// was lost: then it is an ordinary, byte-exact restore).
    pub image_matches: bool,
}

impl SalvageReport {
    /// Whether the file is the snapshot's image, byte for byte.
    pub fn is_exact(&self) -> bool {
        self.lost.is_empty() && self.image_matches
    }
}

impl Store {
    /// Restores `snap` to the file `out` like [`Store::restore_to_path_with`], but
    /// writes the chunks that cannot be read as zeros instead of failing, keeps the
    /// file, and reports them with the tables and indexes their pages belonged to
    /// (see the module documentation). A restore that fails for another reason (a
    /// page map or index object that cannot be read, an I/O error) still fails
    /// and leaves no file.
    pub fn salvage_to_path(
        &self,
        snap: &Snapshot,
        out: &Path,
        force: bool,
        fsync: bool,
    ) -> Result<SalvageReport> {
        let started = Instant::now();
        let m = &snap.manifest;
        let (salvaged, removed) =
            super::output::to_path(out, m.image_len, force, fsync, |sink| match sink {
                super::output::Sink::At { file, durable } => self.salvage_into(snap, file, durable),
                super::output::Sink::Stream(_) => Err(crate::Error::Internal(
                    "a salvage restore writes a file".into(),
                )),
            })?;
        let pages_per_chunk = m.chunk_pages.max(1) as u64;
        let lost: Vec<LostChunk> = salvaged
            .lost
            .into_iter()
            .map(|(pos, l)| {
                let first = pos as u64 * pages_per_chunk + 1;
                LostChunk {
                    position: pos as u64,
                    first_page: first,
                    last_page: (first + pages_per_chunk - 1).min(m.page_count.max(first)),
                    chunk: l.chunk,
                    object: l.object,
                    problem: l.detail,
                }
            })
            .collect();
        let numbers: Vec<(u64, ChunkId)> = lost
            .iter()
            .flat_map(|l| (l.first_page..=l.last_page).map(move |p| (p, l.chunk)))
            .collect();
        let wanted: Vec<u64> = numbers.iter().map(|(p, _)| *p).collect();
        let owners = if wanted.is_empty() {
            HashMap::new()
        } else {
            page_owners(out, m.page_size, m.page_count, &wanted)
        };
        let pages = numbers
            .into_iter()
            .map(|(page, chunk)| LostPage {
                page,
                chunk,
                owner: owners
                    .get(&page)
                    .cloned()
                    .unwrap_or_else(|| PageOwner::Unknown("not looked up".into())),
            })
            .collect();
        Ok(SalvageReport {
            restore: RestoreReport {
                snapshot: snap.id,
                image_len: m.image_len,
                image_hash: m.image_hash,
                duration: started.elapsed(),
                removed_temporaries: removed,
            },
            lost,
            pages,
            image_matches: salvaged.image_matches,
        })
    }
}

/// The owner of each of `pages` (numbers from 1) in the database file at `path`
/// (`page_size`, `page_count` pages), which may hold zeroed pages. Never fails:
/// what cannot be found out is [`PageOwner::Unknown`], with the reason.
pub(crate) fn page_owners(
    path: &Path,
    page_size: u32,
    page_count: u64,
    pages: &[u64],
) -> HashMap<u64, PageOwner> {
    let wanted: HashSet<u64> = pages.iter().copied().collect();
    let mut out: HashMap<u64, PageOwner> = HashMap::new();
    let unknown_all = |out: &mut HashMap<u64, PageOwner>, why: &str| {
        for p in &wanted {
            out.entry(*p)
                .or_insert_with(|| PageOwner::Unknown(why.to_string()));
        }
    };
    if wanted.contains(&1) {
        out.insert(1, PageOwner::Schema);
        unknown_all(
            &mut out,
            "page 1, the database header and the root of the schema, is lost: nothing can be traced",
        );
        return out;
    }
    let header = match read_page(path, page_size, 1) {
        Ok(h) => h,
        Err(e) => {
            unknown_all(&mut out, &format!("the restored file cannot be read: {e}"));
            return out;
        }
    };
    let usable = (page_size as u64).saturating_sub(header.get(20).copied().unwrap_or(0) as u64);
    // Pages SQLite sets aside by number.
    let lock_byte = lock_byte_page(page_size);
    let autovacuum = be32(&header, 52).is_some_and(|v| v != 0);
    for &p in &wanted {
        if p == lock_byte && page_count >= lock_byte {
            out.insert(p, PageOwner::LockByte);
        } else if autovacuum && usable >= 5 && is_pointer_map(p, usable, lock_byte) {
            out.insert(p, PageOwner::PointerMap);
        }
    }
    // A trunk that cannot be read ends the walk (an empty page has no next trunk).
    let mut read =
        |p| Ok::<_, std::convert::Infallible>(read_page(path, page_size, p).unwrap_or_default());
    let Ok(free) = free_list(&mut read, page_count, &header);
    for p in free {
        if wanted.contains(&p) {
            out.entry(p).or_insert(PageOwner::FreeList);
        }
    }
    let rest: HashSet<u64> = wanted
        .iter()
        .copied()
        .filter(|p| !out.contains_key(p))
        .collect();
    if !rest.is_empty() {
        match btree_owners(path, &rest) {
            Ok((found, stopped)) => {
                out.extend(found);
                let why = match stopped {
                    Some(e) => format!(
                        "not reached: SQLite stopped walking the b-trees ({e}), or a lost page above it"
                    ),
                    None => "no b-tree reaches it: the page that pointed to it is lost too".into(),
                };
                unknown_all(&mut out, &why);
            }
            Err(e) => unknown_all(&mut out, &format!("the schema cannot be read: {e}")),
        }
    }
    out
}

/// The owners of the pages of `wanted` that SQLite's `dbstat` reaches, and the
/// error that stopped its walk, if one did. An error before any row (the schema
/// cannot be read) is returned as such.
fn btree_owners(
    path: &Path,
    wanted: &HashSet<u64>,
) -> std::result::Result<(HashMap<u64, PageOwner>, Option<String>), String> {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        immutable_uri(path),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| e.to_string())?;
    // What each name is: table, or index of which table.
    let mut kinds: BTreeMap<String, (String, String)> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT type, name, tbl_name FROM sqlite_schema")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (kind, name, table) = row.map_err(|e| e.to_string())?;
            kinds.insert(name, (kind, table));
        }
    }
    let owner = |name: &str| match name {
        "sqlite_schema" | "sqlite_master" => PageOwner::Schema,
        _ => match kinds.get(name) {
            Some((kind, table)) if kind == "index" => PageOwner::Index {
                name: name.to_string(),
                table: table.clone(),
            },
            _ => PageOwner::Table(name.to_string()),
        },
    };
    let mut found = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT name, pageno FROM dbstat")
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    // Rows come until the walk meets damage it cannot step over (an overflow
    // chain through a zeroed page, say): what came before stands.
    let stopped = loop {
        match rows.next() {
            Ok(Some(row)) => {
                let (name, page) = match (row.get::<_, String>(0), row.get::<_, i64>(1)) {
                    (Ok(n), Ok(p)) => (n, p),
                    (Err(e), _) | (_, Err(e)) => break Some(e.to_string()),
                };
                if let Ok(p) = u64::try_from(page) {
                    if wanted.contains(&p) {
                        found.entry(p).or_insert_with(|| owner(&name));
                    }
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    Ok((found, stopped))
}

/// The pages of the free list (trunk and leaf pages), followed from the header
/// (page 1, `header`) as far as the pages it goes through make sense. `read`
/// gives a page by number (from 1); a page too short to hold its pointers ends
/// the walk there. Shared with `query/btree.rs`.
pub(crate) fn free_list<E>(
    read: &mut dyn FnMut(u64) -> std::result::Result<Vec<u8>, E>,
    page_count: u64,
    header: &[u8],
) -> std::result::Result<Vec<u64>, E> {
    let mut out = Vec::new();
    let (Some(first), Some(count)) = (be32(header, 32), be32(header, 36)) else {
        return Ok(out);
    };
    let in_file = |p: u64| p >= 2 && p <= page_count;
    let mut trunk = first as u64;
    let mut seen = HashSet::new();
    while in_file(trunk) && seen.insert(trunk) && (out.len() as u64) < count as u64 {
        out.push(trunk);
        let page = read(trunk)?;
        let (Some(next), Some(leaves)) = (be32(&page, 0), be32(&page, 4)) else {
            break;
        };
        let max = (page.len() / 4).saturating_sub(2);
        for k in 0..(leaves as usize).min(max) {
            match be32(&page, 8 + 4 * k) {
                Some(p) if in_file(p as u64) => out.push(p as u64),
                _ => {}
            }
        }
        trunk = next as u64;
    }
    Ok(out)
}

/// The lock-byte page of a database of `page_size` bytes a page: the one holding
/// byte offset 1 GiB (SQLite's `PENDING_BYTE_PAGE`), never used for data. It
/// exists only in files at least that long.
pub(crate) fn lock_byte_page(page_size: u32) -> u64 {
    (1u64 << 30) / page_size.max(1) as u64 + 1
}

/// Whether page `p` is a pointer-map page of an auto-vacuum database whose pages
/// have `usable` bytes (SQLite's `ptrmapPageno(p) == p`).
pub(crate) fn is_pointer_map(p: u64, usable: u64, lock_byte: u64) -> bool {
    if p < 2 {
        return false;
    }
    let per_map = usable / 5 + 1;
    let mut map = (p - 2) / per_map * per_map + 2;
    if map == lock_byte {
        map += 1;
    }
    map == p
}

fn read_page(path: &Path, page_size: u32, page: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; page_size as usize];
    f.read_exact_at(&mut buf, (page - 1) * page_size as u64)?;
    Ok(buf)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An SQLite URI opening `path` read-only and immutable: no journal, WAL or lock
/// file is created beside it, and nothing in it is trusted to be current.
pub(crate) fn immutable_uri(path: &Path) -> String {
    let escaped = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{escaped}?immutable=1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, TestReads};
    use crate::{BackupOptions, ChunkRef, InitOptions};
    use rusqlite::Connection;
    use std::sync::Arc;

    /// Two snapshots of a database whose second changed some pages: the first
    /// backup's pack holds the rest.
    fn two_snapshots(dir: &Path) -> anyhow::Result<(Store, Vec<Snapshot>, Vec<Vec<u8>>)> {
        let db = dir.join("app.db");
        let store = Store::init(dir.join("store"), &InitOptions::default())?;
        let c = Connection::open(&db)?;
        c.execute_batch(
            "PRAGMA page_size=4096; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
             INSERT INTO t(v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
               SELECT randomblob(3000) FROM n;",
        )?;
        let mut images = Vec::new();
        for step in 0..2 {
            if step == 1 {
                c.execute_batch("UPDATE t SET v = randomblob(3000) WHERE k % 9 = 0")?;
            }
            store.backup_path(&db, &BackupOptions::default())?;
            let snap = store.snapshots()?.pop().expect("a snapshot");
            let mut image = Vec::new();
            store.restore_to_writer(&snap, &mut image)?;
            images.push(image);
        }
        let snaps = store.snapshots()?;
        Ok((store, snaps, images))
    }

    /// With the first backup's pack gone, the second snapshot is salvaged: every
    /// chunk it had from that pack is lost (named, with its pack), the pages of
    /// the second backup's own pack are there byte for byte, and the file is kept.
    #[test]
    fn a_missing_pack_loses_its_chunks_and_nothing_else() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (store, snaps, images) = two_snapshots(dir.path())?;
        let index = store.load_index()?;
        let list = store.chunk_list_with(&index, &snaps[1])?;
        let first_pack = {
            let mut packs = store.backend().list(crate::layout::PACKS)?;
            packs.sort_by_key(|o| std::cmp::Reverse(o.size));
            packs[0].key.clone()
        };
        let in_first: Vec<usize> = list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                ChunkRef::Stored(id) => {
                    let l = index.get(id)?;
                    (crate::layout::pack(&index.pack_id(l.pack)) == first_pack).then_some(i)
                }
                ChunkRef::Zero => None,
            })
            .collect();
        assert!(!in_first.is_empty() && in_first.len() < list.len());
        store.backend().delete(&first_pack)?;

        let out = dir.path().join("salvaged.db");
        let r = store.salvage_to_path(&snaps[1], &out, false, true)?;
        assert!(!r.is_exact() && !r.image_matches);
        let lost: Vec<usize> = r.lost.iter().map(|l| l.position as usize).collect();
        assert_eq!(lost, in_first);
        for l in &r.lost {
            assert_eq!(l.object.as_deref(), Some(first_pack.as_str()));
            assert!(l.problem.contains("missing"), "{}", l.problem);
            assert_eq!(
                (l.first_page, l.last_page),
                (l.position + 1, l.position + 1)
            );
        }
        assert_eq!(r.pages.len(), r.lost.len());
        let got = std::fs::read(&out)?;
        for (i, (a, b)) in got.chunks(4096).zip(images[1].chunks(4096)).enumerate() {
            if in_first.contains(&i) {
                assert!(a.iter().all(|&x| x == 0), "page {} is zeros", i + 1);
            } else {
                assert!(a == b, "page {} is the snapshot's", i + 1);
            }
        }
        // An ordinary restore still refuses, and leaves nothing.
        let plain = dir.path().join("plain.db");
        assert!(store.restore_to_path(&snaps[1], &plain, false).is_err());
        assert!(!plain.exists());
        Ok(())
    }

    /// A pack that cannot be read (an I/O error, not damage) fails a salvage as
    /// it fails a restore: no file, no zeros in its place.
    #[test]
    fn a_pack_that_cannot_be_read_fails_the_salvage() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (_, snaps, _) = two_snapshots(dir.path())?;
        let failing: Arc<dyn Backend> = Arc::new(TestReads::failing(
            &dir.path().join("store"),
            crate::layout::PACKS,
        ));
        let store = Store::open_backend(failing)?;
        let out = dir.path().join("salvaged.db");
        let err = store
            .salvage_to_path(&snaps[1], &out, false, true)
            .expect_err("an unreadable pack is not damage");
        assert!(err.to_string().contains("Input/output error"), "{err}");
        assert!(!out.exists());
        let temps = std::fs::read_dir(dir.path())?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(crate::restore::output::TEMP_PREFIX)
            })
            .count();
        assert_eq!(temps, 0);
        Ok(())
    }

    /// A database of `rows` rows in a table with an index (4 KiB pages), a
    /// second table, and free pages from deleted rows.
    fn database(dir: &Path, auto_vacuum: bool) -> anyhow::Result<std::path::PathBuf> {
        let db = dir.join(if auto_vacuum { "av.db" } else { "db.db" });
        let c = Connection::open(&db)?;
        c.execute_batch(&format!(
            "PRAGMA page_size=4096; PRAGMA auto_vacuum={};
             CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT, w BLOB);
             CREATE INDEX t_v ON t(v);
             CREATE TABLE u(x TEXT PRIMARY KEY, y) WITHOUT ROWID;
             INSERT INTO t(v, w) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
               SELECT printf('%08d-%s', i * 7919 % 3001, hex(randomblob(20))), randomblob(i % 7 * 900) FROM n;
             INSERT INTO u SELECT v, k FROM t WHERE k % 3 = 0;
             DELETE FROM t WHERE k % 5 = 0;",
            if auto_vacuum { "FULL" } else { "NONE" }
        ))?;
        Ok(db)
    }

    /// dbstat's owner of every page it reaches, on a sound file.
    fn oracle(db: &Path) -> anyhow::Result<HashMap<u64, PageOwner>> {
        let c = Connection::open(db)?;
        let mut stmt = c.prepare(
            "SELECT d.pageno, d.name, s.type, s.tbl_name FROM dbstat d
             LEFT JOIN sqlite_schema s ON s.name = d.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (page, name, kind, table) = row?;
            let owner = match (kind.as_deref(), table) {
                _ if name == "sqlite_schema" => PageOwner::Schema,
                (Some("index"), Some(table)) => PageOwner::Index { name, table },
                _ => PageOwner::Table(name),
            };
            out.insert(page as u64, owner);
        }
        Ok(out)
    }

    fn page_count(db: &Path) -> anyhow::Result<u64> {
        let c = Connection::open(db)?;
        Ok(c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// A copy of `db` with `pages` written as zeros.
    fn zeroed(db: &Path, pages: &[u64]) -> anyhow::Result<std::path::PathBuf> {
        let mut bytes = std::fs::read(db)?;
        for &p in pages {
            let at = (p as usize - 1) * 4096;
            bytes[at..at + 4096].fill(0);
        }
        let out = db.with_extension(format!("zeroed-{}", pages.len()));
        std::fs::write(&out, bytes)?;
        Ok(out)
    }

    /// Pages whose b-tree page type (the first header byte) is `kind`.
    fn pages_of_type(db: &Path, kind: u8) -> anyhow::Result<Vec<u64>> {
        let bytes = std::fs::read(db)?;
        Ok(bytes
            .chunks(4096)
            .enumerate()
            .skip(1)
            .filter(|(_, p)| p[0] == kind)
            .map(|(i, _)| i as u64 + 1)
            .collect())
    }

    /// On a sound file every page gets dbstat's owner, and every other page is
    /// on the free list (or a pointer-map page, with auto-vacuum); nothing is unknown.
    #[test]
    fn every_page_of_a_sound_file_has_its_owner() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for auto_vacuum in [false, true] {
            let db = database(dir.path(), auto_vacuum)?;
            let n = page_count(&db)?;
            let want = oracle(&db)?;
            let all: Vec<u64> = (2..=n).collect();
            let got = page_owners(&db, 4096, n, &all);
            let (mut free, mut maps) = (0, 0);
            for p in 2..=n {
                match (&got[&p], want.get(&p)) {
                    (g, Some(w)) => assert_eq!(g, w, "page {p}"),
                    (PageOwner::FreeList, None) => free += 1,
                    (PageOwner::PointerMap, None) if auto_vacuum => maps += 1,
                    (g, None) => panic!("page {p}: {g:?}, dbstat does not list it"),
                }
            }
            if auto_vacuum {
                assert!(maps >= 1, "page 2 is a pointer-map page");
                assert_eq!(got[&2], PageOwner::PointerMap);
            } else {
                assert!(free > 0, "deleted rows left free pages");
            }
            // The kinds are told apart.
            assert!(got.values().any(|o| *o == PageOwner::Table("t".into())));
            assert!(got.values().any(|o| *o == PageOwner::Table("u".into())));
            assert!(got.values().any(
                |o| matches!(o, PageOwner::Index { name, table } if name == "t_v" && table == "t")
            ));
        }
        Ok(())
    }

    /// Zeroed pages (leaves, interior pages, index pages) are named by the
    /// b-tree that points to them; a zeroed page under a zeroed interior page is
    /// unknown, with the reason; a zeroed page 1 makes everything else unknown.
    #[test]
    fn zeroed_pages_are_named_by_their_parents() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = database(dir.path(), false)?;
        let n = page_count(&db)?;
        let want = oracle(&db)?;
        let interior = pages_of_type(&db, 0x05)?; // table interior pages
        let leaves = pages_of_type(&db, 0x0d)?;
        let index_leaves = pages_of_type(&db, 0x0a)?;
        // An interior page of t that is not its root, and a leaf under it.
        let c = Connection::open(&db)?;
        let root: i64 = c.query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 't'",
            [],
            |r| r.get(0),
        )?;
        let mid = *interior
            .iter()
            .find(|&&p| p != root as u64 && want.get(&p) == Some(&PageOwner::Table("t".into())))
            .expect("t has a second level of interior pages");
        let bytes = std::fs::read(&db)?;
        let page = &bytes[(mid as usize - 1) * 4096..mid as usize * 4096];
        let child = u32::from_be_bytes(page[8..12].try_into()?) as u64; // its right-most child
        assert!(leaves.contains(&child) || interior.contains(&child));
        // A leaf of t that is not under `mid`.
        let path_of = |p: u64| -> anyhow::Result<String> {
            Ok(c.query_row(
                "SELECT path FROM dbstat WHERE pageno = ?1",
                [p as i64],
                |r| r.get(0),
            )?)
        };
        let under_mid = path_of(mid)?;
        let lone_leaf = *leaves
            .iter()
            .filter(|&&p| want.get(&p) == Some(&PageOwner::Table("t".into())))
            .find(|&&p| path_of(p).is_ok_and(|path| !path.starts_with(&under_mid)))
            .expect("a leaf of t elsewhere");
        let index_leaf = index_leaves[index_leaves.len() / 2];

        let lost = [mid, child, lone_leaf, index_leaf];
        let damaged = zeroed(&db, &lost)?;
        let got = page_owners(&damaged, 4096, n, &lost);
        assert_eq!(got[&mid], PageOwner::Table("t".into()));
        assert_eq!(got[&lone_leaf], PageOwner::Table("t".into()));
        assert_eq!(got[&index_leaf], want[&index_leaf]);
        assert!(matches!(&got[&index_leaf], PageOwner::Index { .. }));
        match &got[&child] {
            PageOwner::Unknown(why) => assert!(why.contains("lost too"), "{why}"),
            other => panic!("a page under a lost page: {other:?}"),
        }

        let damaged = zeroed(&db, &[1, lone_leaf])?;
        let got = page_owners(&damaged, 4096, n, &[1, lone_leaf]);
        assert_eq!(got[&1], PageOwner::Schema);
        match &got[&lone_leaf] {
            PageOwner::Unknown(why) => assert!(why.contains("page 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        Ok(())
    }
}
