//! zstd dictionaries trained on a database's own pages: trained once, reused,
//! retrained when the data changes character, optional, and checked on restore.

use crate::common::*;
use pagesnap_core::{layout, BackupOptions, InitOptions, Store};
use rusqlite::Connection;
use std::path::Path;

fn store(dir: &Path, dictionary: bool) -> Store {
    Store::init(
        dir.join(if dictionary { "with" } else { "without" }),
        &InitOptions {
            dictionary,
            ..InitOptions::default()
        },
    )
    .unwrap()
}

/// ~2 MiB of repetitive, text-like rows: the kind of pages a dictionary helps.
fn text_db(db: &Path, rows: usize, salt: usize) -> Connection {
    let conn = create_db(db, Journal::Wal, 4096);
    conn.execute_batch("CREATE TABLE IF NOT EXISTS docs(id INTEGER PRIMARY KEY, body TEXT);")
        .unwrap();
    add_text(&conn, rows, salt);
    conn
}

fn add_text(conn: &Connection, rows: usize, salt: usize) {
    let words = [
        "order", "customer", "invoice", "shipped", "pending", "total", "amount", "address",
        "street", "city", "refund",
    ];
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..rows {
        let body: Vec<String> = (0..30)
            .map(|k| {
                format!(
                    "{}:{}",
                    words[(i * 13 + k * 7 + salt) % words.len()],
                    (i + k) % 97
                )
            })
            .collect();
        tx.execute("INSERT INTO docs(body) VALUES (?1)", [body.join(" ")])
            .unwrap();
    }
    tx.commit().unwrap();
}

fn dict_of(store: &Store, r: &pagesnap_core::BackupReport) -> Option<pagesnap_core::Id> {
    snapshot_of(store, r).manifest.dict
}

#[test]
fn first_backup_trains_later_backups_reuse_and_restores_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docs.db");
    let conn = text_db(&db, 8000, 0);
    let with = store(dir.path(), true);
    let without = store(dir.path(), false);

    let a = backup(&with, &db);
    let a_plain = backup(&without, &db);
    let a_hash = reference_hash(&db, dir.path());
    assert!(
        a.stats.dict_bytes > 0,
        "the first backup trains a dictionary"
    );
    let dict = dict_of(&with, &a).expect("manifest names the dictionary");
    assert!(dir.path().join("with").join(layout::dict(&dict)).is_file());
    assert!(
        a.stats.new_stored_bytes * 10 < a_plain.stats.new_stored_bytes * 9,
        "with a dictionary {} bytes, without {}",
        a.stats.new_stored_bytes,
        a_plain.stats.new_stored_bytes
    );
    assert_eq!(a_plain.stats.dict_bytes, 0);
    assert_eq!(dict_of(&without, &a_plain), None);
    assert!(!dir.path().join("without/dicts").exists());

    add_text(&conn, 500, 3);
    let b = backup(&with, &db);
    let b_hash = reference_hash(&db, dir.path());
    assert_eq!(
        b.stats.dict_bytes, 0,
        "the second backup reuses the dictionary"
    );
    assert_eq!(dict_of(&with, &b), Some(dict));
    assert!(b.stats.new_chunks > 0);

    for (s, r, h) in [
        (&with, &a, &a_hash),
        (&with, &b, &b_hash),
        (&without, &a_plain, &a_hash),
    ] {
        restore_and_check(s, &snapshot_of(s, r), h, dir.path());
    }
}

#[test]
fn data_that_stops_fitting_the_dictionary_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docs.db");
    let conn = text_db(&db, 8000, 0);
    let s = store(dir.path(), true);
    let a = backup(&s, &db);
    let first = dict_of(&s, &a).unwrap();
    assert!(!snapshot_of(&s, &a).manifest.retrain_dict);

    // 6 MiB of incompressible blobs: the dictionary no longer helps.
    conn.execute_batch("CREATE TABLE blobs(b BLOB);").unwrap();
    let mut rng = Rng(5);
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..2000 {
        tx.execute("INSERT INTO blobs VALUES (?1)", [rng.bytes(3000, false)])
            .unwrap();
    }
    tx.commit().unwrap();
    let b = backup(&s, &db);
    assert_eq!(dict_of(&s, &b), Some(first));
    assert!(snapshot_of(&s, &b).manifest.retrain_dict, "{:?}", b.stats);

    add_text(&conn, 4000, 5);
    let c = backup(&s, &db);
    let c_hash = reference_hash(&db, dir.path());
    assert!(c.stats.dict_bytes > 0, "retrained");
    assert_ne!(dict_of(&s, &c), Some(first));
    restore_and_check(&s, &snapshot_of(&s, &c), &c_hash, dir.path());
}

#[test]
fn small_databases_get_no_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tiny.db");
    drop(text_db(&db, 200, 0));
    let s = store(dir.path(), true);
    let r = backup(&s, &db);
    assert_eq!(r.stats.dict_bytes, 0);
    assert_eq!(dict_of(&s, &r), None);
    restore_and_check(
        &s,
        &snapshot_of(&s, &r),
        &reference_hash(&db, dir.path()),
        dir.path(),
    );
}

#[test]
fn a_damaged_dictionary_fails_restore_by_name_and_backups_train_anew() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("docs.db");
    let conn = text_db(&db, 8000, 0);
    let s = store(dir.path(), true);
    let a = backup(&s, &db);
    let dict = dict_of(&s, &a).unwrap();
    let path = dir.path().join("with").join(layout::dict(&dict));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let snap = snapshot_of(&s, &a);
    let out = dir.path().join("out.db");
    let err = s
        .restore_to_path(&snap, &out, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&layout::dict(&dict)), "{err}");
    assert!(err.contains(&snap.id.short()), "{err}");
    assert!(!out.exists());

    // The next backup cannot use it and trains a new one instead of failing.
    add_text(&conn, 4000, 1);
    let b = s
        .backup_path(&db, &BackupOptions::default())
        .expect("backup despite a damaged dictionary");
    assert!(b.stats.dict_bytes > 0);
    assert_ne!(dict_of(&s, &b), Some(dict));
}
