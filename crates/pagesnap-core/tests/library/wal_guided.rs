//! WAL-guided capture (capture/guide.rs, #30 part 3): a backup of a WAL
//! database whose parent's record holds its WAL position reads only the blocks
//! with a page in the frames since, when the WAL proves it was only appended
//! to. Property: whatever the application does between two backups (writes,
//! deletes, VACUUM, checkpoints of every mode, its connection closed and the
//! WAL deleted, autocheckpoints), the snapshot is the one a `--paranoid` backup
//! of the same database takes in another store, and restores byte for byte
//! and sound. A file replaced, a mark not followed (`full_read`), and what the
//! guide trusts (a page written behind SQLite's back) are pinned down too.

use crate::common::*;
use crate::index_cache::cache_dir;
use pagesnap_core::{BackupOptions, BackupReport, InitOptions, Store};
use proptest::prelude::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// What the application does between two backups.
#[derive(Clone, Debug)]
enum Op {
    /// Rewrites about one row in `every`.
    Update {
        every: u16,
        seed: u64,
    },
    Insert {
        rows: u16,
        seed: u64,
    },
    /// Deletes about one row in `every`.
    Delete {
        every: u8,
    },
    Vacuum,
    Checkpoint(&'static str),
    /// Closes the application's connection (the last: SQLite checkpoints and
    /// deletes the WAL) and opens it again.
    Reopen,
    /// The application's autocheckpoint threshold, in pages.
    Autocheckpoint(u16),
    Backup,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (2u16..600, any::<u64>()).prop_map(|(every, seed)| Op::Update { every, seed }),
        2 => (1u16..300, any::<u64>()).prop_map(|(rows, seed)| Op::Insert { rows, seed }),
        1 => (2u8..20).prop_map(|every| Op::Delete { every }),
        1 => Just(Op::Vacuum),
        2 => prop_oneof![Just("PASSIVE"), Just("FULL"), Just("RESTART"), Just("TRUNCATE")]
            .prop_map(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => prop_oneof![Just(0u16), Just(20), Just(1000)].prop_map(Op::Autocheckpoint),
        6 => Just(Op::Backup),
    ]
}

fn init(dir: &Path) -> Store {
    Store::init(dir, &InitOptions::default()).unwrap()
}

fn back_up(store: &Store, db: &Path, paranoid: bool, full_read: bool) -> BackupReport {
    let opts = BackupOptions {
        paranoid,
        full_read,
        ..BackupOptions::default()
    };
    store.backup_path(db, &opts).unwrap()
}

/// The application's connection to a WAL database of 1 KiB pages (64 to a
/// capture block), about 600 pages of rows.
fn application(db: &Path) -> Connection {
    let conn = create_db(db, Journal::Wal, 1024);
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB NOT NULL);")
        .unwrap();
    insert(&conn, 1200, 1);
    conn
}

fn open_application(db: &Path) -> Connection {
    let conn = Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

fn insert(conn: &Connection, rows: u16, seed: u64) {
    let mut rng = Rng(seed);
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..rows {
        let len = 100 + rng.below(600) as usize;
        tx.execute("INSERT INTO t(b) VALUES (?1)", [rng.bytes(len, true)])
            .unwrap();
    }
    tx.commit().unwrap();
}

fn apply(conn: &mut Connection, db: &Path, op: &Op) {
    match *op {
        Op::Update { every, seed } => {
            conn.execute(
                "UPDATE t SET b = randomblob(100 + abs(?1 + id) % 600) WHERE (id + ?1) % ?2 = 0",
                rusqlite::params![(seed % 1000) as i64, every as i64],
            )
            .unwrap();
        }
        Op::Insert { rows, seed } => insert(conn, rows, seed),
        Op::Delete { every } => {
            conn.execute("DELETE FROM t WHERE id % ?1 = 1", [every as i64])
                .unwrap();
        }
        Op::Vacuum => conn.execute_batch("VACUUM").unwrap(),
        Op::Checkpoint(mode) => {
            // Busy is fine: a checkpoint that could not finish.
            let _ = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
        }
        Op::Reopen => {
            // Closed first (the last connection: the WAL goes), then opened.
            *conn = Connection::open_in_memory().unwrap();
            *conn = open_application(db);
        }
        Op::Autocheckpoint(pages) => {
            let _ = conn.query_row(
                &format!("PRAGMA wal_autocheckpoint={pages}"),
                [],
                |_| Ok(()),
            );
        }
        Op::Backup => {}
    }
}

/// A live database in `dir` (its application's connection kept open) and a
/// store, this binary's cache directory set.
fn live(dir: &Path) -> (PathBuf, Connection, Store) {
    cache_dir();
    let db = dir.join("live.db");
    let conn = application(&db);
    (db, conn, init(&dir.join("s")))
}

/// Runs `ops` against a live database, backing it up at each `Backup` into a
/// store that follows the WAL and, with `--paranoid`, into another; returns
/// how many backups were guided.
fn run_ops(ops: &[Op]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut conn, guided) = live(dir.path());
    let reference = init(&dir.path().join("reference"));
    back_up(&guided, &db, false, false);
    let mut followed = 0;
    let mut taken = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        apply(&mut conn, &db, op);
        if !matches!(op, Op::Backup) {
            continue;
        }
        let r = back_up(&guided, &db, false, false);
        let want = back_up(&reference, &db, true, false);
        assert_eq!(
            want.unread_bytes, None,
            "a paranoid backup reads every page"
        );
        assert_eq!(
            hex(&r.image_hash),
            hex(&want.image_hash),
            "step {i} ({op:?}, after {:?}): the image every page read gives",
            &ops[..i]
        );
        if let Some(unread) = r.unread_bytes {
            assert!(unread < r.image_len, "block 0 is always read");
            followed += (unread > 0) as usize;
        }
        taken.push(r);
    }
    // Every snapshot restores to its image, and the newest is a sound database.
    for r in &taken {
        let snap = snapshot_of(&guided, r);
        assert_eq!(restore_hash_via_writer(&guided, &snap), r.image_hash);
    }
    if let Some(r) = taken.last() {
        let snap = snapshot_of(&guided, r);
        restore_and_check(&guided, &snap, &r.image_hash, dir.path());
    }
    followed
}

fn cases() -> u32 {
    std::env::var("PAGESNAP_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn a_guided_backup_is_the_image_a_full_read_gives(ops in proptest::collection::vec(op(), 1..24)) {
        run_ops(&ops);
    }
}

#[test]
fn small_writes_between_backups_are_read_and_nothing_else() {
    let ops = [
        Op::Update {
            every: 400,
            seed: 1,
        },
        Op::Backup,
        Op::Update {
            every: 400,
            seed: 2,
        },
        Op::Backup,
        Op::Insert { rows: 20, seed: 3 },
        Op::Backup,
        Op::Backup,
        Op::Delete { every: 9 },
        Op::Backup,
    ];
    // The application keeps its connection, its WAL is never restarted after
    // the first write: the backups follow it (the first after the first may
    // find it restarted by that write, after the autocheckpoint of the rows
    // the database was made with).
    assert!(run_ops(&ops) >= 3, "most backups were guided");
}

/// A few rows rewritten (about one in 400), a handful of blocks.
fn write(conn: &mut Connection, db: &Path, seed: u64) {
    apply(conn, db, &Op::Update { every: 400, seed });
}

/// A live database in `dir` and a store whose last backup followed its WAL.
fn followed(dir: &Path) -> (PathBuf, Connection, Store) {
    let (db, mut conn, store) = live(dir);
    back_up(&store, &db, false, false);
    write(&mut conn, &db, 1);
    back_up(&store, &db, false, false);
    write(&mut conn, &db, 2);
    let r = back_up(&store, &db, false, false);
    assert!(
        r.unread_bytes.is_some_and(|u| u > 0),
        "guided: {:?}",
        r.unread_bytes
    );
    (db, conn, store)
}

#[test]
fn a_checkpoint_restart_or_a_closed_wal_breaks_the_guide_and_the_next_backup_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut conn, store) = followed(dir.path());
    for breaks in [
        Op::Checkpoint("RESTART"),
        Op::Checkpoint("TRUNCATE"),
        Op::Reopen,
    ] {
        apply(&mut conn, &db, &breaks);
        write(&mut conn, &db, 3);
        let r = back_up(&store, &db, false, false);
        assert_eq!(r.unread_bytes, None, "after {breaks:?}: read whole");
        // The next one follows again.
        write(&mut conn, &db, 4);
        let r = back_up(&store, &db, false, false);
        assert!(r.unread_bytes.is_some(), "after {breaks:?}, then a write");
    }
    // Asked not to follow: read whole, and the next follows again.
    write(&mut conn, &db, 5);
    assert_eq!(back_up(&store, &db, false, true).unread_bytes, None);
    write(&mut conn, &db, 6);
    assert!(back_up(&store, &db, false, false).unread_bytes.is_some());
}

/// A copy of `db` put in its place under a new inode: the same bytes,
/// another file.
fn replace_by_a_copy(db: &Path) {
    let copy: PathBuf = db.with_extension("copy");
    std::fs::copy(db, &copy).unwrap();
    std::fs::rename(&copy, db).unwrap();
}

#[test]
fn a_database_file_replaced_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn, store) = followed(dir.path());
    // Same WAL (its salts and frames), the database file another one.
    replace_by_a_copy(&db);
    let r = back_up(&store, &db, false, false);
    assert_eq!(r.unread_bytes, None, "another inode: read whole");
    drop(conn);
}

#[test]
fn a_page_written_behind_sqlites_back_is_what_the_guide_trusts_and_a_full_read_sees() {
    let dir = tempfile::tempdir().unwrap();
    let (db, conn, store) = live(dir.path());
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    // Writes to the first page of rows only (block 0, always read).
    let write_first_rows = |conn: &Connection| {
        conn.execute("UPDATE t SET b = randomblob(300) WHERE id = 1", [])
            .unwrap()
    };
    back_up(&store, &db, false, false);
    write_first_rows(&conn);
    let before = back_up(&store, &db, false, false);
    // A byte of page 300 (block 4, no frame since) changed in the file, not
    // through SQLite: what a disk or another program could do.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&db)
            .unwrap();
        let at = 299 * 1024 + 500;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    }
    write_first_rows(&conn);
    let guided = back_up(&store, &db, false, false);
    assert!(guided.unread_bytes.is_some_and(|u| u > 0));
    let full = back_up(&store, &db, false, true);
    assert_eq!(full.unread_bytes, None);
    // No commit came between the two: only the byte written behind SQLite's
    // back tells them apart. The guide took block 4 from the parent; the full
    // read saw the file.
    assert_ne!(hex(&guided.image_hash), hex(&full.image_hash));
    assert_ne!(hex(&before.image_hash), hex(&guided.image_hash));
    let mut image = Vec::new();
    store
        .restore_to_writer(&snapshot_of(&store, &full), &mut image)
        .unwrap();
    let file = std::fs::read(&db).unwrap();
    assert_eq!(image[299 * 1024..300 * 1024], file[299 * 1024..300 * 1024]);
}

/// `watch` takes its snapshots through its own connection to the database,
/// kept open between runs: its capture owns its read transaction, so it reads
/// the file directly and follows the WAL like `backup` (inside a transaction
/// of the watcher's it went through SQLite's backup API, and never followed).
/// What it records as seen is read before the capture: a commit racing the
/// capture costs one snapshot too many, never one too few.
#[test]
fn a_watched_database_is_read_directly_and_followed() {
    use pagesnap_core::watch::{Change, Source};
    use pagesnap_core::Abandon;
    let dir = tempfile::tempdir().unwrap();
    let (db, mut conn, store) = live(dir.path());
    let reference = init(&dir.path().join("reference"));
    let mut source = Source::new(&db);
    let timeout = std::time::Duration::from_secs(5);
    let opts = BackupOptions::default();
    let mut followed = 0;
    for i in 0..5u64 {
        assert_ne!(source.check(timeout).unwrap(), Change::Unchanged, "run {i}");
        let r = source.snapshot(&store, &opts, &Abandon::new()).unwrap();
        assert_eq!(r.capture_fallback, None, "run {i}: read directly");
        followed += r.unread_bytes.is_some_and(|u| u > 0) as usize;
        let want = back_up(&reference, &db, true, false);
        assert_eq!(hex(&r.image_hash), hex(&want.image_hash), "run {i}");
        assert_eq!(
            source.check(timeout).unwrap(),
            Change::Unchanged,
            "run {i}, after"
        );
        write(&mut conn, &db, 10 + i);
    }
    assert!(
        followed >= 3,
        "runs after the first two follow the WAL: {followed}"
    );
}

/// A WAL whose every frame is already in the database file is read only to
/// guide, and only when it is shorter than the database: a WAL ten times the
/// database's size is not read (every page is, which costs less).
#[test]
fn a_checkpointed_wal_guides_only_when_shorter_than_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut conn, store) = live(dir.path());
    // The rows the database was made with leave the WAL (a restart on the
    // next write); a few rows written after fill a WAL much shorter.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    write(&mut conn, &db, 1);
    back_up(&store, &db, false, false);
    write(&mut conn, &db, 2);
    conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
        .unwrap();
    let r = back_up(&store, &db, false, false);
    assert!(
        r.unread_bytes.is_some_and(|u| u > 0),
        "{:?}",
        r.unread_bytes
    );

    let small = dir.path().join("small.db");
    let app = create_db(&small, Journal::Wal, 1024);
    app.execute_batch(
        "PRAGMA wal_autocheckpoint=0;
         CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         INSERT INTO t VALUES (1, randomblob(100));",
    )
    .unwrap();
    back_up(&store, &small, false, false);
    for _ in 0..3 {
        app.execute("UPDATE t SET b = randomblob(100) WHERE id = 1", [])
            .unwrap();
    }
    back_up(&store, &small, false, false);
    let pages = count(&app, "PRAGMA page_count") as usize;
    for _ in 0..10 * pages {
        app.execute("UPDATE t SET b = randomblob(100) WHERE id = 1", [])
            .unwrap();
    }
    app.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap();
    let r = back_up(&store, &small, false, false);
    assert_eq!(r.unread_bytes, None, "a WAL longer than the database");
}

/// Guided backups taken while a writer commits without pause (and
/// checkpoints now and then) are each one committed state: every transaction
/// adds amounts to rows (the first tenth of the table: the blocks of the
/// rest are left to the guide) and records the new total, and each restored
/// snapshot's rows add up to the newest total it holds, and pass
/// `integrity_check`.
#[test]
fn guided_backups_under_a_busy_writer_are_each_a_committed_state() {
    use std::sync::atomic::{AtomicBool, Ordering};
    cache_dir();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("busy.db");
    let setup = create_db(&db, Journal::Wal, 1024);
    setup
        .execute_batch(
            "CREATE TABLE v(id INTEGER PRIMARY KEY, x INTEGER NOT NULL, pad BLOB NOT NULL);
             CREATE TABLE sums(n INTEGER PRIMARY KEY, total INTEGER NOT NULL);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
             INSERT INTO v SELECT i, 0, randomblob(200) FROM c;
             INSERT INTO sums(total) VALUES (0);",
        )
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        std::thread::spawn(move || {
            let w = open_application(&db);
            // Checkpoints rare enough that most backups find the WAL they
            // follow (each restarts it at the next commit).
            w.execute_batch("PRAGMA wal_autocheckpoint=5000").unwrap();
            let mut rng = Rng(3);
            let mut commits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tx = w.unchecked_transaction().unwrap();
                let mut moved = 0i64;
                for _ in 0..1 + rng.below(4) {
                    let d = rng.below(1000) as i64 + 1;
                    tx.execute(
                        "UPDATE v SET x = x + ?1 WHERE id = ?2",
                        [d, 1 + rng.below(300) as i64],
                    )
                    .unwrap();
                    moved += d;
                }
                tx.execute(
                    "INSERT INTO sums(total) SELECT total + ?1 FROM sums ORDER BY n DESC LIMIT 1",
                    [moved],
                )
                .unwrap();
                tx.commit().unwrap();
                commits += 1;
                // A commit every ~half millisecond.
                std::thread::sleep(std::time::Duration::from_micros(500));
                if commits % 1500 == 0 {
                    let _ = w.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            }
            commits
        })
    };
    let store = init(&dir.path().join("s"));
    let mut taken = Vec::new();
    for _ in 0..16 {
        taken.push(back_up(&store, &db, false, false));
        std::thread::sleep(std::time::Duration::from_millis(15));
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(commits > 50, "the writer kept committing: {commits}");
    let guided = taken
        .iter()
        .filter(|r| r.unread_bytes.is_some_and(|u| u > 0))
        .count();
    let unread: Vec<_> = taken.iter().map(|r| r.unread_bytes).collect();
    assert!(guided >= 3, "{guided} backups were guided: {unread:?}");
    for (i, r) in taken.iter().enumerate() {
        let out = restore_and_check(&store, &snapshot_of(&store, r), &r.image_hash, dir.path());
        let c = open_ro(&out);
        let sum = count(&c, "SELECT sum(x) FROM v");
        let total = count(&c, "SELECT total FROM sums ORDER BY n DESC LIMIT 1");
        assert_eq!(sum, total, "snapshot {i} (guided: {:?})", r.unread_bytes);
    }
    drop(setup);
}
