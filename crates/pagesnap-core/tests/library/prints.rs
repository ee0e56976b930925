//! Fingerprints (backup/prints/, #30): a backup takes the blocks whose prints
//! match its parent's as unchanged and hashes only the others. Property: a page
//! changed in any way (a bit, two pages swapped, a page given another page's
//! content, the file cut or grown) is always captured: the snapshot equals the
//! one a `--paranoid` backup (every page hashed) takes of the same file in
//! another store, and its pages are the file's. And the record lost, stale,
//! damaged, another store's, or naming a parent that prune removed, gives a
//! correct backup that hashes every page.

use crate::common::*;
use crate::index_cache::cache_dir;
use pagesnap_core::capture::CaptureError;
use pagesnap_core::{BackupOptions, BackupReport, Error, InitOptions, PruneOptions, Store};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
enum Change {
    /// Flips bit `bit` of byte `byte` of page `page` (pages from 2 on: page 1
    /// holds the schema the capture reads).
    Bit {
        page: u16,
        byte: u16,
        bit: u8,
    },
    Swap {
        a: u16,
        b: u16,
    },
    /// Page `to` gets page `from`'s bytes.
    Copy {
        from: u16,
        to: u16,
    },
    /// The file cut to `keep` pages (at least 2).
    Cut {
        keep: u16,
    },
    /// `pages` pages appended, of random bytes or copies of page `like`.
    Grow {
        pages: u16,
        like: Option<u16>,
    },
    Nothing,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (any::<u16>(), any::<u16>(), 0u8..8).prop_map(|(page, byte, bit)| Change::Bit { page, byte, bit }),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Change::Swap { a, b }),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(from, to)| Change::Copy { from, to }),
        1 => any::<u16>().prop_map(|keep| Change::Cut { keep }),
        1 => (1u16..80, proptest::option::of(any::<u16>())).prop_map(|(pages, like)| Change::Grow { pages, like }),
        1 => Just(Change::Nothing),
    ]
}

/// Applies `c` to the bytes of a database of `page`-byte pages, keeping the
/// header's page count right (SQLite refuses a count beyond the file).
fn apply(file: &mut Vec<u8>, page: usize, c: &Change, seed: u64) {
    let pages = file.len() / page;
    // A page from 2 on (index from 1), picked by `x`.
    let pick = |x: u16| 1 + x as usize % (pages - 1);
    match *c {
        Change::Bit { page: p, byte, bit } => {
            file[pick(p) * page + byte as usize % page] ^= 1 << bit;
        }
        Change::Swap { a, b } => {
            let (a, b) = (pick(a), pick(b));
            let pa = file[a * page..(a + 1) * page].to_vec();
            file.copy_within(b * page..(b + 1) * page, a * page);
            file[b * page..(b + 1) * page].copy_from_slice(&pa);
        }
        Change::Copy { from, to } => {
            let (from, to) = (pick(from), pick(to));
            file.copy_within(from * page..(from + 1) * page, to * page);
        }
        Change::Cut { keep } => file.truncate((2 + keep as usize % (pages - 1)) * page),
        Change::Grow { pages: n, like } => {
            let mut rng = Rng(seed);
            for _ in 0..n {
                let bytes = match like {
                    Some(l) => file[pick(l) * page..(pick(l) + 1) * page].to_vec(),
                    None => rng.bytes(page, true),
                };
                file.extend_from_slice(&bytes);
            }
        }
        Change::Nothing => {}
    }
    let count = (file.len() / page) as u32;
    file[28..32].copy_from_slice(&count.to_be_bytes());
}

fn init(dir: &Path, chunk_pages: u32, deltas: bool) -> Store {
    let opts = InitOptions {
        chunk_pages,
        deltas,
        ..InitOptions::default()
    };
    Store::init(dir, &opts).unwrap()
}

fn backup_with(store: &Store, db: &Path, paranoid: bool) -> BackupReport {
    try_backup(store, db, paranoid).unwrap()
}

fn try_backup(store: &Store, db: &Path, paranoid: bool) -> pagesnap_core::Result<BackupReport> {
    let opts = BackupOptions {
        paranoid,
        ..BackupOptions::default()
    };
    store.backup_path(db, &opts)
}

/// Whether SQLite refused the file as corrupt when the capture opened it.
fn refused(r: &pagesnap_core::Result<BackupReport>) -> bool {
    matches!(r, Err(Error::Capture(CaptureError::Corrupt { .. })))
}

/// Restores `r`'s snapshot and checks it against the file `db` (pages from 2
/// on, and page 1 after its header, which the backup API rewrites).
fn restored_is_the_file(store: &Store, r: &BackupReport, db: &Path) {
    let snap = snapshot_of(store, r);
    let mut image = Vec::new();
    store.restore_to_writer(&snap, &mut image).unwrap();
    let file = std::fs::read(db).unwrap();
    assert_eq!(image.len(), file.len(), "image length");
    assert_eq!(image[100..], file[100..], "pages after the header");
}

/// The prints folder of `store` on this machine.
fn prints_dir(store: &Store) -> PathBuf {
    cache_dir()
        .join(store.config().store_id.to_hex())
        .join("prints")
}

/// The prints file of database `db` in `store` (the one file that is not the secret).
fn prints_file(store: &Store) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(prints_dir(store))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "secret"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// A database of about 300 pages of mixed rows, closed.
fn database(dir: &Path, page_size: u32) -> PathBuf {
    let db = dir.join("db.sqlite");
    let conn = create_db(&db, Journal::Rollback, page_size);
    let mut rng = Rng(7);
    populate(&conn, &mut rng, page_size, 300 * page_size as usize / 400);
    drop(conn);
    db
}

/// A folder with a 4 KiB-page database and a store of one page per chunk,
/// this binary's cache directory set.
fn one_store() -> (tempfile::TempDir, PathBuf, Store) {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), 4096);
    let store = init(&dir.path().join("a"), 1, false);
    (dir, db, store)
}

fn run_changes(page_size: u32, chunk_pages: u32, deltas: bool, changes: &[Change]) {
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path(), page_size);
    let fast = init(&dir.path().join("fast"), chunk_pages, deltas);
    let slow = init(&dir.path().join("slow"), chunk_pages, deltas);
    let first = backup_with(&fast, &db, false);
    assert!(!first.parent_prints, "a first backup has no parent");
    for (i, c) in changes.iter().enumerate() {
        let before = std::fs::read(&db).unwrap();
        let mut file = before.clone();
        apply(&mut file, page_size as usize, c, i as u64);
        std::fs::write(&db, &file).unwrap();
        let count = || {
            (
                fast.snapshots().unwrap().len(),
                slow.snapshots().unwrap().len(),
            )
        };
        let published = count();
        let r = try_backup(&fast, &db, false);
        if refused(&r) {
            // A cut below a page the schema names: SQLite refuses the file when
            // the capture opens it. Hashing every page changes nothing to that,
            // neither backup publishes anything, and the next change starts
            // again from the file before this one.
            assert!(refused(&try_backup(&slow, &db, true)), "step {i} ({c:?})");
            assert_eq!(count(), published, "step {i}: nothing published");
            std::fs::write(&db, &before).unwrap();
            continue;
        }
        let r = r.unwrap();
        // A sketch made afresh needs every chunk: only a delta store's first
        // backup after its first does not compare (content_bases.rs).
        if !deltas || i > 0 {
            assert!(r.parent_prints, "step {i}: the parent's prints were used");
        }
        let reference = backup_with(&slow, &db, true);
        assert!(!reference.parent_prints);
        assert_eq!(
            hex(&r.image_hash),
            hex(&reference.image_hash),
            "step {i} ({c:?}): the snapshot is the one every page hashed gives"
        );
        assert_eq!(r.chunks, reference.chunks);
        let (a, b) = (snapshot_of(&fast, &r), snapshot_of(&slow, &reference));
        assert_eq!(a.manifest.image_check, b.manifest.image_check);
        restored_is_the_file(&fast, &r, &db);
    }
    // Every snapshot still restores byte for byte and sound.
    for s in fast.snapshots().unwrap() {
        let mut image = Vec::new();
        let report = fast.restore_to_writer(&s, &mut image).unwrap();
        assert_eq!(report.image_hash, s.manifest.image_hash);
    }
}

fn cases() -> u32 {
    std::env::var("PAGESNAP_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_change_is_captured_1k_pages(changes in proptest::collection::vec(change(), 1..8)) {
        run_changes(1024, 1, false, &changes);
    }

    #[test]
    fn any_change_is_captured_4k_pages_4_per_chunk(changes in proptest::collection::vec(change(), 1..8)) {
        run_changes(4096, 4, false, &changes);
    }

    #[test]
    fn any_change_is_captured_with_deltas(changes in proptest::collection::vec(change(), 2..6)) {
        run_changes(4096, 1, true, &changes);
    }
}

/// A database with one changed page, backed up; returns the report.
fn change_and_back_up(store: &Store, db: &Path, seed: u16) -> BackupReport {
    let mut file = std::fs::read(db).unwrap();
    apply(
        &mut file,
        4096,
        &Change::Bit {
            page: seed,
            byte: seed,
            bit: 3,
        },
        0,
    );
    std::fs::write(db, &file).unwrap();
    let r = backup_with(store, db, false);
    restored_is_the_file(store, &r, db);
    r
}

#[test]
fn a_record_lost_stale_damaged_or_another_stores_only_costs_the_hashing() {
    let (dir, db, store) = one_store();
    backup_with(&store, &db, false);
    assert!(change_and_back_up(&store, &db, 1).parent_prints);
    let file = prints_file(&store);
    let stale = std::fs::read(&file).unwrap();

    // Lost: the whole folder, secret included (a new secret is made).
    std::fs::remove_dir_all(prints_dir(&store)).unwrap();
    assert!(!change_and_back_up(&store, &db, 2).parent_prints, "lost");
    assert!(
        change_and_back_up(&store, &db, 3).parent_prints,
        "recorded again"
    );

    // Stale: an older snapshot's record.
    let file = prints_file(&store);
    std::fs::write(&file, &stale).unwrap();
    assert!(!change_and_back_up(&store, &db, 4).parent_prints, "stale");

    // Damaged: one byte.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(!change_and_back_up(&store, &db, 5).parent_prints, "damaged");

    // Another store's record of the same database, and its secret with it.
    let other = init(&dir.path().join("b"), 1, false);
    backup_with(&other, &db, false);
    change_and_back_up(&other, &db, 6);
    std::fs::copy(prints_file(&other), &file).unwrap();
    assert!(
        !change_and_back_up(&store, &db, 7).parent_prints,
        "another store's"
    );
    std::fs::copy(prints_file(&other), &file).unwrap();
    std::fs::copy(
        prints_dir(&other).join("secret"),
        prints_dir(&store).join("secret"),
    )
    .unwrap();
    let r = change_and_back_up(&store, &db, 8);
    assert!(!r.parent_prints, "another store's, with its secret");

    // A damaged secret is replaced.
    std::fs::write(prints_dir(&store).join("secret"), b"x").unwrap();
    assert!(!change_and_back_up(&store, &db, 9).parent_prints);
    assert!(change_and_back_up(&store, &db, 10).parent_prints);

    // Paranoid: never compares, and still records for the next backup.
    let p = backup_with(&store, &db, true);
    assert!(!p.parent_prints);
    assert!(change_and_back_up(&store, &db, 11).parent_prints);
}

#[test]
fn a_parent_forgotten_and_pruned_meanwhile_is_not_compared_with() {
    let (_dir, db, store) = one_store();
    let first = backup_with(&store, &db, false);
    let second = change_and_back_up(&store, &db, 1);
    assert!(second.parent_prints);
    // Another machine (or this one's `forget`) drops the newest snapshot, and
    // prune deletes what only it held: the record names a snapshot that is gone.
    store.forget_snapshots(&[second.snapshot], false).unwrap();
    store.prune(&PruneOptions::default()).unwrap();
    let r = change_and_back_up(&store, &db, 2);
    assert!(!r.parent_prints, "the record's snapshot is gone");
    assert_eq!(
        snapshot_of(&store, &r).manifest.parent,
        Some(first.snapshot)
    );
    assert!(change_and_back_up(&store, &db, 3).parent_prints);
    for s in store.snapshots().unwrap() {
        restore_hash_via_writer(&store, &s);
    }
}

#[test]
fn a_parent_of_another_page_size_is_not_compared_with() {
    let (_dir, db, store) = one_store();
    backup_with(&store, &db, false);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA page_size = 1024; VACUUM;")
        .unwrap();
    drop(conn);
    let r = backup_with(&store, &db, false);
    assert_eq!(r.page_size, 1024);
    assert!(!r.parent_prints, "the parent's chunks are 4 KiB");
    restored_is_the_file(&store, &r, &db);
    let again = backup_with(&store, &db, false);
    assert!(again.parent_prints);
    restored_is_the_file(&store, &again, &db);
}
