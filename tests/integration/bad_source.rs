//! Backups of sources that cannot be captured: each fails naming the file and
//! the problem, and leaves the store exactly as it was.

use crate::util::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A store that already holds one snapshot (so "unchanged" means something).
fn store_with_one_snapshot() -> Fx {
    let fx = Fx::new();
    let db = small_db(&fx, "seed.db", 80);
    fx.backup(&db, &[]);
    fx
}

/// Runs a backup of `db` expected to fail; returns stderr after checking that
/// it names the file and that the store is unchanged.
fn backup_fails(fx: &Fx, db: &Path, extra: &[&str]) -> String {
    let before = fx.state();
    let err = fails(fx.cmd().arg("backup").arg(db).args(extra));
    assert_has(&err, &[&db.display().to_string()]);
    fx.assert_unchanged(&before);
    err
}

/// A multi-page rollback-journal database (no -wal, no hot journal).
fn multi_page_db(fx: &Fx, name: &str) -> std::path::PathBuf {
    let db = fx.path(name);
    drop(create_db(&db, Journal::Rollback, 1500, 81));
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 100 * 4096, "{len}");
    assert!(!fx.path(&format!("{name}-journal")).exists());
    db
}

#[test]
fn missing_database_file() {
    let fx = store_with_one_snapshot();
    let db = fx.path("nope.db");
    let err = backup_fails(&fx, &db, &[]);
    assert_has(&err, &["no such database file"]);
    assert!(!db.exists(), "the backup must not create the source");
}

#[test]
fn directory_instead_of_database() {
    let fx = store_with_one_snapshot();
    let dir = fx.path("adir");
    std::fs::create_dir(&dir).unwrap();
    let err = backup_fails(&fx, &dir, &[]);
    assert_has(&err, &["is a directory"]);
}

#[test]
fn random_bytes_are_not_a_database() {
    let fx = store_with_one_snapshot();
    let db = fx.path("random.db");
    std::fs::write(&db, Rng(82).bytes(64 * 1024, false)).unwrap();
    let err = backup_fails(&fx, &db, &[]);
    assert_has(&err, &["not an SQLite database"]);
}

#[test]
fn text_file_is_not_a_database() {
    let fx = store_with_one_snapshot();
    let db = fx.path("notes.txt");
    std::fs::write(&db, "just some notes\n".repeat(300)).unwrap();
    let err = backup_fails(&fx, &db, &[]);
    assert_has(&err, &["not an SQLite database"]);
}

#[test]
fn truncated_database_is_reported_as_such() {
    let fx = store_with_one_snapshot();
    let db = multi_page_db(&fx, "cut.db");
    let len = std::fs::metadata(&db).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let err = backup_fails(&fx, &db, &[]);
    assert_has(&err, &["database is corrupt or truncated"]);
}

#[test]
fn corrupt_schema_page_is_reported_as_such() {
    let fx = store_with_one_snapshot();
    let db = multi_page_db(&fx, "bad.db");
    let mut bytes = std::fs::read(&db).unwrap();
    // Page 1 after the 100-byte file header: the sqlite_schema b-tree header,
    // cell pointers and cells.
    let garbage = Rng(83).bytes(4096 - 100, false);
    bytes[100..4096].copy_from_slice(&garbage);
    bytes[100] = 0x7f; // not a valid b-tree page type
    std::fs::write(&db, &bytes).unwrap();
    let err = backup_fails(&fx, &db, &[]);
    assert!(
        err.contains("corrupt") || err.contains("malformed"),
        "{err}"
    );
}

#[test]
fn database_locked_beyond_the_busy_timeout() {
    let fx = store_with_one_snapshot();
    let db = fx.path("busy.db");
    let conn = create_db(&db, Journal::Rollback, 500, 84);
    // An exclusive lock with a pending write: no reader can start.
    conn.execute_batch("BEGIN EXCLUSIVE; UPDATE items SET n = n + 1 WHERE id < 50;")
        .unwrap();
    let started = Instant::now();
    let err = backup_fails(&fx, &db, &["--busy-timeout", "200ms"]);
    let took = started.elapsed();
    assert_has(&err, &["locked", "200ms", "--busy-timeout"]);
    // The backup waited, but not for the 5 s default.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    conn.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone the same backup works.
    let b = fx.backup(&db, &["--busy-timeout", "200ms"]);
    let reference = reference_copy(&db, &fx.path("ref.db"));
    assert_eq!(b["image_hash"], serde_json::Value::String(reference));
}

#[test]
fn bad_names_and_tags_are_refused() {
    let fx = store_with_one_snapshot();
    let db = small_db(&fx, "app.db", 85);
    for (flag, bad, why) in [
        ("--name", "a\nb", "control character"),
        ("--name", "../etc", "path separator or `..`"),
        ("--name", "x..y", "path separator or `..`"),
        ("--name", "a/b", "path separator"),
        ("--name", "", "is empty"),
        ("--tag", "night\nly", "control character"),
        ("--tag", "..", "`..`"),
    ] {
        let before = fx.state();
        let err = fails(fx.cmd().arg("backup").arg(&db).args([flag, bad]));
        assert_has(&err, &[why, &format!("{bad:?}")]);
        fx.assert_unchanged(&before);
    }
    // Restoring under such a name finds nothing and writes nothing.
    let out = fx.path("out.db");
    let err = fails(fx.cmd().args(["restore", "--name", "a\nb", "-o"]).arg(&out));
    assert_has(&err, &["no snapshots of \"a\\nb\""]);
    assert_no_output(&out);
}

/// Runs a backup of `db` that must fail at once (a regression that blocks is
/// killed after 20 s and fails the test instead of hanging it); returns stderr
/// after checking that it names the file and that the store is unchanged.
fn backup_fails_at_once(fx: &Fx, db: &Path) -> String {
    let before = fx.state();
    let started = Instant::now();
    let out = fx
        .cmd()
        .arg("backup")
        .arg(db)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        took < Duration::from_secs(5),
        "backup of {} took {took:?}: it blocked ({:?}, stderr: {err})",
        db.display(),
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.starts_with("pagesnap: error: "), "{err}");
    assert_has(&err, &[&db.display().to_string()]);
    fx.assert_unchanged(&before);
    err
}

#[test]
fn fifo_is_refused_without_blocking() {
    let fx = store_with_one_snapshot();
    let fifo = fx.path("pipe.db");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let err = backup_fails_at_once(&fx, &fifo);
    assert_has(&err, &["is a FIFO", "not a regular file"]);
    // Through a symlink too: the target's type counts.
    let link = fx.path("link.db");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let err = backup_fails_at_once(&fx, &link);
    assert_has(&err, &["is a FIFO"]);
}

#[test]
fn character_device_is_refused() {
    let fx = store_with_one_snapshot();
    let err = backup_fails_at_once(&fx, Path::new("/dev/zero"));
    assert_has(&err, &["is a character device", "not a regular file"]);
}

#[test]
fn unix_socket_is_refused() {
    let fx = store_with_one_snapshot();
    let sock = fx.path("app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = backup_fails_at_once(&fx, &sock);
    assert_has(&err, &["is a socket", "not a regular file"]);
}

#[test]
fn hot_journal_is_explained_and_left_alone() {
    let fx = store_with_one_snapshot();
    let hot = hot_journal_copy(&fx, "hot.db");
    let journal = fx.path("hot.db-journal");
    let journal_hash = hash_file(&journal);
    let err = backup_fails(&fx, &hot, &[]);
    assert_has(
        &err,
        &[
            "hot journal",
            &journal.display().to_string(),
            "write access",
        ],
    );
    // A read-only backup never touches the journal.
    assert_eq!(hash_file(&journal), journal_hash);
    // Opened once with write access, SQLite rolls the journal back; then the
    // backup works and holds the database as it was before the transaction.
    let rw = rusqlite::Connection::open(&hot).unwrap();
    assert_eq!(integrity(&hot), "ok");
    drop(rw);
    assert!(!journal.exists(), "the journal was rolled back");
    let b = fx.backup(&hot, &[]);
    let reference = reference_copy(&fx.path("live.db"), &fx.path("ref.db"));
    assert_eq!(b["image_hash"], serde_json::Value::String(reference));
}

/// A read that fails in the middle of a direct capture (an I/O error from the
/// disk, made on purpose by the `testing` build), in the database file or in
/// its WAL: the backup fails naming that file, publishes nothing, and the
/// next backup is whole.
#[test]
fn a_read_error_during_a_direct_read_names_the_file_and_publishes_nothing() {
    let fx = store_with_one_snapshot();
    let db = fx.path("live.db");
    let conn = create_db(&db, Journal::Wal, 3000, 83);
    // Committed changes that only the WAL holds, while the writer stays.
    conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
    insert_rows(&conn, 200, &mut Rng(84));
    let wal = fx.path("live.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "changes are in the WAL"
    );
    for (fault, names) in [("db", &db), ("wal", &wal)] {
        let before = fx.state();
        let err = fails(
            fx.cmd()
                .env("PAGESNAP_FAULT_DIRECT_READ", fault)
                .arg("backup")
                .arg(&db),
        );
        // The file that failed, and the error, not SQLite's generic message.
        assert_has(
            &err,
            &[&format!("{}: ", names.display()), "Input/output error"],
        );
        fx.assert_unchanged(&before);
    }
    let reference = reference_copy(&db, &fx.path("reference.db"));
    let b = fx.backup(&db, &[]);
    assert_eq!(b["read_directly"], true, "{b}");
    let out = fx.path("restored.db");
    fx.restore(&[b["id"].as_str().unwrap()], &out);
    assert_eq!(hash_file(&out), reference);
    assert_eq!(integrity(&out), "ok");
    drop(conn);
}
