//! Shared helpers: running the binary, building test databases, byte-exact
//! reference copies, and "nothing was written or lost" checks.

use assert_cmd::Command;
use rusqlite::{params, Connection, OpenFlags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The library tests' generator (splitmix64), the one generator of test data.
pub use crate::rng::Rng;

/// Domain prefix of chunk ids (`types::CHUNK_DOMAIN`, documented in docs/FORMAT.md).
pub const CHUNK_DOMAIN: &[u8] = b"pagesnap chunk v1\0";

/// The binary with no store in its environment.
pub fn bin() -> Command {
    let mut c = Command::cargo_bin("pagesnap").expect("the pagesnap binary is built");
    c.env_remove("PAGESNAP_STORE");
    c
}

/// The binary pointed at `store` with `--store`.
pub fn ps(store: &Path) -> Command {
    let mut c = bin();
    c.arg("--store").arg(store);
    c
}

/// Runs `cmd`, asserts it succeeded, returns stdout.
pub fn ok(cmd: &mut Command) -> Vec<u8> {
    ok_output(cmd).0
}

/// Runs `cmd`, asserts it succeeded, returns its stdout and stderr.
pub fn ok_output(cmd: &mut Command) -> (Vec<u8>, String) {
    let out = cmd.output().expect("run pagesnap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    (out.stdout, stderr)
}

/// Runs `cmd`, asserts it succeeded and printed JSON, returns it.
pub fn ok_json(cmd: &mut Command) -> Value {
    let stdout = ok(cmd);
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// Runs `cmd`, asserts it failed cleanly (non-zero exit, no panic, nothing on
/// stdout), returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run pagesnap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    // docs/CLI.md: errors are `pagesnap: error: …` with exit code 1, or 10 (no
    // store) or 11 (locked); command-line syntax errors (clap) exit with 2, and
    // refused values are checked with `fails_usage`.
    let code = out.status.code();
    if let Some(msg) = stderr.strip_prefix("pagesnap: error: ") {
        assert_eq!(code, Some(exit_code_of(msg)), "{stderr}");
    } else {
        assert!(stderr.starts_with("error: "), "unexpected stderr: {stderr}");
        assert_eq!(code, Some(2), "{stderr}");
    }
    assert_no_repeated_cause(&stderr);
    assert!(
        out.stdout.is_empty(),
        "a failed command printed on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// The exit status docs/CLI.md gives an error message: 10 when the store does
/// not exist, 11 when it is locked, else 1.
pub fn exit_code_of(msg: &str) -> i32 {
    if msg.contains("store directory does not exist")
        || msg.contains("not a pagesnap store")
        || msg.contains("the bucket does not exist")
    {
        10
    } else if msg.contains("the store is locked by") {
        11
    } else {
        1
    }
}

/// Runs `cmd`, asserts it refused a value given on the command line (a time, a
/// duration): `pagesnap: error: …`, exit status 2 like clap's usage errors,
/// nothing on stdout. Returns stderr.
pub fn fails_usage(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run pagesnap");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("pagesnap: error: "), "{stderr}");
    assert_no_repeated_cause(&stderr);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Asserts the keys of a JSON object are exactly `keys`.
#[track_caller]
pub fn assert_keys(v: &Value, keys: &[&str]) {
    let mut got: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "in {v}");
}

/// Asserts no part of a message is stated twice in a row (`X: Y: Y`, `X: Y: Z: Y: Z`).
#[track_caller]
pub fn assert_no_repeated_cause(stderr: &str) {
    for line in stderr.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        for k in 1..=parts.len() / 2 {
            for i in 0..=parts.len() - 2 * k {
                assert!(
                    parts[i..i + k] != parts[i + k..i + 2 * k],
                    "the same cause is stated twice in: {line}"
                );
            }
        }
    }
}

/// Asserts `hay` contains every needle.
#[track_caller]
pub fn assert_has(hay: &str, needles: &[&str]) {
    for n in needles {
        assert!(hay.contains(n), "expected {n:?} in:\n{hay}");
    }
}

pub fn hash_bytes(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

pub fn hash_file(p: &Path) -> String {
    hash_bytes(&std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
}

/// A copy of `db` through SQLite's backup API from a fresh read-only connection;
/// returns its blake3.
pub fn reference_copy(db: &Path, out: &Path) -> String {
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    src.backup(
        rusqlite::MAIN_DB,
        out,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .unwrap();
    drop(src);
    hash_file(out)
}

pub fn integrity(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

pub fn row_count(db: &Path) -> i64 {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    Wal,
    Rollback,
}

/// Creates a database of `rows` rows (text and blobs, two indexes, a WITHOUT ROWID
/// table) and returns the open connection.
pub fn create_db(path: &Path, journal: Journal, rows: usize, seed: u64) -> Connection {
    create_db_paged(path, journal, rows, seed, 4096)
}

/// [`create_db`] with a chosen page size.
pub fn create_db_paged(
    path: &Path,
    journal: Journal,
    rows: usize,
    seed: u64,
    page_size: u32,
) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!("PRAGMA page_size={page_size};"))
        .unwrap();
    set_journal(&conn, journal);
    conn.execute_batch(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, body TEXT, data BLOB, n INTEGER);
         CREATE INDEX items_name ON items(name);
         CREATE INDEX items_n ON items(n);
         CREATE TABLE tags(item INTEGER, tag TEXT, PRIMARY KEY(item, tag)) WITHOUT ROWID;",
    )
    .unwrap();
    insert_rows(&conn, rows, &mut Rng(seed));
    conn
}

pub fn set_journal(conn: &Connection, journal: Journal) {
    let want = match journal {
        Journal::Wal => "wal",
        Journal::Rollback => "delete",
    };
    let got: String = conn
        .query_row(&format!("PRAGMA journal_mode={want}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got, want);
}

pub fn insert_rows(conn: &Connection, rows: usize, rng: &mut Rng) {
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut ins = conn
            .prepare("INSERT INTO items(name, body, data, n) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        let mut tag = conn
            .prepare("INSERT OR IGNORE INTO tags(item, tag) VALUES (?1, ?2)")
            .unwrap();
        for _ in 0..rows {
            let name = rng.words(2);
            let words = 8 + rng.below(20) as usize;
            let body = rng.words(words);
            let len = 64 + rng.below(400) as usize;
            let data = rng.bytes(len, false);
            let n = rng.below(1_000_000) as i64;
            ins.execute(params![name, body, data, n]).unwrap();
            let id = conn.last_insert_rowid();
            tag.execute(params![id, rng.words(1)]).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// Changes a database a little: updates, inserts and deletes some rows.
pub fn mutate(conn: &Connection, round: u64) {
    let mut rng = Rng(1000 + round);
    conn.execute_batch("BEGIN").unwrap();
    {
        let max: i64 = conn
            .query_row("SELECT max(id) FROM items", [], |r| r.get(0))
            .unwrap();
        let mut upd = conn
            .prepare("UPDATE items SET body = ?1, n = ?2 WHERE id = ?3")
            .unwrap();
        for _ in 0..60 {
            let id = 1 + rng.below(max as u64) as i64;
            upd.execute(params![rng.words(12), rng.below(1_000_000) as i64, id])
                .unwrap();
        }
        conn.execute(
            "DELETE FROM items WHERE id % 97 = ?1",
            params![(round % 97) as i64],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    insert_rows(conn, 150, &mut rng);
}

/// A temporary directory with a store in `store/` (initialised by `Fx::new`).
pub struct Fx {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Fx {
    /// A directory with an initialised store.
    pub fn new() -> Fx {
        let fx = Fx::uninit();
        let v = ok_json(fx.cmd().args(["--json", "init"]));
        assert_eq!(v["format_version"], 1, "{v}");
        fx
    }

    /// A directory whose `store/` does not exist yet.
    pub fn uninit() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        Fx { dir, store }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with `--store` set to this store.
    pub fn cmd(&self) -> Command {
        ps(&self.store)
    }

    /// `backup --json DB ARGS...`, asserted to succeed.
    pub fn backup(&self, db: &Path, args: &[&str]) -> Value {
        ok_json(self.cmd().arg("--json").arg("backup").arg(db).args(args))
    }

    /// `snapshots --json`, asserted to succeed.
    pub fn snapshots(&self) -> Vec<Value> {
        match ok_json(self.cmd().args(["--json", "snapshots"])) {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    /// `restore --json ARGS... -o OUT`, asserted to succeed.
    pub fn restore(&self, args: &[&str], out: &Path) -> Value {
        ok_json(
            self.cmd()
                .arg("--json")
                .arg("restore")
                .args(args)
                .arg("-o")
                .arg(out),
        )
    }

    /// Everything in the store, to compare before and after a failed command.
    pub fn state(&self) -> StoreState {
        StoreState {
            files: tree(&self.store),
            snapshots: self.snapshots(),
        }
    }

    /// Asserts the store is exactly as in `before` and holds no temporary files.
    #[track_caller]
    pub fn assert_unchanged(&self, before: &StoreState) {
        assert_no_store_temps(&self.store);
        let now = self.state();
        assert_eq!(now.snapshots, before.snapshots, "snapshot list changed");
        assert_eq!(now.files, before.files, "store files changed");
    }
}

pub struct StoreState {
    pub files: BTreeMap<PathBuf, String>,
    pub snapshots: Vec<Value>,
}

/// Every file under `root` (relative path → blake3 of its content).
pub fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), hash_file(&p));
            }
        }
    }
    out
}

#[track_caller]
pub fn assert_no_store_temps(store: &Path) {
    let temps: Vec<_> = tree(store)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(
        temps.is_empty(),
        "temporary files left in the store: {temps:?}"
    );
}

/// Asserts `out` does not exist and no restore temporary file is beside it.
#[track_caller]
pub fn assert_no_output(out: &Path) {
    assert!(
        out.symlink_metadata().is_err(),
        "{} was written",
        out.display()
    );
    assert_no_restore_temps(out.parent().unwrap());
}

#[track_caller]
pub fn assert_no_restore_temps(dir: &Path) {
    let temps: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pagesnap-restore-"))
        .collect();
    assert!(temps.is_empty(), "restore temporary files left: {temps:?}");
}

/// Asserts `out` is a byte-exact restore: its blake3 equals both `image_hash`
/// (from `backup --json`) and `reference` (a backup-API copy), and it passes
/// `PRAGMA integrity_check`.
#[track_caller]
pub fn assert_restored(out: &Path, image_hash: &Value, reference: &str) {
    let got = hash_file(out);
    assert_eq!(
        Value::String(got.clone()),
        *image_hash,
        "restored file differs from the recorded image hash"
    );
    assert_eq!(
        got, reference,
        "restored file differs from the reference copy"
    );
    assert_eq!(integrity(out), "ok");
}

/// Chunk id of one page (stores made with the default `--chunk-pages 1`).
pub fn chunk_id(page: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(CHUNK_DOMAIN);
    h.update(page);
    h.finalize().to_hex().to_string()
}

/// Chunk ids of every non-zero page of a database image.
pub fn page_chunk_ids(image: &[u8], page_size: usize) -> Vec<String> {
    image
        .chunks(page_size)
        .filter(|p| p.iter().any(|&b| b != 0))
        .map(chunk_id)
        .collect()
}

/// One trailer entry of a pack (docs/FORMAT.md, `format/pack.rs`).
#[derive(Debug)]
pub struct PackEntry {
    pub id: String,
    pub offset: usize,
    pub stored_len: usize,
}

/// Parses the trailer of a pack file.
pub fn pack_entries(pack: &[u8]) -> Vec<PackEntry> {
    let footer = &pack[pack.len() - 32..];
    assert_eq!(&footer[24..32], b"PSNPPEND", "not a pack");
    let count = u32::from_le_bytes(footer[0..4].try_into().unwrap()) as usize;
    let trailer_len = u32::from_le_bytes(footer[4..8].try_into().unwrap()) as usize;
    assert_eq!(trailer_len, count * 48);
    let start = pack.len() - 32 - trailer_len;
    (0..count)
        .map(|i| {
            let e = &pack[start + i * 48..start + (i + 1) * 48];
            PackEntry {
                id: blake3::Hash::from_bytes(e[0..32].try_into().unwrap())
                    .to_hex()
                    .to_string(),
                offset: u32::from_le_bytes(e[32..36].try_into().unwrap()) as usize,
                stored_len: u32::from_le_bytes(e[36..40].try_into().unwrap()) as usize,
            }
        })
        .collect()
}

/// Every pack file of a store.
pub fn pack_files(store: &Path) -> Vec<PathBuf> {
    tree(&store.join("packs"))
        .into_keys()
        .map(|p| store.join("packs").join(p))
        .collect()
}

/// A small (300-row) rollback-journal database `name` in the fixture's directory.
pub fn small_db(fx: &Fx, name: &str, seed: u64) -> PathBuf {
    let db = fx.path(name);
    drop(create_db(&db, Journal::Rollback, 300, seed));
    db
}

/// `2026-01-01T00:00:00Z` plus `minutes`.
pub fn t(minutes: u32) -> String {
    format!("2026-01-01T{:02}:{:02}:00Z", minutes / 60, minutes % 60)
}

/// Copies a directory tree (a store, to run a destructive test on a copy).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The effective user id of the tests (root in CI).
pub fn euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid()
}

/// Gives `root` and everything under it to `uid`.
pub fn chown_tree(root: &Path, uid: u32) {
    std::os::unix::fs::chown(root, Some(uid), Some(uid)).unwrap();
    if root.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Sets the mode of every directory under `root` (files keep theirs).
pub fn chmod_dirs(root: &Path, mode: u32) {
    if root.is_dir() {
        std::fs::set_permissions(
            root,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
        )
        .unwrap();
        for e in std::fs::read_dir(root).unwrap() {
            chmod_dirs(&e.unwrap().path(), mode);
        }
    }
}

pub const NOBODY: u32 = 65534;

/// The binary, run as an unprivileged user when the tests run as root: root
/// ignores permission bits, so a read-only directory would not stop it.
pub fn unprivileged(store: &Path, as_root: bool) -> assert_cmd::Command {
    let exe = env!("CARGO_BIN_EXE_pagesnap");
    let mut c = if !as_root {
        std::process::Command::new(exe)
    } else if Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            exe,
        ]);
        c
    } else {
        // Without setpriv, std drops to the same uid/gid itself before exec (and
        // clears supplementary groups when started as root): the same privileges.
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(exe);
        c.uid(NOBODY).gid(NOBODY);
        c
    };
    c.env_remove("PAGESNAP_STORE").arg("--store").arg(store);
    assert_cmd::Command::from_std(c)
}

/// A copy of a rollback-journal database and its `-journal` taken while a
/// writer's transaction had spilled into the database file: what a writer
/// killed mid-transaction leaves (a hot journal).
pub fn hot_journal_copy(fx: &Fx, name: &str) -> PathBuf {
    let live = fx.path("live.db");
    let conn = create_db(&live, Journal::Rollback, 1500, 86);
    // A tiny page cache: the update spills changed pages into the database file.
    conn.execute_batch("PRAGMA cache_size = 5; BEGIN; UPDATE items SET data = randomblob(400);")
        .unwrap();
    let hot = fx.path(name);
    std::fs::copy(&live, &hot).unwrap();
    std::fs::copy(
        fx.path("live.db-journal"),
        fx.path(&format!("{name}-journal")),
    )
    .unwrap();
    conn.execute_batch("ROLLBACK").unwrap();
    // It is hot: a read-only connection cannot roll it back (extended code 776).
    let ro =
        rusqlite::Connection::open_with_flags(&hot, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let e = ro
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert_eq!(e.sqlite_error().map(|e| e.extended_code), Some(776), "{e}");
    hot
}

/// Every file under `root`, at any depth.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
