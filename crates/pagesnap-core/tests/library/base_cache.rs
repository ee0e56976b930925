//! The base cache (store/base_cache.rs, DELTAS.md): on a store with deltas that
//! pays per request, backups take their bases from this machine's cache, never
//! from the store's packs, and stay within the request budget (≤ 10 requests
//! besides pack uploads); every snapshot restores byte for byte; a damaged cache
//! is ignored (its segments removed, the chunks stored plain); the bound is kept.

use crate::common::*;
use crate::deltas::{accounts, delta_census, store, update_some};
use crate::index_cache::cache_dir;
use pagesnap_core::backend::{
    Backend, CachedBackend, LocalBackend, ObjectInfo, PutMode, RequestCounts, Result as BResult,
};
use pagesnap_core::format::index::MAX_DELTA_DEPTH;
use pagesnap_core::{BackupOptions, Store};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Requests sent to a [`Counting`] backend, per kind; `pack_get` counts the
/// reads of packs (a base read from the store would be one).
#[derive(Default)]
pub(crate) struct Counts {
    put: AtomicU64,
    pack_put: AtomicU64,
    get: AtomicU64,
    pack_get: AtomicU64,
    list: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
}

impl Counts {
    fn now(&self) -> (RequestCounts, u64) {
        let r = RequestCounts {
            put: self.put.load(Relaxed),
            pack_put: self.pack_put.load(Relaxed),
            get: self.get.load(Relaxed),
            list: self.list.load(Relaxed),
            head: self.head.load(Relaxed),
            delete: self.delete.load(Relaxed),
            cached: 0,
        };
        (r, self.pack_get.load(Relaxed))
    }
}

/// A local store that pays per request, as S3 does, and counts them.
pub(crate) struct Counting(LocalBackend, Arc<Counts>);

impl Counting {
    pub(crate) fn new(dir: PathBuf) -> (Counting, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        (Counting(LocalBackend::new(dir), counts.clone()), counts)
    }
    fn got(&self, key: &str) {
        self.1.get.fetch_add(1, Relaxed);
        if key.starts_with("packs/") {
            self.1.pack_get.fetch_add(1, Relaxed);
        }
    }
}

impl Backend for Counting {
    fn location(&self) -> String {
        self.0.location()
    }
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> BResult<()> {
        let n = if key.starts_with("packs/") {
            &self.1.pack_put
        } else {
            &self.1.put
        };
        n.fetch_add(1, Relaxed);
        self.0.put(key, data, mode)
    }
    fn get(&self, key: &str) -> BResult<Vec<u8>> {
        self.got(key);
        self.0.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> BResult<Vec<u8>> {
        self.got(key);
        self.0.get_range(key, range)
    }
    fn size(&self, key: &str) -> BResult<Option<u64>> {
        self.1.head.fetch_add(1, Relaxed);
        self.0.size(key)
    }
    fn list(&self, prefix: &str) -> BResult<Vec<ObjectInfo>> {
        self.1.list.fetch_add(1, Relaxed);
        self.0.list(prefix)
    }
    fn delete(&self, key: &str) -> BResult<()> {
        self.1.delete.fetch_add(1, Relaxed);
        self.0.delete(key)
    }
    fn requests(&self) -> Option<RequestCounts> {
        Some(self.1.now().0)
    }
}

/// A store with deltas at `dir/remote`, opened through a counting backend behind
/// the metadata cache (as an S3 store is), with its counts.
fn remote(dir: &Path) -> (Store, Arc<Counts>) {
    remote_named(dir, "remote")
}

/// [`remote`] at `dir/name`.
fn remote_named(dir: &Path, name: &str) -> (Store, Arc<Counts>) {
    cache_dir();
    store(dir, name, true);
    let (counting, counts) = Counting::new(dir.join(name));
    let cached = CachedBackend::new(
        Arc::new(counting),
        dir.join(format!("metadata-cache-{name}")),
    );
    (Store::open_backend(Arc::new(cached)).unwrap(), counts)
}

fn bases_dir(store: &Store) -> PathBuf {
    cache_dir()
        .join(store.config().store_id.to_hex())
        .join("bases")
}

fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .map(|e| (e.path(), e.metadata().unwrap().len()))
                .collect()
        })
        .unwrap_or_default()
}

/// The disk the files of `dir` take: whole 4 KiB blocks, at least one a file
/// (what the bound counts).
fn disk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (m.len().div_ceil(4096).max(1) * 4096).max(m.blocks() * 512)
        })
        .sum()
}

#[test]
fn deltas_from_the_base_cache_within_the_request_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let (store, counts) = remote(dir.path());
    let mut rng = Rng(5);
    let mut taken = Vec::new();
    for step in 0..12 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 20);
        }
        let (before, pack_gets) = counts.now();
        let r = backup(&store, &db);
        let (after, pack_gets_after) = counts.now();
        assert_eq!(pack_gets_after, pack_gets, "step {step} read a pack");
        if step > 0 {
            let meta = after.metadata() - before.metadata();
            assert!(meta <= 10, "step {step} sent {meta} requests besides packs");
            // The first backup filled the cache: every later one has bases.
            assert!(r.stats.delta_chunks > 0, "step {step} stored no delta");
        }
        taken.push((r, reference_hash(&db, dir.path())));
    }
    assert!(!files(&bases_dir(&store)).is_empty());
    // Row 1's page changes at every step: its chain reaches the bound (the
    // depths the cache keeps are those the index records), then starts again.
    let (deltas, deepest) = delta_census(&dir.path().join("remote"));
    assert!(deltas > 0);
    assert_eq!(deepest, MAX_DELTA_DEPTH);
    restore_each(&store, &taken, dir.path());
}

#[test]
fn a_damaged_base_cache_is_ignored_and_the_backups_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let (store, _) = remote(dir.path());
    let mut rng = Rng(6);
    let mut taken = Vec::new();
    for _ in 0..2 {
        taken.push((backup(&store, &db), reference_hash(&db, dir.path())));
        update_some(&conn, &mut rng, 3000, 20);
    }
    // Every cached segment damaged: a byte of each of its frames changed
    // (FORMAT.md, "Local base cache": a 20-byte header with the row count at
    // 12, then 48-byte rows with the frame's offset at 32 and length at 36),
    // or cut short.
    let damaged = files(&bases_dir(&store));
    assert!(!damaged.is_empty());
    for (i, (path, len)) in damaged.iter().enumerate() {
        let mut bytes = std::fs::read(path).unwrap();
        if i % 2 == 0 {
            let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let count = word(&bytes, 12) as usize;
            for r in 0..count {
                let row = 20 + 48 * r;
                let (offset, frame) = (word(&bytes, row + 32), word(&bytes, row + 36));
                bytes[(offset + frame / 2) as usize] ^= 0x5a;
            }
        } else {
            bytes.truncate(*len as usize / 2);
        }
        std::fs::write(path, bytes).unwrap();
    }
    let r = backup(&store, &db);
    assert!(r.stats.new_chunks > 0);
    assert_eq!(r.stats.delta_chunks, 0, "a damaged base was used");
    taken.push((r, reference_hash(&db, dir.path())));
    // The damaged files it met were removed; the cache holds sound ones again,
    // and the next backup has its deltas back.
    let left = files(&bases_dir(&store));
    assert!(
        damaged.iter().filter(|d| left.contains(d)).count() < damaged.len(),
        "no damaged file removed"
    );
    update_some(&conn, &mut rng, 3000, 20);
    let r = backup(&store, &db);
    assert!(r.stats.delta_chunks > 0);
    taken.push((r, reference_hash(&db, dir.path())));
    restore_each(&store, &taken, dir.path());
}

#[test]
fn the_base_cache_keeps_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let (store, _) = remote(dir.path());
    let bound = 48 << 10;
    let opts = BackupOptions {
        base_cache: Some(bound),
        ..Default::default()
    };
    let mut rng = Rng(7);
    let mut taken = Vec::new();
    for step in 0..6 {
        if step > 0 {
            update_some(&conn, &mut rng, 3000, 30);
        }
        let r = store.backup_path(&db, &opts).unwrap();
        let held = disk(&bases_dir(&store));
        assert!(
            held > 0 && held <= bound,
            "step {step}: {held} bytes cached"
        );
        taken.push((r, reference_hash(&db, dir.path())));
    }
    restore_each(&store, &taken, dir.path());
}

/// A watcher's `base_cache` bound reaches its runs' backups: with 32 KiB the
/// cache stays within it (the default, 64 MiB, would hold every page of this
/// database), and every snapshot restores exactly.
#[test]
fn a_watchers_base_cache_bound_reaches_its_backups() {
    use pagesnap_core::watch::{
        DatabaseOptions, PruneSchedule, PruneSettings, RunOutcome, WatchEvent, Watcher,
        WatcherOptions,
    };
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let conn = accounts(&db, 3000);
    let (store, _) = remote(dir.path());
    let store = Arc::new(store);
    let bound = 32 << 10;
    let events: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
    let seen = Arc::clone(&events);
    let opts = WatcherOptions {
        base_cache: Some(bound),
        ..WatcherOptions::default()
    }
    // An hour: only run_now starts runs here.
    .database(DatabaseOptions::new(&db).every(Duration::from_secs(3600)))
    .prune(PruneSettings {
        schedule: PruneSchedule::Never,
        ..PruneSettings::default()
    })
    .on_event(move |e| seen.lock().unwrap().push(e.clone()));
    let h = Watcher::start(Arc::clone(&store), opts).unwrap();
    let mut rng = Rng(11);
    let mut references = Vec::new();
    for step in 1..=3 {
        if step > 1 {
            update_some(&conn, &mut rng, 3000, 30);
        }
        references.push(reference_hash(&db, dir.path()));
        h.run_now("bank").unwrap();
        let started = Instant::now();
        let outcome = loop {
            let done: Vec<RunOutcome> = events
                .lock()
                .unwrap()
                .iter()
                .filter_map(|e| match e {
                    WatchEvent::RunFinished(f) => Some(f.outcome.clone()),
                    _ => None,
                })
                .collect();
            if done.len() == step {
                break done[step - 1].clone();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "run {step}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(matches!(outcome, RunOutcome::Snapshot(_)), "{outcome:?}");
        let held = disk(&bases_dir(&store));
        assert!(held > 0 && held <= bound, "run {step}: {held} bytes cached");
    }
    h.stop(Duration::from_secs(30));
    let mut snaps = store.snapshots().unwrap();
    snaps.sort_by_key(|s| s.time());
    assert_eq!(snaps.len(), references.len());
    for (snap, reference) in snaps.iter().zip(&references) {
        restore_and_check(&store, snap, reference, dir.path());
    }
}

/// Content-found bases on a store that pays per request: after a VACUUM moves
/// rows to other page numbers, the backup finds each new page's base by
/// content through the parent's sketch (a local file) and takes it from the
/// base cache, so it stores far fewer bytes than a machine without the
/// sketch (same-position bases only), sends no more requests than the
/// budget, and every snapshot restores byte for byte.
#[test]
fn vacuum_moved_rows_find_their_bases_by_content_in_the_base_cache() {
    use crate::content_bases::{backup_both, shop, vacuum_between_touches};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let rows = 12_000;
    let conn = shop(&db, rows);
    let (found, counts) = remote_named(dir.path(), "found");
    let (blind, _) = remote_named(dir.path(), "blind");
    let mut rng = Rng(5);
    let mut taken = Vec::new();
    let mut both = || {
        // `blind` counts its requests elsewhere: these are `found`'s.
        let (before, pack_gets) = counts.now();
        let first = taken.is_empty();
        let pair = backup_both(&found, &blind, &db, dir.path(), &mut taken);
        let (after, pack_gets_after) = counts.now();
        assert_eq!(pack_gets_after, pack_gets, "a pack was read");
        // The first backup lists the store; the later ones keep the budget.
        let meta = after.metadata() - before.metadata();
        assert!(first || meta <= 10, "{meta} requests besides packs");
        pair
    };
    vacuum_between_touches(&conn, &mut rng, rows, &mut both);
    restore_each(&found, &taken, dir.path());
}
