//! The local index cache (src/index/cache/): backups take the short way once it is
//! built and give byte-exact snapshots either way; after a prune or a lost pack
//! they skip what is gone; a damaged index object, a damaged or missing cache
//! file make a backup take the long way (and heal).

use crate::common::*;
use pagesnap_core::{BackupReport, InitOptions, PruneOptions, Store};
use proptest::prelude::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One cache directory for the whole test binary: the variable is process-wide,
/// so it is set once, and the other tests of the binary may find it set (stores
/// have their own ids under it).
pub(crate) fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("PAGESNAP_CACHE_DIR", dir.path());
        dir
    })
    .path()
}

fn index_dir(store: &Store) -> PathBuf {
    cache_dir()
        .join(store.config().store_id.to_hex())
        .join("index")
}

struct Fixture {
    dir: tempfile::TempDir,
    db: PathBuf,
    conn: Connection,
    store: Store,
    taken: Vec<(BackupReport, Hash)>,
    step: u64,
}

impl Fixture {
    fn new() -> Fixture {
        cache_dir();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = one_row_per_page(&db, 300);
        let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();
        Fixture {
            dir,
            db,
            conn,
            store,
            taken: Vec::new(),
            step: 0,
        }
    }

    /// Changes a few rows and backs up; returns the report.
    fn change_and_back_up(&mut self) -> &BackupReport {
        self.step += 1;
        let ids: Vec<i64> = (0..4)
            .map(|i| 1 + ((self.step * 37 + i * 71) % 300) as i64)
            .collect();
        set_rows(&self.conn, 100 + self.step, ids.into_iter());
        let r = backup(&self.store, &self.db);
        let h = reference_hash(&self.db, self.dir.path());
        self.taken.push((r, h));
        &self.taken.last().unwrap().0
    }

    /// Drops the sorted chunk file and backs up: the long way writes it again,
    /// covering every index object so far (otherwise objects written since the
    /// first backup stay a delta until they are worth merging).
    fn rebuild_cache(&mut self) {
        std::fs::remove_file(index_dir(&self.store).join("chunks")).unwrap();
        assert!(!self.change_and_back_up().index_cached);
        let r = self.change_and_back_up();
        assert!(r.index_cached);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    /// Deletes every pack of the store (damage: not a prune).
    fn lose_every_pack(&self) {
        let packs = self.dir.path().join("store").join("packs");
        std::fs::remove_dir_all(&packs).unwrap();
        std::fs::create_dir_all(&packs).unwrap();
    }

    /// Changes rows, backs up and checks that the snapshot stored at least
    /// `min_new` chunks and restores byte for byte; returns whether the backup
    /// took the short way.
    fn back_up_and_check(&mut self, min_new: u64) -> bool {
        let (new, cached) = {
            let r = self.change_and_back_up();
            (r.stats.new_chunks, r.index_cached)
        };
        assert!(
            new >= min_new,
            "only {new} chunks stored, {min_new} expected"
        );
        let (r, h) = self.taken.last().unwrap();
        restore_and_check(
            &self.store,
            &snapshot_of(&self.store, r),
            h,
            self.dir.path(),
        );
        cached
    }

    /// Every snapshot still in the store restores byte for byte.
    fn check_all(&self) {
        let kept: Vec<_> = self
            .store
            .snapshots()
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        for (r, h) in self
            .taken
            .iter()
            .filter(|(r, _)| kept.contains(&r.snapshot))
        {
            restore_and_check(
                &self.store,
                &snapshot_of(&self.store, r),
                h,
                self.dir.path(),
            );
        }
    }
}

#[test]
fn backups_take_the_short_way_once_the_cache_is_built_and_stay_exact() {
    let mut f = Fixture::new();
    let first = f.change_and_back_up();
    assert!(
        !first.index_cached,
        "nothing is cached before the first backup"
    );
    assert!(index_dir(&f.store).join("chunks").exists());
    for i in 0..12 {
        let r = f.change_and_back_up();
        assert!(
            r.index_cached,
            "backup {i} after the first took the long way"
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(
            r.stats.new_chunks >= 1 && r.stats.new_chunks <= 8,
            "{}",
            r.stats.new_chunks
        );
        // The sorted file covers the first backup's chunks; the delta the rest.
        assert!(r.index_chunks >= first_chunks(&f));
    }
    // An unchanged database reuses its parent's map, through the cache too.
    let r = backup(&f.store, &f.db);
    assert!(r.index_cached);
    assert_eq!(r.stats.new_chunks, 0);
    assert_eq!(r.delta_len, 0);
    f.check_all();
    // Only the maps of the newest chain keep a resolved copy here.
    let maps = std::fs::read_dir(index_dir(&f.store).join("maps"))
        .unwrap()
        .count();
    assert!(
        maps <= 5,
        "{maps} resolved maps kept for a chain of at most 5"
    );
}

fn first_chunks(f: &Fixture) -> u64 {
    f.taken[0].0.stats.new_chunks
}

#[test]
fn a_second_database_deduplicates_against_the_cached_file() {
    let mut f = Fixture::new();
    f.change_and_back_up();
    f.change_and_back_up();
    // A copy of the database under another name: its first backup has no parent,
    // so every chunk is searched for in the sorted file and the delta.
    let copy = f.dir.path().join("copy.db");
    reference_copy(&f.db, &copy);
    let r = backup(&f.store, &copy);
    assert!(r.index_cached);
    assert!(
        r.stats.new_chunks <= 1,
        "{} new chunks for a copy",
        r.stats.new_chunks
    );
    assert!(r.stats.reused_chunks > 50);
    restore_and_check(
        &f.store,
        &snapshot_of(&f.store, &r),
        &reference_hash(&copy, f.dir.path()),
        f.dir.path(),
    );
}

#[test]
fn a_damaged_or_missing_cache_costs_one_long_backup() {
    let mut f = Fixture::new();
    f.change_and_back_up();
    f.rebuild_cache();
    let chunks = index_dir(&f.store).join("chunks");
    // Damage in the entries: found when a block is read, the file is dropped, the
    // chunk taken as new (stored again), and the snapshot is still exact.
    let mut bytes = std::fs::read(&chunks).unwrap();
    for b in bytes.iter_mut().take(60 * 64 * 2) {
        *b ^= 0x55;
    }
    std::fs::write(&chunks, &bytes).unwrap();
    let copy = f.dir.path().join("copy.db");
    reference_copy(&f.db, &copy);
    let r = backup(&f.store, &copy);
    assert!(
        r.warnings.iter().any(|w| w.contains("local index cache")),
        "{:?}",
        r.warnings
    );
    restore_and_check(
        &f.store,
        &snapshot_of(&f.store, &r),
        &reference_hash(&copy, f.dir.path()),
        f.dir.path(),
    );
    // The next backup rebuilds it (the long way), the one after is short again.
    assert!(!f.change_and_back_up().index_cached);
    assert!(f.change_and_back_up().index_cached);
    // A truncated file: refused at open, with a warning, and rebuilt.
    let len = std::fs::metadata(&chunks).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&chunks)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let r = f.change_and_back_up();
    assert!(!r.index_cached);
    assert!(
        r.warnings.iter().any(|w| w.contains("unusable")),
        "{:?}",
        r.warnings
    );
    assert!(f.change_and_back_up().index_cached);
    // Resolved maps gone: the long way, which writes them again.
    std::fs::remove_dir_all(index_dir(&f.store).join("maps")).unwrap();
    let r = f.change_and_back_up();
    assert!(!r.index_cached);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(f.change_and_back_up().index_cached);
    // A resolved map that does not fit its map (same length, other ids): refused
    // by its checksum, never used.
    for e in std::fs::read_dir(index_dir(&f.store).join("maps")).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n / 2] ^= 1;
        std::fs::write(&p, b).unwrap();
    }
    assert!(!f.change_and_back_up().index_cached);
    assert!(f.change_and_back_up().index_cached);
    f.check_all();
}

#[test]
fn after_a_prune_backups_skip_what_it_deleted() {
    let mut f = Fixture::new();
    for _ in 0..4 {
        f.change_and_back_up();
    }
    f.rebuild_cache();
    let old: Vec<_> = f.taken[..4].iter().map(|(r, _)| r.snapshot).collect();
    f.store.forget_snapshots(&old, false).unwrap();
    let report = f
        .store
        .prune(&PruneOptions {
            max_unused: 0.0,
            ..PruneOptions::default()
        })
        .unwrap();
    assert!(
        report.index_deleted > 0 || report.packs_rewritten > 0,
        "{report:?}"
    );
    // The file covers objects the prune deleted: the next backup skips their
    // entries (they name objects and packs that are gone) and goes on the short
    // way; the file is rewritten without them once they are 1/8 of it.
    let r = f.change_and_back_up();
    assert!(r.index_cached);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(f.change_and_back_up().index_cached);
    f.check_all();
}

#[test]
fn a_lost_pack_is_stored_again_though_the_parent_held_it() {
    let mut f = Fixture::new();
    f.change_and_back_up();
    f.change_and_back_up();
    // Lose every pack: the parent's chunks are gone with them, and its
    // placement names packs that are not there any more.
    f.lose_every_pack();
    assert!(f.back_up_and_check(50));
    // Again, with the lost chunks covered by the sorted file: its entries in the
    // missing packs are skipped, and the chunks stored again.
    f.rebuild_cache();
    f.lose_every_pack();
    assert!(f.back_up_and_check(50));
    // The next backup is short again and exact.
    assert!(f.back_up_and_check(1));
}

#[test]
fn an_index_object_damaged_in_the_store_is_noticed_by_the_recheck() {
    let mut f = Fixture::new();
    f.change_and_back_up();
    f.rebuild_cache();
    // The first backup's index object, damaged in place (same size): the file
    // still lists it, so only reading it again notices. With fewer objects than
    // a backup rechecks, every backup reads them all.
    let index = f.dir.path().join("store").join("index");
    let mut objects: Vec<PathBuf> = walk(&index);
    objects.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let largest = objects.last().unwrap();
    let mut b = std::fs::read(largest).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x10;
    std::fs::write(largest, b).unwrap();
    let r = f.change_and_back_up();
    assert!(!r.index_cached);
    assert!(
        r.warnings.iter().any(|w| w.contains("failed its check")),
        "{:?}",
        r.warnings
    );
    let latest = f.taken.last().unwrap();
    restore_and_check(
        &f.store,
        &snapshot_of(&f.store, &latest.0),
        &latest.1,
        f.dir.path(),
    );
    // While the damaged object is in the store, backups take the long way.
    assert!(!f.change_and_back_up().index_cached);
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn another_database_whose_parent_lost_its_packs_stores_them_again() {
    let mut f = Fixture::new();
    let other = f.dir.path().join("other.db");
    let other_conn = one_row_per_page(&other, 120);
    set_rows(&other_conn, 555, 1..=120);
    f.change_and_back_up();
    backup(&f.store, &other);
    f.rebuild_cache();
    // Every pack lost. The first database's next backup skips the file's
    // entries in them and stores its chunks again.
    f.lose_every_pack();
    assert!(f.back_up_and_check(50));
    // The other database's parent still lists the lost chunks. Its backup takes
    // the short way, and the parent's placement (its packs, now missing) makes
    // it store them again rather than take them as stored.
    set_rows(&other_conn, 556, 1..=2);
    let r = backup(&f.store, &other);
    assert!(r.index_cached);
    assert!(
        r.stats.new_chunks > 30,
        "only {} chunks stored again",
        r.stats.new_chunks
    );
    restore_and_check(
        &f.store,
        &snapshot_of(&f.store, &r),
        &reference_hash(&other, f.dir.path()),
        f.dir.path(),
    );
}

/// What a random sequence does between checks.
#[derive(Clone, Debug)]
enum Step {
    /// Changes `rows` rows (seeded) of the first database and backs it up.
    BackUp { rows: u8, seed: u8 },
    /// Changes and backs up the second database (the same store).
    BackUpOther { rows: u8, seed: u8 },
    /// Forgets the first database's oldest `n` snapshots (never its newest) and
    /// prunes, packs with any dead chunk
    /// rewritten (`rewrite`) or only empty ones deleted.
    ForgetAndPrune { n: u8, rewrite: bool },
    /// Deletes the sorted chunk file, or every resolved map and placement.
    DropCache { file: bool },
    /// A backup with `--no-cache` (the long way, leaving the cache alone).
    BackUpWithoutCache,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u8..40, any::<u8>()).prop_map(|(rows, seed)| Step::BackUp { rows, seed }),
        2 => (1u8..40, any::<u8>()).prop_map(|(rows, seed)| Step::BackUpOther { rows, seed }),
        2 => (1u8..4, any::<bool>()).prop_map(|(n, rewrite)| Step::ForgetAndPrune { n, rewrite }),
        1 => any::<bool>().prop_map(|file| Step::DropCache { file }),
        1 => Just(Step::BackUpWithoutCache),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PAGESNAP_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8),
        ..ProptestConfig::default()
    })]

    /// For any sequence of backups of two databases, prunes, lost cache files and
    /// backups without the cache: every backup's snapshot, and every snapshot
    /// still kept at the end, restores byte for byte; and a backup right after
    /// another of the same database, with the cache untouched, takes the short way.
    #[test]
    fn random_sequences_with_prunes_stay_exact(steps in proptest::collection::vec(step(), 1..14)) {
        let mut f = Fixture::new();
        let other = f.dir.path().join("other.db");
        let other_conn = one_row_per_page(&other, 60);
        let mut other_taken: Vec<(BackupReport, Hash)> = Vec::new();
        let mut last_was_cached_backup_of_first = false;
        for s in &steps {
            let mut this_is_cached_backup_of_first = false;
            match s {
                Step::BackUp { rows, seed } => {
                    let ids: Vec<i64> = (0..*rows as i64).map(|i| 1 + (i * 7 + *seed as i64) % 300).collect();
                    set_rows(&f.conn, 1000 + *seed as u64, ids.into_iter());
                    let r = backup(&f.store, &f.db);
                    if last_was_cached_backup_of_first {
                        prop_assert!(r.index_cached, "{steps:?}");
                    }
                    this_is_cached_backup_of_first = true;
                    let h = reference_hash(&f.db, f.dir.path());
                    restore_and_check(&f.store, &snapshot_of(&f.store, &r), &h, f.dir.path());
                    f.taken.push((r, h));
                }
                Step::BackUpOther { rows, seed } => {
                    let ids: Vec<i64> = (0..*rows as i64).map(|i| 1 + (i * 3 + *seed as i64) % 60).collect();
                    set_rows(&other_conn, 2000 + *seed as u64, ids.into_iter());
                    let r = backup(&f.store, &other);
                    let h = reference_hash(&other, f.dir.path());
                    restore_and_check(&f.store, &snapshot_of(&f.store, &r), &h, f.dir.path());
                    other_taken.push((r, h));
                    // Another database's backup may merge the file: the next one
                    // of the first is still short, so keep the flag.
                    this_is_cached_backup_of_first = last_was_cached_backup_of_first;
                }
                Step::ForgetAndPrune { n, rewrite } => {
                    // The first database's oldest, keeping its newest.
                    let mut snaps: Vec<_> = f.store.snapshots().unwrap().into_iter().filter(|s| s.manifest.name == "app").collect();
                    snaps.sort_by_key(|s| (s.time(), s.id));
                    let old: Vec<_> = snaps.iter().take((*n as usize).min(snaps.len().saturating_sub(1))).map(|s| s.id).collect();
                    if !old.is_empty() {
                        f.store.forget_snapshots(&old, false).unwrap();
                    }
                    f.store.prune(&PruneOptions {
                        max_unused: if *rewrite { 0.0 } else { 1.0 },
                        ..PruneOptions::default()
                    }).unwrap();
                    // A prune changes nothing a parent needs: still short, if the
                    // parent was not forgotten.
                    this_is_cached_backup_of_first = false;
                }
                Step::DropCache { file } => {
                    let dir = index_dir(&f.store);
                    if *file {
                        let _ = std::fs::remove_file(dir.join("chunks"));
                    } else {
                        let _ = std::fs::remove_dir_all(dir.join("maps"));
                        let _ = std::fs::remove_dir_all(dir.join("placed"));
                    }
                }
                Step::BackUpWithoutCache => {
                    set_rows(&f.conn, 77, 1..=3);
                    let store = Store::open(f.dir.path().join("store")).unwrap().without_index_cache();
                    let r = backup(&store, &f.db);
                    prop_assert!(!r.index_cached);
                    let h = reference_hash(&f.db, f.dir.path());
                    restore_and_check(&f.store, &snapshot_of(&f.store, &r), &h, f.dir.path());
                    f.taken.push((r, h));
                }
            }
            last_was_cached_backup_of_first = this_is_cached_backup_of_first;
        }
        f.taken.extend(other_taken);
        f.check_all();
    }
}
