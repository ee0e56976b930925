//! Database shapes: page and chunk sizes, partial last chunks and blocks, zero
//! pages, shrinking databases, tiny and empty files. Each round trip is byte-exact.

use crate::util::*;
use rusqlite::Connection;
use std::path::Path;

/// Backs `db` up, takes its reference copy, and restores the snapshot at once.
fn backup_and_check(fx: &Fx, db: &Path, tag: &str, args: &[&str]) -> serde_json::Value {
    let b = fx.backup(db, args);
    let reference = reference_copy(db, &fx.path(&format!("ref-{tag}.db")));
    let out = fx.path(&format!("out-{tag}.db"));
    fx.restore(&[b["id"].as_str().unwrap()], &out);
    assert_restored(&out, &b["image_hash"], &reference);
    b
}

#[test]
fn page_sizes_and_chunk_sizes_round_trip() {
    let mut partial_chunk = false;
    let mut partial_block = false;
    for (i, (page_size, chunk_pages, rows)) in [
        (512u32, 1u32, 600usize),
        (1024, 8, 900),
        (4096, 4, 1300),
        (8192, 32, 1100),
        (65536, 1, 700),
        (65536, 4, 1500),
    ]
    .into_iter()
    .enumerate()
    {
        let fx = Fx::uninit();
        ok(fx
            .cmd()
            .args(["init", "--chunk-pages", &chunk_pages.to_string()]));
        let db = fx.path("app.db");
        let journal = if i % 2 == 0 {
            Journal::Wal
        } else {
            Journal::Rollback
        };
        let conn = create_db_paged(&db, journal, rows, 200 + i as u64, page_size);
        let mut last = None;
        for round in 0..3u64 {
            if round > 0 {
                mutate(&conn, round);
            }
            let b = backup_and_check(&fx, &db, &round.to_string(), &["--time", &t(round as u32)]);
            let image = b["image_size"].as_u64().unwrap();
            let chunk_len = (page_size * chunk_pages) as u64;
            assert_eq!(b["page_size"], page_size, "{b}");
            // Read from the file (and WAL), and still the reference's bytes.
            assert_eq!(b["read_directly"], true, "{b}");
            assert_eq!(b["pages"], image / page_size as u64);
            assert_eq!(b["chunks"], image.div_ceil(chunk_len), "{b}");
            partial_chunk |= image % chunk_len != 0;
            partial_block |= image % chunk_len.max(65536) != 0;
            last = Some(b);
        }
        // Dedup works at every chunk size (when there are enough chunks for a
        // small change to leave some untouched).
        let last = last.unwrap();
        if last["chunks"].as_u64().unwrap() >= 32 {
            assert!(last["reused_chunks"].as_u64().unwrap() > 0, "{last}");
        }
    }
    assert!(partial_chunk, "no case had a partial last chunk");
    assert!(partial_block, "no case had a partial last block");
}

#[test]
fn zero_pages_and_a_shrinking_database_round_trip() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 2500, 210);
    // Freed pages are zeroed: the image holds all-zero chunks.
    conn.execute_batch("PRAGMA secure_delete=ON; DELETE FROM items WHERE id % 5 != 0;")
        .unwrap();
    let b0 = backup_and_check(&fx, &db, "zeros", &["--time", &t(0)]);
    assert!(b0["zero_chunks"].as_u64().unwrap() > 0, "{b0}");

    // VACUUM shrinks it a lot (a new base), then incremental vacuum a little (a delta
    // against a longer base).
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")
        .unwrap();
    let b1 = backup_and_check(&fx, &db, "vacuum", &["--time", &t(1)]);
    assert!(b1["pages"].as_u64() < b0["pages"].as_u64(), "{b1}");
    insert_rows(&conn, 400, &mut Rng(211));
    let b2 = backup_and_check(&fx, &db, "grown", &["--time", &t(2)]);
    conn.execute_batch(
        "DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id DESC LIMIT 40);
         PRAGMA incremental_vacuum(4);",
    )
    .unwrap();
    let b3 = backup_and_check(&fx, &db, "trimmed", &["--time", &t(3)]);
    assert!(b3["pages"].as_u64() < b2["pages"].as_u64(), "{b3}");
    assert_eq!(b3["new_base"], false, "{b3}");
    assert!(b3["delta_entries"].as_u64().unwrap() > 0);

    // All of them still restore after the later ones were written.
    for b in [&b0, &b1, &b2, &b3] {
        let out = fx.path("again.db");
        let _ = std::fs::remove_file(&out);
        fx.restore(&[b["id"].as_str().unwrap()], &out);
        assert_eq!(serde_json::Value::String(hash_file(&out)), b["image_hash"]);
    }
}

#[test]
fn tiny_and_empty_databases_round_trip() {
    let fx = Fx::new();
    // Two pages: the image is one block, smaller than a blake3 subtree block.
    let tiny = fx.path("tiny.db");
    let c = Connection::open(&tiny).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES ('hello');")
        .unwrap();
    drop(c);
    let b = backup_and_check(&fx, &tiny, "tiny", &[]);
    assert_eq!(b["pages"], 2);
    assert_eq!(b["read_directly"], true);

    // A zero-length file is an empty database to SQLite. The backup API gives
    // it a first page, which a direct read would not: it goes that way.
    let empty = fx.path("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let b = backup_and_check(&fx, &empty, "empty", &[]);
    assert_eq!(b["read_directly"], false);
    let why = b["capture_fallback"].as_str().unwrap_or_default();
    assert!(why.contains("empty"), "{b}");
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "source untouched"
    );
}

/// A WAL database that no connection has open (its application is stopped,
/// or between runs): the backup's own connection recovers an index of the
/// empty WAL, which has no page size. It is read directly, twice (the second
/// time the WAL and its index are left from the first), and restores exactly.
#[test]
fn a_wal_database_no_one_has_open_is_read_directly() {
    let fx = Fx::new();
    let db = fx.path("idle.db");
    drop(create_db(&db, Journal::Wal, 1200, 91));
    assert!(
        !fx.path("idle.db-wal").exists(),
        "the last connection closed it"
    );
    for tag in ["idle-1", "idle-2"] {
        let b = backup_and_check(&fx, &db, tag, &[]);
        assert_eq!(b["read_directly"], true, "{b}");
        assert_eq!(b["capture_fallback"], serde_json::Value::Null, "{b}");
    }
}

/// A WAL database its application keeps open, written a little between
/// backups: the second backup on follows the WAL (`wal_guided`), reading only
/// the blocks with a page written since; `--full-read` reads every page. Each
/// restores to the backup API's copy of the same state.
#[test]
fn a_backup_follows_the_wal_of_a_database_kept_open_and_full_read_reads_whole() {
    let fx = Fx::new();
    let db = fx.path("live.db");
    let app = create_db(&db, Journal::Wal, 3000, 17);
    app.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let write = |n: i64| {
        app.execute(
            "UPDATE items SET data = randomblob(40) WHERE id IN (?1, ?1 + 1500)",
            [n],
        )
        .unwrap()
    };
    let mut guided = Vec::new();
    for (i, args) in [&[][..], &[], &[], &["--full-read"], &[]]
        .iter()
        .enumerate()
    {
        write(i as i64 + 1);
        let b = backup_and_check(&fx, &db, &format!("live-{i}"), args);
        assert_eq!(b["read_directly"], true, "{b}");
        let unread = b["unread_bytes"].as_u64().unwrap();
        assert!(unread < b["image_size"].as_u64().unwrap());
        if b["wal_guided"] == false {
            assert_eq!(unread, 0, "{b}");
        }
        guided.push(b["wal_guided"] == true && unread > 0);
    }
    // The first has no parent; the next follow the WAL the first write
    // began; `--full-read` does not, and the one after it follows again.
    assert_eq!(guided, [false, true, true, false, true]);
    drop(app);
}
