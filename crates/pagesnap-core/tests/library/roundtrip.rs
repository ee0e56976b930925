//! Byte-exact round trips: page sizes and journal modes, tiny images, unchanged
//! databases, backups through an application's own connection (outside, inside
//! and inside a writing transaction), and delta manifests.

use crate::common::*;
use pagesnap_core::{BackupOptions, InitOptions, Store};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

fn new_store(dir: &Path, chunk_pages: u32) -> Store {
    Store::init(
        dir.join("store"),
        &InitOptions {
            chunk_pages,
            ..InitOptions::default()
        },
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// Page sizes x journal modes
// ---------------------------------------------------------------------------

fn page_size_round_trip(page_size: u32, journal: Journal) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, journal, page_size);
    // Keep every committed page in the WAL: the capture must read it from there.
    conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
    let rows = if page_size >= 65536 { 300 } else { 2000 };
    populate(&conn, &mut Rng(page_size as u64), page_size, rows);
    if journal == Journal::Wal {
        let wal = std::fs::metadata(dir.path().join("app.db-wal")).unwrap();
        assert!(wal.len() > 0, "the WAL should hold the committed pages");
    }

    let expected = reference_copy(&db, &dir.path().join("reference.db"));
    let store = new_store(dir.path(), 1);
    let report = backup(&store, &db);
    assert_eq!(report.page_size, page_size);
    assert_eq!(
        hex(&report.image_hash),
        hex(&expected),
        "manifest image hash"
    );
    let ref_len = std::fs::metadata(dir.path().join("reference.db"))
        .unwrap()
        .len();
    assert_eq!(report.image_len, ref_len);
    assert_eq!(report.page_count, ref_len / page_size as u64);
    assert!(report.stats.new_chunks > 0);
    if journal == Journal::Wal {
        // Nothing was checkpointed: most of the image came from the WAL.
        let main_file = std::fs::metadata(&db).unwrap().len();
        assert!(
            main_file < report.image_len / 2,
            "main file {main_file} bytes"
        );
    }

    let snap = snapshot_of(&store, &report);
    assert_eq!(snap.manifest.page_size, page_size);
    let restored = restore_and_check(&store, &snap, &expected, dir.path());
    assert_eq!(restore_hash_via_writer(&store, &snap), expected);
    // The data is really there, not just a valid empty database.
    let r = open_ro(&restored);
    assert_eq!(
        count(&r, "SELECT count(*) FROM items"),
        count(&conn, "SELECT count(*) FROM items")
    );
    assert_eq!(
        count(&r, "PRAGMA page_size"),
        page_size as i64,
        "restored page size"
    );
    assert!(count(&r, "PRAGMA freelist_count") > 0);
}

#[test]
fn page_size_512_rollback() {
    page_size_round_trip(512, Journal::Rollback);
}

#[test]
fn page_size_512_wal() {
    page_size_round_trip(512, Journal::Wal);
}

#[test]
fn page_size_4096_rollback() {
    page_size_round_trip(4096, Journal::Rollback);
}

#[test]
fn page_size_4096_wal() {
    page_size_round_trip(4096, Journal::Wal);
}

#[test]
fn page_size_65536_rollback() {
    page_size_round_trip(65536, Journal::Rollback);
}

#[test]
fn page_size_65536_wal() {
    page_size_round_trip(65536, Journal::Wal);
}

// ---------------------------------------------------------------------------
// An unchanged database adds nothing
// ---------------------------------------------------------------------------

fn unchanged_adds_nothing(journal: Journal, chunk_pages: u32) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, journal, 4096);
    populate(&conn, &mut Rng(5), 4096, 1500);
    let store = new_store(dir.path(), chunk_pages);
    let store_dir = dir.path().join("store");

    let first = backup(&store, &db);
    assert!(first.stats.new_chunks > 0 && first.stats.packs_written > 0);
    assert!(first.new_base);
    let packs_before = objects_under(&store_dir, "packs");
    let index_before = objects_under(&store_dir, "index");
    let maps_before = objects_under(&store_dir, "maps");

    let second = backup(&store, &db);
    assert_ne!(second.snapshot, first.snapshot);
    assert_eq!(second.stats.new_chunks, 0, "{:?}", second.stats);
    assert_eq!(second.stats.packs_written, 0, "{:?}", second.stats);
    assert_eq!(second.stats.new_raw_bytes, 0);
    assert_eq!(second.stats.pack_bytes, 0);
    assert_eq!(
        second.stats.reused_chunks + second.stats.zero_chunks,
        second.chunks
    );
    assert_eq!(second.image_hash, first.image_hash);
    assert_eq!(second.image_len, first.image_len);
    assert!(!second.new_base);
    assert_eq!(second.delta_len, 0);
    assert_eq!(objects_under(&store_dir, "packs"), packs_before);
    assert_eq!(objects_under(&store_dir, "index"), index_before);
    assert_eq!(objects_under(&store_dir, "maps"), maps_before);

    // Both restore to the same bytes, equal to a reference copy.
    let expected = reference_hash(&db, dir.path());
    let a = restore_and_check(&store, &snapshot_of(&store, &first), &expected, dir.path());
    let b = restore_and_check(&store, &snapshot_of(&store, &second), &expected, dir.path());
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());

    // Also through a store opened again from disk.
    let reopened = Store::open(&store_dir).unwrap();
    let third = backup(&reopened, &db);
    assert_eq!(third.stats.new_chunks, 0);
    assert_eq!(third.stats.packs_written, 0);
    assert_eq!(third.image_hash, first.image_hash);
    assert_eq!(reopened.snapshots().unwrap().len(), 3);
}

#[test]
fn unchanged_database_adds_no_chunks_rollback() {
    unchanged_adds_nothing(Journal::Rollback, 1);
}

#[test]
fn unchanged_database_adds_no_chunks_wal() {
    unchanged_adds_nothing(Journal::Wal, 1);
}

#[test]
fn unchanged_database_adds_no_chunks_wal_chunk_pages_4() {
    unchanged_adds_nothing(Journal::Wal, 4);
}

// ---------------------------------------------------------------------------
// backup_connection through an application's own read-write connection
// ---------------------------------------------------------------------------

/// Builds the application's database. The rows (and free pages) are written by a
/// connection that is closed afterwards; the application connection then only
/// appends, so its page cache never holds a freed page whose bytes differ from the
/// file (which would make free-page bytes differ from a fresh connection's copy).
fn app_db(dir: &Path, journal: Journal) -> (std::path::PathBuf, Connection) {
    let db = dir.join("app.db");
    {
        let setup = create_db(&db, journal, 4096);
        populate(&setup, &mut Rng(11), 4096, 1200);
    }
    let app = Connection::open(&db).unwrap();
    insert_rows(&app, &mut Rng(12), 4096, 200);
    (db, app)
}

fn backup_app_connection_outside_txn(journal: Journal) {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path(), journal);
    let store = new_store(dir.path(), 1);
    assert!(app.is_autocommit());
    app.execute_batch("PRAGMA cache_size = -4321").unwrap();
    let report = store
        .backup_connection(&app, &db, &BackupOptions::default())
        .unwrap();
    assert!(app.is_autocommit(), "capture left a transaction open");
    // The capture shrinks the source's cache for the copy only.
    assert_eq!(count(&app, "PRAGMA cache_size"), -4321);
    let expected = reference_hash(&db, dir.path());
    assert_eq!(hex(&report.image_hash), hex(&expected));
    restore_and_check(&store, &snapshot_of(&store, &report), &expected, dir.path());
    // The application connection still works for writing.
    insert_rows(&app, &mut Rng(13), 4096, 10);
}

#[test]
fn backup_connection_outside_transaction_rollback() {
    backup_app_connection_outside_txn(Journal::Rollback);
}

#[test]
fn backup_connection_outside_transaction_wal() {
    backup_app_connection_outside_txn(Journal::Wal);
}

/// The application is inside its own `BEGIN` and has read (so its snapshot is
/// pinned). The capture must copy that snapshot and leave the transaction open.
fn backup_app_connection_inside_txn(journal: Journal) {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path(), journal);
    let store = new_store(dir.path(), 1);
    let before = reference_hash(&db, dir.path());
    let rows_before = count(&app, "SELECT count(*) FROM items");

    app.execute_batch("BEGIN").unwrap();
    assert_eq!(count(&app, "SELECT count(*) FROM items"), rows_before);
    assert!(!app.is_autocommit());

    if journal == Journal::Wal {
        // Another connection commits after the application's snapshot was taken.
        let other = Connection::open(&db).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        insert_rows(&other, &mut Rng(14), 4096, 50);
    }

    let report = store
        .backup_connection(&app, &db, &BackupOptions::default())
        .unwrap();
    assert!(
        !app.is_autocommit(),
        "capture ended the caller's transaction"
    );
    assert_eq!(
        hex(&report.image_hash),
        hex(&before),
        "capture must copy the caller's snapshot"
    );
    // Still the same snapshot after the capture.
    assert_eq!(count(&app, "SELECT count(*) FROM items"), rows_before);

    if journal == Journal::Rollback {
        // The caller's read transaction still holds its SHARED lock: a writer in
        // another connection cannot commit until the application ends it.
        let other = Connection::open(&db).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        let err = other
            .execute("INSERT INTO items(name) VALUES ('blocked')", [])
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy),
            "{err}"
        );
    }
    app.execute_batch("COMMIT").unwrap();
    assert!(app.is_autocommit());

    let snap = snapshot_of(&store, &report);
    restore_and_check(&store, &snap, &before, dir.path());

    // Outside the transaction again, a backup sees the newest state.
    let rows_now = count(&app, "SELECT count(*) FROM items");
    if journal == Journal::Wal {
        assert_eq!(rows_now, rows_before + 50);
    }
    let report2 = store
        .backup_connection(&app, &db, &BackupOptions::default())
        .unwrap();
    let after = reference_hash(&db, dir.path());
    assert_eq!(hex(&report2.image_hash), hex(&after));
    if journal == Journal::Wal {
        assert_ne!(after, before);
    }
    restore_and_check(&store, &snapshot_of(&store, &report2), &after, dir.path());
}

#[test]
fn backup_connection_inside_application_transaction_rollback() {
    backup_app_connection_inside_txn(Journal::Rollback);
}

#[test]
fn backup_connection_inside_application_transaction_wal() {
    backup_app_connection_inside_txn(Journal::Wal);
}

/// `BEGIN` without any read yet: the capture's own first read starts the
/// caller's read transaction, which must still be open afterwards.
#[test]
fn backup_connection_right_after_begin() {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path(), Journal::Wal);
    let store = new_store(dir.path(), 1);
    let expected = reference_hash(&db, dir.path());
    app.execute_batch("BEGIN").unwrap();
    let report = store
        .backup_connection(&app, &db, &BackupOptions::default())
        .unwrap();
    assert!(!app.is_autocommit());
    assert_eq!(hex(&report.image_hash), hex(&expected));
    // The read the capture started belongs to the caller's transaction: its
    // snapshot stays pinned while another connection commits.
    let rows = count(&app, "SELECT count(*) FROM items");
    insert_rows(&Connection::open(&db).unwrap(), &mut Rng(15), 4096, 5);
    assert_eq!(count(&app, "SELECT count(*) FROM items"), rows);
    app.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&app, "SELECT count(*) FROM items"), rows + 5);
    restore_and_check(&store, &snapshot_of(&store, &report), &expected, dir.path());
}

// ---------------------------------------------------------------------------
// Delta manifests
// ---------------------------------------------------------------------------

/// One row per page: a 3000-byte payload fills a 4096-byte leaf page on its own,
/// so updating k rows in place changes exactly k leaf pages (+ the header page).
fn rows_per_page_db(db: &Path, rows: i64) -> Connection {
    let conn = create_db(db, Journal::Wal, 4096);
    conn.execute_batch("CREATE TABLE pages(id INTEGER PRIMARY KEY, payload BLOB NOT NULL);")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut rng = Rng(21);
        let mut ins = tx.prepare("INSERT INTO pages VALUES (?1, ?2)").unwrap();
        for id in 1..=rows {
            ins.execute(rusqlite::params![id, rng.bytes(3000, true)])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    conn
}

fn rewrite_rows(conn: &Connection, seed: u64, ids: impl Iterator<Item = i64>) {
    let mut rng = Rng(seed);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut upd = tx
            .prepare("UPDATE pages SET payload = ?2 WHERE id = ?1")
            .unwrap();
        for id in ids {
            assert_eq!(
                upd.execute(rusqlite::params![id, rng.bytes(3000, true)])
                    .unwrap(),
                1
            );
        }
    }
    tx.commit().unwrap();
}

#[test]
fn delta_manifests_share_a_base_until_most_pages_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = rows_per_page_db(&db, 2500);
    let store = new_store(dir.path(), 1);
    let mut taken = Vec::new(); // (report, reference hash)
                                // Every chunk a backup stores costs its 32-byte id in the index object (a page
                                // map names chunks compactly), so a backup that stores n chunks adds at least
                                // 32·n bytes of metadata; a small delta adds a few hundred bytes.
    let full_map_bytes = |chunks: u64| 32 * chunks;
    let small_metadata = 4096;

    // 1. Base.
    let base = backup(&store, &db);
    assert!(base.new_base);
    assert!(base.chunks > 2500, "{} chunks", base.chunks);
    assert!(base.metadata_bytes > full_map_bytes(base.stats.new_chunks));
    taken.push((base.clone(), reference_hash(&db, dir.path())));

    // 2. A handful of pages: a delta against the same base, no new page map.
    rewrite_rows(&conn, 100, [7, 500, 1234].into_iter());
    let small = backup(&store, &db);
    assert!(!small.new_base);
    assert!(
        (3..=10).contains(&small.delta_len),
        "delta of {} positions for 3 rewritten rows",
        small.delta_len
    );
    assert_eq!(small.stats.new_chunks, small.delta_len);
    assert!(
        small.metadata_bytes < small_metadata,
        "{} bytes of metadata for a delta",
        small.metadata_bytes
    );
    taken.push((small.clone(), reference_hash(&db, dir.path())));

    // 3. More than 64 positions but under half of the image: still a delta.
    rewrite_rows(&conn, 101, (1..=120).map(|i| i * 20));
    let medium = backup(&store, &db);
    assert!(!medium.new_base, "delta of {}", medium.delta_len);
    assert!(medium.delta_len > 64 && medium.delta_len * 2 <= medium.chunks);
    assert!(medium.metadata_bytes < full_map_bytes(medium.chunks) / 2);
    taken.push((medium.clone(), reference_hash(&db, dir.path())));

    // 4. Most pages: a full page map.
    rewrite_rows(&conn, 102, 1..=2200);
    let big = backup(&store, &db);
    assert!(big.new_base);
    assert!(big.stats.new_chunks >= 2200);
    assert!(big.metadata_bytes > full_map_bytes(big.stats.new_chunks));
    taken.push((big.clone(), reference_hash(&db, dir.path())));

    // 5. A small change after the rebase deltas against the new base.
    rewrite_rows(&conn, 103, [1, 2].into_iter());
    let after = backup(&store, &db);
    assert!(!after.new_base);
    assert!(after.delta_len >= 2 && after.delta_len <= 8);
    assert!(after.metadata_bytes < small_metadata);
    taken.push((after.clone(), reference_hash(&db, dir.path())));

    // Each manifest names the snapshot before it as its parent.
    let snaps: Vec<_> = taken.iter().map(|(r, _)| snapshot_of(&store, r)).collect();
    assert_eq!(snaps[0].manifest.parent, None);
    for i in 1..snaps.len() {
        assert_eq!(snaps[i].manifest.parent, Some(snaps[i - 1].id));
    }
    assert_eq!(store.snapshots().unwrap().len(), 5);

    // Every snapshot, old and new, restores byte for byte.
    for (snap, (_, expected)) in snaps.iter().zip(&taken) {
        restore_and_check(&store, snap, expected, dir.path());
    }
    let distinct: std::collections::HashSet<_> = taken.iter().map(|(_, h)| *h).collect();
    assert_eq!(distinct.len(), taken.len(), "every step changed the image");
}

/// A shrinking database: the newer chunk list is shorter than its base.
#[test]
fn delta_against_a_longer_base_restores() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = rows_per_page_db(&db, 1200);
    let store = new_store(dir.path(), 1);
    let first = backup(&store, &db);
    let first_ref = reference_hash(&db, dir.path());
    // Drop the last few rows and VACUUM: a few pages shorter, mostly unchanged.
    conn.execute_batch("DELETE FROM pages WHERE id > 1190; VACUUM;")
        .unwrap();
    let second = backup(&store, &db);
    let second_ref = reference_hash(&db, dir.path());
    assert!(second.chunks < first.chunks);
    assert!(!second.new_base, "delta {}", second.delta_len);
    restore_and_check(
        &store,
        &snapshot_of(&store, &second),
        &second_ref,
        dir.path(),
    );
    restore_and_check(&store, &snapshot_of(&store, &first), &first_ref, dir.path());
}

/// Inside the application's *write* transaction SQLite's backup API cannot copy
/// (every step returns SQLITE_BUSY until that transaction ends, and only the
/// caller can end it). The capture must say so at once, not wait out the busy
/// timeout and blame another process, and must leave the transaction and its
/// uncommitted changes alone.
fn backup_connection_in_write_txn(journal: Journal) {
    let dir = tempfile::tempdir().unwrap();
    let (db, app) = app_db(dir.path(), journal);
    let store = new_store(dir.path(), 1);
    let rows = count(&app, "SELECT count(*) FROM items");
    app.execute_batch("BEGIN; INSERT INTO items(name) VALUES ('uncommitted');")
        .unwrap();
    let started = std::time::Instant::now();
    let err = store
        .backup_connection(&app, &db, &BackupOptions::default())
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(
            err,
            pagesnap_core::Error::Capture(pagesnap_core::capture::CaptureError::UncommittedWrites(
                _
            ))
        ),
        "{err}"
    );
    assert!(waited < Duration::from_secs(1), "waited {waited:?}: {err}");
    assert!(store.snapshots().unwrap().is_empty());
    // The application's transaction is untouched.
    assert!(!app.is_autocommit());
    assert_eq!(count(&app, "SELECT count(*) FROM items"), rows + 1);
    app.execute_batch("COMMIT").unwrap();
    let report = store
        .backup_connection(&app, &db, &BackupOptions::default())
        .unwrap();
    let expected = reference_hash(&db, dir.path());
    let restored = restore_and_check(&store, &snapshot_of(&store, &report), &expected, dir.path());
    assert_eq!(
        count(&open_ro(&restored), "SELECT count(*) FROM items"),
        rows + 1
    );
}

#[test]
fn backup_connection_inside_write_transaction_fails_fast_rollback() {
    backup_connection_in_write_txn(Journal::Rollback);
}

#[test]
fn backup_connection_inside_write_transaction_fails_fast_wal() {
    backup_connection_in_write_txn(Journal::Wal);
}

/// Tiny images: an empty (0-byte) database file, and images smaller than one
/// chunk or one hashing block, or exactly one block.
#[test]
fn tiny_databases_round_trip() {
    for (sql, chunk_pages, page_size, pages) in [
        // SQLite's backup of a 0-byte database writes a 1-page empty database.
        ("", 1, 4096, 1),
        ("CREATE TABLE a(x);", 256, 4096, 2),
        ("CREATE TABLE a(x);", 1, 65536, 2),
        ("CREATE TABLE a(x);", 4, 512, 2),
        ("CREATE TABLE a(x); CREATE TABLE b(y);", 4, 512, 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tiny.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch(&format!("PRAGMA page_size={page_size}; {sql}"))
            .unwrap();
        let store = new_store(dir.path(), chunk_pages);
        let reference = dir.path().join("reference.db");
        let expected = reference_copy(&db, &reference);
        let report = backup(&store, &db);
        let what = format!("{sql:?} chunk_pages={chunk_pages} page_size={page_size}");
        assert_eq!(report.page_count, pages, "{what}");
        assert_eq!(
            report.image_len,
            std::fs::metadata(&reference).unwrap().len(),
            "{what}"
        );
        assert_eq!(
            report.chunks,
            report
                .image_len
                .div_ceil(page_size as u64 * chunk_pages as u64),
            "{what}"
        );
        assert_eq!(hex(&report.image_hash), hex(&expected), "{what}");
        restore_and_check(&store, &snapshot_of(&store, &report), &expected, dir.path());
    }
}

// ---------------------------------------------------------------------------
// Values the decoder refuses are refused before anything is written
// ---------------------------------------------------------------------------

/// chrono keeps a leap second as nanoseconds ≥ 1e9, which the manifest's
/// decoder refuses: such a time must be refused before a pack is written, not
/// published as a snapshot nothing can read.
#[test]
fn a_leap_second_time_is_refused_before_anything_is_written() {
    use chrono::{NaiveDate, Timelike};
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path(), 1);
    let db = dir.path().join("app.db");
    let conn = create_db(&db, Journal::Wal, 4096);
    populate(&conn, &mut Rng(3), 4096, 200);
    let leap = NaiveDate::from_ymd_opt(2026, 12, 31)
        .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
        .unwrap()
        .and_utc();
    assert!(leap.nanosecond() >= 1_000_000_000);
    let before = objects_under(&dir.path().join("store"), "");
    let opts = BackupOptions {
        time: Some(leap),
        ..BackupOptions::default()
    };
    let e = store.backup_path(&db, &opts).unwrap_err();
    assert!(
        matches!(e, pagesnap_core::Error::BadSnapshotTime { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("leap second"), "{e}");
    assert_eq!(objects_under(&dir.path().join("store"), ""), before);
    assert!(store.snapshots().unwrap().is_empty());
    let r = store.verify(&Default::default()).unwrap();
    assert!(r.healthy(), "{:?}", r.problems);
}

// ---------------------------------------------------------------------------
// Backups side by side in one process
// ---------------------------------------------------------------------------

/// Four backups at once in one process, as an application backing up several
/// databases from its threads (or `pagesnap watch`) runs them: they share the
/// process's worker threads, and a worker waiting inside one block's parallel
/// compression may take up a block of another backup. Each snapshot restores
/// byte for byte. (A block buffer held per thread across that wait was taken
/// twice and panicked: this test failed with it in most runs.)
#[test]
fn backups_side_by_side_in_one_process_each_restore_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path(), 1);
    let dbs: Vec<_> = (0..4i64)
        .map(|i| {
            let db = dir.path().join(format!("app{i}.db"));
            let conn = one_row_per_page(&db, 600);
            conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
            (db, conn)
        })
        .collect();
    for round in 0..6u64 {
        // Pages changed all over each database: every block has new chunks
        // to compress, in parallel within the block.
        for (i, (_, conn)) in dbs.iter().enumerate() {
            let seed = 100 * round + i as u64;
            set_rows(conn, seed, (1..=600).filter(|r| (r + seed as i64) % 3 == 0));
        }
        let references: Vec<Hash> = dbs
            .iter()
            .enumerate()
            .map(|(i, (db, _))| {
                // A fresh file each time: the backup API stamps an existing
                // destination's counters + 1.
                reference_copy(db, &dir.path().join(format!("ref{round}-{i}.db")))
            })
            .collect();
        let reports: Vec<_> = std::thread::scope(|s| {
            let running: Vec<_> = dbs
                .iter()
                .map(|(db, _)| s.spawn(|| backup(&store, db)))
                .collect();
            running.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for (report, reference) in reports.iter().zip(&references) {
            assert!(
                report.capture_fallback.is_none(),
                "{:?}",
                report.capture_fallback
            );
            assert!(report.stats.new_chunks > 0);
            let snap = snapshot_of(&store, report);
            restore_and_check(&store, &snap, reference, dir.path());
        }
    }
}
