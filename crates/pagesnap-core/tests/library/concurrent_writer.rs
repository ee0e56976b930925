//! Backups of a database that another *process* keeps writing to.
//!
//! The writer is this test binary itself, re-run with `--exact
//! concurrent_writer::writer_process --ignored` and `PAGESNAP_TEST_WRITER_DB` set: the ignored test `writer_process`
//! then commits small transactions for a few seconds and prints how many
//! transactions it committed and how many SQLITE_BUSY errors it saw.
//!
//! Each writer transaction inserts 3 rows, rewrites one existing row and bumps two
//! counters in `meta`, so every consistent snapshot satisfies
//! `count(*) = meta.rows = seed rows + 3 * meta.txns`.

use crate::common::*;
use pagesnap_core::{BackupReport, InitOptions, Store};
use rusqlite::{params, Connection, ErrorCode};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DB_ENV: &str = "PAGESNAP_TEST_WRITER_DB";
const MODE_ENV: &str = "PAGESNAP_TEST_WRITER_MODE";
const SECS_ENV: &str = "PAGESNAP_TEST_WRITER_SECS";
const REPORT: &str = "PAGESNAP_WRITER";
const SEED_ROWS: i64 = 300;
const WRITER_SECS: f64 = 3.5;
/// [`writer_process`]'s name in the test binary (tests/library/main.rs).
const WRITER_TEST: &str = "concurrent_writer::writer_process";

/// The writer process body. Does nothing unless started by `backup_while_writing`.
#[test]
#[ignore = "the writer half of the concurrent_writer tests; runs only as their child process"]
fn writer_process() {
    let Some(db) = std::env::var_os(DB_ENV) else {
        return;
    };
    let wal = std::env::var(MODE_ENV).unwrap() == "wal";
    let secs: f64 = std::env::var(SECS_ENV).unwrap().parse().unwrap();
    let conn = Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, if wal { "wal" } else { "delete" });
    // WAL: readers never block a writer, so a zero busy timeout must never fail.
    // Rollback: the backup's read lock makes commits wait; wait for it.
    conn.busy_timeout(if wal {
        Duration::ZERO
    } else {
        Duration::from_secs(10)
    })
    .unwrap();

    let mut rng = Rng(std::process::id() as u64);
    let (mut busy, mut commits) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        match write_one(&conn, &mut rng) {
            Ok(()) => commits += 1,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                busy += 1;
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK").unwrap();
                }
            }
            Err(e) => panic!("writer: {e}"),
        }
        // Small transactions at a steady pace, not a tight loop.
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("{REPORT} busy={busy} commits={commits}");
}

fn write_one(conn: &Connection, rng: &mut Rng) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let txn: i64 = conn.query_row("SELECT v + 1 FROM meta WHERE k = 'txns'", [], |r| r.get(0))?;
    for _ in 0..3 {
        // Up to ~1.5 pages: some rows overflow.
        let len = rng.below(6000) as usize;
        let body = rng.bytes(len, txn % 2 == 0);
        conn.execute(
            "INSERT INTO rows(txn, body) VALUES (?1, ?2)",
            params![txn, body],
        )?;
    }
    let max: i64 = conn.query_row("SELECT max(id) FROM rows", [], |r| r.get(0))?;
    let victim = 1 + rng.below(max as u64) as i64;
    let len = rng.below(3000) as usize;
    conn.execute(
        "UPDATE rows SET hits = hits + 1, body = ?2 WHERE id = ?1",
        params![victim, rng.bytes(len, true)],
    )?;
    conn.execute_batch(
        "UPDATE meta SET v = v + 3 WHERE k = 'rows';
         UPDATE meta SET v = v + 1 WHERE k = 'txns';
         COMMIT",
    )
}

fn setup(db: &Path, journal: Journal) {
    let conn = create_db(db, journal, 4096);
    conn.execute_batch(
        "CREATE TABLE rows(id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, body BLOB NOT NULL,
                           hits INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX rows_txn ON rows(txn);
         CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let mut rng = Rng(99);
    for _ in 0..SEED_ROWS {
        let len = rng.below(4000) as usize;
        tx.execute(
            "INSERT INTO rows(txn, body) VALUES (0, ?1)",
            params![rng.bytes(len, true)],
        )
        .unwrap();
    }
    tx.execute(
        "INSERT INTO meta VALUES ('rows', ?1), ('txns', 0)",
        params![SEED_ROWS],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// (rows, txns) of a database, after checking its counters agree with its rows.
fn consistent_counts(conn: &Connection) -> (i64, i64) {
    let rows = count(conn, "SELECT count(*) FROM rows");
    let meta_rows = count(conn, "SELECT v FROM meta WHERE k = 'rows'");
    let txns = count(conn, "SELECT v FROM meta WHERE k = 'txns'");
    let max_txn = count(conn, "SELECT max(txn) FROM rows");
    assert_eq!(rows, meta_rows, "row count vs meta.rows");
    assert_eq!(rows, SEED_ROWS + 3 * txns, "rows vs committed transactions");
    assert_eq!(max_txn, txns, "newest transaction's rows vs meta.txns");
    (rows, txns)
}

fn backup_while_writing(journal: Journal) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    setup(&db, journal);
    let store = Store::init(dir.path().join("store"), &InitOptions::default()).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            WRITER_TEST,
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(DB_ENV, &db)
        .env(
            MODE_ENV,
            journal.pragma_value().replace("delete", "rollback"),
        )
        .env(SECS_ENV, WRITER_SECS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });

    // Wait for the writer's first commit.
    let started = Instant::now();
    loop {
        let c = open_ro(&db);
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        if count(&c, "SELECT v FROM meta WHERE k = 'txns'") > 0 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "writer exited early");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "writer never committed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Back up in a loop for as long as the writer runs.
    let mut reports: Vec<BackupReport> = Vec::new();
    let mut during = 0;
    while child.try_wait().unwrap().is_none() {
        reports.push(backup(&store, &db));
        if child.try_wait().unwrap().is_none() {
            during += 1;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "writer failed: {status}\n{out}");
    let line = out
        .lines()
        .find_map(|l| l.split_once(REPORT).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no writer report in its output:\n{out}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (busy, commits) = (field("busy"), field("commits"));
    println!(
        "{journal:?}: {} backups ({during} while the writer ran), writer: {commits} commits, {busy} busy",
        reports.len()
    );
    assert!(during >= 5, "only {during} backups overlapped the writer");
    // The snapshot is read from the file (and WAL) unless that could not be
    // proven right (backup/capture/direct.rs): under this writer, nearly always.
    let direct = reports
        .iter()
        .filter(|r| r.capture_fallback.is_none())
        .count();
    println!("{journal:?}: {direct} of {} read directly", reports.len());
    assert!(
        direct * 4 >= reports.len() * 3,
        "only {direct} of {} backups read the snapshot directly: {:?}",
        reports.len(),
        reports.iter().find_map(|r| r.capture_fallback.as_ref())
    );
    assert!(commits > 0, "the writer made no progress");
    if journal == Journal::Wal {
        assert_eq!(
            busy, 0,
            "a WAL writer must never see SQLITE_BUSY from a backup"
        );
    }

    // The writer is gone: one more backup, compared with a reference copy.
    let last = backup(&store, &db);
    let expected = reference_hash(&db, dir.path());
    assert_eq!(hex(&last.image_hash), hex(&expected));
    reports.push(last);

    // Every snapshot restores exactly, is consistent, and they never go back in time.
    let mut prev = (0i64, 0i64);
    let mut distinct = std::collections::BTreeSet::new();
    for (i, report) in reports.iter().enumerate() {
        let snap = snapshot_of(&store, report);
        let restored = restore_and_check(&store, &snap, &report.image_hash, dir.path());
        let counts = consistent_counts(&open_ro(&restored));
        assert!(
            counts >= prev,
            "snapshot {i} has {counts:?} (rows, txns), fewer than the previous {prev:?}"
        );
        prev = counts;
        distinct.insert(counts);
        std::fs::remove_file(restored).unwrap();
    }
    let final_txns = prev.1;
    assert_eq!(
        final_txns as u64, commits,
        "the last snapshot holds every commit"
    );
    assert!(
        distinct.len() >= 3,
        "the writer made progress between backups: {distinct:?}"
    );
}

#[test]
fn backup_while_another_process_writes_wal() {
    backup_while_writing(Journal::Wal);
}

#[test]
fn backup_while_another_process_writes_rollback() {
    backup_while_writing(Journal::Rollback);
}
