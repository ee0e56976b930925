//! Reliability (issue #5): a full disk under the store (fault injection at every
//! write of a backup, and a real, small tmpfs), a full disk under a restore's output,
//! backups killed with SIGKILL at random moments, and temporary files that killed
//! writers leave behind.

use crate::retention::{assert_all_restore, lock_count};
use crate::util::*;
use rusqlite::Connection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// `verify --read-data` finds the store healthy: exit 0, `"healthy": true` and no
/// problems. Every verify of this module goes through here.
#[track_caller]
fn assert_verify_clean(fx: &Fx) {
    let out = fx
        .cmd()
        .args(["--json", "verify", "--read-data"])
        .output()
        .expect("run pagesnap verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify --read-data: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify --json printed no JSON ({e}): {stdout}"));
    assert_eq!(v["healthy"], Value::Bool(true), "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

/// A completed backup: its id and image hash, and the blake3 of a backup-API copy
/// of the database taken right after it.
struct Recorded {
    id: String,
    image_hash: Value,
    reference: String,
}

/// Records a backup whose `--json` report is `v`: takes the reference copy of
/// `db` (unchanged since) and checks the backup captured exactly it.
fn record(fx: &Fx, db: &Path, v: &Value) -> Recorded {
    let copy = fx.path("reference.db");
    let _ = std::fs::remove_file(&copy);
    let reference = reference_copy(db, &copy);
    std::fs::remove_file(&copy).unwrap();
    assert_eq!(
        Value::String(reference.clone()),
        v["image_hash"],
        "the backup captured the database as it is"
    );
    Recorded {
        id: v["id"].as_str().unwrap().to_string(),
        image_hash: v["image_hash"].clone(),
        reference,
    }
}

/// `backup --json DB ARGS`, asserted to succeed, and recorded.
fn backup_recorded(fx: &Fx, db: &Path, args: &[&str]) -> Recorded {
    let v = fx.backup(db, args);
    record(fx, db, &v)
}

/// Every recorded snapshot restores byte-exactly (hash, reference, integrity).
#[track_caller]
fn assert_recorded_restore(fx: &Fx, recorded: &[Recorded]) {
    let out = fx.path("recorded-restore.db");
    for r in recorded {
        let _ = std::fs::remove_file(&out);
        fx.restore(&[&r.id], &out);
        assert_restored(&out, &r.image_hash, &r.reference);
        std::fs::remove_file(&out).unwrap();
    }
}

/// Asserts a finished command failed cleanly (exit 1, `pagesnap: error: …` on
/// stderr, no panic, nothing on stdout), as [`fails`] does; returns stderr.
#[track_caller]
fn assert_failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1: {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    // With --json the error is one JSON object: its message is the text's.
    let stderr = if stderr.starts_with('{') {
        let v: Value = serde_json::from_str(stderr.trim_end()).expect("one JSON object");
        assert_eq!(v["message_type"], "exit_error", "{stderr}");
        assert_eq!(v["code"], 1, "{stderr}");
        format!("pagesnap: error: {}\n", v["message"].as_str().unwrap())
    } else {
        stderr
    };
    assert!(stderr.starts_with("pagesnap: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_repeated_cause(&stderr);
    assert!(
        out.stdout.is_empty(),
        "a failed command printed on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Asserts `stderr` says the disk under the store `store` is full.
#[track_caller]
fn assert_says_store_full(stderr: &str, store: &Path) {
    assert_has(
        stderr,
        &[
            &format!("{}: the disk holding the store is full", store.display()),
            "no space left on device",
            "no snapshot of",
        ],
    );
}

/// Temporary files (`.tmp-*`) under `store`, split into those in the data folders
/// (which `prune` removes) and those under `locks/` (which nothing removes).
fn temp_files(store: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    tree(store)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .partition(|p| !p.starts_with("locks"))
}

/// Every file of `before` is still in `now`, unchanged.
#[track_caller]
fn assert_kept(before: &BTreeMap<PathBuf, String>, now: &BTreeMap<PathBuf, String>) {
    for (p, h) in before {
        assert_eq!(
            now.get(p),
            Some(h),
            "{} was changed or removed",
            p.display()
        );
    }
}

/// A: `PAGESNAP_FAULT_KIND=enospc` fails the N-th object write (and every later
/// write and delete) like a full disk; every N from 0 until the backup succeeds.
#[test]
fn backup_on_a_full_disk_fails_cleanly_at_every_write() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 2500, 51);
    let mut recorded = vec![backup_recorded(&fx, &db, &["--time", &t(0)])];
    mutate(&conn, 1);
    recorded.push(backup_recorded(&fx, &db, &["--time", &t(10)]));
    // Two backups to interrupt: of the changed database (pack, index, page map,
    // manifest), and the first of another database (a dictionary too).
    for r in 0..3 {
        mutate(&conn, 10 + r);
    }
    let other = fx.path("other.db");
    drop(create_db(&other, Journal::Rollback, 2500, 52));
    let mut failures = 0;
    for (k, target) in [&db, &other].into_iter().enumerate() {
        let time = t(20 + 10 * k as u32);
        let before = fx.snapshots();
        let mut n = 0u32;
        let done = loop {
            assert!(n < 100, "backup of {} never succeeded", target.display());
            let out = fx
                .cmd()
                .env("PAGESNAP_FAULT_AFTER", n.to_string())
                .env("PAGESNAP_FAULT_KIND", "enospc")
                .args(["--json", "backup"])
                .arg(target)
                .args(["--time", &time])
                .output()
                .unwrap();
            if out.status.success() {
                break serde_json::from_slice::<Value>(&out.stdout).unwrap();
            }
            let stderr = assert_failed(&out);
            assert_says_store_full(&stderr, &fx.store);
            assert_has(&stderr, &[&target.display().to_string()]);
            assert_no_store_temps(&fx.store);
            assert_eq!(
                fx.snapshots(),
                before,
                "fault {n}: no snapshot was published"
            );
            assert_recorded_restore(&fx, &recorded);
            n += 1;
            failures += 1;
        };
        eprintln!(
            "backup of {}: failed cleanly with 0..{n} writes allowed, succeeded with {n}",
            target.display()
        );
        // lock, [dictionary], pack, index, page map, manifest.
        assert!(
            n >= 4,
            "the backup of {} failed {n} times",
            target.display()
        );
        let after = fx.snapshots();
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after.last().unwrap()["id"], done["id"]);
        recorded.push(record(&fx, target, &done));
        assert_recorded_restore(&fx, &recorded);
    }

    // The faults are over: a normal backup works and restores.
    mutate(&conn, 20);
    recorded.push(backup_recorded(&fx, &db, &["--time", &t(40)]));
    assert_recorded_restore(&fx, &recorded);
    // The injected fault fails the lock's removal too (a real full disk does not):
    // the failed runs left stale locks, which `unlock` removes.
    let v = ok_json(fx.cmd().args(["--json", "unlock"]));
    let removed = v["removed"].as_array().unwrap().len();
    assert!(
        removed <= failures,
        "{removed} locks of {failures} failed runs"
    );
    assert_eq!(lock_count(&fx.store), 0);
    // Prune drops what the failed runs wrote; everything still restores.
    ok(fx.cmd().arg("prune"));
    assert_no_store_temps(&fx.store);
    assert_eq!(assert_all_restore(&fx), recorded.len());
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);
}

/// A tmpfs mounted for the life of the value, unmounted when it drops.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `dir` (created), or says why it cannot.
    fn mount(dir: &Path, mib: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Mounts one tmpfs per `(dir, mib)`, or prints why not and returns `None`
    /// (CI may run unprivileged).
    fn mount_all(mounts: &[(&Path, u32)]) -> Option<Vec<Tmpfs>> {
        let mut out = Vec::new();
        for (dir, mib) in mounts {
            match Tmpfs::mount(dir, *mib) {
                Ok(m) => out.push(m),
                Err(e) => {
                    eprintln!("skipped: cannot mount tmpfs: {e}");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// (available blocks, block size) of the file system.
    fn statfs(&self) -> (u64, u64) {
        let out = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.dir)
            .output()
            .expect("run stat -f");
        assert!(out.status.success(), "{out:?}");
        let s = String::from_utf8(out.stdout).unwrap();
        let mut it = s.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    fn block(&self) -> u64 {
        self.statfs().1
    }

    fn free_blocks(&self) -> u64 {
        self.statfs().0
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Writes a filler file that leaves exactly `free` blocks available.
    fn fill_to(&self, free: u64) {
        let _ = std::fs::remove_file(self.filler());
        let (avail, block) = self.statfs();
        assert!(avail >= free, "{avail} blocks available, {free} wanted");
        let mut left = (avail - free) * block;
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &zeros[..n]).unwrap();
            left -= n as u64;
        }
        drop(f);
        assert_eq!(self.free_blocks(), free, "the filler leaves {free} blocks");
    }

    /// Deletes the filler: frees the space again.
    fn unfill(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount").arg(&self.dir).status();
        if !status.is_ok_and(|s| s.success()) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Adds `rows` rows of 3,500 random bytes each: pages that do not compress.
fn add_bulk(conn: &Connection, rows: u32) {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS bulk(v BLOB);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows})
         INSERT INTO bulk(v) SELECT randomblob(3500) FROM c;"
    ))
    .unwrap();
}

/// B: a real full disk. The store lives on a 12 MiB tmpfs; a backup that needs
/// more than is free fails cleanly wherever the space runs out, and works once
/// space is freed. A restore into a full tmpfs fails cleanly too.
#[test]
fn backup_and_restore_on_a_full_tmpfs() {
    let mut fx = Fx::uninit();
    let (store_fs, out_fs) = (fx.path("store-fs"), fx.path("out-fs"));
    // Declared after `fx`: unmounted before its directory is removed.
    let Some(mounts) = Tmpfs::mount_all(&[(&store_fs, 12), (&out_fs, 4)]) else {
        return;
    };
    let (sfs, ofs) = (&mounts[0], &mounts[1]);
    fx.store = store_fs.join("store");
    ok(fx.cmd().arg("init"));

    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 1500, 71);
    let mut recorded = vec![backup_recorded(&fx, &db, &["--time", &t(0)])];
    mutate(&conn, 1);
    recorded.push(backup_recorded(&fx, &db, &["--time", &t(10)]));
    // ~5 MiB of new pages that do not compress: more than will be free.
    add_bulk(&conn, 1500);
    let time = t(20);
    let backup_args = |cmd: &mut assert_cmd::Command| {
        cmd.arg("backup").arg(&db).args(["--time", &time]);
    };

    // What the backup writes, measured on a copy of the store on the ordinary
    // disk: its objects in blocks of the tmpfs, plus one block for its lock.
    let block = sfs.block();
    let before = fx.state();
    let measure = fx.path("measure-store");
    copy_dir(&fx.store, &measure);
    let mut cmd = ps(&measure);
    backup_args(&mut cmd);
    ok(&mut cmd);
    let written: Vec<(PathBuf, u64)> = tree(&measure)
        .into_keys()
        .filter(|p| !before.files.contains_key(p))
        .map(|p| {
            let len = std::fs::metadata(measure.join(&p)).unwrap().len();
            (p, len.div_ceil(block))
        })
        .collect();
    let needed: u64 = 1 + written.iter().map(|(_, b)| b).sum::<u64>();
    assert!(
        sfs.free_blocks() > needed,
        "the tmpfs holds the backup once the filler is gone"
    );
    // Free space at which the backup must fail: none; the lock only; the lock and
    // each prefix of the objects in the order a backup writes them; half of it;
    // one block short.
    let order = ["dicts", "packs", "index", "maps", "snapshots"];
    let mut levels = vec![0, 1, needed / 2, needed - 1];
    let mut sum = 1;
    for dir in order {
        sum += written
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .map(|(_, b)| b)
            .sum::<u64>();
        levels.push(sum);
    }
    levels.retain(|&l| l < needed);
    levels.sort_unstable();
    levels.dedup();
    eprintln!("backup needs {needed} blocks of {block} bytes ({written:?}); trying {levels:?}");

    for &free in &levels {
        sfs.fill_to(free);
        let mut cmd = fx.cmd();
        backup_args(&mut cmd);
        let stderr = assert_failed(&cmd.output().unwrap());
        assert_says_store_full(&stderr, &fx.store);
        assert_no_store_temps(&fx.store);
        assert_eq!(
            lock_count(&fx.store),
            0,
            "{free} blocks: the lock was released"
        );
        let now = tree(&fx.store);
        assert_kept(&before.files, &now);
        assert_eq!(fx.snapshots(), before.snapshots, "{free} blocks free");
        sfs.unfill();
        assert_recorded_restore(&fx, &recorded);
        // What the failed backup wrote is unreferenced: prune removes all of it.
        ok(fx.cmd().arg("prune"));
        fx.assert_unchanged(&before);
    }

    // Space freed: the backup works and restores.
    let v = ok_json(
        fx.cmd()
            .arg("--json")
            .args(["backup"])
            .arg(&db)
            .args(["--time", &time]),
    );
    recorded.push(record(&fx, &db, &v));
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);

    // Restores into a full tmpfs: a 4 MiB one, empty (the image is larger) and
    // filled up, durable and with --no-fsync, and over an existing file with
    // --force. The output's blocks are reserved before anything is written, so
    // these fail there; a write failing later is covered by the unit tests of
    // the write queue (pagesnap-core's restore/output.rs).
    let big = recorded.last().unwrap();
    let out = ofs.dir.join("out.db");
    for no_fsync in [false, true] {
        for filled in [false, true] {
            if filled {
                ofs.fill_to(0);
            }
            let free = ofs.free_blocks();
            let mut cmd = fx.cmd();
            cmd.args(["restore", &big.id, "-o"]).arg(&out);
            if no_fsync {
                cmd.arg("--no-fsync");
            }
            let stderr = fails(&mut cmd);
            assert_has(
                &stderr,
                &[
                    &format!("{}: cannot restore: the disk is full", out.display()),
                    "nothing was written",
                ],
            );
            assert_no_output(&out);
            assert_eq!(
                ofs.free_blocks(),
                free,
                "the failed restore freed what it used (no_fsync {no_fsync})"
            );
        }
        ofs.unfill();
    }
    let small = &recorded[0];
    fx.restore(&[&small.id], &out);
    assert_restored(&out, &small.image_hash, &small.reference);
    let stderr = fails(
        fx.cmd()
            .args(["restore", &big.id, "--force", "-o"])
            .arg(&out),
    );
    assert_has(
        &stderr,
        &[&format!(
            "{}: cannot restore: the disk is full",
            out.display()
        )],
    );
    assert_restored(&out, &small.image_hash, &small.reference);
    assert_no_restore_temps(&ofs.dir);
    drop(conn);
}

/// A store on a full disk cannot take backups, but its snapshots must still
/// restore (the disk filled up: now is when they are needed).
#[test]
fn restore_from_a_store_on_a_full_disk() {
    let mut fx = Fx::uninit();
    let store_fs = fx.path("store-fs");
    let Some(mounts) = Tmpfs::mount_all(&[(&store_fs, 4)]) else {
        return;
    };
    fx.store = store_fs.join("store");
    ok(fx.cmd().arg("init"));
    let db = small_db(&fx, "app.db", 81);
    let recorded = vec![backup_recorded(&fx, &db, &[])];
    mounts[0].fill_to(0);
    assert_eq!(fx.snapshots().len(), 1);
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);
}

/// C: at least 50 backups killed with SIGKILL at random moments of their run, on a
/// database that changes between attempts, between completed backups. Every
/// snapshot then restores, verify finds nothing wrong, and prune cleans up.
#[test]
fn backups_killed_at_random_moments_leave_a_sound_store() {
    const KILLS: u32 = 50;
    let started = Instant::now();
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 8000, 91);
    let db_size: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .unwrap()
        * 4096;
    let mut recorded = vec![backup_recorded(&fx, &db, &[])];
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pagesnap"))
            .env_remove("PAGESNAP_STORE")
            .arg("--store")
            .arg(&fx.store)
            .args(["--json", "backup"])
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A backup that runs to its end: recorded, and timed from start to exit (the
    // database and the store grow, so the kills follow the latest run time).
    let complete = |recorded: &mut Vec<Recorded>| -> Duration {
        let started = Instant::now();
        let out = spawn().wait_with_output().unwrap();
        let took = started.elapsed();
        assert!(out.status.success(), "{out:?}");
        recorded.push(record(
            &fx,
            &db,
            &serde_json::from_slice(&out.stdout).unwrap(),
        ));
        took
    };
    mutate(&conn, 1);
    let mut run_time = complete(&mut recorded);

    let mut rng = Rng(5);
    let (mut kills, mut finished_first, mut round) = (0, 0, 2);
    while kills < KILLS {
        assert!(round < 400, "only {kills} kills in {round} attempts");
        mutate(&conn, round);
        round += 1;
        if round % 5 == 0 {
            run_time = complete(&mut recorded);
            continue;
        }
        let mut child = spawn();
        let max_delay = run_time.as_micros() as u64 * 6 / 5;
        std::thread::sleep(Duration::from_micros(rng.below(max_delay)));
        if child.try_wait().unwrap().is_none() {
            // Exited or not, it is not reaped yet: the signal cannot reach another process.
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        match out.status.signal() {
            Some(9) => kills += 1,
            other => {
                assert!(
                    out.status.success(),
                    "a backup ended by itself but failed ({other:?}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                finished_first += 1;
                let v = serde_json::from_slice(&out.stdout).unwrap();
                recorded.push(record(&fx, &db, &v));
            }
        }
    }
    drop(conn);

    // Every snapshot restores: the recorded ones byte-exactly against their reference
    // copies, those a killed backup published against their manifest's hash.
    let snaps = fx.snapshots();
    for r in &recorded {
        assert!(
            snaps.iter().any(|s| s["id"] == r.id.as_str()),
            "recorded snapshot {} is listed",
            r.id
        );
    }
    assert_eq!(assert_all_restore(&fx), snaps.len());
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);
    let (data_temps, lock_temps) = temp_files(&fx.store);
    let stale_locks = lock_count(&fx.store);

    // Killed backups leave their locks: prune refuses until `unlock` removes them.
    if stale_locks > 0 {
        let stderr = fails(fx.cmd().arg("prune"));
        assert_has(&stderr, &["stale", "pagesnap unlock"]);
    }
    let v = ok_json(fx.cmd().args(["--json", "unlock"]));
    assert_eq!(v["removed"].as_array().unwrap().len(), stale_locks, "{v}");
    assert_eq!(lock_count(&fx.store), 0);
    let v = ok_json(fx.cmd().args(["--json", "prune"]));
    assert_eq!(v["temp_files_removed"], data_temps.len(), "{v}");
    let (left, _) = temp_files(&fx.store);
    assert!(
        left.is_empty(),
        "temporary files left after prune: {left:?}"
    );
    assert_eq!(fx.snapshots(), snaps, "prune keeps every snapshot");
    assert_eq!(assert_all_restore(&fx), snaps.len());
    assert_recorded_restore(&fx, &recorded);
    // (No verify here: when this prune rewrites a pack, verify reports the pack's
    // old index object; see `verify_after_prune_rewrote_a_pack`.)
    eprintln!(
        "{kills} backups killed, {finished_first} finished before their kill, {} recorded, \
         {} snapshots ({} published by killed backups); kills left {stale_locks} locks, \
         {} temporary files in data folders, {} under locks/ (which nothing removes); \
         a {} KiB database, the last backup took {run_time:.0?}; {:.1?} in all",
        recorded.len(),
        snaps.len(),
        snaps.len() - recorded.len(),
        data_temps.len(),
        lock_temps.len(),
        db_size >> 10,
        started.elapsed()
    );
}

/// After a prune that rewrote a pack, the store is sound (every snapshot restores)
/// and verify must say so.
#[test]
fn verify_after_prune_rewrote_a_pack() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 1000, 111);
    let first = fx.backup(&db, &["--time", &t(0)]);
    for r in 0..4 {
        mutate(&conn, r);
    }
    let recorded = vec![backup_recorded(&fx, &db, &["--time", &t(10)])];
    ok(fx.cmd().args(["forget", first["id"].as_str().unwrap()]));
    let v = ok_json(fx.cmd().args(["--json", "prune", "--max-unused", "0"]));
    assert!(v["packs_rewritten"].as_u64().unwrap() >= 1, "{v}");
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);
}

/// D: temporary files left by killed writers (created here by hand) are ignored by
/// snapshots, restore, backup, verify and prune, and prune removes those in the
/// data folders.
#[test]
fn stale_temporary_files_are_ignored_and_pruned() {
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Rollback, 400, 101);
    let mut recorded = vec![backup_recorded(&fx, &db, &["--time", &t(0)])];
    let manifest = tree(&fx.store.join("snapshots"))
        .into_keys()
        .next()
        .expect("one manifest");
    let manifest = std::fs::read(fx.store.join("snapshots").join(manifest)).unwrap();
    // A partial pack, an empty index, a whole manifest not yet renamed (a copy of the
    // real one: listing it would show the snapshot twice), a partial page map.
    let temps: [(&str, &[u8]); 4] = [
        ("packs/ab/.tmp-xyz", b"partial pack"),
        ("index/.tmp-idx", b""),
        ("snapshots/.tmp-abc", &manifest),
        ("maps/.tmp-map", b"\x01\x02"),
    ];
    // And a lock being written when its process died (prune leaves `locks/` alone:
    // it cannot tell such a file from a lock being taken right now).
    let lock_temp: (&str, &[u8]) = ("locks/.tmp-lock", b"");
    for (p, data) in temps.into_iter().chain([lock_temp]) {
        let p = fx.store.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let snaps = fx.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], recorded[0].id.as_str());
    assert_recorded_restore(&fx, &recorded);
    let out = fx.path("latest.db");
    fx.restore(&["latest"], &out);
    assert_restored(&out, &recorded[0].image_hash, &recorded[0].reference);
    mutate(&conn, 1);
    recorded.push(backup_recorded(&fx, &db, &["--time", &t(10)]));
    assert_eq!(fx.snapshots().len(), 2);
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);

    // A dry run removes nothing; prune removes exactly these four.
    let v = ok_json(fx.cmd().args(["--json", "prune", "--dry-run"]));
    assert_eq!(v["dry_run"], true, "{v}");
    for (p, _) in temps {
        assert!(fx.store.join(p).exists(), "prune --dry-run removed {p}");
    }
    assert_eq!(lock_count(&fx.store), 0);
    let v = ok_json(fx.cmd().args(["--json", "prune"]));
    assert_eq!(v["temp_files_removed"], temps.len(), "{v}");
    let (left, _) = temp_files(&fx.store);
    assert!(
        left.is_empty(),
        "temporary files left after prune: {left:?}"
    );
    assert_eq!(assert_all_restore(&fx), 2);
    assert_recorded_restore(&fx, &recorded);
    assert_verify_clean(&fx);
}

/// The local cache holds the store's metadata (index copies, hints): it is as
/// private as the store, 0700 folders and 0600 files, whatever the umask.
#[test]
fn the_local_cache_is_private_under_umask_000() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    let db = fx.path("app.db");
    let conn = create_db(&db, Journal::Wal, 800, 73);
    let cache = fx.path("cache");
    let backup = |fx: &Fx| {
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg("umask 000 && exec \"$0\" --store \"$1\" backup \"$2\"")
            .arg(env!("CARGO_BIN_EXE_pagesnap"))
            .arg(&fx.store)
            .arg(&db)
            .env("PAGESNAP_CACHE_DIR", &cache)
            .env_remove("PAGESNAP_STORE");
        ok(&mut assert_cmd::Command::from_std(c));
    };
    backup(&fx);
    mutate(&conn, 1);
    backup(&fx);
    let mut seen = 0;
    let mut stack = vec![cache.clone()];
    while let Some(p) = stack.pop() {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        seen += 1;
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(
        seen > 3,
        "the backups wrote no cache under {}",
        cache.display()
    );
}
