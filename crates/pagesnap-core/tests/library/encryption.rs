//! Encrypted stores (issue #28, docs/ENCRYPTION.md): every object but the
//! config's clear part and the key files is sealed, so no byte of the database
//! appears anywhere in the store; snapshots restore byte for byte; a wrong
//! passphrase opens nothing; a changed byte anywhere is damage, never restored.

use crate::common::*;
use pagesnap_core::crypto::KdfParams;
use pagesnap_core::Passphrase;
use pagesnap_core::{DataSubset, Error, InitOptions, PruneOptions, Store, VerifyOptions};
use rusqlite::params;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PASS: &[u8] = b"correct horse battery staple";
/// Written into the database, searched for in every stored byte.
const MARKERS: [&str; 3] = [
    "SECRET-MARKER-ALPHA",
    "customer:alice@example.com",
    "CREATE TABLE notes",
];

fn pass(p: &'static [u8]) -> impl Fn() -> Result<Passphrase, String> {
    move || Ok(Passphrase::new(p.to_vec()))
}

pub(crate) fn init(dir: &Path, opts: &InitOptions) -> Store {
    let backend = Arc::new(pagesnap_core::backend::LocalBackend::new(dir));
    Store::init_encrypted_backend(backend, opts, PASS, KdfParams::INSECURE_FOR_TESTS).unwrap()
}

pub(crate) fn open(dir: &Path) -> Store {
    let backend = Arc::new(pagesnap_core::backend::LocalBackend::new(dir));
    Store::open_backend_unlocking(backend, &pass(PASS)).unwrap()
}

fn notes_db(db: &Path) -> rusqlite::Connection {
    let conn = create_db(db, Journal::Wal, 4096);
    conn.execute_batch("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);")
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..3000i64 {
        let body = format!(
            "{} {} row {i} {}",
            MARKERS[0],
            MARKERS[1],
            "x".repeat((i % 200) as usize)
        );
        tx.execute("INSERT INTO notes VALUES (?1, ?2)", params![i, body])
            .unwrap();
    }
    tx.commit().unwrap();
    conn
}

/// Backs `db` up into `store` `steps` times, appending `suffix` to the notes
/// with `id % modulus == step` before every backup but the first; each
/// backup's report and the database's reference hash then.
fn edit_and_backup(
    store: &Store,
    conn: &rusqlite::Connection,
    db: &Path,
    steps: i64,
    suffix: &str,
    modulus: i64,
) -> Vec<(pagesnap_core::BackupReport, Hash)> {
    let mut taken = Vec::new();
    for step in 0..steps {
        if step > 0 {
            conn.execute(
                "UPDATE notes SET body = body || ?1 WHERE id % ?2 = ?3",
                params![suffix, modulus, step],
            )
            .unwrap();
        }
        let scratch = db.parent().unwrap_or(db);
        taken.push((backup(store, db), reference_hash(db, scratch)));
    }
    taken
}

/// A temporary directory with an encrypted store in `store/` made with
/// `opts`, and the notes database `notes.db` beside it.
struct Setup {
    dir: tempfile::TempDir,
    store_dir: PathBuf,
    store: Store,
    db: PathBuf,
    conn: rusqlite::Connection,
}

fn setup(opts: InitOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = init(&store_dir, &opts);
    let db = dir.path().join("notes.db");
    let conn = notes_db(&db);
    Setup {
        dir,
        store_dir,
        store,
        db,
        conn,
    }
}

fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(every_file(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Backups, restores, verify and prune of an encrypted store (with deltas and a
/// dictionary) work as on a plain one, and no marker written into the database
/// is in any stored byte, nor the page size's header string.
#[test]
fn an_encrypted_store_round_trips_and_holds_no_plaintext() {
    let Setup {
        dir,
        store_dir,
        store,
        db,
        conn,
    } = setup(InitOptions {
        deltas: true,
        ..InitOptions::default()
    });
    assert!(store.config().encrypted);
    let taken = edit_and_backup(&store, &conn, &db, 4, " edited", 17);
    drop(store);
    let store = open(&store_dir);
    restore_each(&store, &taken, dir.path());
    let v = store
        .verify(&VerifyOptions {
            read_data: Some(DataSubset::All),
            ..VerifyOptions::default()
        })
        .unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert!(v.chunks_read > 0);
    store.prune(&PruneOptions::default()).unwrap();

    let files = every_file(&store_dir);
    assert!(files.len() > 6, "{files:?}");
    let mut needles: Vec<&[u8]> = MARKERS.iter().map(|m| m.as_bytes()).collect();
    needles.push(b"SQLite format 3");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == *n),
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
}

/// A wrong passphrase, or none, opens nothing and writes nothing.
#[test]
fn a_wrong_or_missing_passphrase_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    init(&store_dir, &InitOptions::default());
    let before = every_file(&store_dir);
    let backend = Arc::new(pagesnap_core::backend::LocalBackend::new(&store_dir));
    assert!(matches!(
        Store::open_backend_unlocking(backend.clone(), &pass(b"wrong")),
        Err(Error::WrongPassphrase(_))
    ));
    assert!(matches!(
        Store::open_backend(backend.clone()),
        Err(Error::Encrypted(_))
    ));
    assert!(matches!(Store::open(&store_dir), Err(Error::Encrypted(_))));
    let failing = || -> Result<Passphrase, String> { Err("no terminal".into()) };
    assert!(matches!(
        Store::open_backend_unlocking(backend, &failing),
        Err(Error::Passphrase(_))
    ));
    assert_eq!(every_file(&store_dir), before);
}

/// A flipped byte in any object is damage that `verify --read-data` reports,
/// and a restore either fails (damage, no output) or, when it did not read
/// that segment, gives back the right image; nothing wrong is ever restored.
#[test]
fn a_tampered_object_is_damage_and_never_restored() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = init(&store_dir, &InitOptions::default());
    let db = dir.path().join("notes.db");
    drop(notes_db(&db));
    let report = backup(&store, &db);
    let snap = snapshot_of(&store, &report);
    drop(store);
    let folders = ["packs", "index", "snapshots", "maps"];
    for folder in folders {
        for f in every_file(&store_dir.join(folder)) {
            let good = std::fs::read(&f).unwrap();
            for at in [good.len() / 2, good.len() - 1] {
                let mut bad = good.clone();
                bad[at] ^= 0x20;
                std::fs::write(&f, &bad).unwrap();
                let store = open(&store_dir);
                let out = dir.path().join("out.db");
                let _ = std::fs::remove_file(&out);
                let restored = store
                    .select(&pagesnap_core::SnapshotSelector::Id(snap.id.to_hex()))
                    .and_then(|s| store.restore_to_path(&s, &out, false));
                // A segment the restore does not read (another snapshot's
                // chunk, the pack's trailer) may leave it whole and right;
                // otherwise it is damage, with no output.
                match restored {
                    Ok(r) => assert_eq!(r.image_hash, snap.manifest.image_hash),
                    Err(e) => {
                        assert!(e.is_damage(), "{}: {e}", f.display());
                        assert!(!out.exists(), "no partial output");
                    }
                }
                let v = store.verify(&VerifyOptions {
                    read_data: Some(DataSubset::All),
                    ..VerifyOptions::default()
                });
                match v {
                    Ok(v) => assert!(!v.problems.is_empty(), "{}", f.display()),
                    Err(e) => assert!(e.is_damage(), "{e}"),
                }
            }
            std::fs::write(&f, &good).unwrap();
        }
    }
    // Swapped: an object under another's name fails as well.
    let maps = every_file(&store_dir.join("snapshots"));
    let (a, b) = (&maps[0], dir.path().join("moved"));
    std::fs::rename(a, &b).unwrap();
    let other = store_dir.join("snapshots").join("0".repeat(64));
    std::fs::rename(&b, &other).unwrap();
    let store = open(&store_dir);
    assert!(store.snapshots().map(|s| s.is_empty()).unwrap_or(true));
}

/// Keys: added, listed, used, removed; never the one in use or the last read
/// key; a write-only key backs up and cannot restore.
#[test]
fn keys_are_added_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = init(&store_dir, &InitOptions::default());
    let first = store.current_key().unwrap();
    let p = KdfParams::INSECURE_FOR_TESTS;
    let second = store.add_key(b"second", p, false).unwrap();
    let wo = store.add_key(b"writer", p, true).unwrap();
    let keys = store.keys().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys
        .iter()
        .any(|k| k.id == first && k.current && !k.write_only));
    assert!(keys.iter().any(|k| k.id == wo && k.write_only));
    assert!(store.remove_key(&first).is_err(), "the key in use");
    let backend = Arc::new(pagesnap_core::backend::LocalBackend::new(&store_dir));
    let by_second = Store::open_backend_unlocking(backend.clone(), &pass(b"second")).unwrap();
    assert_eq!(by_second.current_key(), Some(second));
    by_second.remove_key(&first).unwrap();
    assert!(Store::open_backend_unlocking(backend.clone(), &pass(PASS)).is_err());
    // The write-only key takes a snapshot and can read none of its pages.
    let writer = Store::open_backend_unlocking(backend.clone(), &pass(b"writer")).unwrap();
    assert!(writer.is_write_only());
    let db = dir.path().join("notes.db");
    drop(notes_db(&db));
    let report = backup(&writer, &db);
    let snap = snapshot_of(&writer, &report);
    let e = writer
        .restore_to_path(&snap, &dir.path().join("wo.db"), false)
        .unwrap_err();
    assert!(!e.is_damage(), "not damage: {e}");
    assert!(writer.remove_key(&second).is_err());
    assert!(writer.add_key(b"x", p, false).is_err());
    // The read key restores what the write-only key took.
    let mut reader = Store::open_backend_unlocking(backend.clone(), &pass(b"second")).unwrap();
    restore_and_check(&reader, &snap, &reference_hash(&db, dir.path()), dir.path());
    // Its last read key cannot go; a passphrase change replaces it.
    let new = reader.change_passphrase(b"third", p).unwrap();
    assert_eq!(reader.current_key(), Some(new));
    assert!(Store::open_backend_unlocking(backend.clone(), &pass(b"second")).is_err());
    let reader = Store::open_backend_unlocking(backend, &pass(b"third")).unwrap();
    assert_eq!(
        reader
            .keys()
            .unwrap()
            .iter()
            .filter(|k| !k.write_only)
            .count(),
        1
    );
}

/// The same database in two encrypted stores and a plain one: each names its
/// chunks differently (keyed blake3 under its own id key), and within a store
/// equal pages still dedup (a second backup of the same image stores nothing).
#[test]
fn chunk_ids_are_keyed_per_store_and_still_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    drop(notes_db(&db));
    let a = init(&dir.path().join("a"), &InitOptions::default());
    let b = init(&dir.path().join("b"), &InitOptions::default());
    let plain = Store::init(dir.path().join("plain"), &InitOptions::default()).unwrap();
    let ids = |s: &Store| -> std::collections::BTreeSet<pagesnap_core::ChunkId> {
        let report = backup(s, &db);
        let snap = snapshot_of(s, &report);
        s.chunk_list(&snap)
            .unwrap()
            .into_iter()
            .filter_map(|c| match c {
                pagesnap_core::ChunkRef::Stored(id) => Some(id),
                _ => None,
            })
            .collect()
    };
    let (ia, ib, ip) = (ids(&a), ids(&b), ids(&plain));
    assert!(ia.len() > 10);
    assert!(ia.is_disjoint(&ib), "two stores share chunk ids");
    assert!(ia.is_disjoint(&ip) && ib.is_disjoint(&ip));
    assert_eq!(ia.len(), ip.len(), "dedup inside a store is unchanged");
    let again = backup(&a, &db);
    assert_eq!(
        again.stats.new_chunks, 0,
        "an unchanged image stores nothing new"
    );
}

/// A write-only key backs up a store a read key filled (its dictionary and
/// chunks it cannot read): what it cannot read it stores without (whole
/// chunks, its own dictionary or none), and the read key restores every
/// snapshot byte for byte.
#[test]
fn a_write_only_key_backs_up_after_a_read_key() {
    let Setup {
        dir,
        store_dir,
        store,
        db,
        conn,
    } = setup(InitOptions {
        deltas: true,
        ..InitOptions::default()
    });
    let mut taken = vec![(backup(&store, &db), reference_hash(&db, dir.path()))];
    store
        .add_key(b"writer", KdfParams::INSECURE_FOR_TESTS, true)
        .unwrap();
    let backend = Arc::new(pagesnap_core::backend::LocalBackend::new(&store_dir));
    let writer = Store::open_backend_unlocking(backend, &pass(b"writer")).unwrap();
    for step in 1..4 {
        conn.execute(
            "UPDATE notes SET body = body || ' again' WHERE id % 13 = ?1",
            params![step],
        )
        .unwrap();
        taken.push((backup(&writer, &db), reference_hash(&db, dir.path())));
    }
    let reader = open(&store_dir);
    restore_each(&reader, &taken, dir.path());
}

/// `copy` re-names every chunk when the two stores name chunks differently:
/// plain → encrypted → another encrypted store (another key) → plain, with
/// deltas in the first three: the deltas go as deltas, their headers naming
/// each base as the destination does (as many deltas in each store); every
/// snapshot restores byte for byte from the last store, `verify --read-data`
/// (which checks every chunk against its id) finds nothing, a second copy
/// skips everything, and a later snapshot copies only its new chunks, its
/// deltas as deltas against bases an earlier copy brought.
#[test]
fn copy_re_keys_chunks_between_plain_and_encrypted_stores() {
    use pagesnap_core::copy::copy;
    use pagesnap_core::CopyOptions;
    let dir = tempfile::tempdir().unwrap();
    let plain = Store::init(
        dir.path().join("plain"),
        &InitOptions {
            deltas: true,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let db = dir.path().join("notes.db");
    let conn = notes_db(&db);
    let taken = edit_and_backup(&plain, &conn, &db, 3, " more", 11);
    let with_deltas = InitOptions {
        deltas: true,
        ..InitOptions::default()
    };
    let a = init(&dir.path().join("a"), &with_deltas);
    let b = init(&dir.path().join("b"), &with_deltas);
    let deltas = |s: &Store| s.stats(None).unwrap().deltas.chunks;
    let back = Store::init(dir.path().join("back"), &InitOptions::default()).unwrap();
    let opts = CopyOptions::default();
    for (from, to) in [(&plain, &a), (&a, &b), (&b, &back)] {
        let r = copy(from, to, &opts).unwrap();
        assert_eq!(r.copied(), 3, "{} → {}", from.location(), to.location());
        let again = copy(from, to, &opts).unwrap();
        assert_eq!((again.copied(), again.skipped()), (0, 3));
        let v = to
            .verify(&VerifyOptions {
                read_data: Some(DataSubset::All),
                ..VerifyOptions::default()
            })
            .unwrap();
        assert!(v.problems.is_empty(), "{}: {:?}", to.location(), v.problems);
    }
    assert!(deltas(&plain) > 0);
    assert_eq!(deltas(&a), deltas(&plain));
    assert_eq!(deltas(&b), deltas(&plain));
    assert_eq!(deltas(&back), 0);
    for s in [&a, &b, &back] {
        let snaps = s.snapshots().unwrap();
        for ((report, hash), snap) in taken.iter().zip(&snaps) {
            assert_eq!(snap.manifest.image_hash, report.image_hash);
            restore_and_check(s, snap, hash, dir.path());
        }
    }
    // A later snapshot: only what changed is uploaded into the encrypted store.
    conn.execute("UPDATE notes SET body = 'x' WHERE id = 5", [])
        .unwrap();
    let r4 = backup(&plain, &db);
    let r = copy(&plain, &a, &opts).unwrap();
    assert_eq!(r.copied(), 1);
    assert!(
        r.chunks_uploaded() <= r4.stats.new_chunks + 2,
        "{} chunks uploaded for {} new",
        r.chunks_uploaded(),
        r4.stats.new_chunks
    );
    assert!(r4.stats.delta_chunks > 0);
    assert_eq!(deltas(&a), deltas(&plain));
    let snaps = a.snapshots().unwrap();
    let newest = snaps.iter().max_by_key(|s| s.time()).unwrap();
    restore_and_check(&a, newest, &reference_hash(&db, dir.path()), dir.path());
}

/// `repair index` on an encrypted store: an index object that does not
/// authenticate is damage; its sealed bytes are kept under `damaged/` (sealed
/// again), the index is rebuilt from the packs' trailers, and every snapshot
/// restores again.
#[test]
fn repair_index_quarantines_an_index_object_that_does_not_authenticate() {
    let Setup {
        dir,
        store_dir,
        store,
        db,
        conn,
    } = setup(InitOptions::default());
    let mut taken = vec![(backup(&store, &db), reference_hash(&db, dir.path()))];
    conn.execute("UPDATE notes SET body = 'changed' WHERE id % 7 = 0", [])
        .unwrap();
    taken.push((backup(&store, &db), reference_hash(&db, dir.path())));
    drop(store);
    let index = every_file(&store_dir.join("index"));
    let victim = &index[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    let store = open(&store_dir);
    let r = store
        .repair_index(false, std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    let kept = store_dir.join("damaged").join(r.quarantined[0].as_str());
    assert!(kept.exists(), "{}", kept.display());
    // What is kept opens (through the sealing) to the damaged object's bytes.
    let raw = store
        .backend()
        .get(&format!("damaged/{}", r.quarantined[0]))
        .unwrap();
    assert_eq!(raw, bytes);
    restore_each(&store, &taken, dir.path());
}

/// `repair index --read-data` on an encrypted store: a pack with one
/// segment that does not authenticate is kept whole under `damaged/` (as
/// stored), its chunks in the other segments are copied into a new pack, the
/// ones the damaged segment covered are dropped and named; the next backup
/// stores them again, and its snapshot restores byte for byte.
#[test]
fn repair_salvages_the_sound_segments_of_a_pack_that_does_not_authenticate() {
    use pagesnap_core::repair::RepairIndexOptions;
    let Setup {
        dir,
        store_dir,
        store,
        db,
        conn,
    } = setup(InitOptions {
        dictionary: false,
        ..InitOptions::default()
    });
    backup(&store, &db);
    drop(store);
    let packs = every_file(&store_dir.join("packs"));
    assert_eq!(packs.len(), 1);
    let good = std::fs::read(&packs[0]).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x08;
    std::fs::write(&packs[0], &bad).unwrap();
    let store = open(&store_dir);
    let r = store
        .repair_index_with(
            &RepairIndexOptions {
                dry_run: false,
                read_data: true,
            },
            std::time::Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(r.damaged_packs.len(), 1, "{r:?}");
    let p = &r.damaged_packs[0];
    // One 4 KiB segment of compressed chunks (a few hundred bytes each).
    assert!(!p.dropped.is_empty() && p.dropped.len() <= 20, "{p:?}");
    assert!(p.chunks_kept > 100, "{p:?}");
    // Kept whole, as stored: the damaged copy opens (through the sealing) to
    // the tampered pack's sealed bytes.
    let kept = store.backend().get(&p.moved_to).unwrap();
    assert_eq!(kept, bad);
    // The next backup stores what was lost; its snapshot restores.
    conn.execute("UPDATE notes SET body = 'after repair' WHERE id = 1", [])
        .unwrap();
    let taken = vec![(backup(&store, &db), reference_hash(&db, dir.path()))];
    restore_each(&store, &taken, dir.path());
    let v = store
        .verify(&VerifyOptions {
            read_data: Some(DataSubset::All),
            ..VerifyOptions::default()
        })
        .unwrap();
    assert!(
        v.problems
            .iter()
            .all(|p| !format!("{p:?}").contains("authenticate")),
        "{:?}",
        v.problems
    );
}

/// `upgrade --deltas` on an encrypted store re-seals its config: reopened, it
/// is still encrypted, now with deltas, and its snapshot restores.
#[test]
fn upgrading_an_encrypted_store_keeps_it_encrypted() {
    let Setup {
        dir,
        store_dir,
        store,
        db,
        conn: _conn,
    } = setup(InitOptions::default());
    let taken = vec![(backup(&store, &db), reference_hash(&db, dir.path()))];
    let r = store
        .enable_deltas(std::time::Duration::from_secs(5))
        .unwrap();
    assert!(r.changed);
    assert_eq!(r.format_version, 3);
    let again = open(&store_dir);
    assert!(again.config().encrypted && again.config().deltas);
    assert!(matches!(Store::open(&store_dir), Err(Error::Encrypted(_))));
    restore_each(&again, &taken, dir.path());
    assert!(
        !again
            .enable_deltas(std::time::Duration::from_secs(5))
            .unwrap()
            .changed
    );
}
