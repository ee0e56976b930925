//! Helpers shared by the integration tests: building databases, reference copies
//! made with SQLite's own backup API, and byte-exact restore checks.
#![allow(dead_code)] // every test file uses a different subset

mod rng;

pub use rng::Rng;

use pagesnap_core::{BackupOptions, BackupReport, Snapshot, SnapshotSelector, Store};
use rusqlite::{Connection, OpenFlags};
use std::io::Read;
use std::path::{Path, PathBuf};

pub type Hash = [u8; 32];

/// Hex of a hash, for messages.
pub fn hex(h: &Hash) -> String {
    blake3::Hash::from(*h).to_hex().to_string()
}

/// blake3 of a file's bytes, streamed (images can be over 1 GiB).
pub fn hash_file(path: &Path) -> Hash {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    *h.finalize().as_bytes()
}

/// Journal mode of a test database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    Wal,
    Rollback,
}

impl Journal {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Journal::Wal => "wal",
            Journal::Rollback => "delete",
        }
    }
}

/// Creates (or opens) a read-write database with the given page size (set before
/// anything is written) and journal mode, and checks SQLite accepted both.
pub fn create_db(path: &Path, journal: Journal, page_size: u32) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!("PRAGMA page_size={page_size};"))
        .unwrap();
    let mode: String = conn
        .query_row(
            &format!("PRAGMA journal_mode={}", journal.pragma_value()),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mode, journal.pragma_value(), "journal mode not accepted");
    let ps: u32 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ps, page_size, "page size not accepted");
    conn
}

/// A fresh read-only connection (never the one that wrote: its page cache may
/// hold freed pages whose bytes were never written to the file).
pub fn open_ro(path: &Path) -> Connection {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap()
}

/// Copies the current state of `db` to `out` with SQLite's backup API through a
/// fresh read-only connection; returns blake3 of the copy.
pub fn reference_copy(db: &Path, out: &Path) -> Hash {
    let conn = open_ro(db);
    conn.backup(rusqlite::MAIN_DB, out, rusqlite::backup::NO_PROGRESS)
        .unwrap();
    drop(conn);
    hash_file(out)
}

/// Like [`reference_copy`] but keeps only the hash.
pub fn reference_hash(db: &Path, scratch_dir: &Path) -> Hash {
    let out = scratch_dir.join(format!("ref-{}.db", unique()));
    let h = reference_copy(db, &out);
    std::fs::remove_file(&out).unwrap();
    h
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `PRAGMA integrity_check` of the database file at `path` must say exactly "ok".
pub fn assert_integrity_ok(path: &Path) {
    let conn = open_ro(path);
    let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec!["ok".to_string()],
        "{}: integrity_check",
        path.display()
    );
}

pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Backs up `db` by path with default options.
pub fn backup(store: &Store, db: &Path) -> BackupReport {
    store
        .backup_path(db, &BackupOptions::default())
        .unwrap_or_else(|e| panic!("backup of {}: {e}", db.display()))
}

/// The snapshot a report names, looked up through the public selector.
/// Every snapshot of `taken` (a backup's report and the database's reference
/// hash then) restores from `store` byte for byte and sound ([`restore_and_check`]).
pub fn restore_each(store: &Store, taken: &[(BackupReport, Hash)], dir: &Path) {
    for (report, reference) in taken {
        let snap = snapshot_of(store, report);
        restore_and_check(store, &snap, reference, dir);
    }
}

pub fn snapshot_of(store: &Store, report: &BackupReport) -> Snapshot {
    let snap = store
        .select(&SnapshotSelector::Id(report.snapshot.to_hex()))
        .unwrap();
    assert_eq!(snap.id, report.snapshot);
    assert_eq!(snap.manifest.image_hash, report.image_hash);
    snap
}

/// Restores `snap` to a new file in `dir` and checks it byte for byte: blake3 of
/// the file == the manifest's image hash == `expected` (a reference copy's hash),
/// length == image_len, restore_to_writer agrees, and integrity_check says ok.
/// Returns the restored file's path.
pub fn restore_and_check(store: &Store, snap: &Snapshot, expected: &Hash, dir: &Path) -> PathBuf {
    let out = dir.join(format!("restored-{}-{}.db", snap.id.short(), unique()));
    let report = store.restore_to_path(snap, &out, false).unwrap();
    let on_disk = hash_file(&out);
    assert_eq!(
        hex(&on_disk),
        hex(&snap.manifest.image_hash),
        "restored file vs manifest image hash"
    );
    assert_eq!(
        hex(&on_disk),
        hex(expected),
        "restored file vs reference backup-API copy"
    );
    assert_eq!(report.image_hash, on_disk);
    // The image check the capture recorded (block by block, as SQLite's pages
    // arrived) is the check of the image computed in one piece.
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        snap.manifest.image_check,
        Some(pagesnap_core::image_check::of_image(
            &bytes,
            snap.manifest.chunk_len()
        )),
        "recorded image check vs the restored image's"
    );
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        snap.manifest.image_len
    );
    assert_eq!(
        snap.manifest.image_len,
        snap.manifest.page_count * snap.manifest.page_size as u64
    );
    assert_integrity_ok(&out);
    out
}

/// Restores through `restore_to_writer` into memory and returns the bytes' hash.
pub fn restore_hash_via_writer(store: &Store, snap: &Snapshot) -> Hash {
    let mut buf = Vec::new();
    let report = store.restore_to_writer(snap, &mut buf).unwrap();
    let h = *blake3::hash(&buf).as_bytes();
    assert_eq!(report.image_hash, h);
    assert_eq!(buf.len() as u64, snap.manifest.image_len);
    h
}

/// Number of objects under a store folder (e.g. "maps", "packs").
pub fn objects_under(store_dir: &Path, folder: &str) -> usize {
    fn walk(p: &Path) -> usize {
        match std::fs::read_dir(p) {
            Err(_) => 0,
            Ok(rd) => rd
                .map(|e| e.unwrap())
                .map(|e| {
                    let ty = e.file_type().unwrap();
                    if ty.is_dir() {
                        walk(&e.path())
                    } else if e.file_name().to_string_lossy().starts_with('.') {
                        0
                    } else {
                        1
                    }
                })
                .sum(),
        }
    }
    walk(&store_dir.join(folder))
}

/// Fills a database with a table of text and blobs (every 7th blob overflows onto
/// overflow pages), an index, and free pages (deleted rows and a dropped table).
pub fn populate(conn: &Connection, rng: &mut Rng, page_size: u32, rows: usize) {
    conn.execute_batch(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB);
         CREATE INDEX items_name ON items(name);
         CREATE TABLE scratch(a TEXT, b BLOB);
         CREATE INDEX scratch_a ON scratch(a);",
    )
    .unwrap();
    insert_rows(conn, rng, page_size, rows);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO scratch VALUES (?1, ?2)").unwrap();
        for _ in 0..rows / 2 {
            let (a_len, b_len) = (20 + rng.below(40) as usize, rng.below(200) as usize);
            let a = rng.text(a_len);
            let b = rng.bytes(b_len, false);
            ins.execute(rusqlite::params![a, b]).unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("DELETE FROM items WHERE id % 5 = 0; DROP TABLE scratch;")
        .unwrap();
    assert!(
        count(conn, "PRAGMA freelist_count") > 0,
        "the database should have free pages"
    );
}

/// Appends `rows` rows to `items` in one transaction.
pub fn insert_rows(conn: &Connection, rng: &mut Rng, page_size: u32, rows: usize) {
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO items(name, payload) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..rows {
            let name_len = 5 + rng.below(60) as usize;
            let name = rng.text(name_len);
            let payload: Option<Vec<u8>> = match i % 7 {
                0 => {
                    let len = 2 * page_size as usize + rng.below(page_size as u64) as usize;
                    Some(rng.bytes(len, i % 2 == 0))
                }
                1 | 2 => None,
                _ => {
                    let len = rng.below(300) as usize;
                    Some(rng.bytes(len, true))
                }
            };
            ins.execute(rusqlite::params![name, payload]).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A WAL database (table `pages`) in which each row fills most of one 4 KiB page.
pub fn one_row_per_page(db: &Path, rows: i64) -> Connection {
    let conn = create_db(db, Journal::Wal, 4096);
    conn.execute_batch("CREATE TABLE pages(id INTEGER PRIMARY KEY, payload BLOB NOT NULL);")
        .unwrap();
    set_rows(&conn, 1, 1..=rows);
    conn
}

/// Sets rows `ids` of `pages` to fresh random payloads (one page each).
pub fn set_rows(conn: &Connection, seed: u64, ids: impl Iterator<Item = i64>) {
    let mut rng = Rng(seed);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut up = tx
            .prepare("INSERT OR REPLACE INTO pages VALUES (?1, ?2)")
            .unwrap();
        for id in ids {
            up.execute(rusqlite::params![id, rng.bytes(3000, true)])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}
