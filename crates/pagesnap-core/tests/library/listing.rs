//! The store's marker and this machine's record of the store's listing
//! (store/listing.rs, #30): in steady state a backup sends the same requests
//! whatever the length of the history, and lists neither `packs/` nor
//! `index/`. A prune, `repair index`, a `copy` into the store, another
//! machine's backup, a record lost, damaged or another store's, a damaged or
//! missing marker and `paranoid` each make the next backup list in full;
//! every snapshot restores byte for byte, also after a backup or a prune
//! failed at any of its writes.

use crate::base_cache::Counting;
use crate::common::*;
use crate::index_cache::cache_dir;
use pagesnap_core::backend::{Backend, CachedBackend, PutMode, RequestCounts};
use pagesnap_core::{BackupOptions, BackupReport, InitOptions, PruneOptions, Store, VerifyOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A store at `dir/remote` opened through a backend that pays per request,
/// behind the metadata cache (as an S3 store is); a database of 300 pages.
fn remote(dir: &Path) -> (Store, PathBuf) {
    cache_dir();
    Store::init(dir.join("remote"), &InitOptions::default()).unwrap();
    let db = dir.join("app.db");
    one_row_per_page(&db, 300);
    (open_remote(dir, "metadata-cache"), db)
}

/// The store at `dir/remote` as [`remote`] opens it, with its metadata cache
/// in `dir/cache`.
fn open_remote(dir: &Path, cache: &str) -> Store {
    let (counting, _) = Counting::new(dir.join("remote"));
    let cached = CachedBackend::new(Arc::new(counting), dir.join(cache));
    Store::open_backend(Arc::new(cached)).unwrap()
}

fn record(store: &Store) -> PathBuf {
    cache_dir()
        .join(store.config().store_id.to_hex())
        .join("listing")
}

fn requests(store: &Store) -> RequestCounts {
    store.backend().requests().unwrap()
}

/// Requests besides pack uploads and reads from the local cache.
fn sent(after: &RequestCounts, before: &RequestCounts) -> [u64; 5] {
    [
        after.put - before.put,
        after.get - before.get,
        after.list - before.list,
        after.head - before.head,
        after.delete - before.delete,
    ]
}

/// Rows `ids` of `db` set from `seed`, then a backup whose snapshot restores to
/// the file; with the requests it sent.
fn change_and_back_up(
    store: &Store,
    db: &Path,
    seed: u64,
    ids: std::ops::RangeInclusive<i64>,
    paranoid: bool,
) -> (BackupReport, [u64; 5]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    set_rows(&conn, seed, ids);
    drop(conn);
    let before = requests(store);
    let opts = BackupOptions {
        paranoid,
        ..BackupOptions::default()
    };
    let r = store.backup_path(db, &opts).unwrap();
    let n = sent(&requests(store), &before);
    let scratch = tempfile::tempdir().unwrap();
    let reference = reference_hash(db, scratch.path());
    restore_and_check(store, &snapshot_of(store, &r), &reference, scratch.path());
    (r, n)
}

#[test]
fn steady_state_requests_do_not_grow_with_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    let (first, _) = change_and_back_up(&store, &db, 1, 1..=3, false);
    assert!(first.store_listed, "a first backup lists");
    let (second, _) = change_and_back_up(&store, &db, 2, 4..=6, false);
    assert!(!second.store_listed, "the record of the first is trusted");
    let (_, early) = change_and_back_up(&store, &db, 3, 7..=9, false);
    // Forty more backups, each with its own pack and index object.
    for i in 0..40 {
        let at = 10 + 3 * i;
        let (r, _) = change_and_back_up(&store, &db, 4 + i as u64, at..=at + 2, false);
        assert!(!r.store_listed, "backup {i} listed the store");
        assert_eq!(r.stats.packs_written, 1);
    }
    let (_, late) = change_and_back_up(&store, &db, 99, 200..=202, false);
    assert_eq!(
        early, late,
        "requests (put, get, list, head, delete) of a backup"
    );
    assert_eq!(late[2], 1, "one listing, of the locks: {late:?}");
    assert!(
        store.verify(&VerifyOptions::default()).unwrap().healthy(),
        "the store is sound"
    );
}

#[test]
fn a_prune_between_two_backups_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    // The first content's chunks are in the first backup's pack only.
    let (first, _) = change_and_back_up(&store, &db, 1, 1..=300, false);
    let (second, _) = change_and_back_up(&store, &db, 2, 1..=300, false);
    assert!(!second.store_listed);
    // Forgotten and pruned: the pack with the first content is deleted.
    store.forget_snapshots(&[first.snapshot], false).unwrap();
    let pruned = store.prune(&PruneOptions::default()).unwrap();
    assert!(
        pruned.packs_deleted + pruned.packs_rewritten >= 1,
        "{pruned:?}"
    );
    // The first content again: its chunks must be stored again, not taken
    // from a record that still lists the deleted pack.
    let (third, _) = change_and_back_up(&store, &db, 1, 1..=300, false);
    assert!(third.store_listed, "the prune changed the marker");
    assert!(third.stats.new_chunks >= 300, "{:?}", third.stats);
    let (fourth, _) = change_and_back_up(&store, &db, 3, 1..=2, false);
    assert!(!fourth.store_listed);
    assert!(store.verify(&VerifyOptions::default()).unwrap().healthy());
}

#[test]
fn another_machines_backup_is_seen_and_deduplicated_against() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    change_and_back_up(&store, &db, 1, 1..=300, false);
    // Another machine: the same store, without this machine's caches (it
    // lists in full, and keeps no record), backs up another database holding
    // pages this machine has not stored yet.
    let other = open_remote(dir.path(), "other-cache").without_index_cache();
    let conn = rusqlite::Connection::open(&db).unwrap();
    set_rows(&conn, 7, 1..=100);
    drop(conn);
    let other_db = dir.path().join("other.db");
    reference_copy(&db, &other_db);
    let theirs = backup(&other, &other_db);
    assert!(theirs.store_listed);
    assert!(theirs.stats.new_chunks >= 100);
    // This machine's next backup lists again, and stores none of them.
    let before = requests(&store);
    let r = backup(&store, &db);
    assert!(sent(&requests(&store), &before)[2] > 1, "listed");
    assert!(r.store_listed, "the other machine changed the marker");
    assert!(r.stats.new_chunks <= 1, "{:?}", r.stats);
    let (again, _) = change_and_back_up(&store, &db, 8, 1..=2, false);
    assert!(!again.store_listed);
}

#[test]
fn a_record_lost_damaged_or_another_stores_and_a_bad_marker_cost_one_listing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    let mut seed = 0;
    let mut step = |paranoid: bool| {
        seed += 1;
        let at = seed as i64 * 2;
        change_and_back_up(&store, &db, seed, at..=at + 1, paranoid)
            .0
            .store_listed
    };
    assert!(step(false), "first");
    assert!(!step(false));
    let file = record(&store);

    std::fs::remove_file(&file).unwrap();
    assert!(step(false), "lost");
    assert!(!step(false), "recorded again");

    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(step(false), "damaged");
    assert!(!step(false));

    // A stale record: one under a marker the store no longer holds.
    let stale = std::fs::read(&file).unwrap();
    assert!(!step(false));
    std::fs::write(&file, &stale).unwrap();
    assert!(step(false), "stale");

    // Another store's record, in this store's place.
    let (other, other_db) = remote(&dir.path().join("b"));
    backup(&other, &other_db);
    std::fs::copy(record(&other), &file).unwrap();
    assert!(step(false), "another store's");
    assert!(!step(false));

    // The marker damaged, then missing (a store of a pagesnap before markers).
    let raw = pagesnap_core::backend::LocalBackend::new(dir.path().join("remote"));
    raw.put("marker", b"not a marker", PutMode::Overwrite)
        .unwrap();
    assert!(step(false), "a damaged marker");
    assert!(!step(false), "and a sound one written");
    raw.delete("marker").unwrap();
    assert!(step(false), "no marker");
    assert!(!step(false));

    // Paranoid lists, and records for the next backup.
    assert!(step(true), "paranoid");
    assert!(!step(false));
}

#[test]
fn an_unchanged_backup_writes_no_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    change_and_back_up(&store, &db, 1, 1..=3, false);
    let marker = || std::fs::read(dir.path().join("remote/marker")).unwrap();
    let was = marker();
    let before = requests(&store);
    let r = backup(&store, &db);
    let n = sent(&requests(&store), &before);
    assert_eq!(r.stats.packs_written, 0);
    assert!(!r.store_listed);
    // The lock and the manifest: nothing was added to packs/ or index/, so
    // no machine's record is made stale.
    assert_eq!(n[0], 2, "puts: {n:?}");
    assert_eq!(marker(), was);
}

/// What the record cannot know: a pack deleted outside pagesnap. Until the
/// daily full listing, a `paranoid` backup is what finds it (a local store
/// lists on every backup: `damage::backup_after_a_lost_pack_stores_its_chunks_again`).
#[test]
fn a_pack_deleted_by_hand_is_found_by_a_paranoid_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    change_and_back_up(&store, &db, 1, 1..=300, false);
    let packs = dir.path().join("remote/packs");
    for sub in std::fs::read_dir(&packs).unwrap() {
        std::fs::remove_dir_all(sub.unwrap().path()).unwrap();
    }
    let (r, _) = change_and_back_up(&store, &db, 2, 1..=2, true);
    assert!(r.store_listed);
    assert!(r.stats.new_chunks >= 290, "stored again: {:?}", r.stats);
}

/// `copy` into the store adds packs and index objects: it writes a new
/// marker, and this machine's next backup lists them (and deduplicates
/// against the copied chunks).
#[test]
fn a_copy_into_the_store_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    change_and_back_up(&store, &db, 1, 1..=3, false);
    // Another store with pages this one has not seen, copied in.
    let conn = rusqlite::Connection::open(&db).unwrap();
    set_rows(&conn, 5, 1..=100);
    drop(conn);
    let local = Store::init(dir.path().join("local"), &InitOptions::default()).unwrap();
    let other_db = dir.path().join("other.db");
    reference_copy(&db, &other_db);
    backup(&local, &other_db);
    let copied =
        pagesnap_core::copy::copy(&local, &store, &pagesnap_core::CopyOptions::default()).unwrap();
    assert!(copied.snapshots.iter().all(|s| s.warnings.is_empty()));
    let r = backup(&store, &db);
    assert!(r.store_listed, "the copy changed the marker");
    assert!(r.stats.new_chunks <= 1, "{:?}", r.stats);
}

/// `repair index` takes a damaged index object out of use (and rebuilds its
/// entries): it deletes the marker first, and the next backup lists.
#[test]
fn a_repair_of_the_index_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    change_and_back_up(&store, &db, 1, 1..=3, false);
    change_and_back_up(&store, &db, 2, 4..=6, false);
    let index = dir.path().join("remote/index");
    let victim = std::fs::read_dir(&index)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&victim, b"damaged").unwrap();
    // Repair reads the store itself, not this machine's cached copies.
    let r = open_remote(dir.path(), "repair-cache")
        .repair_index(false, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(r.quarantined.len(), 1, "{r:?}");
    assert!(!dir.path().join("remote/marker").exists());
    let (after, _) = change_and_back_up(&store, &db, 3, 7..=9, false);
    assert!(after.store_listed, "the repair deleted the marker");
    assert!(dir.path().join("remote/marker").exists(), "and a new one");
}

/// The store at `dir/remote` as this machine opens it, failing every write
/// and delete after the first `ops` (as if the process died there).
fn open_failing(dir: &Path, ops: u64) -> Store {
    use pagesnap_core::backend::{Fault, FaultyBackend};
    let (counting, _) = Counting::new(dir.join("remote"));
    let faulty = FaultyBackend::new(Arc::new(counting), ops, Fault::NoSpace);
    let cached = CachedBackend::new(Arc::new(faulty), dir.join("metadata-cache"));
    Store::open_backend(Arc::new(cached)).unwrap()
}

/// A failed command leaves its lock behind (its removal failed too): what
/// `pagesnap unlock` would remove.
fn remove_locks(dir: &Path) {
    for l in std::fs::read_dir(dir.join("remote/locks")).unwrap() {
        std::fs::remove_file(l.unwrap().path()).unwrap();
    }
}

/// A backup or a prune that fails at any of its writes (every later one
/// failing too, as if it died there) never leaves this machine a record that
/// its next backup trusts wrongly: the backups after it restore byte for
/// byte, and the store verifies.
#[test]
fn a_backup_or_prune_failing_at_any_write_loses_nothing() {
    for ops in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = remote(dir.path());
        let (first, _) = change_and_back_up(&store, &db, 1, 1..=300, false);
        change_and_back_up(&store, &db, 2, 1..=300, false);
        store.forget_snapshots(&[first.snapshot], false).unwrap();
        let pruned = open_failing(dir.path(), ops).prune(&PruneOptions::default());
        remove_locks(dir.path());
        // The first content again: stored again wherever prune got to.
        change_and_back_up(&store, &db, 1, 1..=300, false);
        // A backup failing at the same write, then one that works.
        let conn = rusqlite::Connection::open(&db).unwrap();
        set_rows(&conn, 3, 1..=5);
        drop(conn);
        let failed = open_failing(dir.path(), ops).backup_path(&db, &BackupOptions::default());
        remove_locks(dir.path());
        change_and_back_up(&store, &db, 4, 6..=9, false);
        assert!(
            store.verify(&VerifyOptions::default()).unwrap().healthy(),
            "after failing at write {ops}"
        );
        if pruned.is_ok() && failed.is_ok() {
            break;
        }
        assert!(ops < 40, "a prune and a backup take fewer writes");
    }
}

/// A store (paying per request) whose `marker` cannot be read: a permission
/// or a network error, not damage.
struct UnreadableMarker(Counting);

impl Backend for UnreadableMarker {
    fn location(&self) -> String {
        self.0.location()
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> pagesnap_core::backend::Result<()> {
        self.0.put(key, data, mode)
    }
    fn get(&self, key: &str) -> pagesnap_core::backend::Result<Vec<u8>> {
        if key == "marker" {
            return Err(pagesnap_core::backend::BackendError::Io {
                location: self.location(),
                op: "read",
                key: key.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        self.0.get(key)
    }
    fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> pagesnap_core::backend::Result<Vec<u8>> {
        self.0.get_range(key, range)
    }
    fn size(&self, key: &str) -> pagesnap_core::backend::Result<Option<u64>> {
        self.0.size(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> pagesnap_core::backend::Result<Vec<pagesnap_core::backend::ObjectInfo>> {
        self.0.list(prefix)
    }
    fn delete(&self, key: &str) -> pagesnap_core::backend::Result<()> {
        self.0.delete(key)
    }
    fn requests(&self) -> Option<RequestCounts> {
        self.0.requests()
    }
}

/// A marker that cannot be read stops the backup with the store's error,
/// naming the object: nothing is published, the marker and this machine's
/// record stay as they were, and the next backup that can read it trusts the
/// record again.
#[test]
fn an_unreadable_marker_stops_the_backup_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = remote(dir.path());
    change_and_back_up(&store, &db, 1, 1..=3, false);
    let (counting, _) = Counting::new(dir.path().join("remote"));
    let blocked = Store::open_backend(Arc::new(UnreadableMarker(counting))).unwrap();
    let marker = || std::fs::read(dir.path().join("remote/marker")).unwrap();
    let (was, record_was) = (marker(), std::fs::read(record(&store)).unwrap());
    let snapshots = store.snapshots().unwrap().len();

    let conn = rusqlite::Connection::open(&db).unwrap();
    set_rows(&conn, 2, 4..=6);
    drop(conn);
    let e = blocked
        .backup_path(&db, &BackupOptions::default())
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("marker") && msg.contains("denied"), "{msg}");
    assert!(
        matches!(
            e,
            pagesnap_core::Error::Backend(pagesnap_core::backend::BackendError::Io { .. })
        ),
        "not damage: {e:?}"
    );
    assert_eq!(
        store.snapshots().unwrap().len(),
        snapshots,
        "nothing published"
    );
    assert_eq!(marker(), was);
    assert_eq!(std::fs::read(record(&store)).unwrap(), record_was);
    let (r, _) = change_and_back_up(&store, &db, 3, 7..=9, false);
    assert!(!r.store_listed, "the record is trusted again");
}
