//! A database larger than 1 GiB, so SQLite's pending-byte page (the page holding
//! byte offset 0x40000000, which SQLite never writes) lies inside the image.

use crate::common::*;
use pagesnap_core::{InitOptions, Store};
use std::time::Instant;

const PAGE: u64 = 65536;
const PENDING_BYTE: u64 = 0x4000_0000;
const MIB: i64 = 1 << 20;

#[test]
fn over_one_gib_with_pending_byte_page() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let conn = create_db(&db, Journal::Rollback, PAGE as u32);
    // ids 1-12 random, 13-74 zero; 3 (random), 20 and 40 (zero) are deleted below.
    // One transaction of fresh pages: nothing is journaled. secure_delete zeroes
    // freed pages, so the deleted rows below leave all-zero (unstored) chunks.
    conn.execute_batch(&format!(
        "PRAGMA synchronous=OFF;
         PRAGMA secure_delete=ON;
         CREATE TABLE big(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, b BLOB NOT NULL);
         CREATE INDEX big_kind ON big(kind);
         BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12)
           INSERT INTO big(kind, b) SELECT 'random', randomblob({r}) FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 62)
           INSERT INTO big(kind, b) SELECT 'zero', zeroblob({z}) FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
           INSERT INTO big(kind, b) SELECT 'small', randomblob(i % 700) FROM n;
         DELETE FROM big WHERE id IN (3, 20, 40);
         COMMIT;",
        r = 16 * MIB,
        z = 16 * MIB,
    ))
    .unwrap();
    let db_len = std::fs::metadata(&db).unwrap().len();
    assert!(
        db_len > PENDING_BYTE + 2 * PAGE,
        "database is only {db_len} bytes"
    );
    assert!(count(&conn, "PRAGMA freelist_count") > 0);
    drop(conn);
    let built = t0.elapsed();

    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
    let report = backup(&store, &db);
    let backed_up = t0.elapsed();
    assert_eq!(report.image_len, db_len);
    assert_eq!(report.page_size as u64, PAGE);
    // Zero chunks: the pending-byte page, the last page of each zeroblob's
    // overflow chain, and the 3 x 256 securely deleted pages (less one that
    // became a freelist trunk).
    assert!(
        report.stats.zero_chunks > 700,
        "zero chunks: {}",
        report.stats.zero_chunks
    );
    assert!(report.stats.new_chunks > 0);
    // Zero chunks and zeroblob pages cost (almost) nothing: the store holds
    // roughly the 192 MiB of random data.
    let random = 12 * 16 * MIB as u64;
    assert!(
        report.stats.pack_bytes < random + random / 4,
        "packs: {} bytes",
        report.stats.pack_bytes
    );
    let snap = snapshot_of(&store, &report);
    let pending_page = PENDING_BYTE / PAGE; // 0-based position
    let chunks = store.chunk_list(&snap).unwrap();
    assert_eq!(chunks.len() as u64, db_len / PAGE);
    assert_eq!(
        chunks[pending_page as usize],
        pagesnap_core::ChunkRef::Zero,
        "the pending-byte page"
    );

    let reference = dir.path().join("reference.db");
    let expected = reference_copy(&db, &reference);
    std::fs::remove_file(&reference).unwrap();
    assert_eq!(hex(&report.image_hash), hex(&expected));
    let restored = restore_and_check(&store, &snap, &expected, dir.path());
    let r = open_ro(&restored);
    assert_eq!(
        count(&r, "SELECT count(*) FROM big WHERE kind = 'zero'"),
        60
    );
    assert_eq!(
        count(&r, "SELECT sum(length(b)) FROM big WHERE kind = 'random'"),
        11 * 16 * MIB
    );
    println!(
        "{} MiB: built in {built:?}, backed up by {backed_up:?} ({:?} for the backup), \
         {} chunks ({} zero, {} new, {} MiB packed), all done in {:?}",
        db_len >> 20,
        report.duration,
        report.chunks,
        report.stats.zero_chunks,
        report.stats.new_chunks,
        report.stats.pack_bytes >> 20,
        t0.elapsed()
    );
}
