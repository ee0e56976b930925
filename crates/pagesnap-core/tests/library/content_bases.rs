//! Content-found delta bases (docs/DELTAS.md): after a VACUUM moves rows to
//! other page numbers, a store with deltas finds each new page's base by
//! content through the parent's sketch (a local cache file) and stores far
//! fewer bytes than with same-position bases only; a damaged, stale or lying
//! sketch is never trusted, and every snapshot restores byte for byte.

use crate::common::Rng;
use crate::common::*;
use crate::index_cache::cache_dir;
use pagesnap_core::{BackupReport, InitOptions, Store};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};

fn store(dir: &Path, name: &str) -> Store {
    Store::init(
        dir.join(name),
        &InitOptions {
            deltas: true,
            ..InitOptions::default()
        },
    )
    .unwrap()
}

/// The folder of `store`'s sketches on this machine.
fn sketches(store: &Store) -> PathBuf {
    cache_dir()
        .join(store.config().store_id.to_hex())
        .join("sketches")
}

/// The one sketch file of `store` (one database).
fn sketch_file(store: &Store) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(sketches(store))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

pub(crate) fn shop(db: &Path, rows: i64) -> Connection {
    let conn = create_db(db, Journal::Wal, 4096);
    conn.execute_batch(
        "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL);",
    )
    .unwrap();
    let mut rng = Rng(11);
    let tx = conn.unchecked_transaction().unwrap();
    for id in 1..=rows {
        tx.execute(
            "INSERT INTO item VALUES (?1, ?2, ?3)",
            params![id, rng.text(70), rng.below(1000) as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    conn
}

fn touch(conn: &Connection, rng: &mut Rng, rows: i64) {
    for _ in 0..20 {
        conn.execute(
            "UPDATE item SET qty = ?2 WHERE id = ?1",
            params![1 + rng.below(rows as u64) as i64, rng.below(1000) as i64],
        )
        .unwrap();
    }
}

/// Backs `db` up into `found` (which keeps its sketches) and `blind` (which
/// loses them first, so it only ever has same-position bases), checks both
/// took the same image, and records the first with the database's reference
/// hash in `taken`.
pub(crate) fn backup_both(
    found: &Store,
    blind: &Store,
    db: &Path,
    dir: &Path,
    taken: &mut Vec<(BackupReport, Hash)>,
) -> (BackupReport, BackupReport) {
    let _ = std::fs::remove_dir_all(sketches(blind));
    let a = backup(found, db);
    let b = backup(blind, db);
    assert_eq!(a.image_hash, b.image_hash);
    taken.push((a.clone(), reference_hash(db, dir)));
    (a, b)
}

/// Every 9th row deleted, then VACUUM (the rows after the first hole move
/// towards the start, a little more on each page), backed up into both
/// stores: the one with content-found bases stores more than twice the deltas
/// in less than half the pack bytes.
fn vacuum_and_compare(conn: &Connection, both: &mut dyn FnMut() -> (BackupReport, BackupReport)) {
    conn.execute("DELETE FROM item WHERE id % 9 = 4", [])
        .unwrap();
    conn.execute_batch("VACUUM").unwrap();
    let (a, b) = both();
    eprintln!(
        "after VACUUM: content-found {} bytes in {} deltas, same position only {} bytes in {} deltas",
        a.stats.pack_bytes, a.stats.delta_chunks, b.stats.pack_bytes, b.stats.delta_chunks
    );
    assert!(a.stats.new_chunks > 100, "{:?}", a.stats);
    assert!(
        a.stats.delta_chunks > b.stats.delta_chunks * 2,
        "{:?} vs {:?}",
        a.stats,
        b.stats
    );
    assert!(
        a.stats.pack_bytes * 2 < b.stats.pack_bytes,
        "{:?} vs {:?}",
        a.stats,
        b.stats
    );
}

/// Backups of both stores (`both`), a step of updates, again, the VACUUM of
/// [`vacuum_and_compare`], updates, and a last backup.
pub(crate) fn vacuum_between_touches(
    conn: &Connection,
    rng: &mut Rng,
    rows: i64,
    both: &mut dyn FnMut() -> (BackupReport, BackupReport),
) {
    both();
    touch(conn, rng, rows);
    both();
    vacuum_and_compare(conn, both);
    touch(conn, rng, rows);
    both();
}

/// Each snapshot `taken` recorded restores from the store `found` (reopened)
/// byte for byte.
fn restore_all(dir: &Path, taken: &[(BackupReport, Hash)]) {
    let found = Store::open(dir.join("found")).unwrap();
    restore_each(&found, taken, dir);
}

#[test]
fn vacuum_moved_rows_find_their_bases_by_content() {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let rows = 12_000;
    let conn = shop(&db, rows);
    // `found` keeps its sketches; `blind` loses them before every backup, so
    // it only ever has same-position bases.
    let found = store(dir.path(), "found");
    let blind = store(dir.path(), "blind");
    let mut rng = Rng(5);
    let mut taken: Vec<(BackupReport, Hash)> = Vec::new();
    let mut both = || backup_both(&found, &blind, &db, dir.path(), &mut taken);
    vacuum_between_touches(&conn, &mut rng, rows, &mut both);

    // A damaged sketch, a stale one (an older snapshot's) and one that lies
    // (sound, but each position given another's features): each backup still
    // gives an exact snapshot, and writes a sound sketch again.
    let path = sketch_file(&found);
    let stale = std::fs::read(&path).unwrap();
    let mut after = Vec::new();
    for harm in 0..3 {
        touch(&conn, &mut rng, rows);
        conn.execute("DELETE FROM item WHERE id % 50 = ?1", params![harm as i64])
            .unwrap();
        conn.execute_batch("VACUUM").unwrap();
        let current = std::fs::read(&path).unwrap();
        let harmed = match harm {
            0 => {
                let mut b = current.clone();
                let at = b.len() / 2;
                b[at] ^= 0x40;
                b
            }
            1 => stale.clone(),
            _ => lying(&current),
        };
        std::fs::write(&path, &harmed).unwrap();
        let r = backup(&found, &db);
        after.push((r.clone(), reference_hash(&db, dir.path())));
        let rewritten = std::fs::read(&path).unwrap();
        assert_ne!(
            rewritten, harmed,
            "harm {harm}: the sketch was not rewritten"
        );
        // The new snapshot's sketch (its id at bytes 16..48, FORMAT.md).
        assert_eq!(&rewritten[16..48], &r.snapshot.0[..], "harm {harm}");
    }
    taken.extend(after);

    restore_all(dir.path(), &taken);
    let blind = Store::open(dir.path().join("blind")).unwrap();
    let snaps = blind.snapshots().unwrap();
    assert_eq!(snaps.len(), 4);
}

/// The feature rows of a sketch file (FORMAT.md: a 56-byte header whose
/// last 8 bytes are the chunk count, the rows, a skip-delta state a chunk, a
/// 32-byte checksum).
fn feature_rows(sketch: &[u8]) -> &[u8] {
    let row = u32::from_le_bytes(sketch[12..16].try_into().unwrap()) as usize * 4;
    let count = u64::from_le_bytes(sketch[48..56].try_into().unwrap()) as usize;
    &sketch[56..56 + count * row]
}

/// A backup computes features only for changed chunks whose same-position
/// delta is poor; a chunk stored as a small delta keeps its base's features in
/// the next sketch (backup/sketch/mod.rs, `Sketcher::inherit`). After several
/// such backups the sketch still leads a VACUUM's pages to their bases.
#[test]
fn inherited_features_still_find_bases_after_vacuum() {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let rows = 12_000;
    let conn = shop(&db, rows);
    let found = store(dir.path(), "found");
    let blind = store(dir.path(), "blind");
    let mut rng = Rng(9);
    let mut taken: Vec<(BackupReport, Hash)> = Vec::new();
    let mut both = || backup_both(&found, &blind, &db, dir.path(), &mut taken);
    both();
    let first = std::fs::read(sketch_file(&found)).unwrap();
    // A few rows updated: every changed page a small delta of its previous
    // version, so no feature is computed and the rows stay the first sketch's.
    touch(&conn, &mut rng, rows);
    let (a, _) = both();
    assert!(a.stats.delta_chunks > 5, "{:?}", a.stats);
    let second = std::fs::read(sketch_file(&found)).unwrap();
    assert_ne!(
        second[16..48],
        first[16..48],
        "a sketch of the new snapshot"
    );
    assert!(
        feature_rows(&second) == feature_rows(&first),
        "features inherited, not computed"
    );
    for _ in 0..4 {
        touch(&conn, &mut rng, rows);
        both();
    }
    vacuum_and_compare(&conn, &mut both);
    // The VACUUM's pages had poor same-position deltas: their own features
    // were computed for the next sketch.
    let third = std::fs::read(sketch_file(&found)).unwrap();
    assert!(feature_rows(&third) != feature_rows(&second));
    restore_all(dir.path(), &taken);
}

/// A sketch file with its rows and states reversed and its checksum made
/// right again: a sound file whose features and states belong to other
/// positions.
fn lying(sketch: &[u8]) -> Vec<u8> {
    // FORMAT.md: a 56-byte header (features per chunk at 12..16), rows of
    // 4-byte features, a state byte a chunk, a 32-byte checksum.
    const HEADER: usize = 56;
    let rows_end = HEADER + feature_rows(sketch).len();
    let row = u32::from_le_bytes(sketch[12..16].try_into().unwrap()) as usize * 4;
    let body_end = sketch.len() - 32;
    let rows: Vec<&[u8]> = sketch[HEADER..rows_end].chunks(row).collect();
    assert!(rows.len() > 10 && rows.iter().all(|r| r.len() == row));
    assert_eq!(body_end - rows_end, rows.len(), "a state per chunk");
    let mut out = sketch[..HEADER].to_vec();
    for r in rows.iter().rev() {
        out.extend_from_slice(r);
    }
    out.extend(sketch[rows_end..body_end].iter().rev());
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}
